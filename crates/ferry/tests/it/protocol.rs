//! Protocol conformance: RFC 959, 2389, 2428, 2640 and 3659 as seen by suppaftp (a client nobody
//! here wrote) and, where suppaftp has no method for a command, by a raw control connection.
//! Every test compares reply codes, bytes on the wire and files on disk.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use suppaftp::list::ListParser;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use testkit::{TestServer, random_bytes};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long any single read from the server may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// 2001-09-09 01:46:40 UTC, a modification time with a well-known MDTM form.
const BILLENNIUM: u64 = 1_000_000_000;
const BILLENNIUM_TIMEVAL: &str = "20010909014640";

/// The reply code of a command suppaftp reports as refused; panics if it was accepted.
fn refused<T>(result: Result<T, FtpError>) -> u32 {
    match result {
        // Read from the reply text: suppaftp's Status has no variant for some codes (554).
        Err(FtpError::UnexpectedResponse(response)) => String::from_utf8_lossy(&response.body)
            .get(..3)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("reply without a code: {response:?}")),
        Err(err) => panic!("expected a refusal reply, got the error {err}"),
        Ok(_) => panic!("expected a refusal reply, the command succeeded"),
    }
}

/// Creates a user's home with files before the user logs in (the server creates it on login).
fn home_with(server: &TestServer, user: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let home = server.home(user);
    std::fs::create_dir_all(&home).unwrap();
    for (name, bytes) in files {
        let path = home.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
    home
}

fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYYYMMDDHHMMSS` in UTC for seconds since the epoch (RFC 3659 time-val), computed here
/// independently of the server (days-to-civil conversion).
fn timeval(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}")
}

/// Sorted entry names of a directory on disk.
fn disk_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A suppaftp client logged in as `user` (password `<user>-pw`), in TYPE I.
async fn client(addr: SocketAddr, user: &str) -> AsyncFtpStream {
    let mut ftp = AsyncFtpStream::connect(addr).await.unwrap();
    ftp.login(user, format!("{user}-pw").as_str())
        .await
        .unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp
}

async fn put(ftp: &mut AsyncFtpStream, name: &str, data: &[u8]) {
    let mut reader = data;
    let sent = ftp.put_file(name, &mut reader).await.unwrap();
    assert_eq!(sent, data.len() as u64, "bytes sent for {name}");
}

async fn get(ftp: &mut AsyncFtpStream, name: &str) -> Vec<u8> {
    let mut stream = ftp.retr_as_stream(name).await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut back))
        .await
        .expect("download stalled")
        .unwrap();
    stream.finish().await.unwrap();
    back
}

async fn sorted_nlst(ftp: &mut AsyncFtpStream, path: Option<&str>) -> Vec<String> {
    let mut names = ftp.nlst(path).await.unwrap();
    names.sort();
    names
}

/// One reply as it came over the wire: its code and every raw line (CRLF removed).
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A raw control connection: write `CMD\r\n`, read reply lines.
#[derive(Debug)]
struct Control {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Control {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut control = Control {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = control.reply().await;
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        control
    }

    /// Connects and logs in as `user` with password `<user>-pw`.
    async fn login(addr: SocketAddr, user: &str) -> Self {
        let mut control = Control::connect(addr).await;
        control.expect(&format!("USER {user}"), 331).await;
        control.expect(&format!("PASS {user}-pw"), 230).await;
        control
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("no reply line in time")
            .unwrap();
        assert!(n > 0, "control connection closed while waiting for a reply");
        assert!(
            buf.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("reply is not UTF-8")
    }

    /// Reads one complete reply, single- or multi-line (RFC 959 section 4.2).
    async fn reply(&mut self) -> Reply {
        let first = self.line().await;
        let code: u16 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("reply line without a code: {first:?}"));
        let multi = first.as_bytes().get(3) == Some(&b'-');
        let mut lines = vec![first];
        if multi {
            let end = format!("{code} ");
            loop {
                let line = self.line().await;
                let done = line.starts_with(&end);
                lines.push(line);
                if done {
                    break;
                }
            }
        }
        Reply { code, lines }
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(line).await;
        self.reply().await
    }

    /// Sends `line` and asserts the reply code.
    async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line).await;
        assert_eq!(reply.code, code, "{line:?} answered {reply:?}");
        reply
    }

    fn server_ip(&self) -> IpAddr {
        self.writer.peer_addr().unwrap().ip()
    }

    /// EPSV, then connects to the advertised port on the control connection's address.
    async fn epsv(&mut self) -> TcpStream {
        let reply = self.expect("EPSV", 229).await;
        let text = &reply.lines[0];
        let start = text.find("(|||").expect("EPSV reply without (|||port|)") + 4;
        let len = text[start..].find('|').expect("EPSV reply not closed");
        let port: u16 = text[start..start + len].parse().unwrap();
        TcpStream::connect((self.server_ip(), port)).await.unwrap()
    }

    /// PASV, then connects to the advertised address.
    async fn pasv(&mut self) -> TcpStream {
        let reply = self.expect("PASV", 227).await;
        let text = &reply.lines[0];
        let open = text.find('(').expect("PASV reply without (h1,...,p2)");
        let close = text[open..].find(')').unwrap() + open;
        let nums: Vec<u8> = text[open + 1..close]
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        assert_eq!(nums.len(), 6, "PASV reply {text:?}");
        let ip = IpAddr::from([nums[0], nums[1], nums[2], nums[3]]);
        let port = u16::from_be_bytes([nums[4], nums[5]]);
        TcpStream::connect((ip, port)).await.unwrap()
    }

    /// Runs a download-type command (RETR, LIST, NLST, MLSD) over `data`: 150, bytes, 226.
    async fn download(&mut self, data: TcpStream, command: &str) -> Vec<u8> {
        self.expect(command, 150).await;
        let bytes = read_all(data).await;
        let done = self.reply().await;
        assert_eq!(done.code, 226, "{command:?} finished with {done:?}");
        bytes
    }

    /// Runs an upload-type command over `data`: 150 (returned), bytes, 226.
    async fn upload(&mut self, mut data: TcpStream, command: &str, bytes: &[u8]) -> Reply {
        let started = self.expect(command, 150).await;
        data.write_all(bytes).await.unwrap();
        data.shutdown().await.unwrap();
        drop(data);
        let done = self.reply().await;
        assert_eq!(done.code, 226, "{command:?} finished with {done:?}");
        started
    }
}

async fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("data connection stalled")
        .unwrap();
    bytes
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the server did not connect for the active transfer")
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Login

#[tokio::test]
async fn login_with_the_right_password_succeeds() {
    let server = TestServer::start();
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    ftp.quit().await.unwrap();

    let mut raw = Control::connect(server.addr()).await;
    raw.expect("USER bob", 331).await;
    raw.expect("PASS bob-pw", 230).await;
    raw.expect("QUIT", 221).await;
}

#[tokio::test]
async fn wrong_password_is_530_and_the_session_continues() {
    let server = TestServer::start();
    let mut raw = Control::connect(server.addr()).await;
    raw.expect("USER alice", 331).await;
    raw.expect("PASS not-the-password", 530).await;
    // Still not logged in, but still connected.
    raw.expect("PWD", 530).await;
    raw.expect("USER alice", 331).await;
    raw.expect("PASS alice-pw", 230).await;
    let pwd = raw.expect("PWD", 257).await;
    assert!(pwd.lines[0].contains("\"/\""), "{pwd:?}");

    // An unknown user gets the same answer as a wrong password.
    let mut raw = Control::connect(server.addr()).await;
    raw.expect("USER mallory", 331).await;
    raw.expect("PASS alice-pw", 530).await;

    // The same through suppaftp: an error, then a working login on the same connection.
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    assert_eq!(refused(ftp.login("alice", "bob-pw").await), 530);
    ftp.login("alice", "alice-pw").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
}

#[tokio::test]
async fn pass_before_user_is_503() {
    let server = TestServer::start();
    let mut raw = Control::connect(server.addr()).await;
    raw.expect("PASS alice-pw", 503).await;
    raw.expect("PWD", 530).await;
    raw.expect("USER alice", 331).await;
    raw.expect("PASS alice-pw", 230).await;
    raw.expect("PWD", 257).await;
}

#[tokio::test]
async fn commands_before_login_are_530_and_change_nothing() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[("a.txt", b"keep me"), ("d/x", b"x")]);
    let mut raw = Control::connect(server.addr()).await;
    for command in [
        "LIST",
        "NLST",
        "MLSD",
        "MLST a.txt",
        "RETR a.txt",
        "STOR b.txt",
        "APPE a.txt",
        "STOU",
        "CWD d",
        "CDUP",
        "PWD",
        "MKD newdir",
        "RMD d",
        "DELE a.txt",
        "RNFR a.txt",
        "SIZE a.txt",
        "MDTM a.txt",
        "PASV",
        "EPSV",
        "PORT 127,0,0,1,200,10",
        "TYPE I",
        "REST 1",
        "STAT a.txt",
    ] {
        raw.expect(command, 530).await;
    }
    assert_eq!(disk_names(&home), ["a.txt", "d"]);
    assert_eq!(std::fs::read(home.join("a.txt")).unwrap(), b"keep me");
    // The session survives all of that.
    raw.expect("USER alice", 331).await;
    raw.expect("PASS alice-pw", 230).await;
}

#[tokio::test]
async fn feat_syst_noop_help_work_before_login() {
    let server = TestServer::start();
    let mut raw = Control::connect(server.addr()).await;
    let feat = raw.expect("FEAT", 211).await;
    assert!(feat.lines.len() > 2, "{feat:?}");
    let syst = raw.expect("SYST", 215).await;
    assert!(syst.lines[0].starts_with("215 UNIX"), "{syst:?}");
    raw.expect("NOOP", 200).await;
    let help = raw.expect("HELP", 214).await;
    assert!(help.text().contains("RETR"), "{help:?}");
    raw.expect("OPTS UTF8 ON", 200).await;
    raw.expect("PWD", 530).await;
}

// ---------------------------------------------------------------------------------------------
// Command parsing

#[tokio::test]
async fn unknown_commands_are_502_and_malformed_arguments_501() {
    let server = TestServer::start();
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("FOOBAR", 502).await;
    raw.expect("XYZZY with args", 502).await;
    for bad in [
        "TYPE X",
        "TYPE",
        "PORT 1,2,3",
        "PORT 1,2,3,4,5,300",
        "PORT a,b,c,d,e,f",
        "REST -1",
        "REST abc",
        "REST",
        "MODE",
        "STRU",
        "RETR",
        "MKD",
        "EPRT |1|not-an-ip|5000|",
        "EPRT garbage",
    ] {
        raw.expect(bad, 501).await;
    }
    raw.expect("TYPE E", 504).await;
    // The session is unharmed.
    raw.expect("NOOP", 200).await;
    raw.expect("PWD", 257).await;
}

#[tokio::test]
async fn type_mode_stru_and_allo() {
    let server = TestServer::start();
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;
    raw.expect("TYPE A", 200).await;
    raw.expect("TYPE A N", 200).await;
    raw.expect("TYPE L 8", 200).await;
    raw.expect("MODE S", 200).await;
    raw.expect("MODE B", 504).await;
    raw.expect("MODE C", 504).await;
    raw.expect("STRU F", 200).await;
    raw.expect("STRU R", 504).await;
    raw.expect("ALLO 1000", 202).await;
    raw.expect("ALLO", 202).await;
}

#[tokio::test]
async fn commands_are_case_insensitive() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut raw = Control::connect(server.addr()).await;
    raw.expect("user alice", 331).await;
    raw.expect("pAsS alice-pw", 230).await;
    raw.expect("noop", 200).await;
    let pwd = raw.expect("pWd", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/\""), "{pwd:?}");
    raw.expect("type i", 200).await;
    // Verbs are case-insensitive; arguments keep their case.
    raw.expect("mKd MixedCase", 257).await;
    assert!(home.join("MixedCase").is_dir());
    raw.expect("cwd MixedCase", 250).await;
    let pwd = raw.expect("xpwd", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/MixedCase\""), "{pwd:?}");
}

// ---------------------------------------------------------------------------------------------
// Directories and names

#[tokio::test]
async fn pwd_cwd_cdup_and_the_x_variants() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[("file.txt", b"f")]);
    let mut ftp = client(server.addr(), "alice").await;
    ftp.mkdir("a").await.unwrap();
    ftp.cwd("a").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/a");
    ftp.mkdir("b").await.unwrap();
    assert!(
        home.join("a/b").is_dir(),
        "MKD is relative to the current directory"
    );
    ftp.cwd("/a/b").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/a/b");
    ftp.cdup().await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/a");
    ftp.cdup().await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    // CDUP at the home stays at the home.
    ftp.cdup().await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    assert_eq!(refused(ftp.cwd("missing").await), 550);
    assert_eq!(ftp.pwd().await.unwrap(), "/");

    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("XCWD a/b", 250).await;
    let pwd = raw.expect("XPWD", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/a/b\""), "{pwd:?}");
    raw.expect("XCUP", 250).await;
    let pwd = raw.expect("PWD", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/a\""), "{pwd:?}");
    raw.expect("CDUP", 250).await;
    let pwd = raw.expect("PWD", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/\""), "{pwd:?}");
}

#[tokio::test]
async fn mkd_replies_257_with_the_quoted_path_and_rmd_removes() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut raw = Control::login(server.addr(), "alice").await;
    let created = raw.expect("MKD new dir", 257).await;
    assert!(
        created.lines[0].starts_with("257 \"/new dir\""),
        "{created:?}"
    );
    assert!(home.join("new dir").is_dir());
    // RFC 959 appendix II: a quote inside the name is doubled.
    let created = raw.expect("MKD say \"hi\"", 257).await;
    assert!(
        created.lines[0].starts_with("257 \"/say \"\"hi\"\"\""),
        "{created:?}"
    );
    assert!(home.join("say \"hi\"").is_dir());
    raw.expect("XMKD x-variant", 257).await;
    assert!(home.join("x-variant").is_dir());
    // An existing name cannot be created again.
    raw.expect("MKD new dir", 550).await;

    raw.expect("RMD new dir", 250).await;
    assert!(!home.join("new dir").exists());
    raw.expect("XRMD x-variant", 250).await;
    assert!(!home.join("x-variant").exists());
    raw.expect("RMD new dir", 550).await;
    assert_eq!(disk_names(&home), ["say \"hi\""]);
}

#[tokio::test]
async fn dele_removes_files_only() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "alice",
        &[("gone.txt", b"bye"), ("dir/keep", b"k")],
    );
    let mut ftp = client(server.addr(), "alice").await;
    ftp.rm("gone.txt").await.unwrap();
    assert!(!home.join("gone.txt").exists());
    assert_eq!(refused(ftp.rm("gone.txt").await), 550);
    assert_eq!(refused(ftp.rm("dir").await), 550);
    assert!(home.join("dir/keep").is_file());
}

#[tokio::test]
async fn rnfr_rnto_renames_and_rnto_needs_rnfr() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[("old.txt", b"content"), ("d/x", b"x")]);
    let mut ftp = client(server.addr(), "alice").await;
    ftp.rename("old.txt", "new.txt").await.unwrap();
    assert!(!home.join("old.txt").exists());
    assert_eq!(std::fs::read(home.join("new.txt")).unwrap(), b"content");
    // Into a subdirectory, and a directory itself.
    ftp.rename("new.txt", "d/moved.txt").await.unwrap();
    assert_eq!(std::fs::read(home.join("d/moved.txt")).unwrap(), b"content");
    ftp.rename("d", "e").await.unwrap();
    assert!(home.join("e/moved.txt").is_file());

    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("RNTO whatever", 503).await;
    raw.expect("RNFR missing.txt", 550).await;
    raw.expect("RNTO whatever", 503).await;
    // RNTO must come right after RNFR.
    raw.expect("RNFR e", 350).await;
    raw.expect("NOOP", 200).await;
    raw.expect("RNTO f", 503).await;
    assert!(home.join("e").is_dir());
    assert!(!home.join("f").exists());
    raw.expect("RNFR e", 350).await;
    raw.expect("RNTO f", 250).await;
    assert!(home.join("f/moved.txt").is_file());
    assert_eq!(disk_names(&home), ["f"]);
}

#[tokio::test]
async fn cwd_into_a_file_and_rmd_of_a_non_empty_directory_are_550() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "alice",
        &[("file.txt", b"f"), ("full/inside", b"i")],
    );
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("CWD file.txt", 550).await;
    let pwd = raw.expect("PWD", 257).await;
    assert!(pwd.lines[0].starts_with("257 \"/\""), "{pwd:?}");
    raw.expect("RMD full", 550).await;
    assert!(home.join("full/inside").is_file());
    raw.expect("RMD file.txt", 550).await;
    assert!(home.join("file.txt").is_file());
}

// ---------------------------------------------------------------------------------------------
// Transfers

/// Uploads and downloads an empty file, one byte, line-ending bytes and 10 MiB of noise,
/// checking the disk and the bytes that come back.
async fn round_trips(ftp: &mut AsyncFtpStream, home: &Path, tag: &str, seed: u64) {
    let cases: Vec<(String, Vec<u8>)> = vec![
        (format!("{tag}-empty.bin"), Vec::new()),
        (format!("{tag}-one.bin"), vec![b'\n']),
        (format!("{tag}-crlf.bin"), b"a\r\nb\nc\r\0\xff\r".to_vec()),
        (format!("{tag}-big.bin"), random_bytes(10 << 20, seed)),
    ];
    for (name, data) in &cases {
        put(ftp, name, data).await;
        let on_disk = std::fs::read(home.join(name)).unwrap();
        assert!(on_disk == *data, "{name}: disk differs from what was sent");
        let back = get(ftp, name).await;
        assert_eq!(back.len(), data.len(), "{name}: length downloaded");
        assert!(back == *data, "{name}: downloaded bytes differ");
        assert_eq!(ftp.size(name).await.unwrap(), data.len(), "{name}: SIZE");
    }
}

#[tokio::test]
async fn binary_round_trip_in_passive_mode() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut ftp = client(server.addr(), "alice").await;
    ftp.set_mode(Mode::Passive);
    round_trips(&mut ftp, &home, "pasv", 1).await;
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn binary_round_trip_in_extended_passive_mode() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut ftp = client(server.addr(), "alice").await;
    ftp.set_mode(Mode::ExtendedPassive);
    round_trips(&mut ftp, &home, "epsv", 2).await;
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn binary_round_trip_in_active_mode_with_port() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut ftp = AsyncFtpStream::connect(server.addr())
        .await
        .unwrap()
        .active_mode(WAIT);
    ftp.login("alice", "alice-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    round_trips(&mut ftp, &home, "port", 3).await;
    assert_eq!(
        sorted_nlst(&mut ftp, None).await,
        [
            "port-big.bin",
            "port-crlf.bin",
            "port-empty.bin",
            "port-one.bin"
        ]
    );
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn raw_pasv_and_epsv_transfers() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let data = random_bytes(200_000, 4);
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;
    let conn = raw.pasv().await;
    raw.upload(conn, "STOR raw.bin", &data).await;
    assert!(std::fs::read(home.join("raw.bin")).unwrap() == data);
    let conn = raw.epsv().await;
    assert!(raw.download(conn, "RETR raw.bin").await == data);
    // A transfer command with no data connection prepared.
    raw.expect("RETR raw.bin", 425).await;
}

#[tokio::test]
async fn eprt_and_port_active_transfers() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let data = random_bytes(300_000, 5);
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    raw.expect(&format!("EPRT |1|127.0.0.1|{port}|"), 200).await;
    raw.expect("STOR eprt.bin", 150).await;
    let (mut conn, from) = accept(&listener).await;
    assert_eq!(from.ip(), server.addr().ip());
    conn.write_all(&data).await.unwrap();
    conn.shutdown().await.unwrap();
    drop(conn);
    let done = raw.reply().await;
    assert_eq!(done.code, 226, "{done:?}");
    assert!(std::fs::read(home.join("eprt.bin")).unwrap() == data);

    // Any printable delimiter is allowed (RFC 2428 section 2).
    raw.expect(&format!("EPRT !1!127.0.0.1!{port}!"), 200).await;
    raw.expect("RETR eprt.bin", 150).await;
    let (conn, _) = accept(&listener).await;
    assert!(read_all(conn).await == data);
    let done = raw.reply().await;
    assert_eq!(done.code, 226, "{done:?}");

    let [p1, p2] = port.to_be_bytes();
    raw.expect(&format!("PORT 127,0,0,1,{p1},{p2}"), 200).await;
    raw.expect("NLST", 150).await;
    let (conn, _) = accept(&listener).await;
    assert_eq!(read_all(conn).await, b"eprt.bin\r\n");
    let done = raw.reply().await;
    assert_eq!(done.code, 226, "{done:?}");

    // No bounce: only the client's own address, only unprivileged ports.
    raw.expect("EPRT |1|10.1.2.3|5000|", 504).await;
    raw.expect("PORT 10,1,2,3,19,136", 504).await;
    raw.expect("EPRT |1|127.0.0.1|21|", 504).await;
    raw.expect("NOOP", 200).await;
}

#[tokio::test]
async fn size_and_mdtm() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "alice",
        &[("old.bin", &[7u8; 1234][..]), ("dir/x", b"x")],
    );
    set_mtime(&home.join("old.bin"), BILLENNIUM);
    let mut ftp = client(server.addr(), "alice").await;
    assert_eq!(ftp.size("old.bin").await.unwrap(), 1234);
    let mdtm = ftp.mdtm("old.bin").await.unwrap();
    assert_eq!(mdtm.and_utc().timestamp(), BILLENNIUM as i64);

    // A file written just now: MDTM is its mtime on disk, in UTC, to the second.
    put(&mut ftp, "fresh.bin", b"fresh").await;
    let mdtm = ftp.mdtm("fresh.bin").await.unwrap();
    assert_eq!(
        mdtm.and_utc().timestamp(),
        mtime_secs(&home.join("fresh.bin")) as i64
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - mdtm.and_utc().timestamp()).abs() < 60);
    assert_eq!(ftp.size("fresh.bin").await.unwrap(), 5);

    assert_eq!(refused(ftp.size("dir").await), 550);
    assert_eq!(refused(ftp.size("missing.bin").await), 550);
    assert_eq!(refused(ftp.mdtm("missing.bin").await), 550);

    let mut raw = Control::login(server.addr(), "alice").await;
    assert_eq!(timeval(BILLENNIUM), BILLENNIUM_TIMEVAL);
    let reply = raw.expect("MDTM old.bin", 213).await;
    assert_eq!(reply.lines, [format!("213 {BILLENNIUM_TIMEVAL}")]);
    let reply = raw.expect("MDTM fresh.bin", 213).await;
    let expected = timeval(mtime_secs(&home.join("fresh.bin")));
    assert_eq!(reply.lines, [format!("213 {expected}")]);
    let reply = raw.expect("SIZE /old.bin", 213).await;
    assert_eq!(reply.lines, ["213 1234"]);
}

#[tokio::test]
async fn rest_then_retr_returns_the_tail() {
    rest_then_retr_returns_the_tail_from(TestServer::start()).await;
}

#[tokio::test]
async fn rest_then_retr_returns_the_tail_with_sendfile() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.sendfile = true)
        .start();
    rest_then_retr_returns_the_tail_from(server).await;
}

async fn rest_then_retr_returns_the_tail_from(server: TestServer) {
    let data = random_bytes(100_000, 6);
    home_with(&server, "alice", &[("r.bin", &data)]);
    let mut ftp = client(server.addr(), "alice").await;
    ftp.resume_transfer(60_000).await.unwrap();
    assert!(get(&mut ftp, "r.bin").await == data[60_000..]);
    // The offset was used up: the next RETR is the whole file.
    assert!(get(&mut ftp, "r.bin").await == data);
    // At the very end: nothing.
    ftp.resume_transfer(100_000).await.unwrap();
    assert!(get(&mut ftp, "r.bin").await.is_empty());
    // Beyond the end: 554 on RETR, and the session goes on.
    ftp.resume_transfer(100_001).await.unwrap();
    assert_eq!(refused(ftp.retr_as_stream("r.bin").await), 554);
    ftp.noop().await.unwrap();
    assert!(get(&mut ftp, "r.bin").await == data);

    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;
    raw.expect("REST 99990", 350).await;
    let conn = raw.epsv().await;
    assert!(raw.download(conn, "RETR r.bin").await == data[99_990..]);
}

#[tokio::test]
async fn appe_appends_and_creates() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[("log.txt", b"first\n")]);
    let mut ftp = client(server.addr(), "alice").await;
    let mut more: &[u8] = b"second\n";
    ftp.append_file("log.txt", &mut more).await.unwrap();
    assert_eq!(
        std::fs::read(home.join("log.txt")).unwrap(),
        b"first\nsecond\n"
    );
    let big = random_bytes(500_000, 8);
    let mut reader = &big[..];
    ftp.append_file("log.txt", &mut reader).await.unwrap();
    let mut expected = b"first\nsecond\n".to_vec();
    expected.extend_from_slice(&big);
    assert!(std::fs::read(home.join("log.txt")).unwrap() == expected);
    let mut fresh: &[u8] = b"new";
    ftp.append_file("new.txt", &mut fresh).await.unwrap();
    assert_eq!(std::fs::read(home.join("new.txt")).unwrap(), b"new");
}

#[tokio::test]
async fn rest_then_stor_continues_in_place() {
    let server = TestServer::start();
    let data = random_bytes(100_000, 9);
    let home = home_with(
        &server,
        "alice",
        &[("short.txt", b"0123456789"), ("part.bin", &data[..40_000])],
    );
    let mut ftp = client(server.addr(), "alice").await;
    // The file keeps its first n bytes; the new data follows.
    ftp.resume_transfer(4).await.unwrap();
    let mut upload = ftp.put_with_stream("short.txt").await.unwrap();
    upload.write_all(b"abc").await.unwrap();
    upload.finish().await.unwrap();
    assert_eq!(std::fs::read(home.join("short.txt")).unwrap(), b"0123abc");

    // A client resuming an interrupted upload.
    ftp.resume_transfer(40_000).await.unwrap();
    let mut upload = ftp.put_with_stream("part.bin").await.unwrap();
    upload.write_all(&data[40_000..]).await.unwrap();
    upload.finish().await.unwrap();
    assert!(std::fs::read(home.join("part.bin")).unwrap() == data);

    // Beyond the end of the file is refused and the file is untouched.
    ftp.resume_transfer(200_000).await.unwrap();
    let code = refused(ftp.put_with_stream("part.bin").await);
    assert_eq!(code, 554);
    assert!(std::fs::read(home.join("part.bin")).unwrap() == data);
}

#[tokio::test]
async fn stou_names_the_file_in_the_150_reply() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;
    let mut names = Vec::new();
    for seed in [10, 11] {
        let data = random_bytes(50_000, seed);
        let conn = raw.epsv().await;
        let started = raw.upload(conn, "STOU", &data).await;
        let name = started.lines[0]
            .strip_prefix("150 FILE: ")
            .unwrap_or_else(|| panic!("STOU 150 reply without FILE: {started:?}"))
            .trim()
            .to_string();
        assert!(!name.is_empty() && !name.contains('/'), "{name:?}");
        assert!(std::fs::read(home.join(&name)).unwrap() == data, "{name}");
        names.push(name);
    }
    assert_ne!(names[0], names[1]);
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(disk_names(&home), expected);
}

// ---------------------------------------------------------------------------------------------
// Listings

fn listing_home(server: &TestServer) -> std::path::PathBuf {
    let home = home_with(
        server,
        "alice",
        &[
            ("data.bin", &[1u8; 1234][..]),
            ("with space.txt", b"hello"),
            ("sub/inner.txt", b"in"),
        ],
    );
    set_mtime(&home.join("data.bin"), BILLENNIUM);
    home
}

#[tokio::test]
async fn list_gives_ls_long_lines() {
    let server = TestServer::start();
    listing_home(&server);
    let mut ftp = client(server.addr(), "alice").await;
    let lines = ftp.list(None).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut by_name = HashMap::new();
    for line in &lines {
        let first = line.chars().next().unwrap();
        assert!(first == 'd' || first == '-', "{line:?}");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 9, "{line:?}");
        let name = fields[8..].join(" ");
        assert!(line.ends_with(&format!(" {name}")), "{line:?}");
        let size: u64 = fields[4].parse().unwrap();
        // suppaftp's own LIST parser understands the line too.
        let parsed = ListParser::parse_posix(line).unwrap();
        assert_eq!(parsed.name(), name);
        assert_eq!(parsed.size() as u64, size);
        by_name.insert(name, (first, size));
    }
    assert_eq!(by_name["data.bin"], ('-', 1234));
    assert_eq!(by_name["with space.txt"], ('-', 5));
    assert_eq!(by_name["sub"].0, 'd');
    let data_line = lines.iter().find(|l| l.ends_with(" data.bin")).unwrap();
    assert!(data_line.contains("Sep  9  2001"), "{data_line:?}");

    // ls flags that clients add are tolerated.
    let mut la = ftp.list(Some("-la")).await.unwrap();
    let mut plain = lines.clone();
    la.sort();
    plain.sort();
    assert_eq!(la, plain);
    let mut al = ftp.list(Some("-a -l")).await.unwrap();
    al.sort();
    assert_eq!(al, plain);
    // A directory argument lists it; a file argument lists the file.
    let sub = ftp.list(Some("sub")).await.unwrap();
    assert_eq!(sub.len(), 1);
    assert!(
        sub[0].starts_with('-') && sub[0].ends_with(" inner.txt"),
        "{sub:?}"
    );
    let one = ftp.list(Some("-l data.bin")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].ends_with(" data.bin"), "{one:?}");
    assert_eq!(refused(ftp.list(Some("missing")).await), 550);
}

#[tokio::test]
async fn nlst_gives_names() {
    let server = TestServer::start();
    listing_home(&server);
    let mut ftp = client(server.addr(), "alice").await;
    assert_eq!(
        sorted_nlst(&mut ftp, None).await,
        ["data.bin", "sub", "with space.txt"]
    );
    assert_eq!(sorted_nlst(&mut ftp, Some("sub")).await, ["inner.txt"]);
    ftp.cwd("sub").await.unwrap();
    assert_eq!(sorted_nlst(&mut ftp, None).await, ["inner.txt"]);
}

fn parse_facts(line: &str) -> (HashMap<String, String>, String) {
    let (facts, name) = line
        .split_once("; ")
        .unwrap_or_else(|| panic!("no facts in {line:?}"));
    let facts = facts
        .split(';')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or_else(|| panic!("fact {f:?}"));
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    (facts, name.to_string())
}

#[tokio::test]
async fn mlsd_gives_rfc3659_facts() {
    let server = TestServer::start();
    let home = listing_home(&server);
    let mut ftp = client(server.addr(), "alice").await;
    let lines = ftp.mlsd(None).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut entries = HashMap::new();
    for line in &lines {
        let (facts, name) = parse_facts(line);
        for key in ["type", "size", "modify", "perm", "unique"] {
            assert!(facts.contains_key(key), "{key} missing in {line:?}");
        }
        #[allow(deprecated)]
        let parsed = suppaftp::list::File::from_mlsx_line(line).unwrap();
        assert_eq!(parsed.name(), name);
        entries.insert(name, facts);
    }
    let data = &entries["data.bin"];
    assert_eq!(data["type"], "file");
    assert_eq!(data["size"], "1234");
    assert_eq!(data["modify"], BILLENNIUM_TIMEVAL);
    assert!(
        data["perm"].contains('r') && data["perm"].contains('w'),
        "{data:?}"
    );
    let text = &entries["with space.txt"];
    assert_eq!(text["size"], "5");
    let sub = &entries["sub"];
    assert_eq!(sub["type"], "dir");
    assert!(
        sub["perm"].contains('e') && sub["perm"].contains('l'),
        "{sub:?}"
    );
    assert_ne!(data["unique"], text["unique"]);
    assert_ne!(data["unique"], sub["unique"]);
    // The modify fact is the disk's mtime in UTC, to the second.
    let secs = mtime_secs(&home.join("with space.txt"));
    assert_eq!(text["modify"], timeval(secs));
    let secs = mtime_secs(&home.join("sub"));
    assert_eq!(sub["modify"], timeval(secs));

    // MLSD of a file is refused (RFC 3659 7.2: use MLST).
    let mut raw = Control::login(server.addr(), "alice").await;
    let _ = raw.epsv().await;
    raw.expect("MLSD data.bin", 501).await;
}

#[tokio::test]
async fn mlst_on_a_file_is_a_multi_line_250() {
    let server = TestServer::start();
    listing_home(&server);
    let mut raw = Control::login(server.addr(), "alice").await;
    let reply = raw.expect("MLST data.bin", 250).await;
    assert_eq!(reply.lines.len(), 3, "{reply:?}");
    assert!(reply.lines[0].starts_with("250-"), "{reply:?}");
    assert!(reply.lines[2].starts_with("250 "), "{reply:?}");
    let fact_line = &reply.lines[1];
    assert!(
        fact_line.starts_with(' '),
        "facts line must start with a space: {fact_line:?}"
    );
    let (facts, name) = parse_facts(&fact_line[1..]);
    assert!(name.ends_with("data.bin"), "{name:?}");
    assert_eq!(facts["type"], "file");
    assert_eq!(facts["size"], "1234");
    assert_eq!(facts["modify"], BILLENNIUM_TIMEVAL);
    raw.expect("MLST missing", 550).await;
    let dir = raw.expect("MLST sub", 250).await;
    assert!(dir.lines[1].contains("type=dir;"), "{dir:?}");

    let mut ftp = client(server.addr(), "alice").await;
    let line = ftp.mlst(Some("data.bin")).await.unwrap();
    assert!(line.starts_with("type=file;size=1234;"), "{line:?}");
}

// ---------------------------------------------------------------------------------------------
// Information commands

#[tokio::test]
async fn stat_without_and_with_a_path() {
    let server = TestServer::start();
    listing_home(&server);
    let mut raw = Control::login(server.addr(), "alice").await;
    let status = raw.expect("STAT", 211).await;
    assert!(status.lines.len() >= 3, "{status:?}");
    assert!(status.lines[0].starts_with("211-"), "{status:?}");
    assert!(
        status.lines.last().unwrap().starts_with("211 "),
        "{status:?}"
    );
    assert!(status.text().contains("alice"), "{status:?}");

    let listing = raw.expect("STAT data.bin", 213).await;
    assert!(listing.lines[0].starts_with("213-"), "{listing:?}");
    let line = listing
        .lines
        .iter()
        .find(|l| l.ends_with(" data.bin"))
        .unwrap_or_else(|| panic!("no line for data.bin: {listing:?}"));
    assert!(line.trim_start().starts_with("-rw"), "{line:?}");
    assert!(line.contains(" 1234 "), "{line:?}");

    let dir = raw.expect("STAT /", 213).await;
    for name in ["data.bin", "sub", "with space.txt"] {
        assert!(
            dir.lines.iter().any(|l| l.ends_with(&format!(" {name}"))),
            "{name} missing in {dir:?}"
        );
    }
    raw.expect("STAT -la sub", 213).await;
    raw.expect("STAT missing", 550).await;
}

#[tokio::test]
async fn help_and_site_help() {
    let server = TestServer::start();
    let mut raw = Control::login(server.addr(), "alice").await;
    let help = raw.expect("HELP", 214).await;
    assert!(help.lines.len() > 1, "{help:?}");
    for verb in ["RETR", "STOR", "EPSV", "MLSD"] {
        assert!(help.text().contains(verb), "{verb} missing in {help:?}");
    }
    raw.expect("HELP RETR", 214).await;
    let site = raw.expect("SITE HELP", 214).await;
    assert!(site.text().contains("HELP"), "{site:?}");
    raw.expect("SITE NONSENSE", 502).await;

    let mut ftp = client(server.addr(), "alice").await;
    let reply = ftp
        .custom_command("SITE HELP", &[Status::Help])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::Help);
}

#[tokio::test]
async fn feat_lists_the_extensions_and_opts_utf8_is_200() {
    let server = TestServer::start();
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    let features = ftp.feat().await.unwrap();
    for feature in ["EPSV", "EPRT", "MLST", "SIZE", "MDTM", "REST", "UTF8"] {
        assert!(
            features.contains_key(feature),
            "{feature} missing in {features:?}"
        );
    }
    assert_eq!(features["REST"].as_deref(), Some("STREAM"));
    let mlst = features["MLST"].clone().unwrap_or_default();
    for fact in ["type", "size", "modify", "perm", "unique"] {
        assert!(mlst.contains(fact), "{fact} missing in MLST {mlst:?}");
    }
    ftp.opts("UTF8", Some("ON")).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();

    let mut raw = Control::login(server.addr(), "alice").await;
    let feat = raw.expect("FEAT", 211).await;
    assert!(feat.lines[0].starts_with("211-"), "{feat:?}");
    assert!(feat.lines.last().unwrap().starts_with("211 "), "{feat:?}");
    for line in &feat.lines[1..feat.lines.len() - 1] {
        assert!(
            line.starts_with(' '),
            "feature line without a space: {line:?}"
        );
    }
    assert!(feat.lines.iter().any(|l| l == " REST STREAM"), "{feat:?}");
    raw.expect("OPTS UTF8 ON", 200).await;
    raw.expect("OPTS utf8 on", 200).await;
    raw.expect("OPTS NONSENSE", 501).await;
}

#[tokio::test]
async fn epsv_all_refuses_pasv_port_and_eprt() {
    let server = TestServer::start();
    home_with(&server, "alice", &[("f.txt", b"payload")]);
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("EPSV ALL", 200).await;
    raw.expect("PASV", 503).await;
    raw.expect("PORT 127,0,0,1,200,10", 503).await;
    raw.expect("EPRT |1|127.0.0.1|51210|", 503).await;
    let conn = raw.epsv().await;
    assert_eq!(raw.download(conn, "RETR f.txt").await, b"payload");
    let conn = raw.epsv().await;
    assert_eq!(raw.download(conn, "NLST").await, b"f.txt\r\n");
}

#[tokio::test]
async fn abor_without_a_transfer_is_2xx() {
    let server = TestServer::start();
    home_with(&server, "alice", &[("f.txt", b"payload")]);
    let mut raw = Control::login(server.addr(), "alice").await;
    let reply = raw.cmd("ABOR").await;
    assert!(
        reply.code == 225 || reply.code == 226,
        "ABOR with nothing running: {reply:?}"
    );
    // ABOR also drops a prepared data connection.
    let _conn = raw.epsv().await;
    let reply = raw.cmd("ABOR").await;
    assert!(reply.code == 225 || reply.code == 226, "{reply:?}");
    raw.expect("RETR f.txt", 425).await;
    let conn = raw.epsv().await;
    assert_eq!(raw.download(conn, "RETR f.txt").await, b"payload");
}

#[tokio::test]
async fn abor_during_an_upload_keeps_the_old_file() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[("keep.txt", b"original")]);
    let mut raw = Control::login(server.addr(), "alice").await;
    raw.expect("TYPE I", 200).await;
    let mut conn = raw.epsv().await;
    raw.expect("STOR keep.txt", 150).await;
    conn.write_all(&random_bytes(100_000, 13)).await.unwrap();
    conn.flush().await.unwrap();
    // The data connection stays open: the upload is unfinished when ABOR arrives.
    let first = raw.cmd("ABOR").await;
    let final_reply = if first.code == 426 {
        raw.reply().await
    } else {
        first
    };
    assert_eq!(final_reply.code, 226, "{final_reply:?}");
    drop(conn);
    raw.expect("NOOP", 200).await;
    assert_eq!(std::fs::read(home.join("keep.txt")).unwrap(), b"original");
    assert_eq!(
        disk_names(&home),
        ["keep.txt"],
        "temporary file left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Names, users and permissions

#[tokio::test]
async fn utf8_names_round_trip() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let mut ftp = client(server.addr(), "alice").await;
    let name = "grüße-日本.txt";
    let data = "Grüße aus 日本\n".as_bytes();
    put(&mut ftp, name, data).await;
    assert_eq!(std::fs::read(home.join(name)).unwrap(), data);
    assert_eq!(disk_names(&home), [name]);
    assert_eq!(sorted_nlst(&mut ftp, None).await, [name]);
    let mlsd = ftp.mlsd(None).await.unwrap();
    assert!(mlsd[0].ends_with(&format!("; {name}")), "{mlsd:?}");
    assert_eq!(get(&mut ftp, name).await, data);
    assert_eq!(ftp.size(name).await.unwrap(), data.len());

    let dir = "ディレクトリ";
    ftp.mkdir(dir).await.unwrap();
    assert!(home.join(dir).is_dir());
    ftp.cwd(dir).await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), format!("/{dir}"));
    ftp.rename(format!("/{name}").as_str(), "ü.txt")
        .await
        .unwrap();
    assert_eq!(std::fs::read(home.join(dir).join("ü.txt")).unwrap(), data);
}

#[tokio::test]
async fn two_users_at_once_each_see_only_their_own_home() {
    let server = TestServer::start();
    let mut alice = client(server.addr(), "alice").await;
    let mut bob = client(server.addr(), "bob").await;
    put(&mut alice, "same.txt", b"from alice").await;
    put(&mut bob, "same.txt", b"from bob").await;
    put(&mut alice, "secret.txt", b"alice only").await;
    bob.mkdir("bobs").await.unwrap();

    assert_eq!(
        std::fs::read(server.home("alice").join("same.txt")).unwrap(),
        b"from alice"
    );
    assert_eq!(
        std::fs::read(server.home("bob").join("same.txt")).unwrap(),
        b"from bob"
    );
    assert_eq!(
        sorted_nlst(&mut alice, None).await,
        ["same.txt", "secret.txt"]
    );
    assert_eq!(sorted_nlst(&mut bob, None).await, ["bobs", "same.txt"]);
    assert_eq!(get(&mut alice, "same.txt").await, b"from alice");
    assert_eq!(get(&mut bob, "same.txt").await, b"from bob");
    for path in ["secret.txt", "../alice/secret.txt", "/../alice/secret.txt"] {
        assert_eq!(refused(bob.retr_as_stream(path).await), 550, "{path}");
        assert_eq!(refused(bob.size(path).await), 550, "{path}");
    }
    assert!(!server.home("alice").join("bobs").exists());
    assert!(!server.home("bob").join("secret.txt").exists());
    alice.quit().await.unwrap();
    bob.quit().await.unwrap();
}

#[tokio::test]
async fn read_only_user_can_read_but_not_write() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "reader",
        &[("doc.txt", b"read me"), ("dir/x", b"x")],
    );
    std::fs::create_dir_all(home.join("empty")).unwrap();
    let before = disk_names(&home);
    let mut ftp = client(server.addr(), "reader").await;

    let mut data: &[u8] = b"nope";
    assert_eq!(refused(ftp.put_file("new.txt", &mut data).await), 550);
    let mut data: &[u8] = b"nope";
    assert_eq!(refused(ftp.put_file("doc.txt", &mut data).await), 550);
    let mut data: &[u8] = b"nope";
    assert_eq!(refused(ftp.append_file("doc.txt", &mut data).await), 550);
    assert_eq!(refused(ftp.rm("doc.txt").await), 550);
    assert_eq!(refused(ftp.mkdir("newdir").await), 550);
    assert_eq!(refused(ftp.rmdir("empty").await), 550);
    assert_eq!(refused(ftp.rename("doc.txt", "renamed.txt").await), 550);

    let mut raw = Control::login(server.addr(), "reader").await;
    let _conn = raw.epsv().await;
    raw.expect("STOU", 550).await;
    raw.expect("RNFR doc.txt", 550).await;
    raw.expect("RNTO renamed.txt", 503).await;
    raw.expect("DELE doc.txt", 550).await;
    raw.expect("RMD empty", 550).await;
    raw.expect("MKD newdir", 550).await;

    assert_eq!(disk_names(&home), before);
    assert_eq!(std::fs::read(home.join("doc.txt")).unwrap(), b"read me");
    assert!(home.join("empty").is_dir());

    // Reading works.
    assert_eq!(get(&mut ftp, "doc.txt").await, b"read me");
    assert_eq!(
        sorted_nlst(&mut ftp, None).await,
        ["dir", "doc.txt", "empty"]
    );
    assert_eq!(ftp.list(None).await.unwrap().len(), 3);
    ftp.cwd("dir").await.unwrap();
    assert_eq!(get(&mut ftp, "x").await, b"x");
    let mlsd = ftp.mlsd(Some("/")).await.unwrap();
    let doc = mlsd.iter().find(|l| l.ends_with(" doc.txt")).unwrap();
    assert!(doc.contains("perm=r;"), "{doc:?}");
}

#[tokio::test]
async fn ipv6_server_works_with_epsv_and_eprt() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .listen("[::1]:0")
        .start();
    assert!(server.addr().is_ipv6());
    let home = server.home("alice");
    let data = random_bytes(1 << 20, 12);

    let mut ftp = client(server.addr(), "alice").await;
    ftp.set_mode(Mode::ExtendedPassive);
    put(&mut ftp, "v6.bin", &data).await;
    assert!(std::fs::read(home.join("v6.bin")).unwrap() == data);
    assert!(get(&mut ftp, "v6.bin").await == data);
    assert_eq!(sorted_nlst(&mut ftp, None).await, ["v6.bin"]);
    ftp.quit().await.unwrap();

    // suppaftp's active mode on IPv6 sends EPRT |2|::1|port|.
    let mut active = AsyncFtpStream::connect(server.addr())
        .await
        .unwrap()
        .active_mode(WAIT);
    active.login("alice", "alice-pw").await.unwrap();
    active.transfer_type(FileType::Binary).await.unwrap();
    put(&mut active, "v6-active.bin", &data[..1000]).await;
    assert!(std::fs::read(home.join("v6-active.bin")).unwrap() == data[..1000]);
    assert!(get(&mut active, "v6-active.bin").await == data[..1000]);

    // PASV cannot describe an IPv6 address: whatever the refusal, the session goes on.
    let mut raw = Control::login(server.addr(), "alice").await;
    let pasv = raw.cmd("PASV").await;
    assert!((400..600).contains(&pasv.code), "PASV over IPv6: {pasv:?}");
    raw.expect("NOOP", 200).await;
    let conn = raw.epsv().await;
    assert_eq!(
        raw.download(conn, "NLST").await,
        b"v6-active.bin\r\nv6.bin\r\n"
    );
}
