//! Disk quotas as a client and the disk see them: 552 with what is left, nothing half-written
//! left behind, overwrites that may reuse the old file's bytes, concurrent uploads that never
//! jointly exceed the limit, the file-count limit, APPE / REST+STOR / RNTO / MKD accounting,
//! a long random mix of operations (cut, aborted and refused uploads included) after which
//! SITE QUOTA equals a fresh scan of the home, and usage across clean and unclean restarts and
//! `ferry user rescan`.
//!
//! Usage is always checked three ways: SITE QUOTA, `scan_home` of the home directory on disk,
//! and DATA/quota/<user>.toml.

use std::fs;
use std::path::Path;
use std::process::Command;

use ferry_server::quota::Usage;
use ferry_server::storage::fs::scan_home;
use testkit::{TestServer, random_bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::raw::{Raw, Reply, Transfer, WAIT};

const USER: &str = "q";
const PASSWORD: &str = "q-pw";

/// A small seeded PRNG (xorshift64*), so every run of a random test is reproducible.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        random_bytes(len, self.next_u64())
    }
}

/// Parses the SITE QUOTA reply: `Bytes: N used ...` and `Files: M used ...` lines.
fn parse_site_quota(text: &str) -> Usage {
    let number_after = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} number in SITE QUOTA reply {text:?}"))
    };
    Usage {
        bytes: number_after("Bytes:"),
        files: number_after("Files:"),
    }
}

/// Usage as SITE QUOTA reports it.
pub(crate) async fn site_quota(c: &mut Raw) -> Usage {
    let r = c.cmd("SITE QUOTA").await;
    assert_eq!(r.0, 200, "SITE QUOTA: {r:?}");
    parse_site_quota(&r.1)
}

/// Usage computed from the files on disk, independently of the running server's accounting.
fn disk_usage(server: &TestServer, user: &str) -> Usage {
    scan_home(&server.home(user)).unwrap()
}

/// DATA/quota/<user>.toml, read as plain TOML (not through the server's own reader).
pub(crate) fn usage_file(data: &Path, user: &str) -> Option<Usage> {
    let text = fs::read_to_string(data.join("quota").join(format!("{user}.toml"))).ok()?;
    let table: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|err| panic!("usage file is not TOML ({err}): {text:?}"));
    let field = |name: &str| {
        table
            .get(name)
            .and_then(toml::Value::as_integer)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_else(|| panic!("usage file has no {name}: {text:?}"))
    };
    Some(Usage {
        bytes: field("bytes"),
        files: field("files"),
    })
}

/// SITE QUOTA, a scan of the disk and the usage file all show `expected`.
#[track_caller]
fn assert_disk_and_file(server: &TestServer, expected: Usage, what: &str) {
    assert_eq!(
        disk_usage(server, USER),
        expected,
        "{what}: scan of the home"
    );
    assert_eq!(
        usage_file(server.data.path(), USER),
        Some(expected),
        "{what}: DATA/quota/{USER}.toml"
    );
}

async fn assert_usage(c: &mut Raw, server: &TestServer, expected: Usage, what: &str) {
    assert_eq!(site_quota(c).await, expected, "{what}: SITE QUOTA");
    assert_disk_and_file(server, expected, what);
}

fn usage(bytes: u64, files: u64) -> Usage {
    Usage { bytes, files }
}

/// `(left, limit)` under one limit.
type Left = (u64, u64);

/// What a 552 says is left: `(bytes left, byte limit)` and `(files left, file limit)`, `None`
/// for an unlimited side. The text is `Quota exceeded: N bytes (...) left of L; M files left
/// of F` (or `no byte limit` / `no file limit`).
fn quota_left(text: &str) -> (Option<Left>, Option<Left>) {
    let rest = text
        .strip_prefix("Quota exceeded: ")
        .unwrap_or_else(|| panic!("552 text does not start with `Quota exceeded: `: {text:?}"));
    let (bytes, files) = rest
        .split_once("; ")
        .unwrap_or_else(|| panic!("552 text has no `; `: {text:?}"));
    let num = |s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number {s:?} in 552 text {text:?}"))
    };
    let bytes = (bytes != "no byte limit").then(|| {
        let (left, rest) = bytes
            .split_once(" bytes (")
            .unwrap_or_else(|| panic!("{text:?}"));
        let (_, limit) = rest
            .split_once(") left of ")
            .unwrap_or_else(|| panic!("{text:?}"));
        (num(left), num(limit))
    });
    let files = (files != "no file limit").then(|| {
        let (left, limit) = files
            .split_once(" files left of ")
            .unwrap_or_else(|| panic!("{text:?}"));
        (num(left), num(limit))
    });
    (bytes, files)
}

/// A file's bytes, or `None` when there is no regular file at `path`.
pub(crate) fn read_file(path: &Path) -> Option<Vec<u8>> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Some(fs::read(path).unwrap()),
        _ => None,
    }
}

