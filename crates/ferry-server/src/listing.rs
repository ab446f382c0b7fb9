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
    let date: DateTime<Utc> = meta.modified.into();
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
    let date: DateTime<Utc> = time.into();
    date.format("%Y%m%d%H%M%S").to_string()
}

/// RFC 3659 facts followed by a space and the name: `type=file;size=3;...; name`.
pub fn mlsx_line(name: &str, meta: &Metadata, writable: bool) -> String {
    let kind = if meta.is_dir { "dir" } else { "file" };
    let perm = match (meta.is_dir, writable) {
        (true, true) => "cdeflmp",
        (true, false) => "el",
        (false, true) => "adfrw",
        (false, false) => "r",
    };
    let mut facts = format!(
        "type={kind};size={};modify={};perm={perm};",
        meta.len,
        timeval(meta.modified)
    );
    if let Some(unique) = &meta.unique {
        facts.push_str(&format!("unique={unique};"));
    }
    format!("{facts} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            mlsx_line("f", &e.metadata, true),
            "type=file;size=3;modify=20010909014640;perm=adfrw;unique=801g2a; f"
        );
        assert!(mlsx_line("f", &e.metadata, false).contains("perm=r;"));
    }
}
