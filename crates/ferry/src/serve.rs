//! `ferry serve`: resolve flags and ferry.toml into a server config, then run it until Ctrl-C
//! or SIGTERM. SIGHUP reloads users.toml (it is also reloaded whenever it changes); SIGUSR2
//! drains (listeners closed, sessions go on until they quit, then exit).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ferry_server::config::StorageBackend;
use ferry_server::pg::PgStore;
use ferry_server::proxy::{IpNet, ProxyProtocol, parse_trusted};
use ferry_server::storage::s3::{S3Bucket, S3Settings};
use ferry_server::tls::{CertSource, Tls};
use ferry_server::users::{self, TomlUsers, UserStore};
use ferry_server::{Listener, Operations, ServerConfig};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The address served when neither a flag nor ferry.toml names one.
const DEFAULT_LISTEN: &str = "127.0.0.1:2121";

/// Flags of `ferry serve`; each has a key of the same name (with `_`) in DATA/ferry.toml, but
/// --s3-X, which is key X of its [s3] table.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory: users.toml, ferry.toml and home/<user>/.
    #[arg(long, env = "FERRY_DATA", default_value = "ferry-data")]
    data: PathBuf,
    /// Address to serve FTP on; repeat for several (IPv4 and IPv6). Default 127.0.0.1:2121.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Passive data ports, e.g. 50000-50100 (default: any free port).
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    passive_ports: Option<RangeInclusive<u16>>,
    /// Address advertised in PASV replies instead of the local one (behind NAT).
    #[arg(long, value_name = "IP")]
    public_ip: Option<IpAddr>,
    /// Maximum sessions in total.
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Maximum sessions from one client address.
    #[arg(long, value_name = "N")]
    max_per_ip: Option<usize>,
    /// Seconds a session may stay silent between commands.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Seconds to wait for a data connection or for progress on one.
    #[arg(long, value_name = "SECS")]
    data_timeout: Option<u64>,
    /// Seconds running transfers get to finish on shutdown.
    #[arg(long, value_name = "SECS")]
    shutdown_grace: Option<u64>,
    /// Seconds a login verified with argon2id is accepted again without it (same name,
    /// password and stored hash; 0 = every login pays argon2id). Default 600.
    #[arg(long, value_name = "SECS")]
    login_cache_secs: Option<u64>,
    /// Send plain binary downloads with sendfile(2): no copy through the server, the least
    /// CPU on a real network; over loopback the default read+write copy is faster.
    #[arg(long)]
    sendfile: bool,
    /// Offer FTPS: AUTH TLS on every --listen address (RFC 4217).
    #[arg(long)]
    tls: bool,
    /// Refuse logins before AUTH TLS and data connections without PROT P (implies --tls).
    #[arg(long)]
    require_tls: bool,
    /// Also serve implicit FTPS on ADDR (usually port 990); repeatable (implies --tls).
    #[arg(long, value_name = "ADDR")]
    implicit_tls: Vec<SocketAddr>,
    /// PEM certificate chain [default: DATA/tls/cert.pem, generated self-signed when absent].
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept PROT P data connections that do not resume the control connection's TLS
    /// session (for old clients; weaker against data-connection theft).
    #[arg(long)]
    no_require_tls_reuse: bool,
    /// Behind a load balancer: every control connection must come from a --proxy-from
    /// address and start with a PROXY protocol v1 or v2 header naming the client.
    #[arg(long)]
    proxy_protocol: bool,
    /// A load balancer allowed to send PROXY headers (IP or IP/prefix); repeatable; implies
    /// --proxy-protocol.
    #[arg(long, value_name = "IP[/PREFIX]", value_parser = parse_trusted)]
    proxy_from: Vec<IpNet>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds a drain (SIGUSR2) waits for sessions to quit before shutting down. Default 900.
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<u64>,
    /// Append a line per file transfer to FILE, in the xferlog format of wu-ftpd and vsftpd.
    #[arg(long, value_name = "FILE")]
    xferlog: Option<PathBuf>,
    /// Keep accounts and quota usage in PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DB)
    /// instead of users.toml, so several nodes share them.
    #[arg(long, value_name = "URL", env = "FERRY_DATABASE_URL")]
    database_url: Option<String>,
    /// Where users' files live: `fs` (home directories, the default) or `s3` (a bucket; see
    /// the [s3] table of ferry.toml, whose keys the --s3-* flags set).
    #[arg(long, value_name = "fs|s3")]
    storage: Option<String>,
    #[command(flatten)]
    s3: S3Args,
}