/// Sorted names in a directory, hidden ones included (leftover temporary uploads show).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Compares large byte strings without printing them.
#[track_caller]
fn assert_bytes(actual: Option<&[u8]>, expected: Option<&[u8]>, what: &str) {
    match (actual, expected) {
        (Some(a), Some(e)) => {
            assert_eq!(a.len(), e.len(), "{what}: size");
            assert!(a == e, "{what}: bytes differ");
        }
        (a, e) => assert_eq!(a.is_some(), e.is_some(), "{what}: file presence"),
    }
}

/// A logged-in session in binary mode.
async fn session(server: &TestServer) -> Raw {
    let mut c = Raw::login(server.addr(), USER, PASSWORD).await;
    assert_eq!(c.cmd("TYPE I").await.0, 200);
    c
}

/// The final reply of a transfer (or its refusal).
fn outcome(t: &Transfer) -> &Reply {
    t.last.as_ref().unwrap_or(&t.first)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_upload_over_the_byte_quota_gets_552_with_what_is_left_and_changes_nothing() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(4_000_000), Some(10))
        .start();
    let home = server.home(USER);
    let mut c = session(&server).await;
    let old = random_bytes(2_400_000, 1);
    c.stor("a.bin", &old).await;
    let before = usage(2_400_000, 1);
    assert_usage(&mut c, &server, before, "after the first upload").await;

    // A new file that does not fit: cut off with 552 after several buffers were written (the
    // file is larger than the server's copy buffer), and nothing of it stays on disk.
    let t = c
        .transfer("STOR big.bin", Some(&random_bytes(2_000_000, 2)))
        .await;
    let r = outcome(&t);
    assert_eq!(r.0, 552, "STOR big.bin: {t:?}");
    assert_eq!(
        quota_left(&r.1),
        (Some((1_600_000, 4_000_000)), Some((9, 10))),
        "{r:?}"
    );
    assert_eq!(
        names(&home),
        ["a.bin"],
        "the partial new file must be removed"
    );
    assert_usage(&mut c, &server, before, "after the refused new file").await;

    // An overwrite that would exceed (2 400 000 reusable + 1 600 000 left < 4 000 001): 552,
    // and the old file stays byte for byte, with no temporary file left behind.
    let t = c
        .transfer("STOR a.bin", Some(&random_bytes(4_000_001, 3)))
        .await;
    let r = outcome(&t);
    assert_eq!(r.0, 552, "STOR a.bin over the limit: {t:?}");
    assert_eq!(
        quota_left(&r.1),
        (Some((1_600_000, 4_000_000)), Some((9, 10))),
        "{r:?}"
    );
    assert_bytes(
        read_file(&home.join("a.bin")).as_deref(),
        Some(&old),
        "a.bin after the refused overwrite",
    );
    assert_eq!(names(&home), ["a.bin"]);
    assert_usage(&mut c, &server, before, "after the refused overwrite").await;
    assert_eq!(c.retr("a.bin").await.len(), old.len());

    // Exactly up to the limit is allowed; then not one more byte.
    let full = random_bytes(4_000_000, 4);
    c.stor("a.bin", &full).await;
    assert_usage(&mut c, &server, usage(4_000_000, 1), "at the limit").await;
    let t = c.transfer("STOR one", Some(b"x")).await;
    let r = outcome(&t);
    assert_eq!(r.0, 552, "one byte over the limit: {t:?}");
    assert_eq!(
        quota_left(&r.1),
        (Some((0, 4_000_000)), Some((9, 10))),
        "{r:?}"
    );
    assert_eq!(names(&home), ["a.bin"]);
    assert_usage(
        &mut c,
        &server,
        usage(4_000_000, 1),
        "after the refused byte",
    )
    .await;
    // An empty new file still fits (no bytes), and counts as a file.
    c.stor("empty", b"").await;
    assert_usage(&mut c, &server, usage(4_000_000, 2), "after an empty file").await;
}

#[tokio::test]
async fn an_overwrite_may_reuse_the_old_files_bytes() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(100_000), None)
        .start();
    let home = server.home(USER);
    let mut c = session(&server).await;
    c.stor("half", &random_bytes(50_000, 10)).await;
    c.stor("rest", &random_bytes(40_000, 11)).await;
    assert_usage(&mut c, &server, usage(90_000, 2), "at 90%").await;
    // 10 000 left, but replacing the 50 000-byte file with 55 000 bytes only adds 5 000.
    let new = random_bytes(55_000, 12);
    c.stor("half", &new).await;
    assert_bytes(
        read_file(&home.join("half")).as_deref(),
        Some(&new),
        "half after the overwrite",
    );
    assert_usage(&mut c, &server, usage(95_000, 2), "after the overwrite").await;
    assert_eq!(names(&home), ["half", "rest"]);
    // Also through REST 0 + STOR (a plain replacement), shrinking the file this time.
    let smaller = random_bytes(20_000, 13);
    assert_eq!(c.cmd("REST 0").await.0, 350);
    c.stor("half", &smaller).await;
    assert_usage(&mut c, &server, usage(60_000, 2), "after shrinking").await;
}

