//! TLS for FTPS (RFC 4217) with rustls: TLS 1.2 and 1.3 only, the ring provider, no OpenSSL.
//!
//! The certificate comes from PEM files, or from a self-signed pair generated once into
//! DATA/tls/ and reused. A resolver hands out the current certificate, so a reload (SIGHUP)
//! swaps it for new handshakes without touching running sessions.
//!
//! Each control connection gets its own session store, shared only with its data
//! connections: a data connection that resumes a session can therefore only have got it from
//! this control connection. That is how the server checks vsftpd's `require_ssl_reuse`: the
//! data handshake must be a resumption. The store does not forget a ticket when it is used,
//! because clients (OpenSSL's among them) offer the control connection's session for every
//! data connection, also under TLS 1.3.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, ServerConfig};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// rustls refused the certificate, key or settings.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where the certificate and key come from.
#[derive(Debug, Clone)]
pub struct CertSource {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Whether a missing pair may be generated (the default DATA/tls/ pair); files an
    /// operator named must exist.
    pub generate: bool,
}

impl CertSource {
    /// DATA/tls/cert.pem and key.pem, generated when absent.
    pub fn generated_in(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        CertSource {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            generate: true,
        }
    }
}

/// The server's TLS setup, shared by all sessions.
pub struct Tls {
    /// Settings every session's config is cloned from.
    base: ServerConfig,
    /// The certificate in use, swapped by `reload`.
    cert: Arc<CurrentCert>,
    /// Where to reload it from.
    source: CertSource,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("source", &self.source)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// Hands the current certificate to every handshake.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads the certificate and key (generating the default pair when allowed and absent).
    pub fn load(source: CertSource) -> Result<Tls, TlsError> {
        if source.generate && !source.cert.exists() && !source.key.exists() {
            generate(&source)?;
        }
        let key = certified_key(&source)?;
        let cert = Arc::new(CurrentCert(RwLock::new(Arc::new(key))));
        let base = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        Ok(Tls { base, cert, source })
    }

    /// Re-reads the certificate and key; new handshakes use them, running sessions go on.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.source)?;
        *self.cert.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// SHA-256 of the certificate in use, as `AB:CD:...`, for users to compare.
    pub fn fingerprint(&self) -> String {
        let cert = Arc::clone(&self.cert.0.read().unwrap_or_else(PoisonError::into_inner));
        let digest = cert
            .cert
            .first()
            .map(|der| Sha256::digest(der.as_ref()))
            .unwrap_or_default();
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The certificate file in use (to pin it as a CA in clients).
    pub fn cert_path(&self) -> &Path {
        &self.source.cert
    }

    /// The TLS side of one control connection and its data connections, with a session
    /// store of their own (see the module docs).
    pub fn session_acceptor(&self) -> SessionTls {
        let store = Arc::new(SessionStore::default());
        let mut control = self.base.clone();
        control.session_storage = Arc::clone(&store) as Arc<dyn StoresServerSessions>;
        // Clients spend one TLS 1.3 ticket per data connection (rustls keeps up to 8); the
        // control connection hands out that many, downloads add more.
        control.send_tls13_tickets = CONTROL_TICKETS;
        SessionTls {
            control: TlsAcceptor::from(Arc::new(control)),
            data: Arc::new(self.base.clone()),
            store,
        }
    }
}

/// TLS 1.3 tickets sent on a control connection.
const CONTROL_TICKETS: usize = 8;
/// TLS 1.3 tickets sent on a download's data connection (the client reads it to the end).
const DOWNLOAD_TICKETS: usize = 2;

/// The TLS side of one control connection and its data connections.
#[derive(Clone)]
pub struct SessionTls {
    /// Handshakes of the control connection.
    control: TlsAcceptor,
    /// Settings data connections are cloned from.
    data: Arc<ServerConfig>,
    /// Sessions of this control connection, the only ones a data connection may resume.
    store: Arc<SessionStore>,
}

impl fmt::Debug for SessionTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionTls")
    }
}

/// Which way a data connection carries the file; it decides whether tickets are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RETR and listings: the client reads the connection to its end.
    Download,
    /// STOR, APPE, STOU: the client only writes. Tickets sent to it would sit unread, and a
    /// socket closed with unread data is reset, which can cut off the end of the upload; so
    /// none are sent.
    Upload,
}

impl SessionTls {
    /// The control connection's handshake (AUTH TLS or implicit FTPS).
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<MaybeTls> {
        Ok(MaybeTls::Tls(Box::new(self.control.accept(stream).await?)))
    }

    /// A data connection's handshake. Sessions it creates join this control connection's
    /// store only if it resumed one of them: a data connection taken over by someone else
    /// does a full handshake, and the tickets it was given must not open the next one.
    pub async fn accept_data(
        &self,
        stream: TcpStream,
        direction: Direction,
    ) -> std::io::Result<(MaybeTls, Resumed)> {
        let pending = Arc::new(PendingSessions {
            shared: Arc::clone(&self.store),
            new: Mutex::default(),
        });
        let mut config = (*self.data).clone();
        config.session_storage = Arc::clone(&pending) as Arc<dyn StoresServerSessions>;
        config.send_tls13_tickets = match direction {
            Direction::Download => DOWNLOAD_TICKETS,
            Direction::Upload => 0,
        };
        let tls = TlsAcceptor::from(Arc::new(config)).accept(stream).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        if resumed {
            pending.keep();
        }
        Ok((MaybeTls::Tls(Box::new(tls)), Resumed(resumed)))
    }
}

