//! One control connection: a task that owns all of its state (no shared locks), reads command
//! lines, and answers each with a reply. Handlers live in `commands/`, grouped by topic.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use ferry_proto::{Command, ControlCodec, HashAlgorithm, LineError, Reply, TransferType};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::data::DataChannel;
use crate::listener::Shared;
use crate::listing::Facts;
use crate::quota::{UserQuota, quota_message};
use crate::storage::{Storage, StorageError, VirtualPath, resolve};
use crate::tls::{MaybeTls, SessionTls};
use crate::users::Account;

/// Commands that may wait for a running transfer to end (pipelining); beyond this the
/// control connection is not read until the transfer is over.
const MAX_QUEUED_LINES: usize = 32;

/// What the dispatcher does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next command.
    Continue,
    /// Close the connection (QUIT, too many failed logins).
    Close,
}

/// Where the login state machine stands.
#[derive(Debug)]
pub(crate) enum Login {
    /// Waiting for USER.
    AwaitingUser,
    /// USER given, waiting for PASS.
    AwaitingPass(String),
    /// Authenticated: the account and its confined file space.
    LoggedIn(LoggedIn),
}

/// A logged-in user's identity and storage.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    /// Who this is (name for logs, read-only flag for permission checks).
    pub account: Account,
    /// The user's home, confined, with quota accounting.
    pub storage: Arc<dyn Storage>,
    /// The user's quota state, for SITE QUOTA.
    pub quota: Arc<UserQuota>,
}

/// How a transfer that ran alongside the control connection ended.
#[derive(Debug)]
pub(crate) enum Transfer<T> {
    /// It ran to completion (successfully or not).
    Finished(T),
    /// The client sent ABOR.
    Aborted,
    /// The control connection closed or broke.
    ControlLost,
}

/// Initial size of the control connection's read and write buffers: a command line or a
/// reply rarely needs more, and they grow when one does. (tokio-util's default is 8 KiB each,
/// half of the memory an idle session may use.)
const CONTROL_BUFFER: usize = 256;

/// Control buffers larger than this are replaced by fresh small ones once they are empty.
const CONTROL_BUFFER_KEPT: usize = 4096;

/// One client's session.
#[derive(Debug)]
pub(crate) struct Session {
    /// Command lines in, replies out.
    pub control: Framed<MaybeTls, ControlCodec>,
    /// This session's TLS acceptor, with a session store shared only with its data
    /// connections; `None` when the server has no TLS.
    pub tls: Option<SessionTls>,
    /// PBSZ was sent (RFC 4217 wants it before PROT).
    pub pbsz: bool,
    /// PROT P: data connections are TLS.
    pub protect_data: bool,
    /// Server-wide settings and the account store.
    pub shared: Arc<Shared>,
    /// The client's address: logs, PORT/EPRT and passive-connection checks.
    pub peer: SocketAddr,
    /// Our address on this connection: what PASV advertises and where data listeners bind.
    pub local: SocketAddr,
    /// Fires on server shutdown; an idle session then says 421 and closes.
    pub shutdown: CancellationToken,
    /// Login state machine.
    pub login: Login,
    /// Current directory (CWD).
    pub cwd: VirtualPath,
    /// TYPE A or I.
    pub transfer_type: TransferType,
    /// REST offset, consumed by the next RETR or STOR.
    pub rest: Option<u64>,
    /// RNFR path; only valid for the command right after it.
    pub rename_from: Option<VirtualPath>,
    /// The prepared data connection (PASV/EPSV/PORT/EPRT), consumed by the next transfer.
    pub data: Option<DataChannel>,
    /// MLST/MLSD facts chosen with OPTS MLST.
    pub mlst_facts: Facts,
    /// The algorithm HASH uses, chosen with OPTS HASH.
    pub hash_algorithm: HashAlgorithm,
    /// The byte range (start, end) the next HASH covers, set by RANG.
    pub hash_range: Option<(u64, u64)>,
    /// EPSV ALL was sent: PORT, EPRT and PASV are refused from now on (RFC 2428).
    pub epsv_all: bool,
    /// Failed PASS attempts on this connection.
    pub failed_logins: u32,
    /// Lines that arrived during a transfer, run after it (pipelining).
    pub queued: VecDeque<String>,
}

/// What waiting for the next line produced.
enum Next {
    Line(String),
    Closed,
    TooLong,
    Idle,
    Shutdown,
}