/// Starts an upload of `data` as `name` and returns the data connection once the server said
/// 150, without sending a byte.
pub(crate) async fn start_upload(c: &mut Raw, cmd: &str) -> TcpStream {
    let data = c.open_data().await;
    let r = c.cmd(cmd).await;
    assert_eq!(r.0, 150, "{cmd}: {r:?}");
    data
}

/// Sends `bytes` in small chunks, yielding between them so that concurrent uploads interleave;
/// stops quietly when the server closes the connection (a quota refusal).
async fn send_chunked(mut data: TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        match timeout(WAIT, data.write_all(chunk)).await {
            Ok(Ok(())) => tokio::task::yield_now().await,
            Ok(Err(_)) => return,
            Err(_) => panic!("upload stalled"),
        }
    }
    let _ = data.shutdown().await;
}

#[tokio::test]
async fn two_concurrent_uploads_of_one_user_never_jointly_exceed_the_quota() {
    const LIMIT: u64 = 1_000_000;
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(LIMIT), None)
        .start();
    let home = server.home(USER);
    let mut one = session(&server).await;
    let mut two = session(&server).await;
    for round in 0..4u64 {
        // Each is 70% of the quota; round 3 starts from 20% already used.
        let a = random_bytes(700_000, 100 + round);
        let b = random_bytes(700_000, 200 + round);
        let base = if round == 3 {
            one.stor("base", &random_bytes(200_000, 300)).await;
            200_000
        } else {
            0
        };
        // Both transfers are running (150) before either sends its first byte.
        let data_a = start_upload(&mut one, "STOR a.bin").await;
        let data_b = start_upload(&mut two, "STOR b.bin").await;
        tokio::join!(send_chunked(data_a, &a), send_chunked(data_b, &b));
        let (ra, rb) = tokio::join!(one.reply(), two.reply());
        for (r, name) in [(&ra, "a.bin"), (&rb, "b.bin")] {
            assert!(
                r.0 == 226 || r.0 == 552,
                "round {round}: {name}: unexpected reply {r:?}"
            );
            if r.0 == 552 {
                assert!(
                    !home.join(name).exists(),
                    "round {round}: {name} was cut by the quota but is still on disk"
                );
                let (bytes, _) = quota_left(&r.1);
                assert!(bytes.is_some_and(|(_, limit)| limit == LIMIT), "{r:?}");
            }
        }
        assert!(
            !(ra.0 == 226 && rb.0 == 226),
            "round {round}: both uploads of 70% succeeded"
        );
        let stored: u64 = ["a.bin", "b.bin", "base"]
            .iter()
            .filter_map(|n| fs::metadata(home.join(n)).ok())
            .map(|m| m.len())
            .sum();
        assert!(stored <= LIMIT, "round {round}: {stored} bytes on disk");
        for (r, name, bytes) in [(&ra, "a.bin", &a), (&rb, "b.bin", &b)] {
            if r.0 == 226 {
                assert_bytes(read_file(&home.join(name)).as_deref(), Some(bytes), name);
            }
        }
        let expected = disk_usage(&server, USER);
        let expected_bytes = base
            + [(&ra, 700_000), (&rb, 700_000)]
                .iter()
                .filter(|(r, _)| r.0 == 226)
                .map(|(_, n)| n)
                .sum::<u64>();
        assert_eq!(expected.bytes, expected_bytes, "round {round}");
        assert_eq!(site_quota(&mut one).await, expected, "round {round}");
        assert_eq!(site_quota(&mut two).await, expected, "round {round}");
        for name in ["a.bin", "b.bin", "base"] {
            if home.join(name).exists() {
                assert_eq!(one.cmd(format!("DELE {name}")).await.0, 250);
            }
        }
        assert_usage(&mut two, &server, usage(0, 0), "after cleaning up").await;
    }
}

