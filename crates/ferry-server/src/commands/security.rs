//! FTPS on the control connection: AUTH TLS, PBSZ, PROT and CCC (RFC 4217).

use std::io;

use ferry_proto::ControlCodec;
use tracing::{info, warn};

use crate::session::Session;
use crate::tls::MaybeTls;

pub(super) async fn auth(s: &mut Session, mechanism: &str) -> io::Result<()> {
    let Some(tls) = s.tls.clone() else {
        return s.reply(502, "TLS is not configured on this server").await;
    };
    if s.control_is_tls() {
        return s.reply(503, "Already using TLS").await;
    }
    // SSL and TLS-P are the pre-RFC names that also implied protected data.
    let protect_data = match mechanism.trim().to_ascii_uppercase().as_str() {
        "TLS" | "TLS-C" => false,
        "SSL" | "TLS-P" => true,
        _ => {
            return s
                .reply(504, "Unknown security mechanism; use AUTH TLS")
                .await;
        }
    };
    s.reply(234, "AUTH TLS successful, start the handshake")
        .await?;
    // Anything the client pipelined after AUTH arrived in plaintext and must not run as if
    // it had been protected (the injection pure-ftpd fixed in 1.0.30): it is discarded.
    let discarded = s.control.read_buffer().len();
    if discarded > 0 {
        warn!(peer = %s.peer, bytes = discarded, "discarded plaintext pipelined after AUTH TLS");
    }
    s.control.read_buffer_mut().clear();
    s.queued.clear();
    *s.control.codec_mut() = ControlCodec::default();
    let MaybeTls::Control(tcp) = std::mem::replace(s.control.get_mut(), MaybeTls::Detached) else {
        return Err(io::Error::other(
            "control connection in an unexpected state",
        ));
    };
    let wait = s.shared.config.idle_timeout;
    match tokio::time::timeout(wait, tls.accept(tcp)).await {
        Ok(Ok(stream)) => {
            *s.control.get_mut() = stream;
            s.protect_data = protect_data;
            info!(peer = %s.peer, "control connection upgraded to TLS");
            Ok(())
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

pub(super) async fn pbsz(s: &mut Session, size: &str) -> io::Result<()> {
    if !s.control_is_tls() {
        return s.reply(503, "PBSZ needs AUTH TLS first").await;
    }
    if size.trim().parse::<u64>().is_err() {
        return s.reply(501, "PBSZ needs a number").await;
    }
    // A stream protocol has no protection buffer: 0 is the only size (RFC 4217 section 8).
    s.pbsz = true;
    s.reply(200, "PBSZ=0").await
}

pub(super) async fn prot(s: &mut Session, level: &str) -> io::Result<()> {
    if !s.control_is_tls() {
        return s.reply(503, "PROT needs AUTH TLS first").await;
    }
    if !s.pbsz {
        return s.reply(503, "PROT needs PBSZ first").await;
    }
    match level.trim().to_ascii_uppercase().as_str() {
        "P" => {
            s.protect_data = true;
            s.reply(200, "Data connections will be protected").await
        }
        "C" if s.tls_required() => {
            s.reply(534, "Data connections must be protected: use PROT P")
                .await
        }
        "C" => {
            s.protect_data = false;
            s.reply(200, "Data connections will be clear").await
        }
        "S" | "E" => s.reply(536, "Only PROT P and PROT C are supported").await,
        _ => s.reply(504, "Unknown protection level").await,
    }
}

pub(super) async fn ccc(s: &mut Session) -> io::Result<()> {
    // A clear control connection would expose every later command to tampering.
    s.reply(534, "CCC refused: the control connection stays protected")
        .await
}
