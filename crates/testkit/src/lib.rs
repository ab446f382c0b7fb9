//! Test support: a real ferry server on 127.0.0.1 port 0 with a temporary data directory and
//! users, running on its own thread and runtime so that synchronous tests (curl, lftp,
//! Python's ftplib as child processes) and async tests (suppaftp) can both drive it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod haproxy;
pub mod moto;
pub mod postgres;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_server::ServerConfig;
use ferry_server::config::StorageBackend;
use ferry_server::storage::s3::{S3Bucket, S3Settings};
use ferry_server::users::{self, Password, UserEntry, UserStore};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Deterministic pseudo-random bytes (xorshift64*): reproducible failures, no RNG crate, and
/// no two chunks alike, so a misplaced or repeated chunk cannot go unnoticed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Collects a pipe in a thread so the child never blocks on a full pipe; the thread ends
/// when the pipe closes.
pub fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, thread)
}

/// An account the test server was started with.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// Cleartext password, for the client under test.
    pub password: String,
    /// Whether the account was created read-only.
    pub read_only: bool,
    /// Quota limits (bytes, files); `None` is unlimited.
    pub quota: (Option<u64>, Option<u64>),
}

/// Builds a [`TestServer`].
#[derive(Debug)]
pub struct Builder {
    users: Vec<TestUser>,
    listen: Vec<SocketAddr>,
    configure: Vec<fn(&mut ServerConfig)>,
    tls: Tls,
    s3: Option<S3Settings>,
}

/// How a test server offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Plain FTP only.
    Off,
    /// AUTH TLS on the plain listeners, with a certificate generated in DATA/tls/.
    Explicit,
    /// AUTH TLS, plus an implicit FTPS listener on 127.0.0.1:0.
    ExplicitAndImplicit,
}

impl Builder {
    /// Offers AUTH TLS with a self-signed certificate generated in DATA/tls/ (see
    /// [`TestServer::cert_path`]).
    pub fn tls(mut self) -> Self {
        self.tls = self.tls.max_explicit();
        self
    }

    /// Also listens for implicit FTPS on 127.0.0.1:0 (see [`TestServer::implicit_addr`]).
    pub fn implicit_tls(mut self) -> Self {
        self.tls = Tls::ExplicitAndImplicit;
        self
    }

    /// Keeps users' files in S3 (a bucket from [`moto::bucket`]) instead of home directories.
    pub fn s3(mut self, settings: S3Settings) -> Self {
        self.s3 = Some(settings);
        self
    }

    /// Adds a read-write user.
    pub fn user(self, name: &str, password: &str) -> Self {
        self.add(name, password, false, (None, None))
    }

    /// Adds a read-only user.
    pub fn read_only_user(self, name: &str, password: &str) -> Self {
        self.add(name, password, true, (None, None))
    }

    /// Adds a read-write user with a quota of `bytes` and `files` (`None`: unlimited).
    pub fn quota_user(
        self,
        name: &str,
        password: &str,
        bytes: Option<u64>,
        files: Option<u64>,
    ) -> Self {
        self.add(name, password, false, (bytes, files))
    }

    fn add(
        mut self,
        name: &str,
        password: &str,
        read_only: bool,
        quota: (Option<u64>, Option<u64>),
    ) -> Self {
        self.users.push(TestUser {
            name: name.into(),
            password: password.into(),
            read_only,
            quota,
        });
        self
    }

    /// Listens on `addr` instead of 127.0.0.1:0 (e.g. `[::1]:0`); repeatable.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen.push(addr.parse().unwrap());
        self
    }

    /// Adjusts the server config before start (limits, timeouts).
    pub fn config(mut self, f: fn(&mut ServerConfig)) -> Self {
        self.configure.push(f);
        self
    }

    /// Creates the data directory and users, binds, and starts serving.
    pub fn start(self) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        for user in &self.users {
            // Cheap argon2id parameters: the PHC string carries them, so verification is real.
            let hash =
                users::hash_password_with_params(&Password::new(user.password.clone()), 64, 1, 1)
                    .unwrap();
            let mut entry = UserEntry::new(hash, users::default_home(&user.name), user.read_only);
            (entry.quota_bytes, entry.quota_files) = user.quota;
            users::add_user(data.path(), &user.name, entry).unwrap();
        }
        let listen = if self.listen.is_empty() {
            vec!["127.0.0.1:0".parse().unwrap()]
        } else {
            self.listen
        };
        let running = spawn(
            data.path(),
            &listen,
            &self.configure,
            self.tls,
            self.s3.as_ref(),
        );
        TestServer {
            tls: self.tls,
            s3: self.s3,
            addrs: running.addrs,
            data,
            users: self.users,
            listen,
            configure: self.configure,
            stop: Some(running.stop),
            thread: Some(running.thread),
        }
    }
}

impl Tls {
    fn max_explicit(self) -> Tls {
        if self == Tls::Off {
            Tls::Explicit
        } else {
            self
        }
    }
}

