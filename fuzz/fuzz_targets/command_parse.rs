//! The control connection's input path: raw bytes through `ControlCodec` in any chunking,
//! then each line through `Command::parse`.
//!
//! Asserts: the same bytes give the same lines and the same error however they are split
//! into reads; a line never holds LF nor more characters than the limit; without Telnet IAC
//! bytes the lines are exactly the CRLF/LF-separated pieces of the input; the parser answers
//! every error with a 5xx code, names the verb it saw, keeps control characters out of every
//! path argument, and never shows a password in Debug output; a reply quoting a line is one
//! wire line.

#![no_main]

use ferry_fuzz::{Decoded, chunkings, decode_stream, fnv1a};
use ferry_proto::{Command, ControlCodec, LineError, MAX_LINE_LEN, ParseError, Reply};
use libfuzzer_sys::fuzz_target;

/// Telnet "interpret as command": lines holding it are rewritten by the codec.
const IAC: u8 = 0xFF;

fuzz_target!(|data: &[u8]| {
    check_parse(&String::from_utf8_lossy(data));
    let seed = fnv1a(data);
    // A small limit as well, so short inputs reach the over-long paths too.
    let small = usize::try_from(seed % 48).unwrap_or(0);
    for max in [MAX_LINE_LEN, small] {
        let [whole, bytewise, seeded] = chunkings(data, seed);
        let reference = decode(max, &whole);
        for reads in [bytewise, seeded] {
            let other = decode(max, &reads);
            assert_eq!(
                reference.0, other.0,
                "lines depend on how the bytes were read"
            );
            assert_eq!(
                reference.1, other.1,
                "the error depends on how the bytes were read"
            );
        }
        if !data.contains(&IAC) {
            assert_eq!(
                reference,
                split_lines(data, max),
                "lines differ from the model"
            );
        }
        for line in &reference.0 {
            assert!(!line.contains('\n'), "LF inside a line: {line:?}");
            assert!(line.chars().count() <= max, "line over {max} characters");
            // Each wire byte becomes at most one U+FFFD, three bytes in UTF-8.
            assert!(line.len() <= 3 * max, "line over {} bytes", 3 * max);
            check_parse(line);
            let reply = Reply::new(500, line.as_str()).to_bytes();
            let body = reply.strip_suffix(b"\r\n").unwrap_or_default();
            assert!(
                !body.is_empty() && !body.contains(&b'\r') && !body.contains(&b'\n'),
                "a reply quoting {line:?} is not one wire line"
            );
        }
    }
});

/// Lines decoded from `reads`, and the error (as text) that ended the stream.
fn decode(max: usize, reads: &[&[u8]]) -> (Vec<String>, Option<String>) {
    let Decoded { items, error } = decode_stream(ControlCodec::new(max), reads);
    if let Some(err) = &error {
        assert!(
            matches!(err, LineError::TooLong { max: m } if *m == max),
            "unexpected codec error {err:?}"
        );
    }
    (items, error.map(|e| e.to_string()))
}

/// The codec's contract for input without IAC, written out: LF ends a line, one CR before it
/// is dropped, a line over `max` ends the stream, an unterminated tail is discarded unless it
/// is already longer than `max` plus a CR.
fn split_lines(data: &[u8], max: usize) -> (Vec<String>, Option<String>) {
    let too_long = || Some(LineError::TooLong { max }.to_string());
    let mut lines = Vec::new();
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let tail = pieces.pop().unwrap_or_default();
    for piece in pieces {
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if line.len() > max {
            return (lines, too_long());
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    if tail.len() > max + 1 {
        return (lines, too_long());
    }
    (lines, None)
}

fn check_parse(line: &str) {
    let verb = line
        .trim_start_matches(' ')
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match Command::parse(line) {
        Ok(cmd) => {
            let canonical = match verb.as_str() {
                "XPWD" => "PWD",
                "XCWD" => "CWD",
                "XCUP" => "CDUP",
                "XMKD" => "MKD",
                "XRMD" => "RMD",
                other => other,
            };
            assert_eq!(cmd.verb(), canonical, "{line:?} parsed as {cmd:?}");
            if let Some(path) = path_of(&cmd) {
                assert!(!path.is_empty(), "empty path from {line:?}");
                assert!(
                    !path.chars().any(char::is_control),
                    "control character in path {path:?}"
                );
            }
            if let Command::Pass(_) = cmd {
                assert_eq!(format!("{cmd:?}"), "Pass(********)");
            }
        }
        Err(err) => {
            let code = err.reply_code();
            assert!(
                matches!(code, 500 | 501 | 502 | 504 | 522),
                "{err:?} answered {code}"
            );
            assert_eq!(
                err == ParseError::Empty,
                line.trim_start_matches(' ').is_empty(),
                "{line:?} gave {err:?}"
            );
            if let ParseError::Unknown(named) = &err {
                assert_eq!(*named, verb);
            }
        }
    }
}

/// The argument a command hands to storage as a path, if it has one.
fn path_of(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Cwd(p)
        | Command::Mkd(p)
        | Command::Rmd(p)
        | Command::Dele(p)
        | Command::Rnfr(p)
        | Command::Rnto(p)
        | Command::Retr(p)
        | Command::Stor(p)
        | Command::Appe(p)
        | Command::Size(p)
        | Command::Mdtm(p)
        | Command::Hash(p)
        | Command::Md5(p)
        | Command::Mmd5(p)
        | Command::XHash { path: p, .. } => Some(p),
        Command::List(p)
        | Command::Nlst(p)
        | Command::Stat(p)
        | Command::Mlst(p)
        | Command::Mlsd(p) => p.as_deref(),
        _ => None,
    }
}
