//! Faults from outside, each repeated at seeded random points: clients that vanish
//! mid-transfer (control connection, data connection or both; reset or clean close), a
//! `ferry serve` process killed mid-upload and restarted, a full disk (RLIMIT_FSIZE and a
//! small tmpfs), eight clients storing one name at once, and renames racing each other and
//! transfers.
//!
//! After each fault: a file under its final name holds either its complete old content or a
//! prefix of what was sent (the server keeps cut-off new files for resume), no
//! `.ferry-upload-*` temporary file is left once the server has settled, quota usage equals a
//! scan of the disk, and other sessions go on. A failure names its seed and trial.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_server::quota::Usage;
use ferry_server::storage::fs::scan_home;
use ferry_server::users::{self, Password, UserEntry};
use tempfile::TempDir;
use testkit::{TestServer, random_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::timeout;

use super::binary::{Server, run_to_end};
// `start_upload` sends any transfer command and checks that the transfer started (150).
use super::quota::{Rng, read_file, site_quota, start_upload as start_transfer, usage_file};
use super::raw::{Raw, Reply, WAIT};

const USER: &str = "q";
const PASSWORD: &str = "q-pw";
/// Prefix of the server's temporary sibling of a replaced file.
const TEMP_PREFIX: &str = ".ferry-upload-";
/// How long the server may take to settle after a fault (abort, clean-up, accounting).
const SETTLE: Duration = Duration::from_secs(10);
/// Generous limits: every test has quota accounting to check, none is meant to hit it.
const ROOMY: (Option<u64>, Option<u64>) = (Some(1 << 30), Some(10_000));

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs a test body, failing instead of hanging when it takes longer than `limit`.
async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("test still running after {limit:?}"))
}

/// A server with the quota user `q`.
fn server() -> TestServer {
    TestServer::builder()
        .quota_user(USER, PASSWORD, ROOMY.0, ROOMY.1)
        .start()
}

/// `q` logged in, in binary mode.
async fn session(addr: SocketAddr) -> Raw {
    let mut c = Raw::login(addr, USER, PASSWORD).await;
    assert_eq!(c.cmd("TYPE I").await.0, 200);
    c
}

/// A fresh login works and answers: the server still takes new sessions.
async fn fresh_login_works(addr: SocketAddr, what: &str) {
    let mut c = session(addr).await;
    assert_eq!(
        c.cmd("NOOP").await.0,
        200,
        "{what}: NOOP in a fresh session"
    );
    assert_eq!(c.cmd("QUIT").await.0, 221, "{what}: QUIT");
}

/// SITE QUOTA in `c` equals a scan of the disk under `home`.
async fn usage_is_the_disk(c: &mut Raw, home: &Path, what: &str) {
    assert_eq!(
        site_quota(c).await,
        scan_home(home).unwrap(),
        "{what}: SITE QUOTA against the disk"
    );
}

/// Files and directories under `root`, as paths relative to it, depth first. Entries that
/// vanish while the walk runs (concurrent renames) are skipped.
fn walk(root: &Path) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let Ok(entries) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                pending.push(path.clone());
                found.push((path, true));
            } else if kind.is_file() {
                found.push((path, false));
            }
        }
    }
    found
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
}

/// Temporary uploads anywhere under `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut temps: Vec<PathBuf> = walk(root)
        .into_iter()
        .filter(|(p, dir)| !dir && is_temp(p))
        .map(|(p, _)| p)
        .collect();
    temps.sort();
    temps
}

/// Size for messages (never the bytes themselves).
fn size_of(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "absent".to_string(), |b| format!("{} bytes", b.len()))
}

/// `name` under `home` is a file holding exactly `expected`; the message names its size.
#[track_caller]
fn assert_holds(home: &Path, name: &str, expected: &[u8], what: &str) {
    let now = read_file(&home.join(name));
    assert!(
        now.as_deref() == Some(expected),
        "{what} ({name}: {})",
        size_of(now.as_deref())
    );
}

/// What a refused upload of `sent` left under `name`: nothing, or a prefix of what was sent.
#[track_caller]
fn partial_left(home: &Path, name: &str, sent: &[u8], round: usize) -> Option<Vec<u8>> {
    let partial = read_file(&home.join(name));
    assert!(
        partial.as_ref().is_none_or(|p| sent.starts_with(p)),
        "round {round}: {name} is not a prefix of what was sent"
    );
    partial
}

