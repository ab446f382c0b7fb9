//! Directory listings: `ls -l` lines for LIST (the form FileZilla, WinSCP and lftp parse),
//! bare names for NLST, and RFC 3659 facts for MLSD/MLST.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use crate::storage::{DirEntry, Metadata};

/// Entries older or newer than this (about six months) show a year instead of a time, as `ls`.
const RECENT: Duration = Duration::from_secs(180 * 24 * 3600);

/// One `ls -l` line, without line ending.
pub fn ls_line(entry: &DirEntry, now: SystemTime) -> String {
    let meta = &entry.metadata;
    let mode = meta.mode.unwrap_or(if meta.is_dir { 0o755 } else { 0o644 });
    let date = utc(meta.modified);
    let recent = match now.duration_since(meta.modified) {
        Ok(age) => age < RECENT,
        Err(ahead) => ahead.duration() < RECENT,
    };
    let when = if recent {
        date.format("%b %e %H:%M")
    } else {
        date.format("%b %e  %Y")
    };
    format!(
        "{}{} 1 ftp ftp {:>12} {} {}",
        if meta.is_dir { 'd' } else { '-' },
        permission_string(mode),
        meta.len,
        when,
        entry.name
    )
}

fn permission_string(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

/// MDTM and the MLSD modify fact: `YYYYMMDDHHMMSS` in UTC (RFC 3659 section 2.3).
pub fn timeval(time: SystemTime) -> String {
    utc(time).format("%Y%m%d%H%M%S").to_string()
}

/// `time` in UTC, clamped to the years 0000 to 9999: a file can carry any time (tmpfs keeps
/// `touch -d @9000000000000`), chrono panics beyond about 262,000 years, and RFC 3659 times
/// have four-digit years.
fn utc(time: SystemTime) -> DateTime<Utc> {
    /// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const EARLIEST: i64 = -62_167_219_200;
    const LATEST: i64 = 253_402_300_799;
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    DateTime::from_timestamp(secs.clamp(EARLIEST, LATEST), 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The MLST/MLSD facts ferry knows, in the order they are sent.
const FACT_NAMES: [&str; 5] = ["type", "size", "modify", "perm", "unique"];

/// The facts a client selected with `OPTS MLST` (RFC 3659 section 7.9); all by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts([bool; 5]);

impl Default for Facts {
    fn default() -> Self {
        Facts([true; 5])
    }
}

impl Facts {
    /// The selection named in `type;size;...` (case-insensitive); unknown names are ignored.
    pub fn select(list: &str) -> Facts {
        let wanted: Vec<String> = list
            .split(';')
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        Facts(FACT_NAMES.map(|name| wanted.iter().any(|w| w == name)))
    }

    /// The selected facts as `type;size;` for the OPTS reply.
    pub fn selected(&self) -> String {
        FACT_NAMES
            .iter()
            .zip(self.0)
            .filter(|(_, on)| *on)
            .map(|(n, _)| format!("{n};"))
            .collect()
    }

    /// The FEAT line: every fact, selected ones marked with `*`.
    pub fn feat_line(&self) -> String {
        let facts: String = FACT_NAMES
            .iter()
            .zip(self.0)
            .map(|(n, on)| {
                if on {
                    format!("{n}*;")
                } else {
                    format!("{n};")
                }
            })
            .collect();
        format!("MLST {facts}")
    }
}

/// RFC 3659 facts followed by a space and the name: `type=file;size=3;...; name`.
pub fn mlsx_line(name: &str, meta: &Metadata, writable: bool, facts: Facts) -> String {
    let [kind, size, modify, perm, unique] = facts.0;
    let mut line = String::new();
    if kind {
        line.push_str(if meta.is_dir {
            "type=dir;"
        } else {
            "type=file;"
        });
    }
    if size {
        line.push_str(&format!("size={};", meta.len));
    }
    if modify {
        line.push_str(&format!("modify={};", timeval(meta.modified)));
    }
    if perm {
        let perm = match (meta.is_dir, writable) {
            (true, true) => "cdeflmp",
            (true, false) => "el",
            (false, true) => "adfrw",
            (false, false) => "r",
        };
        line.push_str(&format!("perm={perm};"));
    }
    if let (true, Some(id)) = (unique, &meta.unique) {
        line.push_str(&format!("unique={id};"));
    }
    format!("{line} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_four_digit_years_are_clamped_instead_of_panicking() {
        let far = Duration::from_secs(9_000_000_000_000);
        let entry = |modified| DirEntry {
            name: "f".into(),
            metadata: Metadata {
                is_dir: false,
                len: 1,
                modified,
                mode: None,
                unique: None,
            },
        };
        let (future, past) = (SystemTime::UNIX_EPOCH + far, SystemTime::UNIX_EPOCH - far);
        assert_eq!(timeval(future), "99991231235959");
        assert_eq!(timeval(past), "00000101000000");
        assert!(ls_line(&entry(future), SystemTime::now()).contains(" 9999 f"));
        assert!(
            mlsx_line("f", &entry(past).metadata, false, Facts::default())
                .contains("modify=00000101000000;")
        );
    }

    fn entry(name: &str, is_dir: bool, len: u64, secs: u64, mode: u32) -> DirEntry {
        DirEntry {
            name: name.to_string(),
            metadata: Metadata {
                is_dir,
                len,
                modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                mode: Some(mode),
                unique: Some("801g2a".into()),
            },
        }
    }

    #[test]
    fn old_files_show_the_year() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = ls_line(&entry("a b.txt", false, 1234, 1_000_000_000, 0o100644), now);
        assert_eq!(
            line,
            "-rw-r--r-- 1 ftp ftp         1234 Sep  9  2001 a b.txt"
        );
    }

    #[test]
    fn recent_directories_show_the_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = ls_line(&entry("sub", true, 4096, 1_699_990_000, 0o40755), now);
        assert_eq!(line, "drwxr-xr-x 1 ftp ftp         4096 Nov 14 19:26 sub");
    }

    #[test]
    fn mlsx_facts_follow_rfc3659() {
        let e = entry("f", false, 3, 1_000_000_000, 0o644);
        assert_eq!(
            mlsx_line("f", &e.metadata, true, Facts::default()),
            "type=file;size=3;modify=20010909014640;perm=adfrw;unique=801g2a; f"
        );
        assert!(mlsx_line("f", &e.metadata, false, Facts::default()).contains("perm=r;"));
    }

    #[test]
    fn opts_mlst_selects_facts_and_feat_marks_them() {
        let e = entry("f", false, 3, 1_000_000_000, 0o644);
        let facts = Facts::select("Size;type;bogus;");
        assert_eq!(facts.selected(), "type;size;");
        assert_eq!(facts.feat_line(), "MLST type*;size*;modify;perm;unique;");
        assert_eq!(
            mlsx_line("f", &e.metadata, true, facts),
            "type=file;size=3; f"
        );
        assert_eq!(Facts::select("").selected(), "");
    }
}
