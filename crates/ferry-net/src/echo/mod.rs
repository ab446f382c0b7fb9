//! Echo services (RFC 862) over TCP and UDP, plus the classic greeting protocol, an upper-case
//! variant, and on TCP an optional HMAC handshake and framed messages with file uploads.
//!
//! Message boundaries: TCP carries a byte stream, so like the classic programs (`recv(1024)`)
//! the greeting service treats whatever one read returns as one message. To make line-based
//! tools such as `nc` work too, a trailing `\n` or `\r\n` is taken off before the message is
//! interpreted (so `exit\n` ends the session) and put back after the reply (`Hello, bob!\n`).
//! Echo and upper need no boundaries: they transform bytes as they come.

pub mod client;
pub mod tcp;
pub mod udp;
pub mod upload;

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::frame::{self, Format, Frame, FrameError};
use crate::handshake::{Algorithm, HandshakeError, Key};

/// What the server answers to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bytes themselves (RFC 862).
    Echo,
    /// The bytes in ASCII upper case.
    Upper,
    /// The classic greeting protocol: `Welcome!` on connect, `Hello, <msg>!` per message,
    /// close on `exit` (TCP only; UDP answers every datagram).
    Greet,
}

/// Sent by the greeting service when a TCP client connects.
pub const WELCOME: &[u8] = b"Welcome!";

/// The message that ends a greeting session.
pub const EXIT: &[u8] = b"exit";

impl Mode {
    /// The answer to one message (a read on TCP, a datagram on UDP).
    pub fn answer(self, message: &[u8]) -> Cow<'_, [u8]> {
        match self {
            Mode::Echo => Cow::Borrowed(message),
            Mode::Upper => Cow::Owned(message.to_ascii_uppercase()),
            Mode::Greet => {
                let (text, newline) = split_newline(message);
                let mut reply = Vec::with_capacity(message.len() + 8);
                reply.extend_from_slice(b"Hello, ");
                reply.extend_from_slice(text);
                reply.push(b'!');
                reply.extend_from_slice(newline);
                Cow::Owned(reply)
            }
        }
    }
}

/// Whether a greeting client said goodbye (`exit`, with or without a trailing newline).
pub fn is_exit(message: &[u8]) -> bool {
    split_newline(message).0 == EXIT
}

/// Splits one trailing `\n` or `\r\n` off, so line-based clients get their line ending back.
fn split_newline(message: &[u8]) -> (&[u8], &[u8]) {
    let cut = if message.ends_with(b"\r\n") {
        2
    } else if message.ends_with(b"\n") {
        1
    } else {
        0
    };
    message.split_at(message.len() - cut)
}

/// The shared-key check every TCP client must pass before anything else.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The shared secret.
    pub key: Key,
    /// HMAC-SHA256, or HMAC-MD5 for the classic programs.
    pub algorithm: Algorithm,
    /// The client challenges the server back, so it knows it reached a key holder too.
    pub mutual: bool,
}

/// Framed TCP: every message is a [`Frame`]; `put` frames are uploads, others come back as is.
#[derive(Debug, Clone)]
pub struct Framing {
    /// Standard or classic wire format.
    pub format: Format,
    /// Where uploads are saved; `None` refuses them with an error frame.
    pub upload_dir: Option<PathBuf>,
    /// Largest JSON header accepted.
    pub max_header: usize,
    /// Largest body accepted (bounds the memory one client can make us hold).
    pub max_body: usize,
}

impl Framing {
    /// Framing in `format` with the default limits and no uploads.
    pub fn new(format: Format) -> Self {
        Framing {
            format,
            upload_dir: None,
            max_header: frame::MAX_HEADER,
            max_body: frame::MAX_BODY,
        }
    }
}

/// What a TCP connection carries once admitted.
#[derive(Debug, Clone)]
pub enum Service {
    /// Raw bytes answered per read according to the mode.
    Raw(Mode),
    /// Frames (echoed back, or saved when they are uploads).
    Framed(Framing),
}