/// Waits until the server has settled after a fault: no temporary upload under the home and
/// SITE QUOTA equal to a scan of the disk. Polls, since a dropped session gives no signal.
async fn settled(observer: &mut Raw, home: &Path, what: &str) -> Usage {
    let deadline = Instant::now() + SETTLE;
    loop {
        let temps = temp_files(home);
        let reported = site_quota(observer).await;
        let scanned = scan_home(home).unwrap();
        if temps.is_empty() && reported == scanned {
            return scanned;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled after {SETTLE:?}: temporary files {temps:?}, SITE QUOTA \
             {reported:?}, scan of the disk {scanned:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the server has written at least `len` bytes of an upload: into `name` itself
/// (a new file) or into a temporary file not among `before` (a replacement).
async fn server_wrote(home: &Path, name: &str, replaces: bool, before: &[PathBuf], len: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let written = if replaces {
            temp_files(home)
                .iter()
                .filter(|t| !before.contains(t))
                .filter_map(|t| fs::metadata(home.join(t)).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        } else {
            fs::metadata(home.join(name)).map_or(0, |m| m.len())
        };
        if written >= len {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the server wrote {written} of the {len} bytes sent"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How the client lets go of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// SO_LINGER 0, then close: a RST.
    Reset,
    /// shutdown(SHUT_WR), then close: a FIN.
    Fin,
}

/// Which connections the client lets go of mid-transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Control,
    Data,
    Both,
}

async fn close(mut stream: TcpStream, how: Close) {
    match how {
        Close::Reset => stream.set_zero_linger().unwrap(),
        // The peer may be gone already; the FIN is what matters.
        Close::Fin => {
            let _ = stream.shutdown().await;
        }
    }
}

async fn close_control(mut c: Raw, how: Close) {
    match how {
        Close::Reset => c.tcp().set_zero_linger().unwrap(),
        Close::Fin => {
            let _ = c.tcp_mut().shutdown().await;
        }
    }
}

/// Which connections a trial lets go of, and how.
fn pick_cut(rng: &mut Rng) -> (Cut, Close) {
    (
        *rng.pick(&[Cut::Control, Cut::Data, Cut::Both]),
        *rng.pick(&[Close::Reset, Close::Fin]),
    )
}

/// Reads a data connection until the server ends it (EOF or reset); returns what arrived.
async fn read_until_closed(data: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match timeout(WAIT, data.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("{what}: the server kept the data connection of a lost session open"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Clients that vanish mid-transfer.

/// One upload cut by the client at a random point; checks what it left and returns its
/// description.
async fn cut_upload_trial(
    server: &TestServer,
    observer: &mut Raw,
    rng: &mut Rng,
    trial: usize,
) -> String {
    let home = server.home(USER);
    let name = format!("up{trial}.bin");
    let old = if rng.below(2) == 0 {
        let len = rng.range(1, 600_000) as usize;
        let old = rng.bytes(len);
        observer.stor(&name, &old).await;
        Some(old)
    } else {
        None
    };
    let len = rng.range(2, 3_000_000) as usize;
    let payload = rng.bytes(len);
    let at = rng.range(1, len as u64 - 1) as usize;
    let sent = &payload[..at];
    let (cut, how) = pick_cut(rng);
    let caught_up = rng.below(2) == 0;
    let what = format!(
        "trial {trial}: STOR {name} ({}), {at} of {len} bytes sent{}, then {cut:?} closed by \
         {how:?}",
        if old.is_some() { "overwrite" } else { "new" },
        if caught_up { " and written" } else { "" },
    );

    let before = temp_files(&home);
    let mut c = session(server.addr()).await;
    let mut data = start_transfer(&mut c, &format!("STOR {name}")).await;
    timeout(WAIT, data.write_all(sent))
        .await
        .unwrap_or_else(|_| panic!("{what}: upload stalled"))
        .unwrap();
    if caught_up {
        server_wrote(&home, &name, old.is_some(), &before, at as u64).await;
    }
    match cut {
        Cut::Data => {
            close(data, how).await;
            let r = c.reply().await;
            // A FIN on the data connection is the end of the file in stream mode.
            let expected = if how == Close::Fin { 226 } else { 426 };
            assert_eq!(r.0, expected, "{what}: {r:?}");
            assert_eq!(c.cmd("NOOP").await.0, 200, "{what}: the session goes on");
        }
        Cut::Control => {
            close_control(c, how).await;
            // The server stops the transfer of a lost session: it closes the data connection.
            read_until_closed(&mut data, &what).await;
            close(data, Close::Reset).await;
        }
        Cut::Both => {
            close_control(c, how).await;
            close(data, how).await;
        }
    }
    settled(observer, &home, &what).await;

    let now = read_file(&home.join(&name));
    let shown = format!("{what}: now {}", size_of(now.as_deref()));
    match (old.as_deref(), now.as_deref()) {
        _ if (cut, how) == (Cut::Data, Close::Fin) => {
            assert!(now.as_deref() == Some(sent), "{shown}: not the bytes sent")
        }
        (Some(_), None) => panic!("{shown}: the old file is gone"),
        // Both closed cleanly: the server may see the end of the file before the lost
        // control connection, and complete the upload.
        (Some(old), Some(now)) => assert!(
            now == old || ((cut, how) == (Cut::Both, Close::Fin) && now == sent),
            "{shown}: the old file was changed"
        ),
        // What the server had written of a new file stays for a resume.
        (None, Some(now)) => {
            assert!(
                sent.starts_with(now),
                "{shown}: not a prefix of what was sent"
            );
            assert!(
                !caught_up || now.len() == at,
                "{shown}: bytes the server had written are lost"
            );
        }
        (None, None) => assert!(
            !caught_up,
            "{shown}: the partial new file the server had written is gone"
        ),
    }
    if let Some(now) = &now {
        assert!(
            observer.retr(&name).await == *now,
            "{shown}: RETR differs from the disk"
        );
    }
    what
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_upload_leave_old_files_intact_and_partials_as_prefixes() {
    const SEED: u64 = 0xfa_0001;
    const TRIALS: usize = 48;
    bounded(Duration::from_secs(120), async {
        let server = server();
        let mut observer = session(server.addr()).await;
        let mut rng = Rng::new(SEED);
        for trial in 0..TRIALS {
            let what = cut_upload_trial(&server, &mut observer, &mut rng, trial).await;
            assert_eq!(observer.cmd("NOOP").await.0, 200, "{what}: observer");
            fresh_login_works(server.addr(), &what).await;
        }
        usage_is_the_disk(&mut observer, &server.home(USER), "after the trials").await;
    })
    .await;
}

/// One download cut by the client at a random point.
async fn cut_download_trial(
    server: &TestServer,
    rng: &mut Rng,
    trial: usize,
    name: &str,
    content: &[u8],
) -> String {
    let at = rng.range(1, content.len() as u64 - 1) as usize;
    let (cut, how) = pick_cut(rng);
    let what =
        format!("trial {trial}: RETR {name}, {at} bytes read, then {cut:?} closed by {how:?}");
    let mut c = session(server.addr()).await;
    let mut data = start_transfer(&mut c, &format!("RETR {name}")).await;
    let mut got = vec![0u8; at];
    timeout(WAIT, data.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what}: download stalled"))
        .unwrap();
    assert!(got == content[..at], "{what}: the bytes read differ");
    match cut {
        Cut::Data => {
            close(data, how).await;
            // 226 when the server had already handed every byte to the kernel.
            let r = c.reply().await;
            assert!(r.0 == 426 || r.0 == 226, "{what}: {r:?}");
            assert_eq!(c.cmd("NOOP").await.0, 200, "{what}: the session goes on");
        }
        Cut::Control => {
            close_control(c, how).await;
            got.extend(read_until_closed(&mut data, &what).await);
            assert!(
                content.starts_with(&got),
                "{what}: {} bytes arrived, not a prefix of the file",
                got.len()
            );
        }
        Cut::Both => {
            close_control(c, how).await;
            close(data, how).await;
        }
    }
    what
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_download_leave_the_file_and_the_server_as_they_were() {
    const SEED: u64 = 0xfa_0002;
    const TRIALS: usize = 24;
    bounded(Duration::from_secs(120), async {
        let server = server();
        let home = server.home(USER);
        let mut observer = session(server.addr()).await;
        // Larger than the socket buffers, so the server is still sending when the cut comes.
        let content = random_bytes((8 << 20) + 4321, 0xfa_0020);
        observer.stor("big.bin", &content).await;
        let before = settled(&mut observer, &home, "after the setup").await;
        let mut rng = Rng::new(SEED);
        for trial in 0..TRIALS {
            let what = cut_download_trial(&server, &mut rng, trial, "big.bin", &content).await;
            assert_eq!(settled(&mut observer, &home, &what).await, before, "{what}");
            assert_holds(
                &home,
                "big.bin",
                &content,
                &format!("{what}: the file changed on disk"),
            );
            assert_eq!(observer.cmd("NOOP").await.0, 200, "{what}: observer");
            fresh_login_works(server.addr(), &what).await;
        }
        assert!(
            observer.retr("big.bin").await == content,
            "RETR after the cuts"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The real `ferry serve` process.

/// `[PREFIX...] ferry serve --listen 127.0.0.1:0 --data DATA` (a wrapper command such as
/// `prlimit --fsize=N --` in front), once it announced its address; killed on drop.
async fn start_daemon(data: &Path, prefix: &[&str]) -> Server {
    let data = data.to_path_buf();
    let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        Server::start_wrapped(&prefix, &data, &["--listen", "127.0.0.1:0"], 1)
    })
    .await
    .unwrap()
}

/// Creates `q` in `data` with `quota` (a cheap password hash, as testkit does); returns the
/// home.
fn add_quota_user(data: &Path, quota: (Option<u64>, Option<u64>)) -> PathBuf {
    let hash = users::hash_password_with_params(&Password::new(PASSWORD), 64, 1, 1).unwrap();
    let mut entry = UserEntry::new(hash, users::default_home(USER), false);
    (entry.quota_bytes, entry.quota_files) = quota;
    users::add_user(data, USER, entry).unwrap()
}

/// `ferry user show q`: the count on its `files:` line (`files:     N / LIMIT`).
async fn files_shown(data: &Path) -> u64 {
    let data = data.to_path_buf();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_to_end(&data, &["user", "show", USER], ""))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "ferry user show\n{out}\n{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("files:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file count in `ferry user show`:\n{out}"))
}

/// Sends `bytes` and then keeps the connection open, as a client in the middle of an upload.
async fn send_and_hold(mut data: TcpStream, bytes: Vec<u8>) -> TcpStream {
    for chunk in bytes.chunks(64 * 1024) {
        if data.write_all(chunk).await.is_err() {
            break;
        }
    }
    data
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL mid-upload.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_upload_restarts_with_files_whole_or_prefixes_and_exact_usage() {
    const SEED: u64 = 0xfa_0003;
    const ROUNDS: usize = 5;
    bounded(Duration::from_secs(120), async {
        let dir = TempDir::new().unwrap();
        let data = dir.path();
        let home = add_quota_user(data, ROOMY);
        let old = random_bytes(1_500_000, 0xfa_0030);
        let keep = random_bytes(123_457, 0xfa_0031);
        let mut daemon = start_daemon(data, &[]).await;
        {
            let mut c = session(daemon.addr()).await;
            c.stor("old.bin", &old).await;
            c.stor("keep.bin", &keep).await;
            assert_eq!(c.cmd("QUIT").await.0, 221);
        }
        let mut rng = Rng::new(SEED);
        // Files the crashes left, which later rounds must not change.
        let mut left: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut stale = Vec::new();
        for round in 0..ROUNDS {
            let new_name = format!("new{round}.bin");
            let (a_len, b_len) = (
                rng.range(1_000_000, 3_000_000) as usize,
                rng.range(1_000_000, 3_000_000) as usize,
            );
            let (a, b) = (rng.bytes(a_len), rng.bytes(b_len));
            let (a_at, b_at) = (
                rng.range(1, a_len as u64 - 1) as usize,
                rng.range(1, b_len as u64 - 1) as usize,
            );
            // The kill comes once the server wrote this much of both (at most all that was
            // sent, then the writers are idle; else they are still sending).
            let kill_at = rng.range(1, a_at.min(b_at) as u64);
            let what = format!(
                "round {round}: STOR old.bin ({a_at} of {a_len} bytes sent) and STOR \
                 {new_name} ({b_at} of {b_len}), SIGKILL after {kill_at} written"
            );
            let before = temp_files(&home);
            let mut over = session(daemon.addr()).await;
            let mut fresh = session(daemon.addr()).await;
            let over_data = start_transfer(&mut over, "STOR old.bin").await;
            let new_data = start_transfer(&mut fresh, &format!("STOR {new_name}")).await;
            let writers = [
                tokio::spawn(send_and_hold(over_data, a[..a_at].to_vec())),
                tokio::spawn(send_and_hold(new_data, b[..b_at].to_vec())),
            ];
            server_wrote(&home, "old.bin", true, &before, kill_at).await;
            server_wrote(&home, &new_name, false, &before, kill_at).await;
            tokio::task::block_in_place(|| daemon.kill());
            for writer in writers {
                writer.abort();
            }
            drop((over, fresh));

            daemon = start_daemon(data, &[]).await;
            let mut c = session(daemon.addr()).await;
            let reported = site_quota(&mut c).await;
            assert_holds(
                &home,
                "old.bin",
                &old,
                &format!("{what}: old.bin is not the old content"),
            );
            assert_holds(
                &home,
                "keep.bin",
                &keep,
                &format!("{what}: keep.bin changed"),
            );
            let new = read_file(&home.join(&new_name));
            assert!(
                new.as_ref()
                    .is_some_and(|n| n.len() as u64 >= kill_at && b[..b_at].starts_with(n)),
                "{what}: {new_name} is {}, not a prefix of the {b_at} bytes sent holding the \
                 {kill_at} written",
                size_of(new.as_deref())
            );
            for (name, content) in &left {
                assert!(
                    read_file(&home.join(name)) == *content,
                    "{what}: {name} from an earlier round changed"
                );
            }
            left.insert(new_name, new);
            let scanned = scan_home(&home).unwrap();
            assert_eq!(reported, scanned, "{what}: SITE QUOTA after the restart");
            assert_eq!(
                usage_file(data, USER),
                Some(scanned),
                "{what}: DATA/quota/{USER}.toml after the restart"
            );
            assert_eq!(
                files_shown(data).await,
                scanned.files,
                "{what}: `ferry user show`"
            );
            assert!(
                c.retr("old.bin").await == old,
                "{what}: RETR old.bin after the restart"
            );
            let temps = temp_files(&home);
            if !temps.is_empty() {
                stale.push(format!("{what}: {temps:?}"));
            }
            assert_eq!(c.cmd("QUIT").await.0, 221);
        }
        assert!(
            stale.is_empty(),
            "temporary files of killed uploads survive the restart and the first login:\n{}",
            stale.join("\n")
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. A full disk.

/// Runs an upload that should be refused mid-transfer; the final reply. A server that went
/// away fails the test with how it ended.
async fn refused_upload(
    c: &mut Raw,
    cmd: &str,
    bytes: &[u8],
    daemon: Option<&mut Server>,
) -> Reply {
    let mut data = start_transfer(c, cmd).await;
    // The server stops reading once the write fails: write errors are expected.
    let _ = timeout(WAIT, data.write_all(bytes)).await;
    let _ = data.shutdown().await;
    drop(data);
    match c.try_reply().await {
        Ok(Some(r)) => r,
        failed => {
            let how = daemon.map_or_else(String::new, Server::obituary);
            panic!("{cmd}: no reply ({failed:?})\n{how}")
        }
    }
}

/// Another session goes on: a listing (returned), then a download of `name`, which holds
/// `content`.
async fn others_go_on(other: &mut Raw, name: &str, content: &[u8], round: usize) -> Vec<u8> {
    let t = other.transfer("NLST", None).await;
    assert_eq!(t.code(), 226, "round {round}: NLST {t:?}");
    assert!(
        other.retr(name).await == content,
        "round {round}: RETR {name}"
    );
    t.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_rlimit_fsize_get_452_or_552_and_the_server_goes_on() {
    const SEED: u64 = 0xfa_0004;
    const LIMIT: u64 = 1 << 20;
    bounded(Duration::from_secs(60), async {
        let dir = TempDir::new().unwrap();
        let data = dir.path();
        let home = add_quota_user(data, ROOMY);
        // Larger than the limit: reading is not writing.
        let big = random_bytes(2 << 20, 0xfa_0040);
        let small = random_bytes(100_000, 0xfa_0041);
        fs::write(home.join("big.bin"), &big).unwrap();
        fs::write(home.join("small.bin"), &small).unwrap();
        let mut daemon = start_daemon(data, &["prlimit", &format!("--fsize={LIMIT}"), "--"]).await;
        let mut other = session(daemon.addr()).await;
        let mut c = session(daemon.addr()).await;
        let mut rng = Rng::new(SEED);
        let mut seen = Vec::new();
        for round in 0..3 {
            let name = format!("new{round}.bin");
            let len = (LIMIT + rng.range(1, 2 << 20)) as usize;
            let sent = rng.bytes(len);
            let cmd = format!("STOR {name}");
            let r = refused_upload(&mut c, &cmd, &sent, Some(&mut daemon)).await;
            assert!(
                r.0 == 452 || r.0 == 552,
                "round {round}: {cmd} of {len} bytes over a {LIMIT}-byte RLIMIT_FSIZE: {r:?}"
            );
            let partial = partial_left(&home, &name, &sent, round);
            seen.push(format!(
                "{name}: {r:?}, partial {}",
                size_of(partial.as_deref())
            ));

            let len = (LIMIT + rng.range(1, 2 << 20)) as usize;
            let r =
                refused_upload(&mut c, "STOR small.bin", &rng.bytes(len), Some(&mut daemon)).await;
            assert!(
                r.0 == 452 || r.0 == 552,
                "round {round}: STOR small.bin of {len} bytes: {r:?}"
            );
            assert_holds(
                &home,
                "small.bin",
                &small,
                &format!("round {round}: the refused overwrite changed small.bin"),
            );
            seen.push(format!("small.bin overwrite: {r:?}"));

            // Other sessions go on: a listing and a download by one opened before.
            let listing = others_go_on(&mut other, "big.bin", &big, round).await;
            assert!(String::from_utf8_lossy(&listing).contains("big.bin"));
            assert!(daemon.alive(), "round {round}: {}", daemon.obituary());
            fresh_login_works(daemon.addr(), &format!("round {round}")).await;
            settled(&mut other, &home, &format!("round {round}")).await;
        }
        eprintln!("RLIMIT_FSIZE {LIMIT}: {seen:#?}");
    })
    .await;
}

/// A tmpfs mounted for a test; unmounted on drop (lazily if something still holds it).
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` on `dir`; `None` (having said why) when not root.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap();
        if euid != "0" {
            eprintln!("skipped: mounting a small tmpfs needs root (effective uid {euid})");
            return None;
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed as root: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_fill_a_small_disk_get_452_and_the_server_goes_on() {
    const SEED: u64 = 0xfa_0005;
    bounded(Duration::from_secs(60), async {
        let server = server();
        let home = server.home(USER);
        // After the server (dropped before it, so unmounted before its data dir is removed),
        // before the first login (which opens the home).
        let Some(_mount) = Mount::tmpfs(&home, "4m") else {
            return;
        };
        let mut other = session(server.addr()).await;
        let mut c = session(server.addr()).await;
        let mut rng = Rng::new(SEED);
        let len = rng.range(1 << 20, 3 << 19) as usize;
        let keep = rng.bytes(len);
        c.stor("keep.bin", &keep).await;
        let mut seen = Vec::new();
        for round in 0..3 {
            // keep.bin plus the replacement cannot both fit in 4 MiB.
            let len = rng.range(7 << 19, 5 << 20) as usize;
            let r = refused_upload(&mut c, "STOR keep.bin", &rng.bytes(len), None).await;
            assert_eq!(r.0, 452, "round {round}: overwrite with {len} bytes: {r:?}");
            assert_holds(
                &home,
                "keep.bin",
                &keep,
                &format!("round {round}: the refused overwrite changed keep.bin"),
            );
            settled(&mut other, &home, &format!("round {round}: overwrite")).await;

            let name = format!("new{round}.bin");
            let len = rng.range(7 << 19, 5 << 20) as usize;
            let sent = rng.bytes(len);
            let r = refused_upload(&mut c, &format!("STOR {name}"), &sent, None).await;
            assert_eq!(r.0, 452, "round {round}: STOR {name} of {len} bytes: {r:?}");
            settled(&mut other, &home, &format!("round {round}: new file")).await;
            let partial = partial_left(&home, &name, &sent, round);
            seen.push(format!(
                "{name} ({len} bytes sent): {r:?}, partial {}",
                size_of(partial.as_deref())
            ));

            // Other sessions go on, on a full disk too.
            others_go_on(&mut other, "keep.bin", &keep, round).await;
            fresh_login_works(server.addr(), &format!("round {round}")).await;
            if partial.is_some() {
                assert_eq!(other.cmd(format!("DELE {name}")).await.0, 250);
            }
            // With the space back, an upload that fits lands.
            let fits = rng.bytes(200_000);
            other.stor("fits.bin", &fits).await;
            assert!(read_file(&home.join("fits.bin")) == Some(fits));
            settled(&mut other, &home, &format!("round {round}: after")).await;
        }
        eprintln!("tmpfs of 4 MiB: {seen:#?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. Eight clients store one name at once.

/// Sends `bytes` in pieces of `piece` bytes, letting other tasks run between them, and closes
/// the data connection: the end of the file. Returns the final reply.
async fn finish_upload(c: &mut Raw, mut data: TcpStream, bytes: &[u8], piece: usize) -> Reply {
    for piece in bytes.chunks(piece) {
        timeout(WAIT, data.write_all(piece))
            .await
            .expect("upload stalled")
            .unwrap();
        tokio::task::yield_now().await;
    }
    data.shutdown().await.unwrap();
    drop(data);
    c.reply().await
}

/// Eight clients, each logged in with its data connection open, send STOR `name` at once
/// and upload their payload in seeded chunks; returns each one's final reply.
async fn store_at_once(
    addr: SocketAddr,
    name: &str,
    payloads: &[Arc<Vec<u8>>],
    seed: u64,
) -> Vec<Reply> {
    let ready = Arc::new(Barrier::new(payloads.len()));
    let mut rng = Rng::new(seed);
    let clients: Vec<_> = payloads
        .iter()
        .map(|payload| {
            let (ready, payload, cmd) = (
                Arc::clone(&ready),
                Arc::clone(payload),
                format!("STOR {name}"),
            );
            let chunk = rng.range(4 << 10, 256 << 10) as usize;
            tokio::spawn(async move {
                let mut c = session(addr).await;
                let data = c.open_data().await;
                ready.wait().await;
                let first = c.cmd(&cmd).await;
                if first.0 != 150 {
                    return first;
                }
                let last = finish_upload(&mut c, data, &payload, chunk).await;
                assert_eq!(c.cmd("QUIT").await.0, 221);
                last
            })
        })
        .collect();
    let mut replies = Vec::new();
    for client in clients {
        replies.push(client.await.unwrap());
    }
    replies
}

/// Rounds of eight clients storing one name, existing or not; checks that one whole payload
/// of a client told 226 is left, and that every client got 226.
async fn eight_clients_store_one_name(seed: u64, exists: bool) {
    let server = server();
    let home = server.home(USER);
    let mut observer = session(server.addr()).await;
    let mut rng = Rng::new(seed);
    let mut not_all_226 = Vec::new();
    for round in 0..3 {
        let name = format!("same{round}.bin");
        if exists {
            observer.stor(&name, &rng.bytes(1 << 20)).await;
        }
        let payloads: Vec<Arc<Vec<u8>>> = (0..8)
            .map(|_| {
                let len = rng.range(2 << 20, 4 << 20) as usize;
                Arc::new(rng.bytes(len))
            })
            .collect();
        let replies = store_at_once(server.addr(), &name, &payloads, rng.next_u64()).await;
        let what = format!("round {round} (seed {seed:#x}): {name}, replies {replies:?}");
        // Every client has its final reply: the server has settled.
        let temps = temp_files(&home);
        assert!(temps.is_empty(), "{what}: temporary files left: {temps:?}");
        let names: Vec<_> = walk(&home).into_iter().map(|(p, _)| p).collect();
        assert!(
            names.contains(&PathBuf::from(&name)),
            "{what}: no {name} in {names:?}"
        );
        let now = read_file(&home.join(&name)).unwrap();
        let matching: Vec<usize> = (0..payloads.len())
            .filter(|&i| *payloads[i] == now)
            .collect();
        assert!(
            matching.len() == 1 && replies[matching[0]].0 == 226,
            "{what}: {name} ({} bytes) is the payload of clients {matching:?}, sizes {:?}",
            now.len(),
            payloads.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        usage_is_the_disk(&mut observer, &home, &what).await;
        if replies.iter().any(|r| r.0 != 226) {
            not_all_226.push(what);
        }
    }
    assert!(
        not_all_226.is_empty(),
        "not every client got 226:\n{}",
        not_all_226.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_storing_one_new_name_at_once_all_get_226_and_one_payload_wins() {
    let test = eight_clients_store_one_name(0xfa_0006, false);
    bounded(Duration::from_secs(60), test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_overwriting_one_name_at_once_all_get_226_and_one_payload_wins() {
    let test = eight_clients_store_one_name(0xfa_0007, true);
    bounded(Duration::from_secs(60), test).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Rename races.

/// Every content the rename race put on the server (initial files and uploads), to recognise
/// what a download or a file holds.
type Known = Arc<Mutex<Vec<Arc<Vec<u8>>>>>;

/// Files (not temporary ones) and directories under the home, relative, for picking sources
/// and targets.
fn pick_from(home: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for (path, is_dir) in walk(home) {
        if is_dir {
            dirs.push(path);
        } else if !is_temp(&path) {
            files.push(path);
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn ftp_path(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// What one renaming client did.
#[derive(Debug, Default)]
struct Renames {
    /// RNTO 250 onto a fresh name.
    moved: usize,
    /// RNTO 250 onto a name that held a file when picked: may have replaced it.
    over_existing: usize,
    /// RNFR or RNTO 550: the source or the target's directory had moved away.
    raced: usize,
}

/// A client renaming random files (to fresh names, into directories, over other files) and
/// directories, `ops` times.
async fn renamer(
    addr: SocketAddr,
    home: PathBuf,
    id: usize,
    seed: u64,
    ops: usize,
) -> (Raw, Renames) {
    let mut c = session(addr).await;
    let mut rng = Rng::new(seed);
    let mut done = Renames::default();
    for op in 0..ops {
        let (files, dirs) = pick_from(&home);
        let fresh = format!("r{id}_{op}");
        let roll = rng.below(20);
        let (from, to, over) = match roll {
            0..=14 if !files.is_empty() => {
                let into = match rng.below(dirs.len() as u64 + 1) as usize {
                    0 => PathBuf::new(),
                    i => dirs[i - 1].clone(),
                };
                (rng.pick(&files).clone(), into.join(fresh), false)
            }
            15 | 16 if files.len() >= 2 => {
                let from = rng.pick(&files).clone();
                let to = rng.pick(&files).clone();
                if from == to {
                    continue;
                }
                (from, to, true)
            }
            // A directory, with what is in it, to a fresh name (always at the top: never into
            // itself).
            _ if !dirs.is_empty() => (
                rng.pick(&dirs).clone(),
                PathBuf::from(format!("D{id}_{op}")),
                false,
            ),
            _ => continue,
        };
        let r = c.cmd(format!("RNFR {}", ftp_path(&from))).await;
        if r.0 == 550 {
            done.raced += 1;
            continue;
        }
        assert_eq!(r.0, 350, "client {id} op {op}: RNFR {from:?}: {r:?}");
        let r = c.cmd(format!("RNTO {}", ftp_path(&to))).await;
        match r.0 {
            250 if over => done.over_existing += 1,
            250 => done.moved += 1,
            550 => done.raced += 1,
            _ => panic!("client {id} op {op}: RNFR {from:?} RNTO {to:?}: {r:?}"),
        }
    }
    (c, done)
}

/// Whether `data` is a whole known content, or a prefix of one (an upload in progress).
fn recognised(known: &Known, data: &[u8]) -> bool {
    known.lock().unwrap().iter().any(|k| k.starts_with(data))
}

/// A client downloading random files while they are renamed; every download must be one
/// whole file (or a prefix of an upload still running).
async fn downloader(addr: SocketAddr, home: PathBuf, known: Known, seed: u64, ops: usize) -> Raw {
    let mut c = session(addr).await;
    let mut rng = Rng::new(seed);
    for op in 0..ops {
        let (files, _) = pick_from(&home);
        if files.is_empty() {
            continue;
        }
        let path = rng.pick(&files).clone();
        let t = c.transfer(format!("RETR {}", ftp_path(&path)), None).await;
        match (t.first.0, t.code()) {
            (550, _) => {}
            (150, 226) => assert!(
                recognised(&known, &t.data),
                "download {op}: RETR {path:?} gave {} bytes that are no file's",
                t.data.len()
            ),
            _ => panic!("download {op}: RETR {path:?}: {:?} {:?}", t.first, t.last),
        }
    }
    c
}

/// What the uploading client did.
#[derive(Default)]
struct Uploads {
    /// Contents whose upload got 226.
    landed: Vec<Arc<Vec<u8>>>,
    /// Uploads that failed after they started: their content must not be found.
    failed: Vec<(String, Reply)>,
    /// 226 over a name that held a file when picked: may have replaced it.
    over_existing: usize,
    /// Refused before the transfer started (the directory had moved away).
    refused: usize,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("landed", &self.landed.len())
            .field("failed", &self.failed)
            .field("over_existing", &self.over_existing)
            .field("refused", &self.refused)
            .finish()
    }
}

/// A client uploading new files and overwriting existing ones while they are renamed,
/// slowly, so renames land mid-upload.
async fn uploader(
    addr: SocketAddr,
    home: PathBuf,
    known: Known,
    seed: u64,
    ops: usize,
) -> (Raw, Uploads) {
    let mut c = session(addr).await;
    let mut rng = Rng::new(seed);
    let mut done = Uploads::default();
    for op in 0..ops {
        let (files, dirs) = pick_from(&home);
        let over = rng.below(10) < 3 && !files.is_empty();
        let target = if over {
            rng.pick(&files).clone()
        } else {
            match rng.below(dirs.len() as u64 + 1) as usize {
                0 => PathBuf::from(format!("u{op}")),
                i => dirs[i - 1].join(format!("u{op}")),
            }
        };
        let len = rng.range(100_000, 400_000) as usize;
        let content = Arc::new(rng.bytes(len));
        known.lock().unwrap().push(Arc::clone(&content));
        let cmd = format!("STOR {}", ftp_path(&target));
        let data = c.open_data().await;
        let first = c.cmd(&cmd).await;
        if first.0 != 150 {
            assert_eq!(first.0, 550, "upload {op}: {cmd}: {first:?}");
            done.refused += 1;
            continue;
        }
        let last = finish_upload(&mut c, data, &content, 16 << 10).await;
        match last.0 {
            226 if over => {
                done.over_existing += 1;
                done.landed.push(content);
            }
            226 => done.landed.push(content),
            _ => done
                .failed
                .push((format!("upload {op}: {cmd} ({len} bytes)"), last)),
        }
    }
    (c, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_racing_each_other_and_transfers_lose_no_file_but_those_replaced() {
    const SEED: u64 = 0xfa_0008;
    const RENAMERS: usize = 4;
    bounded(Duration::from_secs(90), async {
        let server = server();
        let home = server.home(USER);
        let mut observer = session(server.addr()).await;
        let mut rng = Rng::new(SEED);
        let known: Known = Arc::default();
        let mut initial = Vec::new();
        for dir in ["d1", "d2", "d3"] {
            assert_eq!(observer.cmd(format!("MKD {dir}")).await.0, 257);
        }
        for i in 0..20 {
            let len = rng.range(50_000, 600_000) as usize;
            let content = Arc::new(rng.bytes(len));
            let name = match i % 4 {
                0 => format!("f{i}"),
                d => format!("d{d}/f{i}"),
            };
            observer.stor(&name, &content).await;
            known.lock().unwrap().push(Arc::clone(&content));
            initial.push(content);
        }

        let renamers: Vec<_> = (0..RENAMERS)
            .map(|id| tokio::spawn(renamer(server.addr(), home.clone(), id, rng.next_u64(), 60)))
            .collect();
        let downloads = tokio::spawn(downloader(
            server.addr(),
            home.clone(),
            Arc::clone(&known),
            rng.next_u64(),
            40,
        ));
        let uploads = tokio::spawn(uploader(
            server.addr(),
            home.clone(),
            Arc::clone(&known),
            rng.next_u64(),
            16,
        ));
        let mut sessions = Vec::new();
        let mut renamed = Vec::new();
        for r in renamers {
            let (c, done) = r.await.unwrap();
            sessions.push(c);
            renamed.push(done);
        }
        sessions.push(downloads.await.unwrap());
        let (c, uploaded) = uploads.await.unwrap();
        sessions.push(c);
        // No session got stuck: each still answers.
        for c in &mut sessions {
            assert_eq!(c.cmd("NOOP").await.0, 200);
        }
        let summary = format!("renames {renamed:?}, uploads {uploaded:?}");

        // Every client has its final reply: the server has settled. All checks run, so a
        // failure shows every problem of the run at once.
        let mut problems = Vec::new();
        let expected: Vec<&Arc<Vec<u8>>> = initial.iter().chain(&uploaded.landed).collect();
        let mut found = vec![Vec::new(); expected.len()];
        let mut temps = Vec::new();
        for (path, is_dir) in walk(&home) {
            if is_dir {
                continue;
            }
            if is_temp(&path) {
                temps.push(path);
                continue;
            }
            let content = fs::read(home.join(&path)).unwrap();
            match expected.iter().position(|e| ***e == content) {
                Some(i) => found[i].push(path),
                None => problems.push(format!(
                    "{path:?} ({} bytes) holds no file's content",
                    content.len()
                )),
            }
        }
        if !temps.is_empty() {
            problems.push(format!("temporary files left: {temps:?}"));
        }
        let duplicated: Vec<_> = found.iter().filter(|names| names.len() > 1).collect();
        if !duplicated.is_empty() {
            problems.push(format!("contents under several names: {duplicated:?}"));
        }
        let lost = found.iter().filter(|names| names.is_empty()).count();
        let replaced =
            renamed.iter().map(|r| r.over_existing).sum::<usize>() + uploaded.over_existing;
        if lost > replaced {
            problems.push(format!(
                "{lost} files lost, but at most {replaced} were replaced by RNTO or STOR"
            ));
        }
        let (reported, scanned) = (site_quota(&mut observer).await, scan_home(&home).unwrap());
        if reported != scanned {
            problems.push(format!(
                "SITE QUOTA {reported:?}, scan of the disk {scanned:?}"
            ));
        }
        assert!(
            renamed.iter().map(|r| r.moved).sum::<usize>() >= 100,
            "too few renames went through to mean anything\n{summary}"
        );
        eprintln!(
            "rename race: {lost} of {} files replaced; {summary}",
            expected.len()
        );
        assert!(problems.is_empty(), "{}\n{summary}", problems.join("\n"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The races above, one step at a time: each interleaving that the random tests hit, made
// deterministic (both transfers have started before either ends).

/// Runs `body` (for at most 30 s) with the home and two sessions of `q`, `a` and `b`, on a
/// fresh server; afterwards SITE QUOTA in `a` must equal a scan of the disk.
async fn in_steps(body: impl AsyncFnOnce(&Path, &mut Raw, &mut Raw)) {
    bounded(Duration::from_secs(30), async {
        let server = server();
        let home = server.home(USER);
        let (mut a, mut b) = (session(server.addr()).await, session(server.addr()).await);
        body(&home, &mut a, &mut b).await;
        usage_is_the_disk(&mut a, &home, "after both").await;
    })
    .await;
}

/// `N` payloads of 1, 2, ... million bytes, from seeds `seed`, `seed + 1`, ...
fn payloads<const N: usize>(seed: u64) -> [Vec<u8>; N] {
    std::array::from_fn(|i| random_bytes((i + 1) * 1_000_000, seed + i as u64))
}

/// Sends all of `bytes`, closes, and returns the final reply.
async fn upload_rest(c: &mut Raw, data: TcpStream, bytes: &[u8]) -> Reply {
    finish_upload(c, data, bytes, bytes.len()).await
}

/// `RNFR from`, `RNTO to`, both accepted.
async fn rename(c: &mut Raw, from: &str, to: &str) {
    assert_eq!(c.cmd(format!("RNFR {from}")).await.0, 350);
    assert_eq!(c.cmd(format!("RNTO {to}")).await.0, 250);
}

#[tokio::test]
async fn two_overwrites_of_one_name_at_once_keep_usage_equal_to_the_disk() {
    in_steps(async |home, a, b| {
        let [old, one, two] = payloads(0xfa_0090);
        a.stor("x", &old).await;
        let data_a = start_transfer(a, "STOR x").await;
        let data_b = start_transfer(b, "STOR x").await;
        assert_eq!(upload_rest(a, data_a, &one).await.0, 226);
        assert_eq!(upload_rest(b, data_b, &two).await.0, 226);
        assert_holds(home, "x", &two, "x is not the last upload");
    })
    .await;
}

#[tokio::test]
async fn a_file_renamed_away_while_being_replaced_keeps_usage_equal_to_the_disk() {
    in_steps(async |home, a, b| {
        let [old, new] = payloads(0xfa_0093);
        a.stor("x", &old).await;
        let data = start_transfer(a, "STOR x").await;
        rename(b, "x", "y").await;
        assert_eq!(upload_rest(a, data, &new).await.0, 226);
        assert_holds(home, "x", &new, "x is not the upload");
        assert_holds(home, "y", &old, "y is not the old x");
    })
    .await;
}

#[tokio::test]
async fn a_directory_renamed_while_a_file_in_it_is_replaced_leaves_no_temporary_file() {
    in_steps(async |home, a, b| {
        let [old, new] = payloads(0xfa_0095);
        assert_eq!(a.cmd("MKD d").await.0, 257);
        a.stor("d/x", &old).await;
        let data = start_transfer(a, "STOR d/x").await;
        rename(b, "d", "e").await;
        let r = upload_rest(a, data, &new).await;
        // Either outcome is honest: the upload lands in the renamed directory (226), or it
        // fails and the old file stands; neither may leave its temporary file behind.
        let expected = if r.0 == 226 { &new } else { &old };
        assert_holds(home, "e/x", expected, &format!("STOR d/x -> {r:?}"));
        assert_eq!(temp_files(home), Vec::<PathBuf>::new(), "STOR d/x -> {r:?}");
    })
    .await;
}
