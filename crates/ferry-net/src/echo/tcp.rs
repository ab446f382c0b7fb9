//! The TCP echo server (RFC 862) and both sides of its handshake. Every connection runs on its
//! own task and owns its state, so a slow or hostile client only ever stalls itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::upload::{self, PUT};
use super::{Auth, Config, EchoError, Framing, Mode, Service, WELCOME, error_frame, is_exit};
use crate::frame::{Frame, FrameCodec};
use crate::handshake::{CHALLENGE_LEN, Challenger, Prover};

/// Bytes asked of one read; in greet mode one read is one message, as with the classic
/// programs' `recv(8192)`.
const READ_SIZE: usize = 8192;

/// How long a client that broke the framing gets to read our error reply while we discard
/// what it still sends; closing at once would reset the connection and lose the reply.
const LINGER: Duration = Duration::from_secs(2);

/// Serves `config` on `listener` until `shutdown` completes, then stops accepting, gives open
/// connections the grace period to finish, and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    info!(addr = %listener.local_addr()?, "echo: serving TCP");
    let config = Arc::new(config);
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::select! {
        _ = shutdown => {}
        _ = accept_loop(&listener, &config, &token, &tracker) => {}
    }
    drop(listener);
    token.cancel();
    tracker.close();
    if timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!("echo: grace period over, dropping the remaining TCP connections");
    }
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    config: &Arc<Config>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracker.spawn(connection(stream, peer, Arc::clone(config), token.clone()));
            }
            // Out of file descriptors and similar: back off instead of spinning.
            Err(err) => {
                warn!(%err, "echo: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client from accept to close; logs how it ended.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    token: CancellationToken,
) {
    debug!(%peer, "echo: connected");
    // Small replies must not wait for Nagle's algorithm and the peer's delayed ACK.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%peer, %err, "echo: set_nodelay failed");
    }
    if let Some(auth) = &config.auth {
        let admitted = tokio::select! {
            _ = token.cancelled() => return,
            admitted = admit(&mut stream, auth, config.handshake_timeout) => admitted,
        };
        if let Err(err) = admitted {
            return warn!(%peer, %err, "echo: client refused");
        }
    }
    let result = match &config.service {
        Service::Raw(mode) => serve_raw(&mut stream, *mode, &token).await,
        Service::Framed(framing) => serve_framed(stream, peer, framing, &token).await,
    };
    match result {
        Ok(()) => debug!(%peer, "echo: closed"),
        Err(err) => warn!(%peer, %err, "echo: connection ended"),
    }
}

/// Answers each read according to `mode` until the peer closes (or half-closes) its side.
async fn serve_raw(
    stream: &mut TcpStream,
    mode: Mode,
    token: &CancellationToken,
) -> Result<(), EchoError> {
    if mode == Mode::Greet {
        stream.write_all(WELCOME).await?;
    }
    let mut buf = vec![0; READ_SIZE];
    loop {
        let n = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            n = stream.read(&mut buf) => n?,
        };
        let message = &buf[..n];
        if n == 0 || (mode == Mode::Greet && is_exit(message)) {
            return Ok(());
        }
        stream.write_all(&mode.answer(message)).await?;
    }
}

/// Echoes frames and saves uploads; a framing error gets an error frame before the close.
async fn serve_framed(
    stream: TcpStream,
    peer: SocketAddr,
    framing: &Framing,
    token: &CancellationToken,
) -> Result<(), EchoError> {
    let codec = FrameCodec::with_limits(framing.format, framing.max_header, framing.max_body);
    let mut frames = Framed::new(stream, codec);
    loop {
        let next = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            next = frames.next() => next,
        };
        let frame = match next.map(|r| r.map_err(EchoError::from)) {
            None => return Ok(()),
            Some(Ok(frame)) => frame,
            Some(Err(EchoError::Frame(err))) => {
                // The stream is out of step now: say why, then hang up.
                let reply = error_frame(&err.to_string());
                if let Ok(Ok(())) = timeout(LINGER, frames.send(reply)).await {
                    linger_close(frames.into_inner()).await;
                }
                return Err(EchoError::Frame(err));
            }
            Some(Err(err)) => return Err(err),
        };
        let reply = if frame.str_field("cmd") == Some(PUT) {
            put(framing, peer, &frame).await
        } else {
            frame
        };
        frames.send(reply).await?;
    }
}

async fn put(framing: &Framing, peer: SocketAddr, frame: &Frame) -> Frame {
    match upload::save(framing.upload_dir.as_deref(), frame).await {
        Ok((name, bytes)) => {
            info!(%peer, file = %name, bytes, "echo: upload saved");
            upload::saved_frame(&name, bytes)
        }
        Err(err) => {
            warn!(%peer, %err, "echo: upload refused");
            error_frame(&err.to_string())
        }
    }
}

