//! A real PostgreSQL server for tests: the machine's own (Debian's `postgresql` package,
//! installed by scripts/test), started once per test process in a temporary data directory
//! on a free loopback port, and stopped when the test process exits. Each test makes its own
//! database, so tests run in parallel without seeing each other's accounts. The server offers
//! TLS with a certificate for 127.0.0.1 made at start ([`Postgres::ca_path`] verifies it).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The superuser initdb creates; logins are trusted (loopback only, a temporary cluster).
const SUPERUSER: &str = "ferry";

/// The running server.
#[derive(Debug)]
pub struct Postgres {
    /// The loopback port it listens on.
    port: u16,
    /// psql and friends.
    bin: PathBuf,
    /// The server's self-signed certificate, to verify it by.
    ca: PathBuf,
    /// The wrapper shell's stdin: when the test process exits the pipe closes, and the shell
    /// stops the server. Never written.
    _lifeline: Mutex<ChildStdin>,
    /// The wrapper shell, to tell whether the server died at start.
    shell: Mutex<Child>,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();

/// The test process's PostgreSQL server, started on first use.
pub fn server() -> &'static Postgres {
    SERVER.get_or_init(start)
}

/// The newest installed PostgreSQL's bin directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL is not installed (apt-get install postgresql; scripts/test does it)")
}

/// Runs the server programs as the `postgres` account when the tests run as root (initdb
/// and postgres refuse root).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Postgres {
    let bin = bin_dir();
    // Kept past this function: the wrapper shell removes it after the server stopped (a
    // static is never dropped, so a TempDir would leak it).
    let dir = tempfile::Builder::new()
        .prefix("ferry-pg-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    // PostgreSQL refuses a key others can read.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the PostgreSQL directory failed");
    }
    let init = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = free_port();
    // `read` returns when the test process's end closes the pipe; then the server is told
    // to stop (fast shutdown), and its files are removed once it has.
    let postgres = format!(
        "{prefix} {server} -D {data} -k {dir} -h 127.0.0.1 -p {port} -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
         -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} & pid=$!; \
         read _; kill -INT $pid; wait $pid; rm -rf {dir}",
        prefix = if is_root() {
            "setpriv --reuid=postgres --regid=postgres --init-groups --"
        } else {
            ""
        },
        server = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let mut child = Command::new("sh")
        .args(["-c", &postgres])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lifeline = child.stdin.take().unwrap();
    let server = Postgres {
        port,
        bin,
        ca: cert,
        _lifeline: Mutex::new(lifeline),
        shell: Mutex::new(child),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while server.try_sql("postgres", "SELECT 1").is_err() {
        if let Ok(Some(status)) = server.shell.lock().unwrap().try_wait() {
            panic!("PostgreSQL exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl Postgres {
    /// A new empty database; returns its URL for `database_url`.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The server's certificate, for `sslrootcert=` in a URL with `sslmode=verify-full`.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The URL of database `name`.
    fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in the database at `url` (from [`Postgres::create_database`]) with psql;
    /// returns the rows, one per line, columns separated by `|`.
    pub fn query(&self, url: &str, sql: &str) -> String {
        let name = url.rsplit('/').next().unwrap();
        self.sql(name, sql)
    }

    fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql)
            .unwrap_or_else(|err| panic!("psql {sql:?}: {err}"))
    }

    fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut child = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| err.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .map_err(|err| err.to_string())?;
        let out = child.wait_with_output().map_err(|err| err.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
