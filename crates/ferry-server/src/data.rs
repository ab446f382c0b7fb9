//! Data connections (RFC 959 section 3.2, RFC 2428): PASV/EPSV listeners and PORT/EPRT
//! connects, and the copy loop that moves a transfer's bytes.
//!
//! Security (RFC 2577): a passive listener only accepts a connection from the control
//! connection's address (no port theft), and an active connection only goes to the client's
//! own address on an unprivileged port (no bounce). Behind a load balancer the control
//! connection's address is the client's from the PROXY header; a passive connection relayed by
//! a trusted proxy is checked against the address in its own header.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::ascii::{FromCrlf, ToCrlf};
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

use crate::proxy::{Proxied, ProxyProtocol, read_header};
use crate::storage::{DirectFile, Upload};

/// Size of the buffer one transfer copies through.
const COPY_BUFFER: usize = 256 * 1024;

/// Capacity asked for the pipe an upload is spliced through: the most one chunk moves.
const SPLICE_PIPE: usize = 1024 * 1024;

/// Upload chunks up to this size are written to the file on the async thread itself.
const INLINE_WRITE: usize = 64 * 1024;

/// Most bytes one sendfile(2) call is asked for; a call moves what the socket's send buffer
/// takes, so this only bounds how long one call can hold its thread.
const SENDFILE_CHUNK: usize = 4 * 1024 * 1024;

/// How the next transfer's data connection will be made.
#[derive(Debug)]
pub enum DataChannel {
    /// PASV/EPSV: we listen, the client connects.
    Passive(TcpListener),
    /// PORT/EPRT: we connect to the client.
    Active(SocketAddr),
}

/// Canonical form of an address, so `::ffff:127.0.0.1` and `127.0.0.1` compare equal.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a PORT/EPRT target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ActiveRefused {
    /// The address is not the client's own (FTP bounce).
    #[error("data connections only to your own address")]
    ForeignAddress,
    /// A privileged port (RFC 2577: could reach a system service).
    #[error("data connections only to ports 1024 and above")]
    PrivilegedPort,
}

/// Checks a PORT/EPRT target against the control connection's peer.
pub fn check_active_target(target: SocketAddr, peer: IpAddr) -> Result<(), ActiveRefused> {
    if canonical(target.ip()) != canonical(peer) {
        return Err(ActiveRefused::ForeignAddress);
    }
    if target.port() < 1024 {
        return Err(ActiveRefused::PrivilegedPort);
    }
    Ok(())
}

/// Opens a passive listener on `ip`, in `ports` when given (random start, then the rest of the
/// range, so concurrent sessions rarely collide), else on a port the OS picks.
pub async fn listen_passive(
    ip: IpAddr,
    ports: Option<&RangeInclusive<u16>>,
) -> io::Result<TcpListener> {
    let Some(range) = ports else {
        return TcpListener::bind(SocketAddr::new(ip, 0)).await;
    };
    let (lo, hi) = (*range.start(), *range.end());
    let span = u32::from(hi.saturating_sub(lo)) + 1;
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let port = lo as u32 + (start + i) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        // SO_REUSEADDR (set by tokio's bind) lets a passive port be reused while connections
        // of earlier transfers on it are in TIME_WAIT, which the server's side of every
        // download is: without it, a few thousand small files ran out of ports (425).
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free passive port in the configured range",
    ))
}

impl DataChannel {
    /// Establishes the connection: accepts the client's (from `peer` only, directly or through
    /// a trusted `proxy` that names it) or connects to it from `local`, giving up after `wait`.
    pub async fn connect(
        self,
        peer: IpAddr,
        local: IpAddr,
        proxy: Option<&ProxyProtocol>,
        wait: Duration,
    ) -> io::Result<TcpStream> {
        let deadline = Instant::now() + wait;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "no data connection in time");
        match self {
            DataChannel::Passive(listener) => loop {
                let (mut stream, from) = tokio::time::timeout_at(deadline, listener.accept())
                    .await
                    .map_err(|_| timed_out())??;
                if canonical(from.ip()) == canonical(peer) {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                if let Some(proxy) = proxy.filter(|p| p.trusts(from.ip())) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match read_header(&mut stream, proxy.header_timeout.min(left)).await {
                        Ok(Proxied::Client(client))
                            if canonical(client.ip()) == canonical(peer) =>
                        {
                            stream.set_nodelay(true)?;
                            return Ok(stream);
                        }
                        Ok(Proxied::Client(client)) => tracing::warn!(
                            %from, %client, %peer,
                            "refused a proxied data connection for another client"
                        ),
                        Ok(Proxied::Local) => {}
                        Err(err) => {
                            tracing::warn!(%from, %err, "refused a proxied data connection")
                        }
                    }
                    continue;
                }
                tracing::warn!(%from, %peer, "refused a data connection from a foreign address");
            },
            DataChannel::Active(target) => {
                let socket = if target.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                let local = if target.is_ipv4() {
                    canonical(local)
                } else {
                    local
                };
                if local.is_ipv4() == target.is_ipv4() {
                    socket.bind(SocketAddr::new(local, 0))?;
                }
                let stream = tokio::time::timeout_at(deadline, socket.connect(target))
                    .await
                    .map_err(|_| timed_out())??;
                stream.set_nodelay(true)?;
                Ok(stream)
            }
        }
    }
}

