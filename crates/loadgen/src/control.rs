//! A bare control connection (RFC 959, AUTH TLS from RFC 4217) for sessions that log in
//! and send NOOP, and under the bench's transfers: unlike `ferry_client::Client` it binds its
//! source address before connecting, which spreads thousands of sessions over 127.0.0.0/8 so
//! that the server's per-IP limit and one address's ephemeral ports do not cap the load.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ferry_client::tls::ClientTls;
use ferry_proto::{ClientCodec, Reply};
use futures_util::{SinkExt, StreamExt};
use rustls::ProtocolVersion;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use crate::stats::{Failure, Stage};

/// Where to connect and who to log in as.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's control address.
    pub addr: SocketAddr,
    /// The account every session logs in as.
    pub user: String,
    /// Its password; never printed.
    pub password: String,
    /// Longest wait for a connection, a reply or progress on a transfer.
    pub timeout: Duration,
    /// Sessions per source address before moving to the next one.
    pub per_source: usize,
}

impl Target {
    /// The source address of the `index`th spread session: 127.0.0.2, .3, ... with
    /// `per_source` sessions each when the server is on loopback (127.0.0.1 is left to the
    /// sessions that cannot choose, such as `ferry_client`'s), else the kernel's choice.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        let IpAddr::V4(server) = self.addr.ip() else {
            return None;
        };
        if !server.is_loopback() {
            return None;
        }
        let offset = u32::try_from(index / self.per_source.max(1)).ok()?;
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        let ip = Ipv4Addr::from(base.checked_add(offset)?);
        ip.is_loopback().then_some(IpAddr::V4(ip))
    }

    /// The source address of the `nth` short-lived connection: the next of `ROTATION`
    /// addresses each time, so that the TIME_WAIT of closed connections is spread over them.
    pub fn rotating_source(&self, nth: usize) -> Option<IpAddr> {
        self.source((nth % ROTATION) * self.per_source.max(1))
    }

    /// A `ferry_client` endpoint for the sessions that transfer files.
    pub fn endpoint(&self) -> ferry_client::Endpoint {
        ferry_client::Endpoint {
            security: ferry_client::Security::Plain,
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            user: None,
            password: None,
            path: String::new(),
        }
    }
}

/// Source addresses short-lived connections take turns on.
const ROTATION: usize = 64;

/// A control or data connection, in clear or under TLS.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The TCP connection under `stream`.
fn tcp_of(stream: &Stream) -> &TcpStream {
    match stream {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    }
}

/// One control connection that has read the server's greeting.
#[derive(Debug)]
pub struct Control {
    framed: Framed<Stream, ClientCodec>,
    timeout: Duration,
}

impl Control {
    /// Connects from `source` (any address when `None`) and reads the 220 greeting.
    pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Control, Failure> {
        let from = source.map_or_else(|| "any address".to_string(), |ip| ip.to_string());
        let stream = within(target.timeout, Stage::Connect, open(target.addr, source))
            .await?
            .map_err(|err| {
                Failure::new(
                    Stage::Connect,
                    format!("{} from {from}: {err}", target.addr),
                )
            })?;
        let mut control = Control {
            framed: Framed::new(Either::Left(stream), ClientCodec::default()),
            timeout: target.timeout,
        };
        let greeting = control.read(Stage::Connect).await?;
        if greeting.code != 220 {
            return Err(Failure::new(
                Stage::Connect,
                format!("greeting of {} to {from}: {greeting}", target.addr),
            ));
        }
        Ok(control)
    }

    /// AUTH TLS and the handshake: the rest of the session is encrypted.
    pub async fn secure(mut self, tls: &ClientTls) -> Result<Control, Failure> {
        self.expect(Stage::Connect, "AUTH TLS", 234).await?;
        let Either::Left(tcp) = self.framed.into_inner() else {
            return Err(Failure::new(Stage::Connect, "AUTH TLS twice"));
        };
        let stream = within(self.timeout, Stage::Connect, tls.connect(tcp))
            .await?
            .map_err(|err| Failure::new(Stage::Connect, format!("TLS handshake: {err}")))?;
        Ok(Control {
            framed: Framed::new(Either::Right(stream), ClientCodec::default()),
            timeout: self.timeout,
        })
    }

    /// The TLS version of the control connection, when it is encrypted.
    pub fn tls_version(&self) -> Option<ProtocolVersion> {
        match self.framed.get_ref() {
            Either::Left(_) => None,
            Either::Right(tls) => tls.get_ref().1.protocol_version(),
        }
    }

    /// The server's end of the connection.
    pub fn server_addr(&self) -> std::io::Result<SocketAddr> {
        tcp_of(self.framed.get_ref()).peer_addr()
    }

