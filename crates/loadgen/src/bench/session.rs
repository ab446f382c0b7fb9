//! A bench session: the control connection of control.rs with TLS (RFC 4217), passive data
//! connections (EPSV of RFC 2428, PASV of RFC 959 for servers that refuse it) and transfers
//! that read into and write from one reused buffer, so that the client costs little more
//! than the kernel's copies.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ferry_client::tls::{ClientTls, TlsOptions};
use ferry_proto::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::control::{Control, Stream, Target, open, within};
use crate::stats::{Failure, Stage};

/// Size of every transfer buffer: reads go into one of this size, writes come from one.
pub const BUFFER: usize = 1 << 20;

/// A buffer of pseudo-random bytes, none of them zero (so that no layer can take a shortcut
/// on zeros), that uploads send again and again.
pub fn payload() -> Vec<u8> {
    // xorshift64: cheap, and random enough that nothing compresses it.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BUFFER)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8 | 1
        })
        .collect()
}

/// TLS for one control connection and its data connections; certificates are not checked
/// (test servers are self-signed).
pub fn client_tls(target: &Target) -> Result<ClientTls, Failure> {
    let options = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    };
    ClientTls::new(&target.addr.ip().to_string(), &options)
        .map_err(|err| Failure::new(Stage::Connect, format!("TLS setup: {err}")))
}

/// One logged-in session in binary mode (TYPE I), under TLS with PROT P when asked.
#[derive(Debug)]
pub struct Session {
    control: Control,
    /// The control connection's TLS, whose session data connections resume.
    tls: Option<ClientTls>,
    /// To log in again when TLS 1.3 tickets run out.
    target: Target,
    /// The address the control connection was bound to; data connections use it too, since
    /// servers refuse a data connection from another address than the control connection's.
    source: Option<IpAddr>,
    /// The server's address, which passive data connections go to.
    server: IpAddr,
    /// Set once the server refused EPSV: PASV from then on.
    pasv_only: bool,
    /// The directory to return to after logging in again.
    cwd: Option<String>,
    /// Times the session logged in again because its TLS 1.3 tickets ran out.
    relogins: u32,
}

impl Session {
    /// Connects from `source`, secures the connection when `tls`, logs in and sets TYPE I.
    pub async fn open(
        target: &Target,
        source: Option<IpAddr>,
        tls: bool,
    ) -> Result<Session, Failure> {
        let mut control = Control::connect(target, source).await?;
        let tls = tls.then(|| client_tls(target)).transpose()?;
        if let Some(tls) = &tls {
            control = control.secure(tls).await?;
        }
        control.login(&target.user, &target.password).await?;
        if tls.is_some() {
            control.expect(Stage::Login, "PBSZ 0", 200).await?;
            control.expect(Stage::Login, "PROT P", 200).await?;
        }
        control.expect(Stage::Login, "TYPE I", 200).await?;
        let server = control
            .server_addr()
            .map_err(|err| Failure::new(Stage::Connect, err.to_string()))?;
        Ok(Session {
            control,
            tls,
            target: target.clone(),
            source,
            server: server.ip(),
            pasv_only: false,
            cwd: None,
            relogins: 0,
        })
    }

    /// Times the session logged in again because its TLS 1.3 tickets ran out.
    pub fn relogins(&self) -> u32 {
        self.relogins
    }

    /// Sends `line` and returns the final reply, whatever its code.
    pub async fn command(&mut self, line: &str) -> Result<Reply, Failure> {
        self.control.command(Stage::Transfer, line).await
    }

    /// Sends `line` and fails unless the final reply has code `code`.
    pub async fn expect(&mut self, line: &str, code: u16) -> Result<Reply, Failure> {
        self.control.expect(Stage::Transfer, line, code).await
    }

    /// CWD, remembered for logging in again.
    pub async fn cwd(&mut self, dir: &str) -> Result<(), Failure> {
        self.expect(&format!("CWD {dir}"), 250).await?;
        self.cwd = Some(dir.to_string());
        Ok(())
    }

    /// NOOP.
    pub async fn noop(&mut self) -> Result<(), Failure> {
        self.control.noop().await.map(drop)
    }

