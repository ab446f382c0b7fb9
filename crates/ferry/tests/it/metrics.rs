//! Operations of a real `ferry serve`: a known set of FTP operations, then the metrics
//! endpoint scraped with curl must count exactly those, and the xferlog must hold one line per
//! file transfer; SIGUSR2 drains a node without cutting its sessions.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testkit::haproxy::Node;
use testkit::random_bytes;

use super::binary::{Control, epsv_port, run_to_end};

/// `ferry user add NAME ARGS... --password-stdin`, which must succeed.
fn add_user(data: &Path, name: &str, password: &str, args: &[&str]) {
    let mut all = vec!["user", "add", name];
    all.extend_from_slice(args);
    all.push("--password-stdin");
    let add = run_to_end(data, &all, &format!("{password}\n"));
    assert_eq!(add.0, Some(0), "{add:?}");
}

/// A node on 127.0.0.1 with metrics, serving `data`, with `extra` flags.
fn start_node(data: &Path, extra: &[&str]) -> Node {
    // Failed logins are slow by design; a short delay keeps these tests fast.
    fs::write(data.join("ferry.toml"), "login_fail_delay_ms = 50\n").unwrap();
    let mut args = vec!["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Node::start(Path::new(env!("CARGO_BIN_EXE_ferry")), data, &args)
}

/// `GET http://ADDR/PATH` with curl: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl is not installed: run scripts/test");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Scrapes until `ready` holds for the text (sessions that just quit are counted down a
/// moment after the client saw 221), for at most 10 seconds.
fn scrape_until(node: &Node, ready: impl Fn(&str) -> bool) -> String {
    let addr = node.metrics.expect("node started without --metrics-listen");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{text}\n{}", node.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens an EPSV data connection on `control`.
fn data_connection(control: &mut Control, node: &Node) -> TcpStream {
    let (code, text) = control.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    let addr = SocketAddr::new(node.ftp.ip(), epsv_port(&text));
    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap()
}

/// STOR `name` with `bytes` over a new data connection; the final reply code.
fn upload(control: &mut Control, node: &Node, name: &str, bytes: &[u8]) -> u16 {
    let mut data = data_connection(control, node);
    let (code, text) = control.cmd(&format!("STOR {name}"));
    assert_eq!(code, 150, "{text}");
    data.write_all(bytes).unwrap();
    drop(data);
    control.reply().0
}

/// RETR `name` over a new data connection: the bytes and the final reply code.
fn download(control: &mut Control, node: &Node, name: &str) -> (Vec<u8>, u16) {
    let mut data = data_connection(control, node);
    let (code, text) = control.cmd(&format!("RETR {name}"));
    assert_eq!(code, 150, "{text}");
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    (bytes, control.reply().0)
}

#[test]
fn metrics_count_exactly_the_operations_performed_and_xferlog_has_a_line_per_transfer() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    // Two files at most: the one placed below and one upload; a third is refused (552).
    add_user(&data, "alice", "alice-pw", &["--quota-files", "2"]);
    let home = data.join("home/alice");
    fs::create_dir_all(&home).unwrap();
    let (n, m) = (300_001, 123_457);
    let placed = random_bytes(m, 51);
    fs::write(home.join("dl.bin"), &placed).unwrap();
    let xferlog = dir.path().join("xferlog");
    let node = start_node(&data, &["--xferlog", xferlog.to_str().unwrap()]);
    let before = scrape_until(&node, |_| true);
    assert_eq!(
        sample(&before, "ferry_sessions_total"),
        Some(0.0),
        "{before}"
    );
    assert_eq!(sample(&before, "ferry_draining"), Some(0.0), "{before}");

    let mut alice = Control::connect(node.ftp);
    assert_eq!(alice.login("alice", "alice-pw"), 230);
    let mut wrong = Control::connect(node.ftp);
    assert_eq!(wrong.login("alice", "not-the-password"), 530);
    assert_eq!(wrong.cmd("QUIT").0, 221);

    assert_eq!(alice.cmd("TYPE I").0, 200);
    let sent = random_bytes(n, 52);
    assert_eq!(upload(&mut alice, &node, "up.bin", &sent), 226);
    assert!(fs::read(home.join("up.bin")).unwrap() == sent);
    let (received, code) = download(&mut alice, &node, "dl.bin");
    assert_eq!(code, 226);
    assert!(received == placed, "downloaded bytes differ");
    assert_eq!(alice.cmd("EPSV").0, 229);
    assert_eq!(alice.cmd("RETR missing.bin").0, 550);
    assert_eq!(alice.cmd("EPSV").0, 229);
    let (code, text) = alice.cmd("STOR third.bin");
    assert_eq!(code, 552, "{text}");
    assert_eq!(alice.cmd("QUIT").0, 221);

    let mut again = Control::connect(node.ftp);
    assert_eq!(again.login("alice", "alice-pw"), 230);
    assert_eq!(again.cmd("QUIT").0, 221);

    let text = scrape_until(&node, |t| sample(t, "ferry_sessions_open") == Some(0.0));
    let expected = [
        ("ferry_sessions_total", 3.0),
        ("ferry_sessions_open", 0.0),
        ("ferry_logins_total{outcome=\"ok\"}", 2.0),
        ("ferry_logins_total{outcome=\"failed\"}", 1.0),
        ("ferry_received_bytes_total", n as f64),
        ("ferry_sent_bytes_total", m as f64),
        (
            "ferry_transfers_total{direction=\"upload\",outcome=\"complete\"}",
            1.0,
        ),
        (
            "ferry_transfers_total{direction=\"download\",outcome=\"complete\"}",
            1.0,
        ),
        (
            "ferry_transfers_total{direction=\"upload\",outcome=\"failed\"}",
            0.0,
        ),
        (
            "ferry_transfer_duration_seconds_count{direction=\"upload\"}",
            1.0,
        ),
        (
            "ferry_transfer_duration_seconds_count{direction=\"download\"}",
            1.0,
        ),
        ("ferry_quota_rejections_total", 1.0),
        ("ferry_replies_total{code=\"230\"}", 2.0),
        ("ferry_replies_total{code=\"530\"}", 1.0),
        ("ferry_replies_total{code=\"226\"}", 2.0),
        ("ferry_replies_total{code=\"550\"}", 1.0),
        ("ferry_replies_total{code=\"552\"}", 1.0),
        ("ferry_replies_total{code=\"221\"}", 3.0),
        ("ferry_replies_total{code=\"229\"}", 4.0),
        ("ferry_draining", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    // Every reply sent is counted, under its own code and nowhere else.
    let replies: f64 = text
        .lines()
        .filter(|l| l.starts_with("ferry_replies_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // 220 x3, 331 x3, 200 x1 (TYPE I), 150 x2, then 230 226 550 552 221 229 as listed above.
    assert_eq!(
        replies,
        (3 + 3 + 1 + 2 + 2 + 1 + 2 + 1 + 1 + 3 + 4) as f64,
        "{text}"
    );
    assert_eq!(http_get(node.metrics.unwrap(), "/other").0, 404);

    // The xferlog: one line per file transfer, in order, with the fourteen fields after the
    // five of the date.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = fs::read_to_string(&xferlog).unwrap_or_default();
        if log.lines().count() >= 2 {
            break log;
        }
        assert!(Instant::now() < deadline, "xferlog: {log:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let lines: Vec<Vec<&str>> = log
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (fields, size, name, direction) in [
        (&lines[0], n, "/up.bin", "i"),
        (&lines[1], m, "/dl.bin", "o"),
    ] {
        assert_eq!(fields.len(), 18, "{log}");
        let size = size.to_string();
        assert_eq!(
            fields[6..],
            [
                "127.0.0.1",
                &size,
                name,
                "b",
                "_",
                direction,
                "r",
                "alice",
                "ftp",
                "0",
                "*",
                "c"
            ],
            "{log}"
        );
        let seconds: u64 = fields[5].parse().unwrap();
        assert!(seconds >= 1, "{log}");
    }
}

#[test]
fn sigusr2_drains_closes_the_listener_keeps_sessions_then_exits_when_the_last_quits() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "alice", "alice-pw", &[]);
    let mut node = start_node(&data, &[]);
    let mut alice = Control::connect(node.ftp);
    assert_eq!(alice.login("alice", "alice-pw"), 230);

    node.signal("USR2");
    // The listener closes: new clients (and a load balancer's health check) are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&node.ftp, Duration::from_secs(2)) {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => break,
            _ => assert!(
                Instant::now() < deadline,
                "still accepting after SIGUSR2\n{}",
                node.output()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = scrape_until(&node, |t| sample(t, "ferry_draining") == Some(1.0));
    assert_eq!(sample(&text, "ferry_sessions_open"), Some(1.0), "{text}");

    // The session opened before the drain goes on working, transfers included.
    assert_eq!(alice.cmd("TYPE I").0, 200);
    let bytes = random_bytes(200_000, 53);
    assert_eq!(upload(&mut alice, &node, "during-drain.bin", &bytes), 226);
    let (back, code) = download(&mut alice, &node, "during-drain.bin");
    assert_eq!(code, 226);
    assert!(back == bytes, "downloaded bytes differ");
    assert!(
        node.alive(),
        "exited with a session open\n{}",
        node.output()
    );

    // The last session quits: the node exits cleanly.
    assert_eq!(alice.cmd("QUIT").0, 221);
    let status = node.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}\n{}",
        node.output()
    );
    let log = node.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("drained: the last session ended"), "{log}");
}