#[tokio::test]
async fn the_file_count_quota_refuses_the_next_new_file_but_not_overwrites() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, None, Some(3))
        .start();
    let home = server.home(USER);
    let mut c = session(&server).await;
    for name in ["f1", "f2", "f3"] {
        c.stor(name, name.as_bytes()).await;
    }
    assert_usage(&mut c, &server, usage(6, 3), "three files").await;

    // The fourth new file: 552, before or during the transfer, and no file.
    let t = c.transfer("STOR f4", Some(b"fourth")).await;
    let r = outcome(&t);
    assert_eq!(r.0, 552, "STOR f4: {t:?}");
    assert_eq!(quota_left(&r.1), (None, Some((0, 3))), "{r:?}");
    assert!(!home.join("f4").exists());
    // Nor in a subdirectory, nor by APPE or STOU creating one; directories do not count.
    assert_eq!(c.cmd("MKD sub").await.0, 257);
    for cmd in ["STOR sub/f4", "APPE f4", "STOU"] {
        let t = c.transfer(cmd, Some(b"fourth")).await;
        assert_eq!(outcome(&t).0, 552, "{cmd}: {t:?}");
    }
    assert_eq!(names(&home), ["f1", "f2", "f3", "sub"]);
    assert!(names(&home.join("sub")).is_empty());
    assert_usage(&mut c, &server, usage(6, 3), "after the refusals").await;

    // Overwriting and appending to existing files still work.
    c.stor("f1", b"replaced").await;
    let t = c.transfer("APPE f2", Some(b"+more")).await;
    assert_eq!(t.code(), 226, "APPE f2: {t:?}");
    assert_eq!(fs::read(home.join("f1")).unwrap(), b"replaced");
    assert_eq!(fs::read(home.join("f2")).unwrap(), b"f2+more");
    assert_usage(&mut c, &server, usage(17, 3), "after overwrite and append").await;

    // DELE frees a slot.
    assert_eq!(c.cmd("DELE f2").await.0, 250);
    assert_usage(&mut c, &server, usage(10, 2), "after DELE").await;
    c.stor("sub/f4", b"fourth").await;
    assert_usage(&mut c, &server, usage(16, 3), "after using the freed slot").await;
    let t = c.transfer("STOR f5", Some(b"fifth")).await;
    assert_eq!(outcome(&t).0, 552, "STOR f5: {t:?}");
    assert_usage(&mut c, &server, usage(16, 3), "full again").await;
}

/// REST `offset` (when given) and an upload command over a fresh data connection.
async fn upload(c: &mut Raw, rest: Option<u64>, cmd: &str, bytes: &[u8]) -> u16 {
    if let Some(offset) = rest {
        let r = c.cmd(format!("REST {offset}")).await;
        assert_eq!(r.0, 350, "REST {offset}: {r:?}");
    }
    let t = c.transfer(cmd, Some(bytes)).await;
    outcome(&t).0
}

#[tokio::test]
async fn appe_rest_stor_rnto_and_mkd_are_counted_exactly() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(100_000), Some(5))
        .start();
    let home = server.home(USER);
    let mut c = session(&server).await;
    let a = random_bytes(10_000, 20);
    c.stor("a", &a).await;
    assert_usage(&mut c, &server, usage(10_000, 1), "STOR a").await;

    // APPE to an existing file adds its bytes; to a new one, a file too.
    assert_eq!(upload(&mut c, None, "APPE a", &a[..5_000]).await, 226);
    assert_usage(&mut c, &server, usage(15_000, 1), "APPE a").await;
    assert_eq!(upload(&mut c, None, "APPE b", &a[..3_000]).await, 226);
    assert_usage(&mut c, &server, usage(18_000, 2), "APPE to new b").await;

    // REST+STOR truncates at the offset and continues from there.
    assert_eq!(
        upload(&mut c, Some(5_000), "STOR a", &a[5_000..7_000]).await,
        226
    );
    assert_eq!(fs::read(home.join("a")).unwrap(), &a[..7_000]);
    assert_usage(&mut c, &server, usage(10_000, 2), "REST 5000 + STOR a").await;
    let tail = random_bytes(20_000, 21);
    assert_eq!(upload(&mut c, Some(7_000), "STOR a", &tail).await, 226);
    assert_usage(&mut c, &server, usage(30_000, 2), "REST 7000 + STOR a").await;
    // REST at the very end appends nothing and changes nothing.
    assert_eq!(upload(&mut c, Some(27_000), "STOR a", b"").await, 226);
    assert_usage(&mut c, &server, usage(30_000, 2), "REST at the end").await;

    // APPE beyond the quota: 552; the appended part that fitted stays (the file existed), and
    // the accounting matches whatever is on disk.
    let t = c.transfer("APPE a", Some(&random_bytes(80_000, 22))).await;
    let r = outcome(&t);
    assert_eq!(r.0, 552, "APPE over the quota: {t:?}");
    let after = disk_usage(&server, USER);
    assert!(after.bytes <= 100_000, "{after:?}");
    let on_disk = fs::read(home.join("a")).unwrap();
    assert!(on_disk.len() >= 27_000 && on_disk[..7_000] == a[..7_000]);
    assert_eq!(
        on_disk[7_000..27_000],
        tail[..],
        "a's content before the APPE"
    );
    assert_eq!(
        quota_left(&r.1).0,
        Some((100_000 - after.bytes, 100_000)),
        "{r:?}"
    );
    assert_usage(&mut c, &server, after, "after the cut APPE").await;
    // REST+STOR beyond the quota: same, the file is cut at the offset then filled up to the
    // limit at most.
    let t = upload(&mut c, Some(1_000), "STOR a", &random_bytes(120_000, 23)).await;
    assert_eq!(t, 552, "REST+STOR over the quota");
    assert_eq!(fs::read(home.join("a")).unwrap()[..1_000], a[..1_000]);
    let after = disk_usage(&server, USER);
    assert!(after.bytes <= 100_000, "{after:?}");
    assert_usage(&mut c, &server, after, "after the cut REST+STOR").await;
    // Back to a known state.
    c.stor("a", &a).await;
    assert_usage(&mut c, &server, usage(13_000, 2), "a rewritten").await;

    // RNFR/RNTO over an existing file frees the replaced file's bytes and count.
    c.stor("c", &random_bytes(4_000, 24)).await;
    assert_usage(&mut c, &server, usage(17_000, 3), "STOR c").await;
    assert_eq!(c.cmd("RNFR c").await.0, 350);
    assert_eq!(c.cmd("RNTO b").await.0, 250);
    assert_usage(&mut c, &server, usage(14_000, 2), "c renamed over b").await;
    // Renaming to a new name, or onto itself under another spelling, changes nothing.
    assert_eq!(c.cmd("RNFR b").await.0, 350);
    assert_eq!(c.cmd("RNTO b2").await.0, 250);
    assert_eq!(c.cmd("RNFR b2").await.0, 350);
    assert_eq!(c.cmd("RNTO ./b2").await.0, 250);
    assert_eq!(c.cmd("RNFR /b2").await.0, 350);
    assert_eq!(c.cmd("RNTO x/../b2").await.0, 250);
    assert_eq!(names(&home), ["a", "b2"]);
    assert_usage(&mut c, &server, usage(14_000, 2), "renames to new names").await;

    // MKD and RMD do not count; files inside directories do, and moving them in and out
    // changes nothing.
    for dir in ["d", "d/e", "d/e/f"] {
        assert_eq!(c.cmd(format!("MKD {dir}")).await.0, 257);
    }
    assert_usage(&mut c, &server, usage(14_000, 2), "after MKD").await;
    c.stor("d/e/f/deep", &random_bytes(1_000, 25)).await;
    assert_usage(&mut c, &server, usage(15_000, 3), "a file in a directory").await;
    assert_eq!(c.cmd("RNFR b2").await.0, 350);
    assert_eq!(c.cmd("RNTO d/e/b2").await.0, 250);
    assert_eq!(c.cmd("RNFR d").await.0, 350);
    assert_eq!(c.cmd("RNTO moved").await.0, 250);
    assert_usage(&mut c, &server, usage(15_000, 3), "after moving").await;
    // A directory renamed over an existing file is refused, and counts stay.
    assert_eq!(c.cmd("RNFR moved").await.0, 350);
    assert_eq!(c.cmd("RNTO a").await.0, 550);
    assert_eq!(c.cmd("DELE moved/e/f/deep").await.0, 250);
    for dir in ["moved/e/f"] {
        assert_eq!(c.cmd(format!("RMD {dir}")).await.0, 250);
    }
    assert_usage(&mut c, &server, usage(14_000, 2), "after DELE and RMD").await;
}

