//! FTPS (RFC 4217): explicit (AUTH TLS) and implicit, driven by clients nobody here wrote —
//! curl, lftp, Python's ftplib.FTP_TLS and suppaftp with rustls — and by a byte-level client
//! of our own for what they cannot be made to do: pipelined plaintext after AUTH TLS, data
//! connections that do not resume the control connection's TLS session, uploads cut off
//! without close_notify. The real `ferry serve` process is checked for its fingerprint line,
//! the reuse of its generated certificate and the certificate reload on SIGHUP.
//!
//! The server requires data connections to resume the control connection's TLS session (like
//! vsftpd's `require_ssl_reuse`), so every successful protected transfer below also proves
//! that the client reused the session.

use std::fs;
use std::io::{BufRead, BufReader as StdBufReader, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::binary::{drain, wait_for_exit};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use sha2::{Digest, Sha256};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use tempfile::TempDir;
use testkit::{TestServer, random_bytes};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::raw::{Raw, Reply, WAIT, epsv_port};

/// Size of the files the interop round trips move: several TLS records and copy buffers.
const FILE_SIZE: usize = 3 << 20;

// ---------------------------------------------------------------------------------------------
// TLS client side: a rustls config trusting only the server's certificate.

/// A rustls client config that trusts only the certificates in `cert` (a self-signed server
/// certificate pinned as its own CA). Every call makes a new session cache, so one config per
/// control connection keeps the tickets of different sessions apart.
fn client_config(cert: &Path) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A connector with its own session cache (see [`client_config`]).
fn connector(cert: &Path) -> TlsConnector {
    TlsConnector::from(Arc::new(client_config(cert)))
}

/// A connector that never resumes: every handshake is a full one.
fn fresh_connector(cert: &Path) -> TlsConnector {
    let mut config = client_config(cert);
    config.resumption = Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// The name the generated certificate carries and the clients verify.
fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

/// Client-side TLS handshake on `tcp`, bounded by [`WAIT`].
async fn handshake(tls: &TlsConnector, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
    timeout(WAIT, tls.connect(server_name(), tcp))
        .await
        .expect("TLS handshake timed out")
}

/// Asserts that a data connection resumed a session rather than starting a new one.
#[track_caller]
fn assert_resumed(data: &TlsStream<TcpStream>) {
    assert_eq!(
        data.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the data connection did not resume the control connection's session"
    );
}

/// SHA-256 of the first certificate in a PEM file, as `AB:CD:...`.
fn fingerprint_of(cert: &Path) -> String {
    let der = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .next()
        .expect("no certificate in the PEM file")
        .unwrap();
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------------
// A control connection that starts plain and can be upgraded, and its data connections.

/// A connection before or after its TLS handshake.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while being upgraded.
    Upgrading,
}

fn upgrading() -> std::io::Error {
    std::io::Error::new(ErrorKind::NotConnected, "connection is being upgraded")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

/// A control connection, plain until [`Ctl::auth_tls`] (or TLS from the start for implicit
/// FTPS). Its connector, with a session cache of its own, also secures its data connections.
struct Ctl {
    io: BufReader<Conn>,
    tls: TlsConnector,
}

impl Ctl {
    /// Connects in plain text and checks the 220 greeting.
    async fn plain(addr: SocketAddr, cert: &Path) -> Ctl {
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let mut ctl = Ctl {
            io: BufReader::new(Conn::Plain(tcp)),
            tls: connector(cert),
        };
        let r = ctl.reply().await;
        assert_eq!(r.0, 220, "greeting: {r:?}");
        ctl
    }

    /// Explicit FTPS: connects, AUTH TLS, handshake.
    async fn explicit(addr: SocketAddr, cert: &Path) -> Ctl {
        let mut ctl = Ctl::plain(addr, cert).await;
        ctl.auth_tls().await;
        ctl
    }

    /// Implicit FTPS: the handshake first, then the 220 greeting inside TLS.
    async fn implicit(addr: SocketAddr, cert: &Path) -> Ctl {
        let tls = connector(cert);
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        let stream = handshake(&tls, tcp)
            .await
            .expect("implicit TLS handshake failed");
        let mut ctl = Ctl {
            io: BufReader::new(Conn::Tls(Box::new(stream))),
            tls,
        };
        let r = ctl.reply().await;
        assert_eq!(r.0, 220, "greeting: {r:?}");
        ctl
    }

    /// AUTH TLS, 234, then the handshake.
    async fn auth_tls(&mut self) {
        let r = self.cmd("AUTH TLS").await;
        assert_eq!(r.0, 234, "AUTH TLS: {r:?}");
        self.start_tls().await.expect("TLS handshake failed");
    }

    /// The client side of the handshake after a 234. Nothing may have arrived after the 234:
    /// the server speaks TLS from there on.
    async fn start_tls(&mut self) -> std::io::Result<()> {
        assert!(
            self.io.buffer().is_empty(),
            "plaintext after the 234: {:?}",
            String::from_utf8_lossy(self.io.buffer())
        );
        let Conn::Plain(tcp) = std::mem::replace(self.io.get_mut(), Conn::Upgrading) else {
            panic!("the control connection is not plain");
        };
        let stream = handshake(&self.tls, tcp).await?;
        *self.io.get_mut() = Conn::Tls(Box::new(stream));
        Ok(())
    }

    /// USER and PASS, expecting 331 and 230.
    async fn login(&mut self, user: &str, password: &str) {
        let r = self.cmd(&format!("USER {user}")).await;
        assert_eq!(r.0, 331, "USER {user}: {r:?}");
        let r = self.cmd(&format!("PASS {password}")).await;
        assert_eq!(r.0, 230, "PASS: {r:?}");
    }

    /// PBSZ 0 and PROT P, then TYPE I.
    async fn protect(&mut self) {
        let r = self.cmd("PBSZ 0").await;
        assert_eq!(r.0, 200, "PBSZ 0: {r:?}");
        let r = self.cmd("PROT P").await;
        assert_eq!(r.0, 200, "PROT P: {r:?}");
        let r = self.cmd("TYPE I").await;
        assert_eq!(r.0, 200, "TYPE I: {r:?}");
    }

    /// Writes bytes as they are (through TLS once upgraded).
    async fn send(&mut self, bytes: &[u8]) {
        let io = self.io.get_mut();
        timeout(WAIT, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .expect("write timed out")
        .expect("write to the control connection failed");
    }

    /// Sends one command line and reads its reply.
    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let n = timeout(WAIT, self.io.read_until(b'\n', &mut line))
            .await
            .expect("timed out waiting for a reply")
            .expect("reading a reply failed");
        assert!(n > 0, "connection closed while waiting for a reply");
        assert!(
            line.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("reply is not UTF-8")
    }

    /// Reads one reply (all lines of a multi-line one, joined with `\n`).
    async fn reply(&mut self) -> Reply {
        let first = self.read_line().await;
        assert!(first.len() >= 4, "short reply line {first:?}");
        let code: u16 = first[..3].parse().expect("reply without a code");
        let mut text = vec![first[4..].to_string()];
        if first.as_bytes()[3] == b'-' {
            let end = format!("{code} ");
            loop {
                let line = self.read_line().await;
                if let Some(last) = line.strip_prefix(&end) {
                    text.push(last.to_string());
                    break;
                }
                text.push(line);
            }
        }
        (code, text.join("\n"))
    }

    /// EPSV, connects the data connection, sends `cmd` and reads its first reply.
    async fn data_cmd(&mut self, cmd: &str) -> (Reply, TcpStream) {
        let r = self.cmd("EPSV").await;
        assert_eq!(r.0, 229, "EPSV: {r:?}");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), epsv_port(&r.1));
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("data connect timed out")
            .expect("data connect failed");
        let first = self.cmd(cmd).await;
        (first, tcp)
    }

    /// A protected download or listing: 150, a resumed handshake, the bytes up to
    /// close_notify, 226.
    async fn download(&mut self, cmd: &str) -> Vec<u8> {
        let (r, tcp) = self.data_cmd(cmd).await;
        assert_eq!(r.0, 150, "{cmd}: {r:?}");
        let mut data = handshake(&self.tls, tcp)
            .await
            .expect("data TLS handshake failed");
        assert_resumed(&data);
        let mut bytes = Vec::new();
        timeout(WAIT, data.read_to_end(&mut bytes))
            .await
            .expect("download timed out")
            .unwrap_or_else(|err| panic!("{cmd}: the data must end with close_notify: {err}"));
        drop(data);
        let r = self.reply().await;
        assert_eq!(r.0, 226, "{cmd}: {r:?}");
        bytes
    }

    async fn retr(&mut self, name: &str) -> Vec<u8> {
        self.download(&format!("RETR {name}")).await
    }

    /// A protected upload: 150, a resumed handshake, the bytes, close_notify, 226.
    async fn stor(&mut self, name: &str, bytes: &[u8]) {
        let (r, tcp) = self.data_cmd(&format!("STOR {name}")).await;
        assert_eq!(r.0, 150, "STOR {name}: {r:?}");
        let mut data = handshake(&self.tls, tcp)
            .await
            .expect("data TLS handshake failed");
        assert_resumed(&data);
        timeout(WAIT, async {
            data.write_all(bytes).await?;
            // close_notify, then FIN.
            data.shutdown().await
        })
        .await
        .expect("upload timed out")
        .expect("upload failed");
        // Read what the server still sends (TLS 1.3 tickets) until it closes, so no unread
        // bytes make this side reset the connection.
        let _ = timeout(WAIT, data.read_to_end(&mut Vec::new())).await;
        drop(data);
        let r = self.reply().await;
        assert_eq!(r.0, 226, "STOR {name}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// What a child process printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn assert_success(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\n{}", self.show());
    }
}

/// Runs `command` to its end, killing it after 60 s; `missing` is the panic message when the
/// program is not installed.
pub(crate) fn run(command: &mut Command, missing: &str) -> Run {
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => panic!("{missing}"),
        Err(err) => panic!("cannot run {command:?}: {err}"),
    };
    let (out, out_thread) = drain(child.stdout.take().unwrap());
    let (err, err_thread) = drain(child.stderr.take().unwrap());
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    out_thread.join().unwrap();
    err_thread.join().unwrap();
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.lock().unwrap().clone(),
        stderr: err.lock().unwrap().clone(),
    };
    assert!(
        status.is_some(),
        "{command:?} ran for over 60 s:\n{}",
        run.show()
    );
    run
}

