//! Checksum commands against digests computed here with sha2, sha1, md-5 and crc32fast:
//! HASH, OPTS HASH and RANG (draft-bryan-ftpext-hash-02, draft-bryan-ftp-range), the
//! XSHA256/XSHA512/XSHA1/XMD5/XCRC aliases (offsets with the end excluded, as ProFTPD's
//! mod_digest), MD5 and MMD5 (draft-twine-ftpmd5); errors, confinement, a read-only user, and
//! Python's ftplib reading a HASH reply.

use std::process::Command;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use testkit::{TestServer, random_bytes};

use super::raw::Raw;

/// Size of the large test file: several of the server's 1 MiB chunks plus a ragged tail.
const BIG_LEN: usize = 5 * 1024 * 1024 + 4321;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of `data` computed locally, lowercase hex; `name` as in FEAT.
fn local(name: &str, data: &[u8]) -> String {
    match name {
        "SHA-256" => hex(&Sha256::digest(data)),
        "SHA-512" => hex(&Sha512::digest(data)),
        "SHA-1" => hex(&Sha1::digest(data)),
        "MD5" => hex(&Md5::digest(data)),
        "CRC32" => format!("{:08x}", crc32fast::hash(data)),
        other => panic!("no local digest for {other}"),
    }
}

const ALGORITHMS: [&str; 5] = ["SHA-256", "SHA-512", "SHA-1", "MD5", "CRC32"];

/// The X* verb for each algorithm.
fn alias(name: &str) -> &'static str {
    match name {
        "SHA-256" => "XSHA256",
        "SHA-512" => "XSHA512",
        "SHA-1" => "XSHA1",
        "MD5" => "XMD5",
        "CRC32" => "XCRC",
        other => panic!("no alias for {other}"),
    }
}

/// Alice's home with an empty file, a 1-byte file, a ~5 MiB file and a directory.
struct Files {
    server: TestServer,
    one: Vec<u8>,
    big: Vec<u8>,
}

fn files() -> Files {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::create_dir_all(home.join("dir")).unwrap();
    let one = vec![0xA5];
    let big = random_bytes(BIG_LEN, 7);
    std::fs::write(home.join("empty.bin"), b"").unwrap();
    std::fs::write(home.join("one.bin"), &one).unwrap();
    std::fs::write(home.join("big.bin"), &big).unwrap();
    Files { server, one, big }
}

async fn alice(server: &TestServer) -> Raw {
    Raw::login(server.addr(), "alice", "alice-pw").await
}

/// Sends `line`, asserts the reply code, returns the text.
async fn expect(c: &mut Raw, line: &str, code: u16) -> String {
    let (got, text) = c.cmd(line).await;
    assert_eq!(got, code, "{line:?} answered {got} {text:?}");
    text
}

#[tokio::test]
async fn hash_and_its_aliases_match_local_digests_of_whole_files() {
    let f = files();
    let mut c = alice(&f.server).await;
    let cases: [(&str, &[u8]); 3] = [("empty.bin", b""), ("one.bin", &f.one), ("big.bin", &f.big)];
    for name in ALGORITHMS {
        assert_eq!(
            expect(&mut c, &format!("OPTS HASH {name}"), 200).await,
            name
        );
        for (file, data) in cases {
            // The range is first and last byte; an empty file is written 0-0.
            let last = data.len().saturating_sub(1);
            let want = format!("{name} 0-{last} {} {file}", local(name, data));
            assert_eq!(expect(&mut c, &format!("HASH {file}"), 213).await, want);
            let want = local(name, data).to_ascii_uppercase();
            let got = expect(&mut c, &format!("{} {file}", alias(name)), 250).await;
            assert_eq!(got, want, "{} {file}", alias(name));
        }
    }
    let crc = expect(&mut c, "XCRC empty.bin", 250).await;
    assert_eq!(crc, "00000000");
    for (file, data) in cases {
        let want = format!("{file} {}", local("MD5", data).to_ascii_uppercase());
        assert_eq!(expect(&mut c, &format!("MD5 {file}"), 251).await, want);
    }
}