    /// QUIT, and the server's close.
    pub async fn quit(self) -> Result<(), Failure> {
        self.control.quit().await
    }

    /// RETR `path` into `buf` (overwritten chunk by chunk); returns the bytes received.
    pub async fn retr(&mut self, path: &str, buf: &mut [u8]) -> Result<u64, Failure> {
        let command = format!("RETR {path}");
        let mut data = self.start(&command).await?;
        let mut received = 0u64;
        while let Some(n) = self.read_data(&mut data, buf, &command).await? {
            received += n as u64;
        }
        drop(data);
        self.finish(&command).await?;
        Ok(received)
    }

    /// LIST of the current directory, read into `buf`; returns the entries (lines, but for
    /// the `total` line of `ls -l` style listings).
    pub async fn list(&mut self, buf: &mut [u8]) -> Result<u64, Failure> {
        let command = "LIST";
        let mut data = self.start(command).await?;
        let (mut lines, mut total_line) = (0u64, None);
        while let Some(n) = self.read_data(&mut data, buf, command).await? {
            total_line.get_or_insert(buf[..n].starts_with(b"total "));
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        drop(data);
        self.finish(command).await?;
        Ok(lines.saturating_sub(u64::from(total_line.unwrap_or(false))))
    }

    /// STOR `path` with `size` bytes, `payload` sent over and over.
    pub async fn stor(&mut self, path: &str, size: u64, payload: &[u8]) -> Result<(), Failure> {
        let command = format!("STOR {path}");
        let mut data = self.start(&command).await?;
        let mut left = size;
        while left > 0 {
            let n = left.min(payload.len() as u64) as usize;
            within(
                self.target.timeout,
                Stage::Transfer,
                data.write_all(&payload[..n]),
            )
            .await?
            .map_err(|err| data_failure(&command, "sending", &err))?;
            left -= n as u64;
        }
        self.close_upload(&mut data, &command).await?;
        drop(data);
        self.finish(&command).await
    }

    /// Ends an upload: FIN, and under TLS its close_notify, then reads to the end so that
    /// the server's close_notify and any tickets are taken in rather than left unread, which
    /// would reset the connection.
    async fn close_upload(&self, data: &mut Stream, command: &str) -> Result<(), Failure> {
        let wait = self.target.timeout;
        within(wait, Stage::Transfer, data.shutdown())
            .await?
            .map_err(|err| data_failure(command, "closing", &err))?;
        if let Either::Right(_) = data {
            let mut rest = [0u8; 1024];
            while let Ok(1..) = within(wait, Stage::Transfer, data.read(&mut rest)).await? {}
        }
        Ok(())
    }

    /// The next chunk of a download, `None` at its end.
    async fn read_data(
        &self,
        data: &mut Stream,
        buf: &mut [u8],
        command: &str,
    ) -> Result<Option<usize>, Failure> {
        match within(self.target.timeout, Stage::Transfer, data.read(buf)).await? {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            // A TLS server that closes without close_notify: the byte count and the final
            // reply tell whether everything arrived.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(err) => Err(data_failure(command, "receiving", &err)),
        }
    }

    /// Opens a passive data connection, sends `command`, waits for its 1xx and secures the
    /// data connection under PROT P.
    async fn start(&mut self, command: &str) -> Result<Stream, Failure> {
        self.ensure_resumable().await?;
        let tcp = self.passive().await?;
        let reply = self.control.start(Stage::Transfer, command).await?;
        if !(100..200).contains(&reply.code) {
            return Err(Failure::new(Stage::Transfer, format!("{command}: {reply}")));
        }
        match &self.tls {
            None => Ok(Either::Left(tcp)),
            Some(tls) => within(self.target.timeout, Stage::Transfer, tls.connect(tcp))
                .await?
                .map(Either::Right)
                .map_err(|err| data_failure(command, "TLS handshake", &err)),
        }
    }

    /// The transfer's final reply, which must be a 2xx.
    async fn finish(&mut self, command: &str) -> Result<(), Failure> {
        let reply = self.control.read(Stage::Transfer).await?;
        if !(200..300).contains(&reply.code) {
            return Err(Failure::new(Stage::Transfer, format!("{command}: {reply}")));
        }
        Ok(())
    }

    /// EPSV, or PASV when the server refuses EPSV (any 5xx), and the connection to the port
    /// it names, from the control connection's address.
    async fn passive(&mut self) -> Result<TcpStream, Failure> {
        let mut port = None;
        if !self.pasv_only {
            let reply = self.command("EPSV").await?;
            match reply.code {
                229 => port = Some(epsv_port(&reply).ok_or_else(|| bad_reply("EPSV", &reply))?),
                500..600 => self.pasv_only = true,
                _ => return Err(bad_reply("EPSV", &reply)),
            }
        }
        let port = match port {
            Some(port) => port,
            None => {
                let reply = self.expect("PASV", 227).await?;
                pasv_port(&reply).ok_or_else(|| bad_reply("PASV", &reply))?
            }
        };
        // The address in a PASV reply is ignored, as most clients do: the data comes from
        // the server we are talking to.
        let addr = SocketAddr::new(self.server, port);
        within(
            self.target.timeout,
            Stage::Transfer,
            open(addr, self.source),
        )
        .await?
        .map_err(|err| Failure::new(Stage::Transfer, format!("data connection to {addr}: {err}")))
    }

    /// rustls spends one TLS 1.3 ticket per resumption; when the server has handed out no
    /// new ones, a data connection could not resume the control connection's session, which
    /// the server demands, so the session logs in again first (as `ferry_client` does).
    async fn ensure_resumable(&mut self) -> Result<(), Failure> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        if tls.can_resume(self.control.tls_version()) {
            return Ok(());
        }
        let mut fresh = Session::open(&self.target, self.source, true).await?;
        if let Some(dir) = self.cwd.take() {
            fresh.cwd(&dir).await?;
        }
        fresh.pasv_only = self.pasv_only;
        fresh.relogins = self.relogins + 1;
        let old = std::mem::replace(self, fresh);
        old.quit().await
    }
}