impl Session {
    /// A new session on an accepted connection (already TLS for implicit FTPS, which also
    /// starts with PROT P as clients of port 990 expect).
    pub fn new(
        stream: MaybeTls,
        local: SocketAddr,
        peer: SocketAddr,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        tls: Option<SessionTls>,
        implicit_tls: bool,
    ) -> Self {
        Session {
            control: Framed::with_capacity(stream, ControlCodec::default(), CONTROL_BUFFER),
            tls,
            pbsz: implicit_tls,
            protect_data: implicit_tls,
            shared,
            peer,
            local,
            shutdown,
            login: Login::AwaitingUser,
            cwd: VirtualPath::root(),
            transfer_type: TransferType::Image,
            rest: None,
            rename_from: None,
            data: None,
            mlst_facts: Facts::default(),
            hash_algorithm: HashAlgorithm::Sha256,
            hash_range: None,
            epsv_all: false,
            failed_logins: 0,
            queued: VecDeque::new(),
        }
    }

    /// Serves the connection until QUIT, EOF, an error, idle timeout or shutdown.
    pub async fn run(mut self) {
        if let Err(err) = self.serve().await {
            debug!(peer = %self.peer, %err, "session ended");
        }
        info!(peer = %self.peer, user = self.user_name(), "disconnected");
    }

    async fn serve(&mut self) -> io::Result<()> {
        self.reply(220, "ferry FTP server ready").await?;
        loop {
            let line = match self.next_line().await {
                Next::Line(line) => line,
                Next::Closed => return Ok(()),
                Next::TooLong => {
                    return self
                        .reply(500, "Command line too long, closing connection")
                        .await;
                }
                Next::Idle => return self.reply(421, "Idle timeout, closing connection").await,
                Next::Shutdown => return self.reply(421, "Server shutting down").await,
            };
            // Boxed: the largest command's state lives on the heap only while it runs, not in
            // every idle session's task.
            if Box::pin(self.dispatch(&line)).await? == Flow::Close {
                return Ok(());
            }
            self.trim_buffers();
        }
    }

    /// Gives back control buffers that a long line or a big reply (STAT of a directory) grew,
    /// so that an idle session holds a few hundred bytes rather than the largest it has seen.
    fn trim_buffers(&mut self) {
        let read = self.control.read_buffer_mut();
        if read.is_empty() && read.capacity() > CONTROL_BUFFER_KEPT {
            *read = BytesMut::with_capacity(CONTROL_BUFFER);
        }
        // Every reply has been sent: an idle session keeps no write buffer at all (the next
        // reply allocates the few bytes it needs).
        let write = self.control.write_buffer_mut();
        if write.is_empty() {
            *write = BytesMut::new();
        }
    }

