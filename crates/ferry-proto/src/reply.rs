//! FTP replies (RFC 959 section 4.2): a three-digit code and one or more lines of text.

use std::fmt;

/// One reply: `code text` on one line, or `code-first ... code last` over several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code that clients act on.
    pub code: u16,
    /// Human-readable text, one entry per line; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply; `lines` must not be empty (an empty list becomes one empty line).
    pub fn multi(code: u16, lines: Vec<String>) -> Self {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Reply { code, lines }
    }

    /// True for 1xx..3xx (the command was accepted).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form to `out`. Inner lines of a multi-line reply are indented by one
    /// space so that none can be mistaken for the closing `code ` line (RFC 959 4.2), and CR/LF
    /// inside text are replaced so a file name can never inject a reply line.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // `lines` is public, so it can be empty; that is sent as one empty line, as
        // `Reply::multi` makes it, rather than underflowing here.
        let Some(last) = self.lines.len().checked_sub(1) else {
            out.extend_from_slice(format!("{} \r\n", self.code).as_bytes());
            return;
        };
        for (i, line) in self.lines.iter().enumerate() {
            let line = sanitize(line);
            let text = if i == 0 && last > 0 {
                format!("{}-{}\r\n", self.code, line)
            } else if i == last {
                format!("{} {}\r\n", self.code, line)
            } else {
                format!(" {line}\r\n")
            };
            out.extend_from_slice(text.as_bytes());
        }
    }

    /// The wire form as a byte vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

fn sanitize(line: &str) -> std::borrow::Cow<'_, str> {
    if line.contains(['\r', '\n']) {
        line.replace(['\r', '\n'], " ").into()
    } else {
        line.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_reply_is_code_space_text_crlf() {
        assert_eq!(Reply::new(200, "OK").to_bytes(), b"200 OK\r\n");
    }

    #[test]
    fn multi_line_reply_uses_dash_then_space_and_indents_the_middle() {
        let r = Reply::multi(211, vec!["Features:".into(), "SIZE".into(), "End".into()]);
        assert_eq!(r.to_bytes(), b"211-Features:\r\n SIZE\r\n211 End\r\n");
    }

    #[test]
    fn newlines_in_text_cannot_inject_reply_lines() {
        let r = Reply::new(550, "a\r\n230 pwned");
        assert_eq!(r.to_bytes(), b"550 a  230 pwned\r\n");
    }

    #[test]
    fn empty_multi_reply_still_encodes_one_line() {
        assert_eq!(Reply::multi(211, vec![]).to_bytes(), b"211 \r\n");
    }

    #[test]
    fn reply_built_with_no_lines_encodes_one_empty_line_instead_of_panicking() {
        let reply = Reply {
            code: 200,
            lines: Vec::new(),
        };
        assert_eq!(reply.to_bytes(), b"200 \r\n");
    }
}