/// Sends FIN, then reads and discards until the peer closes or `LINGER` passes, so the peer
/// gets to read what we sent last instead of a reset.
async fn linger_close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut sink = vec![0; READ_SIZE];
    while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

/// Server side of the handshake: challenge, check the answer, and in mutual mode answer the
/// client's challenge. On error the caller closes the connection.
pub async fn admit<S>(stream: &mut S, auth: &Auth, wait: Duration) -> Result<(), EchoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (awaiting, challenge) = Challenger::new(auth.key.clone(), auth.algorithm).challenge();
    stream.write_all(&challenge).await?;
    let mut answer = vec![0; awaiting.answer_len()];
    read_exact_within(stream, &mut answer, wait).await?;
    let verified = awaiting.verify(&answer)?;
    if auth.mutual {
        let mut back = [0; CHALLENGE_LEN];
        read_exact_within(stream, &mut back, wait).await?;
        stream.write_all(&verified.answer_back(&back)?).await?;
    }
    Ok(())
}

/// Client side of the handshake: answer the server's challenge, and in mutual mode check that
/// the server holds the key too. Without mutual mode a refused key shows only as the server
/// closing the connection afterwards.
pub async fn prove<S>(stream: &mut S, auth: &Auth, wait: Duration) -> Result<(), EchoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut challenge = [0; CHALLENGE_LEN];
    read_exact_within(stream, &mut challenge, wait).await?;
    let prover = Prover::new(auth.key.clone(), auth.algorithm);
    stream.write_all(&prover.respond(&challenge)?).await?;
    if auth.mutual {
        let (awaiting, back) = prover.challenge_back();
        let mut answer = vec![0; awaiting.answer_len()];
        let answered = async {
            stream.write_all(&back).await?;
            read_exact_within(stream, &mut answer, wait).await
        };
        match answered.await {
            Err(err) if err.is_disconnect() => return Err(EchoError::KeyRefused),
            other => other?,
        }
        awaiting.verify(&answer)?;
    }
    Ok(())
}

async fn read_exact_within<S>(
    stream: &mut S,
    buf: &mut [u8],
    wait: Duration,
) -> Result<(), EchoError>
where
    S: AsyncRead + Unpin,
{
    match timeout(wait, stream.read_exact(buf)).await {
        Err(_) => Err(EchoError::HandshakeTimeout(wait)),
        Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Err(EchoError::HandshakeClosed)
        }
        Ok(Err(err)) => Err(err.into()),
        Ok(Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Algorithm, HandshakeError, Key};

    const WAIT: Duration = Duration::from_secs(5);

    fn auth(key: &str, algorithm: Algorithm, mutual: bool) -> Auth {
        Auth {
            key: Key::new(key.as_bytes()),
            algorithm,
            mutual,
        }
    }

    async fn handshake(
        server: Auth,
        client: Auth,
    ) -> (Result<(), EchoError>, Result<(), EchoError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        // Each side hangs up when done, as the server does after a refusal.
        tokio::join!(
            async move { admit(&mut a, &server, WAIT).await },
            async move { prove(&mut b, &client, WAIT).await },
        )
    }

    #[tokio::test]
    async fn the_right_key_passes_in_both_algorithms_and_mutual_mode() {
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            for mutual in [false, true] {
                let (admitted, proved) =
                    handshake(auth("k", algorithm, mutual), auth("k", algorithm, mutual)).await;
                assert!(admitted.is_ok() && proved.is_ok(), "{algorithm:?} {mutual}");
            }
        }
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_and_a_mutual_client_learns_it() {
        let (admitted, proved) = handshake(
            auth("k", Algorithm::Md5, true),
            auth("other", Algorithm::Md5, true),
        )
        .await;
        assert!(matches!(
            admitted,
            Err(EchoError::Handshake(HandshakeError::WrongAnswer))
        ));
        assert!(matches!(proved, Err(EchoError::KeyRefused)));
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (mut a, _b) = tokio::io::duplex(1024);
        let wait = Duration::from_millis(50);
        let result = admit(&mut a, &auth("k", Algorithm::Sha256, false), wait).await;
        assert!(matches!(result, Err(EchoError::HandshakeTimeout(_))));
    }

    #[tokio::test]
    async fn shutdown_stops_the_server_and_closes_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(
            listener,
            Config::new(Service::Raw(Mode::Upper)),
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        let mut reply = [0; 2];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"HI");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert_eq!(client.read(&mut reply).await.unwrap(), 0);
    }
}