/// curl with `args`, verbose (the `> CMD` transcript is on stderr).
fn curl(args: &[&str]) -> Run {
    run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "60", "-v"])
            .args(args),
        "curl is not installed: run scripts/test, which installs the FTP clients",
    )
}

/// True when curl's transcript shows the command `line` sent.
fn curl_sent(run: &Run, line: &str) -> bool {
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .any(|l| l.trim_end() == line)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A user's home with files in it, before the user logs in.
fn home_with(server: &TestServer, user: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let home = server.home(user);
    fs::create_dir_all(&home).unwrap();
    for (name, bytes) in files {
        fs::write(home.join(name), bytes).unwrap();
    }
    home
}

/// The names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "size of {what}");
    assert!(actual == expected, "bytes of {what} differ");
}

// ---------------------------------------------------------------------------------------------
// curl.

/// Uploads, lists and downloads through curl with the TLS options `tls`, on `base`
/// (`ftp://user:pw@host:port` or `ftps://...`); checks the bytes on disk and back.
fn curl_round_trip(server: &TestServer, base: &str, tls: &[&str], name: &str, seed: u64) {
    let data = random_bytes(FILE_SIZE, seed);
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    fs::write(&src, &data).unwrap();
    let url = format!("{base}/{name}");

    let mut args = tls.to_vec();
    args.extend(["-T", path_str(&src), &url]);
    let up = curl(&args);
    up.assert_success("curl upload");
    assert_same(
        &fs::read(server.home("alice").join(name)).unwrap(),
        &data,
        &format!("{name} on disk"),
    );

    let mut args = tls.to_vec();
    let dir_url = format!("{base}/");
    args.push(&dir_url);
    let list = curl(&args);
    list.assert_success("curl list");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.ends_with(&format!(" {name}"))),
        "{name} not listed:\n{}",
        list.show()
    );

    let dst = local.path().join("dst");
    let mut args = tls.to_vec();
    args.extend(["-o", path_str(&dst), &url]);
    let down = curl(&args);
    down.assert_success("curl download");
    assert_same(
        &fs::read(&dst).unwrap(),
        &data,
        &format!("{name} downloaded"),
    );

    // Every data connection was protected; the control connection was secured first (by
    // AUTH TLS, or by the implicit handshake before any command).
    let explicit = base.starts_with("ftp://");
    for run in [&up, &list, &down] {
        assert!(curl_sent(run, "PROT P"), "no PROT P:\n{}", run.show());
        assert!(!curl_sent(run, "PROT C"), "{}", run.show());
        // curl tries AUTH SSL first, which the server accepts as AUTH TLS.
        let auth = curl_sent(run, "AUTH SSL") || curl_sent(run, "AUTH TLS");
        assert_eq!(auth, explicit, "{}", run.show());
    }
}