#[tokio::test]
async fn rang_selects_an_inclusive_range_for_the_next_hash_only() {
    let f = files();
    let big = &f.big;
    let n = big.len();
    let mut c = alice(&f.server).await;
    let text = expect(&mut c, "RANG 0 0", 350).await;
    assert_eq!(text, "Restarting at 0. End Byte range at 0");
    // Start, middle, end, and a single byte in the middle.
    let ranges = [
        (0, 0),
        (0, 49),
        (1000, 2_000_000),
        (n - 10, n - 1),
        (4242, 4242),
    ];
    for (start, end) in ranges {
        expect(&mut c, &format!("RANG {start} {end}"), 350).await;
        let want = format!(
            "SHA-256 {start}-{end} {} big.bin",
            local("SHA-256", &big[start..=end])
        );
        assert_eq!(expect(&mut c, "HASH big.bin", 213).await, want);
    }
    // The range was used up: the next HASH covers the whole file.
    let whole = format!("SHA-256 0-{} {} big.bin", n - 1, local("SHA-256", big));
    assert_eq!(expect(&mut c, "HASH big.bin", 213).await, whole);
    // RANG 1 0 resets; a range with its start beyond its end is refused by syntax.
    expect(&mut c, "RANG 5 9", 350).await;
    expect(&mut c, "RANG 1 0", 350).await;
    assert_eq!(expect(&mut c, "HASH big.bin", 213).await, whole);
    expect(&mut c, "RANG 9 3", 501).await;
    // With another algorithm, on the 1-byte file.
    expect(&mut c, "OPTS HASH MD5", 200).await;
    expect(&mut c, "RANG 0 0", 350).await;
    let want = format!("MD5 0-0 {} one.bin", local("MD5", &f.one));
    assert_eq!(expect(&mut c, "HASH one.bin", 213).await, want);
    // A range not inside the file is 501, and is used up too.
    for (file, start, end) in [("big.bin", 0, n), ("big.bin", n, n), ("one.bin", 0, 1)] {
        expect(&mut c, &format!("RANG {start} {end}"), 350).await;
        let text = expect(&mut c, &format!("HASH {file}"), 501).await;
        assert!(text.contains("not inside the file"), "{text}");
    }
    expect(&mut c, "RANG 0 0", 350).await;
    expect(&mut c, "HASH empty.bin", 501).await;
    let want = format!("MD5 0-0 {} one.bin", local("MD5", &f.one));
    assert_eq!(expect(&mut c, "HASH one.bin", 213).await, want);
}

#[tokio::test]
async fn x_commands_take_offsets_with_the_end_excluded() {
    let f = files();
    let big = &f.big;
    let n = big.len();
    let mut c = alice(&f.server).await;
    let upper = |name: &str, data: &[u8]| local(name, data).to_ascii_uppercase();
    let cases = [
        ("SHA-256", 0, n),
        ("CRC32", 0, 100),
        ("MD5", 1_048_570, 3_000_000),
        ("SHA-1", n - 1, n),
        ("SHA-512", 12, 13),
        ("CRC32", 77, 77),
    ];
    for (name, start, end) in cases {
        let line = format!("{} big.bin {start} {end}", alias(name));
        assert_eq!(
            expect(&mut c, &line, 250).await,
            upper(name, &big[start..end]),
            "{line}"
        );
    }
    let line = "XSHA1 one.bin 0 1";
    assert_eq!(expect(&mut c, line, 250).await, upper("SHA-1", &f.one));
    // The end may be the size, not beyond it; the start may not pass the end.
    let text = expect(&mut c, &format!("XCRC big.bin 0 {}", n + 1), 501).await;
    assert!(text.contains("not inside the file"), "{text}");
    expect(&mut c, "XMD5 one.bin 1 2", 501).await;
    expect(&mut c, "XCRC big.bin 9 1", 501).await;
    // X* commands leave the HASH range alone.
    expect(&mut c, "RANG 0 9", 350).await;
    expect(&mut c, "XSHA256 big.bin", 250).await;
    let want = format!("SHA-256 0-9 {} big.bin", local("SHA-256", &big[..10]));
    assert_eq!(expect(&mut c, "HASH big.bin", 213).await, want);
}

