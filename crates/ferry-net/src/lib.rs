//! The socket basics as a library: message framing so a byte stream carries whole messages
//! ("sticky packets" solved with a length prefix, a JSON header and a body), and an HMAC
//! challenge-response that proves a peer holds a shared key without sending it. On top of
//! both, the echo services (RFC 862) behind `ferry echo`.

pub mod echo;
pub mod frame;
pub mod handshake;