fn explicit_base(server: &TestServer) -> String {
    server.url("alice")
}

fn implicit_base(server: &TestServer) -> String {
    format!("ftps://alice:alice-pw@{}", server.implicit_addr())
}

#[test]
fn curl_explicit_ftps_round_trips_insecure_and_with_the_certificate_pinned() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let base = explicit_base(&server);
    curl_round_trip(&server, &base, &["--ssl-reqd", "-k"], "insecure.bin", 1);
    curl_round_trip(
        &server,
        &base,
        &["--ssl-reqd", "--cacert", path_str(&cert)],
        "pinned.bin",
        2,
    );

    // The pinning is real: another server's certificate does not verify this one.
    let other = TestServer::builder().tls().start();
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    fs::write(&src, b"never").unwrap();
    let refused = curl(&[
        "--ssl-reqd",
        "--cacert",
        path_str(&other.cert_path()),
        "-T",
        path_str(&src),
        &format!("{base}/wrong-ca.bin"),
    ]);
    assert_eq!(refused.code, Some(60), "{}", refused.show());
    assert!(!server.home("alice").join("wrong-ca.bin").exists());
}

#[test]
fn curl_implicit_ftps_round_trips_with_the_certificate_pinned() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .implicit_tls()
        .start();
    let cert = server.cert_path();
    curl_round_trip(
        &server,
        &implicit_base(&server),
        &["--cacert", path_str(&cert)],
        "implicit.bin",
        3,
    );
}

// ---------------------------------------------------------------------------------------------
// lftp.

/// Runs lftp with FTPS forced and the certificate pinned, opening `url` as alice; `-d` puts
/// the protocol transcript on stderr.
fn lftp_ftps(server: &TestServer, url: &str, script: &str) -> Run {
    let home = TempDir::new().unwrap();
    let commands = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; \
         set net:reconnect-interval-base 1; set ftp:passive-mode on; \
         set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:ssl-protect-list true; \
         set ssl:verify-certificate true; set ssl:ca-file {}; \
         open -u alice,alice-pw {url}; {script}",
        path_str(&server.cert_path())
    );
    run(
        Command::new("lftp")
            .args(["--norc", "-d", "-c", &commands])
            .env("HOME", home.path()),
        "lftp is not installed; run scripts/test, which installs the FTP clients the interop \
         tests drive",
    )
}

/// put, ls, get through lftp at `url`; checks the bytes on disk and back, and that every
/// data connection was protected.
fn lftp_round_trip(server: &TestServer, url: &str, name: &str, seed: u64) -> Run {
    let data = random_bytes(FILE_SIZE, seed);
    let local = TempDir::new().unwrap();
    let (src, dst) = (local.path().join("src"), local.path().join("dst"));
    fs::write(&src, &data).unwrap();
    let run = lftp_ftps(
        server,
        url,
        &format!(
            "put {} -o {name}; ls; get {name} -o {}",
            path_str(&src),
            path_str(&dst)
        ),
    );
    run.assert_success("lftp");
    assert_same(
        &fs::read(server.home("alice").join(name)).unwrap(),
        &data,
        &format!("{name} on disk"),
    );
    assert_same(
        &fs::read(&dst).unwrap(),
        &data,
        &format!("{name} from lftp"),
    );
    assert!(
        run.stdout.lines().any(|l| l.ends_with(&format!(" {name}"))),
        "{name} not listed:\n{}",
        run.show()
    );
    let sent: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("---> "))
        .collect();
    assert!(sent.contains(&"PROT P"), "no PROT P:\n{}", run.show());
    assert!(!sent.contains(&"PROT C"), "{}", run.show());
    run
}

#[test]
fn lftp_explicit_ftps_with_pinned_certificate_puts_lists_and_gets() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let run = lftp_round_trip(
        &server,
        &format!("ftp://{}", server.addr()),
        "lftp-explicit.bin",
        4,
    );
    assert!(
        run.stderr.contains("---> AUTH TLS"),
        "no AUTH TLS:\n{}",
        run.show()
    );
}

#[test]
fn lftp_implicit_ftps_with_pinned_certificate_puts_lists_and_gets() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .implicit_tls()
        .start();
    let run = lftp_round_trip(
        &server,
        &format!("ftps://{}", server.implicit_addr()),
        "lftp-implicit.bin",
        5,
    );
    assert!(!run.stderr.contains("---> AUTH"), "{}", run.show());
}

