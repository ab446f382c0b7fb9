//! Server settings after flags and ferry.toml have been merged by the binary.

use std::io;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::ProxyProtocol;
use crate::storage::Storage;
use crate::storage::fs::{FsStorage, OpenHomes};
use crate::storage::s3::S3Bucket;
use crate::tls::Tls;

/// How long a verified login is remembered by default (see `login_cache`).
pub const DEFAULT_LOGIN_CACHE: Duration = Duration::from_secs(600);

/// Everything a running server needs to know; built by the binary, shared read-only.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds users.toml and the default home directories.
    pub data_dir: PathBuf,
    /// Ports for PASV/EPSV listeners; `None` lets the OS choose (fine without a firewall).
    pub passive_ports: Option<RangeInclusive<u16>>,
    /// The address PASV advertises instead of the control connection's local one (behind NAT).
    pub public_ip: Option<IpAddr>,
    /// Sessions beyond this get 421 and are closed.
    pub max_sessions: usize,
    /// Sessions from one client address beyond this get 421 and are closed.
    pub max_per_ip: usize,
    /// A session silent this long between commands is closed with 421.
    pub idle_timeout: Duration,
    /// Waiting for a data connection, or for progress on one, gives up after this.
    pub data_timeout: Duration,
    /// Pause after each failed login, to slow password guessing.
    pub login_fail_delay: Duration,
    /// Failed logins on one connection before it is closed with 421.
    pub max_login_failures: u32,
    /// Failed logins from one client address (IPv6: one /64), over all its connections,
    /// after which its logins are refused until `login_block` has passed since the first.
    pub max_login_failures_per_ip: u32,
    /// The window `max_login_failures_per_ip` counts in.
    pub login_block: Duration,
    /// Plain binary downloads go out with sendfile(2) (no copy through the server, least CPU)
    /// instead of read(2)+write(2) through a 256 KiB buffer. Off by default: over loopback
    /// on the benchmark machine the copy moved 1.45-1.62 GB/s against 1.16-1.32 for sendfile
    /// (bench/RESULTS.md); on a real network card sendfile saves the copy.
    pub sendfile: bool,
    /// A login verified with argon2id is accepted again without it for this long (same
    /// name, password and stored hash); zero: every login pays argon2id.
    pub login_cache: Duration,
    /// On shutdown, running transfers get this long to finish.
    pub shutdown_grace: Duration,
    /// FTPS: AUTH TLS on plain listeners and implicit-TLS listeners; `None` is plain FTP only.
    pub tls: Option<Arc<Tls>>,
    /// Refuse logins before AUTH TLS and data connections without PROT P.
    pub require_tls: bool,
    /// A PROT P data connection must resume the control connection's TLS session (vsftpd's
    /// require_ssl_reuse), so a third party cannot take over the data connection.
    pub require_tls_reuse: bool,
    /// Behind a load balancer: control connections come from these proxies with a PROXY
    /// protocol header naming the client; `None` takes peers as they are.
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
    /// Draining (SIGUSR2) waits this long for sessions to end before shutting down.
    pub drain_timeout: Duration,
    /// Append one xferlog line per file transfer to this file.
    pub xferlog: Option<PathBuf>,
    /// Where users' files live: their home directories (default) or an S3 bucket.
    pub storage: StorageBackend,
}

/// The backend every user's files are kept in.
#[derive(Debug, Clone, Default)]
pub enum StorageBackend {
    /// Local disk: each user's home directory.
    #[default]
    Fs,
    /// S3-compatible object storage: `<prefix><user>/` in one bucket, whatever the home says.
    S3(Arc<S3Bucket>),
}

impl StorageBackend {
    /// A logged-in user's storage (blocking: opens the home directory).
    pub fn open(&self, user: &str, home: &Path, homes: &OpenHomes) -> io::Result<Arc<dyn Storage>> {
        Ok(match self {
            StorageBackend::Fs => Arc::new(FsStorage::open_shared(home, homes)?),
            StorageBackend::S3(bucket) => Arc::new(bucket.storage_for(user)),
        })
    }
}

impl ServerConfig {
    /// The embedded defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            passive_ports: None,
            public_ip: None,
            max_sessions: 10_000,
            max_per_ip: 200,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(60),
            login_fail_delay: Duration::from_secs(1),
            max_login_failures: 3,
            max_login_failures_per_ip: 10,
            login_block: Duration::from_secs(60),
            login_cache: DEFAULT_LOGIN_CACHE,
            sendfile: false,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            require_tls: false,
            require_tls_reuse: true,
            proxy_protocol: None,
            drain_timeout: Duration::from_secs(900),
            xferlog: None,
            storage: StorageBackend::Fs,
        }
    }
}
