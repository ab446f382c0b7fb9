//! PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): behind a load balancer, a header
//! before the first byte of FTP carries the client's real address. Only trusted proxies may
//! send one, and they must: from anyone else a header would let a client claim any address.
//!
//! The header is framed here (exactly its bytes are read, so FTP data that follows it on a
//! data connection stays in the socket) and parsed by the `ppp` crate.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use ipnet::IpNet;
use ppp::HeaderResult;
use ppp::v1::Addresses as V1Addresses;
use ppp::v2::{Addresses as V2Addresses, Command as V2Command};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::data::canonical;

/// The 12 bytes a v2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (the spec's own bound).
const V1_MAX: usize = 107;

/// The longest v2 header accepted: the fixed part, IPv6 addresses and a few TLVs. The spec
/// allows 16 + 65535 bytes; nothing a load balancer sends for TCP comes near this.
const V2_MAX: usize = 536;

/// How long a trusted proxy gets to send its header by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which peers speak the PROXY protocol, and how long they get to.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// The load balancers' addresses: only these may, and must, send a header.
    pub trusted: Vec<IpNet>,
    /// A trusted peer that has not sent its whole header after this is dropped.
    pub header_timeout: Duration,
}

impl ProxyProtocol {
    /// Proxy protocol from the `trusted` networks, with the default header timeout.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        ProxyProtocol {
            trusted,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// Parses `IP` or `IP/prefix` (a trusted proxy or network of them).
pub fn parse_trusted(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("expected IP or IP/prefix, got {text:?}"))
}

/// What a proxy's header says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A client's connection relayed from this address.
    Client(SocketAddr),
    /// The proxy's own connection (a v2 LOCAL or v1 UNKNOWN header: a health check).
    Local,
}

/// Why a header was not accepted; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Nothing arrived in time.
    #[error("no PROXY header within {0:?}")]
    TimedOut(Duration),
    /// The peer closed before sending a byte (a plain TCP health check).
    #[error("closed before a PROXY header")]
    Closed,
    /// The first bytes are no PROXY header.
    #[error("no PROXY header")]
    Missing,
    /// Longer than any header we accept.
    #[error("PROXY header too long")]
    TooLong,
    /// Framed like a header but not a valid one, or not for a TCP connection.
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads exactly one header from `stream`, within `wait`, and says what it means.
pub async fn read_header<R>(stream: &mut R, wait: Duration) -> Result<Proxied, HeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let bytes = tokio::time::timeout(wait, read_header_bytes(stream))
        .await
        .map_err(|_| HeaderError::TimedOut(wait))??;
    parse(&bytes)
}

/// Reads the bytes of one header and nothing after it: the v2 length field says where it
/// ends, a v1 header ends at CRLF.
async fn read_header_bytes<R>(stream: &mut R) -> Result<Vec<u8>, HeaderError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    // The shortest header ("PROXY UNKNOWN\r\n") is 15 bytes, so 12 can always be read.
    let mut buf = vec![0u8; V2_SIGNATURE.len()];
    if stream.read(&mut buf[..1]).await? == 0 {
        return Err(HeaderError::Closed);
    }
    stream.read_exact(&mut buf[1..]).await?;
    if buf == V2_SIGNATURE {
        buf.resize(16, 0);
        stream.read_exact(&mut buf[12..]).await?;
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > V2_MAX {
            return Err(HeaderError::TooLong);
        }
        buf.resize(total, 0);
        stream.read_exact(&mut buf[16..]).await?;
        return Ok(buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    // Byte by byte: a read past CRLF would swallow what the client sent after the header.
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::TooLong);
        }
        buf.push(stream.read_u8().await?);
    }
    Ok(buf)
}