/// Line-ending conversion applied while copying (TYPE A).
#[derive(Debug)]
pub enum Convert {
    /// TYPE I: bytes unchanged.
    None,
    /// Download in TYPE A: LF to CRLF.
    ToWire(ToCrlf),
    /// Upload in TYPE A: CRLF to LF.
    FromWire(FromCrlf),
}

/// Which side of a copy failed: the caller knows which side is the network (426) and which
/// the storage (452 for a full disk, 451 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading failed or stalled.
    #[error("{0}")]
    Read(io::Error),
    /// Writing failed or stalled.
    #[error("{0}")]
    Write(io::Error),
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "transfer stalled")
}

/// Copies `reader` to `writer` until EOF, converting line endings as asked, and fails if no
/// progress is made for `stall` (a client that stopped reading or sending). Returns the bytes
/// read. The writer is flushed but not shut down.
pub async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    mut convert: Convert,
    stall: Duration,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut converted = Vec::new();
    let mut total = 0u64;
    loop {
        let n = match timeout(stall, reader.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(err)) => return Err(CopyError::Read(err)),
            Err(_) => return Err(CopyError::Read(stalled())),
        };
        converted.clear();
        let chunk: &[u8] = match (&mut convert, n) {
            (Convert::FromWire(c), 0) => {
                c.finish(&mut converted);
                &converted
            }
            (_, 0) => &[],
            (Convert::None, n) => &buf[..n],
            (Convert::ToWire(c), n) => {
                c.convert(&buf[..n], &mut converted);
                &converted
            }
            (Convert::FromWire(c), n) => {
                c.convert(&buf[..n], &mut converted);
                &converted
            }
        };
        if !chunk.is_empty() {
            write_within(stall, writer.write_all(chunk)).await?;
        }
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    write_within(stall, writer.flush()).await?;
    Ok(total)
}

/// Sends `file` from its current position to its end with sendfile(2): the kernel moves the
/// bytes from the page cache to the socket, with no copy through this process and one system
/// call per socket buffer. Fails if the socket takes nothing for `stall`. Returns the bytes
/// sent. Reading a page that is not cached blocks this thread for the disk read, as a
/// buffered read would block a blocking-pool thread.
pub async fn send_file(
    file: &std::fs::File,
    stream: &TcpStream,
    stall: Duration,
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        match timeout(stall, stream.writable()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(CopyError::Write(err)),
            Err(_) => return Err(CopyError::Write(stalled())),
        }
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, None, SENDFILE_CHUNK).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if is_network_error(&err) => return Err(CopyError::Write(err)),
            Err(err) => return Err(CopyError::Read(err)),
        }
    }
}

/// Receives a plain binary upload straight into a file with splice(2): socket to a pipe (the
/// kernel moves the received pages, no copy), then pipe to the file (one copy, into the page
/// cache) on the blocking pool. Two pipes alternate, so the next chunk (up to
/// [`SPLICE_PIPE`]) is received while the previous one is written. Each chunk is offered to
/// `upload` ([`Upload::accept_direct`]: the quota) before it is written; a refusal fails the
/// copy on the write side, as a refused write would. Returns the bytes received, all of them
/// written.
pub async fn receive_to_file(
    stream: &TcpStream,
    file: DirectFile,
    upload: &mut dyn Upload,
    stall: Duration,
) -> Result<u64, CopyError> {
    let DirectFile { fd: file, busy } = file;
    let mut free = vec![new_pipe()?, new_pipe()?];
    let mut file = Some(file);
    // The write in flight: it gives back the file and its pipe when done.
    let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
    let mut total = 0u64;
    loop {
        let Some((pipe_out, pipe_in)) = free.pop() else {
            unreachable!("a pipe is free whenever at most one write is in flight");
        };
        let n = match receive_chunk(stream, &pipe_in, stall).await {
            Ok(0) => {
                finish_write(&mut writing, &mut file, &mut free).await?;
                return Ok(total);
            }
            Ok(n) => n,
            Err(err) => return Err(CopyError::Read(err)),
        };
        upload
            .accept_direct(n as u64)
            .await
            .map_err(CopyError::Write)?;
        finish_write(&mut writing, &mut file, &mut free).await?;
        if n <= INLINE_WRITE
            && let Some(target) = &file
        {
            // A small chunk (a small file, a slow client) costs less to write here than a
            // hop to the blocking pool, and nothing is left running if this is cancelled.
            drain_pipe(&pipe_out, target, n).map_err(CopyError::Write)?;
            free.push((pipe_out, pipe_in));
            total += n as u64;
            continue;
        }
        let Some(target) = file.take() else {
            unreachable!("the file comes back with every finished write");
        };
        // If this transfer is cancelled meanwhile, the write still finishes, and the guard
        // makes the upload's commit or abort wait for it.
        let guard = Arc::clone(&busy).lock_owned().await;
        writing = Some(tokio::task::spawn_blocking(move || {
            let result = drain_pipe(&pipe_out, &target, n);
            drop(guard);
            Written {
                pipe: (pipe_out, pipe_in),
                file: target,
                result,
            }
        }));
        total += n as u64;
    }
}

