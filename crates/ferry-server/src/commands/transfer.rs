//! Data connections and transfers: PASV PORT RETR STOR APPE STOU LIST NLST STAT-with-path
//! (RFC 959), EPSV EPRT (RFC 2428), MLSD (RFC 3659), REST STREAM (RFC 3659 section 5).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferry_proto::ascii::{FromCrlf, ToCrlf};
use ferry_proto::{EpsvArg, Reply, TransferType};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{storage, writable_storage};
use crate::data::{
    Convert, CopyError, DataChannel, canonical, check_active_target, copy, listen_passive,
    receive_to_file, send_file,
};
use crate::listing::{ls_line, mlsx_line};
use crate::metrics::{Direction as FileDirection, Outcome};
use crate::proxy::ProxyProtocol;
use crate::session::{Session, Transfer, TransferError};
use crate::storage::{DirEntry, Download, Listed, Listing, UploadMode, VirtualPath};
use crate::tls::{Direction, MaybeTls, Resumed, SessionTls};

/// What a transfer future needs from the session, copied so the future borrows nothing.
#[derive(Debug, Clone)]
struct DataParams {
    peer: IpAddr,
    local: IpAddr,
    /// Trusted proxies whose passive data connections carry a PROXY header.
    proxy: Option<Arc<ProxyProtocol>>,
    wait: Duration,
    /// PROT P: the TLS side of this control connection, and whether the data connection must
    /// resume its session.
    tls: Option<(SessionTls, bool)>,
}

impl DataParams {
    fn of(s: &Session) -> Self {
        let require_reuse = s.shared.config.require_tls_reuse;
        DataParams {
            peer: s.peer.ip(),
            local: s.local.ip(),
            proxy: s.shared.config.proxy_protocol.clone(),
            wait: s.shared.config.data_timeout,
            tls: s
                .tls
                .clone()
                .filter(|_| s.protect_data)
                .map(|tls| (tls, require_reuse)),
        }
    }

    /// Establishes the data connection, with TLS under PROT P.
    async fn connect(
        self,
        channel: DataChannel,
        direction: Direction,
    ) -> Result<MaybeTls, TransferError> {
        let tcp = channel
            .connect(self.peer, self.local, self.proxy.as_deref(), self.wait)
            .await
            .map_err(TransferError::Connect)?;
        let Some((tls, require_reuse)) = self.tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
        let (stream, Resumed(resumed)) =
            tokio::time::timeout(self.wait, tls.accept_data(tcp, direction))
                .await
                .map_err(|_| TransferError::Connect(timed_out()))?
                .map_err(TransferError::Connect)?;
        if require_reuse && !resumed {
            return Err(TransferError::TlsNotResumed);
        }
        Ok(stream)
    }
}

pub(super) async fn pasv(s: &mut Session) -> io::Result<()> {
    if s.epsv_all {
        return s.reply(503, "EPSV ALL in effect: use EPSV").await;
    }
    let advertised = canonical(s.shared.config.public_ip.unwrap_or(s.local.ip()));
    let IpAddr::V4(v4) = advertised else {
        return s.reply(425, "PASV needs IPv4; use EPSV").await;
    };
    let Some(port) = open_passive(s).await? else {
        return Ok(());
    };
    let [a, b, c, d] = v4.octets();
    let [p1, p2] = port.to_be_bytes();
    s.reply(
        227,
        format!("Entering Passive Mode ({a},{b},{c},{d},{p1},{p2})"),
    )
    .await
}

pub(super) async fn epsv(s: &mut Session, arg: EpsvArg) -> io::Result<()> {
    if arg == EpsvArg::All {
        s.epsv_all = true;
        return s.reply(200, "EPSV ALL ok").await;
    }
    let Some(port) = open_passive(s).await? else {
        return Ok(());
    };
    s.reply(229, format!("Entering Extended Passive Mode (|||{port}|)"))
        .await
}

/// Opens a listener for the next transfer, replacing any earlier one.
async fn open_passive(s: &mut Session) -> io::Result<Option<u16>> {
    s.data = None;
    let listener = listen_passive(s.local.ip(), s.shared.config.passive_ports.as_ref()).await;
    match listener.and_then(|l| Ok((l.local_addr()?.port(), l))) {
        Ok((port, listener)) => {
            s.data = Some(DataChannel::Passive(listener));
            Ok(Some(port))
        }
        Err(err) => {
            warn!(peer = %s.peer, %err, "cannot open a passive port");
            s.reply(425, "Cannot open a passive port").await?;
            Ok(None)
        }
    }
}

pub(super) async fn port(s: &mut Session, target: SocketAddr) -> io::Result<()> {
    if s.epsv_all {
        return s.reply(503, "EPSV ALL in effect: use EPSV").await;
    }
    if let Err(refused) = check_active_target(target, s.peer.ip()) {
        warn!(peer = %s.peer, %target, "refused an active data target");
        return s.reply(504, format!("Refused: {refused}")).await;
    }
    s.data = Some(DataChannel::Active(target));
    s.reply(200, "Active data connection prepared").await
}

