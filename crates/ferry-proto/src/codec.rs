//! The control-connection codec: CRLF (or bare LF) terminated command lines in, replies out.
//!
//! Lines are capped at [`MAX_LINE_LEN`] so a peer cannot make the server buffer without bound,
//! and Telnet IAC sequences (RFC 854) are removed, as RFC 959 section 4.1.3 requires for the
//! "Synch" that clients send before ABOR.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::Reply;

/// The longest command line accepted, in bytes on the wire, excluding the line ending. The
/// decoded line holds at most this many characters, but invalid UTF-8 becomes U+FFFD (three
/// bytes for as little as one), so the `String` itself can be up to three times as long.
pub const MAX_LINE_LEN: usize = 4096;

const IAC: u8 = 0xFF;

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The peer sent more than the maximum without a line ending; the server answers 500 and
    /// disconnects, because the rest of the stream can no longer be framed reliably.
    #[error("command line longer than {max} bytes")]
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames command lines and encodes replies.
#[derive(Debug, Clone)]
pub struct ControlCodec {
    /// Longest accepted line, so tests and clients can choose a different bound.
    max_len: usize,
    /// Where the search for `\n` resumes, so a slowly arriving line is not rescanned.
    scanned: usize,
}

impl Default for ControlCodec {
    fn default() -> Self {
        ControlCodec::new(MAX_LINE_LEN)
    }
}

impl ControlCodec {
    /// A codec accepting lines of at most `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        ControlCodec {
            max_len,
            scanned: 0,
        }
    }
}

impl Decoder for ControlCodec {
    type Item = String;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LineError> {
        let Some(pos) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = buf.len();
            if buf.len() > self.max_len + 1 {
                return Err(LineError::TooLong { max: self.max_len });
            }
            return Ok(None);
        };
        let end = self.scanned + pos;
        self.scanned = 0;
        let mut line = buf.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max_len {
            return Err(LineError::TooLong { max: self.max_len });
        }
        let bytes = strip_telnet(&line);
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>, LineError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                // A command cut off by EOF is never executed.
                buf.advance(buf.len());
                self.scanned = 0;
                Ok(None)
            }
        }
    }
}

impl Encoder<Reply> for ControlCodec {
    type Error = std::io::Error;

    fn encode(&mut self, reply: Reply, out: &mut BytesMut) -> Result<(), std::io::Error> {
        let mut bytes = Vec::new();
        reply.encode_into(&mut bytes);
        out.extend_from_slice(&bytes);
        Ok(())
    }
}

/// Removes Telnet commands: `IAC IAC` is a literal 0xFF, `IAC WILL|WONT|DO|DONT x` is dropped
/// whole, `IAC cmd` (IP, DM, ...) is dropped. An IAC followed by an ordinary byte drops only
/// the IAC: the kernel removes the urgent DM byte from the stream, which leaves `IAC ABOR`.
fn strip_telnet(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] != IAC {
            out.push(line[i]);
            i += 1;
            continue;
        }
        match line.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            Some(0xFB..=0xFE) => i += 3,
            Some(0xF0..=0xFA) => i += 2,
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut ControlCodec, input: &[u8]) -> Vec<String> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(line) = codec.decode(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn crlf_terminated_lines_are_split() {
        let mut c = ControlCodec::default();
        assert_eq!(
            decode_all(&mut c, b"USER a\r\nPASS b\r\n"),
            ["USER a", "PASS b"]
        );
    }

    #[test]
    fn bare_lf_ends_a_line() {
        let mut c = ControlCodec::default();
        assert_eq!(decode_all(&mut c, b"NOOP\nPWD\n"), ["NOOP", "PWD"]);
    }

    #[test]
    fn bare_cr_does_not_end_a_line() {
        let mut c = ControlCodec::default();
        assert_eq!(decode_all(&mut c, b"NOOP\rPWD\r\n"), ["NOOP\rPWD"]);
    }

    #[test]
    fn line_split_across_reads_is_joined() {
        let mut c = ControlCodec::default();
        let mut buf = BytesMut::from(&b"RE"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"TR x\r");
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\nNO");
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some("RETR x"));
        assert_eq!(&buf[..], b"NO");
    }

    #[test]
    fn line_of_exactly_the_maximum_is_accepted() {
        let mut c = ControlCodec::new(8);
        assert_eq!(decode_all(&mut c, b"12345678\r\n"), ["12345678"]);
    }

    #[test]
    fn over_long_line_with_ending_is_rejected() {
        let mut c = ControlCodec::new(8);
        let mut buf = BytesMut::from(&b"123456789\r\n"[..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(LineError::TooLong { max: 8 })
        ));
    }

    #[test]
    fn over_long_line_without_ending_is_rejected_before_it_ends() {
        let mut c = ControlCodec::new(8);
        let mut buf = BytesMut::from(&[b'a'; 64][..]);
        assert!(matches!(c.decode(&mut buf), Err(LineError::TooLong { .. })));
    }

    #[test]
    fn telnet_interrupt_and_synch_before_abor_are_removed() {
        let mut c = ControlCodec::default();
        assert_eq!(decode_all(&mut c, b"\xff\xf4\xff\xf2ABOR\r\n"), ["ABOR"]);
        assert_eq!(decode_all(&mut c, b"\xff\xf4\xffABOR\r\n"), ["ABOR"]);
    }

    #[test]
    fn telnet_option_negotiation_is_removed_and_doubled_iac_is_kept() {
        let mut c = ControlCodec::default();
        let lines = decode_all(&mut c, b"\xff\xfb\x01NOOP\r\n");
        assert_eq!(lines, ["NOOP"]);
        let mut buf = BytesMut::from(&b"a\xff\xffb\n"[..]);
        let line = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(line, "a\u{FFFD}b");
    }

    #[test]
    fn utf8_names_survive_and_invalid_bytes_are_replaced() {
        let mut c = ControlCodec::default();
        assert_eq!(decode_all(&mut c, "CWD café\r\n".as_bytes()), ["CWD café"]);
        assert_eq!(
            decode_all(&mut c, b"CWD \xc0\xaf\r\n"),
            ["CWD \u{FFFD}\u{FFFD}"]
        );
    }

    #[test]
    fn eof_mid_line_yields_nothing() {
        let mut c = ControlCodec::default();
        let mut buf = BytesMut::from(&b"DELE x"[..]);
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_are_encoded() {
        let mut c = ControlCodec::default();
        let mut out = BytesMut::new();
        c.encode(Reply::new(220, "ferry"), &mut out).unwrap();
        assert_eq!(&out[..], b"220 ferry\r\n");
    }
}
