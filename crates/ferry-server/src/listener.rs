//! Accept loops, session caps and graceful shutdown. The caller binds the listeners (port 0
//! in tests) and decides what stops the server; `run` returns once sessions have drained or
//! the grace period is over.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::data::canonical;
use crate::password_checks::PasswordChecks;
use crate::quota::QuotaRegistry;
use crate::session::Session;
use crate::storage::fs::OpenHomes;
use crate::throttle::LoginThrottle;
use crate::tls::MaybeTls;
use crate::users::UserStore;

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

/// Serves FTP on `listeners` until `shutdown` completes, then stops accepting, lets running
/// sessions finish their transfers for up to the configured grace period, and returns.
pub async fn run(
    listeners: Vec<Listener>,
    config: ServerConfig,
    users: Arc<UserStore>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let grace = config.shutdown_grace;
    let quotas = match users.usage_ledger() {
        Some(ledger) => QuotaRegistry::shared(&config.data_dir, ledger),
        None => QuotaRegistry::open(&config.data_dir)?,
    };
    let login_throttle = LoginThrottle::new(config.max_login_failures_per_ip, config.login_block);
    // One core is left for the sessions' I/O.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Arc::new(Shared {
        config,
        users,
        quotas,
        login_throttle,
        password_checks: PasswordChecks::new(cores.saturating_sub(1))?,
        homes: OpenHomes::default(),
        counts: Mutex::default(),
    });
    let token = CancellationToken::new();
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
        info!(addr = %listener.socket.local_addr()?, kind, "listening");
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            token.clone(),
            tracker.clone(),
        ));
    }
    shutdown.await;
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
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
                match shared.try_acquire(peer.ip()) {
                    Some(slot) => {
                        let session = serve(
                            stream,
                            peer,
                            listener.implicit_tls,
                            Arc::clone(&shared),
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
            // Out of file descriptors and similar: back off instead of spinning.
            Err(err) => {
                warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