/// Interprets one complete header.
pub fn parse(bytes: &[u8]) -> Result<Proxied, HeaderError> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            V1Addresses::Unknown => Proxied::Local,
            V1Addresses::Tcp4(a) => {
                Proxied::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            V1Addresses::Tcp6(a) => Proxied::Client(SocketAddr::new(
                canonical(IpAddr::V6(a.source_address)),
                a.source_port,
            )),
        }),
        HeaderResult::V1(Err(err)) => Err(HeaderError::Invalid(err.to_string())),
        HeaderResult::V2(Ok(header)) => match (header.command, header.addresses) {
            (V2Command::Local, _) => Ok(Proxied::Local),
            (V2Command::Proxy, V2Addresses::IPv4(a)) => Ok(Proxied::Client(SocketAddr::new(
                IpAddr::V4(a.source_address),
                a.source_port,
            ))),
            (V2Command::Proxy, V2Addresses::IPv6(a)) => Ok(Proxied::Client(SocketAddr::new(
                canonical(IpAddr::V6(a.source_address)),
                a.source_port,
            ))),
            (V2Command::Proxy, _) => {
                Err(HeaderError::Invalid("no TCP/IP source address".to_string()))
            }
        },
        HeaderResult::V2(Err(err)) => Err(HeaderError::Invalid(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};
    use tokio::io::AsyncWriteExt;

    fn v2(command: V2Command, from: &str, to: &str) -> Vec<u8> {
        let from: SocketAddr = from.parse().unwrap();
        let to: SocketAddr = to.parse().unwrap();
        Builder::with_addresses(Version::Two | command, Protocol::Stream, (from, to))
            .build()
            .unwrap()
    }

    /// Reads a header from `input` and returns what it says and what was left unread.
    async fn read_from(input: &[u8]) -> (Result<Proxied, HeaderError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(input).await.unwrap();
        drop(client);
        let result = read_header(&mut server, Duration::from_secs(1)).await;
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
        (result, rest)
    }

    fn client(addr: &str) -> Proxied {
        Proxied::Client(addr.parse().unwrap())
    }

    #[tokio::test]
    async fn v1_tcp4_gives_the_client_and_leaves_what_follows() {
        let (result, rest) =
            read_from(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 21\r\nUSER alice\r\n").await;
        assert_eq!(result.unwrap(), client("192.0.2.7:40000"));
        assert_eq!(rest, b"USER alice\r\n");
    }

    #[tokio::test]
    async fn v1_tcp6_gives_the_client() {
        let (result, _) = read_from(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 21\r\n").await;
        assert_eq!(result.unwrap(), client("[2001:db8::7]:40000"));
    }

    #[tokio::test]
    async fn v1_unknown_is_the_proxy_itself() {
        let (result, _) = read_from(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(result.unwrap(), Proxied::Local);
    }

    #[tokio::test]
    async fn v2_proxy_gives_the_client_and_leaves_what_follows() {
        let mut input = v2(V2Command::Proxy, "192.0.2.7:40000", "10.0.0.1:21");
        input.extend_from_slice(b"data bytes");
        let (result, rest) = read_from(&input).await;
        assert_eq!(result.unwrap(), client("192.0.2.7:40000"));
        assert_eq!(rest, b"data bytes");
    }

    #[tokio::test]
    async fn v2_ipv4_mapped_ipv6_source_is_the_ipv4_client() {
        let input = v2(V2Command::Proxy, "[::ffff:192.0.2.7]:1", "[::1]:21");
        assert_eq!(read_from(&input).await.0.unwrap(), client("192.0.2.7:1"));
    }

    #[tokio::test]
    async fn v2_local_is_a_health_check() {
        let input = v2(V2Command::Local, "127.0.0.1:1", "127.0.0.1:2");
        assert_eq!(read_from(&input).await.0.unwrap(), Proxied::Local);
    }

    #[tokio::test]
    async fn ftp_without_a_header_is_refused() {
        let (result, _) = read_from(b"USER alice\r\n").await;
        assert!(matches!(result, Err(HeaderError::Missing)), "{result:?}");
    }

    #[tokio::test]
    async fn closing_without_a_byte_is_told_apart() {
        let (result, _) = read_from(b"").await;
        assert!(matches!(result, Err(HeaderError::Closed)), "{result:?}");
    }

    #[tokio::test]
    async fn v1_without_crlf_within_107_bytes_is_too_long() {
        let mut input = b"PROXY TCP4 ".to_vec();
        input.resize(200, b'1');
        let (result, _) = read_from(&input).await;
        assert!(matches!(result, Err(HeaderError::TooLong)), "{result:?}");
    }

    #[tokio::test]
    async fn v2_announcing_more_than_the_bound_is_too_long() {
        let mut input = V2_SIGNATURE.to_vec();
        input.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        input.resize(2000, 0);
        let (result, _) = read_from(&input).await;
        assert!(matches!(result, Err(HeaderError::TooLong)), "{result:?}");
    }

    #[tokio::test]
    async fn garbled_v1_addresses_are_invalid() {
        let (result, _) = read_from(b"PROXY TCP4 not.an.ip 10.0.0.1 1 2\r\n").await;
        assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_header_cut_short_is_an_error_not_a_hang() {
        let (result, _) = read_from(b"PROXY TCP4 192.0.2.7").await;
        assert!(matches!(result, Err(HeaderError::Io(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let result = read_header(&mut server, Duration::from_millis(20)).await;
        assert!(
            matches!(result, Err(HeaderError::TimedOut(_))),
            "{result:?}"
        );
    }

    #[test]
    fn trusted_addresses_and_networks() {
        let proxy = ProxyProtocol::new(vec![
            parse_trusted("127.0.0.1").unwrap(),
            parse_trusted("10.1.0.0/16").unwrap(),
        ]);
        assert!(proxy.trusts("127.0.0.1".parse().unwrap()));
        assert!(proxy.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(proxy.trusts("10.1.200.3".parse().unwrap()));
        assert!(!proxy.trusts("127.0.0.2".parse().unwrap()));
        assert!(!proxy.trusts("10.2.0.1".parse().unwrap()));
        assert!(parse_trusted("10.1.0.0/33").is_err());
        assert!(parse_trusted("proxy.example").is_err());
    }
}
