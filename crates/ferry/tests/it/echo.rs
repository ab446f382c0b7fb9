//! `ferry echo serve|send` as processes, against the classic socket programs written here in
//! Python's standard library (socket, struct, hmac, json), and under load: a thousand TCP
//! clients at once, a burst of ten thousand datagrams, hostile frames. Servers bind port 0
//! and announce their addresses on stdout; tests read those lines instead of sleeping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_net::echo::client::{self, FramedClient};
use ferry_net::echo::message_frame;
use ferry_net::frame::Format;
use tempfile::TempDir;
use testkit::random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A running `ferry echo serve`, killed when dropped.
struct EchoServer {
    child: Child,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    /// Everything the server logged on stderr so far.
    log: Arc<Mutex<String>>,
}

impl EchoServer {
    /// Starts `ferry echo serve ARGS...` and reads the addresses it announces.
    fn start(args: &[&str]) -> EchoServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env_remove("RUST_LOG")
            .args(["echo", "serve"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ferry");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let wants_udp = args.contains(&"--udp");
        let wants_tcp = args.contains(&"--tcp") || !wants_udp;
        let mut server = EchoServer {
            child,
            tcp: None,
            udp: None,
            log,
        };
        let mut stdout = BufReader::new(server.child.stdout.take().unwrap());
        while server.tcp.is_some() != wants_tcp || server.udp.is_some() != wants_udp {
            let line = read_line(&mut stdout);
            assert!(!line.is_empty(), "ferry exited: {}", server.log());
            let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
            if line.starts_with("ferry echo serving TCP on ") {
                server.tcp = Some(addr);
            } else if line.starts_with("ferry echo serving UDP on ") {
                server.udp = Some(addr);
            }
        }
        server
    }

    fn tcp(&self) -> SocketAddr {
        self.tcp.unwrap()
    }

    fn udp(&self) -> SocketAddr {
        self.udp.unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until the log holds `needle`; returns the log.
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(reader: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// Runs a classic-style Python program talking to `addr` (`HOST` and `PORT` in its
/// environment, with `env`). Returns stdout; the program must exit 0.
fn python(script: &str, addr: SocketAddr, env: &[(&str, &str)]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .envs(env.iter().copied())
        .output()
        .expect("cannot run python3");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Starts a Python server program that prints its port first; returns it and the port.
fn python_server(script: &str) -> (Child, BufReader<ChildStdout>, u16) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run python3");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let port = read_line(&mut stdout).trim().parse().unwrap();
    (child, stdout, port)
}

/// `ferry echo send ARGS...` with `stdin` piped in.
fn ferry_send(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .env_remove("RUST_LOG")
        .args(["echo", "send"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start ferry");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ferry exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn secret_file(dir: &TempDir, content: &str) -> String {
    let path = dir.path().join(format!("key-{}", content.trim()));
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

const PY_TCP_GREETING_CLIENT: &str = r#"
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
s.connect((os.environ['HOST'], int(os.environ['PORT'])))
print(s.recv(1024).decode('utf-8'))
for data in [b'Michael', b'Tracy', b'Sarah']:
    s.send(data)
    print(s.recv(1024).decode('utf-8'))
s.send(b'exit')
print('closed' if s.recv(1024) == b'' else 'still open')
s.close()
"#;

#[test]
fn python_tcp_greeting_client_is_welcomed_greeted_and_closed_on_exit() {
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0", "--mode", "greet"]);
    let out = python(PY_TCP_GREETING_CLIENT, server.tcp(), &[]);
    assert_eq!(
        out,
        "Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\nclosed\n"
    );
}

const PY_TCP_GREETING_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(('127.0.0.1', 0))
s.listen(5)
print(s.getsockname()[1], flush=True)
sock, addr = s.accept()
sock.settimeout(10)
sock.send(b'Welcome!')
while True:
    data = sock.recv(1024)
    if not data or data.decode('utf-8') == 'exit':
        break
    sock.send(('Hello, %s!' % data.decode('utf-8')).encode('utf-8'))
sock.close()
print('server saw', repr(data), flush=True)
"#;

#[test]
fn ferry_send_talks_to_a_python_tcp_greeting_server_from_a_pipe() {
    let (mut py, mut py_out, port) = python_server(PY_TCP_GREETING_SERVER);
    let addr = format!("127.0.0.1:{port}");
    let out = ferry_send(&[&addr], "Michael\n\n   \nTracy\nq\nnever sent\n");
    assert_eq!(
        stdout_of(&out),
        "Welcome!\nHello, Michael!\nHello, Tracy!\n"
    );
    assert_eq!(read_line(&mut py_out), "server saw b'exit'\n");
    assert!(py.wait().unwrap().success());
}

const PY_UDP_GREETING_CLIENT: &str = r#"
import os, socket
addr = (os.environ['HOST'], int(os.environ['PORT']))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for data in [b'Michael', b'Tracy', b'Sarah']:
    s.sendto(data, addr)
    print(s.recv(1024).decode('utf-8'))
s.close()
"#;

#[test]
fn python_udp_greeting_client_gets_one_greeting_per_datagram() {
    let server = EchoServer::start(&["--udp", "127.0.0.1:0", "--mode", "greet"]);
    let out = python(PY_UDP_GREETING_CLIENT, server.udp(), &[]);
    assert_eq!(out, "Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n");
}

const PY_UDP_GREETING_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1], flush=True)
s.settimeout(10)
for _ in range(2):
    data, addr = s.recvfrom(1024)
    s.sendto(b'Hello, %s!' % data, addr)
s.close()
"#;

#[test]
fn ferry_send_udp_talks_to_a_python_udp_greeting_server() {
    let (mut py, _, port) = python_server(PY_UDP_GREETING_SERVER);
    let addr = format!("127.0.0.1:{port}");
    let out = ferry_send(&[&addr, "--udp"], "Michael\n\nTracy\nexit\n");
    assert_eq!(stdout_of(&out), "Hello, Michael!\nHello, Tracy!\n");
    assert!(py.wait().unwrap().success());
}

#[test]
fn both_tcp_and_udp_served_at_once_in_upper_mode() {
    let server = EchoServer::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--mode",
        "upper",
    ]);
    let tcp = ferry_send(&[&server.tcp().to_string()], "hello tcp\n");
    assert_eq!(stdout_of(&tcp), "HELLO TCP\n");
    let udp = ferry_send(&[&server.udp().to_string(), "--udp"], "hello udp\n");
    assert_eq!(stdout_of(&udp), "HELLO UDP\n");
}

/// The classic upload client: `struct.pack('i', len(header))`, a JSON header naming the
/// `filesize` and `md5`, then the body; replies are framed the same way.
const PY_CLASSIC_UPLOAD: &str = r#"
import hashlib, json, os, socket, struct

def recv_exact(s, n):
    data = b''
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError('closed after %d of %d bytes' % (len(data), n))
        data += chunk
    return data

def exchange(header, body):
    s = socket.create_connection((os.environ['HOST'], int(os.environ['PORT'])), timeout=10)
    header_bytes = json.dumps(header).encode('utf-8')
    s.send(struct.pack('i', len(header_bytes)))
    s.send(header_bytes)
    s.sendall(body)
    reply = json.loads(recv_exact(s, struct.unpack('i', recv_exact(s, 4))[0]).decode('utf-8'))
    reply_body = recv_exact(s, reply.get('filesize', 0))
    s.close()
    return reply, reply_body

body = open(os.environ['FILE'], 'rb').read()
good = {'cmd': 'put', 'filename': 'report.bin', 'filesize': len(body),
        'md5': hashlib.md5(body).hexdigest()}
reply, _ = exchange(good, body)
print(reply['status'], reply['bytes'])
damaged = dict(good, filename='damaged.bin')
reply, _ = exchange(damaged, body[:-1] + b'!')
print(reply['status'], 'md5 mismatch' in reply['message'])
escape = dict(good, filename='../escape.bin')
reply, _ = exchange(escape, body)
print(reply['status'], 'refused file name' in reply['message'])
reply, reply_body = exchange({'cmd': 'echo', 'filesize': 5}, b'hello')
print(reply['cmd'], reply_body.decode('utf-8'))
"#;

#[test]
fn python_classic_framed_upload_lands_byte_identical_and_bad_ones_are_refused() {
    let dir = TempDir::new().unwrap();
    let uploads = dir.path().join("uploads");
    let file = dir.path().join("report.bin");
    let body = random_bytes(3 * 1024 * 1024 + 17, 6);
    std::fs::write(&file, &body).unwrap();
    let server = EchoServer::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--framed",
        "--classic",
        "--dir",
        uploads.to_str().unwrap(),
    ]);
    let out = python(
        PY_CLASSIC_UPLOAD,
        server.tcp(),
        &[("FILE", file.to_str().unwrap())],
    );
    assert_eq!(
        out,
        format!("ok {}\nerror True\nerror True\necho hello\n", body.len())
    );
    assert!(std::fs::read(uploads.join("report.bin")).unwrap() == body);
    let mut names: Vec<_> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["report.bin"], "no temporaries, nothing refused");
    assert!(!dir.path().join("escape.bin").exists());
}

