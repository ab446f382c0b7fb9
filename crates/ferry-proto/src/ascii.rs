//! TYPE A line-ending conversion (RFC 959 3.1.1.1): the wire uses CRLF, the disk uses LF.
//! Both converters are streaming: state carries across chunk boundaries.

/// Disk to wire: a LF not already preceded by CR becomes CRLF.
#[derive(Debug, Default, Clone)]
pub struct ToCrlf {
    /// The previous chunk ended in CR, so a leading LF is already part of a CRLF.
    last_was_cr: bool,
}

impl ToCrlf {
    /// Converts one chunk, appending to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if b == b'\n' && !self.last_was_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.last_was_cr = b == b'\r';
        }
    }
}

/// Wire to disk: CRLF becomes LF; a CR not followed by LF is kept.
#[derive(Debug, Default, Clone)]
pub struct FromCrlf {
    /// A CR ended the previous chunk and is held until we see whether LF follows.
    pending_cr: bool,
}

impl FromCrlf {
    /// Converts one chunk, appending to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr && b != b'\n' {
                out.push(b'\r');
            }
            self.pending_cr = b == b'\r';
            if !self.pending_cr {
                out.push(b);
            }
        }
    }

    /// Flushes a CR held at the very end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_crlf(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = ToCrlf::default();
        let mut out = Vec::new();
        chunks.iter().for_each(|ch| c.convert(ch, &mut out));
        out
    }

    fn from_crlf(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = FromCrlf::default();
        let mut out = Vec::new();
        chunks.iter().for_each(|ch| c.convert(ch, &mut out));
        c.finish(&mut out);
        out
    }

    #[test]
    fn lf_becomes_crlf_and_existing_crlf_is_kept() {
        assert_eq!(to_crlf(&[b"a\nb\r\nc"]), b"a\r\nb\r\nc");
    }

    #[test]
    fn crlf_split_across_chunks_is_not_doubled() {
        assert_eq!(to_crlf(&[b"a\r", b"\nb"]), b"a\r\nb");
        assert_eq!(from_crlf(&[b"a\r", b"\nb"]), b"a\nb");
    }

    #[test]
    fn crlf_becomes_lf_and_lone_cr_is_kept() {
        assert_eq!(from_crlf(&[b"a\r\nb\rc\r"]), b"a\nb\rc\r");
    }

    #[test]
    fn round_trip_of_unix_text_is_identity() {
        let text = b"line 1\nline 2\n\nend";
        assert_eq!(from_crlf(&[&to_crlf(&[text])]), text);
    }
}
