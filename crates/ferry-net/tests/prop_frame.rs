//! Properties of the frame codec and the HMAC handshake over generated input: frames survive
//! any split into reads in both wire formats, limits hold from the first bytes, and only the
//! holder of the key passes the handshake. The fuzz targets `frame_decode` and `handshake`
//! check the same with libFuzzer.

use bytes::{Bytes, BytesMut};
use ferry_net::frame::{Format, Frame, FrameCodec, FrameError, MAX_HEADER};
use ferry_net::handshake::{
    Algorithm, CHALLENGE_LEN, Challenger, HandshakeError, Key, Prover, answer,
};
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Standard), Just(Format::Classic)]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Sha256), Just(Algorithm::Md5)]
}

/// JSON values without floats: serde_json only promises exact float round trips with its
/// `float_roundtrip` feature, and ferry's headers carry names and sizes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop::collection::vec(inner, 0..3).prop_map(Value::from)
    })
}

/// A header as a command sends it; the size fields are left to the encoder.
fn header() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z]{1,8}|.{0,4}", json_value(), 0..4).prop_map(|fields| {
        fields
            .into_iter()
            .filter(|(key, _)| key != "size" && key != "filesize")
            .collect()
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    (header(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(header, body)| Frame {
        header,
        body: Bytes::from(body),
    })
}

fn encode(codec: &mut FrameCodec, frame: Frame) -> Result<BytesMut, FrameError> {
    let mut out = BytesMut::new();
    codec.encode(frame, &mut out)?;
    Ok(out)
}

/// Decodes `wire` arriving in reads of the given sizes (cycled), as `Framed` would.
fn decode_in_reads(
    codec: &mut FrameCodec,
    wire: &[u8],
    sizes: &[usize],
) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = wire;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at((*size).clamp(1, rest.len()));
        rest = tail;
        buf.extend_from_slice(read);
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// The frame as the peer will see it: the encoder adds the size field for a body.
fn as_sent(format: Format, mut frame: Frame) -> Frame {
    if !frame.body.is_empty() {
        frame.header.insert(
            format.size_key().into(),
            Value::from(frame.body.len() as u64),
        );
    }
    frame
}

fn hmac_of(algorithm: Algorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        match <M as KeyInit>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
    match algorithm {
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
        Algorithm::Md5 => run::<Hmac<md5::Md5>>(key, message),
    }
}

