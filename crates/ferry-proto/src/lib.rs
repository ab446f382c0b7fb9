//! Sans-IO FTP (RFC 959 and its extensions): commands parsed from a line, replies encoded to
//! bytes, and the control-connection line codec. No sockets, no runtime: the server and the
//! client share it, and the fuzzer drives it directly.

pub mod ascii;
pub mod client_codec;
pub mod codec;
pub mod command;
pub mod digest;
pub mod reply;

pub use client_codec::ClientCodec;
pub use codec::{ControlCodec, LineError, MAX_LINE_LEN};
pub use command::{Command, EpsvArg, HashAlgorithm, ParseError, Password, TransferType};
pub use reply::Reply;
