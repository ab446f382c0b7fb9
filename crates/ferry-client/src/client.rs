//! One FTP or FTPS session: connect, log in, then commands and transfers. Passive mode tries
//! EPSV then PASV and always connects to the control connection's address (a PASV address
//! from a server behind NAT is ignored, as curl and lftp do); active mode sends EPRT, or PORT
//! when the server refuses it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use ferry_proto::{ClientCodec, HashAlgorithm, Reply};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use crate::listing::{RemoteEntry, parse_list_line, parse_mlsd_line, parse_timeval};
use crate::tls::{ClientTls, TlsOptions, TlsSetupError};
use crate::url::{Endpoint, Security};

/// A control or data connection, plain or TLS.
type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Buffer for moving a transfer's bytes.
const COPY_BUFFER: usize = 256 * 1024;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The network or a local file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The server answered a command with a refusal; its reply is the message.
    #[error("{command}: {reply}")]
    Refused {
        /// The command (without secrets).
        command: String,
        /// What the server said.
        reply: Reply,
    },
    /// The server said something that makes no sense here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No reply in time.
    #[error("timed out waiting for the server")]
    Timeout,
}

impl ClientError {
    /// The server's reply code, when the server refused.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            ClientError::Refused { reply, .. } => Some(reply.code),
            _ => None,
        }
    }
}

/// How to reach and talk to a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Certificate checks for FTPS.
    pub tls: TlsOptions,
    /// PORT/EPRT instead of EPSV/PASV.
    pub active: bool,
    /// Longest wait for a reply or for progress on a data connection.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: TlsOptions::default(),
            active: false,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What FEAT said the server can do.
#[derive(Debug, Clone, Default)]
pub struct Features {
    lines: Vec<String>,
}

impl Features {
    /// True when a FEAT line starts with `name` (case-insensitive), e.g. "MLST", "EPSV".
    pub fn has(&self, name: &str) -> bool {
        self.lines.iter().any(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            first.eq_ignore_ascii_case(name)
        })
    }

    /// Algorithms of the HASH feature line (`HASH SHA-256*;SHA-512;...`).
    pub fn hash_algorithms(&self) -> Vec<HashAlgorithm> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("HASH ").or_else(|| l.strip_prefix("hash ")))
            .flat_map(|list| list.split(';'))
            .filter_map(|name| HashAlgorithm::from_name(name.trim().trim_end_matches('*')))
            .collect()
    }

    /// The `OPTS MLST` line that turns on the type, size and modify facts when the server
    /// offers one of them without sending it by default (RFC 3659 section 7.9); the facts it
    /// already sends stay on. Mirroring compares sizes and times, so it needs all three.
    fn mlst_selection(&self) -> Option<String> {
        let wanted = ["type", "size", "modify"];
        let facts = self.lines.iter().find_map(|l| {
            let (verb, rest) = l.split_once(' ')?;
            verb.eq_ignore_ascii_case("MLST").then_some(rest)
        })?;
        let facts: Vec<&str> = facts.split(';').map(str::trim).collect();
        let is_wanted = |name: &str| wanted.iter().any(|w| name.eq_ignore_ascii_case(w));
        if !facts.iter().any(|f| is_wanted(f)) {
            return None;
        }
        let selection: String = facts
            .iter()
            .filter(|f| f.ends_with('*') || is_wanted(f))
            .map(|f| format!("{};", f.trim_end_matches('*')))
            .collect();
        Some(format!("OPTS MLST {selection}"))
    }
}

/// How STOR treats the remote file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// STOR: create or replace.
    Replace,
    /// REST n + STOR: keep the first n bytes, write the rest.
    At(u64),
    /// APPE: append.
    Append,
}

/// A remote checksum: which algorithm and its lower-case hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm the server used.
    pub algorithm: HashAlgorithm,
    /// Lower-case hex.
    pub hex: String,
}

/// A prepared data connection, established after the transfer command.
enum PendingData {
    Passive(TcpStream),
    Active(TcpListener),
}