#[tokio::test]
async fn opts_hash_selects_per_session_and_feat_marks_the_selection() {
    let f = files();
    let mut c = alice(&f.server).await;
    let feat_line = |text: &str, prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    let feat = expect(&mut c, "FEAT", 211).await;
    assert_eq!(
        feat_line(&feat, "HASH ").as_deref(),
        Some("HASH SHA-256*;SHA-512;SHA-1;MD5;CRC32"),
        "{feat}"
    );
    for alias in ["XSHA256", "XSHA512", "XSHA1", "XMD5", "XCRC", "MD5", "MMD5"] {
        assert!(feat.lines().any(|l| l.trim() == alias), "{alias}: {feat}");
    }
    // RANG only narrows HASH here, so the promise of ranged transfers is not made.
    assert!(feat_line(&feat, "RANG").is_none(), "{feat}");

    assert_eq!(expect(&mut c, "OPTS HASH", 200).await, "SHA-256");
    assert_eq!(expect(&mut c, "OPTS HASH sha-512", 200).await, "SHA-512");
    let feat = expect(&mut c, "FEAT", 211).await;
    assert_eq!(
        feat_line(&feat, "HASH ").as_deref(),
        Some("HASH SHA-256;SHA-512*;SHA-1;MD5;CRC32")
    );
    let text = expect(&mut c, "OPTS HASH CRC-37", 501).await;
    assert!(text.contains("not changed"), "{text}");
    assert_eq!(expect(&mut c, "OPTS HASH", 200).await, "SHA-512");
    let want = format!("SHA-512 0-0 {} one.bin", local("SHA-512", &f.one));
    assert_eq!(expect(&mut c, "HASH one.bin", 213).await, want);

    // The choice belongs to the session; it can be made before login.
    let mut other = Raw::greeted(f.server.addr()).await;
    assert_eq!(expect(&mut other, "OPTS HASH", 200).await, "SHA-256");
    assert_eq!(expect(&mut other, "OPTS HASH Crc32", 200).await, "CRC32");
    expect(&mut other, "USER bob", 331).await;
    expect(&mut other, "PASS bob-pw", 230).await;
    std::fs::create_dir_all(f.server.home("bob")).unwrap();
    std::fs::write(f.server.home("bob").join("b.txt"), b"bob").unwrap();
    let want = format!("CRC32 0-2 {} b.txt", local("CRC32", b"bob"));
    assert_eq!(expect(&mut other, "HASH b.txt", 213).await, want);
    assert_eq!(expect(&mut c, "OPTS HASH", 200).await, "SHA-512");
}

#[tokio::test]
async fn errors_are_answered_and_the_session_goes_on() {
    let f = files();
    let mut c = alice(&f.server).await;
    // HASH: missing file 550, directory 553 (hash draft 3.5), no argument 501.
    expect(&mut c, "HASH missing.bin", 550).await;
    expect(&mut c, "HASH dir", 553).await;
    expect(&mut c, "HASH /", 553).await;
    expect(&mut c, "HASH", 501).await;
    // X*: 550 for both, as mod_digest and GlobalSCAPE answer.
    expect(&mut c, "XSHA256 missing.bin", 550).await;
    expect(&mut c, "XCRC dir", 550).await;
    expect(&mut c, "XMD5 dir 0 1", 550).await;
    // MD5 and MMD5: a directory is 504 (draft-twine 3.1), a missing file 550; one bad name
    // fails MMD5 as a whole.
    expect(&mut c, "MD5 dir", 504).await;
    expect(&mut c, "MD5 missing.bin", 550).await;
    expect(&mut c, "MMD5 one.bin, missing.bin", 550).await;
    expect(&mut c, "MMD5 one.bin,dir", 504).await;
    // Not logged in: 530 for all of them.
    let mut anonymous = Raw::greeted(f.server.addr()).await;
    for line in ["HASH one.bin", "XCRC one.bin", "MD5 one.bin", "RANG 0 1"] {
        expect(&mut anonymous, line, 530).await;
    }
    expect(&mut c, "NOOP", 200).await;
    let want = format!("SHA-256 0-0 {} one.bin", local("SHA-256", &f.one));
    assert_eq!(expect(&mut c, "HASH one.bin", 213).await, want);
}

#[tokio::test]
async fn md5_and_mmd5_echo_names_and_accept_quoted_ones() {
    let f = files();
    let home = f.server.home("alice");
    std::fs::write(home.join("a b.txt"), b"spaced").unwrap();
    std::fs::write(home.join("x,y.txt"), b"comma").unwrap();
    let mut c = alice(&f.server).await;
    let upper = |data: &[u8]| local("MD5", data).to_ascii_uppercase();
    let want = format!("\"a b.txt\" {}", upper(b"spaced"));
    assert_eq!(expect(&mut c, "MD5 \"a b.txt\"", 251).await, want);
    let want = format!("a b.txt {}", upper(b"spaced"));
    assert_eq!(expect(&mut c, "MD5 a b.txt", 251).await, want);
    let want = format!(
        "one.bin {}, big.bin {}, \"x,y.txt\" {}",
        upper(&f.one),
        upper(&f.big),
        upper(b"comma")
    );
    let got = expect(&mut c, "MMD5 one.bin, big.bin,\"x,y.txt\"", 252).await;
    assert_eq!(got, want);
    let want = format!("one.bin {}", upper(&f.one));
    assert_eq!(expect(&mut c, "MMD5 one.bin", 252).await, want);
    // The aliases take quoted names too, with or without offsets.
    let want = local("CRC32", b"spaced").to_ascii_uppercase();
    assert_eq!(expect(&mut c, "XCRC \"a b.txt\"", 250).await, want);
    let want = local("CRC32", b"pac").to_ascii_uppercase();
    assert_eq!(expect(&mut c, "XCRC \"a b.txt\" 1 4", 250).await, want);
}

