//! Many sessions at once, clients that stall or vanish mid-transfer, ABOR, and concurrent
//! uploads: every finished transfer is byte-exact and no failed one damages a file.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{TestServer, random_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::raw::{Raw, WAIT};

/// Reads a data connection to its end, comparing with `expected` as the bytes arrive (no
/// second copy of a large file in memory).
async fn read_and_compare(data: &mut TcpStream, expected: &[u8], what: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0;
    loop {
        let n = timeout(WAIT, data.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: download stalled at {pos}"))
            .unwrap_or_else(|err| panic!("{what}: read failed at {pos}: {err}"));
        if n == 0 {
            break;
        }
        assert!(
            pos + n <= expected.len(),
            "{what}: more bytes than the file has"
        );
        assert!(
            buf[..n] == expected[pos..pos + n],
            "{what}: bytes differ in {pos}..{}",
            pos + n
        );
        pos += n;
    }
    assert_eq!(pos, expected.len(), "{what}: download cut short");
}

/// RETR over a fresh passive connection, compared byte for byte.
async fn download(c: &mut Raw, name: &str, expected: &[u8]) {
    let mut data = c.open_data().await;
    let r = c.cmd(format!("RETR {name}")).await;
    assert_eq!(r.0, 150, "RETR {name}: {r:?}");
    read_and_compare(&mut data, expected, name).await;
    let r = c.reply().await;
    assert_eq!(r.0, 226, "RETR {name}: {r:?}");
}

/// Names of replacement uploads still lying around in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".ferry-upload-"))
        .collect()
}