#[test]
fn ferry_send_put_uploads_over_a_mutual_handshake_in_the_standard_format() {
    let dir = TempDir::new().unwrap();
    let key = secret_file(&dir, "s3cret\n");
    let uploads = dir.path().join("up");
    let file = dir.path().join("data.bin");
    let body = random_bytes(200_000, 7);
    std::fs::write(&file, &body).unwrap();
    let server = EchoServer::start(&[
        "--framed",
        "--tcp",
        "127.0.0.1:0",
        "--dir",
        uploads.to_str().unwrap(),
        "--secret-file",
        &key,
        "--mutual",
    ]);
    let addr = server.tcp().to_string();
    let auth = ["--secret-file", key.as_str(), "--mutual"];
    let put = ferry_send(
        &[&[addr.as_str(), "--put", file.to_str().unwrap()], &auth[..]].concat(),
        "",
    );
    assert_eq!(
        stdout_of(&put),
        "{\"bytes\":200000,\"filename\":\"data.bin\",\"status\":\"ok\"}\n"
    );
    assert!(std::fs::read(uploads.join("data.bin")).unwrap() == body);
    let chat = ferry_send(
        &[&[addr.as_str(), "--framed"], &auth[..]].concat(),
        "one\ntwo\n",
    );
    assert_eq!(stdout_of(&chat), "one\ntwo\n");
}