// ---------------------------------------------------------------------------------------------
// Python's ftplib.FTP_TLS.

/// Connects `ftp` (FTP_TLS trusting only the server's certificate, 10 s timeout) and defines
/// `ReusingFTP_TLS`, which wraps each data connection with the control connection's session —
/// what a server requiring reuse needs and stock FTP_TLS does not do.
const PY_PRELUDE: &str = r#"
import ftplib, os, ssl, sys
HOST, PORT = os.environ['FTP_HOST'], int(os.environ['FTP_PORT'])
ctx = ssl.create_default_context(cafile=os.environ['FTP_CA'])

class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session)
            print('reused', conn.session_reused)
        return conn, size

def connect(cls):
    ftp = cls(context=ctx, timeout=10)
    ftp.connect(HOST, PORT)
    ftp.login('alice', 'alice-pw')
    ftp.prot_p()
    return ftp

def arg(name):
    return os.environ['ARG_' + name]
"#;

/// Runs `body` after the prelude; returns the run (exit status not checked).
fn python_tls(server: &TestServer, args: &[(&str, &str)], body: &str) -> Run {
    let script = format!("{PY_PRELUDE}\n{body}\n");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(&script)
        .env("FTP_HOST", server.addr().ip().to_string())
        .env("FTP_PORT", server.addr().port().to_string())
        .env("FTP_CA", server.cert_path())
        .env("PYTHONIOENCODING", "utf-8");
    for (name, value) in args {
        command.env(format!("ARG_{name}"), value);
    }
    run(&mut command, "python3 is not installed")
}

/// retrbinary, nlst, storbinary with the FTP_TLS class `CLASS`.
const PY_ROUND_TRIP: &str = r#"
ftp = connect(CLASS)
with open(arg('dst'), 'wb') as f:
    print(ftp.retrbinary('RETR down-' + arg('name'), f.write)[:3])
print('names', ' '.join(ftp.nlst()))
with open(arg('src'), 'rb') as f:
    print(ftp.storbinary('STOR ' + arg('name'), f)[:3])
ftp.quit()
"#;

/// retrbinary of a file placed on disk, nlst, storbinary of another; checks the bytes both
/// ways (the download first, so it is checked even when the upload fails).
fn python_round_trip(server: &TestServer, class: &str, name: &str, seed: u64) -> Run {
    let down = random_bytes(FILE_SIZE, seed);
    let up = random_bytes(FILE_SIZE, seed + 100);
    let home = home_with(server, "alice", &[(&format!("down-{name}"), &down)]);
    let local = TempDir::new().unwrap();
    let (src, dst) = (local.path().join("src"), local.path().join("dst"));
    fs::write(&src, &up).unwrap();
    let run = python_tls(
        server,
        &[
            ("src", path_str(&src)),
            ("dst", path_str(&dst)),
            ("name", name),
        ],
        &PY_ROUND_TRIP.replace("CLASS", class),
    );
    let downloaded = fs::read(&dst).unwrap_or_default();
    assert!(
        downloaded == down,
        "download by ftplib differs:\n{}",
        run.show()
    );
    run.assert_success("python");
    assert_same(
        &fs::read(home.join(name)).unwrap(),
        &up,
        &format!("{name} on disk"),
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("reused"))
        .collect();
    assert_eq!(
        lines,
        ["226", &format!("names down-{name}"), "226"],
        "{}",
        run.show()
    );
    run
}

#[test]
fn python_ftp_tls_reusing_the_session_round_trips_under_prot_p() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let run = python_round_trip(&server, "ReusingFTP_TLS", "py-reuse.bin", 6);
    // STOR, NLST and RETR: three data connections, each a resumption as Python sees it.
    let reused: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("reused"))
        .collect();
    assert_eq!(reused, ["reused True"; 3], "{}", run.show());
}

#[test]
fn fresh_tls_session_on_a_data_connection_is_refused_with_522_when_reuse_is_required() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let secret = random_bytes(100_000, 7);
    home_with(&server, "alice", &[("secret.bin", &secret)]);
    // Stock FTP_TLS starts a new session on every data connection.
    let run = python_tls(
        &server,
        &[],
        r#"
ftp = connect(ftplib.FTP_TLS)
got = []
try:
    print('finished', ftp.retrbinary('RETR secret.bin', got.append))
except ftplib.error_perm as e:
    print('reply', str(e)[:3])
except Exception as e:
    print('data error', type(e).__name__)
    try:
        print('finished', ftp.getresp())
    except ftplib.error_perm as e:
        print('reply', str(e)[:3])
print('bytes', sum(map(len, got)))
print('noop', ftp.voidcmd('NOOP')[:3])
ftp.quit()
"#,
    );
    run.assert_success("python");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("data error"))
        .collect();
    assert_eq!(
        lines,
        ["reply 522", "bytes 0", "noop 200"],
        "{}",
        run.show()
    );
}

#[test]
fn stock_python_ftp_tls_round_trips_when_reuse_is_not_required() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .config(|c| c.require_tls_reuse = false)
        .start();
    python_round_trip(&server, "ftplib.FTP_TLS", "py-stock.bin", 8);
}

// ---------------------------------------------------------------------------------------------
// Our own client: resumption proven from the client side, and what clients cannot be made to do.