/// Waits for every task, failing with the first panic.
async fn join_all(mut set: JoinSet<()>, limit: Duration, what: &str) {
    let all = async {
        while let Some(done) = set.join_next().await {
            if let Err(err) = done {
                std::panic::resume_unwind(err.into_panic());
            }
        }
    };
    timeout(limit, all)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_download_at_once() {
    const CLIENTS: usize = 200;
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.max_per_ip = 1000)
        .start();
    let body = Arc::new(random_bytes(1 << 20, 1));
    fs::write(server.home("alice").join("file.bin"), body.as_slice()).unwrap();
    let addr = server.addr();
    // Everyone logs in first, then all download at the same time.
    let ready = Arc::new(Barrier::new(CLIENTS));
    let mut set = JoinSet::new();
    for _ in 0..CLIENTS {
        let (body, ready) = (Arc::clone(&body), Arc::clone(&ready));
        set.spawn(async move {
            let mut c = Raw::login(addr, "alice", "alice-pw").await;
            assert_eq!(c.cmd("TYPE I").await.0, 200);
            ready.wait().await;
            download(&mut c, "file.bin", &body).await;
            assert_eq!(c.cmd("QUIT").await.0, 221);
        });
    }
    join_all(set, Duration::from_secs(120), "200 clients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_does_not_hold_up_others() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        // Long enough that the stalled transfer survives the test and can be finished.
        .config(|c| c.data_timeout = Duration::from_secs(60))
        .start();
    let big = Arc::new(random_bytes(64 << 20, 2));
    let mid = Arc::new(random_bytes(4 << 20, 3));
    fs::write(server.home("alice").join("big.bin"), big.as_slice()).unwrap();
    fs::write(server.home("alice").join("mid.bin"), mid.as_slice()).unwrap();
    let addr = server.addr();

    let mut staller = Raw::login(addr, "alice", "alice-pw").await;
    let mut stalled = staller.open_data().await;
    assert_eq!(staller.cmd("RETR big.bin").await.0, 150);
    let mut head = vec![0u8; 64 * 1024];
    timeout(WAIT, stalled.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(head == big[..head.len()]);
    // From here on the staller reads nothing: the server's writes to it block.

    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..10 {
        let mid = Arc::clone(&mid);
        set.spawn(async move {
            let mut c = Raw::login(addr, "alice", "alice-pw").await;
            download(&mut c, "mid.bin", &mid).await;
        });
    }
    join_all(
        set,
        Duration::from_secs(30),
        "10 downloads beside a stalled one",
    )
    .await;
    let others = started.elapsed();

    // The stalled transfer was held, not broken: reading on completes it.
    read_and_compare(&mut stalled, &big[head.len()..], "the stalled download").await;
    let r = staller.reply().await;
    assert_eq!(r.0, 226, "{r:?} (others took {others:?})");
    assert_eq!(staller.cmd("NOOP").await.0, 200);
}

/// A server with alice's `keep.bin` holding known bytes.
fn server_with_keep(config: fn(&mut ferry_server::ServerConfig)) -> (TestServer, Vec<u8>) {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(config)
        .start();
    let original = random_bytes(1 << 20, 4);
    fs::write(server.home("alice").join("keep.bin"), &original).unwrap();
    (server, original)
}

/// Starts `STOR keep.bin` and sends the first 256 KiB of new content; the replacement is
/// being written to a temporary sibling.
async fn start_overwrite(server: &TestServer) -> (Raw, TcpStream) {
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut data = c.open_data().await;
    let r = c.cmd("STOR keep.bin").await;
    assert_eq!(r.0, 150, "{r:?}");
    data.write_all(&random_bytes(256 * 1024, 5)).await.unwrap();
    data.flush().await.unwrap();
    assert_eq!(
        temp_files(&server.home("alice")).len(),
        1,
        "a replacing STOR writes a temporary sibling"
    );
    (c, data)
}

fn assert_kept(server: &TestServer, original: &[u8]) {
    let home = server.home("alice");
    assert!(
        fs::read(home.join("keep.bin")).unwrap() == original,
        "keep.bin was changed by a failed upload"
    );
    assert_eq!(
        temp_files(&home),
        Vec::<String>::new(),
        "temp file left behind"
    );
}

#[tokio::test]
async fn data_connection_reset_mid_stor_keeps_the_original() {
    let (server, original) = server_with_keep(|_| {});
    let (mut c, data) = start_overwrite(&server).await;
    data.set_zero_linger().unwrap();
    drop(data);
    let r = c.reply().await;
    assert_eq!(r.0, 426, "{r:?}");
    assert_kept(&server, &original);
    assert_eq!(c.cmd("NOOP").await.0, 200);
    download(&mut c, "keep.bin", &original).await;
}

#[tokio::test]
async fn abor_mid_stor_keeps_the_original() {
    let (server, original) = server_with_keep(|_| {});
    let (mut c, data) = start_overwrite(&server).await;
    c.send("ABOR\r\n").await;
    assert_eq!(c.reply().await.0, 426);
    assert_eq!(c.reply().await.0, 226);
    assert_kept(&server, &original);
    drop(data);
    assert_eq!(c.cmd("NOOP").await.0, 200);
    download(&mut c, "keep.bin", &original).await;
}

#[tokio::test]
async fn client_vanishing_mid_stor_keeps_the_original() {
    // One session per address: the next login is only served once the vanished session has
    // ended, which is the moment its upload must have been cleaned up.
    let (server, original) = server_with_keep(|c| c.max_per_ip = 1);
    let (c, data) = start_overwrite(&server).await;
    c.tcp().set_zero_linger().unwrap();
    data.set_zero_linger().unwrap();
    drop(c);
    drop(data);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = loop {
        let mut c = Raw::connect(server.addr()).await;
        let r = c.reply().await;
        if r.0 == 220 {
            break c;
        }
        assert_eq!(r.0, 421, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the vanished client's session never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_kept(&server, &original);
    assert_eq!(next.cmd("USER alice").await.0, 331);
    assert_eq!(next.cmd("PASS alice-pw").await.0, 230);
    download(&mut next, "keep.bin", &original).await;
}

#[tokio::test]
async fn abor_during_retr_replies_426_then_226_and_the_session_continues() {
    let server = TestServer::start();
    let big = random_bytes(64 << 20, 6);
    fs::write(server.home("alice").join("big.bin"), &big).unwrap();
    fs::write(server.home("alice").join("small.txt"), b"small").unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // Plain ABOR, then ABOR behind Telnet IP and Synch as RFC 959 clients send it.
    for abor in [&b"ABOR\r\n"[..], b"\xff\xf4\xff\xf2ABOR\r\n"] {
        let mut data = c.open_data().await;
        assert_eq!(c.cmd("RETR big.bin").await.0, 150);
        let mut head = vec![0u8; 64 * 1024];
        timeout(WAIT, data.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert!(head == big[..head.len()]);
        c.send(abor).await;
        let r = c.reply().await;
        assert_eq!(r.0, 426, "{r:?}");
        let r = c.reply().await;
        assert_eq!(r.0, 226, "{r:?}");
        // The server closed its end: the data connection ends instead of delivering 64 MiB.
        let mut rest = Vec::new();
        let _ = timeout(WAIT, data.read_to_end(&mut rest))
            .await
            .expect("data connection left open after ABOR");
        assert!(head.len() + rest.len() < big.len());
        assert_eq!(c.cmd("NOOP").await.0, 200);
        assert_eq!(c.retr("small.txt").await, b"small");
    }
}

/// Writes `a` and `b` to two data connections in alternating 64 KiB chunks, then closes both.
async fn interleave(d1: &mut TcpStream, a: &[u8], d2: &mut TcpStream, b: &[u8]) {
    let (mut ca, mut cb) = (a.chunks(64 * 1024), b.chunks(64 * 1024));
    loop {
        let (x, y) = (ca.next(), cb.next());
        if x.is_none() && y.is_none() {
            break;
        }
        if let Some(x) = x {
            d1.write_all(x).await.unwrap();
        }
        if let Some(y) = y {
            d2.write_all(y).await.unwrap();
        }
    }
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_uploads_by_one_user_at_once_both_land() {
    let server = TestServer::start();
    let (a, b) = (random_bytes(4 << 20, 7), random_bytes(4 << 20, 8));
    let mut c1 = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut c2 = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut d1 = c1.open_data().await;
    assert_eq!(c1.cmd("STOR one.bin").await.0, 150);
    let mut d2 = c2.open_data().await;
    assert_eq!(c2.cmd("STOR two.bin").await.0, 150);
    interleave(&mut d1, &a, &mut d2, &b).await;
    assert_eq!(c1.reply().await.0, 226);
    assert_eq!(c2.reply().await.0, 226);
    let home = server.home("alice");
    assert!(fs::read(home.join("one.bin")).unwrap() == a);
    assert!(fs::read(home.join("two.bin")).unwrap() == b);
    download(&mut c1, "two.bin", &b).await;
    download(&mut c2, "one.bin", &a).await;
}

#[tokio::test]
async fn two_overwrites_of_one_file_at_once_leave_one_whole_version() {
    let (server, _original) = server_with_keep(|_| {});
    let (a, b) = (random_bytes(4 << 20, 9), random_bytes(4 << 20, 10));
    let mut c1 = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut c2 = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut d1 = c1.open_data().await;
    assert_eq!(c1.cmd("STOR keep.bin").await.0, 150);
    let mut d2 = c2.open_data().await;
    assert_eq!(c2.cmd("STOR keep.bin").await.0, 150);
    interleave(&mut d1, &a, &mut d2, &b).await;
    assert_eq!(c1.reply().await.0, 226);
    assert_eq!(c2.reply().await.0, 226);
    let home = server.home("alice");
    let now = fs::read(home.join("keep.bin")).unwrap();
    assert!(now == a || now == b, "keep.bin is a mix of two uploads");
    assert_eq!(temp_files(&home), Vec::<String>::new());
}

#[tokio::test]
async fn stalled_transfers_time_out_and_lose_nothing() {
    let (server, original) = server_with_keep(|c| c.data_timeout = Duration::from_secs(1));
    let home = server.home("alice");
    // No data connection at all: 425 once the data timeout is over.
    let never_connects = async {
        let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
        c.epsv().await;
        assert_eq!(c.cmd("RETR keep.bin").await.0, 150);
        let r = c.reply().await;
        assert_eq!(r.0, 425, "{r:?}");
        assert_eq!(c.cmd("NOOP").await.0, 200);
    };
    // An overwrite that stops sending: 426, and the old file stays.
    let stops_sending = async {
        let (mut c, data) = start_overwrite(&server).await;
        let r = c.reply().await;
        assert_eq!(r.0, 426, "{r:?}");
        drop(data);
        assert_eq!(c.cmd("NOOP").await.0, 200);
    };
    // A new file that never gets a byte: 426, and no empty file is left.
    let sends_nothing = async {
        let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
        let data = c.open_data().await;
        assert_eq!(c.cmd("STOR empty.bin").await.0, 150);
        let r = c.reply().await;
        assert_eq!(r.0, 426, "{r:?}");
        drop(data);
        assert_eq!(c.cmd("NOOP").await.0, 200);
    };
    tokio::join!(never_connects, stops_sending, sends_nothing);
    assert_kept(&server, &original);
    assert!(
        !home.join("empty.bin").exists(),
        "an empty failed upload was kept"
    );
}
