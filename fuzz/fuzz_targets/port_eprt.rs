//! PORT, EPRT and EPSV arguments (RFC 959 4.1.2, RFC 2428), and the anti-bounce check every
//! active target passes (RFC 2577).
//!
//! The input is a line (`PORT 127,0,0,1,4,1` from the seeds) or a bare argument; the argument
//! is tried with each verb. Asserts: a parsed PORT/EPRT address, written out the standard way,
//! parses back to itself; EPSV accepts exactly nothing, 1, 2 and ALL; errors are 501 or 522.
//! `check_active_target`, for the parsed address and for addresses made from the raw bytes
//! against several peers, accepts exactly the peer's own address (IPv4-mapped IPv6 counts as
//! IPv4) on a port of 1024 or more.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ferry_fuzz::argument;
use ferry_proto::{Command, EpsvArg};
use ferry_server::data::{ActiveRefused, canonical, check_active_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let arg = argument(&text, &["PORT", "EPRT", "EPSV"]);

    let mut targets = raw_targets(data);
    match Command::parse(&format!("PORT {arg}")) {
        Ok(Command::Port(addr)) => {
            let [a, b, c, d] = addr.ip().octets();
            let [p1, p2] = addr.port().to_be_bytes();
            let again = Command::parse(&format!("PORT {a},{b},{c},{d},{p1},{p2}"));
            assert_eq!(again, Ok(Command::Port(addr)));
            targets.push(SocketAddr::V4(addr));
        }
        Ok(other) => panic!("PORT parsed as {other:?}"),
        Err(err) => assert_eq!(err.reply_code(), 501, "{err:?}"),
    }
    match Command::parse(&format!("EPRT {arg}")) {
        Ok(Command::Eprt(addr)) => {
            let proto = if addr.is_ipv4() { 1 } else { 2 };
            let again = Command::parse(&format!("EPRT |{proto}|{}|{}|", addr.ip(), addr.port()));
            assert_eq!(again, Ok(Command::Eprt(addr)));
            targets.push(addr);
        }
        Ok(other) => panic!("EPRT parsed as {other:?}"),
        Err(err) => assert!(matches!(err.reply_code(), 501 | 522), "{err:?}"),
    }
    let expected = match arg.trim().to_ascii_uppercase().as_str() {
        "" | "1" | "2" => Some(EpsvArg::Open),
        "ALL" => Some(EpsvArg::All),
        _ => None,
    };
    match Command::parse(&format!("EPSV {arg}")) {
        Ok(Command::Epsv(got)) => assert_eq!(Some(got), expected),
        Ok(other) => panic!("EPSV parsed as {other:?}"),
        Err(err) => {
            assert_eq!(expected, None);
            assert_eq!(err.reply_code(), 522, "{err:?}");
        }
    }

    for target in &targets {
        for peer in peers(target.ip(), data) {
            check_target(*target, peer);
        }
    }
});

/// Targets made straight from the bytes, so the check sees addresses no parser produced.
fn raw_targets(data: &[u8]) -> Vec<SocketAddr> {
    let mut v6 = [0u8; 16];
    let mut v4 = [0u8; 4];
    let mut port = [0u8; 2];
    for (i, byte) in data.iter().enumerate() {
        v6[i % 16] ^= byte;
        v4[i % 4] ^= byte;
        port[i % 2] ^= byte;
    }
    let port = u16::from_be_bytes(port);
    vec![
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), port),
        SocketAddr::new(IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped()), port),
    ]
}

/// Peers to check `ip` against: itself, its other spelling (mapped or not), and ones from
/// the raw bytes that usually differ.
fn peers(ip: IpAddr, data: &[u8]) -> Vec<IpAddr> {
    let twin = match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
    };
    let mut tail = [0u8; 16];
    for (slot, byte) in tail.iter_mut().zip(data.iter().rev()) {
        *slot = *byte;
    }
    let [a, b, c, d, ..] = tail;
    vec![
        ip,
        twin,
        IpAddr::V6(Ipv6Addr::from(tail)),
        IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
    ]
}

/// The check against a model written independently of `canonical`.
fn check_target(target: SocketAddr, peer: IpAddr) {
    let same_host = as_v4(target.ip()) == as_v4(peer);
    let verdict = check_active_target(target, peer);
    if verdict.is_ok() {
        assert_eq!(
            canonical(target.ip()),
            canonical(peer),
            "{target} for {peer}"
        );
        assert!(target.port() >= 1024, "{target} for {peer}");
    }
    let expected = if !same_host {
        Err(ActiveRefused::ForeignAddress)
    } else if target.port() < 1024 {
        Err(ActiveRefused::PrivilegedPort)
    } else {
        Ok(())
    };
    assert_eq!(verdict, expected, "{target} for {peer}");
}

/// An address as 16 bytes, IPv4 written as IPv4-mapped IPv6 (RFC 4291 2.5.5.2).
fn as_v4(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}