#[tokio::test]
async fn data_connections_that_do_not_resume_this_control_sessions_tls_get_522() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .user("bob", "bob-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let secret = random_bytes(100_000, 9);
    let home = home_with(&server, "alice", &[("secret.bin", &secret)]);
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.protect().await;
    // Resumed: served.
    assert_same(&c.retr("secret.bin").await, &secret, "secret.bin");

    for cmd in ["RETR secret.bin", "STOR stolen.bin"] {
        // A full handshake on the data connection, and a session of another (live) control
        // connection offered on this one's: neither resumes this control connection's session.
        let mut other = Ctl::explicit(server.addr(), &cert).await;
        other.login("bob", "bob-pw").await;
        for (what, tls) in [
            ("fresh session", fresh_connector(&cert)),
            ("another control's session", other.tls.clone()),
        ] {
            let (r, tcp) = c.data_cmd(cmd).await;
            assert_eq!(r.0, 150, "{cmd}, {what}: {r:?}");
            let mut received = Vec::new();
            if let Ok(mut data) = handshake(&tls, tcp).await {
                assert_eq!(
                    data.get_ref().1.handshake_kind(),
                    Some(HandshakeKind::Full),
                    "{cmd}, {what}"
                );
                if cmd.starts_with("STOR") {
                    let _ = timeout(WAIT, data.write_all(b"must not be stored")).await;
                    let _ = timeout(WAIT, data.shutdown()).await;
                }
                let _ = timeout(WAIT, data.read_to_end(&mut received)).await;
            }
            assert!(
                received.is_empty(),
                "{cmd}, {what}: data on a refused connection"
            );
            let r = c.reply().await;
            assert_eq!(r.0, 522, "{cmd}, {what}: {r:?}");
            assert!(!home.join("stolen.bin").exists(), "{cmd}, {what}");
        }
    }
    // The session goes on with resumed data connections.
    c.stor("after.bin", &secret).await;
    assert_same(
        &fs::read(home.join("after.bin")).unwrap(),
        &secret,
        "after.bin",
    );
}

#[tokio::test]
async fn a_session_handed_out_on_a_refused_data_connection_does_not_open_the_next_one() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let secret = random_bytes(100_000, 14);
    home_with(&server, "alice", &[("secret.bin", &secret)]);
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.protect().await;
    // Someone else (who won the race for the passive port) connects with a full handshake:
    // refused, but it keeps whatever the server sent it on that connection.
    let thief = connector(&cert);
    for attempt in ["first", "second"] {
        let (r, tcp) = c.data_cmd("RETR secret.bin").await;
        assert_eq!(r.0, 150, "{attempt}: {r:?}");
        let mut received = Vec::new();
        let mut kind = None;
        if let Ok(mut data) = handshake(&thief, tcp).await {
            kind = data.get_ref().1.handshake_kind();
            let _ = timeout(WAIT, data.read_to_end(&mut received)).await;
        }
        let r = c.reply().await;
        assert!(
            received.is_empty() && r.0 == 522,
            "{attempt} attempt by a foreign client ({kind:?} handshake): got {} bytes of \
             secret.bin and the reply {r:?}; a session issued on a refused data connection \
             must not count as this control connection's",
            received.len()
        );
    }
    // The owner's own data connections still work.
    assert_same(&c.retr("secret.bin").await, &secret, "secret.bin");
}

#[tokio::test]
async fn plaintext_pipelined_after_auth_tls_is_discarded_not_run() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let home = server.home("alice");

    // Logged in in clear, then AUTH TLS with an MKD riding in the same segment.
    let mut c = Ctl::plain(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.send(b"AUTH TLS\r\nMKD injected\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.0, 234, "the first reply must be AUTH's: {r:?}");
    // start_tls asserts that nothing followed the 234 in clear.
    c.start_tls().await.expect("TLS handshake failed");
    // The next reply over TLS is NOOP's, not a late one for MKD.
    let r = c.cmd("NOOP").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert!(!home.join("injected").exists(), "the injected MKD ran");
    // The same command sent inside TLS does run.
    let r = c.cmd("MKD protected").await;
    assert_eq!(r.0, 257, "{r:?}");
    assert!(home.join("protected").is_dir());
    assert!(!home.join("injected").exists(), "the injected MKD ran late");

    // A login injected the same way does not log the session in.
    let mut c = Ctl::plain(server.addr(), &cert).await;
    c.send(b"AUTH TLS\r\nUSER alice\r\nPASS alice-pw\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.0, 234, "{r:?}");
    c.start_tls().await.expect("TLS handshake failed");
    let r = c.cmd("PWD").await;
    assert_eq!(r.0, 530, "the injected login took effect: {r:?}");
}

#[tokio::test]
async fn upload_cut_without_close_notify_gets_426_and_leaves_the_old_file() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let old = random_bytes(200_000, 10);
    let new = random_bytes(1 << 20, 11);
    let home = home_with(&server, "alice", &[("keep.bin", &old)]);
    for name in ["fresh.bin", "keep.bin"] {
        // A control connection each: this client reads nothing on the cut connection, so it
        // never sees the tickets sent there and uses up one of its control session's.
        let mut c = Ctl::explicit(server.addr(), &cert).await;
        c.login("alice", "alice-pw").await;
        c.protect().await;
        let (r, tcp) = c.data_cmd(&format!("STOR {name}")).await;
        assert_eq!(r.0, 150, "STOR {name}: {r:?}");
        let mut data = handshake(&c.tls, tcp).await.expect("data handshake");
        assert_resumed(&data);
        data.write_all(&new[..new.len() / 2]).await.unwrap();
        data.flush().await.unwrap();
        // The TLS layer is dropped without close_notify; only TCP's FIN ends the stream, as
        // an attacker truncating the connection would.
        let (mut tcp, _) = data.into_inner();
        tcp.shutdown().await.unwrap();
        let _ = timeout(WAIT, tcp.read_to_end(&mut Vec::new())).await;
        drop(tcp);
        let r = c.reply().await;
        assert_eq!(r.0, 426, "STOR {name} cut without close_notify: {r:?}");
    }
    assert_same(
        &fs::read(home.join("keep.bin")).unwrap(),
        &old,
        "keep.bin after a cut overwrite",
    );
    // A new file keeps what arrived (for a resume); it can only be a prefix of what was sent.
    let partial = fs::read(home.join("fresh.bin")).unwrap_or_default();
    assert!(
        partial.len() <= new.len() / 2 && new.starts_with(&partial),
        "fresh.bin holds {} bytes that are not a prefix of the upload",
        partial.len()
    );
    let mut names = names_in(&home);
    names.retain(|n| n != "fresh.bin");
    assert_eq!(names, ["keep.bin"], "temporary files left behind");

    // Complete uploads ending with close_notify are stored.
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.protect().await;
    c.stor("keep.bin", &new).await;
    assert_same(&fs::read(home.join("keep.bin")).unwrap(), &new, "keep.bin");
    c.stor("fresh.bin", &new).await;
    assert_same(
        &fs::read(home.join("fresh.bin")).unwrap(),
        &new,
        "fresh.bin",
    );
    assert_eq!(names_in(&home), ["fresh.bin", "keep.bin"]);
}

#[tokio::test]
async fn the_server_answers_an_uploads_close_notify_with_its_own() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.protect().await;
    let bytes = random_bytes(300_000, 15);
    let (r, tcp) = c.data_cmd("STOR closed.bin").await;
    assert_eq!(r.0, 150, "{r:?}");
    let mut data = handshake(&c.tls, tcp).await.expect("data handshake");
    data.write_all(&bytes).await.unwrap();
    data.shutdown().await.unwrap();
    // rustls reports a close without close_notify as UnexpectedEof. Clients that shut TLS
    // down both ways (Python's ssl `unwrap()`, which ftplib calls after storbinary) fail on it.
    let answered = timeout(WAIT, data.read_to_end(&mut Vec::new()))
        .await
        .expect("the server did not close the upload's data connection");
    let r = c.reply().await;
    assert_eq!(r.0, 226, "{r:?}");
    assert_same(
        &fs::read(server.home("alice").join("closed.bin")).unwrap(),
        &bytes,
        "closed.bin",
    );
    if let Err(err) = answered {
        panic!("after the client's close_notify the server closed without its own: {err}");
    }
}