// ---------------------------------------------------------------------------------------------
// A long random mix.

/// How an upload in the random mix ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// All bytes sent, then the data connection closed normally.
    Complete,
    /// Part sent, then ABOR on the control connection.
    Abort,
    /// Part sent, then the data connection reset (RST).
    Reset,
}

/// What the server did with an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// 226: every byte is in place.
    Done,
    /// Refused before any byte moved (550, 552, 554 without a 150).
    Refused,
    /// 552 after 150: cut by the quota.
    QuotaCut,
    /// Stopped by ABOR or a reset (426).
    Interrupted,
}

/// The upload commands of the random mix.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Stor,
    Appe,
    RestStor(u64),
}

/// Runs one upload and returns the server's verdict and every 552 text seen.
async fn random_upload(
    c: &mut Raw,
    verb: Verb,
    name: &str,
    bytes: &[u8],
    ending: Ending,
    sent: usize,
) -> (Verdict, Vec<String>) {
    let mut data = c.open_data().await;
    let cmd = match verb {
        Verb::Stor => format!("STOR {name}"),
        Verb::Appe => format!("APPE {name}"),
        Verb::RestStor(offset) => {
            let r = c.cmd(format!("REST {offset}")).await;
            assert_eq!(r.0, 350, "REST {offset}: {r:?}");
            format!("STOR {name}")
        }
    };
    let first = c.cmd(&cmd).await;
    if first.0 != 150 {
        assert!(
            [550, 552, 554].contains(&first.0),
            "{cmd}: unexpected refusal {first:?}"
        );
        let texts = (first.0 == 552).then_some(first.1).into_iter().collect();
        return (Verdict::Refused, texts);
    }
    let payload = match ending {
        Ending::Complete => bytes,
        Ending::Abort | Ending::Reset => &bytes[..sent],
    };
    // Write errors mean the server stopped reading (quota): its reply says so.
    let _ = timeout(WAIT, data.write_all(payload)).await;
    match ending {
        Ending::Complete => {
            let _ = data.shutdown().await;
            drop(data);
            let r = c.reply().await;
            match r.0 {
                226 => (Verdict::Done, vec![]),
                552 => (Verdict::QuotaCut, vec![r.1]),
                _ => panic!("{cmd}: unexpected final reply {r:?}"),
            }
        }
        Ending::Abort => {
            c.send("ABOR\r\n").await;
            let r = c.reply().await;
            let second = c.reply().await;
            drop(data);
            match r.0 {
                426 => {
                    assert_eq!(second.0, 226, "{cmd} + ABOR: {r:?} then {second:?}");
                    (Verdict::Interrupted, vec![])
                }
                // The quota cut the transfer before ABOR arrived; ABOR then finds nothing.
                552 => {
                    assert_eq!(second.0, 226, "{cmd} + ABOR: {r:?} then {second:?}");
                    (Verdict::QuotaCut, vec![r.1])
                }
                _ => panic!("{cmd} + ABOR: unexpected replies {r:?} then {second:?}"),
            }
        }
        Ending::Reset => {
            data.set_zero_linger().unwrap();
            drop(data);
            let r = c.reply().await;
            match r.0 {
                426 => (Verdict::Interrupted, vec![]),
                552 => (Verdict::QuotaCut, vec![r.1]),
                _ => panic!("{cmd} + reset: unexpected final reply {r:?}"),
            }
        }
    }
}