/// The --s3-* flags of `ferry serve`: keys of ferry.toml's [s3] table.
#[derive(Debug, Args)]
struct S3Args {
    /// S3 API endpoint URL (MinIO, Ceph, ...); default: AWS in the region. Key: [s3] endpoint.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default us-east-1). Key: [s3] region.
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// S3 bucket holding every user's files. Key: [s3] bucket.
    #[arg(long, value_name = "NAME")]
    s3_bucket: Option<String>,
    /// Key folder holding the users' folders, e.g. `ferry/` (default: none). Key: [s3] prefix.
    #[arg(long, value_name = "PREFIX")]
    s3_prefix: Option<String>,
}

/// DATA/ferry.toml: the same settings as the flags; flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<Vec<SocketAddr>>,
    passive_ports: Option<String>,
    public_ip: Option<IpAddr>,
    max_sessions: Option<usize>,
    max_per_ip: Option<usize>,
    idle_timeout: Option<u64>,
    data_timeout: Option<u64>,
    shutdown_grace: Option<u64>,
    login_fail_delay_ms: Option<u64>,
    max_login_failures: Option<u32>,
    max_login_failures_per_ip: Option<u32>,
    login_block_secs: Option<u64>,
    login_cache_secs: Option<u64>,
    sendfile: Option<bool>,
    tls: Option<bool>,
    require_tls: Option<bool>,
    implicit_tls: Option<Vec<SocketAddr>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_tls_reuse: Option<bool>,
    proxy_protocol: Option<bool>,
    proxy_from: Option<Vec<String>>,
    metrics_listen: Option<SocketAddr>,
    drain_timeout: Option<u64>,
    xferlog: Option<PathBuf>,
    database_url: Option<String>,
    storage: Option<String>,
    s3: Option<S3Table>,
}

/// The [s3] table of ferry.toml. Credentials may be given here (keep the file private) or,
/// better, in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; they are never logged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Table {
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