#[tokio::test]
async fn upload_by_a_client_that_closes_without_reading_is_stored_completely() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    c.protect().await;
    let bytes = random_bytes(4 << 20, 16);
    let (r, tcp) = c.data_cmd("STOR unread.bin").await;
    assert_eq!(r.0, 150, "{r:?}");
    let mut data = handshake(&c.tls, tcp).await.expect("data handshake");
    assert_resumed(&data);
    // As lftp (GnuTLS) does: write, close_notify, close — never reading the data connection.
    // Anything the server sent on it lies unread, and closing a socket with unread data makes
    // the kernel reset the connection instead of finishing the send.
    data.write_all(&bytes).await.unwrap();
    data.shutdown().await.unwrap();
    drop(data);
    let r = c.reply().await;
    assert_eq!(
        r.0, 226,
        "an upload of a client that never reads its data connection: {r:?}"
    );
    assert_same(
        &fs::read(server.home("alice").join("unread.bin")).unwrap(),
        &bytes,
        "unread.bin",
    );
}

// ---------------------------------------------------------------------------------------------
// Policy: require_tls for the server and per account.

#[tokio::test]
async fn require_tls_refuses_clear_logins_and_clear_data() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .config(|c| c.require_tls = true)
        .start();
    let cert = server.cert_path();
    let home = home_with(&server, "alice", &[("f.bin", b"protected bytes")]);

    let mut plain = Raw::greeted(server.addr()).await;
    let r = plain.cmd("USER alice").await;
    assert_eq!(r.0, 530, "USER in clear: {r:?}");
    let r = plain.cmd("PASS alice-pw").await;
    assert_ne!(r.0, 230, "logged in without TLS: {r:?}");
    let r = plain.cmd("PWD").await;
    assert_eq!(r.0, 530, "{r:?}");

    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    let r = c.cmd("PBSZ 0").await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = c.cmd("PROT C").await;
    assert_eq!(r.0, 534, "PROT C under require_tls: {r:?}");
    // Still unprotected (no PROT P yet): transfers are refused before any byte flows.
    for cmd in ["RETR f.bin", "LIST", "STOR clear.bin"] {
        let (r, mut tcp) = c.data_cmd(cmd).await;
        assert_eq!(r.0, 521, "{cmd} without PROT P: {r:?}");
        let mut received = Vec::new();
        let _ = timeout(WAIT, tcp.read_to_end(&mut received)).await;
        assert!(received.is_empty(), "{cmd}: clear data flowed");
    }
    assert!(!home.join("clear.bin").exists());
    let r = c.cmd("PROT P").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(c.retr("f.bin").await, b"protected bytes");
}

/// Sets `require_tls = true` on `user` in DATA/users.toml, replacing the file atomically as
/// `ferry user` does.
pub(crate) fn require_tls_for(server: &TestServer, user: &str) {
    let path = server.data.path().join("users.toml");
    let mut doc: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    doc.get_mut("users")
        .and_then(|u| u.as_table_mut())
        .and_then(|u| u.get_mut(user))
        .and_then(|e| e.as_table_mut())
        .unwrap_or_else(|| panic!("{user} not in users.toml"))
        .insert("require_tls".into(), toml::Value::Boolean(true));
    let tmp = path.with_extension("toml.edit");
    fs::write(&tmp, toml::to_string(&doc).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, &path).unwrap();
}