/// `new` is `base` followed by a prefix (possibly empty) of `sent`.
fn is_base_plus_prefix(new: &[u8], base: &[u8], sent: &[u8]) -> bool {
    new.len() >= base.len()
        && new.len() - base.len() <= sent.len()
        && new[..base.len()] == *base
        && new[base.len()..] == sent[..new.len() - base.len()]
}

/// Checks what an upload left in place of `old`.
fn check_upload(
    verb: Verb,
    result: Verdict,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    bytes: &[u8],
) -> Result<(), String> {
    let show = |v: Option<&[u8]>| v.map(<[u8]>::len);
    let fail = |why: &str| {
        Err(format!(
            "{why}: before {:?} bytes, after {:?} bytes, sent up to {}",
            show(old),
            show(new),
            bytes.len()
        ))
    };
    let base: Vec<u8> = match verb {
        Verb::Stor => Vec::new(),
        Verb::Appe => old.unwrap_or_default().to_vec(),
        Verb::RestStor(offset) => match old {
            Some(old) if offset as usize <= old.len() => old[..offset as usize].to_vec(),
            _ => Vec::new(),
        },
    };
    match result {
        Verdict::Refused if new != old => fail("a refused upload changed the file"),
        Verdict::Refused => Ok(()),
        Verdict::Done => match new {
            Some(new)
                if new.len() == base.len() + bytes.len()
                    && is_base_plus_prefix(new, &base, bytes) =>
            {
                Ok(())
            }
            _ => fail("a completed upload is not exact"),
        },
        Verdict::QuotaCut | Verdict::Interrupted => match (verb, old) {
            // A replacement writes a temporary file: the old one stands.
            (Verb::Stor, Some(_)) if new != old => fail("a failed overwrite changed the old file"),
            (Verb::Stor, Some(_)) => Ok(()),
            // A new file cut off by the quota is removed.
            (Verb::Stor | Verb::Appe, None) if result == Verdict::QuotaCut => match new {
                None => Ok(()),
                Some(_) => fail("a new file cut by the quota is still there"),
            },
            // A new file interrupted otherwise is kept for resume (or is gone when no byte of
            // it arrived); a file continued in place keeps what arrived.
            _ => match new {
                None if old.is_none() => Ok(()),
                Some(new) if is_base_plus_prefix(new, &base, bytes) => Ok(()),
                _ => fail("an interrupted upload left something else than what arrived"),
            },
        },
    }
}