/// A server thread and how to stop it.
struct Running {
    addrs: Vec<SocketAddr>,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts a server on `data` on its own thread and runtime.
fn spawn(
    data: &Path,
    listen: &[SocketAddr],
    configure: &[fn(&mut ServerConfig)],
    tls: Tls,
    s3: Option<&S3Settings>,
) -> Running {
    let mut config = ServerConfig::new(data);
    config.login_fail_delay = Duration::from_millis(50);
    // Tests fail many logins from 127.0.0.1; the per-address block has tests of its own.
    config.max_login_failures_per_ip = 10_000;
    config.data_timeout = Duration::from_secs(10);
    config.shutdown_grace = Duration::from_secs(2);
    if tls != Tls::Off {
        let source = ferry_server::tls::CertSource::generated_in(data);
        config.tls = Some(Arc::new(ferry_server::tls::Tls::load(source).unwrap()));
    }
    if let Some(settings) = s3 {
        config.storage = StorageBackend::S3(Arc::new(S3Bucket::open(settings).unwrap()));
    }
    for f in configure {
        f(&mut config);
    }
    let store = Arc::new(
        UserStore::open(data)
            .unwrap()
            .with_login_cache(config.login_cache),
    );
    // Bound here, before the thread starts, so the address is known and connectable at once.
    let listeners: Vec<_> = listen
        .iter()
        .map(|addr| {
            let listener = std::net::TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .collect();
    let mut addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let implicit = (tls == Tls::ExplicitAndImplicit).then(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        addrs.push(listener.local_addr().unwrap());
        listener
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listeners = runtime.block_on(async {
            let mut all: Vec<_> = listeners
                .into_iter()
                .map(|l| {
                    ferry_server::Listener::plain(tokio::net::TcpListener::from_std(l).unwrap())
                })
                .collect();
            if let Some(l) = implicit {
                all.push(ferry_server::Listener::implicit_tls(
                    tokio::net::TcpListener::from_std(l).unwrap(),
                ));
            }
            all
        });
        runtime
            .block_on(ferry_server::run(listeners, config, store, async {
                let _ = stopped.await;
            }))
            .unwrap();
    });
    Running {
        addrs,
        stop,
        thread,
    }
}

/// A running server; stopped and its data directory removed on drop.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens, in the order given (the first is 127.0.0.1 by default); the implicit
    /// FTPS address, if any, is last.
    pub addrs: Vec<SocketAddr>,
    /// The data directory (users.toml, home/<user>/).
    pub data: TempDir,
    /// The accounts it was started with.
    pub users: Vec<TestUser>,
    /// Kept to restart on the same addresses' kind (ports are new).
    listen: Vec<SocketAddr>,
    /// Kept to restart with the same settings.
    configure: Vec<fn(&mut ServerConfig)>,
    /// Kept to restart with the same TLS setup.
    tls: Tls,
    /// Kept to restart on the same bucket.
    s3: Option<S3Settings>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with users `alice` (password `alice-pw`), `bob` (`bob-pw`) and the read-only
    /// `reader` (`reader-pw`).
    pub fn start() -> TestServer {
        TestServer::builder()
            .user("alice", "alice-pw")
            .user("bob", "bob-pw")
            .read_only_user("reader", "reader-pw")
            .start()
    }

    /// A builder with no users.
    pub fn builder() -> Builder {
        Builder {
            users: Vec::new(),
            listen: Vec::new(),
            configure: Vec::new(),
            tls: Tls::Off,
            s3: None,
        }
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The implicit FTPS address (servers built with `implicit_tls()`).
    pub fn implicit_addr(&self) -> SocketAddr {
        assert_eq!(
            self.tls,
            Tls::ExplicitAndImplicit,
            "server built without implicit_tls()"
        );
        *self.addrs.last().unwrap()
    }

    /// The self-signed certificate (servers built with `tls()`), to pin as a CA in clients.
    pub fn cert_path(&self) -> PathBuf {
        self.data.path().join("tls").join("cert.pem")
    }

    /// A user's home directory on disk.
    pub fn home(&self, user: &str) -> PathBuf {
        self.data.path().join("home").join(user)
    }

    /// `ftp://user:password@host:port` for a user the server was started with.
    pub fn url(&self, user: &str) -> String {
        let u = self
            .users
            .iter()
            .find(|u| u.name == user)
            .expect("unknown test user");
        format!("ftp://{}:{}@{}", u.name, u.password, self.addr())
    }

    /// Stops the server cleanly and starts a new one on the same data directory (new ports;
    /// `addrs` is updated), as an operator's restart would.
    pub fn restart(&mut self) {
        self.stop();
        let running = spawn(
            self.data.path(),
            &self.listen,
            &self.configure,
            self.tls,
            self.s3.as_ref(),
        );
        self.addrs = running.addrs;
        self.stop = Some(running.stop);
        self.thread = Some(running.thread);
    }

    /// Stops the server and waits for it (running transfers get the grace period).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
