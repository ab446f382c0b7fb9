//! Protocol robustness on a raw control connection: line limits, Telnet bytes, line endings,
//! bounce and port-theft defences, login throttling, session caps, the idle timeout,
//! pipelining and reply hygiene.
//!
//! Also home of [`Raw`], the byte-level control-connection client that `jail.rs` and
//! `concurrency.rs` reuse: it sends exactly the bytes it is given and checks that every reply
//! is well formed (three-digit code, CRLF line endings, no stray CR or LF inside a line).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

/// The longest a test waits for any one thing before failing instead of hanging.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A reply: its code and its text (the lines of a multi-line reply joined with `\n`, without
/// the code prefixes).
pub(crate) type Reply = (u16, String);

/// A raw control connection.
#[derive(Debug)]
pub(crate) struct Raw {
    stream: BufReader<TcpStream>,
    server_ip: IpAddr,
}

/// What a command that uses the data connection produced.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// The first reply: 150 when the transfer started, else the refusal.
    pub first: Reply,
    /// Bytes read from the data connection (downloads and listings).
    pub data: Vec<u8>,
    /// The final reply after a 1xx, if there was one.
    pub last: Option<Reply>,
}

impl Transfer {
    /// The code that decided the outcome: the final reply after a 1xx, else the first reply.
    pub(crate) fn code(&self) -> u16 {
        self.last.as_ref().map_or(self.first.0, |r| r.0)
    }
}

impl Raw {
    /// Connects without reading the greeting.
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Raw::connect_stream(stream, addr.ip())
    }

    /// Wraps an already connected control connection.
    fn connect_stream(stream: TcpStream, server_ip: IpAddr) -> Raw {
        Raw {
            stream: BufReader::new(stream),
            server_ip,
        }
    }

    /// Reads one reply and checks its code.
    async fn reply_is(&mut self, code: u16) {
        let r = self.reply().await;
        assert_eq!(r.0, code, "{r:?}");
    }

    /// Connects and checks the 220 greeting.
    pub(crate) async fn greeted(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let greeting = raw.reply().await;
        assert_eq!(greeting.0, 220, "greeting: {greeting:?}");
        raw
    }

    /// Connects and logs in.
    pub(crate) async fn login(addr: SocketAddr, user: &str, password: &str) -> Raw {
        let mut raw = Raw::greeted(addr).await;
        let r = raw.cmd(format!("USER {user}")).await;
        assert_eq!(r.0, 331, "USER: {r:?}");
        let r = raw.cmd(format!("PASS {password}")).await;
        assert_eq!(r.0, 230, "PASS: {r:?}");
        raw
    }

    /// The TCP connection underneath (for linger settings and addresses).
    pub(crate) fn tcp(&self) -> &TcpStream {
        self.stream.get_ref()
    }

    /// The TCP connection underneath, for writes that may block or fail.
    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        self.stream.get_mut()
    }

    /// Writes bytes as they are.
    pub(crate) async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        timeout(WAIT, self.stream.get_mut().write_all(bytes.as_ref()))
            .await
            .expect("write timed out")
            .expect("write to the control connection failed");
    }

    /// Sends one command line (CRLF appended) and reads its reply.
    pub(crate) async fn cmd(&mut self, line: impl AsRef<[u8]>) -> Reply {
        let mut bytes = line.as_ref().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send(bytes).await;
        self.reply().await
    }

    /// Reads one reply; the connection closing first fails the test.
    pub(crate) async fn reply(&mut self) -> Reply {
        match self.try_reply().await {
            Ok(Some(reply)) => reply,
            Ok(None) => panic!("connection closed while waiting for a reply"),
            Err(err) => panic!("reading a reply failed: {err}"),
        }
    }

    /// Reads one reply: `Ok(None)` on a clean EOF before any byte of it. Checks the form of
    /// every line (RFC 959 4.2): `ddd text` or `ddd-text` ... `ddd text`, each ending in CRLF
    /// with no other CR or LF in it.
    pub(crate) async fn try_reply(&mut self) -> io::Result<Option<Reply>> {
        let Some(first) = self.read_line().await? else {
            return Ok(None);
        };
        let code = reply_code(&first);
        let mut text = vec![first[4..].to_string()];
        if first.as_bytes()[3] == b'-' {
            let end = format!("{code} ");
            loop {
                let Some(line) = self.read_line().await? else {
                    panic!("connection closed inside a multi-line {code} reply: {text:?}");
                };
                if let Some(last) = line.strip_prefix(&end) {
                    text.push(last.to_string());
                    break;
                }
                text.push(line);
            }
        }
        Ok(Some((code, text.join("\n"))))
    }

    /// One reply line without its CRLF; `None` on EOF at a line boundary.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = Vec::new();
        let n = timeout(WAIT, self.stream.read_until(b'\n', &mut line))
            .await
            .expect("timed out waiting for a reply")?;
        if n == 0 {
            return Ok(None);
        }
        assert!(
            line.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        assert!(
            !line.contains(&b'\r') && !line.contains(&b'\n'),
            "bare CR or LF inside a reply line: {:?}",
            String::from_utf8_lossy(&line)
        );
        let line = String::from_utf8(line).expect("reply is not UTF-8");
        Ok(Some(line))
    }

    /// Asserts that the server closes the connection without sending anything more (a reset
    /// counts as closed).
    pub(crate) async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server did not close the connection")
        {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
            Err(err) => panic!("unexpected error while waiting for EOF: {err}"),
        }
        assert!(
            rest.is_empty(),
            "data after the final reply: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Sends EPSV and returns the address to connect the data connection to.
    pub(crate) async fn epsv(&mut self) -> SocketAddr {
        let r = self.cmd("EPSV").await;
        assert_eq!(r.0, 229, "EPSV: {r:?}");
        SocketAddr::new(self.server_ip, epsv_port(&r.1))
    }

    /// Sends PASV and returns the address it advertises.
    pub(crate) async fn pasv(&mut self) -> SocketAddr {
        let r = self.cmd("PASV").await;
        assert_eq!(r.0, 227, "PASV: {r:?}");
        pasv_addr(&r.1)
    }

    /// EPSV, then connects the data connection (before the transfer command is sent, which
    /// the listen backlog allows).
    pub(crate) async fn open_data(&mut self) -> TcpStream {
        let addr = self.epsv().await;
        timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("data connect timed out")
            .expect("data connect failed")
    }

    /// Runs one transfer command over a fresh passive data connection: uploads `upload` (then
    /// closes the data connection) or reads everything the server sends.
    pub(crate) async fn transfer(
        &mut self,
        cmd: impl AsRef<[u8]>,
        upload: Option<&[u8]>,
    ) -> Transfer {
        let mut data = self.open_data().await;
        let first = self.cmd(cmd).await;
        if !(100..200).contains(&first.0) {
            return Transfer {
                first,
                data: Vec::new(),
                last: None,
            };
        }
        let mut received = Vec::new();
        match upload {
            Some(bytes) => {
                // A refusal shows in the final reply; write errors are not the point here.
                let _ = timeout(WAIT, data.write_all(bytes)).await;
                let _ = data.shutdown().await;
            }
            None => {
                let _ = timeout(WAIT, data.read_to_end(&mut received))
                    .await
                    .expect("download timed out");
            }
        }
        drop(data);
        let last = self.reply().await;
        Transfer {
            first,
            data: received,
            last: Some(last),
        }
    }

    /// Downloads a file and checks the 150/226 pair.
    pub(crate) async fn retr(&mut self, name: &str) -> Vec<u8> {
        let t = self.transfer(format!("RETR {name}"), None).await;
        assert_eq!(t.first.0, 150, "RETR {name}: {t:?}");
        assert_eq!(t.code(), 226, "RETR {name}: {:?}", t.last);
        t.data
    }

    /// Uploads a file and checks the 150/226 pair.
    pub(crate) async fn stor(&mut self, name: &str, bytes: &[u8]) {
        let t = self.transfer(format!("STOR {name}"), Some(bytes)).await;
        assert_eq!(t.first.0, 150, "STOR {name}: {:?}", t.first);
        assert_eq!(t.code(), 226, "STOR {name}: {:?}", t.last);
    }
}