/// The classic authenticated client: HMAC-MD5 of the server's random challenge, then echo.
const PY_HMAC_MD5_CLIENT: &str = r#"
import hmac, os, socket

def session(key):
    s = socket.create_connection((os.environ['HOST'], int(os.environ['PORT'])), timeout=10)
    challenge = b''
    while len(challenge) < 32:
        challenge += s.recv(32 - len(challenge))
    s.sendall(hmac.new(key, challenge, 'md5').digest())
    try:
        s.sendall(b'hello classic')
        reply = s.recv(1024)
    except (ConnectionResetError, BrokenPipeError):
        reply = b''
    s.close()
    return reply

print(session(b'secret'))
print(session(b'wrong key'))
"#;

#[test]
fn python_hmac_md5_client_passes_with_the_key_and_is_cut_off_without() {
    let dir = TempDir::new().unwrap();
    let key = secret_file(&dir, "secret\n");
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0", "--secret-file", &key, "--md5"]);
    let out = python(PY_HMAC_MD5_CLIENT, server.tcp(), &[]);
    assert_eq!(out, "b'hello classic'\nb''\n");
    let log = server.wait_for_log("does not hold the shared key");
    assert_eq!(log.matches("client refused").count(), 1, "{log}");
}

#[test]
fn ferry_send_with_a_wrong_key_fails_with_a_clear_message() {
    let dir = TempDir::new().unwrap();
    let key = secret_file(&dir, "right\n");
    let wrong = secret_file(&dir, "wrong\n");
    let server = EchoServer::start(&["--secret-file", &key, "--tcp", "127.0.0.1:0"]);
    let addr = server.tcp().to_string();
    let ok = ferry_send(&[&addr, "--secret-file", &key], "ping\n");
    assert_eq!(stdout_of(&ok), "ping\n");
    for extra in [&[][..], &["--mutual"][..]] {
        let refused = ferry_send(
            &[&[addr.as_str(), "--secret-file", &wrong], extra].concat(),
            "ping\n",
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("key"), "{stderr}");
    }
    let no_key = ferry_send(&[&addr], "ping\n");
    assert_eq!(no_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("--secret-file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tcp_clients_all_get_their_bytes_back() {
    const CLIENTS: usize = 1000;
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0"]);
    let addr = server.tcp();
    // Everyone connects before anyone sends, so all thousand are open at the same time.
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                barrier.wait().await;
                let message = random_bytes(2048 + i, i as u64);
                stream.write_all(&message).await.unwrap();
                let mut echo = vec![0; message.len()];
                stream.read_exact(&mut echo).await.unwrap();
                echo == message
            })
        })
        .collect();
    let mut intact = 0;
    for client in clients {
        intact += usize::from(
            tokio::time::timeout(Duration::from_secs(20), client)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(intact, CLIENTS);
}

#[tokio::test]
async fn the_udp_server_answers_a_burst_of_ten_thousand_datagrams_and_keeps_answering() {
    const TOTAL: usize = 10_000;
    // Below the loopback receive buffers, so losses stay rare; some are tolerated.
    const BATCH: usize = 100;
    let server = EchoServer::start(&["--udp", "127.0.0.1:0"]);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp()).await.unwrap();
    let mut buf = [0u8; 64];
    let mut answered = 0;
    for batch in 0..TOTAL / BATCH {
        for i in 0..BATCH {
            let message = format!("datagram {}", batch * BATCH + i);
            socket.send(message.as_bytes()).await.unwrap();
        }
        for _ in 0..BATCH {
            match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    assert!(buf[..n].starts_with(b"datagram "));
                    answered += 1;
                }
                _ => break,
            }
        }
    }
    assert!(
        answered >= TOTAL * 9 / 10,
        "only {answered} of {TOTAL} answered"
    );
    socket.send(b"still there?").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), async {
        // Late answers from the burst may still be queued ahead of ours.
        loop {
            let n = socket.recv(&mut buf).await.unwrap();
            if &buf[..n] == b"still there?" {
                return n;
            }
        }
    })
    .await
    .expect("the server stopped answering after the burst");
    assert_eq!(n, 12);
}

