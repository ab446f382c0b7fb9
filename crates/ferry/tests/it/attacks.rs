//! Regression tests for bug classes FTP servers are known for, each named after what it pins:
//! listing patterns that explode in a glob expander, huge directories listed in memory,
//! Telnet bytes and line endings inside commands, offsets at the edge of u64, user-name
//! probing by reply and by time, and uploads whose directory moves away under them.
//!
//! Covered elsewhere: commands before login (raw.rs `commands_before_login_get_530`, every
//! verb HELP lists), traversal and symlinks (jail.rs), PASV port theft, PORT bounce, IAC
//! before a verb, bare CR/LF and over-long lines (raw.rs), TLS data connections without
//! session reuse and plaintext pipelined after AUTH TLS (ftps.rs).

use std::collections::BTreeSet;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_server::users::{self, Password, UserEntry};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use testkit::{TestServer, random_bytes};
use tokio::io::AsyncWriteExt;

use super::binary::Server;
use super::raw::{Raw, Reply};

// ---------------------------------------------------------------------------------------------
// Listing patterns.

/// LIST arguments that make a glob expander or an `ls -R` emulation do unbounded work.
fn listing_bombs() -> Vec<String> {
    let mut bombs: Vec<String> = [
        "-R",
        "-laR",
        "-laR /",
        "-R */../*/..",
        "-a -l -R -t -r *",
        "**/**/**/**/**/**/**/**",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "[a-z]*[0-9]*[a-z]*[0-9]*[a-z]*[0-9]*[a-z]*[0-9]*",
        "[!a]*[^b]*[]]*[\\]*",
        "~",
        "~root/*",
        "../*/../*/../*",
        "*/*/*/*/*/*/*/*/*/*/*/*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    bombs.push("*/../".repeat(799) + "*");
    bombs.push("*".repeat(4000));
    bombs.push("?*".repeat(2000));
    bombs.push("{a,b}".repeat(790));
    bombs.push(format!("{}{}", "{".repeat(1000), "}".repeat(1000)));
    bombs.push(format!("-R {}", "*/".repeat(1990)));
    bombs
}

#[tokio::test]
async fn glob_patterns_and_recursive_flags_in_listings_are_answered_at_once() {
    let server = TestServer::start();
    let home = server.home("alice");
    // 8 x 8 directories with a file each: `*/../*` repeated would visit 64^n paths.
    for a in 0..8 {
        for b in 0..8 {
            let dir = home.join(format!("d{a}")).join(format!("e{b}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("f"), b"x").unwrap();
        }
    }
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    for bomb in listing_bombs() {
        let show: String = bomb.chars().take(40).collect();
        for verb in ["LIST", "NLST", "MLSD"] {
            let started = Instant::now();
            let t = c.transfer(format!("{verb} {bomb}"), None).await;
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{verb} {show:?} took {:?}",
                started.elapsed()
            );
            assert!(
                [226, 501, 550, 553].contains(&t.code()),
                "{verb} {show:?}: {t:?}"
            );
            // No recursion: at most the 8 top-level entries.
            assert!(
                t.data.len() < 8 * 200,
                "{verb} {show:?}: {} bytes",
                t.data.len()
            );
        }
        let started = Instant::now();
        let r = c.cmd(format!("STAT {bomb}")).await;
        assert!(started.elapsed() < Duration::from_secs(2), "STAT {show:?}");
        // 211 when only flags are left: STAT without a path is the session status.
        assert!(
            [211, 213, 501, 550, 553].contains(&r.0),
            "STAT {show:?}: {r:?}"
        );
        assert_eq!(c.cmd("NOOP").await.0, 200, "after {show:?}");
    }
    let t = c.transfer("NLST", None).await;
    let names = String::from_utf8(t.data).unwrap();
    assert_eq!(names.lines().count(), 8, "{names}");
}

// ---------------------------------------------------------------------------------------------
// A directory of 100,000 entries.

/// Entries in the directory the memory test lists.
const MANY: usize = 100_000;

/// How much the server's peak resident set may grow while listing [`MANY`] entries three
/// times. A listing streamed to the data connection needs a buffer, and at most the sorted
/// names (100,000 x (7 bytes + a 24-byte String + allocator slack) is about 5 MiB); building
/// the whole listing in memory costs about 30 MB (entries with their metadata, the formatted
/// lines and the joined body).
const LISTING_GROWTH_KIB: u64 = 12 * 1024;

/// A field of /proc/PID/status in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// The names in a listing: the last field of LIST lines, the part after the facts in MLSD,
/// NLST lines as they are. Each must be followed by CRLF.
fn listed_names(verb: &str, body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "{verb}: no CRLF at the end"
    );
    text.split_terminator("\r\n")
        .map(|line| match verb {
            "LIST" => line.split_whitespace().nth(8).unwrap().to_string(),
            "MLSD" => line.split_once(' ').unwrap().1.to_string(),
            _ => line.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn listing_100000_entries_keeps_the_servers_peak_memory_bounded() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    let hash = users::hash_password_with_params(&Password::new("lister-pw"), 64, 1, 1).unwrap();
    let entry = UserEntry::new(hash, users::default_home("lister"), false);
    users::add_user(data, "lister", entry).unwrap();
    let home = data.join("home").join("lister");
    fs::create_dir_all(home.join("warm-up")).unwrap();
    let mut expected: BTreeSet<String> = (0..MANY).map(|i| format!("f{i:06}")).collect();
    for name in &expected {
        fs::File::create(home.join(name)).unwrap();
    }
    expected.insert("warm-up".into());

    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    let pid = server.pid();
    let mut c = Raw::login(server.addr(), "lister", "lister-pw").await;
    // One small listing of each kind first, so one-time allocations are in the baseline.
    for verb in ["LIST", "NLST", "MLSD"] {
        assert_eq!(
            c.transfer(format!("{verb} warm-up"), None).await.code(),
            226
        );
    }
    // Peak RSS back to the current RSS (Linux 4.0+), so VmHWM afterwards is the listings'.
    fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
    let before = status_kib(pid, "VmRSS");
    for verb in ["LIST", "NLST", "MLSD"] {
        let t = c.transfer(verb, None).await;
        assert_eq!(t.code(), 226, "{verb}: {:?} {:?}", t.first, t.last);
        let names = listed_names(verb, &t.data);
        let distinct: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(names.len(), expected.len(), "{verb}: names listed");
        assert!(distinct == expected, "{verb}: not every name exactly once");
    }
    let peak = status_kib(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!("listing {MANY} entries: RSS {before} KiB before, peak {peak} KiB");
    assert!(
        growth < LISTING_GROWTH_KIB,
        "listing {MANY} entries grew the server's peak RSS by {growth} KiB \
         (from {before} KiB to {peak} KiB; bound {LISTING_GROWTH_KIB} KiB)"
    );
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// Telnet bytes and line endings inside commands.

/// The path in a `257 "path" created` reply.
fn created(reply: &Reply) -> String {
    assert_eq!(reply.0, 257, "{reply:?}");
    reply
        .1
        .strip_suffix(" created")
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[tokio::test]
async fn telnet_commands_inside_an_argument_are_dropped_and_iac_iac_is_one_byte() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // IAC IP, IAC DM and IAC WILL ECHO inside a name, and a lone IAC at the end of the line:
    // removed, the name around them kept whole.
    assert_eq!(
        created(&c.cmd(b"MKD in\xff\xf4\xff\xf2side").await),
        "/inside"
    );
    assert_eq!(created(&c.cmd(b"MKD op\xff\xfb\x01tion").await), "/option");
    assert_eq!(created(&c.cmd(b"MKD tail\xff").await), "/tail");
    let mut names: Vec<String> = fs::read_dir(server.home("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["inside", "option", "tail"]);
    // IAC IAC is one data byte 0xFF (RFC 854), not a command and not two bytes. 0xFF is not
    // UTF-8: refused, or kept as one byte (raw or as one U+FFFD); never "ab" or two bytes.
    let r = c.cmd(b"MKD a\xff\xffb").await;
    if r.0 == 257 {
        let name = created(&r);
        assert!(name == "/a\u{fffd}b" || name == "/a\u{ff}b", "{r:?}");
    } else {
        assert!([501, 553].contains(&r.0), "{r:?}");
    }
    // IAC IP inside the verb: dropped, and the verb is whole again.
    let r = c.cmd(b"NO\xff\xf4OP").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn lf_only_and_mixed_line_endings_pipelined_get_one_reply_each_in_order() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // One write, LF-only and CRLF mixed: five commands, five replies in order.
    c.send("NOOP\nPWD\nSYST\r\nTYPE I\nMKD lf-made\n").await;
    for code in [200, 257, 215, 200, 257] {
        let r = c.reply().await;
        assert_eq!(r.0, code, "{r:?}");
    }
    assert!(server.home("alice").join("lf-made").is_dir());
    // Empty lines, LF-only and CRLF: 500 each, nothing skipped.
    c.send("\n\r\nNOOP\n").await;
    for code in [500, 500, 200] {
        let r = c.reply().await;
        assert_eq!(r.0, code, "{r:?}");
    }
    // CR CR LF: one line ending in a CR, one reply (the verb is not NOOP); the next line is
    // still its own command.
    c.send("NOOP\r\r\nSYST\r\n").await;
    let r = c.reply().await;
    assert!(r.0 == 200 || r.0 == 502, "{r:?}");
    assert_eq!(c.reply().await.0, 215);
    // A bare CR before a path's end: refused as a control character, not split.
    let r = c.cmd("MKD cr\rmade").await;
    assert_eq!(r.0, 501, "{r:?}");
    assert!(!server.home("alice").join("cr").exists());
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// Offsets at the edge of u64.

/// u64::MAX, as clients type it.
const U64_MAX: &str = "18446744073709551615";

/// One more than u64::MAX.
const U64_OVER: &str = "18446744073709551616";

#[tokio::test]
async fn rest_rang_and_hash_offsets_near_u64_max_are_refused_and_the_session_goes_on() {
    let server = TestServer::start();
    let path = server.home("alice").join("f.bin");
    let body = random_bytes(1000, 3);
    fs::write(&path, &body).unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;

    assert_eq!(c.cmd(format!("REST {U64_MAX}")).await.0, 350);
    let t = c.transfer("RETR f.bin", None).await;
    assert_eq!(t.code(), 554, "REST u64::MAX + RETR: {t:?}");
    assert_eq!(c.cmd(format!("REST {U64_MAX}")).await.0, 350);
    let t = c.transfer("STOR f.bin", Some(b"must not land")).await;
    assert_eq!(t.code(), 554, "REST u64::MAX + STOR: {t:?}");
    assert_eq!(fs::read(&path).unwrap(), body);
    assert_eq!(c.cmd(format!("REST {U64_MAX}")).await.0, 350);
    let t = c.transfer("STOR new.bin", Some(b"must not land")).await;
    assert_eq!(t.code(), 550, "REST u64::MAX + STOR of a new file: {t:?}");
    assert!(!server.home("alice").join("new.bin").exists());
    for arg in [
        U64_OVER,
        "-1",
        "99999999999999999999999999",
        "18446744073709551615 1",
    ] {
        let r = c.cmd(format!("REST {arg}")).await;
        assert_eq!(r.0, 501, "REST {arg}: {r:?}");
    }
    // Ranges for HASH: accepted as numbers, refused against the file.
    for (start, end) in [
        ("18446744073709551614", U64_MAX),
        ("0", U64_MAX),
        (U64_MAX, U64_MAX),
    ] {
        assert_eq!(c.cmd(format!("RANG {start} {end}")).await.0, 350);
        let r = c.cmd("HASH f.bin").await;
        assert_eq!(r.0, 501, "RANG {start} {end} + HASH: {r:?}");
    }
    for arg in [
        format!("0 {U64_OVER}"),
        format!("{U64_MAX} 0"),
        "-1 5".into(),
    ] {
        let r = c.cmd(format!("RANG {arg}")).await;
        assert_eq!(r.0, 501, "RANG {arg}: {r:?}");
    }
    for (start, end) in [
        ("18446744073709551614", U64_MAX),
        ("0", U64_MAX),
        (U64_MAX, U64_MAX),
    ] {
        for verb in ["XSHA256", "XCRC"] {
            let r = c.cmd(format!("{verb} f.bin {start} {end}")).await;
            assert_eq!(r.0, 501, "{verb} f.bin {start} {end}: {r:?}");
        }
    }
    // An end past u64 is no offset: the whole argument is then a (missing) file name.
    let r = c.cmd(format!("XSHA256 f.bin 0 {U64_OVER}")).await;
    assert_eq!(r.0, 550, "{r:?}");
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert!(c.retr("f.bin").await == body);
}

/// 1 TiB: far beyond the disk, so only a sparse file can have this size.
const TIB: u64 = 1 << 40;

/// The only bytes written into the sparse file, at its very end.
const TAIL: &[u8] = b"the last bytes of 1 TiB!";

/// Lowercase hex of SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_sparse_terabyte_file_reports_its_exact_size_and_serves_its_tail() {
    let server = TestServer::start();
    let path = server.home("alice").join("sparse.bin");
    let start = TIB - TAIL.len() as u64;
    {
        let mut f = fs::File::create(&path).unwrap();
        f.seek(SeekFrom::Start(start)).unwrap();
        f.write_all(TAIL).unwrap();
        f.set_len(TIB).unwrap();
    }
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    assert_eq!(c.cmd("SIZE sparse.bin").await, (213, TIB.to_string()));
    let r = c.cmd("MLST sparse.bin").await;
    assert!(r.1.contains(&format!("size={TIB};")), "{r:?}");
    let r = c.cmd("STAT sparse.bin").await;
    assert!(r.1.contains(&format!(" {TIB} ")), "{r:?}");

    assert_eq!(c.cmd(format!("REST {start}")).await.0, 350);
    assert_eq!(c.retr("sparse.bin").await, TAIL);
    assert_eq!(c.cmd(format!("REST {}", TIB - 5)).await.0, 350);
    assert_eq!(c.retr("sparse.bin").await, &TAIL[TAIL.len() - 5..]);
    assert_eq!(c.cmd(format!("REST {TIB}")).await.0, 350);
    assert!(c.retr("sparse.bin").await.is_empty());
    assert_eq!(c.cmd(format!("REST {}", TIB + 1)).await.0, 350);
    assert_eq!(c.transfer("RETR sparse.bin", None).await.code(), 554);

    // Checksums of the tail alone, by inclusive RANG and by exclusive X* offsets.
    assert_eq!(c.cmd(format!("RANG {start} {}", TIB - 1)).await.0, 350);
    let r = c.cmd("HASH sparse.bin").await;
    let want = format!(
        "SHA-256 {start}-{} {} sparse.bin",
        TIB - 1,
        sha256_hex(TAIL)
    );
    assert_eq!(r, (213, want));
    let r = c.cmd(format!("XSHA256 sparse.bin {start} {TIB}")).await;
    assert_eq!(r, (250, sha256_hex(TAIL).to_uppercase()));
    let r = c
        .cmd(format!("XSHA256 sparse.bin {start} {}", TIB + 1))
        .await;
    assert_eq!(r.0, 501, "{r:?}");

    // Resuming an upload at the tail rewrites only the tail.
    assert_eq!(c.cmd(format!("REST {start}")).await.0, 350);
    let new_tail = b"a new tail, 24 bytes too";
    assert_eq!(new_tail.len(), TAIL.len());
    c.stor("sparse.bin", new_tail).await;
    assert_eq!(c.cmd("SIZE sparse.bin").await, (213, TIB.to_string()));
    assert_eq!(c.cmd(format!("REST {start}")).await.0, 350);
    assert_eq!(c.retr("sparse.bin").await, new_tail);
}

// ---------------------------------------------------------------------------------------------
// User-name probing.

/// One login attempt on a connection of its own: the replies to USER and PASS and how long
/// PASS took to answer.
async fn attempt(server: &TestServer, user: &str, password: &str) -> (Reply, Reply, Duration) {
    let mut c = Raw::greeted(server.addr()).await;
    let user_reply = c.cmd(format!("USER {user}")).await;
    let started = Instant::now();
    let pass_reply = c.cmd(format!("PASS {password}")).await;
    (user_reply, pass_reply, started.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_replies_in_the_same_time() {
    const ROUNDS: usize = 21;
    // The delay after a failure is the same for both by construction; without it the
    // timer's granularity does not blur the work that might differ.
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.login_fail_delay = Duration::ZERO)
        .start();
    let (mut unknown, mut known) = (Vec::new(), Vec::new());
    let mut replies = BTreeSet::new();
    for round in 0..ROUNDS {
        // Interleaved, each kind first in turn, so drift in the machine's speed hits both.
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let (u, p, t) = attempt(&server, &format!("mallory{round}"), "guess").await;
                replies.insert((u, p));
                unknown.push(t);
            } else {
                let (u, p, t) = attempt(&server, "alice", "guess").await;
                replies.insert((u, p));
                known.push(t);
            }
        }
    }
    assert_eq!(replies.len(), 1, "replies differ: {replies:#?}");
    let ((user_code, _), (pass_code, _)) = replies.first().unwrap();
    assert_eq!((*user_code, *pass_code), (331, 530));
    let (unknown, known) = (median(unknown), median(known));
    let diff = unknown.abs_diff(known);
    eprintln!("PASS answered in {unknown:?} (unknown user) and {known:?} (wrong password)");
    assert!(
        diff < Duration::from_millis(5),
        "PASS for an unknown user answered in {unknown:?}, for a wrong password in {known:?} \
         (medians of {ROUNDS}): the difference tells which names exist"
    );
}

// ---------------------------------------------------------------------------------------------
// Uploads whose directory moves away.

/// Paths of replacing uploads' temporary files anywhere under `dir`.
fn temp_files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            found.extend(temp_files_under(&entry.path()));
        } else if name.starts_with(".ferry-upload-") {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn a_replacing_upload_whose_directory_is_renamed_leaves_no_uncounted_temp_file() {
    let server = TestServer::builder()
        .quota_user("alice", "alice-pw", Some(1_000_000), None)
        .start();
    let home = server.home("alice");
    fs::create_dir_all(home.join("d")).unwrap();
    fs::write(home.join("d").join("f"), b"old").unwrap();
    let mut uploader = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut mover = Raw::login(server.addr(), "alice", "alice-pw").await;
    // Replacing d/f writes a temporary sibling in d; d is renamed before the upload ends.
    let mut data = uploader.open_data().await;
    assert_eq!(uploader.cmd("STOR d/f").await.0, 150);
    data.write_all(&vec![7u8; 900_000]).await.unwrap();
    data.flush().await.unwrap();
    assert_eq!(mover.cmd("RNFR d").await.0, 350);
    assert_eq!(mover.cmd("RNTO e").await.0, 250);
    drop(data);
    let r = uploader.reply().await;
    // The upload lands under the directory's new name, or fails and leaves the old file.
    let f = fs::read(home.join("e").join("f")).unwrap();
    match r.0 {
        226 => assert!(f == vec![7u8; 900_000], "e/f after {r:?}"),
        _ => assert_eq!(f, b"old", "e/f after {r:?}"),
    }
    // Either way no temporary file is left: it would be invisible to listings and to the
    // quota, so repeating this would fill the disk past any quota.
    let left = temp_files_under(&home);
    assert!(left.is_empty(), "after {r:?}, left behind: {left:?}");
    assert_eq!(uploader.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn names_that_are_not_utf8_are_refused_instead_of_colliding() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // Latin-1 é and É: decoded lossily both would become "caf\u{fffd}", one name.
    assert_eq!(c.cmd(b"MKD caf\xe9").await.0, 501);
    assert_eq!(c.cmd(b"MKD caf\xc9").await.0, 501);
    assert_eq!(c.cmd(b"STOR caf\xe9.txt").await.0, 501);
    assert_eq!(c.cmd(b"DELE caf\xe9.txt").await.0, 501);
    // UTF-8 names work, and the session goes on.
    assert_eq!(created(&c.cmd("MKD café").await), "/café");
    assert_eq!(c.cmd("CWD café").await.0, 250);
    assert_eq!(c.cmd("NOOP").await.0, 200);
    let names: Vec<String> = fs::read_dir(server.home("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["café"]);
}

#[tokio::test]
async fn accounts_that_require_tls_cannot_be_told_from_unknown_names() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .user("carol", "carol-pw")
        .tls()
        .start();
    super::ftps::require_tls_for(&server, "carol");
    let mut c = Raw::greeted(server.addr()).await;
    let known = c.cmd("USER carol").await;
    assert_eq!(c.cmd("PASS guess").await.0, 530);
    let unknown = c.cmd("USER nobody").await;
    assert_eq!(known, unknown);
    let r = c.cmd("PASS guess").await;
    assert_eq!(r.0, 530, "{r:?}");
    assert!(!r.1.contains("TLS"), "{r:?}");
}