/// The code of a reply's first line, which must be `ddd ` or `ddd-`.
fn reply_code(line: &str) -> u16 {
    let bytes = line.as_bytes();
    assert!(
        bytes.len() >= 4
            && bytes[..3].iter().all(u8::is_ascii_digit)
            && (bytes[3] == b' ' || bytes[3] == b'-'),
        "malformed reply line: {line:?}"
    );
    let code: u16 = line[..3].parse().unwrap();
    assert!(
        (100..600).contains(&code),
        "reply code out of range: {line:?}"
    );
    code
}

/// The port of `229 Entering Extended Passive Mode (|||port|)`.
pub(crate) fn epsv_port(text: &str) -> u16 {
    let inner = text
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| panic!("no (|||port|) in {text:?}"));
    let delim = inner.chars().next().unwrap();
    let fields: Vec<&str> = inner.split(delim).collect();
    assert_eq!(fields.len(), 5, "EPSV reply {text:?}");
    fields[3].parse().unwrap()
}

/// The address of `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
pub(crate) fn pasv_addr(text: &str) -> SocketAddr {
    let inner = text
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| panic!("no (h1,h2,h3,h4,p1,p2) in {text:?}"));
    let n: Vec<u8> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    assert_eq!(n.len(), 6, "PASV reply {text:?}");
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(n[0], n[1], n[2], n[3])),
        u16::from_be_bytes([n[4], n[5]]),
    )
}

/// A PORT argument for `addr`.
fn port_arg(addr: SocketAddr) -> String {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("PORT needs IPv4");
    };
    let [a, b, c, d] = ip.octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{a},{b},{c},{d},{p1},{p2}")
}