    /// USER and PASS; anything but 230 at the end is a failure.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        let reply = self.command(Stage::Login, &format!("USER {user}")).await?;
        let reply = match reply.code {
            331 => {
                self.command(Stage::Login, &format!("PASS {password}"))
                    .await?
            }
            _ => reply,
        };
        if reply.code != 230 {
            return Err(Failure::new(Stage::Login, format!("as {user}: {reply}")));
        }
        Ok(())
    }

    /// Sends NOOP and returns how long the 200 took.
    pub async fn noop(&mut self) -> Result<Duration, Failure> {
        let start = Instant::now();
        let reply = self.command(Stage::Noop, "NOOP").await?;
        let took = start.elapsed();
        if reply.code != 200 {
            return Err(Failure::new(Stage::Noop, format!("NOOP: {reply}")));
        }
        Ok(took)
    }

    /// QUIT, expecting 221, then waits for the server to close first, so that the
    /// TIME_WAIT of the connection stays on its side, not on our source address's ports.
    pub async fn quit(mut self) -> Result<(), Failure> {
        self.expect(Stage::Quit, "QUIT", 221).await?;
        // Anything after the 221 (a TLS close_notify, a reset) ends the wait as well.
        while let Some(Ok(_)) = within(self.timeout, Stage::Quit, self.framed.next()).await? {}
        Ok(())
    }

    /// Writes `bytes` as they are, such as one byte of a command line, the way a slow
    /// client would.
    pub async fn write_raw(&mut self, stage: Stage, bytes: &[u8]) -> Result<(), Failure> {
        // `send` flushes every line, so nothing of the codec's is waiting to go before these.
        within(self.timeout, stage, self.framed.get_mut().write_all(bytes))
            .await?
            .map_err(|err| Failure::new(stage, format!("sending: {err}")))
    }

    /// Sends `line` and fails unless the final reply has code `code`.
    pub async fn expect(&mut self, stage: Stage, line: &str, code: u16) -> Result<Reply, Failure> {
        let reply = self.command(stage, line).await?;
        if reply.code != code {
            return Err(Failure::new(stage, format!("{}: {reply}", shown(line))));
        }
        Ok(reply)
    }

    /// Sends `line` and returns the next reply that is not a 1xx, whatever its code.
    pub async fn command(&mut self, stage: Stage, line: &str) -> Result<Reply, Failure> {
        self.send(stage, line).await?;
        self.read(stage).await
    }

    /// Sends `line` and returns its first reply, a 1xx included.
    pub async fn start(&mut self, stage: Stage, line: &str) -> Result<Reply, Failure> {
        self.send(stage, line).await?;
        self.read_any(stage).await
    }

    async fn send(&mut self, stage: Stage, line: &str) -> Result<(), Failure> {
        within(self.timeout, stage, self.framed.send(line))
            .await?
            .map_err(|err| Failure::new(stage, format!("sending {}: {err}", shown(line))))
    }

    /// The next reply that is not a 1xx.
    pub async fn read(&mut self, stage: Stage) -> Result<Reply, Failure> {
        loop {
            let reply = self.read_any(stage).await?;
            if reply.code >= 200 {
                return Ok(reply);
            }
        }
    }

    /// The next reply.
    async fn read_any(&mut self, stage: Stage) -> Result<Reply, Failure> {
        match within(self.timeout, stage, self.framed.next()).await? {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(err)) => Err(Failure::new(stage, format!("reading: {err}"))),
            None => Err(Failure::new(stage, "the server closed the connection")),
        }
    }
}

/// A command line as it may be shown: the password left out.
fn shown(line: &str) -> &str {
    match line.get(..4) {
        Some(verb) if verb.eq_ignore_ascii_case("PASS") => "PASS ****",
        _ => line,
    }
}

/// A TCP connection to `addr`, bound to `source` first when given.
pub async fn open(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `future`, or a timeout failure of `stage` after `wait`.
pub async fn within<T>(
    wait: Duration,
    stage: Stage,
    future: impl Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(wait, future)
        .await
        .map_err(|_| Failure::new(stage, format!("no answer within {wait:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str, per_source: usize) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            user: "u".into(),
            password: "p".into(),
            timeout: Duration::from_secs(1),
            per_source,
        }
    }

    #[test]
    fn loopback_sessions_are_spread_from_127_0_0_2() {
        let t = target("127.0.0.1:21", 100);
        assert_eq!(t.source(0), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(t.source(99), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(t.source(100), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(t.source(254 * 100), Some("127.0.1.0".parse().unwrap()));
    }

    #[test]
    fn other_servers_get_the_kernels_choice() {
        assert_eq!(target("192.0.2.1:21", 100).source(5), None);
        assert_eq!(target("[::1]:21", 100).source(5), None);
    }

    #[test]
    fn spreading_stops_at_the_end_of_loopback() {
        assert_eq!(target("127.0.0.1:21", 1).source(usize::MAX), None);
    }
}
