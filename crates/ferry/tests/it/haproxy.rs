//! Two `ferry serve` nodes (127.0.0.1 and 127.0.0.2, one shared data directory) behind HAProxy
//! configured from contrib/haproxy/haproxy.cfg, with the PROXY protocol in both versions.
//! curl and lftp connect from 127.0.0.5 through HAProxy, log in, upload and download; each
//! node must log the client's address (not HAProxy's) and advertise its own in PASV replies,
//! and refuse clients that bypass the proxy. Raw headers against an in-process server pin
//! what the header's address is used for: caps, PORT checks, passive data connections.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ferry_server::proxy::{ProxyProtocol, parse_trusted};
use tempfile::TempDir;
use testkit::haproxy::{HaProxy, Node, ProxyVersion, free_port, render, sample_config};
use testkit::{TestServer, random_bytes};

use super::binary::{Control, add_user, epsv_port};

/// The address the clients connect from: neither HAProxy's nor a node's.
const CLIENT_IP: &str = "127.0.0.5";

/// Two nodes sharing `data`, and HAProxy in front of them sending `version` headers.
struct Cluster {
    nodes: [Node; 2],
    proxy: HaProxy,
}

impl Cluster {
    fn start(data: &Path, version: ProxyVersion) -> Cluster {
        let exe = Path::new(env!("CARGO_BIN_EXE_ferry"));
        let node = |ip: &str| {
            let listen = format!("{ip}:0");
            let args = [
                "--listen",
                &listen,
                "--public-ip",
                ip,
                "--proxy-from",
                "127.0.0.1",
            ];
            Node::start(exe, data, &args)
        };
        let nodes = [node("127.0.0.1"), node("127.0.0.2")];
        let front = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let config = render(
            &sample_config(),
            front,
            [nodes[0].ftp, nodes[1].ftp],
            version,
        );
        let proxy = HaProxy::start(&config, front);
        Cluster { nodes, proxy }
    }

    /// `ftp://alice:alice-pw@HAPROXY/path`.
    fn url(&self, path: &str) -> String {
        format!("ftp://alice:alice-pw@{}/{path}", self.proxy.addr)
    }

    /// Everything the processes said, for assertion messages.
    fn output(&self) -> String {
        format!(
            "node a:\n{}\nnode b:\n{}\nhaproxy:\n{}",
            self.nodes[0].output(),
            self.nodes[1].output(),
            self.proxy.log()
        )
    }
}

/// curl from the client address, PASV with the address it names (EPSV would send the data
/// connection to HAProxy's address), with its transcript on stderr.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30", "-v"])
        .args([
            "--interface",
            CLIENT_IP,
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
        ])
        .args(args)
        .output()
        .expect("curl is not installed: run scripts/test")
}

#[track_caller]
fn assert_success(out: &Output, cluster: &Cluster) {
    assert!(
        out.status.success(),
        "curl failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        cluster.output()
    );
}

/// The addresses in the 227 replies of a transcript (curl's `< 227`, lftp's `<--- 227`).
fn pasv_addresses(transcript: &str) -> Vec<IpAddr> {
    transcript
        .lines()
        .filter_map(|l| {
            l.split_once("227 Entering Passive Mode (")
                .map(|(_, rest)| rest)
        })
        .map(|rest| {
            let numbers: Vec<u8> = rest
                .split(')')
                .next()
                .unwrap()
                .split(',')
                .map(|n| n.trim().parse().unwrap())
                .collect();
            IpAddr::V4(Ipv4Addr::new(
                numbers[0], numbers[1], numbers[2], numbers[3],
            ))
        })
        .collect()
}

/// The peers of a node's `login` log lines.
fn login_peers(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" login ") && l.contains("user=alice"))
        .filter_map(|l| l.split(" peer=").nth(1))
        .map(|rest| rest.split(':').next().unwrap().to_string())
        .collect()
}