// ---------------------------------------------------------------------------------------------
// Line length.

#[tokio::test]
async fn line_over_4096_bytes_without_line_ending_gets_500_and_disconnect() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    c.send(vec![b'A'; 5000]).await;
    let r = c.reply().await;
    assert_eq!(r.0, 500, "{r:?}");
    c.expect_closed().await;
}

#[tokio::test]
async fn line_over_4096_bytes_with_crlf_gets_500_and_disconnect() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    let mut line = vec![b'A'; 5000];
    line.extend_from_slice(b"\r\n");
    c.send(line).await;
    let r = c.reply().await;
    assert_eq!(r.0, 500, "{r:?}");
    c.expect_closed().await;

    // One byte over the limit, as a NOOP with a long argument and as a path.
    for prefix in ["NOOP ", "RETR "] {
        let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
        let mut line = prefix.as_bytes().to_vec();
        line.resize(4097, b'x');
        let r = c.cmd(line).await;
        assert_eq!(r.0, 500, "{prefix}: {r:?}");
        c.expect_closed().await;
    }
}

#[tokio::test]
async fn line_of_exactly_4096_bytes_is_accepted() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut line = b"NOOP ".to_vec();
    line.resize(4096, b'x');
    let r = c.cmd(&line).await;
    assert_eq!(r.0, 200, "{r:?}");
    // The same with a bare LF ending, and a 4096-byte path (a too-long name, not a too-long
    // line: any reply but a disconnect).
    line.push(b'\n');
    c.send(&line).await;
    assert_eq!(c.reply().await.0, 200);
    let mut retr = b"RETR ".to_vec();
    retr.resize(4096, b'y');
    let r = c.cmd(retr).await;
    assert!(r.0 >= 400, "{r:?}");
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn endless_line_is_cut_off_instead_of_buffered() {
    let server = TestServer::start();
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    // 16 MiB without a line ending: more than the socket buffers hold, so writing it all can
    // only succeed if the server keeps reading (and buffering) it.
    let flood = tokio::spawn(async move { write.write_all(&vec![b'B'; 16 << 20]).await });
    let mut received = Vec::new();
    let mut read = read;
    match timeout(WAIT, read.read_to_end(&mut received))
        .await
        .expect("the server kept the connection open")
    {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("220 "), "{received:?}");
    // The 500 may be lost to the reset that closing with unread input causes; if anything
    // follows the greeting, it is the 500.
    if let Some((_, rest)) = received.split_once("\r\n") {
        assert!(rest.is_empty() || rest.starts_with("500 "), "{received:?}");
    }
    let written = timeout(WAIT, flood)
        .await
        .expect("the server kept reading an endless line")
        .unwrap();
    assert!(
        written.is_err(),
        "the server accepted 16 MiB of one command line"
    );
}

// ---------------------------------------------------------------------------------------------
// Parsing and framing.

#[tokio::test]
async fn unknown_verb_is_502_blank_line_is_500_and_the_session_continues() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    assert_eq!(c.cmd("FOO bar").await.0, 502);
    assert_eq!(c.cmd("XYZZY").await.0, 502);
    assert_eq!(c.cmd("").await.0, 500);
    assert_eq!(c.cmd("   ").await.0, 500);
    assert_eq!(c.cmd("noop").await.0, 200, "verbs are case-insensitive");
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn telnet_iac_sequences_before_a_command_are_ignored() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    // IAC IP, IAC DM (the "Synch" clients send before ABOR).
    assert_eq!(c.cmd(b"\xff\xf4\xff\xf2NOOP").await.0, 200);
    // IAC WILL ECHO (option negotiation).
    assert_eq!(c.cmd(b"\xff\xfb\x01SYST").await.0, 215);
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn bare_lf_ends_a_line_and_bare_cr_does_not() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    c.send("NOOP\n").await;
    assert_eq!(c.reply().await.0, 200);
    c.send("SYST\n").await;
    assert_eq!(c.reply().await.0, 215);
    // "NOOP\rSYST" is one (unknown) verb, not NOOP then SYST.
    c.send("NOOP\rSYST\r\nHELP NOOP\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.0, 502, "{r:?}");
    let r = c.reply().await;
    assert_eq!(r.0, 214, "{r:?}");
    assert!(r.1.starts_with("NOOP"), "{r:?}");
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    c.send("USER alice\r\nPASS alice-pw\r\nPWD\r\n").await;
    assert_eq!(c.reply().await.0, 331);
    assert_eq!(c.reply().await.0, 230);
    assert_eq!(c.reply().await.0, 257);
    c.send("NOOP\r\nPWD\r\nSYST\r\n").await;
    assert_eq!(c.reply().await.0, 200);
    let r = c.reply().await;
    assert_eq!(r.0, 257);
    assert!(r.1.starts_with("\"/\""), "{r:?}");
    assert_eq!(c.reply().await.0, 215);
}