/// One logged-in session.
pub struct Client {
    control: Framed<Stream, ClientCodec>,
    options: Options,
    endpoint: Endpoint,
    tls: Option<ClientTls>,
    features: Features,
    peer: SocketAddr,
    local: SocketAddr,
    /// The login, kept to reconnect when TLS 1.3 tickets run out.
    credentials: (String, String),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("security", &self.endpoint.security)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint`, protects the session as its scheme says, logs in with `user`
    /// and `password`, and reads FEAT. Transfers are binary (TYPE I).
    pub async fn connect(
        endpoint: &Endpoint,
        user: &str,
        password: &str,
        options: &Options,
    ) -> Result<Client, ClientError> {
        let tcp = within(
            options.timeout,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await??;
        tcp.set_nodelay(true)?;
        let (peer, local) = (tcp.peer_addr()?, tcp.local_addr()?);
        let tls = match endpoint.security {
            Security::Plain => None,
            _ => Some(ClientTls::new(&endpoint.host, &options.tls)?),
        };
        let stream = match (&tls, endpoint.security) {
            (Some(tls), Security::Implicit) => Either::Right(tls.connect(tcp).await?),
            _ => Either::Left(tcp),
        };
        let mut control = Framed::new(stream, ClientCodec::default());
        let greeting = next_final(&mut control, options.timeout).await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused {
                command: "connect".into(),
                reply: greeting,
            });
        }
        if let (Some(tls), Security::Explicit) = (&tls, endpoint.security) {
            within(options.timeout, control.send("AUTH TLS")).await??;
            let reply = next_final(&mut control, options.timeout).await?;
            if reply.code != 234 {
                return Err(ClientError::Refused {
                    command: "AUTH TLS".into(),
                    reply,
                });
            }
            let Either::Left(tcp) = control.into_inner() else {
                return Err(ClientError::Protocol(
                    "control connection already TLS".into(),
                ));
            };
            control = Framed::new(
                Either::Right(tls.connect(tcp).await?),
                ClientCodec::default(),
            );
        }
        let mut client = Client {
            control,
            options: options.clone(),
            endpoint: endpoint.clone(),
            tls,
            features: Features::default(),
            peer,
            local,
            credentials: (user.to_string(), password.to_string()),
        };
        client.login().await?;
        Ok(client)
    }

    async fn login(&mut self) -> Result<(), ClientError> {
        let (user, password) = self.credentials.clone();
        let reply = self.command(&format!("USER {user}")).await?;
        match reply.code {
            230 => {}
            331 | 332 => {
                let reply = self.command(&format!("PASS {password}")).await?;
                if reply.code != 230 && reply.code != 202 {
                    return Err(ClientError::Refused {
                        command: "PASS".into(),
                        reply,
                    });
                }
            }
            _ => {
                return Err(ClientError::Refused {
                    command: format!("USER {user}"),
                    reply,
                });
            }
        }
        if self.tls.is_some() {
            self.expect("PBSZ 0", |c| c == 200).await?;
            self.expect("PROT P", |c| c == 200).await?;
        }
        let feat = self.command("FEAT").await?;
        if feat.code == 211 {
            self.features = Features {
                lines: feat.lines.iter().map(|l| l.trim().to_string()).collect(),
            };
        }
        if let Some(line) = self.features.mlst_selection() {
            // Without the facts listings are still usable, only less exact.
            let _ = self.command(&line).await?;
        }
        if self.features.has("UTF8") {
            let _ = self.command("OPTS UTF8 ON").await?;
        }
        self.expect("TYPE I", |c| c == 200).await?;
        Ok(())
    }

    /// What FEAT said.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The server this session talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one command line and returns the final reply, whatever its code.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        within(self.options.timeout, self.control.send(line)).await??;
        self.read_final().await
    }

    /// Sends a command and fails unless `ok` accepts the reply code.
    pub async fn expect(
        &mut self,
        line: &str,
        ok: impl Fn(u16) -> bool,
    ) -> Result<Reply, ClientError> {
        let reply = self.command(line).await?;
        if ok(reply.code) {
            Ok(reply)
        } else {
            Err(ClientError::Refused {
                command: redact(line),
                reply,
            })
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        next_reply(&mut self.control, self.options.timeout).await
    }

    /// The next reply that is not a 1xx.
    async fn read_final(&mut self) -> Result<Reply, ClientError> {
        next_final(&mut self.control, self.options.timeout).await
    }

    /// PWD.
    pub async fn pwd(&mut self) -> Result<String, ClientError> {
        let reply = self.expect("PWD", |c| c == 257).await?;
        let text = reply.lines.first().cloned().unwrap_or_default();
        let quoted = text.split_once('"').map(|(_, rest)| rest).unwrap_or("");
        let mut out = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                    continue;
                }
                break;
            }
            out.push(c);
        }
        Ok(out)
    }

    /// CWD.
    pub async fn cwd(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("CWD {path}"), |c| c == 250 || c == 200)
            .await
            .map(drop)
    }

    /// MKD.
    pub async fn mkdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("MKD {path}"), |c| c == 257 || c == 250)
            .await
            .map(drop)
    }

    /// RMD.
    pub async fn rmdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("RMD {path}"), |c| c == 250 || c == 200)
            .await
            .map(drop)
    }

    /// DELE.
    pub async fn delete(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("DELE {path}"), |c| c == 250 || c == 200)
            .await
            .map(drop)
    }

    /// RNFR + RNTO.
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        self.expect(&format!("RNFR {from}"), |c| c == 350).await?;
        self.expect(&format!("RNTO {to}"), |c| c == 250 || c == 200)
            .await
            .map(drop)
    }

    /// SIZE; `None` when the file does not exist (or the server has no SIZE).
    pub async fn size(&mut self, path: &str) -> Result<Option<u64>, ClientError> {
        let reply = self.command(&format!("SIZE {path}")).await?;
        Ok(if reply.code == 213 {
            reply.lines.first().and_then(|l| l.trim().parse().ok())
        } else {
            None
        })
    }

    /// MDTM; `None` when unknown.
    pub async fn mdtm(&mut self, path: &str) -> Result<Option<SystemTime>, ClientError> {
        let reply = self.command(&format!("MDTM {path}")).await?;
        Ok(if reply.code == 213 {
            reply.lines.first().and_then(|l| parse_timeval(l.trim()))
        } else {
            None
        })
    }

    /// QUIT, politely.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        let _ = self.command("QUIT").await;
        let _ = self.control.get_mut().shutdown().await;
        Ok(())
    }

    /// The entries of a directory: MLSD when the server has it, else LIST.
    pub async fn list(&mut self, path: &str) -> Result<Vec<RemoteEntry>, ClientError> {
        if self.features.has("MLST") {
            let lines = self.listing_lines("MLSD", path).await?;
            return Ok(lines.iter().filter_map(|l| parse_mlsd_line(l)).collect());
        }
        let lines = self.listing_lines("LIST", path).await?;
        Ok(lines.iter().filter_map(|l| parse_list_line(l)).collect())
    }

    /// The raw lines of LIST/NLST/MLSD.
    pub async fn listing_lines(
        &mut self,
        verb: &str,
        path: &str,
    ) -> Result<Vec<String>, ClientError> {
        let line = if path.is_empty() {
            verb.to_string()
        } else {
            format!("{verb} {path}")
        };
        let mut body = Vec::new();
        self.download(&line, &mut body, &mut |_| {}).await?;
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// RETR `path` from `offset` into `sink`; `progress` gets the running byte count.
    pub async fn retr(
        &mut self,
        path: &str,
        offset: u64,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        if offset > 0 {
            self.expect(&format!("REST {offset}"), |c| c == 350).await?;
        }
        self.download(&format!("RETR {path}"), sink, progress).await
    }

    /// REST `offset` + RETR `path`, reading exactly `len` bytes into `sink`, then stops the
    /// transfer (drops the data connection, sends ABOR, reads both final replies) so the
    /// session stays usable for the next command. Fewer than `len` bytes is an error.
    pub async fn retr_range(
        &mut self,
        path: &str,
        offset: u64,
        len: u64,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        if len == 0 {
            return Ok(0);
        }
        if offset > 0 {
            self.expect(&format!("REST {offset}"), |c| c == 350).await?;
        }
        let command = format!("RETR {path}");
        let mut data = self.start_transfer(&command).await?;
        let mut range = (&mut data).take(len);
        let received = copy(&mut range, sink, self.options.timeout, progress).await;
        drop(data);
        match received {
            Ok(n) if n == len => {
                self.abort_transfer().await?;
                sink.flush().await?;
                Ok(n)
            }
            Ok(n) => {
                // The server ended the data itself, so only its final reply follows.
                let reply = self.read_final().await?;
                finished(&command, reply)?;
                Err(ClientError::Protocol(format!(
                    "{path}: {n} of {len} bytes from offset {offset}: the file is shorter"
                )))
            }
            Err(err) => {
                // Our side stopped (stall, local write error): the server may still be
                // sending, and the session is only in step again after ABOR.
                let _ = self.abort_transfer().await;
                Err(err)
            }
        }
    }

    /// Sends ABOR for a download whose data connection we closed and reads the two final
    /// replies that follow: the transfer's (226 if it had already finished, 426 if cut short)
    /// and the ABOR's (225 or 226). Servers differ in which comes first, and either outcome
    /// is fine since the bytes wanted have arrived, so both are read whatever their order.
    async fn abort_transfer(&mut self) -> Result<(), ClientError> {
        within(self.options.timeout, self.control.send("ABOR")).await??;
        let first = self.read_final().await?;
        let second = self.read_final().await?;
        tracing::debug!(%first, %second, "transfer stopped with ABOR");
        Ok(())
    }

    /// STOR/APPE `path` from `source`.
    pub async fn stor(
        &mut self,
        path: &str,
        mode: StoreMode,
        source: &mut (dyn AsyncRead + Unpin + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        let command = match mode {
            StoreMode::Replace => format!("STOR {path}"),
            StoreMode::Append => format!("APPE {path}"),
            StoreMode::At(offset) => {
                self.expect(&format!("REST {offset}"), |c| c == 350).await?;
                format!("STOR {path}")
            }
        };
        let mut data = self.start_transfer(&command).await?;
        let sent = copy(source, &mut data, self.options.timeout, progress).await;
        let closed = match sent {
            Ok(_) => close_upload(&mut data, self.options.timeout).await,
            Err(_) => Ok(()),
        };
        drop(data);
        let reply = self.read_final().await?;
        let sent = sent?;
        closed?;
        finished(&command, reply)?;
        Ok(sent)
    }

    async fn download(
        &mut self,
        command: &str,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        let mut data = self.start_transfer(command).await?;
        let received = copy(&mut data, sink, self.options.timeout, progress).await;
        drop(data);
        let reply = self.read_final().await?;
        let received = received?;
        finished(command, reply)?;
        sink.flush().await?;
        Ok(received)
    }

    /// Opens the data connection, sends `command`, waits for its 1xx and returns the
    /// connection (TLS under PROT P).
    async fn start_transfer(&mut self, command: &str) -> Result<Stream, ClientError> {
        self.ensure_resumable().await?;
        let pending = self.prepare_data().await?;
        within(self.options.timeout, self.control.send(command)).await??;
        let reply = self.read_reply().await?;
        if !(100..200).contains(&reply.code) {
            return Err(ClientError::Refused {
                command: redact(command),
                reply,
            });
        }
        let tcp = match pending {
            PendingData::Passive(tcp) => tcp,
            PendingData::Active(listener) => {
                let (tcp, from) = within(self.options.timeout, listener.accept()).await??;
                if from.ip() != self.peer.ip() {
                    return Err(ClientError::Protocol(format!(
                        "data connection from {from}, not the server"
                    )));
                }
                tcp
            }
        };
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some(tls) => Ok(Either::Right(
                within(self.options.timeout, tls.connect(tcp)).await??,
            )),
            None => Ok(Either::Left(tcp)),
        }
    }

    /// TLS 1.3 tickets are single-use in rustls; with none left a data connection could not
    /// resume the control session, which servers may require, so log in again first.
    async fn ensure_resumable(&mut self) -> Result<(), ClientError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let version = match self.control.get_ref() {
            Either::Right(stream) => stream.get_ref().1.protocol_version(),
            Either::Left(_) => None,
        };
        if tls.can_resume(version) {
            return Ok(());
        }
        let cwd = self.pwd().await.ok();
        let (user, password) = self.credentials.clone();
        let fresh = Box::pin(Client::connect(
            &self.endpoint,
            &user,
            &password,
            &self.options,
        ))
        .await?;
        let old = std::mem::replace(self, fresh);
        let _ = old.quit().await;
        if let Some(cwd) = cwd {
            self.cwd(&cwd).await?;
        }
        Ok(())
    }

    async fn prepare_data(&mut self) -> Result<PendingData, ClientError> {
        if self.options.active {
            return self.prepare_active().await;
        }
        let reply = self.command("EPSV").await?;
        let port = if reply.code == 229 {
            parse_epsv(&reply)
                .ok_or_else(|| ClientError::Protocol(format!("bad EPSV reply: {reply}")))?
        } else {
            let reply = self.expect("PASV", |c| c == 227).await?;
            parse_pasv(&reply)
                .ok_or_else(|| ClientError::Protocol(format!("bad PASV reply: {reply}")))?
        };
        let addr = SocketAddr::new(self.peer.ip(), port);
        Ok(PendingData::Passive(
            within(self.options.timeout, TcpStream::connect(addr)).await??,
        ))
    }

    async fn prepare_active(&mut self) -> Result<PendingData, ClientError> {
        let listener = TcpListener::bind(SocketAddr::new(self.local.ip(), 0)).await?;
        let addr = listener.local_addr()?;
        let family = if addr.is_ipv4() { 1 } else { 2 };
        let reply = self
            .command(&format!("EPRT |{family}|{}|{}|", addr.ip(), addr.port()))
            .await?;
        if reply.code != 200 {
            let IpAddr::V4(v4) = addr.ip() else {
                return Err(ClientError::Refused {
                    command: "EPRT".into(),
                    reply,
                });
            };
            let [a, b, c, d] = v4.octets();
            let [p1, p2] = addr.port().to_be_bytes();
            self.expect(&format!("PORT {a},{b},{c},{d},{p1},{p2}"), |c| c == 200)
                .await?;
        }
        Ok(PendingData::Active(listener))
    }

    /// The algorithm [`Client::checksum`] will use, when FEAT tells (so the caller can hash
    /// its own copy while the server hashes). `None` when only probing would tell.
    pub fn checksum_algorithm(&self) -> Option<HashAlgorithm> {
        let offered = self.features.hash_algorithms();
        if let Some(&algorithm) = offered
            .iter()
            .find(|a| **a == HashAlgorithm::Sha256)
            .or(offered.first())
        {
            return Some(algorithm);
        }
        ALIASES
            .iter()
            .find(|(verb, _)| self.features.has(verb))
            .map(|&(_, algorithm)| algorithm)
    }

    /// The server's checksum of `path`: HASH with SHA-256 when offered (else its best
    /// algorithm), else the first of XSHA256, XSHA1, XMD5, XCRC that answers. `None` when the
    /// server has no checksum command.
    pub async fn checksum(&mut self, path: &str) -> Result<Option<Checksum>, ClientError> {
        let offered = self.features.hash_algorithms();
        if let Some(&algorithm) = offered
            .iter()
            .find(|a| **a == HashAlgorithm::Sha256)
            .or(offered.first())
        {
            self.expect(&format!("OPTS HASH {}", algorithm.name()), |c| c == 200)
                .await?;
            let reply = self.expect(&format!("HASH {path}"), |c| c == 213).await?;
            let text = reply.lines.first().cloned().unwrap_or_default();
            let hex = text
                .split_whitespace()
                .nth(2)
                .ok_or_else(|| ClientError::Protocol(format!("bad HASH reply: {text}")))?;
            return Ok(Some(Checksum {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            }));
        }
        for (verb, algorithm) in ALIASES {
            if !self.features.lines.is_empty() && !self.features.has(verb) {
                continue;
            }
            let reply = self.command(&format!("{verb} {path}")).await?;
            match reply.code {
                250 | 213 => {
                    let hex = reply
                        .lines
                        .first()
                        .and_then(|l| l.split_whitespace().last())
                        .unwrap_or("");
                    if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Ok(Some(Checksum {
                            algorithm,
                            hex: hex.to_ascii_lowercase(),
                        }));
                    }
                }
                500 | 502 | 504 => continue,
                _ => {
                    return Err(ClientError::Refused {
                        command: format!("{verb} {path}"),
                        reply,
                    });
                }
            }
        }
        Ok(None)
    }
}

/// The checksum aliases, in the order they are tried.
const ALIASES: [(&str, HashAlgorithm); 4] = [
    ("XSHA256", HashAlgorithm::Sha256),
    ("XSHA1", HashAlgorithm::Sha1),
    ("XMD5", HashAlgorithm::Md5),
    ("XCRC", HashAlgorithm::Crc32),
];

/// A TLS upload ends with close_notify, then the server's: reading to the end also takes in
/// any tickets, so closing never resets the connection under unread data.
async fn close_upload(data: &mut Stream, wait: Duration) -> Result<(), ClientError> {
    within(wait, data.shutdown()).await??;
    if let Either::Right(_) = data {
        let mut sink = [0u8; 4096];
        loop {
            match within(wait, data.read(&mut sink)).await? {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    Ok(())
}

fn finished(command: &str, reply: Reply) -> Result<(), ClientError> {
    if (200..300).contains(&reply.code) {
        Ok(())
    } else {
        Err(ClientError::Refused {
            command: redact(command),
            reply,
        })
    }
}

/// Copies with a stall timeout, reporting the running total.
async fn copy(
    reader: &mut (dyn AsyncRead + Unpin + Send),
    writer: &mut (dyn AsyncWrite + Unpin + Send),
    wait: Duration,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, ClientError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = within(wait, reader.read(&mut buf)).await??;
        if n == 0 {
            return Ok(total);
        }
        within(wait, writer.write_all(&buf[..n])).await??;
        total += n as u64;
        progress(total);
    }
}

async fn within<T>(wait: Duration, future: impl Future<Output = T>) -> Result<T, ClientError> {
    tokio::time::timeout(wait, future)
        .await
        .map_err(|_| ClientError::Timeout)
}

async fn next_reply(
    control: &mut Framed<Stream, ClientCodec>,
    wait: Duration,
) -> Result<Reply, ClientError> {
    match within(wait, control.next()).await? {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(err)) => Err(ClientError::Protocol(err.to_string())),
        None => Err(ClientError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))),
    }
}

/// The next reply that is not a 1xx.
async fn next_final(
    control: &mut Framed<Stream, ClientCodec>,
    wait: Duration,
) -> Result<Reply, ClientError> {
    loop {
        let reply = next_reply(control, wait).await?;
        if reply.code >= 200 {
            return Ok(reply);
        }
    }
}

/// The command as it may be shown: PASS arguments hidden.
fn redact(line: &str) -> String {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case("PASS") {
        "PASS ****".into()
    } else {
        line.to_string()
    }
}

/// `229 Entering Extended Passive Mode (|||6446|)`.
fn parse_epsv(reply: &Reply) -> Option<u16> {
    let text = reply.lines.first()?;
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    let delim = inner.chars().next()?;
    inner.split(delim).nth(3)?.parse().ok()
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`: only the port is used.
fn parse_pasv(reply: &Reply) -> Option<u16> {
    let text = reply.lines.first()?;
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let nums: Vec<u16> = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [_, _, _, _, p1, p2] = nums[..] else {
        return None;
    };
    p1.checked_mul(256)?.checked_add(p2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_replies_give_the_port() {
        assert_eq!(
            parse_epsv(&Reply::new(
                229,
                "Entering Extended Passive Mode (|||6446|)"
            )),
            Some(6446)
        );
        assert_eq!(
            parse_pasv(&Reply::new(227, "Entering Passive Mode (127,0,0,1,25,1)")),
            Some(25 * 256 + 1)
        );
        assert_eq!(
            parse_pasv(&Reply::new(227, "=127,0,0,1,25,1")),
            Some(25 * 256 + 1)
        );
        assert_eq!(parse_pasv(&Reply::new(227, "garbage")), None);
    }

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(redact("PASS hunter2"), "PASS ****");
        assert_eq!(redact("RETR f"), "RETR f");
    }

    #[test]
    fn feat_hash_line_lists_algorithms() {
        let f = Features {
            lines: vec!["HASH SHA-256*;SHA-512;MD5".into(), "MLST type*;".into()],
        };
        assert_eq!(
            f.hash_algorithms(),
            [
                HashAlgorithm::Sha256,
                HashAlgorithm::Sha512,
                HashAlgorithm::Md5
            ]
        );
        assert!(f.has("mlst"));
        assert!(!f.has("EPSV"));
    }

    #[test]
    fn mlst_options_turn_on_offered_facts_that_are_off() {
        let feat = |line: &str| Features {
            lines: vec![line.to_string()],
        };
        assert_eq!(
            feat("MLST type*;size*;modify;perm*;unique;").mlst_selection(),
            Some("OPTS MLST type;size;modify;perm;".into())
        );
        assert_eq!(
            feat("MLST type*;size*;modify*;perm;").mlst_selection(),
            None
        );
        assert_eq!(feat("MLST type*;perm*;").mlst_selection(), None);
        assert_eq!(feat("SIZE").mlst_selection(), None);
    }
}