/// lftp from the client address through HAProxy, PASV only, running `script` as alice.
fn lftp(cluster: &Cluster, script: &str) -> (Option<i32>, String) {
    let home = TempDir::new().unwrap();
    let commands = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; \
         set ftp:passive-mode on; set ftp:prefer-epsv no; set ftp:fix-pasv-address no; \
         set net:socket-bind-ipv4 {CLIENT_IP}; \
         open -u alice,alice-pw ftp://{}; {script}",
        cluster.proxy.addr
    );
    let out = Command::new("lftp")
        .args(["--norc", "-d", "-c", &commands])
        .env("HOME", home.path())
        .output()
        .expect("lftp is not installed: run scripts/test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn clients_reach_both_nodes_with_their_own_address(version: ProxyVersion) {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "alice", "alice-pw");
    let cluster = Cluster::start(&data, version);
    let local = TempDir::new().unwrap();
    let home = data.join("home/alice");

    // Two control connections in a row: round robin puts one on each node, and the file
    // uploaded through one is downloaded through the other (one data directory).
    let src = local.path().join("src");
    let bytes = random_bytes(300_000, 41);
    fs::write(&src, &bytes).unwrap();
    let up = curl(&["-T", src.to_str().unwrap(), &cluster.url("up.bin")]);
    assert_success(&up, &cluster);
    assert!(
        fs::read(home.join("up.bin")).unwrap() == bytes,
        "uploaded bytes differ"
    );
    let dst = local.path().join("dst");
    let down = curl(&["-o", dst.to_str().unwrap(), &cluster.url("up.bin")]);
    assert_success(&down, &cluster);
    assert!(fs::read(&dst).unwrap() == bytes, "downloaded bytes differ");

    // Each node advertised its own address: both show up, one per connection.
    let mut advertised = BTreeSet::new();
    for out in [&up, &down] {
        let transcript = String::from_utf8_lossy(&out.stderr);
        let addrs = pasv_addresses(&transcript);
        assert_eq!(addrs.len(), 1, "{transcript}");
        advertised.insert(addrs[0]);
    }
    let nodes: BTreeSet<IpAddr> = cluster.nodes.iter().map(|n| n.ftp.ip()).collect();
    assert_eq!(advertised, nodes, "{}", cluster.output());

    // lftp: upload and download in one session, on whichever node is next.
    let lftp_src = local.path().join("lftp-src");
    let lftp_bytes = random_bytes(200_000, 42);
    fs::write(&lftp_src, &lftp_bytes).unwrap();
    let lftp_dst = local.path().join("lftp-dst");
    let (code, transcript) = lftp(
        &cluster,
        &format!(
            "put {} -o lftp.bin; get lftp.bin -o {}",
            lftp_src.display(),
            lftp_dst.display()
        ),
    );
    assert_eq!(
        code,
        Some(0),
        "lftp failed:\n{transcript}\n{}",
        cluster.output()
    );
    assert!(fs::read(home.join("lftp.bin")).unwrap() == lftp_bytes);
    assert!(fs::read(&lftp_dst).unwrap() == lftp_bytes);
    let lftp_pasv = pasv_addresses(&transcript);
    assert!(!lftp_pasv.is_empty(), "{transcript}");
    assert!(
        lftp_pasv.iter().all(|ip| nodes.contains(ip)),
        "{transcript}"
    );

    // Every login on every node is from the client's address, none from HAProxy's.
    let mut logins = 0;
    for node in &cluster.nodes {
        let log = node.wait_for_log(&format!("peer={CLIENT_IP}:"), Duration::from_secs(10));
        let peers = login_peers(&log);
        assert!(!peers.is_empty(), "no login on {}\n{log}", node.ftp);
        assert!(peers.iter().all(|p| p == CLIENT_IP), "{peers:?}\n{log}");
        logins += peers.len();
    }
    assert_eq!(logins, 3, "{}", cluster.output());

    // Bypassing HAProxy is refused: only the trusted proxy may connect when the PROXY
    // protocol is on.
    let direct = curl(&[&format!(
        "ftp://alice:alice-pw@{}/up.bin",
        cluster.nodes[1].ftp
    )]);
    assert!(!direct.status.success(), "a direct connection was served");
    let log = cluster.nodes[1].wait_for_log("not a trusted proxy", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("not a trusted proxy") && l.contains(CLIENT_IP)),
        "{log}"
    );
}