#[tokio::test]
async fn commands_pipelined_behind_a_transfer_run_after_it() {
    let server = TestServer::start();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.home("alice").join("f.bin"), &body).unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let mut data = c.open_data().await;
    c.send("RETR f.bin\r\nNOOP\r\nPWD\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.0, 150);
    let mut got = Vec::new();
    timeout(WAIT, data.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got == body, "downloaded bytes differ");
    assert_eq!(c.reply().await.0, 226);
    assert_eq!(c.reply().await.0, 200);
    assert_eq!(c.reply().await.0, 257);
    assert_eq!(c.reply().await.0, 221);
    c.expect_closed().await;
}

/// Verbs a client may use before logging in: login, TLS negotiation and session
/// information (the login gate in the session).
const ALLOWED_BEFORE_LOGIN: &[&str] = &[
    "USER", "PASS", "QUIT", "FEAT", "SYST", "HELP", "NOOP", "AUTH", "PBSZ", "PROT", "CCC", "OPTS",
];

/// Well-formed arguments (each with its leading space) for every verb HELP lists, so that the
/// login gate, not the parser, answers.
fn well_formed(verb: &str) -> Option<&'static [&'static str]> {
    Some(match verb {
        "ABOR" | "CDUP" | "EPSV" | "PASV" | "PWD" | "STOU" | "XCUP" | "XPWD" => &[""],
        "LIST" | "NLST" | "MLSD" | "MLST" | "STAT" => &["", " x"],
        "APPE" | "DELE" | "HASH" | "MD5" | "MDTM" | "MKD" | "MMD5" | "RETR" | "RMD" | "RNFR"
        | "RNTO" | "SIZE" | "STOR" | "XCRC" | "XMD5" | "XMKD" | "XRMD" | "XSHA1" | "XSHA512" => {
            &[" x"]
        }
        "XSHA256" => &[" x", " x 0 1"],
        "CWD" | "XCWD" => &[" /"],
        "ACCT" => &[" x"],
        "ALLO" => &[" 10"],
        "EPRT" => &[" |1|127.0.0.1|5000|"],
        "MODE" => &[" S"],
        "PORT" => &[" 127,0,0,1,4,0"],
        "RANG" => &[" 0 1"],
        "REST" => &[" 1"],
        "SITE" => &[" HELP", " QUOTA"],
        "STRU" => &[" F"],
        "TYPE" => &[" I"],
        _ => return None,
    })
}

#[tokio::test]
async fn commands_before_login_get_530() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    for cmd in [
        "PWD",
        "CWD /",
        "LIST",
        "RETR x",
        "STOR x",
        "DELE x",
        "MKD x",
        "SIZE x",
        "PASV",
        "EPSV",
        "PORT 127,0,0,1,4,0",
    ] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.0, 530, "{cmd}: {r:?}");
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert_eq!(c.cmd("SYST").await.0, 215);

    // Every verb the server lists in HELP: a verb added later without a line here fails.
    let (code, help) = c.cmd("HELP").await;
    assert_eq!(code, 214, "{help}");
    // The verbs are on the lines between "The following commands are recognized:" and "Help OK".
    let lines: Vec<&str> = help.lines().collect();
    let verbs: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(verbs.len() > 50, "{help}");
    for verb in &verbs {
        if ALLOWED_BEFORE_LOGIN.contains(verb) {
            continue;
        }
        let args = well_formed(verb).unwrap_or_else(|| panic!("no well-formed {verb} line"));
        for arg in args {
            let r = c.cmd(format!("{verb}{arg}")).await;
            assert_eq!(r.0, 530, "{verb}{arg}: {r:?}");
        }
    }
    // The allowed ones are answered (AUTH and PBSZ/PROT/CCC by what TLS offers).
    for cmd in [
        "FEAT",
        "SYST",
        "HELP",
        "NOOP",
        "OPTS UTF8 ON",
        "AUTH TLS",
        "PBSZ 0",
        "PROT P",
        "CCC",
    ] {
        let r = c.cmd(cmd).await;
        assert_ne!(r.0, 530, "{cmd}: {r:?}");
    }
    assert_eq!(c.cmd("PASS x").await.0, 503);
    assert_eq!(c.cmd("USER alice").await.0, 331);
    assert_eq!(c.cmd("PASS alice-pw").await.0, 230);
}

// ---------------------------------------------------------------------------------------------
// Data connection security (RFC 2577).