#[tokio::test]
async fn per_user_require_tls_refuses_that_user_in_clear_while_others_log_in() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .user("bob", "bob-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    home_with(&server, "alice", &[("a.txt", b"alice's")]);
    // Before the change alice may log in in clear.
    let mut before = Raw::login(server.addr(), "alice", "alice-pw").await;
    assert_eq!(before.cmd("NOOP").await.0, 200);

    require_tls_for(&server, "alice");
    let mut plain = Raw::greeted(server.addr()).await;
    // USER answers every name alike (no hint which accounts exist or need TLS); a wrong
    // password gets the usual 530, the right one a 530 that says TLS is required.
    let r = plain.cmd("USER alice").await;
    assert_eq!(
        r,
        plain.cmd("USER nobody").await,
        "USER of a TLS account vs unknown"
    );
    assert_eq!(plain.cmd("PASS wrong").await.0, 530);
    assert_eq!(plain.cmd("USER alice").await.0, 331);
    let r = plain.cmd("PASS alice-pw").await;
    assert_eq!(r.0, 530, "{r:?}");
    assert!(r.1.contains("TLS required"), "{r:?}");
    assert_eq!(plain.cmd("PWD").await.0, 530, "logged in after all");
    // bob is not concerned: clear login and clear data.
    let mut bob = Raw::login(server.addr(), "bob", "bob-pw").await;
    bob.stor("clear.txt", b"bob in clear").await;
    assert_eq!(
        fs::read(server.home("bob").join("clear.txt")).unwrap(),
        b"bob in clear"
    );

    // alice over TLS logs in, but her data must be protected too.
    let mut c = Ctl::explicit(server.addr(), &cert).await;
    c.login("alice", "alice-pw").await;
    let (r, mut tcp) = c.data_cmd("RETR a.txt").await;
    assert_eq!(r.0, 521, "RETR without PROT P: {r:?}");
    let mut received = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut received)).await;
    assert!(received.is_empty(), "clear data flowed");
    assert_eq!(c.cmd("PBSZ 0").await.0, 200);
    let r = c.cmd("PROT C").await;
    assert_eq!(r.0, 534, "PROT C for a require_tls account: {r:?}");
    assert_eq!(c.cmd("PROT P").await.0, 200);
    assert_eq!(c.retr("a.txt").await, b"alice's");
}

// ---------------------------------------------------------------------------------------------
// AUTH, PBSZ, PROT, CCC and FEAT.

fn feat_lines(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.0, 211, "FEAT: {reply:?}");
    reply.1.lines().map(|l| l.trim().to_string()).collect()
}

#[tokio::test]
async fn security_commands_answer_in_order_and_refuse_ccc() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let cert = server.cert_path();
    let mut c = Ctl::plain(server.addr(), &cert).await;
    let features = feat_lines(&c.cmd("FEAT").await);
    for feature in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(
            features.iter().any(|f| f == feature),
            "FEAT lacks {feature}: {features:?}"
        );
    }
    for (cmd, code) in [
        ("CCC", 534),
        ("PBSZ 0", 503),
        ("PROT P", 503),
        ("AUTH XYZ", 504),
        ("NOOP", 200),
    ] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.0, code, "{cmd} before AUTH TLS: {r:?}");
    }
    c.auth_tls().await;
    for (cmd, code) in [
        ("PROT P", 503),
        ("PBSZ x", 501),
        ("PBSZ 0", 200),
        ("PROT S", 536),
        ("PROT E", 536),
        ("PROT Q", 504),
        ("PROT C", 200),
        ("PROT P", 200),
        ("AUTH TLS", 503),
        ("CCC", 534),
    ] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.0, code, "{cmd} after AUTH TLS: {r:?}");
    }
    // CCC left the control connection protected: the session goes on over TLS.
    c.login("alice", "alice-pw").await;
    c.cmd("TYPE I").await;
    assert!(c.download("LIST").await.is_empty());
    let r = c.cmd("CCC").await;
    assert_eq!(r.0, 534, "CCC when logged in: {r:?}");
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn without_tls_feat_hides_it_and_auth_tls_gets_502_and_the_session_goes_on() {
    let server = TestServer::builder().user("alice", "alice-pw").start();
    let mut c = Raw::greeted(server.addr()).await;
    let features = feat_lines(&c.cmd("FEAT").await);
    for line in &features {
        assert!(
            !line.starts_with("AUTH") && line != "PBSZ" && line != "PROT",
            "FEAT offers TLS on a server without it: {features:?}"
        );
    }
    let r = c.cmd("AUTH TLS").await;
    assert_eq!(r.0, 502, "{r:?}");
    let r = c.cmd("USER alice").await;
    assert_eq!(r.0, 331, "{r:?}");
    let r = c.cmd("PASS alice-pw").await;
    assert_eq!(r.0, 230, "{r:?}");
    c.stor("plain.txt", b"still plain").await;
    assert_eq!(
        fs::read(server.home("alice").join("plain.txt")).unwrap(),
        b"still plain"
    );
}

// ---------------------------------------------------------------------------------------------
// suppaftp with rustls.

fn suppaftp_connector(cert: &Path) -> AsyncRustlsConnector {
    AsyncRustlsConnector::from(connector(cert))
}

/// Logs in, uploads three files in a row, lists, downloads them and compares.
async fn suppaftp_round_trip(mut ftp: AsyncRustlsFtpStream, home: &Path, seed: u64) {
    ftp.login("alice", "alice-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("supp-{i}.bin"),
                random_bytes(FILE_SIZE / 3, seed + i),
            )
        })
        .collect();
    for (name, data) in &files {
        let mut reader = &data[..];
        let sent = ftp
            .put_file(name.as_str(), &mut reader)
            .await
            .unwrap_or_else(|err| panic!("STOR {name}: {err}"));
        assert_eq!(sent, data.len() as u64);
        assert_same(&fs::read(home.join(name)).unwrap(), data, name);
    }
    let mut listed = ftp.nlst(None).await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    for (name, data) in &files {
        let mut stream = ftp
            .retr_as_stream(name.as_str())
            .await
            .unwrap_or_else(|err| panic!("RETR {name}: {err}"));
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        stream.finish().await.unwrap();
        assert_same(&back, data, name);
    }
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn suppaftp_rustls_explicit_ftps_round_trips() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let ftp = AsyncRustlsFtpStream::connect(server.addr()).await.unwrap();
    let ftp = ftp
        .into_secure(suppaftp_connector(&server.cert_path()), "127.0.0.1")
        .await
        .unwrap();
    suppaftp_round_trip(ftp, &server.home("alice"), 12).await;
}