#[tokio::test]
async fn two_hundred_random_operations_keep_usage_equal_to_a_rescan() {
    const BYTES: u64 = 32_000;
    const FILES: u64 = 6;
    const SEED: u64 = 0x5eed_f00d;
    let names_pool = [
        "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "d/g0", "d/g1", "e/g0", "e/g1",
    ];
    let dirs = ["d", "e"];
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(BYTES), Some(FILES))
        .start();
    let home = server.home(USER);
    let mut sessions = [session(&server).await, session(&server).await];
    let mut rng = Rng::new(SEED);
    let mut refused_by_quota = 0;
    let mut cut_by_quota = 0;
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for step in 0..200 {
        let c = &mut sessions[rng.below(2) as usize];
        let name = *rng.pick(&names_pool);
        let path = home.join(name);
        let old = read_file(&path);
        let mut quota_texts = Vec::new();
        let roll = rng.below(100);
        let what = match roll {
            // Uploads: STOR (new or overwrite), APPE, REST+STOR, each completed, aborted or
            // reset mid-transfer.
            0..=54 => {
                let verb = match rng.below(3) {
                    0 => Verb::Stor,
                    1 => Verb::Appe,
                    _ => {
                        let len = old.as_ref().map_or(0, Vec::len) as u64;
                        // Mostly inside the file, sometimes past its end (554).
                        Verb::RestStor(rng.range(1, len + len / 8 + 2))
                    }
                };
                let len = match verb {
                    Verb::Stor => rng.range(0, 12_000),
                    _ => rng.range(0, 6_000),
                } as usize;
                let bytes = rng.bytes(len);
                let ending = match rng.below(10) {
                    0..=5 => Ending::Complete,
                    6 | 7 => Ending::Abort,
                    _ => Ending::Reset,
                };
                // At least one byte before an abort or a reset, so the server has surely
                // taken the data connection; never all of them.
                let (ending, sent) = if len < 2 {
                    (Ending::Complete, len)
                } else {
                    (ending, rng.range(1, len as u64 - 1) as usize)
                };
                let (result, texts) = random_upload(c, verb, name, &bytes, ending, sent).await;
                quota_texts = texts;
                *seen.entry(format!("{ending:?} -> {result:?}")).or_default() += 1;
                match result {
                    Verdict::Refused if !quota_texts.is_empty() => refused_by_quota += 1,
                    Verdict::QuotaCut => cut_by_quota += 1,
                    _ => {}
                }
                let new = read_file(&path);
                let sent_bytes = match ending {
                    Ending::Complete => &bytes[..],
                    _ => &bytes[..sent],
                };
                if let Err(why) =
                    check_upload(verb, result, old.as_deref(), new.as_deref(), sent_bytes)
                {
                    panic!("step {step}: {verb:?} {name} {ending:?} -> {result:?}: {why}");
                }
                format!("{verb:?} {name} ({len} bytes, {ending:?}, {sent} sent) -> {result:?}")
            }
            55..=67 => {
                let r = c.cmd(format!("DELE {name}")).await;
                let expected = if old.is_some() { 250 } else { 550 };
                assert_eq!(r.0, expected, "step {step}: DELE {name}: {r:?}");
                assert!(!path.is_file(), "step {step}: {name} still there");
                format!("DELE {name} -> {}", r.0)
            }
            68..=81 => {
                // Files onto file names; sometimes a directory onto a directory name (which
                // moves the files inside, or is refused when the target is not empty).
                let (from, to) = if rng.below(6) == 0 {
                    (*rng.pick(&dirs), *rng.pick(&dirs))
                } else {
                    (name, *rng.pick(&names_pool))
                };
                let moved = read_file(&home.join(from));
                let r = c.cmd(format!("RNFR {from}")).await;
                if home.join(from).exists() {
                    assert_eq!(r.0, 350, "step {step}: RNFR {from}: {r:?}");
                    let r = c.cmd(format!("RNTO {to}")).await;
                    assert!(r.0 == 250 || r.0 == 550, "step {step}: RNTO {to}: {r:?}");
                    if r.0 == 250 && moved.is_some() {
                        assert_eq!(
                            read_file(&home.join(to)),
                            moved,
                            "step {step}: RNFR {from} RNTO {to}"
                        );
                    }
                    format!("RNFR {from} RNTO {to} -> {}", r.0)
                } else {
                    assert_eq!(r.0, 550, "step {step}: RNFR {from}: {r:?}");
                    format!("RNFR {from} -> 550")
                }
            }
            82..=90 => {
                let dir = *rng.pick(&dirs);
                let r = c.cmd(format!("MKD {dir}")).await;
                assert!(r.0 == 257 || r.0 == 550, "step {step}: MKD {dir}: {r:?}");
                assert!(home.join(dir).exists());
                format!("MKD {dir} -> {}", r.0)
            }
            _ => {
                let dir = *rng.pick(&dirs);
                let r = c.cmd(format!("RMD {dir}")).await;
                assert!(r.0 == 250 || r.0 == 550, "step {step}: RMD {dir}: {r:?}");
                format!("RMD {dir} -> {}", r.0)
            }
        };
        // After every step, from either session: the server's accounting is the disk's, and
        // the disk never holds more than the quota.
        let c = &mut sessions[rng.below(2) as usize];
        let reported = site_quota(c).await;
        let scanned = disk_usage(&server, USER);
        assert_eq!(
            reported, scanned,
            "step {step}: {what}: SITE QUOTA vs a rescan"
        );
        assert!(
            scanned.bytes <= BYTES && scanned.files <= FILES,
            "step {step}: {what}: over the quota: {scanned:?}"
        );
        // A 552 says what was left once the refused upload was cleaned up: what is left now.
        for text in &quota_texts {
            assert_eq!(
                quota_left(text),
                (
                    Some((BYTES - scanned.bytes, BYTES)),
                    Some((FILES - scanned.files, FILES))
                ),
                "step {step}: {what}: 552 text {text:?} with usage {scanned:?}"
            );
        }
        assert!(
            !names(&home).iter().any(|n| n.starts_with(".ferry-upload-")),
            "step {step}: {what}: a temporary upload was left behind"
        );
    }
    eprintln!("quota: {refused_by_quota} uploads refused, {cut_by_quota} cut; {seen:?}");
    for ending in ["Abort", "Reset"] {
        assert!(
            seen.contains_key(&format!("{ending} -> Interrupted")),
            "no upload was interrupted by {ending}: {seen:?}"
        );
    }
    assert!(
        refused_by_quota + cut_by_quota >= 10,
        "the quota refused too few uploads to mean anything: {refused_by_quota} refused, \
         {cut_by_quota} cut"
    );
    for c in &mut sessions {
        assert_eq!(c.cmd("QUIT").await.0, 221);
    }
    assert_eq!(
        usage_file(server.data.path(), USER),
        Some(disk_usage(&server, USER)),
        "the usage file after the mix"
    );
}

