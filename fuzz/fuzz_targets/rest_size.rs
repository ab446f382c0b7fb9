//! Offsets and size-style arguments: REST (RFC 3659 5), SIZE, RANG and HASH
//! (draft-bryan-ftpext-hash) and the XSHA256-style aliases with their optional range.
//!
//! The input is a line or a bare argument, tried with each verb, plus numbers near u64::MAX
//! built from the input. Asserts: REST accepts exactly the decimal numbers that fit in u64 and
//! yields their value (checked against an independent u128 computation), else answers 501;
//! RANG yields start <= end (or the `1 0` reset) with both values exact; an X-hash range is
//! the last two words of the argument, ordered, with the rest as the path; SIZE and HASH keep
//! the argument as the path exactly when it is non-empty and free of control characters.

#![no_main]

use ferry_fuzz::{argument, fnv1a};
use ferry_proto::{Command, HashAlgorithm};
use libfuzzer_sys::fuzz_target;

const VERBS: [&str; 5] = ["REST", "SIZE", "RANG", "HASH", "XSHA256"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let arg = argument(&text, &VERBS);
    check_rest(arg);
    check_rang(arg);
    check_path_verbs(arg);
    check_x_hash(arg);

    // Around the top of u64, where an unchecked multiply-and-add would wrap.
    let near = u128::from(fnv1a(data) % 4096);
    let max = u128::from(u64::MAX);
    for value in [max - near, max + near, max * 10 + near % 10] {
        check_rest(&value.to_string());
        check_rest(&format!(" {value} "));
        check_rang(&format!("{near} {value}"));
        check_x_hash(&format!("f {near} {value}"));
    }
});

/// The value of a decimal argument, computed in u128 so the model itself cannot overflow;
/// None unless the trimmed text is non-empty ASCII digits.
fn decimal(text: &str) -> Option<u128> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u128::from(b - b'0')))
            .or(Some(u128::MAX))
    })
}

fn as_offset(text: &str) -> Option<u64> {
    decimal(text).and_then(|v| u64::try_from(v).ok())
}

fn check_rest(arg: &str) {
    match Command::parse(&format!("REST {arg}")) {
        Ok(Command::Rest(offset)) => assert_eq!(Some(offset), as_offset(arg), "{arg:?}"),
        Ok(other) => panic!("REST parsed as {other:?}"),
        Err(err) => {
            assert_eq!(as_offset(arg), None, "{arg:?} refused: {err:?}");
            assert_eq!(err.reply_code(), 501);
        }
    }
}

fn check_rang(arg: &str) {
    let words: Vec<&str> = arg.split_whitespace().collect();
    let expected = match words[..] {
        [start, end] => match (as_offset(start), as_offset(end)) {
            (Some(s), Some(e)) if s <= e || (s, e) == (1, 0) => Some((s, e)),
            _ => None,
        },
        _ => None,
    };
    match Command::parse(&format!("RANG {arg}")) {
        Ok(Command::Rang(start, end)) => assert_eq!(Some((start, end)), expected, "{arg:?}"),
        Ok(other) => panic!("RANG parsed as {other:?}"),
        Err(err) => {
            assert_eq!(expected, None, "{arg:?} refused: {err:?}");
            assert_eq!(err.reply_code(), 501);
        }
    }
}

fn is_path(arg: &str) -> bool {
    !arg.is_empty() && !arg.chars().any(char::is_control)
}

fn check_path_verbs(arg: &str) {
    for (verb, wrap) in [
        ("SIZE", Command::Size as fn(String) -> Command),
        ("HASH", Command::Hash),
    ] {
        match Command::parse(&format!("{verb} {arg}")) {
            Ok(cmd) => assert_eq!(cmd, wrap(arg.to_string())),
            Err(err) => {
                assert!(!is_path(arg), "{verb} {arg:?} refused: {err:?}");
                assert_eq!(err.reply_code(), 501);
            }
        }
    }
}

fn check_x_hash(arg: &str) {
    let parsed = Command::parse(&format!("XSHA256 {arg}"));
    let words: Vec<&str> = arg.rsplitn(3, ' ').collect();
    let numbers = match words[..] {
        [end, start, name] => as_offset(start).zip(as_offset(end)).map(|r| (name, r)),
        _ => None,
    };
    match (parsed, numbers) {
        (
            Ok(Command::XHash {
                algorithm,
                path,
                range,
            }),
            numbers,
        ) => {
            assert_eq!(algorithm, HashAlgorithm::Sha256);
            assert!(is_path(&path), "{path:?}");
            match (range, numbers) {
                (Some((start, end)), Some((name, expected))) => {
                    assert_eq!((start, end), expected);
                    assert!(start <= end, "{arg:?}");
                    assert_eq!(path, name);
                }
                (None, None) => assert_eq!(path, arg),
                (range, numbers) => panic!("{arg:?}: range {range:?}, words {numbers:?}"),
            }
        }
        (Ok(other), _) => panic!("XSHA256 parsed as {other:?}"),
        (Err(err), Some((name, (start, end)))) => {
            assert!(start > end || !is_path(name), "{arg:?} refused: {err:?}");
            assert_eq!(err.reply_code(), 501);
        }
        (Err(err), None) => {
            assert!(!is_path(arg), "{arg:?} refused: {err:?}");
            assert_eq!(err.reply_code(), 501);
        }
    }
}
