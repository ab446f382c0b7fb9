//! Directory listing lines: `ls_line` (LIST) and `mlsx_line` (MLSD/MLST, RFC 3659 7) for any
//! name and metadata.
//!
//! Asserts: each is one line (CR/LF only if the name has them) ending in a space and the
//! name; the `ls -l` prefix is the eight columns clients parse (mode, links, owner, group, size,
//! month, day, time or year) with the size exact; the MLSx facts are `fact=value;` pairs, in
//! RFC order, exactly the selected ones, with values that match the metadata, then one space
//! and the name.
//!
//! Modification times reach far beyond chrono's range (about 262,000 years either side of
//! 1970), where `listing` once panicked; it clamps them to the years 0000-9999 now.

#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use ferry_server::listing::{Facts, ls_line, mlsx_line, timeval};
use ferry_server::storage::{DirEntry, Metadata};
use libfuzzer_sys::fuzz_target;

/// Seconds either side of the epoch: well past what chrono can represent (8.2e12).
const TIME_RANGE: i64 = 1_000_000_000_000_000;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const FACT_ORDER: [&str; 5] = ["type", "size", "modify", "perm", "unique"];

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    is_dir: bool,
    len: u64,
    modified_secs: i64,
    modified_nanos: u32,
    now_secs: i64,
    mode: Option<u32>,
    /// Device and inode, formatted as the local file system backend does.
    unique: Option<(u64, u64)>,
    writable: bool,
    /// An `OPTS MLST` selection, or the default (all facts) when None.
    facts: Option<String>,
}

fuzz_target!(|input: Input| {
    let metadata = Metadata {
        is_dir: input.is_dir,
        len: input.len,
        modified: time(input.modified_secs, input.modified_nanos),
        mode: input.mode,
        unique: input.unique.map(|(dev, ino)| format!("{dev:x}g{ino:x}")),
    };
    let name = input.name;
    let entry = DirEntry {
        name: name.clone(),
        metadata: metadata.clone(),
    };
    let ls = ls_line(&entry, time(input.now_secs, 0));
    check_one_line(&ls, &name);
    check_ls_columns(&ls, &name, &metadata);

    let facts = input
        .facts
        .as_deref()
        .map_or_else(Facts::default, Facts::select);
    let mlsx = mlsx_line(&name, &metadata, input.writable, facts);
    check_one_line(&mlsx, &name);
    check_facts(&mlsx, &name, &metadata, input.writable, facts);
});

fn time(secs: i64, nanos: u32) -> SystemTime {
    let secs = secs % TIME_RANGE;
    let nanos = Duration::from_nanos(u64::from(nanos % 1_000_000_000));
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + offset + nanos
    } else {
        SystemTime::UNIX_EPOCH - offset + nanos
    }
}

fn check_one_line(line: &str, name: &str) {
    if !name.contains(['\r', '\n']) {
        assert!(!line.contains(['\r', '\n']), "{line:?}");
    }
    assert!(
        line.ends_with(&format!(" {name}")),
        "{line:?} does not end in the name"
    );
}

fn check_ls_columns(line: &str, name: &str, meta: &Metadata) {
    let prefix = &line[..line.len() - name.len() - 1];
    let columns: Vec<&str> = prefix.split_whitespace().collect();
    let [mode, links, owner, group, size, month, day, clock_or_year] = columns[..] else {
        panic!("{line:?} does not have eight columns before the name");
    };
    assert_eq!(mode.len(), 10, "{mode:?}");
    assert_eq!(mode.starts_with('d'), meta.is_dir, "{mode:?}");
    assert!(mode[1..].chars().all(|c| "rwx-".contains(c)), "{mode:?}");
    assert_eq!((links, owner, group), ("1", "ftp", "ftp"));
    assert_eq!(size, meta.len.to_string());
    assert!(MONTHS.contains(&month), "{month:?}");
    assert!(matches!(day.parse::<u8>(), Ok(1..=31)), "{day:?}");
    let is_clock = clock_or_year.len() == 5
        && clock_or_year.as_bytes()[2] == b':'
        && clock_or_year.bytes().filter(u8::is_ascii_digit).count() == 4;
    let is_year = clock_or_year.len() == 4 && clock_or_year.bytes().all(|b| b.is_ascii_digit());
    assert!(is_clock || is_year, "{clock_or_year:?}");
}

fn check_facts(line: &str, name: &str, meta: &Metadata, writable: bool, facts: Facts) {
    let Some((section, rest)) = line.split_once(' ') else {
        panic!("no space in {line:?}");
    };
    assert_eq!(rest, name);
    assert!(section.is_empty() || section.ends_with(';'), "{section:?}");
    let mut sent = Vec::new();
    for pair in section.split_terminator(';') {
        let Some((fact, value)) = pair.split_once('=') else {
            panic!("{pair:?} is not fact=value");
        };
        assert!(!value.contains(['=', ';', ' ']), "{pair:?}");
        let expected = match fact {
            "type" => if meta.is_dir { "dir" } else { "file" }.to_string(),
            "size" => meta.len.to_string(),
            "modify" => timeval(meta.modified),
            "perm" => match (meta.is_dir, writable) {
                (true, true) => "cdeflmp",
                (true, false) => "el",
                (false, true) => "adfrw",
                (false, false) => "r",
            }
            .to_string(),
            "unique" => meta.unique.clone().unwrap_or_default(),
            other => panic!("unknown fact {other:?}"),
        };
        assert_eq!(value, expected, "{fact}");
        sent.push(fact);
    }
    let selected = facts.selected();
    let wanted: Vec<&str> = FACT_ORDER
        .into_iter()
        .filter(|f| selected.split(';').any(|s| s == *f))
        .filter(|f| *f != "unique" || meta.unique.is_some())
        .collect();
    assert_eq!(sent, wanted, "facts sent in {line:?}");
}
