//! `ferry serve`: resolve flags and ferry.toml into a server config, then run it until Ctrl-C
//! or SIGTERM. SIGHUP reloads users.toml (it is also reloaded whenever it changes).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferry_server::ServerConfig;
use ferry_server::users::{self, UserStore};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The address served when neither a flag nor ferry.toml names one.
const DEFAULT_LISTEN: &str = "127.0.0.1:2121";

/// Flags of `ferry serve`; each has a key of the same name (with `_`) in DATA/ferry.toml.
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

/// Flags over ferry.toml over the embedded defaults.
fn resolve(args: ServeArgs, file: FileSettings) -> anyhow::Result<(Vec<SocketAddr>, ServerConfig)> {
    let mut config = ServerConfig::new(args.data);
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
    Ok((listen, config))
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create data directory {}", args.data.display()))?;
    let settings = read_settings(&args.data)?;
    let (listen, config) = resolve(args, settings)?;
    if let Some(password) = users::ensure_admin(&config.data_dir)? {
        println!("Created user 'admin' with password: {}", password.expose());
        println!("This password is shown only once. Change it with:");
        println!(
            "  ferry user passwd admin --data {}",
            config.data_dir.display()
        );
    }
    let users = Arc::new(UserStore::open(&config.data_dir)?);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(listen, config, users))
}

async fn serve(
    listen: Vec<SocketAddr>,
    config: ServerConfig,
    users: Arc<UserStore>,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("ferry serving FTP on {}", listener.local_addr()?);
        listeners.push(listener);
    }
    tokio::spawn(reload_on_sighup(Arc::clone(&users)));
    ferry_server::run(listeners, config, users, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!(%err, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}

async fn reload_on_sighup(users: Arc<UserStore>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match users.reload() {
            Ok(()) => info!("SIGHUP: users.toml reloaded"),
            Err(err) => warn!(
                err = &err as &dyn std::error::Error,
                "SIGHUP: users.toml not reloaded"
            ),
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
}
