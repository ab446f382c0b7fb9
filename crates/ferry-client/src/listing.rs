//! Remote directory entries from MLSD (RFC 3659 facts, preferred) or, from servers without
//! it, from `ls -l` style LIST lines.

use std::time::SystemTime;

use chrono::NaiveDateTime;

/// One remote directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// Name within its directory.
    pub name: String,
    /// A directory (to recurse into) or a file.
    pub is_dir: bool,
    /// Size in bytes, when the listing says.
    pub size: Option<u64>,
    /// Last modification, when the listing says exactly (MLSD's modify fact).
    pub modified: Option<SystemTime>,
}

/// An RFC 3659 time value (`YYYYMMDDHHMMSS[.sss]`, UTC), as in MLSD facts and MDTM replies.
pub fn parse_timeval(text: &str) -> Option<SystemTime> {
    let whole = text.split('.').next()?;
    let time = NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S").ok()?;
    Some(time.and_utc().into())
}

/// One MLSD line; `None` for the `.`/`..` entries (cdir, pdir) and lines without a name.
pub fn parse_mlsd_line(line: &str) -> Option<RemoteEntry> {
    let (facts, name) = line.split_once(' ')?;
    let mut entry = RemoteEntry {
        name: name.to_string(),
        is_dir: false,
        size: None,
        modified: None,
    };
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let (key, value) = fact.split_once('=')?;
        match key.to_ascii_lowercase().as_str() {
            "type" => match value.to_ascii_lowercase().as_str() {
                "dir" => entry.is_dir = true,
                "cdir" | "pdir" => return None,
                _ => {}
            },
            "size" => entry.size = value.parse().ok(),
            "modify" => entry.modified = parse_timeval(value),
            _ => {}
        }
    }
    (!entry.name.is_empty()).then_some(entry)
}

/// One `ls -l` line (`drwxr-xr-x 1 owner group 4096 Nov 14 19:26 name with spaces`); lines
/// that are not entries (`total 12`) give `None`. Symlinks are listed by their name.
pub fn parse_list_line(line: &str) -> Option<RemoteEntry> {
    let mode = line.chars().next()?;
    if !matches!(mode, 'd' | '-' | 'l') {
        return None;
    }
    // The name is what follows the eighth field, spaces and all.
    let mut rest = line;
    let mut fields = Vec::with_capacity(8);
    for _ in 0..8 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let name = rest.strip_prefix(' ').unwrap_or(rest);
    let name = if mode == 'l' {
        name.split(" -> ").next().unwrap_or(name)
    } else {
        name
    };
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some(RemoteEntry {
        name: name.to_string(),
        is_dir: mode == 'd',
        size: fields[4].parse().ok(),
        modified: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mlsd_lines_give_type_size_and_time() {
        let e =
            parse_mlsd_line("type=file;size=3;modify=20010909014640;perm=adfrw; a b.txt").unwrap();
        assert_eq!(e.name, "a b.txt");
        assert!(!e.is_dir);
        assert_eq!(e.size, Some(3));
        assert_eq!(
            e.modified,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        );
        assert!(
            parse_mlsd_line("Type=dir;Modify=20010909014640.123; sub")
                .unwrap()
                .is_dir
        );
        assert_eq!(parse_mlsd_line("type=cdir; ."), None);
        assert_eq!(parse_mlsd_line("type=pdir; .."), None);
    }

    #[test]
    fn list_lines_keep_spaces_in_names_and_skip_totals() {
        let e = parse_list_line("-rw-r--r-- 1 ftp ftp         1234 Sep  9  2001 a  b.txt").unwrap();
        assert_eq!(
            (e.name.as_str(), e.size, e.is_dir),
            ("a  b.txt", Some(1234), false)
        );
        let d = parse_list_line("drwxr-xr-x 2 u g 4096 Nov 14 19:26 sub").unwrap();
        assert!(d.is_dir);
        assert_eq!(
            parse_list_line("lrwxrwxrwx 1 u g 4 Nov 14 19:26 l -> t")
                .unwrap()
                .name,
            "l"
        );
        assert_eq!(parse_list_line("total 12"), None);
    }
}
