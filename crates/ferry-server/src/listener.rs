//! Accept loops, session caps, PROXY protocol headers, draining and graceful shutdown. The
//! caller binds the listeners (port 0 in tests) and decides what stops the server; `run`
//! returns once sessions have drained or the grace period is over.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::data::canonical;
use crate::metrics::Metrics;
use crate::password_checks::PasswordChecks;
use crate::proxy::{HeaderError, Proxied, ProxyProtocol, read_header};
use crate::quota::QuotaRegistry;
use crate::session::Session;
use crate::storage::fs::OpenHomes;
use crate::throttle::LoginThrottle;
use crate::tls::MaybeTls;
use crate::users::UserStore;
use crate::xferlog::Xferlog;

/// What every session of one server shares; read-only except for the session counts.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: ServerConfig,
    /// Accounts: users.toml (reloaded when it changes) or PostgreSQL.
    pub users: Arc<UserStore>,
    /// Quota usage of every user who logged in, shared by their sessions.
    pub quotas: QuotaRegistry,
    /// Failed logins per client address, across connections.
    pub login_throttle: LoginThrottle,
    /// The threads argon2id checks run on: cores-1 of them. Each check takes its memory cost
    /// (19 MiB by default) and a core for tens of milliseconds: unbounded, a burst of logins
    /// (or of probes for unknown names) took gigabytes that the allocator then kept, and
    /// starved the sessions already logged in.
    pub password_checks: PasswordChecks,
    /// Home directories open for the sessions logged in, one descriptor each.
    pub homes: OpenHomes,
    /// Counters for the metrics endpoint; kept even when nobody scrapes them.
    pub metrics: Arc<Metrics>,
    /// The transfer log, when configured.
    pub xferlog: Option<Xferlog>,
    /// Open sessions, in total and per client address, for the caps.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A session's place under the caps; released when dropped.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.config.max_sessions || from_ip >= self.config.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        self.metrics.session_opened();
        Some(Slot {
            shared: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.total = counts.total.saturating_sub(1);
        self.shared.metrics.session_closed();
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A bound socket and how its connections begin.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// Implicit FTPS (usually port 990): TLS from the first byte, before the greeting.
    pub implicit_tls: bool,
}

impl Listener {
    /// Plain FTP, with AUTH TLS available when TLS is configured.
    pub fn plain(socket: TcpListener) -> Self {
        Listener {
            socket,
            implicit_tls: false,
        }
    }

    /// Implicit FTPS.
    pub fn implicit_tls(socket: TcpListener) -> Self {
        Listener {
            socket,
            implicit_tls: true,
        }
    }
}

/// What a server runs besides FTP; everything off by default.
#[derive(Default)]
pub struct Operations {
    /// Serve the Prometheus metrics (`GET /metrics`) on this socket.
    pub metrics: Option<TcpListener>,
    /// When this completes the server drains: it closes its listeners (so a load balancer's
    /// health check takes it out of rotation), lets sessions go on until they quit or the
    /// drain timeout passes, then shuts down as on `shutdown`.
    pub drain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations")
            .field("metrics", &self.metrics)
            .field("drain", &self.drain.is_some())
            .finish()
    }
}

/// Serves FTP on `listeners` until `shutdown` completes, then stops accepting, lets running
/// sessions finish their transfers for up to the configured grace period, and returns.
pub async fn run(
    listeners: Vec<Listener>,
    config: ServerConfig,
    users: Arc<UserStore>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(listeners, config, users, Operations::default(), shutdown).await
}