// ---------------------------------------------------------------------------------------------
// Restarts and rescans.

#[tokio::test]
async fn usage_survives_a_clean_restart_and_is_rescanned_after_a_crash() {
    let mut server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(1 << 20), Some(100))
        .start();
    let marker = server.data.path().join("quota").join(".running");
    let mut c = session(&server).await;
    c.stor("a", &random_bytes(12_345, 30)).await;
    assert_eq!(c.cmd("MKD sub").await.0, 257);
    c.stor("sub/b", &random_bytes(678, 31)).await;
    let t = c.transfer("APPE a", Some(b"tail")).await;
    assert_eq!(t.code(), 226);
    let before = usage(12_349 + 678, 2);
    assert_usage(&mut c, &server, before, "before the restart").await;
    assert!(marker.exists(), "no running marker while the server runs");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.expect_closed().await;

    // A clean stop leaves the usage file current and removes the marker.
    server.stop();
    assert!(!marker.exists(), "the running marker survived a clean stop");
    assert_eq!(usage_file(server.data.path(), USER), Some(before));
    server.restart();
    let mut c = session(&server).await;
    assert_usage(&mut c, &server, before, "after a clean restart").await;
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.expect_closed().await;

    // A crash: the marker is left behind and the usage file is wrong. The next start must not
    // trust it: at login the usage is the disk's.
    server.stop();
    fs::write(&marker, b"").unwrap();
    fs::write(
        server
            .data
            .path()
            .join("quota")
            .join(format!("{USER}.toml")),
        "bytes = 1\nfiles = 999\n",
    )
    .unwrap();
    server.restart();
    let mut c = session(&server).await;
    assert_usage(&mut c, &server, before, "after a crash").await;
    // And the accounting goes on from there.
    c.stor("c", b"0123456789").await;
    assert_usage(
        &mut c,
        &server,
        usage(before.bytes + 10, 3),
        "after the crash",
    )
    .await;
}

#[tokio::test]
async fn ferry_user_rescan_is_picked_up_at_the_next_login() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(1 << 20), Some(100))
        .start();
    let home = server.home(USER);
    let mut c = session(&server).await;
    c.stor("a", &random_bytes(1_000, 40)).await;
    assert_usage(&mut c, &server, usage(1_000, 1), "before").await;

    // Files added behind the server's back are not known to it...
    fs::write(home.join("behind"), random_bytes(2_500, 41)).unwrap();
    fs::create_dir_all(home.join("x/y")).unwrap();
    fs::write(home.join("x/y/deep"), random_bytes(500, 42)).unwrap();
    assert_eq!(site_quota(&mut c).await, usage(1_000, 1));

    // ...until `ferry user rescan`, whose result the next login takes over.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["user", "rescan", USER, "--data"])
        .arg(server.data.path())
        .env_remove("FERRY_DATA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ferry user rescan failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4000 bytes"), "{stdout}");
    let expected = usage(4_000, 3);
    assert_eq!(usage_file(server.data.path(), USER), Some(expected));
    let mut fresh = session(&server).await;
    assert_usage(&mut fresh, &server, expected, "after the rescan").await;
    // The older session shares the same accounting.
    assert_eq!(site_quota(&mut c).await, expected);
    // And it goes on from there.
    assert_eq!(fresh.cmd("DELE behind").await.0, 250);
    assert_usage(&mut c, &server, usage(1_500, 2), "after DELE").await;
}

#[tokio::test]
async fn feat_lists_site_quota_and_site_help_mentions_it() {
    let server = TestServer::builder()
        .quota_user(USER, PASSWORD, Some(1_000), None)
        .start();
    let mut c = session(&server).await;
    let r = c.cmd("FEAT").await;
    assert_eq!(r.0, 211, "{r:?}");
    assert!(
        r.1.lines().any(|l| l.trim() == "SITE QUOTA"),
        "FEAT does not list SITE QUOTA: {r:?}"
    );
    let r = c.cmd("SITE HELP").await;
    assert_eq!(r.0, 214, "{r:?}");
    assert!(r.1.contains("QUOTA"), "SITE HELP: {r:?}");
    let r = c.cmd("SITE QUOTA").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert!(
        r.1.contains("Bytes: 0 used of 1000") && r.1.contains("Files: 0 used, no limit"),
        "{r:?}"
    );
}
