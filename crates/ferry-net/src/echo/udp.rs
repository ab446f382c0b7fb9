//! The UDP echo server (RFC 862): every datagram is one message and gets one answer. There is
//! no connection, so no handshake and no per-client task: one loop answers everyone, and a
//! client that stops listening costs nothing.

use std::future::Future;
use std::io;

use tokio::net::UdpSocket;
use tracing::{debug, info};

use super::Mode;

/// Largest UDP payload; a smaller buffer would silently truncate big datagrams.
const MAX_DATAGRAM: usize = 65_535;

/// Answers datagrams on `socket` according to `mode` until `shutdown` completes.
pub async fn run(
    socket: UdpSocket,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    info!(addr = %socket.local_addr()?, "echo: serving UDP");
    tokio::select! {
        _ = shutdown => {}
        _ = answer_loop(&socket, mode) => {}
    }
    Ok(())
}

async fn answer_loop(socket: &UdpSocket, mode: Mode) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        // Errors here concern one datagram or one peer (some systems report an earlier
        // reply's ICMP "port unreachable" on the next receive): skip it, keep serving.
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                debug!(%err, "echo: UDP receive failed");
                continue;
            }
        };
        if let Err(err) = socket.send_to(&mode.answer(&buf[..n]), peer).await {
            debug!(%peer, %err, "echo: UDP reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_datagram_gets_its_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(server, Mode::Greet, async {
            let _ = stopped.await;
        }));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let mut buf = [0; 64];
        for (message, answer) in [
            (&b"bob"[..], &b"Hello, bob!"[..]),
            (b"exit", b"Hello, exit!"),
        ] {
            client.send(message).await.unwrap();
            let n = client.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], answer);
        }
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
