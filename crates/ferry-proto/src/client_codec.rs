//! The client's side of the control connection: command lines out, replies in (RFC 959
//! section 4.2), including multi-line replies, whose inner lines may look like anything but
//! the closing `code ` line.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::Reply;
use crate::codec::LineError;

/// Longest reply line accepted (STAT and MLST put file names on reply lines).
pub const MAX_REPLY_LINE: usize = 64 * 1024;
/// Most lines one reply may have (a STAT listing of a large directory), so a hostile server
/// cannot make the client buffer without bound.
pub const MAX_REPLY_LINES: usize = 100_000;

/// Frames replies and encodes command lines.
#[derive(Debug, Default)]
pub struct ClientCodec {
    /// The multi-line reply being read: its code and the lines so far.
    partial: Option<(u16, Vec<String>)>,
    /// Where the search for `\n` resumes.
    scanned: usize,
}

/// A reply line's code and separator: `123-` opens a multi-line reply, `123 ` ends one.
fn code_of(line: &str) -> Option<(u16, u8)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    Some((code, bytes.get(3).copied().unwrap_or(b' ')))
}

impl Decoder for ClientCodec {
    type Item = Reply;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, LineError> {
        loop {
            let Some(pos) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = buf.len();
                if buf.len() > MAX_REPLY_LINE {
                    return Err(LineError::TooLong {
                        max: MAX_REPLY_LINE,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            self.scanned = 0;
            let raw = buf.split_to(end + 1);
            let text = String::from_utf8_lossy(&raw[..end]);
            let line = text.strip_suffix('\r').unwrap_or(&text).to_string();
            match (&mut self.partial, code_of(&line)) {
                (None, Some((code, b'-'))) => {
                    self.partial = Some((code, vec![line[4..].to_string()]));
                }
                (None, Some((code, _))) => {
                    let text = line.get(4..).unwrap_or("").to_string();
                    return Ok(Some(Reply::new(code, text)));
                }
                // Not a reply line outside a multi-line reply: a broken server; skip it.
                (None, None) => {}
                (Some((code, lines)), found) => {
                    if found == Some((*code, b' ')) {
                        lines.push(line.get(4..).unwrap_or("").to_string());
                        let (code, lines) = self.partial.take().unwrap_or_default();
                        return Ok(Some(Reply::multi(code, lines)));
                    }
                    if lines.len() >= MAX_REPLY_LINES {
                        return Err(LineError::TooLong {
                            max: MAX_REPLY_LINES,
                        });
                    }
                    // Inner lines: the server may indent them with one space (RFC 959 4.2).
                    lines.push(line.strip_prefix(' ').unwrap_or(&line).to_string());
                }
            }
        }
    }
}

impl Encoder<&str> for ClientCodec {
    type Error = std::io::Error;

    /// Sends one command line; CR and LF inside it are refused, so a file name can never
    /// smuggle in a second command.
    fn encode(&mut self, line: &str, out: &mut BytesMut) -> Result<(), std::io::Error> {
        if line.contains(['\r', '\n']) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a command line cannot contain CR or LF",
            ));
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Vec<Reply> {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(reply) = codec.decode(&mut buf).unwrap() {
            out.push(reply);
        }
        out
    }

    #[test]
    fn single_line_replies_split_code_and_text() {
        assert_eq!(
            decode(b"220 ready\r\n331 pw\r\n"),
            [Reply::new(220, "ready"), Reply::new(331, "pw")]
        );
    }

    #[test]
    fn multi_line_reply_ends_at_the_same_code_and_a_space() {
        let replies =
            decode(b"211-Features:\r\n EPSV\r\n211-not the end\r\n 211 nor this\r\n211 End\r\n");
        assert_eq!(
            replies,
            [Reply::multi(
                211,
                vec![
                    "Features:".into(),
                    "EPSV".into(),
                    "211-not the end".into(),
                    "211 nor this".into(),
                    "End".into()
                ]
            )]
        );
    }

    #[test]
    fn a_reply_split_across_reads_is_joined() {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(&b"150 Open"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"ing\r\n226-a\r\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Reply::new(150, "Opening"))
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"226 b\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Reply::multi(226, vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn bare_code_without_text_is_a_reply() {
        assert_eq!(decode(b"200\r\n"), [Reply::new(200, "")]);
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(&vec![b'2'; MAX_REPLY_LINE + 2][..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn commands_with_line_breaks_are_refused() {
        let mut codec = ClientCodec::default();
        let mut out = BytesMut::new();
        codec.encode("RETR a b", &mut out).unwrap();
        assert_eq!(&out[..], b"RETR a b\r\n");
        assert!(codec.encode("RETR a\r\nDELE b", &mut out).is_err());
    }
}
