//! Frames: a 4-byte header length, a JSON header (an object), then a body whose size the
//! header names. The header length is framed by tokio-util's `LengthDelimitedCodec`, always
//! with a maximum; the body size is bounded too, so a peer cannot make us buffer without end.
//!
//! Two wire formats:
//! - [`Format::Standard`] (default): big-endian u32 header length; the body size is the
//!   header's `size` field.
//! - [`Format::Classic`]: what the classic tutorial programs send with
//!   `struct.pack('i', len(header))` on x86: a little-endian signed 32-bit length (a negative
//!   one is refused as oversize); the body size is the header's `filesize` field, as in
//!   `{"cmd": "put", "filename": "a.txt", "filesize": 12}`.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Bytes in the header length that starts every frame.
const LENGTH_PREFIX: usize = 4;

/// Default limit for a JSON header.
pub const MAX_HEADER: usize = 64 * 1024;
/// Default limit for a body.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Which wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Big-endian u32 header length, body size in `size`.
    Standard,
    /// Little-endian i32 header length, body size in `filesize` (the classic programs).
    Classic,
}

impl Format {
    /// The header field holding the body size.
    pub fn size_key(self) -> &'static str {
        match self {
            Format::Standard => "size",
            Format::Classic => "filesize",
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The JSON header (an object).
    pub header: Map<String, Value>,
    /// The body, `size`/`filesize` bytes long.
    pub body: Bytes,
}

impl Frame {
    /// A frame with a header and no body.
    pub fn header_only(header: Map<String, Value>) -> Self {
        Frame {
            header,
            body: Bytes::new(),
        }
    }