/// Reads one standard-format frame header (our error replies have no body).
async fn read_header(stream: &mut TcpStream) -> String {
    let len = stream.read_u32().await.unwrap() as usize;
    let mut json = vec![0; len];
    stream.read_exact(&mut json).await.unwrap();
    String::from_utf8(json).unwrap()
}

async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {rest:?}");
}

#[tokio::test]
async fn garbage_and_oversize_frames_get_an_error_and_others_keep_working() {
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0", "--framed"]);
    let addr = server.tcp();
    let mut good = FramedClient::new(
        client::connect(addr, None, Duration::from_secs(5))
            .await
            .unwrap(),
        Format::Standard,
    );
    let cases: [(&[u8], &str); 3] = [
        (b"GET / HTTP/1.0\r\n\r\n", "frame too large: the header"),
        (b"\0\0\0\x08not json", "bad frame header"),
        (
            b"\0\0\0\x13{\"size\":1000000000}",
            "frame too large: the body",
        ),
    ];
    for (bytes, expected) in cases {
        let mut bad = TcpStream::connect(addr).await.unwrap();
        bad.write_all(bytes).await.unwrap();
        let reply = read_header(&mut bad).await;
        assert!(reply.contains("\"status\":\"error\""), "{reply}");
        assert!(reply.contains(expected), "{reply}");
        assert_closed(&mut bad).await;
        let echo = good
            .request(message_frame(&b"still served"[..]))
            .await
            .unwrap();
        assert_eq!(&echo.body[..], b"still served");
    }
    // Half-closed in the middle of a frame: the reply can still reach it.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"\0\0\0\x10{\"cmd\"").await.unwrap();
    half.shutdown().await.unwrap();
    let reply = read_header(&mut half).await;
    assert!(reply.contains("middle of a frame"), "{reply}");
    // Reset in the middle of a frame: nobody to answer, one log line.
    let mut reset = TcpStream::connect(addr).await.unwrap();
    reset.write_all(b"\0\0\0\x10{").await.unwrap();
    reset.set_zero_linger().unwrap();
    drop(reset);
    let log = server.wait_for_log("connection reset by peer");
    assert!(log.contains("connection reset by peer"), "{log}");
    let echo = good
        .request(message_frame(&b"after all that"[..]))
        .await
        .unwrap();
    assert_eq!(&echo.body[..], b"after all that");
}

#[tokio::test]
async fn a_half_closed_echo_client_still_gets_everything_back() {
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0"]);
    let mut stream = TcpStream::connect(server.tcp()).await.unwrap();
    let message = random_bytes(100_000, 9);
    stream.write_all(&message).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echo = Vec::new();
    stream.read_to_end(&mut echo).await.unwrap();
    assert!(echo == message);
}

#[test]
fn the_load_generator_prints_latency_percentiles_and_throughput() {
    let server = EchoServer::start(&["--tcp", "127.0.0.1:0"]);
    let out = ferry_send(
        &[
            &server.tcp().to_string(),
            "--count",
            "2000",
            "--size",
            "100",
            "--concurrency",
            "4",
        ],
        "",
    );
    let text = stdout_of(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("2000 messages of 100 bytes over 4 connections in "),
        "{text}"
    );
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        [words[0], words[1], words[4], words[7], words[10]],
        ["latency", "p50", "p90", "p99", "max"],
        "{text}"
    );
    for value in [words[2], words[5], words[8], words[11]] {
        value.parse::<f64>().unwrap();
    }
    assert!(lines[2].starts_with("throughput "), "{text}");
    assert!(
        lines[2].contains(" messages/s, ") && lines[2].ends_with(" MB/s each way"),
        "{text}"
    );
}

#[test]
fn conflicting_flags_are_usage_errors() {
    for args in [
        &["serve", "--framed", "--mode", "greet"][..],
        &["serve", "--md5"],
        &["serve", "--classic"],
        &["send", "127.0.0.1:1", "--udp", "--framed"],
        &["send", "127.0.0.1:1", "--size", "10"],
        &["send", "127.0.0.1:1", "--count", "0"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("echo")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn sigterm_stops_the_server_with_status_zero() {
    let mut server = EchoServer::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let _idle = std::net::TcpStream::connect(server.tcp()).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running: {}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// Checks the test helpers' own assumption: a missing file makes the server exit 1.
#[test]
fn a_missing_secret_file_is_an_error_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["echo", "serve", "--tcp", "127.0.0.1:0", "--secret-file"])
        .arg(Path::new("/nonexistent/key"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/key"));
}