#[tokio::test]
async fn suppaftp_rustls_implicit_ftps_round_trips() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .implicit_tls()
        .start();
    let ftp = AsyncRustlsFtpStream::connect_secure_implicit(
        server.implicit_addr(),
        suppaftp_connector(&server.cert_path()),
        "127.0.0.1",
    )
    .await
    .unwrap();
    suppaftp_round_trip(ftp, &server.home("alice"), 13).await;
}

// ---------------------------------------------------------------------------------------------
// The `ferry serve` process: fingerprint, certificate reuse, SIGHUP reload.

/// A running `ferry serve --tls` with an implicit FTPS listener; killed on drop.
struct Serve {
    child: Child,
    plain: SocketAddr,
    implicit: SocketAddr,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    fn start(data: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env_remove("FERRY_DATA")
            .env_remove("RUST_LOG")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--implicit-tls", "127.0.0.1:0", "--tls", "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stderr, _) = drain(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, lines): (_, Receiver<String>) = channel();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut plain, mut implicit, mut seen) = (None, None, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while plain.is_none() || implicit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("ferry serving FTP on ") {
                        plain = Some(addr.trim().parse().unwrap());
                    }
                    if let Some(addr) = line.strip_prefix("ferry serving FTPS (implicit TLS) on ") {
                        implicit = Some(addr.trim().parse().unwrap());
                    }
                    seen.push(line);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "ferry serve did not announce both listeners\nstdout:\n{}\nstderr:\n{}",
                        seen.join("\n"),
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        Serve {
            child,
            plain: plain.unwrap(),
            implicit: implicit.unwrap(),
            stdout: seen,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The value of the stdout line starting with `prefix`.
    fn printed(&self, prefix: &str) -> Option<String> {
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()))
    }

    fn fingerprint(&self) -> String {
        self.printed("  SHA-256 fingerprint ")
            .unwrap_or_else(|| panic!("no fingerprint line\n{}", self.output()))
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until the log on stderr contains `needle`.
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stop(mut self) {
        self.signal("TERM");
        let status = wait_for_exit(&mut self.child, Duration::from_secs(10));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "exit after SIGTERM\n{}",
            self.output()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when a TLS handshake with the implicit listener at `addr` verifies against `cert`.
async fn verifies_with(addr: SocketAddr, cert: &Path) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    handshake(&connector(cert), tcp).await.is_ok()
}

#[tokio::test]
async fn ferry_serve_prints_the_fingerprint_reuses_its_certificate_and_reloads_it_on_sighup() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let cert = data.join("tls").join("cert.pem");

    let first = Serve::start(&data);
    let fingerprint = first.fingerprint();
    assert_eq!(
        first.printed("TLS certificate ").map(PathBuf::from),
        Some(cert.clone()),
        "{}",
        first.output()
    );
    assert_eq!(fingerprint, fingerprint_of(&cert), "printed vs cert.pem");
    let password = first
        .printed("Created user 'admin' with password: ")
        .unwrap_or_else(|| panic!("no admin password\n{}", first.output()));
    let mut c = Ctl::implicit(first.implicit, &cert).await;
    c.login("admin", &password).await;
    assert_eq!(c.cmd("QUIT").await.0, 221);
    first.stop();

    // The second start loads the same pair.
    let second = Serve::start(&data);
    assert_eq!(second.fingerprint(), fingerprint, "{}", second.output());
    assert_eq!(fingerprint_of(&cert), fingerprint);

    // A session opened before the reload, logged in, with a protected data connection.
    let mut old = Ctl::explicit(second.plain, &cert).await;
    old.login("admin", &password).await;
    old.protect().await;
    old.stor("before.bin", b"stored before the reload").await;

    // A new pair, generated by another server in another data directory, copied over.
    let donor = TestServer::builder().tls().start();
    let (new_cert, new_key) = (donor.cert_path(), donor.data.path().join("tls/key.pem"));
    let new_fingerprint = fingerprint_of(&new_cert);
    assert_ne!(new_fingerprint, fingerprint);
    let old_cert = dir.path().join("old-cert.pem");
    fs::copy(&cert, &old_cert).unwrap();
    fs::copy(&new_key, data.join("tls/key.pem")).unwrap();
    fs::copy(&new_cert, &cert).unwrap();
    second.signal("HUP");
    second.wait_for_log("TLS certificate reloaded").await;
    assert!(
        second.stderr.lock().unwrap().contains(&new_fingerprint),
        "the reload log does not name the new fingerprint\n{}",
        second.output()
    );

    // New connections get the new certificate, on both listeners.
    assert!(verifies_with(second.implicit, &new_cert).await);
    assert!(!verifies_with(second.implicit, &old_cert).await);
    let curl_new = curl(&[
        "--ssl-reqd",
        "--cacert",
        path_str(&new_cert),
        "-u",
        &format!("admin:{password}"),
        &format!("ftp://{}/", second.plain),
    ]);
    curl_new.assert_success("curl trusting the new certificate");
    assert!(
        curl_new.stdout.contains("before.bin"),
        "{}",
        curl_new.show()
    );
    let curl_old = curl(&[
        "--ssl-reqd",
        "--cacert",
        path_str(&old_cert),
        "-u",
        &format!("admin:{password}"),
        &format!("ftp://{}/", second.plain),
    ]);
    assert_eq!(curl_old.code, Some(60), "{}", curl_old.show());

    // The session from before goes on: control and resumed data connections.
    assert_eq!(old.cmd("NOOP").await.0, 200);
    assert_eq!(old.retr("before.bin").await, b"stored before the reload");
    second.stop();
}
