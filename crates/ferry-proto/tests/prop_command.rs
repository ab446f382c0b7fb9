//! Properties of the command parser and the control-line codec over generated input: what
//! the table tests in `command.rs` and `codec.rs` pin for single cases, for every case. The
//! fuzz targets `command_parse`, `port_eprt` and `rest_size` check the same with libFuzzer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::BytesMut;
use ferry_proto::{Command, ControlCodec, LineError, MAX_LINE_LEN, ParseError, Reply};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Verbs ferry knows, and a few it does not, so generated lines reach every parser.
const VERBS: &[&str] = &[
    "USER", "PASS", "QUIT", "TYPE", "MODE", "STRU", "PWD", "CWD", "CDUP", "MKD", "RMD", "DELE",
    "RNFR", "RNTO", "LIST", "NLST", "RETR", "STOR", "APPE", "PASV", "PORT", "REST", "STAT", "HELP",
    "SITE", "OPTS", "EPSV", "EPRT", "SIZE", "MDTM", "MLST", "MLSD", "AUTH", "PBSZ", "PROT", "CCC",
    "HASH", "RANG", "XSHA256", "XCRC", "MD5", "MMD5", "XPWD", "REIN", "SMNT",
];

/// A command line: a known verb in any case, then any text, or just any text.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(VERBS), any::<bool>(), any::<String>()).prop_map(
            |(verb, lower, arg)| {
                let verb = if lower {
                    verb.to_ascii_lowercase()
                } else {
                    verb.to_string()
                };
                format!("{verb} {arg}")
            }
        ),
        any::<String>(),
    ]
}

/// Splits `data` into reads of the given sizes (cycled, each at least one byte).
fn reads<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at((*size).clamp(1, rest.len()));
        out.push(read);
        rest = tail;
    }
    out
}

/// Decodes the reads as `Framed` would; the error, if any, ends the stream.
fn decode(max: usize, reads: &[&[u8]]) -> (Vec<String>, Option<usize>) {
    let mut codec = ControlCodec::new(max);
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let too_long = |err: LineError| match err {
        LineError::TooLong { max } => Some(max),
        LineError::Io(err) => panic!("I/O error from a buffer: {err}"),
    };
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => break,
                Err(err) => return (lines, too_long(err)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => return (lines, None),
            Err(err) => return (lines, too_long(err)),
        }
    }
}