/// Whether a handshake resumed an earlier session of the same control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed(pub bool);

/// A connection before or after its TLS handshake: control connections start plain and are
/// upgraded by AUTH TLS; data connections are wrapped under PROT P.
#[derive(Debug)]
pub enum MaybeTls {
    /// Plain TCP (a data connection).
    Plain(TcpStream),
    /// A plain control connection: reads also take in what lies past TCP's urgent mark
    /// (see `read_past_urgent_mark`). Not for data connections, where that extra read could
    /// swallow a reset and turn a cut upload into a clean end of file.
    Control(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large and most connections are plain).
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a control connection is being upgraded; every operation fails.
    Detached,
}

impl MaybeTls {
    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

fn detached() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "connection is being upgraded to TLS",
    )
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Control(s) => {
                let before = buf.filled().len();
                let poll = Pin::new(&mut *s).poll_read(cx, buf);
                if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    read_past_urgent_mark(s, buf);
                }
                poll
            }
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }
}

/// The kernel ends a read at TCP's urgent mark, which clients put in the Telnet Synch before
/// ABOR (RFC 959 4.1.3). tokio takes such a short read to mean the socket is drained and
/// waits for the next edge, so the rest of the line (`ABOR\r\n`) would sit unread until
/// the client sent something else. One more non-blocking read, past tokio's readiness
/// tracking, takes in what is already there.
fn read_past_urgent_mark(stream: &TcpStream, buf: &mut ReadBuf<'_>) {
    use std::io::Read;
    if buf.remaining() == 0 {
        return;
    }
    let socket = socket2::SockRef::from(stream);
    let spare = buf.initialize_unfilled();
    if let Ok(n) = (&*socket).read(spare) {
        buf.advance(n);
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) | MaybeTls::Control(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) | MaybeTls::Control(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    /// For TLS this sends close_notify first, which tells the peer the data is complete.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) | MaybeTls::Control(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn certified_key(source: &CertSource) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path, what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| pem_err(&source.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&source.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(&source.cert, "no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&source.key)
        .map_err(|e| pem_err(&source.key, e.to_string()))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1, valid for ten years; the key is
/// written owner-only.
fn generate(source: &CertSource) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    if let Some(dir) = source.cert.parent() {
        std::fs::create_dir_all(dir).map_err(read_err(dir))?;
    }
    write_private(&source.key, signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&source.cert, cert.pem()).map_err(read_err(&source.cert))?;
    tracing::info!(cert = %source.cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(read_err(path))?;
    file.write_all(bytes).map_err(read_err(path))
}

/// Sessions of one control connection (see the module docs): bounded, and `take` keeps the
/// entry so a ticket serves every data connection.
#[derive(Debug, Default)]
struct SessionStore(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

/// More than a control connection and its data connections ever need at once.
const SESSIONS_PER_CONTROL: usize = 64;

impl StoresServerSessions for SessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= SESSIONS_PER_CONTROL {
            map.clear();
        }
        map.insert(key, value);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A data connection's view of the control connection's store: it may resume what is there;
/// what it adds waits in `new` until the handshake has proved it belongs (`keep`).
#[derive(Debug)]
struct PendingSessions {
    shared: Arc<SessionStore>,
    new: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl PendingSessions {
    fn keep(&self) {
        let new = std::mem::take(&mut *self.new.lock().unwrap_or_else(PoisonError::into_inner));
        for (key, value) in new {
            self.shared.put(key, value);
        }
    }
}

impl StoresServerSessions for PendingSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shared.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shared.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_written_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let source = CertSource::generated_in(tmp.path());
        let first = Tls::load(source.clone()).unwrap().fingerprint();
        assert_eq!(first.len(), 32 * 3 - 1);
        let again = Tls::load(source.clone()).unwrap().fingerprint();
        assert_eq!(first, again);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&source.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn named_files_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let source = CertSource {
            cert: tmp.path().join("c.pem"),
            key: tmp.path().join("k.pem"),
            generate: false,
        };
        assert!(Tls::load(source).is_err());
    }

    #[test]
    fn reload_picks_up_a_new_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let source = CertSource::generated_in(tmp.path());
        let tls = Tls::load(source.clone()).unwrap();
        let before = tls.fingerprint();
        std::fs::remove_file(&source.cert).unwrap();
        std::fs::remove_file(&source.key).unwrap();
        generate(&source).unwrap();
        tls.reload().unwrap();
        assert_ne!(before, tls.fingerprint());
    }

    #[test]
    fn the_session_store_keeps_tickets_after_use() {
        let store = SessionStore::default();
        store.put(b"id".to_vec(), b"secret".to_vec());
        assert_eq!(store.take(b"id"), Some(b"secret".to_vec()));
        assert_eq!(store.take(b"id"), Some(b"secret".to_vec()));
    }
}
