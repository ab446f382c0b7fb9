//! Transfers cut at random (seeded) points and resumed by clients nobody here wrote: a ~4 MiB
//! download cut by a reset of the data connection, continued with curl `-C -`, lftp `get -c`
//! and suppaftp (REST + RETR); a ~4 MiB upload of a new file cut the same way, which the server
//! keeps for resume, continued with curl `-C - -T` (SIZE + APPE), lftp `put -c`, suppaftp
//! (SIZE, REST + STOR) and a raw APPE. Every result is compared byte for byte. Last, the offset
//! checks: REST past the end, negative or too large.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tempfile::TempDir;
use testkit::{TestServer, random_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::quota::Rng;
use super::raw::{Raw, WAIT};

/// Size of the file each test cuts and resumes.
const LEN: usize = (4 << 20) + 12_345;
/// Cut points per client.
const CUTS: usize = 3;

/// Random cut points inside a file of `LEN` bytes, from a per-test seed.
fn cut_points(seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..CUTS)
        .map(|_| rng.range(1, LEN as u64 - 1) as usize)
        .collect()
}

#[track_caller]
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: size");
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!("{what}: bytes differ from offset {at}");
    }
}

/// Runs an FTP client as a child process, never for longer than 60 s; a missing client fails
/// the test (the interop suite must not pass without it).
async fn run_client(program: &str, args: &[&str], home: &Path) -> Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match timeout(Duration::from_secs(60), child).await {
        Ok(Ok(out)) => out,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed; run scripts/test, which installs the FTP clients the \
             interop tests drive"
        ),
        Ok(Err(err)) => panic!("cannot run {program}: {err}"),
        Err(_) => panic!("{program} ran for over 60 s"),
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// curl, verbose (its `> CMD` transcript goes to stderr).
async fn curl(args: &[&str], home: &Path) -> Output {
    let mut all = vec!["--silent", "--show-error", "--verbose", "--max-time", "60"];
    all.extend_from_slice(args);
    let out = run_client("curl", &all, home).await;
    assert!(out.status.success(), "curl failed:\n{}", show(&out));
    out
}

/// lftp as alice with `script`, in debug mode (its `---> CMD` transcript goes to stderr).
async fn lftp(server: &TestServer, script: &str, home: &Path) -> Output {
    let commands = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; \
         set net:reconnect-interval-base 1; set ftp:passive-mode on; \
         open -u alice,alice-pw ftp://{}; {script}",
        server.addr()
    );
    let out = run_client("lftp", &["--norc", "-d", "-c", &commands], home).await;
    assert!(out.status.success(), "lftp failed:\n{}", show(&out));
    out
}

/// True when a client transcript shows it sent `command` (curl `> CMD`, lftp `---> CMD`).
fn sent(out: &Output, command: &str) -> bool {
    String::from_utf8_lossy(&out.stderr).lines().any(|l| {
        let l = l.trim_start();
        l.strip_prefix("---> ")
            .or_else(|| l.strip_prefix("> "))
            .is_some_and(|c| c.trim_end() == command)
    })
}

/// A path for an lftp script, quoted.
fn q(path: &Path) -> String {
    let s = path.to_str().unwrap();
    assert!(!s.contains('"'), "{s}");
    format!("\"{s}\"")
}

/// alice logged in on a raw connection, in binary mode.
async fn raw_session(server: &TestServer) -> Raw {
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    assert_eq!(c.cmd("TYPE I").await.0, 200);
    c
}

/// suppaftp logged in as alice, in binary mode.
async fn suppaftp(server: &TestServer) -> AsyncFtpStream {
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp
}

/// Downloads `name` and stops after `cut` bytes by resetting the data connection; returns
/// those bytes (the partial file a client would have saved).
async fn cut_download(server: &TestServer, name: &str, cut: usize) -> Vec<u8> {
    let mut c = raw_session(server).await;
    let mut data = c.open_data().await;
    let r = c.cmd(format!("RETR {name}")).await;
    assert_eq!(r.0, 150, "RETR {name}: {r:?}");
    let mut partial = vec![0; cut];
    timeout(WAIT, data.read_exact(&mut partial))
        .await
        .expect("download stalled")
        .unwrap();
    data.set_zero_linger().unwrap();
    drop(data);
    // The server notices the reset (426), unless it had already handed every byte to the
    // kernel (226); either way the session goes on.
    let r = c.reply().await;
    assert!(r.0 == 426 || r.0 == 226, "RETR {name} cut at {cut}: {r:?}");
    assert_eq!(c.cmd("NOOP").await.0, 200);
    partial
}