/// Takes the prepared data connection for a transfer; a REST offset not used by this
/// transfer is dropped with it, so it cannot apply to a later one by surprise.
async fn take_channel(s: &mut Session) -> io::Result<Option<DataChannel>> {
    s.rest = None;
    let channel = s.data.take();
    if channel.is_none() {
        s.reply(425, "Use PASV, EPSV, PORT or EPRT first").await?;
        return Ok(None);
    }
    if s.tls_required() && !s.protect_data {
        s.reply(
            521,
            "Data connections must be protected: use PBSZ 0 and PROT P",
        )
        .await?;
        return Ok(None);
    }
    Ok(channel)
}

fn mode_name(s: &Session) -> &'static str {
    match s.transfer_type {
        TransferType::Ascii => "ASCII",
        TransferType::Image => "BINARY",
    }
}

pub(super) async fn retr(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(arg);
    let offset = s.rest.take().unwrap_or(0);
    let Some(channel) = take_channel(s).await? else {
        return Ok(());
    };
    let download = match storage.read(&path, offset).await {
        Ok(download) => download,
        Err(err) => return s.storage_error(err).await,
    };
    let convert = match s.transfer_type {
        TransferType::Ascii => Convert::ToWire(ToCrlf::default()),
        TransferType::Image => Convert::None,
    };
    s.reply(
        150,
        format!("Opening {} mode data connection for {path}", mode_name(s)),
    )
    .await?;
    let (params, stall, started) = (
        DataParams::of(s),
        s.shared.config.data_timeout,
        Instant::now(),
    );
    let sendfile = s.shared.config.sendfile;
    let outcome = s
        .run_transfer(|cancel| {
            until_aborted(cancel, async move {
                let mut stream = params.connect(channel, Direction::Download).await?;
                let sent = match (download, &stream, convert) {
                    (Download::File(file), MaybeTls::Plain(tcp), Convert::None) if sendfile => {
                        send_file(&file, tcp, stall).await
                    }
                    (download, _, convert) => {
                        let mut reader = download.into_reader();
                        copy(&mut reader, &mut stream, convert, stall).await
                    }
                };
                let n = sent.map_err(|err| match err {
                    CopyError::Read(err) => TransferError::Storage(err.into()),
                    CopyError::Write(err) => TransferError::Data(err),
                })?;
                stream.shutdown().await?;
                Ok(n)
            })
        })
        .await?;
    finish(s, "RETR", &path, started, outcome).await
}

pub(super) async fn stor(s: &mut Session, arg: &str) -> io::Result<()> {
    let mode = match s.rest.take() {
        None | Some(0) => UploadMode::Replace,
        Some(offset) => UploadMode::ResumeAt(offset),
    };
    let path = s.resolve(arg);
    upload(s, "STOR", path, mode).await
}

pub(super) async fn appe(s: &mut Session, arg: &str) -> io::Result<()> {
    s.rest = None;
    let path = s.resolve(arg);
    upload(s, "APPE", path, UploadMode::Append).await
}

pub(super) async fn stou(s: &mut Session) -> io::Result<()> {
    s.rest = None;
    let path = s.cwd.join(&format!("ferry.{:08x}", rand::random::<u32>()));
    upload(s, "STOU", path, UploadMode::CreateNew).await
}

async fn upload(
    s: &mut Session,
    verb: &'static str,
    path: VirtualPath,
    mode: UploadMode,
) -> io::Result<()> {
    let Some(storage) = writable_storage(s).await? else {
        return Ok(());
    };
    let Some(channel) = take_channel(s).await? else {
        return Ok(());
    };
    let mut upload = match storage.write(&path, mode).await {
        Ok(upload) => upload,
        Err(err) => return s.storage_error(err).await,
    };
    let convert = match s.transfer_type {
        TransferType::Ascii => Convert::FromWire(FromCrlf::default()),
        TransferType::Image => Convert::None,
    };
    let preliminary = match mode {
        // RFC 1123 4.1.2.9: STOU names the file in the 150 reply.
        UploadMode::CreateNew => format!("FILE: {}", path.file_name()),
        _ => format!("Opening {} mode data connection for {path}", mode_name(s)),
    };
    s.reply(150, preliminary).await?;
    let (params, stall, started) = (
        DataParams::of(s),
        s.shared.config.data_timeout,
        Instant::now(),
    );
    let outcome = s
        .run_transfer(|cancel| async move {
            let received = until_aborted(cancel, async {
                let mut stream = params.connect(channel, Direction::Upload).await?;
                let direct = match (&stream, &convert) {
                    (MaybeTls::Plain(_), Convert::None) => upload.direct_fd().transpose()?,
                    _ => None,
                };
                let received = match (direct, &stream) {
                    (Some(file), MaybeTls::Plain(tcp)) => {
                        receive_to_file(tcp, file, &mut *upload, stall).await
                    }
                    _ => copy(&mut stream, &mut *upload, convert, stall).await,
                };
                let n = received.map_err(|err| match err {
                    CopyError::Read(err) => TransferError::Data(err),
                    CopyError::Write(err) => TransferError::Storage(err.into()),
                })?;
                // Answer the client's close_notify with ours (RFC 8446 6.1); the file is
                // complete either way, so a client already gone does not fail the upload.
                let _ = tokio::time::timeout(stall, stream.shutdown()).await;
                Ok(n)
            })
            .await;
            match received {
                Ok(n) => {
                    upload.commit().await?;
                    Ok(n)
                }
                Err(err) => {
                    upload.abort().await;
                    Err(err)
                }
            }
        })
        .await?;
    finish(s, verb, &path, started, outcome).await
}