#[tokio::test]
async fn port_and_eprt_to_foreign_addresses_or_privileged_ports_are_refused() {
    let server = TestServer::start();
    std::fs::write(server.home("alice").join("a.txt"), b"a").unwrap();
    // A listener on another loopback address: the server must never connect to it.
    let bait = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let bait_addr = bait.local_addr().unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let refused = [
        format!("PORT {}", port_arg(bait_addr)),
        "PORT 10,0,0,1,19,137".to_string(),
        "PORT 192,168,1,1,19,137".to_string(),
        "PORT 127,0,0,1,0,21".to_string(),
        "PORT 127,0,0,1,3,255".to_string(),
        format!("EPRT |1|127.0.0.2|{}|", bait_addr.port()),
        "EPRT |1|10.0.0.1|5000|".to_string(),
        "EPRT |1|127.0.0.1|25|".to_string(),
        "EPRT |2|::1|5000|".to_string(),
        "EPRT |2|::ffff:10.0.0.1|5000|".to_string(),
    ];
    for cmd in &refused {
        let r = c.cmd(cmd).await;
        assert_eq!(r.0, 504, "{cmd}: {r:?}");
        // Nothing was prepared, so a transfer has no data channel.
        let r = c.cmd("LIST").await;
        assert_eq!(r.0, 425, "LIST after {cmd}: {r:?}");
        let r = c.cmd("RETR a.txt").await;
        assert_eq!(r.0, 425, "RETR after {cmd}: {r:?}");
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert!(
        timeout(Duration::from_millis(100), bait.accept())
            .await
            .is_err(),
        "the server connected to a foreign address"
    );
}

#[tokio::test]
async fn active_mode_to_the_clients_own_address_works() {
    let server = TestServer::start();
    std::fs::write(server.home("alice").join("a.txt"), b"active bytes").unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    for prepare in ["PORT", "EPRT"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cmd = match prepare {
            "PORT" => format!("PORT {}", port_arg(addr)),
            _ => format!("EPRT |1|127.0.0.1|{}|", addr.port()),
        };
        assert_eq!(c.cmd(&cmd).await.0, 200, "{cmd}");
        assert_eq!(c.cmd("RETR a.txt").await.0, 150);
        let (mut data, from) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        assert_eq!(from.ip(), server.addr().ip());
        let mut got = Vec::new();
        data.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"active bytes");
        assert_eq!(c.reply().await.0, 226);
    }
}

#[tokio::test]
async fn passive_connection_from_a_foreign_address_is_not_used() {
    let server = TestServer::start();
    std::fs::write(server.home("alice").join("listed-file.txt"), b"x").unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    for mode in ["EPSV", "PASV"] {
        let data_addr = match mode {
            "EPSV" => c.epsv().await,
            _ => c.pasv().await,
        };
        // The thief connects first, from another address.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut thief = timeout(WAIT, socket.connect(data_addr))
            .await
            .unwrap()
            .unwrap();
        let r = c.cmd("LIST").await;
        assert_eq!(r.0, 150, "{mode}: {r:?}");
        let mut legit = TcpStream::connect(data_addr).await.unwrap();
        let mut listing = Vec::new();
        timeout(WAIT, legit.read_to_end(&mut listing))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listing).contains("listed-file.txt"),
            "{mode}: the legitimate connection got {listing:?}"
        );
        let r = c.reply().await;
        assert_eq!(r.0, 226, "{mode}: {r:?}");
        let mut stolen = Vec::new();
        let _ = timeout(WAIT, thief.read_to_end(&mut stolen))
            .await
            .expect("the thief's connection was left open");
        assert!(stolen.is_empty(), "{mode}: the thief received {stolen:?}");
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// Login.

#[tokio::test]
async fn repeated_wrong_passwords_get_530_then_421_and_close() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    for attempt in 1..=2 {
        assert_eq!(c.cmd("USER alice").await.0, 331);
        let r = c.cmd(format!("PASS wrong-{attempt}")).await;
        assert_eq!(r.0, 530, "attempt {attempt}: {r:?}");
    }
    assert_eq!(c.cmd("USER alice").await.0, 331);
    let r = c.cmd("PASS wrong-3").await;
    assert_eq!(r.0, 421, "{r:?}");
    c.expect_closed().await;

    // The limit is per connection: a new one may log in with the right password.
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn failures_below_the_limit_still_allow_the_right_password() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    for _ in 0..2 {
        assert_eq!(c.cmd("USER alice").await.0, 331);
        assert_eq!(c.cmd("PASS nope").await.0, 530);
    }
    assert_eq!(c.cmd("USER alice").await.0, 331);
    assert_eq!(c.cmd("PASS alice-pw").await.0, 230);
    assert_eq!(c.cmd("PWD").await.0, 257);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    let unknown_user = c.cmd("USER mallory").await;
    let unknown_pass = c.cmd("PASS whatever").await;
    let known_user = c.cmd("USER alice").await;
    let wrong_pass = c.cmd("PASS whatever").await;
    assert_eq!(unknown_user, known_user);
    assert_eq!(unknown_pass.0, 530);
    assert_eq!(unknown_pass, wrong_pass);
}