#[test]
fn curl_and_lftp_through_haproxy_send_proxy_v2_keep_their_address_on_both_nodes() {
    clients_reach_both_nodes_with_their_own_address(ProxyVersion::V2);
}

#[test]
fn curl_and_lftp_through_haproxy_send_proxy_v1_keep_their_address_on_both_nodes() {
    clients_reach_both_nodes_with_their_own_address(ProxyVersion::V1);
}

/// Logs in through HAProxy (from 127.0.0.1, which is the client's address then) and says which
/// node the session landed on, from the address its PASV advertises.
fn session_through(cluster: &Cluster) -> (Control, usize) {
    let mut control = Control::connect(cluster.proxy.addr);
    assert_eq!(control.login("alice", "alice-pw"), 230);
    let (code, text) = control.cmd("PASV");
    assert_eq!(code, 227, "{text}");
    let ip = pasv_addresses(&text)[0];
    let node = cluster.nodes.iter().position(|n| n.ftp.ip() == ip).unwrap();
    (control, node)
}

#[test]
fn draining_a_node_behind_haproxy_sends_new_clients_to_the_other_and_keeps_its_sessions() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "alice", "alice-pw");
    let home = data.join("home/alice");
    fs::create_dir_all(&home).unwrap();
    let bytes = random_bytes(150_000, 44);
    fs::write(home.join("file.bin"), &bytes).unwrap();
    let mut cluster = Cluster::start(&data, ProxyVersion::V2);

    // Round robin: two sessions, one on each node.
    let (first, a) = session_through(&cluster);
    let (second, b) = session_through(&cluster);
    assert_ne!(a, b, "{}", cluster.output());
    let (drained, other) = (1, 0);
    let mut kept = if b == drained { second } else { first };
    let logins_before = login_peers(&cluster.nodes[other].log()).len();

    cluster.nodes[drained].signal("USR2");
    let closed = cluster.nodes[drained].ftp;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while testkit::haproxy::is_listening(closed) {
        assert!(std::time::Instant::now() < deadline, "{}", cluster.output());
        std::thread::sleep(Duration::from_millis(10));
    }

    // New clients all reach the other node, whether or not HAProxy's check has noticed yet.
    for _ in 0..3 {
        let out = curl(&[&cluster.url("")]);
        assert_success(&out, &cluster);
    }
    let peers = login_peers(&cluster.nodes[other].log());
    assert_eq!(peers.len(), logins_before + 3, "{}", cluster.output());

    // The drained node's session goes on: a download over a fresh passive connection.
    assert_eq!(kept.cmd("TYPE I").0, 200);
    let (code, text) = kept.cmd("PASV");
    assert_eq!(code, 227, "{text}");
    let port = pasv_port(&text);
    let mut stream = TcpStream::connect((closed.ip(), port)).unwrap();
    let (code, text) = kept.cmd("RETR file.bin");
    assert_eq!(code, 150, "{text}");
    let mut received = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut received).unwrap();
    assert!(received == bytes, "downloaded bytes differ");
    assert_eq!(kept.reply().0, 226);
    assert!(cluster.nodes[drained].alive(), "{}", cluster.output());

    // Its last session quits: the drained node exits cleanly; the other one serves on.
    assert_eq!(kept.cmd("QUIT").0, 221);
    let status = cluster.nodes[drained].wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        cluster.output()
    );
    assert!(cluster.nodes[other].alive());
}

/// The port of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
fn pasv_port(text: &str) -> u16 {
    let inner = text.split('(').nth(1).unwrap().split(')').next().unwrap();
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    n[4] * 256 + n[5]
}

/// A control connection from this test (127.0.0.1, a trusted proxy here) that starts with
/// `header`; the first line the server answers.
fn proxied(server: &TestServer, header: &[u8]) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(header).unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    (stream, line)
}

