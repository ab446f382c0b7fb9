//! A real S3-protocol server for tests: moto's server mode (`pip install "moto[server]"`),
//! started once per test binary on 127.0.0.1 and a free port, and killed when the test
//! process exits. Each test takes its own bucket ([`bucket`]), so tests run in parallel.
//!
//! Objects are read back with curl, a client that shares no code with ferry's.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_server::storage::s3::S3Settings;

/// The moto server of this test process.
#[derive(Debug)]
struct Moto {
    /// `http://127.0.0.1:PORT`.
    endpoint: String,
    /// The shell below; kept, never waited for: it ends with the test process.
    _shell: Mutex<Child>,
    /// The shell that started moto waits on this pipe and kills moto when it closes, which
    /// happens when the test process exits however it exits. Never written to.
    _lifeline: Mutex<ChildStdin>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// How long moto may take to start (a cold Python import of moto and Flask).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The endpoint of this process's moto server, started on first use.
pub fn endpoint() -> &'static str {
    &MOTO.get_or_init(start).endpoint
}

fn start() -> Moto {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .expect("cannot run python3");
    assert!(
        probe.status.success(),
        "moto's server mode is missing: run scripts/test, or pip install \"moto[server]\"\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // A port the OS says is free; moto binds it a moment later.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script =
        format!("python3 -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & read _; kill $!");
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start moto");
    let lifeline = shell.stdin.take().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    // Polls the port: ready as soon as moto accepts connections.
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if let Ok(Some(status)) = shell.try_wait() {
            panic!("moto exited at start: {status}");
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "moto did not listen on {addr} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto {
        endpoint: format!("http://{addr}"),
        _shell: Mutex::new(shell),
        _lifeline: Mutex::new(lifeline),
    }
}

/// Creates a bucket of its own for one test and returns settings for it: moto's endpoint,
/// prefix `users/`, and moto's dummy credentials.
pub fn bucket() -> S3Settings {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "ferry-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let endpoint = endpoint();
    let status = curl(&["-X", "PUT", &format!("{endpoint}/{name}")]);
    assert_eq!(status, "200", "creating bucket {name}");
    S3Settings {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        bucket: name,
        prefix: "users/".into(),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
    }
}

/// curl with requests signed (SigV4) by moto's dummy credentials: moto refuses anonymous reads.
fn signed_curl() -> Command {
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
        "testing:testing",
    ]);
    curl
}

/// Runs curl and returns the HTTP status code it printed.
fn curl(args: &[&str]) -> String {
    let out = signed_curl()
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("cannot run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bytes of object `key` in the bucket, `None` if there is no such object.
pub fn object(settings: &S3Settings, key: &str) -> Option<Vec<u8>> {
    let url = format!("{}/{}/{key}", endpoint(), settings.bucket);
    let out = signed_curl()
        .args(["-f", &url])
        .output()
        .expect("cannot run curl");
    out.status.success().then_some(out.stdout)
}

/// Every key in the bucket (sorted), as S3's ListObjectsV2 reports them.
pub fn keys(settings: &S3Settings) -> Vec<String> {
    let url = format!(
        "{}/{}?list-type=2&max-keys=1000",
        endpoint(),
        settings.bucket
    );
    let out = signed_curl()
        .args(["-f", &url])
        .output()
        .expect("cannot run curl");
    assert!(out.status.success(), "listing bucket {}", settings.bucket);
    let mut keys = Vec::new();
    for line in BufReader::new(&out.stdout[..]).split(b'<') {
        let line = String::from_utf8(line.unwrap()).unwrap();
        if let Some(key) = line.strip_prefix("Key>") {
            keys.push(key.to_string());
        }
    }
    keys.sort();
    keys
}