/// Settings of a TCP echo server.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the connections carry.
    pub service: Service,
    /// A handshake every client must pass first; `None` admits everyone.
    pub auth: Option<Auth>,
    /// How long a client gets for each handshake step, so silent clients do not pile up.
    pub handshake_timeout: Duration,
    /// How long connections get to finish on shutdown before they are dropped.
    pub shutdown_grace: Duration,
}

impl Config {
    /// A server for `service` without a handshake and with default timeouts.
    pub fn new(service: Service) -> Self {
        Config {
            service,
            auth: None,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why one connection ended badly; the server logs it and goes on serving everyone else.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The peer failed the HMAC check, or sent a malformed handshake message.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer said nothing within the handshake timeout.
    #[error("handshake failed: no answer within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer hung up during the handshake (a client whose key was refused sees this too).
    #[error("handshake failed: the peer closed the connection")]
    HandshakeClosed,
    /// The peer closed the connection while we waited for its reply.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer sent a bad or oversize frame, or hung up inside one.
    #[error(transparent)]
    Frame(FrameError),
    /// Mutual mode: the server hung up after our answer instead of answering back, which is
    /// what a server does when it refuses the key.
    #[error("handshake failed: the server closed the connection after our answer (wrong key?)")]
    KeyRefused,
    /// The transport failed (reset, broken pipe...). Not a `source`: the message already
    /// carries the error's text, and a chain would print it twice.
    #[error("{}", describe_io(.0))]
    Io(io::Error),
}

impl From<io::Error> for EchoError {
    fn from(err: io::Error) -> Self {
        EchoError::Io(err)
    }
}

impl EchoError {
    /// Whether the peer went away (closed or reset) rather than said something wrong.
    pub fn is_disconnect(&self) -> bool {
        match self {
            EchoError::Closed | EchoError::HandshakeClosed | EchoError::KeyRefused => true,
            EchoError::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

impl From<FrameError> for EchoError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Io(err) => EchoError::Io(err),
            other => EchoError::Frame(other),
        }
    }
}

/// Names the common ways a peer goes away, so log lines say what happened.
fn describe_io(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::BrokenPipe => "the peer stopped reading (broken pipe)".into(),
        io::ErrorKind::UnexpectedEof => "the peer closed the connection early".into(),
        _ => err.to_string(),
    }
}

/// A plain message frame: header `{"cmd":"echo"}` and `body`.
pub fn message_frame(body: impl Into<Bytes>) -> Frame {
    let mut header = Map::new();
    header.insert("cmd".into(), Value::from("echo"));
    Frame {
        header,
        body: body.into(),
    }
}

/// A reply frame `{"status":"error","message":...}`.
pub fn error_frame(message: &str) -> Frame {
    let mut header = Map::new();
    header.insert("status".into(), Value::from("error"));
    header.insert("message".into(), Value::from(message));
    Frame::header_only(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_the_bytes_and_upper_changes_only_ascii_letters() {
        assert_eq!(&*Mode::Echo.answer(b"a\xffb\n"), b"a\xffb\n");
        assert_eq!(&*Mode::Upper.answer(b"abc \xe9z1\n"), b"ABC \xe9Z1\n");
    }

    #[test]
    fn greet_keeps_the_line_ending_of_the_message() {
        assert_eq!(&*Mode::Greet.answer(b"Michael"), b"Hello, Michael!");
        assert_eq!(&*Mode::Greet.answer(b"bob\n"), b"Hello, bob!\n");
        assert_eq!(&*Mode::Greet.answer(b"bob\r\n"), b"Hello, bob!\r\n");
        assert_eq!(&*Mode::Greet.answer(b""), b"Hello, !");
    }

    #[test]
    fn exit_is_recognized_with_or_without_a_newline_and_nothing_else() {
        assert!(is_exit(b"exit"));
        assert!(is_exit(b"exit\n"));
        assert!(is_exit(b"exit\r\n"));
        assert!(!is_exit(b"exit\n\n"));
        assert!(!is_exit(b"Exit"));
        assert!(!is_exit(b" exit"));
    }
}