/// [`run`], with a metrics endpoint and a drain trigger.
pub async fn run_with(
    listeners: Vec<Listener>,
    config: ServerConfig,
    users: Arc<UserStore>,
    operations: Operations,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let grace = config.shutdown_grace;
    let drain_timeout = config.drain_timeout;
    let quotas = match users.usage_ledger() {
        Some(ledger) => QuotaRegistry::shared(&config.data_dir, ledger),
        None => QuotaRegistry::open(&config.data_dir)?,
    };
    let login_throttle = LoginThrottle::new(config.max_login_failures_per_ip, config.login_block);
    let xferlog = config.xferlog.as_deref().map(Xferlog::open).transpose()?;
    // One core is left for the sessions' I/O.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Arc::new(Shared {
        config,
        users,
        quotas,
        login_throttle,
        password_checks: PasswordChecks::new(cores.saturating_sub(1))?,
        homes: OpenHomes::default(),
        metrics: Arc::new(Metrics::new()),
        xferlog,
        counts: Mutex::default(),
    });
    let token = CancellationToken::new();
    // Cancelled first when draining; the listeners close with their accept loops.
    let accepting = token.child_token();
    let tracker = TaskTracker::new();
    for listener in listeners {
        if listener.implicit_tls && shared.config.tls.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "implicit FTPS needs TLS configured",
            ));
        }
        let kind = if listener.implicit_tls {
            "ftps (implicit TLS)"
        } else {
            "ftp"
        };
        let proxy_protocol = shared.config.proxy_protocol.is_some();
        info!(addr = %listener.socket.local_addr()?, kind, proxy_protocol, "listening");
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            accepting.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    let metrics_stop = CancellationToken::new();
    if let Some(socket) = operations.metrics {
        info!(addr = %socket.local_addr()?, "serving metrics");
        tokio::spawn(crate::metrics::serve(
            socket,
            Arc::clone(&shared.metrics),
            metrics_stop.clone(),
        ));
    }
    let drain = operations
        .drain
        .unwrap_or_else(|| Box::pin(std::future::pending()));
    tokio::pin!(shutdown);
    let draining = tokio::select! {
        _ = &mut shutdown => false,
        _ = drain => true,
    };
    if draining {
        info!(
            drain_timeout_secs = drain_timeout.as_secs(),
            "draining: listeners closed, sessions go on until they quit"
        );
        shared.metrics.set_draining(true);
        accepting.cancel();
        tracker.close();
        tokio::select! {
            _ = tracker.wait() => info!("drained: the last session ended"),
            _ = tokio::time::sleep(drain_timeout) => warn!("drain timeout over"),
            _ = &mut shutdown => info!("shutdown requested while draining"),
        }
    }
    info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, letting transfers finish"
    );
    token.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("grace period over, closing the remaining sessions");
    } else {
        // Every session ended, so every upload settled: usage on disk is exact.
        shared.quotas.close();
    }
    metrics_stop.cancel();
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    accepting: CancellationToken,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = accepting.cancelled() => return,
            accepted = listener.socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
                let implicit_tls = listener.implicit_tls;
                match &shared.config.proxy_protocol {
                    None => admit(stream, peer, implicit_tls, &shared, &token, &tracker),
                    Some(proxy) if proxy.trusts(peer.ip()) => {
                        let proxied = proxied(
                            stream,
                            peer,
                            implicit_tls,
                            Arc::clone(proxy),
                            Arc::clone(&shared),
                            token.clone(),
                            tracker.clone(),
                        );
                        tracker.spawn(proxied);
                    }
                    Some(_) => {
                        warn!(%peer, "refused: not a trusted proxy, and the PROXY protocol is on");
                        let _ = stream.try_write(b"421 Connect through the load balancer\r\n");
                    }
                }
            }
            // Out of file descriptors and similar: back off instead of spinning.
            Err(err) => {
                warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Starts a session for `peer` if the caps allow, else refuses it.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    shared: &Arc<Shared>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    match shared.try_acquire(peer.ip()) {
        Some(slot) => {
            let session = serve(
                stream,
                peer,
                implicit_tls,
                Arc::clone(shared),
                token.clone(),
            );
            tracker.spawn(async move {
                session.await;
                drop(slot);
            });
        }
        None => {
            warn!(%peer, "session limit reached, refusing");
            refuse(stream);
        }
    }
}

/// Reads a trusted proxy's header, then admits the client it names: the caps, the login
/// throttle, the logs and the data connection checks all see the real client.
async fn proxied(
    mut stream: TcpStream,
    proxy_addr: SocketAddr,
    implicit_tls: bool,
    proxy: Arc<ProxyProtocol>,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let header = tokio::select! {
        _ = token.cancelled() => return,
        header = read_header(&mut stream, proxy.header_timeout) => header,
    };
    match header {
        Ok(Proxied::Client(client)) => {
            let client = SocketAddr::new(canonical(client.ip()), client.port());
            debug!(proxy = %proxy_addr, %client, "PROXY header");
            admit(stream, client, implicit_tls, &shared, &token, &tracker);
        }
        // The load balancer's health check: it only wanted to see the port open.
        Ok(Proxied::Local) | Err(HeaderError::Closed) => {
            debug!(proxy = %proxy_addr, "health check")
        }
        Err(err) => warn!(proxy = %proxy_addr, %err, "refused: bad PROXY header"),
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        warn!(%peer, %err, "set_nodelay failed");
    }
    // Clients send ABOR after a Telnet Synch whose DM byte is TCP urgent data (RFC 959
    // 4.1.3, lftp does). Out of line, the kernel splits reads at the urgent mark and the
    // rest of the line can sit unnoticed until the next command arrives; inline, the DM is an
    // ordinary byte that the codec strips.
    if let Err(err) = socket2::SockRef::from(&stream).set_out_of_band_inline(true) {
        warn!(%peer, %err, "SO_OOBINLINE failed");
    }
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(err) => return warn!(%peer, %err, "could not start a session"),
    };
    let acceptor = shared.config.tls.as_ref().map(|tls| tls.session_acceptor());
    let control = match (&acceptor, implicit_tls) {
        (Some(acceptor), true) => {
            let wait = shared.config.idle_timeout;
            // Boxed: inline, the handshake's state would size every session's task.
            match tokio::time::timeout(wait, Box::pin(acceptor.accept(stream))).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => return warn!(%peer, %err, "implicit TLS handshake failed"),
                Err(_) => return warn!(%peer, "implicit TLS handshake timed out"),
            }
        }
        _ => MaybeTls::Control(stream),
    };
    Session::new(control, local, peer, shared, token, acceptor, implicit_tls)
        .run()
        .await;
}

/// Says 421 and closes, without a task or a wait: under a connection flood, refused
/// connections must not pile up. A fresh socket's send buffer takes the line at once.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(b"421 Too many connections, try again later\r\n");
}