fn data_failure(command: &str, doing: &str, err: &io::Error) -> Failure {
    Failure::new(Stage::Transfer, format!("{command}: {doing} data: {err}"))
}

fn bad_reply(command: &str, reply: &Reply) -> Failure {
    Failure::new(Stage::Transfer, format!("{command}: {reply}"))
}

/// `229 Entering Extended Passive Mode (|||6446|)`: the delimiter is whatever character
/// comes first.
fn epsv_port(reply: &Reply) -> Option<u16> {
    let text = reply.lines.first()?;
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    let delimiter = inner.chars().next()?;
    inner.split(delimiter).nth(3)?.parse().ok()
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`, with or without the parentheses.
fn pasv_port(reply: &Reply) -> Option<u16> {
    let text = reply.lines.first()?;
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<u16> = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [_, _, _, _, high, low] = numbers[..] else {
        return None;
    };
    Some(u16::from_be_bytes([
        u8::try_from(high).ok()?,
        u8::try_from(low).ok()?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_replies_give_the_port() {
        let epsv = |text: &str| epsv_port(&Reply::new(229, text));
        assert_eq!(
            epsv("Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(
            epsv("Entering extended passive mode (!!!50001!)."),
            Some(50001)
        );
        assert_eq!(epsv("no port"), None);
        let pasv = |text: &str| pasv_port(&Reply::new(227, text));
        assert_eq!(
            pasv("Entering Passive Mode (127,0,0,1,25,1)."),
            Some(25 * 256 + 1)
        );
        assert_eq!(pasv("=127,0,0,1,195,80"), Some(195 * 256 + 80));
        assert_eq!(pasv("Entering Passive Mode (127,0,0,1,256,1)"), None);
        assert_eq!(pasv("garbage"), None);
    }

    #[test]
    fn the_payload_has_no_zeros_and_does_not_repeat_early() {
        let bytes = payload();
        assert_eq!(bytes.len(), BUFFER);
        assert!(bytes.iter().all(|&b| b != 0));
        assert_ne!(bytes[..4096], bytes[4096..8192]);
    }
}
