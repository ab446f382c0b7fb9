//! Several ferry nodes behind HAProxy: real `ferry serve` processes and an HAProxy configured
//! from the sample in contrib/haproxy/haproxy.cfg, each killed on drop so a failing test
//! leaves nothing running. Readiness is read from the processes' output and from the kernel's
//! table of listening sockets, never waited out with sleeps.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ferry serve`.
#[derive(Debug)]
pub struct Node {
    child: Child,
    /// Where it serves FTP (its first listener).
    pub ftp: SocketAddr,
    /// Where it serves metrics, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// Its log (stderr) so far.
    log: Arc<Mutex<String>>,
    /// What it printed on stdout, for failure messages.
    stdout: Vec<String>,
}

impl Node {
    /// `EXE serve --data DATA ARGS...` (EXE: the ferry binary under test), once it announced
    /// its FTP address.
    pub fn start(exe: &Path, data: &Path, args: &[&str]) -> Node {
        let mut child = Command::new(exe)
            .env_remove("FERRY_DATA")
            .env_remove("RUST_LOG")
            .arg("serve")
            .args(args)
            .arg("--data")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (log, _) = crate::drain(child.stderr.take().unwrap());
        let lines = line_channel(child.stdout.take().unwrap());
        let (mut stdout, mut metrics) = (Vec::new(), None);
        let deadline = Instant::now() + START_TIMEOUT;
        let ftp = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "ferry serve did not start in time\n{stdout:?}\n{}",
                    log.lock().unwrap()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!(
                        "ferry serve exited ({status})\n{stdout:?}\n{}",
                        log.lock().unwrap()
                    )
                }
            };
            if let Some(addr) = line.strip_prefix("ferry serving metrics on ") {
                metrics = Some(addr.trim().parse().unwrap());
            }
            let ftp = line
                .strip_prefix("ferry serving FTP on ")
                .map(str::to_owned);
            stdout.push(line);
            if let Some(addr) = ftp {
                break addr.trim().parse().unwrap();
            }
        };
        Node {
            child,
            ftp,
            metrics,
            log,
            stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until its log contains `needle`, for at most `limit`; the log, or a panic with it.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after {limit:?}\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (a name for kill(1): TERM, USR2, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, for at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it printed, for assertion messages.
    pub fn output(&self) -> String {
        format!("stdout:\n{}\nlog:\n{}", self.stdout.join("\n"), self.log())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe's lines, as they come.
fn line_channel(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Which PROXY protocol header HAProxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// `send-proxy`: the text header.
    V1,
    /// `send-proxy-v2`: the binary header (the sample's choice).
    V2,
}

/// The sample configuration shipped in contrib/haproxy/haproxy.cfg.
pub fn sample_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/haproxy/haproxy.cfg");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The sample with the test's addresses: the frontend on `frontend`, the two example servers
/// replaced by `nodes`, and the header version chosen.
pub fn render(
    sample: &str,
    frontend: SocketAddr,
    nodes: [SocketAddr; 2],
    version: ProxyVersion,
) -> String {
    let mut out = String::new();
    for line in sample.lines() {
        let trimmed = line.trim_start();
        let line = if trimmed == "bind :21" {
            line.replace(":21", &frontend.to_string())
        } else if trimmed.starts_with("server node-a 192.0.2.11:2121") {
            line.replace("192.0.2.11:2121", &nodes[0].to_string())
        } else if trimmed.starts_with("server node-b 192.0.2.12:2121") {
            line.replace("192.0.2.12:2121", &nodes[1].to_string())
        } else if trimmed.starts_with("default-server") && version == ProxyVersion::V1 {
            line.replace("send-proxy-v2", "send-proxy")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    for needle in [
        frontend.to_string(),
        nodes[0].to_string(),
        nodes[1].to_string(),
    ] {
        assert!(
            out.contains(&needle),
            "the sample changed: {needle} not placed\n{out}"
        );
    }
    out
}

/// A free TCP port on `ip` (bound and released: nothing else on this machine picks ports
/// from the range the kernel hands out for port 0 in the meantime, in practice).
pub fn free_port(ip: IpAddr) -> SocketAddr {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running HAProxy (foreground, `-db`).
#[derive(Debug)]
pub struct HaProxy {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The configuration and HAProxy's own log.
    dir: TempDir,
}

impl HaProxy {
    /// Starts HAProxy with `config`, whose frontend binds `addr`, and waits until it listens.
    pub fn start(config: &str, addr: SocketAddr) -> HaProxy {
        let dir = TempDir::new().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let log = File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy is not installed: run scripts/test, which installs it");
        let mut proxy = HaProxy { child, addr, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while !is_listening(addr) {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("haproxy exited ({status})\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy not listening on {addr}\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        proxy
    }

    /// HAProxy's log (one line per connection, with the server it chose).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a socket listens on `addr` (an IPv4 address), read from /proc/net/tcp: connecting
/// to find out would itself be a connection that HAProxy passes on to a node.
pub fn is_listening(addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("is_listening handles IPv4 only");
    };
    // /proc/net/tcp prints the address as the host-order u32 of the network-order bytes.
    let wanted = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // st 0A is LISTEN.
        fields.len() > 3 && fields[1] == wanted && fields[3] == "0A"
    })
}
