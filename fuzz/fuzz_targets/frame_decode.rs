//! `FrameCodec` decoding a peer's bytes, in both wire formats with small limits.
//!
//! The first input byte picks the format (low bit) and the header limit, the second the body
//! limit; the rest is the stream. Asserts: the same frames and the same error however the
//! bytes are split into reads; no body over the limit, and each body exactly the size its
//! header names; errors are the typed ones (too large, bad header, truncated), never I/O; a
//! stream that ends at a frame boundary ends cleanly and one that ends anywhere else is
//! truncated; and every decoded frame encodes and decodes back to itself, unless its
//! re-serialized header no longer fits the limit or holds a float (see `has_float`).

#![no_main]

use bytes::BytesMut;
use ferry_fuzz::{Decoded, chunkings, decode_stream, fnv1a};
use ferry_net::frame::{Format, Frame, FrameCodec, FrameError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let [first, second, wire @ ..] = data else {
        return;
    };
    let format = if first & 1 == 0 {
        Format::Standard
    } else {
        Format::Classic
    };
    let max_header = usize::from(first >> 1);
    let max_body = usize::from(*second);
    let codec = || FrameCodec::with_limits(format, max_header, max_body);

    let [whole, bytewise, seeded] = chunkings(wire, fnv1a(wire));
    let reference = decode(codec(), &whole, max_header, max_body);
    for reads in [bytewise, seeded] {
        let other = decode(codec(), &reads, max_header, max_body);
        assert_eq!(reference, other, "frames depend on how the bytes were read");
    }

    check_truncation(&codec, wire);

    for frame in reference.0 {
        assert!(frame.body.len() <= max_body, "body over {max_body}");
        let named = frame.header.get(format.size_key()).map(|v| v.as_u64());
        assert_eq!(named.unwrap_or(Some(0)), Some(frame.body.len() as u64));
        if frame.header.values().any(has_float) {
            continue;
        }
        let mut out = BytesMut::new();
        match codec().encode(frame.clone(), &mut out) {
            Ok(()) => {
                let again = codec().decode(&mut out);
                assert!(matches!(&again, Ok(Some(f)) if *f == frame), "{again:?}");
                assert!(out.is_empty());
            }
            Err(FrameError::TooLarge { what: "header", .. }) => {}
            Err(err) => panic!("re-encoding a decoded frame failed: {err:?}"),
        }
    }
});

/// Frames decoded from `reads`, and the error (as text) that ended the stream, checking that
/// the error is one of the typed ones with the right limit.
fn decode(
    codec: FrameCodec,
    reads: &[&[u8]],
    max_header: usize,
    max_body: usize,
) -> (Vec<Frame>, Option<String>) {
    let Decoded { items, error } = decode_stream(codec, reads);
    match &error {
        None | Some(FrameError::BadHeader(_) | FrameError::Truncated) => {}
        Some(FrameError::TooLarge {
            what: "header",
            max,
        }) => {
            assert_eq!(*max, max_header as u64);
        }
        Some(FrameError::TooLarge { what: "body", max }) => {
            assert_eq!(*max, max_body as u64);
        }
        Some(other) => panic!("untyped frame error {other:?}"),
    }
    (items, error.map(|e| e.to_string()))
}

/// True if the value holds a float anywhere: serde_json, without its `float_roundtrip`
/// feature, may read a float back one unit in the last place off (`38e31` is not `3.8e32`).
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(fields) => fields.values().any(has_float),
        _ => false,
    }
}

/// Where each frame ends: fed one byte at a time, a frame comes out as its last byte arrives.
/// Stops at the first error.
fn frame_ends(mut codec: FrameCodec, wire: &[u8]) -> Vec<usize> {
    let mut buf = BytesMut::new();
    let mut ends = Vec::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => ends.push(i + 1),
                Ok(None) => break,
                Err(_) => return ends,
            }
        }
    }
    ends
}

/// A stream that stops anywhere up to the last whole frame ends cleanly exactly at a frame
/// boundary and is `Truncated` everywhere else, including right after a length prefix.
fn check_truncation(codec: &impl Fn() -> FrameCodec, wire: &[u8]) {
    let ends = frame_ends(codec(), wire);
    let Some(&last) = ends.last() else {
        return;
    };
    let mut cuts: Vec<usize> = ends.iter().flat_map(|&end| [end - 1, end + 4]).collect();
    cuts.push(4);
    cuts.push(usize::try_from(fnv1a(wire) % (last as u64 + 1)).unwrap_or(0));
    for cut in cuts.into_iter().filter(|&cut| cut <= last) {
        let at_boundary = cut == 0 || ends.contains(&cut);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut codec = codec();
        let result = loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        match result {
            Ok(None) => assert!(at_boundary, "clean end {cut} bytes in, inside a frame"),
            Err(FrameError::Truncated) => assert!(!at_boundary, "truncated at boundary {cut}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}