/// Uploads `data[..cut]` as the new file `name`, waits until the server has written those
/// bytes, then resets the data connection. The server keeps the partial new file for resume.
async fn cut_upload(server: &TestServer, name: &str, data: &[u8], cut: usize) {
    let path = server.home("alice").join(name);
    let mut c = raw_session(server).await;
    let mut conn = c.open_data().await;
    let r = c.cmd(format!("STOR {name}")).await;
    assert_eq!(r.0, 150, "STOR {name}: {r:?}");
    timeout(WAIT, conn.write_all(&data[..cut]))
        .await
        .expect("upload stalled")
        .unwrap();
    // The reset discards whatever the server has not read yet; wait (polling the file, not a
    // blind sleep) until it has all of it, so the cut is exactly where the test put it.
    let deadline = Instant::now() + WAIT;
    while fs::metadata(&path).map_or(0, |m| m.len()) < cut as u64 {
        assert!(
            Instant::now() < deadline,
            "the server never wrote the {cut} bytes sent"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    conn.set_zero_linger().unwrap();
    drop(conn);
    let r = c.reply().await;
    assert_eq!(r.0, 426, "STOR {name} reset after {cut} bytes: {r:?}");
    let kept = fs::read(&path).unwrap_or_else(|err| {
        panic!("the partial upload of {name} was not kept for resume: {err}")
    });
    assert_same(&kept, &data[..cut], "the partial upload kept by the server");
    let r = c.cmd(format!("SIZE {name}")).await;
    assert_eq!(r, (213, cut.to_string()), "SIZE of the partial upload");
}

// ---------------------------------------------------------------------------------------------
// Downloads.

/// A server whose alice has `big.bin` of `LEN` random bytes.
fn server_with_big_file(seed: u64) -> (TestServer, Vec<u8>) {
    let server = TestServer::start();
    let data = random_bytes(LEN, seed);
    fs::write(server.home("alice").join("big.bin"), &data).unwrap();
    (server, data)
}

#[tokio::test]
async fn a_cut_download_is_resumed_by_curl() {
    let (server, data) = server_with_big_file(1);
    let local = TempDir::new().unwrap();
    let url = format!("{}/big.bin", server.url("alice"));
    for (i, cut) in cut_points(11).into_iter().enumerate() {
        let dst = local.path().join(format!("big.{i}"));
        fs::write(&dst, cut_download(&server, "big.bin", cut).await).unwrap();
        let out = curl(
            &["-C", "-", "-o", dst.to_str().unwrap(), &url],
            local.path(),
        )
        .await;
        assert!(
            sent(&out, &format!("REST {cut}")),
            "curl did not resume at {cut}:\n{}",
            show(&out)
        );
        assert_same(
            &fs::read(&dst).unwrap(),
            &data,
            &format!("curl, cut at {cut}"),
        );
    }
}

#[tokio::test]
async fn a_cut_download_is_resumed_by_lftp() {
    let (server, data) = server_with_big_file(2);
    let local = TempDir::new().unwrap();
    for (i, cut) in cut_points(12).into_iter().enumerate() {
        let dst = local.path().join(format!("big.{i}"));
        fs::write(&dst, cut_download(&server, "big.bin", cut).await).unwrap();
        let out = lftp(
            &server,
            &format!("get -c big.bin -o {}", q(&dst)),
            local.path(),
        )
        .await;
        assert!(
            sent(&out, &format!("REST {cut}")),
            "lftp did not resume at {cut}:\n{}",
            show(&out)
        );
        assert_same(
            &fs::read(&dst).unwrap(),
            &data,
            &format!("lftp, cut at {cut}"),
        );
    }
}

#[tokio::test]
async fn a_cut_download_is_resumed_by_suppaftp() {
    let (server, data) = server_with_big_file(3);
    for cut in cut_points(13) {
        let mut local = cut_download(&server, "big.bin", cut).await;
        let mut ftp = suppaftp(&server).await;
        ftp.resume_transfer(local.len()).await.unwrap();
        let mut stream = ftp.retr_as_stream("big.bin").await.unwrap();
        timeout(WAIT, stream.read_to_end(&mut local))
            .await
            .expect("resumed download stalled")
            .unwrap();
        stream.finish().await.unwrap();
        assert_same(&local, &data, &format!("suppaftp, cut at {cut}"));
        ftp.quit().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Uploads.

#[tokio::test]
async fn a_cut_upload_is_resumed_by_curl_with_appe() {
    let server = TestServer::start();
    let local = TempDir::new().unwrap();
    let data = random_bytes(LEN, 4);
    let src = local.path().join("src.bin");
    fs::write(&src, &data).unwrap();
    for (i, cut) in cut_points(14).into_iter().enumerate() {
        let name = format!("up.{i}");
        cut_upload(&server, &name, &data, cut).await;
        let url = format!("{}/{name}", server.url("alice"));
        let out = curl(
            &["-C", "-", "-T", src.to_str().unwrap(), &url],
            local.path(),
        )
        .await;
        assert!(
            sent(&out, &format!("SIZE {name}")) && sent(&out, &format!("APPE {name}")),
            "curl did not resume with SIZE and APPE:\n{}",
            show(&out)
        );
        let back = fs::read(server.home("alice").join(&name)).unwrap();
        assert_same(&back, &data, &format!("curl, cut at {cut}"));
    }
}

#[tokio::test]
async fn a_cut_upload_is_resumed_by_lftp() {
    let server = TestServer::start();
    let local = TempDir::new().unwrap();
    let data = random_bytes(LEN, 5);
    let src = local.path().join("src.bin");
    fs::write(&src, &data).unwrap();
    for (i, cut) in cut_points(15).into_iter().enumerate() {
        let name = format!("up.{i}");
        cut_upload(&server, &name, &data, cut).await;
        let out = lftp(
            &server,
            &format!("put -c {} -o {name}", q(&src)),
            local.path(),
        )
        .await;
        assert!(
            sent(&out, &format!("REST {cut}")) && sent(&out, &format!("STOR {name}")),
            "lftp did not resume with REST {cut} and STOR:\n{}",
            show(&out)
        );
        let back = fs::read(server.home("alice").join(&name)).unwrap();
        assert_same(&back, &data, &format!("lftp, cut at {cut}"));
    }
}

#[tokio::test]
async fn a_cut_upload_is_resumed_by_suppaftp_with_rest_and_stor() {
    let server = TestServer::start();
    let data = random_bytes(LEN, 6);
    for (i, cut) in cut_points(16).into_iter().enumerate() {
        let name = format!("up.{i}");
        cut_upload(&server, &name, &data, cut).await;
        let mut ftp = suppaftp(&server).await;
        let have = ftp.size(&name).await.unwrap();
        assert_eq!(have, cut, "SIZE {name}");
        ftp.resume_transfer(have).await.unwrap();
        let mut rest = &data[have..];
        let sent = ftp.put_file(&name, &mut rest).await.unwrap();
        assert_eq!(sent, (LEN - have) as u64);
        let back = fs::read(server.home("alice").join(&name)).unwrap();
        assert_same(&back, &data, &format!("suppaftp, cut at {cut}"));
        ftp.quit().await.unwrap();
    }
}

#[tokio::test]
async fn a_cut_upload_is_resumed_by_a_raw_appe() {
    let server = TestServer::start();
    let data = random_bytes(LEN, 7);
    for (i, cut) in cut_points(17).into_iter().enumerate() {
        let name = format!("up.{i}");
        cut_upload(&server, &name, &data, cut).await;
        let mut c = raw_session(&server).await;
        let r = c.cmd(format!("SIZE {name}")).await;
        assert_eq!(r.0, 213, "SIZE {name}: {r:?}");
        let have: usize = r.1.parse().unwrap();
        let t = c
            .transfer(format!("APPE {name}"), Some(&data[have..]))
            .await;
        assert_eq!(t.code(), 226, "APPE {name}: {t:?}");
        let back = fs::read(server.home("alice").join(&name)).unwrap();
        assert_same(&back, &data, &format!("raw APPE, cut at {cut}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Offsets.

#[tokio::test]
async fn rest_offsets_past_the_end_negative_or_too_large_are_refused() {
    let server = TestServer::start();
    let path = server.home("alice").join("f.bin");
    let data = random_bytes(1_000, 8);
    fs::write(&path, &data).unwrap();
    let mut c = raw_session(&server).await;

    // Past the end: RETR 554; the offset is used up by the refused RETR.
    assert_eq!(c.cmd("REST 1001").await.0, 350);
    let t = c.transfer("RETR f.bin", None).await;
    assert_eq!(t.first.0, 554, "REST 1001 + RETR: {t:?}");
    assert_same(
        &c.retr("f.bin").await,
        &data,
        "RETR after the refused offset",
    );
    // At the very end: an empty download.
    assert_eq!(c.cmd("REST 1000").await.0, 350);
    assert!(c.retr("f.bin").await.is_empty());
    // Inside: the tail.
    assert_eq!(c.cmd("REST 999").await.0, 350);
    assert_eq!(c.retr("f.bin").await, &data[999..]);

    // Not an offset: 501, and no offset is left pending.
    for arg in ["-1", "99999999999999999999999", "", "1e3", "0x10", "+5"] {
        let r = c.cmd(format!("REST {arg}").trim_end()).await;
        assert_eq!(r.0, 501, "REST {arg}: {r:?}");
    }
    assert_same(
        &c.retr("f.bin").await,
        &data,
        "RETR after the refused RESTs",
    );

    // Past the end for an upload: 554, and the file is untouched.
    assert_eq!(c.cmd("REST 1001").await.0, 350);
    let t = c.transfer("STOR f.bin", Some(b"must not land")).await;
    assert_eq!(t.first.0, 554, "REST 1001 + STOR: {t:?}");
    assert_same(
        &fs::read(&path).unwrap(),
        &data,
        "f.bin after the refused STOR",
    );
    let mut names: Vec<_> = fs::read_dir(server.home("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["f.bin"]);
    // And the offset did not survive to the next STOR, which replaces the file whole.
    c.stor("f.bin", b"whole").await;
    assert_eq!(fs::read(&path).unwrap(), b"whole");
}