proptest! {
    #[test]
    fn frames_round_trip_in_both_formats_under_any_chunking(
        format in format(),
        frames in prop::collection::vec(frame(), 1..4),
        sizes in prop::collection::vec(1..32usize, 1..6),
    ) {
        let mut codec = FrameCodec::new(format);
        let mut wire = BytesMut::new();
        for frame in &frames {
            wire.extend_from_slice(&encode(&mut codec, frame.clone())?);
        }
        let got = decode_in_reads(&mut FrameCodec::new(format), &wire, &sizes)?;
        let sent: Vec<Frame> = frames.into_iter().map(|f| as_sent(format, f)).collect();
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_by_both_ends(
        format in format(),
        header in header(),
        body in prop::collection::vec(any::<u8>(), 1..64),
        limit in any::<prop::sample::Index>(),
    ) {
        let max_body = limit.index(body.len());
        let frame = Frame { header, body: Bytes::from(body) };
        let mut strict = FrameCodec::with_limits(format, MAX_HEADER, max_body);
        let sent = encode(&mut strict, frame.clone());
        prop_assert!(
            matches!(sent, Err(FrameError::TooLarge { what: "body", .. })),
            "{:?}",
            sent
        );
        // The receiver refuses from the header alone, before buffering any of the body.
        let mut wire = encode(&mut FrameCodec::new(format), frame.clone())?;
        wire.truncate(wire.len() - frame.body.len());
        let refused = strict.decode(&mut wire);
        prop_assert!(
            matches!(refused, Err(FrameError::TooLarge { what: "body", max }) if max == max_body as u64),
            "{:?}",
            refused
        );
    }

    #[test]
    fn a_header_over_the_limit_is_refused_from_its_length_alone(
        format in format(),
        frame in frame(),
        limit in any::<prop::sample::Index>(),
    ) {
        let wire = encode(&mut FrameCodec::new(format), frame.clone())?;
        let max_header = limit.index(wire.len() - 4 - frame.body.len());
        let mut strict = FrameCodec::with_limits(format, max_header, 1024);
        let sent = encode(&mut strict, frame);
        prop_assert!(
            matches!(sent, Err(FrameError::TooLarge { what: "header", .. })),
            "{:?}",
            sent
        );
        let refused = strict.decode(&mut BytesMut::from(&wire[..4]));
        prop_assert!(
            matches!(refused, Err(FrameError::TooLarge { what: "header", .. })),
            "{:?}",
            refused
        );
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated_not_a_frame(
        format in format(),
        frame in frame(),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = encode(&mut FrameCodec::new(format), frame)?;
        let cut = 1 + cut.index(wire.len() - 1);
        let mut codec = FrameCodec::new(format);
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert!(codec.decode(&mut buf)?.is_none());
        prop_assert!(matches!(codec.decode_eof(&mut buf), Err(FrameError::Truncated)));
    }

    #[test]
    fn decoding_any_bytes_yields_bounded_bodies_or_a_typed_error(
        format in format(),
        wire in prop::collection::vec(any::<u8>(), 0..128),
        sizes in prop::collection::vec(1..16usize, 1..4),
        max_header in 0..64usize,
        max_body in 0..64usize,
    ) {
        let mut codec = FrameCodec::with_limits(format, max_header, max_body);
        match decode_in_reads(&mut codec, &wire, &sizes) {
            Ok(frames) => {
                for frame in frames {
                    prop_assert!(frame.body.len() <= max_body);
                }
            }
            Err(FrameError::Io(err)) => return Err(TestCaseError::fail(err.to_string())),
            Err(_) => {}
        }
    }

    #[test]
    fn the_holder_of_the_key_passes(
        algorithm in algorithm(),
        key in prop::collection::vec(any::<u8>(), 0..100),
        challenge in any::<[u8; CHALLENGE_LEN]>(),
    ) {
        let (waiting, sent) = Challenger::new(Key::new(key.clone()), algorithm).challenge_with(challenge);
        let response = Prover::new(Key::new(key.clone()), algorithm).respond(&sent)?;
        prop_assert_eq!(&response, &hmac_of(algorithm, &key, &challenge));
        prop_assert!(waiting.verify(&response).is_ok());
    }

    #[test]
    fn any_other_answer_fails(
        algorithm in algorithm(),
        key in prop::collection::vec(any::<u8>(), 0..100),
        challenge in any::<[u8; CHALLENGE_LEN]>(),
        got in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let right = answer(&Key::new(key.clone()), algorithm, &challenge);
        prop_assume!(got != right);
        let (waiting, _) = Challenger::new(Key::new(key), algorithm).challenge_with(challenge);
        let verdict = waiting.verify(&got);
        if got.len() == algorithm.answer_len() {
            prop_assert_eq!(verdict.err(), Some(HandshakeError::WrongAnswer));
        } else {
            prop_assert_eq!(
                verdict.err(),
                Some(HandshakeError::WrongLength { expected: algorithm.answer_len(), got: got.len() })
            );
        }
    }

    #[test]
    fn a_peer_with_another_key_fails(
        algorithm in algorithm(),
        key in prop::collection::vec(any::<u8>(), 1..40),
        other in prop::collection::vec(any::<u8>(), 1..40),
        challenge in any::<[u8; CHALLENGE_LEN]>(),
    ) {
        // HMAC pads short keys with zeros: `k` and `k\0` are the same key.
        let trim = |k: &[u8]| k.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        prop_assume!(key[..trim(&key)] != other[..trim(&other)]);
        let (waiting, sent) = Challenger::new(Key::new(key), algorithm).challenge_with(challenge);
        let response = Prover::new(Key::new(other), algorithm).respond(&sent)?;
        prop_assert_eq!(waiting.verify(&response).err(), Some(HandshakeError::WrongAnswer));
    }

    #[test]
    fn challenges_of_the_wrong_length_are_refused(
        algorithm in algorithm(),
        challenge in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        prop_assume!(challenge.len() != CHALLENGE_LEN);
        let prover = Prover::new(Key::new("k"), algorithm);
        prop_assert_eq!(
            prover.respond(&challenge),
            Err(HandshakeError::BadChallenge(challenge.len()))
        );
    }
}