#[tokio::test]
async fn passwords_are_never_echoed() {
    let server = TestServer::start();
    let mut c = Raw::greeted(server.addr()).await;
    let mut seen = Vec::new();
    seen.push(c.cmd("USER alice").await);
    seen.push(c.cmd("PASS Sekrit-XYZZY-1").await);
    seen.push(c.cmd("PASS Sekrit-XYZZY-2").await);
    seen.push(c.cmd("USER alice").await);
    seen.push(c.cmd("PASS alice-pw").await);
    seen.push(c.cmd("STAT").await);
    seen.push(c.cmd("PASS alice-pw").await);
    seen.push(c.cmd("FOOPASS alice-pw").await);
    for (code, text) in &seen {
        assert!(
            !text.contains("Sekrit") && !text.contains("alice-pw"),
            "password echoed in {code} {text:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Session limits.

/// Two sessions fill the cap: a third gets 421 and is closed, and once one of the two quits a
/// new connection is served.
async fn third_session_is_refused_until_one_quits(server: &TestServer) {
    let mut first = Raw::greeted(server.addr()).await;
    let mut second = Raw::greeted(server.addr()).await;
    for _ in 0..2 {
        let mut third = Raw::connect(server.addr()).await;
        let r = third.reply().await;
        assert_eq!(r.0, 421, "{r:?}");
        third.expect_closed().await;
    }
    assert_eq!(first.cmd("QUIT").await.0, 221);
    first.expect_closed().await;
    // The slot is released as the session task ends, which is just after its socket closes;
    // a reconnect in that instant may still be refused, so poll for a short while.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut fourth = loop {
        let mut c = Raw::connect(server.addr()).await;
        let r = c.reply().await;
        if r.0 == 220 {
            break c;
        }
        assert_eq!(r.0, 421, "{r:?}");
        assert!(Instant::now() < deadline, "slot not released after QUIT");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(fourth.cmd("NOOP").await.0, 200);
    assert_eq!(second.cmd("NOOP").await.0, 200);
}

#[tokio::test]
async fn per_ip_cap_refuses_with_421_and_frees_the_slot_on_quit() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.max_per_ip = 2)
        .start();
    third_session_is_refused_until_one_quits(&server).await;
}

#[tokio::test]
async fn total_session_cap_refuses_with_421_and_frees_the_slot_on_quit() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.max_sessions = 2)
        .start();
    third_session_is_refused_until_one_quits(&server).await;
}

#[tokio::test]
async fn idle_sessions_get_421_and_are_closed() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.idle_timeout = Duration::from_secs(1))
        .start();
    let silent = async {
        let mut c = Raw::greeted(server.addr()).await;
        let r = c.reply().await;
        assert_eq!(r.0, 421, "{r:?}");
        c.expect_closed().await;
    };
    let logged_in = async {
        let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
        let r = c.reply().await;
        assert_eq!(r.0, 421, "{r:?}");
        c.expect_closed().await;
    };
    // Activity resets the timer: commands 400 ms apart keep a session for longer than 1 s.
    let busy = async {
        let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(c.cmd("NOOP").await.0, 200);
        }
    };
    tokio::join!(silent, logged_in, busy);
}

// ---------------------------------------------------------------------------------------------
// Reply hygiene.

#[tokio::test]
async fn client_input_cannot_inject_reply_lines() {
    let server = TestServer::start();
    // A name with CRLF on disk (put there by someone else) must not forge listing or reply lines.
    std::fs::write(server.home("alice").join("evil\r\n230 forged"), b"x").unwrap();
    std::fs::write(server.home("alice").join("plain.txt"), b"x").unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // Every reply is read by `Raw`, which fails on a bare CR or LF inside a reply line; each
    // command below must get exactly one reply, so the NOOP after it gets the next.
    for line in [
        &b"MKD a\r230 forged"[..],
        b"CWD a\r230 forged",
        b"RETR a\r230 forged",
        b"FOO\r230 forged",
        b"USER x\r230 forged",
        b"SITE x\r230 forged",
        b"HELP x\r230 forged",
        b"OPTS x\r230 forged",
    ] {
        let r = c.cmd(line).await;
        assert!(r.0 >= 500, "{:?}: {r:?}", String::from_utf8_lossy(line));
        assert_eq!(c.cmd("NOOP").await.0, 200);
    }
    let r = c.cmd("STAT /").await;
    assert_eq!(r.0, 213, "{r:?}");
    assert!(r.1.contains("plain.txt") && !r.1.contains("evil"), "{r:?}");
    let t = c.transfer("LIST", None).await;
    assert_eq!(t.code(), 226);
    let listing = String::from_utf8_lossy(&t.data);
    assert!(
        listing.contains("plain.txt") && !listing.contains("evil"),
        "{listing}"
    );
    let t = c.transfer("NLST", None).await;
    assert_eq!(String::from_utf8_lossy(&t.data), "plain.txt\r\n");
    // Quotes in a created directory's name are doubled (RFC 959 appendix II).
    let r = c.cmd("MKD q\"uote").await;
    assert_eq!(r, (257, "\"/q\"\"uote\" created".to_string()));
    assert_eq!(c.cmd("NOOP").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// More limits: slow clients, passive listeners, addresses.

#[tokio::test]
async fn a_line_dripped_byte_by_byte_does_not_reset_the_idle_timer() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.idle_timeout = Duration::from_secs(1))
        .start();
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut greeting = String::new();
    read.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    let started = Instant::now();
    // One byte every 200 ms for 5 s, never a line ending (errors once closed are expected).
    let drip = tokio::spawn(async move {
        for _ in 0..25 {
            if write.write_all(b"N").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut line = String::new();
    let _ = timeout(WAIT, read.read_line(&mut line))
        .await
        .expect("no reply");
    assert!(line.starts_with("421 "), "{line:?}");
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "the partial line kept the session alive for {:?}",
        started.elapsed()
    );
    drip.abort();
}

/// Waits (briefly) until nothing listens at `addr` any more.
async fn eventually_refused(addr: SocketAddr, what: &str) {
    // A listener is dropped just after the reply that ends its use goes out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{what}: {addr} still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn passive_listeners_do_not_outlive_their_use() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let first = c.epsv().await;
    let second = c.epsv().await;
    eventually_refused(first, "EPSV after EPSV").await;
    let third = c.pasv().await;
    eventually_refused(second, "PASV after EPSV").await;
    // A transfer that fails before it starts still uses up the listener.
    assert_eq!(c.cmd("RETR missing.txt").await.0, 550);
    eventually_refused(third, "RETR of a missing file").await;
    let fourth = c.epsv().await;
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.expect_closed().await;
    eventually_refused(fourth, "QUIT").await;
}

#[tokio::test]
async fn epsv_all_refuses_port_eprt_and_pasv() {
    let server = TestServer::start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    assert_eq!(c.cmd("EPSV ALL").await.0, 200);
    for cmd in ["PORT 127,0,0,1,4,0", "EPRT |1|127.0.0.1|1024|", "PASV"] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.0, 503, "{cmd}: {r:?}");
    }
    let t = c.transfer("NLST", None).await;
    assert_eq!(t.code(), 226);
}