#[tokio::test]
async fn a_read_only_user_can_hash() {
    let server = TestServer::start();
    let home = server.home("reader");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("r.txt"), b"read me").unwrap();
    let mut c = Raw::login(server.addr(), "reader", "reader-pw").await;
    let want = format!("SHA-256 0-6 {} r.txt", local("SHA-256", b"read me"));
    assert_eq!(expect(&mut c, "HASH r.txt", 213).await, want);
    expect(&mut c, "RANG 0 3", 350).await;
    expect(&mut c, "HASH r.txt", 213).await;
    expect(&mut c, "XSHA1 r.txt", 250).await;
    expect(&mut c, "MD5 r.txt", 251).await;
    // Still read-only.
    expect(&mut c, "DELE r.txt", 550).await;
}

#[tokio::test]
async fn paths_outside_the_home_are_confined() {
    let f = files();
    let home = f.server.home("alice");
    let homes = home.parent().unwrap();
    let data = homes.parent().unwrap();
    std::fs::write(data.join("outside.txt"), b"secret in the data dir").unwrap();
    std::fs::write(homes.join("beside.txt"), b"secret beside the homes").unwrap();
    std::fs::create_dir_all(f.server.home("bob")).unwrap();
    std::fs::write(f.server.home("bob").join("bobs.txt"), b"bob's").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("far.txt"), b"far away").unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("far.txt"), home.join("link.txt")).unwrap();
    let mut c = alice(&f.server).await;
    for path in [
        "../../outside.txt",
        "../beside.txt",
        "/../beside.txt",
        "../bob/bobs.txt",
        "link.txt",
    ] {
        for verb in ["HASH", "XSHA256", "XCRC", "MD5", "MMD5"] {
            expect(&mut c, &format!("{verb} {path}"), 550).await;
        }
        expect(&mut c, &format!("XMD5 {path} 0 1"), 550).await;
    }
    // `..` stops at the home: the same name inside it is what gets hashed.
    std::fs::write(home.join("beside.txt"), b"alice's own").unwrap();
    let want = format!(
        "SHA-256 0-10 {} ../beside.txt",
        local("SHA-256", b"alice's own")
    );
    assert_eq!(expect(&mut c, "HASH ../beside.txt", 213).await, want);
    // Nothing outside was touched.
    assert_eq!(
        std::fs::read(homes.join("beside.txt")).unwrap(),
        b"secret beside the homes"
    );
    assert!(data.join("outside.txt").exists());
}

#[test]
fn python_ftplib_reads_a_hash_reply() {
    let f = files();
    let script = r#"
import ftplib, os, sys
ftp = ftplib.FTP()
ftp.connect(os.environ['FTP_HOST'], int(os.environ['FTP_PORT']), timeout=10)
ftp.login('alice', 'alice-pw')
print(ftp.sendcmd('OPTS HASH SHA-1'))
print(ftp.sendcmd('HASH big.bin'))
try:
    ftp.sendcmd('HASH missing.bin')
except ftplib.error_perm as err:
    print(err)
ftp.quit()
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("FTP_HOST", f.server.addr().ip().to_string())
        .env("FTP_PORT", f.server.addr().port().to_string())
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "python3 failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let hash = format!(
        "213 SHA-1 0-{} {} big.bin",
        BIG_LEN - 1,
        local("SHA-1", &f.big)
    );
    assert_eq!(lines.first(), Some(&"200 SHA-1"), "{stdout}");
    assert_eq!(lines.get(1), Some(&hash.as_str()), "{stdout}");
    assert!(
        lines.get(2).is_some_and(|l| l.starts_with("550 ")),
        "{stdout}"
    );
}