/// `PROXY TCP4 CLIENT 127.0.0.1 PORT 21`: a v1 header naming `client`.
fn v1_header(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 21\r\n").into_bytes()
}

#[test]
fn the_proxy_header_address_drives_caps_port_checks_and_passive_data_checks() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| {
            let trusted = vec![parse_trusted("127.0.0.1").unwrap()];
            c.proxy_protocol = Some(Arc::new(ProxyProtocol::new(trusted)));
            c.max_per_ip = 1;
        })
        .start();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(&v1_header("127.0.0.9", 40000)).unwrap();
    let mut control = Control::greeted(stream);
    // The per-address cap counts the client from the header, not the proxy: a second
    // session of 127.0.0.9 is refused, one of 127.0.0.10 is not.
    let (_full, refused) = proxied(&server, &v1_header("127.0.0.9", 40001));
    assert!(refused.starts_with("421 "), "{refused}");
    let (_other, greeting) = proxied(&server, &v1_header("127.0.0.10", 40002));
    assert!(greeting.starts_with("220 "), "{greeting}");

    assert_eq!(control.login("alice", "alice-pw"), 230);
    // PORT to the proxy's address is a bounce: the client is 127.0.0.9.
    assert_eq!(control.cmd("PORT 127,0,0,1,200,10").0, 504);

    // Passive data connections from the trusted proxy must name the session's client: one
    // without a header and one for another client are refused, the right one carries the
    // upload (its first bytes arrive with the header and must not be lost).
    let (code, text) = control.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    let data_addr = SocketAddr::new(server.addr().ip(), epsv_port(&text));
    let mut no_header = TcpStream::connect(data_addr).unwrap();
    no_header.write_all(b"not a header\r\n").unwrap();
    let mut foreign = TcpStream::connect(data_addr).unwrap();
    foreign.write_all(&v1_header("127.0.0.10", 5000)).unwrap();
    let mut data = TcpStream::connect(data_addr).unwrap();
    let bytes = random_bytes(100_000, 43);
    let mut first = v1_header("127.0.0.9", 5001);
    first.extend_from_slice(&bytes);
    data.write_all(&first).unwrap();
    drop(data);
    assert_eq!(control.cmd("TYPE I").0, 200);
    let (code, text) = control.cmd("STOR proxied.bin");
    assert_eq!(code, 150, "{text}");
    let (code, text) = control.reply();
    assert_eq!(code, 226, "{text}");
    assert!(fs::read(server.home("alice").join("proxied.bin")).unwrap() == bytes);
}

#[test]
fn a_v2_local_header_is_a_health_check_closed_without_a_greeting() {
    let server = TestServer::builder()
        .config(|c| {
            let trusted = vec![parse_trusted("127.0.0.0/8").unwrap()];
            c.proxy_protocol = Some(Arc::new(ProxyProtocol::new(trusted)));
        })
        .start();
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let (_stream, line) = proxied(&server, &local);
    assert_eq!(line, "", "a health check got an answer");
    let (_stream, line) = proxied(&server, b"PROXY UNKNOWN\r\n");
    assert_eq!(line, "", "a health check got an answer");
}

#[test]
fn a_trusted_peer_without_a_header_gets_no_greeting() {
    let server = TestServer::builder()
        .config(|c| {
            let mut proxy = ProxyProtocol::new(vec![parse_trusted("127.0.0.1").unwrap()]);
            proxy.header_timeout = Duration::from_millis(200);
            c.proxy_protocol = Some(Arc::new(proxy));
        })
        .start();
    // FTP where the header belongs: refused at once.
    let (_stream, line) = proxied(&server, b"USER alice\r\n");
    assert_eq!(line, "", "served without a header");
    // Silence: closed when the header timeout passes.
    let started = std::time::Instant::now();
    let (_stream, line) = proxied(&server, b"");
    assert_eq!(line, "", "served without a header");
    assert!(started.elapsed() >= Duration::from_millis(200));
}