/// A control connection from `source` to `server`.
async fn connect_from(source: &str, server: SocketAddr) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = timeout(WAIT, socket.connect(server))
        .await
        .unwrap()
        .unwrap();
    let mut raw = Raw::connect_stream(stream, server.ip());
    raw.reply_is(220).await;
    raw
}

#[tokio::test]
async fn limits_and_data_checks_follow_the_clients_own_address() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.max_per_ip = 1)
        .start();
    std::fs::write(server.home("alice").join("f.txt"), b"from .2").unwrap();
    // One session per address: 127.0.0.1 and 127.0.0.2 each get theirs.
    let mut one = Raw::greeted(server.addr()).await;
    let mut two = connect_from("127.0.0.2", server.addr()).await;
    let mut extra = Raw::connect(server.addr()).await;
    extra.reply_is(421).await;
    assert_eq!(one.cmd("NOOP").await.0, 200);
    assert_eq!(two.cmd("USER alice").await.0, 331);
    assert_eq!(two.cmd("PASS alice-pw").await.0, 230);
    // For the client at 127.0.0.2, 127.0.0.1 is a foreign address.
    assert_eq!(two.cmd("PORT 127,0,0,1,19,137").await.0, 504);
    assert_eq!(two.cmd("EPRT |1|127.0.0.1|5001|").await.0, 504);
    // Its passive data connection must come from 127.0.0.2, not 127.0.0.1.
    let data_addr = two.epsv().await;
    let mut thief = TcpStream::connect(data_addr).await.unwrap();
    assert_eq!(two.cmd("RETR f.txt").await.0, 150);
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut data = socket.connect(data_addr).await.unwrap();
    let mut got = Vec::new();
    timeout(WAIT, data.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"from .2");
    two.reply_is(226).await;
    let mut stolen = Vec::new();
    let _ = timeout(WAIT, thief.read_to_end(&mut stolen)).await.unwrap();
    assert!(stolen.is_empty(), "{stolen:?}");
}

