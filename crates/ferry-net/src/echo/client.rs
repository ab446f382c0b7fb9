//! The client side of the TCP echo service: connect and pass the handshake, then talk raw
//! bytes on the stream or frames through [`FramedClient`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use super::{Auth, EchoError, tcp};
use crate::frame::{Format, Frame, FrameCodec};

/// Connects to `addr` and, with `auth`, proves we hold the key (each step within `wait`).
pub async fn connect(
    addr: impl ToSocketAddrs,
    auth: Option<&Auth>,
    wait: Duration,
) -> Result<TcpStream, EchoError> {
    let mut stream = TcpStream::connect(addr).await?;
    // Request-reply traffic: send each small message at once instead of batching it.
    stream.set_nodelay(true)?;
    if let Some(auth) = auth {
        tcp::prove(&mut stream, auth, wait).await?;
    }
    Ok(stream)
}

/// A connection that exchanges frames: one request, one reply.
#[derive(Debug)]
pub struct FramedClient {
    /// The stream with the codec of the server's format.
    frames: Framed<TcpStream, FrameCodec>,
}

impl FramedClient {
    /// Frames on an admitted `stream` in `format`.
    pub fn new(stream: TcpStream, format: Format) -> Self {
        FramedClient {
            frames: Framed::new(stream, FrameCodec::new(format)),
        }
    }

    /// Sends `frame` and waits for the server's reply frame.
    pub async fn request(&mut self, frame: Frame) -> Result<Frame, EchoError> {
        self.frames.send(frame).await?;
        match self.frames.next().await {
            Some(reply) => Ok(reply?),
            None => Err(EchoError::Closed),
        }
    }
}