proptest! {
    #[test]
    fn parse_never_panics_and_every_error_is_a_5xx_reply(line in line()) {
        match Command::parse(&line) {
            Ok(cmd) => prop_assert!(!cmd.verb().is_empty()),
            Err(err) => {
                prop_assert!(matches!(err.reply_code(), 500 | 501 | 502 | 504 | 522), "{:?}", err);
                prop_assert_eq!(
                    err == ParseError::Empty,
                    line.trim_start_matches(' ').is_empty()
                );
            }
        }
    }

    #[test]
    fn port_arguments_round_trip(ip in any::<Ipv4Addr>(), port in any::<u16>(), pad in " {0,2}") {
        let [a, b, c, d] = ip.octets();
        let [p1, p2] = port.to_be_bytes();
        let line = format!("PORT {pad}{a},{b},{pad}{c},{d},{p1}{pad},{p2}{pad}");
        prop_assert_eq!(
            Command::parse(&line),
            Ok(Command::Port(SocketAddrV4::new(ip, port)))
        );
    }

    #[test]
    fn eprt_arguments_round_trip_with_any_safe_delimiter(
        ip in any::<IpAddr>(),
        port in any::<u16>(),
        delim in prop::sample::select(&b"|!#$%&'()*+,-/;<=>?@[]^_`{}~"[..]),
    ) {
        let d = char::from(delim);
        let proto = if ip.is_ipv4() { 1 } else { 2 };
        let line = format!("EPRT {d}{proto}{d}{ip}{d}{port}{d}");
        prop_assert_eq!(Command::parse(&line), Ok(Command::Eprt(SocketAddr::new(ip, port))));
    }

    #[test]
    fn any_parsed_port_or_eprt_reformats_to_itself(arg in any::<String>(), digits in "[0-9,|.:]{0,40}") {
        for arg in [arg, digits] {
            if let Ok(Command::Port(addr)) = Command::parse(&format!("PORT {arg}")) {
                let [a, b, c, d] = addr.ip().octets();
                let [p1, p2] = addr.port().to_be_bytes();
                let again = Command::parse(&format!("PORT {a},{b},{c},{d},{p1},{p2}"));
                prop_assert_eq!(again, Ok(Command::Port(addr)));
            }
            if let Ok(Command::Eprt(addr)) = Command::parse(&format!("EPRT {arg}")) {
                let proto = if addr.is_ipv4() { 1 } else { 2 };
                let again = Command::parse(&format!("EPRT |{proto}|{}|{}|", addr.ip(), addr.port()));
                prop_assert_eq!(again, Ok(Command::Eprt(addr)));
            }
        }
    }

    #[test]
    fn rest_offsets_equal_their_decimal_value(offset in any::<u64>(), zeros in "0{0,3}", pad in " {0,2}") {
        let line = format!("REST {pad}{zeros}{offset}{pad}");
        prop_assert_eq!(Command::parse(&line), Ok(Command::Rest(offset)));
    }

    #[test]
    fn rest_offsets_beyond_u64_are_refused_with_501(excess in 1..=u128::from(u64::MAX)) {
        let line = format!("REST {}", u128::from(u64::MAX) + excess);
        prop_assert_eq!(Command::parse(&line).map_err(|e| e.reply_code()), Err(501));
    }

    #[test]
    fn rest_accepts_only_decimal_digits(arg in any::<String>()) {
        let digits = arg.trim();
        let expected = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten();
        match Command::parse(&format!("REST {arg}")) {
            Ok(cmd) => prop_assert_eq!(Some(cmd), expected.map(Command::Rest)),
            Err(err) => {
                prop_assert_eq!(expected, None);
                prop_assert_eq!(err.reply_code(), 501);
            }
        }
    }

    #[test]
    fn rang_yields_ordered_offsets_or_the_reset(start in any::<u64>(), end in any::<u64>()) {
        let parsed = Command::parse(&format!("RANG {start} {end}"));
        if start <= end || (start, end) == (1, 0) {
            prop_assert_eq!(parsed, Ok(Command::Rang(start, end)));
        } else {
            prop_assert_eq!(parsed.map_err(|e| e.reply_code()), Err(501));
        }
    }

    #[test]
    fn codec_lines_are_bounded_and_independent_of_chunking(
        data in prop::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xFF), Just(b'a'), Just(0x80), any::<u8>()],
            0..200,
        ),
        sizes in prop::collection::vec(1..16usize, 1..8),
        max in 0..24usize,
    ) {
        let whole = decode(max, &[&data]);
        prop_assert_eq!(&whole, &decode(max, &reads(&data, &sizes)));
        prop_assert_eq!(&whole, &decode(max, &reads(&data, &[1])));
        if let Some(limit) = whole.1 {
            prop_assert_eq!(limit, max);
        }
        for line in &whole.0 {
            prop_assert!(!line.contains('\n'), "{:?}", line);
            prop_assert!(line.chars().count() <= max, "{:?}", line);
        }
    }

    #[test]
    fn codec_returns_the_lines_it_was_sent(
        lines in prop::collection::vec("[^\r\n]{0,40}", 0..8),
        crlf in any::<bool>(),
        sizes in prop::collection::vec(1..16usize, 1..8),
    ) {
        let ending = if crlf { "\r\n" } else { "\n" };
        let wire: String = lines.iter().map(|l| format!("{l}{ending}")).collect();
        let (got, error) = decode(MAX_LINE_LEN, &reads(wire.as_bytes(), &sizes));
        prop_assert_eq!(error, None);
        prop_assert_eq!(got, lines);
    }

    #[test]
    fn replies_are_crlf_lines_that_only_the_last_closes(
        code in 100..600u16,
        lines in prop::collection::vec(any::<String>(), 0..5),
    ) {
        let count = lines.len().max(1);
        let wire = String::from_utf8(Reply { code, lines }.to_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let sent: Vec<&str> = wire.split_terminator("\r\n").collect();
        prop_assert_eq!(sent.len(), count, "{:?}", wire);
        let closing = format!("{code} ");
        for (i, line) in sent.iter().enumerate() {
            prop_assert!(!line.contains(['\r', '\n']), "{:?}", line);
            prop_assert_eq!(line.starts_with(&closing), i == count - 1, "{:?}", wire);
        }
    }
}