/// A pipe: (read end, write end).
type Pipe = (OwnedFd, OwnedFd);

/// What a chunk's write gives back.
struct Written {
    pipe: Pipe,
    file: OwnedFd,
    result: io::Result<()>,
}

fn new_pipe() -> Result<Pipe, CopyError> {
    let (out, into) = pipe_with(PipeFlags::CLOEXEC).map_err(|err| CopyError::Write(err.into()))?;
    // A larger pipe means fewer, larger chunks; the default 64 KiB still works.
    let _ = fcntl_setpipe_size(&into, SPLICE_PIPE);
    Ok((out, into))
}

/// Moves what the socket has (at least one byte, at most a pipe's worth) into `pipe_in`;
/// 0 at the end of the stream.
async fn receive_chunk(
    stream: &TcpStream,
    pipe_in: &OwnedFd,
    stall: Duration,
) -> io::Result<usize> {
    loop {
        match timeout(stall, stream.readable()).await {
            Ok(ready) => ready?,
            Err(_) => return Err(stalled()),
        }
        let received = stream.try_io(Interest::READABLE, || {
            let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
            splice(stream, None, pipe_in, None, SPLICE_PIPE, flags).map_err(io::Error::from)
        });
        match received {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}

/// Waits for the write in flight, if any, and takes back its file and pipe.
async fn finish_write(
    writing: &mut Option<tokio::task::JoinHandle<Written>>,
    file: &mut Option<OwnedFd>,
    free: &mut Vec<Pipe>,
) -> Result<(), CopyError> {
    let Some(handle) = writing.take() else {
        return Ok(());
    };
    let written = handle
        .await
        .map_err(|err| CopyError::Write(io::Error::other(err)))?;
    *file = Some(written.file);
    free.push(written.pipe);
    written.result.map_err(CopyError::Write)
}

/// Moves exactly `n` bytes from a pipe into a file (blocking).
fn drain_pipe(pipe: &OwnedFd, file: &OwnedFd, mut n: usize) -> io::Result<()> {
    while n > 0 {
        match splice(pipe, None, file, None, n, SpliceFlags::MOVE) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no bytes",
                ));
            }
            Ok(k) => n -= k,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Whether a sendfile(2) error came from the socket rather than the file.
fn is_network_error(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | TimedOut
    )
}

async fn write_within(
    stall: Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> Result<(), CopyError> {
    match timeout(stall, write).await {
        Ok(result) => result.map_err(CopyError::Write),
        Err(_) => Err(CopyError::Write(stalled())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_targets_must_be_the_peer_on_an_unprivileged_port() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            check_active_target("127.0.0.1:5000".parse().unwrap(), peer),
            Ok(())
        );
        assert_eq!(
            check_active_target("[::ffff:127.0.0.1]:5000".parse().unwrap(), peer),
            Ok(())
        );
        assert_eq!(
            check_active_target("10.0.0.1:5000".parse().unwrap(), peer),
            Err(ActiveRefused::ForeignAddress)
        );
        assert_eq!(
            check_active_target("127.0.0.1:25".parse().unwrap(), peer),
            Err(ActiveRefused::PrivilegedPort)
        );
    }

    #[tokio::test]
    async fn passive_ports_come_from_the_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let range = base..=base;
        let l = listen_passive(ip, Some(&range)).await.unwrap();
        assert_eq!(l.local_addr().unwrap().port(), base);
        let err = listen_passive(ip, Some(&range)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn copy_converts_line_endings_across_chunks() {
        let mut input: &[u8] = b"a\r\nb\r\n";
        let mut out = Vec::new();
        let n = copy(
            &mut input,
            &mut out,
            Convert::FromWire(FromCrlf::default()),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!((n, out.as_slice()), (6, &b"a\nb\n"[..]));
    }
}