/// The network part of a transfer, stopped when the client aborts; what follows it (an
/// upload's commit or abort) still runs.
async fn until_aborted<T>(
    cancel: CancellationToken,
    work: impl Future<Output = Result<T, TransferError>>,
) -> Result<T, TransferError> {
    tokio::select! {
        result = work => result,
        _ = cancel.cancelled() => Err(TransferError::Data(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "transfer aborted",
        ))),
    }
}

/// Sends the final reply for a transfer and logs it.
async fn finish(
    s: &mut Session,
    verb: &'static str,
    path: &VirtualPath,
    started: Instant,
    outcome: Transfer<Result<u64, TransferError>>,
) -> io::Result<()> {
    let (user, peer, ms) = (
        s.user_name().to_string(),
        s.peer,
        started.elapsed().as_millis(),
    );
    record(s, verb, path, started, &outcome);
    match outcome {
        Transfer::Finished(Ok(bytes)) => {
            info!(%user, %peer, verb, %path, bytes, ms, "transfer complete");
            s.reply(226, format!("Transfer complete ({bytes} bytes)"))
                .await
        }
        Transfer::Finished(Err(TransferError::Storage(err))) => {
            warn!(%user, %peer, verb, %path, %err, "transfer failed: storage");
            s.storage_error(err).await
        }
        Transfer::Finished(Err(TransferError::TlsNotResumed)) => {
            warn!(%user, %peer, verb, %path, "data connection did not resume the TLS session");
            s.reply(
                522,
                "Data connection must resume the control connection's TLS session",
            )
            .await
        }
        Transfer::Finished(Err(TransferError::Connect(err))) => {
            warn!(%user, %peer, verb, %path, %err, "transfer failed: no data connection");
            s.reply(425, format!("Cannot open data connection: {err}"))
                .await
        }
        Transfer::Finished(Err(TransferError::Data(err))) => {
            warn!(%user, %peer, verb, %path, %err, "transfer failed: data connection");
            s.reply(
                426,
                format!("Data connection lost, transfer aborted: {err}"),
            )
            .await
        }
        Transfer::Aborted => {
            info!(%user, %peer, verb, %path, ms, "transfer aborted by client");
            s.reply(426, "Transfer aborted").await?;
            s.reply(226, "ABOR successful").await
        }
        Transfer::ControlLost => {
            warn!(%user, %peer, verb, %path, "control connection lost during transfer");
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "control connection lost",
            ))
        }
    }
}

/// Counts a file transfer in the metrics and writes its xferlog line; listings are neither.
fn record(
    s: &Session,
    verb: &str,
    path: &VirtualPath,
    started: Instant,
    outcome: &Transfer<Result<u64, TransferError>>,
) {
    let direction = match verb {
        "RETR" => FileDirection::Download,
        "STOR" | "APPE" | "STOU" => FileDirection::Upload,
        _ => return,
    };
    let (result, bytes) = match outcome {
        Transfer::Finished(Ok(bytes)) => (Outcome::Complete, *bytes),
        Transfer::Finished(Err(_)) => (Outcome::Failed, 0),
        Transfer::Aborted | Transfer::ControlLost => (Outcome::Aborted, 0),
    };
    let took = started.elapsed();
    s.shared.metrics.transfer(direction, result, bytes, took);
    if let Some(xferlog) = &s.shared.xferlog {
        xferlog.record(&crate::xferlog::Entry {
            took,
            remote: s.peer.ip(),
            bytes,
            path: path.as_str(),
            ascii: s.transfer_type == TransferType::Ascii,
            direction,
            user: s.user_name(),
            complete: result == Outcome::Complete,
        });
    }
}