/// Where the server listens, by kind.
#[derive(Debug)]
struct Addresses {
    /// Plain FTP (with AUTH TLS when TLS is on).
    plain: Vec<SocketAddr>,
    /// Implicit FTPS.
    implicit_tls: Vec<SocketAddr>,
    /// The Prometheus metrics endpoint.
    metrics: Option<SocketAddr>,
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or("expected LO-HI, e.g. 50000-50100")?;
    let lo: u16 = lo.trim().parse().map_err(|_| format!("bad port {lo:?}"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| format!("bad port {hi:?}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("empty or invalid range {lo}-{hi}"));
    }
    Ok(lo..=hi)
}

fn read_settings(data: &Path) -> anyhow::Result<FileSettings> {
    let path = data.join("ferry.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("invalid {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(FileSettings::default()),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The PostgreSQL user store DATA/ferry.toml names, for `ferry user`.
pub fn configured_database_url(data: &Path) -> anyhow::Result<Option<String>> {
    Ok(read_settings(data)?.database_url)
}

/// Where DATA/ferry.toml keeps users' files (local homes or S3), for `ferry user rescan`.
pub fn configured_storage(data: &Path) -> anyhow::Result<StorageBackend> {
    let settings = read_settings(data)?;
    storage_backend(
        None,
        S3Table::default(),
        settings.storage,
        settings.s3.unwrap_or_default(),
    )
}

/// Flags over ferry.toml over the embedded defaults.
fn resolve(args: ServeArgs, file: FileSettings) -> anyhow::Result<(Addresses, ServerConfig)> {
    let mut config = ServerConfig::new(args.data.clone());
    let listen = match (args.listen, file.listen) {
        (flags, _) if !flags.is_empty() => flags,
        (_, Some(addrs)) if !addrs.is_empty() => addrs,
        _ => vec![DEFAULT_LISTEN.parse()?],
    };
    config.passive_ports = match (args.passive_ports, file.passive_ports) {
        (Some(range), _) => Some(range),
        (None, Some(text)) => Some(parse_port_range(&text).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    config.public_ip = args.public_ip.or(file.public_ip);
    let secs = Duration::from_secs;
    if let Some(n) = args.max_sessions.or(file.max_sessions) {
        config.max_sessions = n;
    }
    if let Some(n) = args.max_per_ip.or(file.max_per_ip) {
        config.max_per_ip = n;
    }
    if let Some(n) = args.idle_timeout.or(file.idle_timeout) {
        config.idle_timeout = secs(n);
    }
    if let Some(n) = args.data_timeout.or(file.data_timeout) {
        config.data_timeout = secs(n);
    }
    if let Some(n) = args.shutdown_grace.or(file.shutdown_grace) {
        config.shutdown_grace = secs(n);
    }
    if let Some(ms) = file.login_fail_delay_ms {
        config.login_fail_delay = Duration::from_millis(ms);
    }
    if let Some(n) = file.max_login_failures {
        config.max_login_failures = n.max(1);
    }
    if let Some(n) = file.max_login_failures_per_ip {
        config.max_login_failures_per_ip = n.max(1);
    }
    if let Some(n) = file.login_block_secs {
        config.login_block = secs(n);
    }
    if let Some(n) = args.login_cache_secs.or(file.login_cache_secs) {
        config.login_cache = secs(n);
    }
    config.sendfile = args.sendfile || file.sendfile.unwrap_or(false);
    if let Some(n) = args.drain_timeout.or(file.drain_timeout) {
        config.drain_timeout = secs(n);
    }
    config.xferlog = args.xferlog.or(file.xferlog);
    config.proxy_protocol = resolve_proxy_protocol(
        args.proxy_protocol,
        args.proxy_from,
        file.proxy_protocol,
        file.proxy_from,
    )?;
    let implicit_tls = match (args.implicit_tls, file.implicit_tls) {
        (flags, _) if !flags.is_empty() => flags,
        (_, Some(addrs)) => addrs,
        _ => Vec::new(),
    };
    config.require_tls = args.require_tls || file.require_tls.unwrap_or(false);
    config.require_tls_reuse = !args.no_require_tls_reuse && file.require_tls_reuse.unwrap_or(true);
    let cert = match (args.tls_cert, args.tls_key, file.tls_cert, file.tls_key) {
        (Some(cert), Some(key), _, _) | (None, None, Some(cert), Some(key)) => Some(CertSource {
            cert,
            key,
            generate: false,
        }),
        (None, None, None, None) => None,
        _ => bail!("tls_cert and tls_key go together: give both or neither"),
    };
    config.storage = storage_backend(
        args.storage,
        S3Table {
            endpoint: args.s3.s3_endpoint,
            region: args.s3.s3_region,
            bucket: args.s3.s3_bucket,
            prefix: args.s3.s3_prefix,
            access_key_id: None,
            secret_access_key: None,
        },
        file.storage,
        file.s3.unwrap_or_default(),
    )?;
    let wants_tls = args.tls
        || file.tls.unwrap_or(false)
        || config.require_tls
        || !implicit_tls.is_empty()
        || cert.is_some();
    if wants_tls {
        let source = cert.unwrap_or_else(|| CertSource::generated_in(&config.data_dir));
        let tls = Tls::load(source).context("cannot set up TLS")?;
        config.tls = Some(Arc::new(tls));
    }
    Ok((
        Addresses {
            plain: listen,
            implicit_tls,
            metrics: args.metrics_listen.or(file.metrics_listen),
        },
        config,
    ))
}

/// The trusted proxies from the flags, else from ferry.toml; naming any turns the PROXY
/// protocol on, and turning it on without naming one is an error (nobody could connect).
fn resolve_proxy_protocol(
    flag: bool,
    flag_from: Vec<IpNet>,
    key: Option<bool>,
    key_from: Option<Vec<String>>,
) -> anyhow::Result<Option<Arc<ProxyProtocol>>> {
    let trusted = if flag_from.is_empty() {
        key_from
            .unwrap_or_default()
            .iter()
            .map(|text| parse_trusted(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| anyhow::anyhow!("invalid proxy_from in ferry.toml: {err}"))?
    } else {
        flag_from
    };
    let on = flag || key.unwrap_or(false) || !trusted.is_empty();
    match (on, trusted.is_empty()) {
        (false, _) => Ok(None),
        (true, true) => bail!(
            "proxy_protocol needs proxy_from: the load balancers allowed to send PROXY headers"
        ),
        (true, false) => Ok(Some(Arc::new(ProxyProtocol::new(trusted)))),
    }
}

/// The storage backend from flags over ferry.toml; S3 settings are merged key by key.
fn storage_backend(
    flag: Option<String>,
    flags: S3Table,
    key: Option<String>,
    table: S3Table,
) -> anyhow::Result<StorageBackend> {
    match flag.or(key).as_deref() {
        None | Some("fs") => Ok(StorageBackend::Fs),
        Some("s3") => {
            let settings = S3Settings {
                endpoint: flags.endpoint.or(table.endpoint),
                region: flags.region.or(table.region),
                bucket: flags
                    .bucket
                    .or(table.bucket)
                    .context("storage = \"s3\" needs a bucket: --s3-bucket or [s3] bucket")?,
                prefix: flags.prefix.or(table.prefix).unwrap_or_default(),
                access_key_id: table.access_key_id,
                secret_access_key: table.secret_access_key,
            };
            let bucket = S3Bucket::open(&settings).context("cannot set up S3 storage")?;
            info!(bucket = %settings.bucket, prefix = %settings.prefix, "storing files in S3");
            Ok(StorageBackend::S3(Arc::new(bucket)))
        }
        Some(other) => bail!("unknown storage {other:?}: use fs or s3"),
    }
}

/// A logged-in session holds two descriptors (its socket and its home directory) and a
/// third during a transfer, so --max-sessions 10,000 needs far more than the usual soft
/// limit of 1,024: raise the soft limit to the hard one, as a daemon started by hand (not
/// by systemd's LimitNOFILE) would otherwise refuse connections with EMFILE long before
/// the cap.
fn raise_open_files_limit(max_sessions: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return;
    };
    let wanted = hard.unwrap_or(u64::MAX);
    if soft >= wanted {
        return;
    }
    let mut raised = limit;
    raised.current = Some(wanted);
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(from = soft, to = wanted, "raised the open files limit"),
        Err(err) => {
            let needed = max_sessions.saturating_mul(3);
            if (soft as usize) < needed {
                tracing::warn!(%err, soft, needed, "cannot raise the open files limit; sessions beyond it will be refused");
            }
        }
    }
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    let mut settings = read_settings(&args.data)?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create data directory {}", args.data.display()))?;
    let database_url = args.database_url.clone().or(settings.database_url.take());
    let (listen, config) = resolve(args, settings)?;
    if let Some(tls) = &config.tls {
        println!("TLS certificate {}", tls.cert_path().display());
        println!("  SHA-256 fingerprint {}", tls.fingerprint());
    }
    raise_open_files_limit(config.max_sessions);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let users = runtime.block_on(open_users(&config, database_url.as_deref()))?;
    runtime.block_on(serve(listen, config, users))
}

/// Prints the password of an `admin` account a first start created.
fn announce_admin(created: Option<users::Password>, data_dir: &Path) {
    if let Some(password) = created {
        println!("Created user 'admin' with password: {}", password.expose());
        println!("This password is shown only once. Change it with:");
        println!("  ferry user passwd admin --data {}", data_dir.display());
    }
}

/// The accounts: users.toml, or PostgreSQL when a database URL is set; on a first start with
/// no accounts, `admin` is created and its password printed once.
async fn open_users(
    config: &ServerConfig,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<UserStore>> {
    let data_dir = &config.data_dir;
    let store = match database_url {
        Some(url) => {
            let db = PgStore::connect(url)
                .await
                .context("cannot open the user database")?;
            info!("accounts and quota usage in PostgreSQL");
            announce_admin(users::ensure_admin(&db, data_dir).await?, data_dir);
            UserStore::postgres(data_dir, Arc::new(db))?
        }
        None => {
            let directory = TomlUsers::new(data_dir)?;
            announce_admin(users::ensure_admin(&directory, data_dir).await?, data_dir);
            UserStore::open(data_dir)?
        }
    };
    Ok(Arc::new(store.with_login_cache(config.login_cache)))
}

async fn serve(
    listen: Addresses,
    config: ServerConfig,
    users: Arc<UserStore>,
) -> anyhow::Result<()> {
    // Signal handlers go in before the addresses are announced: a SIGTERM sent as soon as a
    // supervisor (or a test) sees the address must stop the server gracefully, not kill it.
    let shutdown = shutdown_signal()?;
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let status = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot watch SIGUSR1")?;
    let mut drain = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .context("cannot watch SIGUSR2")?;
    // A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process and
    // every session with it. With a handler installed the write fails with EFBIG instead,
    // and only that upload is refused (552). tokio keeps the handler for the process's life.
    let _file_size_limit =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
            .context("cannot watch SIGXFSZ")?;
    // Announced before the FTP addresses, so whoever waits for those knows both.
    let metrics = match listen.metrics {
        Some(addr) => {
            let socket = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            println!("ferry serving metrics on {}", socket.local_addr()?);
            Some(socket)
        }
        None => None,
    };
    let mut listeners = Vec::new();
    for (addr, implicit) in listen
        .plain
        .iter()
        .map(|a| (a, false))
        .chain(listen.implicit_tls.iter().map(|a| (a, true)))
    {
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = socket.local_addr()?;
        if implicit {
            println!("ferry serving FTPS (implicit TLS) on {local}");
            listeners.push(Listener::implicit_tls(socket));
        } else {
            println!("ferry serving FTP on {local}");
            listeners.push(Listener::plain(socket));
        }
    }
    let operations = Operations {
        metrics,
        drain: Some(Box::pin(async move {
            drain.recv().await;
            info!("SIGUSR2 received: draining");
        })),
    };
    tokio::spawn(status_on_sigusr1(status));
    tokio::spawn(reload_on_sighup(
        hangup,
        Arc::clone(&users),
        config.tls.clone(),
    ));
    ferry_server::run_with(listeners, config, users, operations, shutdown).await?;
    info!("stopped");
    Ok(())
}

/// Installs the Ctrl-C and SIGTERM handlers now and returns the future that waits for either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("Ctrl-C received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}

/// SIGUSR1 logs how many tasks are alive (one per session, transfer and listener, plus a
/// few), so an operator or a soak test can see that nothing leaks.
async fn status_on_sigusr1(mut usr1: tokio::signal::unix::Signal) {
    while usr1.recv().await.is_some() {
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        info!(tasks, "status");
    }
}

/// SIGHUP re-reads users.toml and the TLS certificate; running sessions go on.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    users: Arc<UserStore>,
    tls: Option<Arc<Tls>>,
) {
    while hup.recv().await.is_some() {
        match users.reload() {
            Ok(()) => info!("SIGHUP: users.toml reloaded"),
            Err(err) => warn!(
                err = &err as &dyn std::error::Error,
                "SIGHUP: users.toml not reloaded"
            ),
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => {
                    info!(fingerprint = %tls.fingerprint(), "SIGHUP: TLS certificate reloaded")
                }
                Err(err) => {
                    warn!(%err, "SIGHUP: TLS certificate not reloaded, keeping the old one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_reject_nonsense() {
        assert_eq!(parse_port_range("50000-50100"), Ok(50000..=50100));
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("70000-70001").is_err());
        assert!(parse_port_range("100").is_err());
    }

    #[test]
    fn unknown_keys_in_ferry_toml_are_errors() {
        assert!(toml::from_str::<FileSettings>("listn = []").is_err());
        let ok: FileSettings =
            toml::from_str("passive_ports = \"1024-2048\"\nmax_per_ip = 3").unwrap();
        assert_eq!(ok.max_per_ip, Some(3));
    }

    #[test]
    fn proxy_from_turns_the_proxy_protocol_on_and_is_required_by_it() {
        let net = |s: &str| parse_trusted(s).unwrap();
        let on = resolve_proxy_protocol(false, vec![net("10.0.0.1")], None, None).unwrap();
        assert!(on.unwrap().trusts("10.0.0.1".parse().unwrap()));
        let from_file =
            resolve_proxy_protocol(false, vec![], Some(true), Some(vec!["10.0.0.0/8".into()]));
        assert!(
            from_file
                .unwrap()
                .unwrap()
                .trusts("10.9.9.9".parse().unwrap())
        );
        assert!(resolve_proxy_protocol(true, vec![], None, None).is_err());
        assert!(resolve_proxy_protocol(false, vec![], Some(true), None).is_err());
        assert!(resolve_proxy_protocol(false, vec![], None, Some(vec!["x".into()])).is_err());
        assert!(
            resolve_proxy_protocol(false, vec![], None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn s3_storage_comes_from_the_s3_table_and_flags_win_key_by_key() {
        let file: FileSettings = toml::from_str(
            "storage = \"s3\"\n[s3]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"b\"\nprefix = \"p/\"",
        )
        .unwrap();
        assert_eq!(file.storage.as_deref(), Some("s3"));
        let table = file.s3.unwrap();
        assert_eq!(table.bucket.as_deref(), Some("b"));
        let flags = S3Table {
            bucket: Some("flag-bucket".into()),
            ..S3Table::default()
        };
        let backend = storage_backend(None, flags, file.storage, table).unwrap();
        let StorageBackend::S3(bucket) = backend else {
            panic!("expected S3 storage");
        };
        assert!(format!("{bucket:?}").contains("flag-bucket"));
        assert!(toml::from_str::<FileSettings>("[s3]\nbuckit = \"x\"").is_err());
    }

    #[test]
    fn s3_storage_without_a_bucket_or_an_unknown_storage_is_an_error() {
        let none = || S3Table::default();
        assert!(storage_backend(Some("s3".into()), none(), None, none()).is_err());
        assert!(storage_backend(Some("ftp".into()), none(), None, none()).is_err());
        assert!(matches!(
            storage_backend(None, none(), None, none()),
            Ok(StorageBackend::Fs)
        ));
    }
}