#[tokio::test]
async fn an_over_long_line_during_a_transfer_gets_500_and_disconnect() {
    let server = TestServer::start();
    let body = vec![7u8; 64 << 20];
    std::fs::write(server.home("alice").join("big.bin"), &body).unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let _data = c.open_data().await;
    assert_eq!(c.cmd("RETR big.bin").await.0, 150);
    // The download is not read, so the transfer is still running when the line arrives.
    let mut line = vec![b'A'; 5000];
    line.extend_from_slice(b"\r\n");
    c.send(line).await;
    let r = c.try_reply().await;
    assert!(
        matches!(r, Ok(Some((500, _)))),
        "expected 500 before the disconnect, got {r:?}"
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn commands_sent_during_a_transfer_are_not_queued_without_bound() {
    let server = TestServer::start();
    let body = vec![7u8; 64 << 20];
    std::fs::write(server.home("alice").join("big.bin"), &body).unwrap();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    let data = c.open_data().await;
    assert_eq!(c.cmd("RETR big.bin").await.0, 150);
    // The download is never read, so the transfer cannot end; meanwhile 64 MiB of NOOP lines
    // arrive. A bounded server stops reading them (the writes block) or drops the
    // connection; it must not take them all into memory.
    let mut line = b"NOOP ".to_vec();
    line.resize(4000, b'x');
    line.extend_from_slice(b"\r\n");
    let chunk: Vec<u8> = line.repeat(256);
    let mut accepted = 0usize;
    let limit = 64usize << 20;
    while accepted < limit {
        match timeout(Duration::from_secs(1), c.tcp_mut().write_all(&chunk)).await {
            Ok(Ok(())) => accepted += chunk.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    data.set_zero_linger().unwrap();
    drop(data);
    assert!(
        accepted < limit,
        "the server took {} MiB of commands into memory during one transfer",
        accepted >> 20
    );
}

#[tokio::test]
async fn a_client_that_never_reads_replies_cannot_hold_a_session_forever() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| {
            c.max_per_ip = 1;
            // Whichever timeout the server applies to a reply that cannot be written.
            c.idle_timeout = Duration::from_secs(1);
            c.data_timeout = Duration::from_secs(1);
        })
        .start();
    let mut c = Raw::login(server.addr(), "alice", "alice-pw").await;
    // 8 MiB of NOOPs whose replies are never read: the server's replies fill the socket
    // buffers and its writes block.
    let flood = b"NOOP\r\n".repeat(8 << 20 >> 3);
    let _ = timeout(Duration::from_secs(1), c.tcp_mut().write_all(&flood)).await;
    // The one session this address may have is held by the stuck client; it must be closed
    // by a timeout (a few idle timeouts at most), freeing the slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Raw::connect(server.addr()).await;
        let r = next.reply().await;
        if r.0 == 220 {
            break;
        }
        assert_eq!(r.0, 421, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "a session whose client stopped reading was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
}

/// lftp sends ABOR after Telnet IP and a Synch whose DM byte is TCP urgent data. The server
/// must answer it at once, not only when the next command happens to arrive (regression: the
/// read stopped at the urgent mark and the rest of the line sat unnoticed).
#[test]
fn abor_after_an_urgent_telnet_synch_is_answered_at_once() {
    let server = TestServer::start();
    std::fs::write(server.home("alice").join("f.bin"), vec![1u8; 4 << 20]).unwrap();
    let script = r#"
import socket, sys
port = int(sys.argv[1])
c = socket.create_connection(("127.0.0.1", port), timeout=5)
f = c.makefile("rb")
def reply():
    line = f.readline()
    code = line[:3]
    while line[3:4] == b"-":
        line = f.readline()
        while line[:3] != code or line[3:4] != b" ":
            line = f.readline()
    return line.decode().strip()
reply()
c.sendall(b"USER alice\r\n"); reply()
c.sendall(b"PASS alice-pw\r\n"); reply()
c.sendall(b"EPSV\r\n"); r = reply()
dport = int(r.split("|||")[1].split("|")[0])
d = socket.create_connection(("127.0.0.1", dport), timeout=5)
c.sendall(b"RETR f.bin\r\n"); print(reply())
d.recv(1000)
d.close()
c.send(b"\xff\xf4\xff")
c.send(b"\xf2", socket.MSG_OOB)
c.send(b"ABOR\r\n")
print(reply())
print(reply())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &server.addr().port().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes: Vec<&str> = stdout.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes[0], "150", "{stdout}");
    // 426 for the cut transfer, then 226 for the ABOR, with no further command sent.
    assert!(codes[1..].contains(&"226"), "{stdout}");
}

#[tokio::test]
async fn failed_logins_from_one_address_block_it_across_connections() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| {
            c.max_login_failures = 3;
            c.max_login_failures_per_ip = 4;
        })
        .start();
    // Three on one connection close it; reconnecting gives the guesser one more try.
    let mut c = connect_from("127.0.0.1", server.addr()).await;
    for attempt in 1..=3 {
        assert_eq!(c.cmd("USER alice").await.0, 331);
        let expected = if attempt == 3 { 421 } else { 530 };
        assert_eq!(c.cmd("PASS guess").await.0, expected, "attempt {attempt}");
    }
    c.expect_closed().await;
    let mut c = connect_from("127.0.0.1", server.addr()).await;
    assert_eq!(c.cmd("USER alice").await.0, 331);
    assert_eq!(c.cmd("PASS guess").await.0, 530);
    // Now even the right password is refused from this address, without a hint why beyond
    // the address; another address logs in as usual.
    assert_eq!(c.cmd("USER alice").await.0, 331);
    let (code, text) = c.cmd("PASS alice-pw").await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("address"), "{text}");
    c.expect_closed().await;
    let mut other = connect_from("127.0.0.2", server.addr()).await;
    assert_eq!(other.cmd("USER alice").await.0, 331);
    assert_eq!(other.cmd("PASS alice-pw").await.0, 230);
}