/// The entries a listing covers: a directory's entries, or the one file named.
async fn entries(
    s: &mut Session,
    arg: Option<&str>,
) -> io::Result<Option<(VirtualPath, Box<dyn Listing>)>> {
    let Some(storage) = storage(s).await? else {
        return Ok(None);
    };
    let path = arg.map_or_else(|| s.cwd.clone(), |a| s.resolve(a));
    let listed = match storage.metadata(&path).await {
        Ok(meta) if meta.is_dir => storage.list(&path).await,
        Ok(metadata) => Ok(Box::new(Listed(Some(vec![DirEntry {
            name: path.file_name().to_string(),
            metadata,
        }]))) as Box<dyn Listing>),
        Err(err) => Err(err),
    };
    match listed {
        Ok(listing) => Ok(Some((path, listing))),
        Err(err) => {
            s.storage_error(err).await?;
            Ok(None)
        }
    }
}

/// Listing lines are sent in writes of about this many bytes.
const LISTING_CHUNK: usize = 64 * 1024;

/// Turns one entry into its listing line.
type Format = Box<dyn Fn(&DirEntry) -> String + Send>;

pub(super) async fn list(s: &mut Session, arg: Option<&str>) -> io::Result<()> {
    let now = SystemTime::now();
    send_listing(s, "LIST", arg, Box::new(move |e| ls_line(e, now))).await
}

pub(super) async fn nlst(s: &mut Session, arg: Option<&str>) -> io::Result<()> {
    send_listing(s, "NLST", arg, Box::new(|e| e.name.clone())).await
}

/// MLSD lists a directory only; on a file it is 501 (RFC 3659 section 7.2).
pub(super) async fn mlsd(s: &mut Session, arg: Option<&str>) -> io::Result<()> {
    if let (Some(a), Some(storage)) = (arg, s.storage())
        && matches!(storage.metadata(&s.resolve(a)).await, Ok(meta) if !meta.is_dir)
    {
        return s
            .reply(501, "MLSD needs a directory; use MLST for a file")
            .await;
    }
    let (writable, facts) = (s.writable(), s.mlst_facts);
    let format = move |e: &DirEntry| mlsx_line(&e.name, &e.metadata, writable, facts);
    send_listing(s, "MLSD", arg, Box::new(format)).await
}

/// Most entries STAT shows over the control connection; LIST has no such limit.
const STAT_MAX_ENTRIES: usize = 10_000;

/// STAT with a path: the `ls -l` listing over the control connection (RFC 959 4.1.3).
pub(super) async fn stat_path(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some((path, mut listing)) = entries(s, Some(arg)).await? else {
        return Ok(());
    };
    let now = SystemTime::now();
    let mut lines = vec![format!("Status of {path}:")];
    let mut shown = 0;
    loop {
        match listing.next_batch().await {
            Ok(Some(batch)) => {
                for entry in batch.iter().filter(|e| listable(e)) {
                    if shown == STAT_MAX_ENTRIES {
                        lines.push(format!(
                            "(only the first {STAT_MAX_ENTRIES} entries are shown; use LIST)"
                        ));
                        break;
                    }
                    lines.push(ls_line(entry, now));
                    shown += 1;
                }
                if shown == STAT_MAX_ENTRIES {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => return s.storage_error(err).await,
        }
    }
    lines.push("End of status".to_string());
    s.send(Reply::multi(213, lines)).await
}

/// A name with a line break could forge listing lines; such names are not shown.
fn listable(entry: &DirEntry) -> bool {
    !entry.name.contains(['\r', '\n'])
}

/// Sends a listing over the data connection batch by batch, so its size does not matter.
async fn send_listing(
    s: &mut Session,
    verb: &'static str,
    arg: Option<&str>,
    format: Format,
) -> io::Result<()> {
    let Some((path, mut listing)) = entries(s, arg).await? else {
        return Ok(());
    };
    let Some(channel) = take_channel(s).await? else {
        return Ok(());
    };
    s.reply(150, "Here comes the directory listing").await?;
    let (params, started) = (DataParams::of(s), Instant::now());
    let outcome = s
        .run_transfer(|cancel| {
            until_aborted(cancel, async move {
                let mut stream = params.connect(channel, Direction::Download).await?;
                let (mut sent, mut body) = (0, Vec::new());
                while let Some(batch) = listing.next_batch().await? {
                    for entry in batch.iter().filter(|e| listable(e)) {
                        body.extend_from_slice(format(entry).as_bytes());
                        body.extend_from_slice(b"\r\n");
                        if body.len() >= LISTING_CHUNK {
                            stream.write_all(&body).await?;
                            sent += body.len() as u64;
                            body.clear();
                        }
                    }
                }
                stream.write_all(&body).await?;
                sent += body.len() as u64;
                stream.shutdown().await?;
                Ok(sent)
            })
        })
        .await?;
    finish(s, verb, &path, started, outcome).await
}