    async fn next_line(&mut self) -> Next {
        if let Some(line) = self.queued.pop_front() {
            return Next::Line(line);
        }
        let idle = self.shared.config.idle_timeout;
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Next::Shutdown,
            next = tokio::time::timeout(idle, self.control.next()) => match next {
                Err(_) => Next::Idle,
                Ok(None) | Ok(Some(Err(LineError::Io(_)))) => Next::Closed,
                Ok(Some(Err(LineError::TooLong { .. }))) => Next::TooLong,
                Ok(Some(Ok(line))) => Next::Line(line),
            },
        }
    }

    async fn dispatch(&mut self, line: &str) -> io::Result<Flow> {
        // The codec turned bytes that are not UTF-8 into U+FFFD: two different names would
        // meet as one (and overwrite each other), so such lines are refused (RFC 2640 wants
        // UTF-8 paths anyway).
        if line.contains(char::REPLACEMENT_CHARACTER) {
            self.reply(501, "Command is not valid UTF-8").await?;
            return Ok(Flow::Continue);
        }
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(err) => {
                self.reply(err.reply_code(), err.to_string()).await?;
                return Ok(Flow::Continue);
            }
        };
        debug!(peer = %self.peer, verb = cmd.verb(), "command");
        if !self.is_logged_in() && !allowed_before_login(&cmd) {
            self.reply(530, "Please login with USER and PASS").await?;
            return Ok(Flow::Continue);
        }
        let rename_from = self.rename_from.take();
        crate::commands::run(self, cmd, rename_from).await
    }

    /// Sends a one-line reply.
    pub async fn reply(&mut self, code: u16, text: impl Into<String>) -> io::Result<()> {
        self.send(Reply::new(code, text)).await
    }

    /// Sends any reply.
    /// A client that stops reading replies cannot hold the session: the write gives up after
    /// the idle timeout and the session ends.
    pub async fn send(&mut self, reply: Reply) -> io::Result<()> {
        let wait = self.shared.config.idle_timeout;
        self.shared.metrics.reply(reply.code);
        match tokio::time::timeout(wait, self.control.send(reply)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading replies",
            )),
        }
    }

    /// Answers a storage failure with its reply code; the one place that mapping happens.
    pub async fn storage_error(&mut self, err: StorageError) -> io::Result<()> {
        if let StorageError::Io(io_err) = &err {
            tracing::error!(peer = %self.peer, user = self.user_name(), err = %io_err, "storage error");
        }
        let text = match (&err, self.quota()) {
            // Said after the refused upload was cleaned up, so "left" is what the user has.
            (StorageError::Quota(exceeded), Some(quota)) => {
                self.shared.metrics.quota_rejected();
                tracing::warn!(peer = %self.peer, user = self.user_name(), %exceeded, "quota exceeded");
                let (used, limits) = quota.report();
                quota_message(used, limits)
            }
            _ => err.to_string(),
        };
        self.reply(err.reply_code(), text).await
    }

    /// TLS is required of this session: by the server, or by the logged-in account.
    pub fn tls_required(&self) -> bool {
        self.shared.config.require_tls
            || matches!(&self.login, Login::LoggedIn(l) if l.account.require_tls)
    }

    /// True once the control connection is TLS (AUTH TLS or implicit FTPS).
    pub fn control_is_tls(&self) -> bool {
        self.control.get_ref().is_tls()
    }

    /// True after a successful PASS.
    pub fn is_logged_in(&self) -> bool {
        matches!(self.login, Login::LoggedIn(_))
    }

    /// The logged-in user's name, or "-" for logs before login.
    pub fn user_name(&self) -> &str {
        match &self.login {
            Login::LoggedIn(l) => &l.account.name,
            _ => "-",
        }
    }

    /// The logged-in user's storage. Callers run after the login gate in `dispatch`.
    pub fn storage(&self) -> Option<Arc<dyn Storage>> {
        match &self.login {
            Login::LoggedIn(l) => Some(Arc::clone(&l.storage)),
            _ => None,
        }
    }

    /// The logged-in user's quota state.
    pub fn quota(&self) -> Option<Arc<UserQuota>> {
        match &self.login {
            Login::LoggedIn(l) => Some(Arc::clone(&l.quota)),
            _ => None,
        }
    }

    /// True when the account may change files.
    pub fn writable(&self) -> bool {
        matches!(&self.login, Login::LoggedIn(l) if !l.account.read_only)
    }

    /// Resolves a client path against the current directory.
    pub fn resolve(&self, arg: &str) -> VirtualPath {
        resolve(&self.cwd, arg)
    }

    /// Runs a transfer while still reading the control connection, so ABOR can stop it and
    /// STAT can report on it; other commands wait until the transfer is over. `start` gets a
    /// token that is cancelled on ABOR or when the control connection is lost; the transfer
    /// then gets up to the data timeout to clean up (an upload settles its file and quota)
    /// before it is dropped.
    pub async fn run_transfer<T, F>(
        &mut self,
        start: impl FnOnce(CancellationToken) -> F,
    ) -> io::Result<Transfer<T>>
    where
        F: Future<Output = T>,
    {
        let cancel = CancellationToken::new();
        let transfer = start(cancel.clone());
        tokio::pin!(transfer);
        let stopped = loop {
            // With the queue full the control connection is not read: TCP flow control then
            // holds the client back instead of our memory.
            let may_read = self.queued.len() < MAX_QUEUED_LINES;
            tokio::select! {
                result = &mut transfer => return Ok(Transfer::Finished(result)),
                line = self.control.next(), if may_read => match line {
                    Some(Ok(line)) => match Command::parse(&line) {
                        Ok(Command::Abor) => break Transfer::Aborted,
                        Ok(Command::Stat(None)) => {
                            self.reply(213, "Status: transfer in progress").await?;
                        }
                        _ => self.queued.push_back(line),
                    },
                    Some(Err(LineError::TooLong { .. })) => {
                        self.reply(500, "Command line too long, closing connection").await?;
                        break Transfer::ControlLost;
                    }
                    Some(Err(LineError::Io(_))) | None => break Transfer::ControlLost,
                },
            }
        };
        cancel.cancel();
        let _ = tokio::time::timeout(self.shared.config.data_timeout, transfer).await;
        Ok(stopped)
    }
}

/// Commands a client may send before logging in (RFC 959 and the FEAT/AUTH negotiation that
/// clients do first).
fn allowed_before_login(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::User(_)
            | Command::Pass(_)
            | Command::Quit
            | Command::Feat
            | Command::Syst
            | Command::Help(_)
            | Command::Noop
            | Command::Auth(_)
            | Command::Pbsz(_)
            | Command::Prot(_)
            | Command::Ccc
            | Command::Opts(_)
    )
}

/// Errors inside a transfer: either side may fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    /// A PROT P data connection started a new TLS session instead of resuming the control
    /// connection's: 522, as vsftpd answers.
    #[error("TLS session not resumed")]
    TlsNotResumed,
    /// The data connection could not be established: 425.
    #[error("{0}")]
    Connect(io::Error),
    /// The data connection failed or stalled mid-transfer: 426.
    #[error("{0}")]
    Data(#[from] io::Error),
    /// The storage failed: its own reply code.
    #[error("{0}")]
    Storage(#[from] StorageError),
}