    /// A string field of the header.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    /// The header as compact JSON text, for showing a reply to a person.
    pub fn header_json(&self) -> String {
        Value::Object(self.header.clone()).to_string()
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header or body is larger than allowed (or a classic length is negative).
    #[error("frame too large: the {what} exceeds the limit of {max} bytes")]
    TooLarge {
        /// "header" or "body".
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// The header is not a JSON object, or its size field is not a non-negative integer.
    #[error("bad frame header: {0}")]
    BadHeader(String),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The transport failed.
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(err: std::io::Error) -> Self {
        FrameError::Io(err)
    }
}

/// Frames in and out.
#[derive(Debug)]
pub struct FrameCodec {
    format: Format,
    /// Frames the header: the 4-byte length and the JSON bytes.
    header: LengthDelimitedCodec,
    max_header: usize,
    max_body: usize,
    /// The 4-byte length was consumed but its JSON has not fully arrived: `header` keeps that
    /// state out of sight, and EOF must still see a frame in progress.
    header_started: bool,
    /// A header read whose body has not fully arrived.
    pending: Option<(Map<String, Value>, usize)>,
}

impl FrameCodec {
    /// A codec for `format` with the default limits.
    pub fn new(format: Format) -> Self {
        FrameCodec::with_limits(format, MAX_HEADER, MAX_BODY)
    }

    /// A codec with explicit limits for the header and the body.
    pub fn with_limits(format: Format, max_header: usize, max_body: usize) -> Self {
        let mut builder = LengthDelimitedCodec::builder();
        builder
            .length_field_length(LENGTH_PREFIX)
            .max_frame_length(max_header);
        match format {
            Format::Standard => builder.big_endian(),
            Format::Classic => builder.little_endian(),
        };
        FrameCodec {
            format,
            header: builder.new_codec(),
            max_header,
            max_body,
            header_started: false,
            pending: None,
        }
    }

    fn body_size(&self, header: &Map<String, Value>) -> Result<usize, FrameError> {
        let key = self.format.size_key();
        let size = match header.get(key) {
            None => 0,
            Some(value) => value.as_u64().ok_or_else(|| {
                FrameError::BadHeader(format!("{key} must be a non-negative integer"))
            })?,
        };
        let too_large = FrameError::TooLarge {
            what: "body",
            max: self.max_body as u64,
        };
        match usize::try_from(size) {
            Ok(size) if size <= self.max_body => Ok(size),
            _ => Err(too_large),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.pending.is_none() {
            // LengthDelimitedCodec refuses an oversize length as soon as it reads it, before
            // the header arrives; a negative classic i32 reads as a huge u32 and is refused too.
            let oversize = |err: std::io::Error| {
                if err
                    .get_ref()
                    .is_some_and(|e| e.is::<tokio_util::codec::LengthDelimitedCodecError>())
                {
                    FrameError::TooLarge {
                        what: "header",
                        max: self.max_header as u64,
                    }
                } else {
                    FrameError::Io(err)
                }
            };
            let length_arrived = self.header_started || buf.len() >= LENGTH_PREFIX;
            let Some(json) = self.header.decode(buf).map_err(oversize)? else {
                self.header_started = length_arrived;
                return Ok(None);
            };
            self.header_started = false;
            let header = match serde_json::from_slice::<Value>(&json) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(FrameError::BadHeader(
                        "the header must be a JSON object".into(),
                    ));
                }
                Err(err) => return Err(FrameError::BadHeader(err.to_string())),
            };
            let size = self.body_size(&header)?;
            self.pending = Some((header, size));
        }
        let Some((_, size)) = &self.pending else {
            return Ok(None);
        };
        if buf.len() < *size {
            buf.reserve(*size - buf.len());
            return Ok(None);
        }
        let body = buf.split_to(*size).freeze();
        let (header, _) = self.pending.take().unwrap_or_default();
        Ok(Some(Frame { header, body }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && self.pending.is_none() && !self.header_started => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    /// Writes the frame; the size field is set from the body, so it can never disagree.
    fn encode(&mut self, mut frame: Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        if frame.body.len() > self.max_body {
            return Err(FrameError::TooLarge {
                what: "body",
                max: self.max_body as u64,
            });
        }
        if !frame.body.is_empty() || frame.header.contains_key(self.format.size_key()) {
            frame.header.insert(
                self.format.size_key().into(),
                Value::from(frame.body.len() as u64),
            );
        }
        let json =
            serde_json::to_vec(&frame.header).map_err(|e| FrameError::BadHeader(e.to_string()))?;
        if json.len() > self.max_header {
            return Err(FrameError::TooLarge {
                what: "header",
                max: self.max_header as u64,
            });
        }
        self.header.encode(Bytes::from(json), out)?;
        out.reserve(frame.body.len());
        out.put(frame.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn encode(format: Format, frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new(format).encode(frame, &mut out).unwrap();
        out
    }

    fn put_frame() -> Frame {
        Frame {
            header: header(json!({"cmd": "put", "filename": "a.txt"})),
            body: Bytes::from_static(b"hello world!"),
        }
    }

    #[test]
    fn standard_frames_round_trip_with_the_size_set_from_the_body() {
        let mut wire = encode(Format::Standard, put_frame());
        let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        let text = std::str::from_utf8(&wire[4..4 + len]).unwrap();
        assert!(text.contains("\"size\":12"), "{text}");
        let frame = FrameCodec::new(Format::Standard)
            .decode(&mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(frame.body, Bytes::from_static(b"hello world!"));
        assert_eq!(frame.str_field("cmd"), Some("put"));
        assert!(wire.is_empty());
    }

    #[test]
    fn classic_frames_use_a_little_endian_length_and_filesize() {
        let header_json = br#"{"cmd":"put","filename":"a.txt","filesize":3}"#;
        let mut wire = BytesMut::new();
        wire.put_i32_le(header_json.len() as i32);
        wire.put_slice(header_json);
        wire.put_slice(b"abc");
        let frame = FrameCodec::new(Format::Classic)
            .decode(&mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(&frame.body[..], b"abc");
        assert_eq!(
            encode(Format::Classic, frame.clone())[..4],
            (frame_header_len(&frame) as i32).to_le_bytes()
        );
    }

    fn frame_header_len(frame: &Frame) -> usize {
        serde_json::to_vec(&frame.header).unwrap().len()
    }

    #[test]
    fn a_header_split_across_reads_is_joined() {
        let wire = encode(Format::Standard, put_frame());
        let mut codec = FrameCodec::new(Format::Standard);
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1, "byte {i}");
        }
    }

    #[test]
    fn a_body_split_across_reads_with_pauses_is_joined() {
        let wire = encode(Format::Standard, put_frame());
        let mut codec = FrameCodec::new(Format::Standard);
        let split = wire.len() - 5;
        let mut buf = BytesMut::from(&wire[..split]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.put_slice(&wire[split..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().body.len(), 12);
    }

    #[test]
    fn two_frames_in_one_read_come_out_separately() {
        let mut wire = encode(Format::Standard, put_frame());
        wire.extend_from_slice(&encode(
            Format::Standard,
            Frame::header_only(header(json!({"cmd": "ls"}))),
        ));
        let mut codec = FrameCodec::new(Format::Standard);
        assert_eq!(
            codec.decode(&mut wire).unwrap().unwrap().str_field("cmd"),
            Some("put")
        );
        assert_eq!(
            codec.decode(&mut wire).unwrap().unwrap().str_field("cmd"),
            Some("ls")
        );
    }

    #[test]
    fn an_oversize_header_is_refused_before_it_arrives() {
        let mut codec = FrameCodec::with_limits(Format::Standard, 16, 1024);
        let mut buf = BytesMut::from(&1000u32.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { what: "header", .. })
        ));
    }

    #[test]
    fn a_negative_classic_length_is_refused_as_oversize() {
        let mut buf = BytesMut::from(&(-1i32).to_le_bytes()[..]);
        let err = FrameCodec::new(Format::Classic)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { what: "header", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_oversize_body_is_refused_from_the_header() {
        let mut codec = FrameCodec::with_limits(Format::Standard, 1024, 10);
        let mut wire = BytesMut::new();
        FrameCodec::new(Format::Standard)
            .encode(put_frame(), &mut wire)
            .unwrap();
        assert!(matches!(
            codec.decode(&mut wire),
            Err(FrameError::TooLarge {
                what: "body",
                max: 10
            })
        ));
    }

    #[test]
    fn eof_mid_frame_is_an_error_and_clean_eof_is_not() {
        let wire = encode(Format::Standard, put_frame());
        let mut codec = FrameCodec::new(Format::Standard);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
        assert!(
            FrameCodec::new(Format::Standard)
                .decode_eof(&mut BytesMut::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn eof_right_after_the_length_prefix_is_truncated() {
        let wire = encode(Format::Standard, put_frame());
        let mut codec = FrameCodec::new(Format::Standard);
        let mut buf = BytesMut::from(&wire[..4]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn eof_after_a_whole_frame_and_the_next_length_is_truncated() {
        let first = encode(Format::Classic, put_frame());
        let mut wire = first.clone();
        wire.extend_from_slice(&first[..4]);
        let mut codec = FrameCodec::new(Format::Classic);
        assert!(codec.decode(&mut wire).unwrap().is_some());
        assert!(codec.decode(&mut wire).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut wire),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn json_header_errors_are_reported() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"size":-1}"#,
            br#"{"size":"3"}"#,
        ] {
            let mut wire = BytesMut::new();
            wire.put_u32(bad.len() as u32);
            wire.put_slice(bad);
            let err = FrameCodec::new(Format::Standard)
                .decode(&mut wire)
                .unwrap_err();
            assert!(matches!(err, FrameError::BadHeader(_)), "{bad:?}: {err:?}");
        }
    }
}
