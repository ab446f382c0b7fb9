//! Replays the ProFuzzBench FTP request sequences in fuzz/seeds/ftp/ against a live server,
//! line by line: once with the seeds' accounts present (the client logs in) and once without
//! them (the login fails and the rest must be refused). Every line gets exactly one final
//! reply with a well-formed code, the connection stays open until QUIT, and afterwards
//! another client still logs in and moves a file.
//!
//! The seeds' PORT commands name fixed ports on 127.0.0.1. They are rewritten to a port this
//! test holds bound but not listening, so the server's connect is refused (425) and can never
//! reach a data listener of another test that happens to sit on the seed's port.

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use testkit::{TestServer, random_bytes};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::raw::{Raw, Reply, epsv_port, pasv_addr};

/// How many seeds fuzz/seeds/ftp holds (its README lists them).
const SEED_COUNT: usize = 28;

/// The accounts the seeds log in with: ProFTPD's and LightFTP's, and PureFTPD's.
const SEED_ACCOUNTS: &[(&str, &str)] = &[("ubuntu", "ubuntu"), ("fuzzing", "fuzzing")];

/// The file several seeds RETR, SIZE and rename; planted before each seed so those commands
/// meet a real file when logged in.
const TEST_TXT: &[u8] = b"test.txt as planted before the seed\n";

/// Longer than any reply may take; a line left unanswered fails the test with its seed.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// Commands a client that is not logged in may use, and what they answer.
const BEFORE_LOGIN: &[(&str, u16)] = &[
    ("USER", 331),
    ("PASS", 530),
    ("QUIT", 221),
    ("SYST", 215),
    ("FEAT", 211),
    ("NOOP", 200),
    ("HELP", 214),
];

/// Seed lines whose argument is malformed or unsupported: refused by the parser (which runs
/// before the login gate) with 501/504, logged in or not.
const MALFORMED: &[(&str, u16)] = &[("STRU", 501), ("TYPE E", 504), ("TYPE L 7", 504)];

/// Every seed file, sorted by name.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/ftp");
    let mut seeds: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "raw"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), SEED_COUNT, "seeds in {}", dir.display());
    seeds
}

/// The CRLF-separated lines of a seed, without the empty remainder after the last CRLF.
fn lines(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rest = seed;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(rest[..pos].to_vec());
        rest = &rest[pos + 2..];
    }
    if !rest.is_empty() {
        lines.push(rest.to_vec());
    }
    lines
}

/// The verb of a line, upper-cased.
fn verb(line: &str) -> String {
    line.split(' ').next().unwrap_or("").to_ascii_uppercase()
}

/// A PORT line pointed at `port` on the same host; other lines unchanged.
fn redirect_port(line: &str, port: u16) -> String {
    if verb(line) != "PORT" {
        return line.to_string();
    }
    let (_, arg) = line.split_once(' ').unwrap();
    let host: Vec<&str> = arg.split(',').take(4).collect();
    let [p1, p2] = port.to_be_bytes();
    format!("PORT {},{p1},{p2}", host.join(","))
}

/// The verbs the server lists in HELP.
async fn known_verbs(server: &TestServer) -> BTreeSet<String> {
    let mut c = Raw::greeted(server.addr()).await;
    let (code, text) = c.cmd("HELP").await;
    assert_eq!(code, 214, "{text}");
    // Between "The following commands are recognized:" and "Help OK".
    let lines: Vec<&str> = text.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(str::to_string)
        .collect()
}

/// What a line gets from a client that is not logged in: the pre-login commands their own
/// reply, unknown verbs 502, malformed arguments their parse error, and the rest 530.
fn before_login(line: &str, known: &BTreeSet<String>) -> u16 {
    let verb = verb(line);
    if let Some((_, code)) = BEFORE_LOGIN.iter().find(|(v, _)| *v == verb) {
        return *code;
    }
    if !known.contains(&verb) {
        return 502;
    }
    MALFORMED
        .iter()
        .find(|(l, _)| *l == line)
        .map_or(530, |(_, code)| *code)
}

/// Reads one reply, failing with the seed and line if none comes in time or the connection
/// closes.
async fn reply(c: &mut Raw, what: &str) -> Reply {
    match timeout(REPLY_WAIT, c.try_reply()).await {
        Err(_) => panic!("{what}: no reply within {REPLY_WAIT:?}"),
        Ok(Ok(Some(reply))) => reply,
        Ok(Ok(None)) => panic!("{what}: the server closed the connection"),
        Ok(Err(err)) => panic!("{what}: reading the reply failed: {err}"),
    }
}

/// Connects to a passive data port the server announced and reads it to its end, as a
/// client would, so the transfer that follows does not wait out the data timeout.
fn drain_data(addr: SocketAddr) {
    tokio::spawn(async move {
        if let Ok(Ok(mut data)) = timeout(REPLY_WAIT, TcpStream::connect(addr)).await {
            let mut sink = Vec::new();
            let _ = timeout(REPLY_WAIT, data.read_to_end(&mut sink)).await;
        }
    });
}

/// One replay: the server, the port nobody listens on, and the verbs the server knows.
struct Replay<'a> {
    server: &'a TestServer,
    dead_port: u16,
    known: BTreeSet<String>,
}

impl Replay<'_> {
    /// Sends a seed line by line; returns the transcript of (line, codes).
    async fn run(&self, name: &str, seed: &[u8]) -> Vec<(String, Vec<u16>)> {
        let mut c = Raw::greeted(self.server.addr()).await;
        let server_ip: IpAddr = self.server.addr().ip();
        let mut transcript = Vec::new();
        for raw_line in lines(seed) {
            let line = redirect_port(&String::from_utf8_lossy(&raw_line), self.dead_port);
            let what = format!("{name}: {line:?} after {transcript:?}");
            c.send(format!("{line}\r\n")).await;
            let mut codes = Vec::new();
            let mut r = reply(&mut c, &what).await;
            while (100..200).contains(&r.0) {
                codes.push(r.0);
                r = reply(&mut c, &what).await;
            }
            codes.push(r.0);
            match r.0 {
                227 => drain_data(pasv_addr(&r.1)),
                229 => drain_data(SocketAddr::new(server_ip, epsv_port(&r.1))),
                _ => {}
            }
            let quit = verb(&line) == "QUIT";
            transcript.push((line, codes));
            if quit {
                assert_eq!(r.0, 221, "{what}");
                c.expect_closed().await;
                return transcript;
            }
        }
        // A line answered twice would leave a reply unread: it would arrive here instead of
        // the answer to this marker.
        let r = c.cmd("HELP REPLAY-END").await;
        assert_eq!(
            r,
            (502, "Unknown command REPLAY-END".to_string()),
            "{name}: a line got more than one reply: {transcript:?}"
        );
        assert_eq!(c.cmd("QUIT").await.0, 221);
        c.expect_closed().await;
        transcript
    }
}

/// A port on 127.0.0.1 that is bound (so nobody else gets it) but not listening (so every
/// connection to it is refused at once).
fn dead_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Another client logs in and moves a file after the replay; the bytes must come back.
async fn still_serves(server: &TestServer, user: &str, password: &str) {
    let body = random_bytes(100_000, 77);
    let mut c = Raw::login(server.addr(), user, password).await;
    c.stor("after-replay.bin", &body).await;
    assert!(c.retr("after-replay.bin").await == body, "bytes differ");
    assert_eq!(
        fs::read(server.home(user).join("after-replay.bin")).unwrap(),
        body
    );
}

#[tokio::test]
async fn fuzz_seeds_replayed_logged_in_get_one_valid_reply_per_line() {
    let mut builder = TestServer::builder().config(|c| c.login_fail_delay = Duration::ZERO);
    for (user, password) in SEED_ACCOUNTS {
        builder = builder.user(user, password);
    }
    let server = builder.start();
    let (_socket, dead_port) = dead_port();
    let replay = Replay {
        server: &server,
        dead_port,
        known: known_verbs(&server).await,
    };
    for (name, seed) in seeds() {
        for (user, _) in SEED_ACCOUNTS {
            fs::create_dir_all(server.home(user)).unwrap();
            fs::write(server.home(user).join("test.txt"), TEST_TXT).unwrap();
        }
        let transcript = replay.run(&name, &seed).await;
        let anonymous = transcript
            .iter()
            .any(|(line, _)| line.eq_ignore_ascii_case("USER anonymous"));
        let mut logged_in = false;
        for (line, codes) in &transcript {
            let code = *codes.last().unwrap();
            if verb(line) == "PASS" {
                // There is no anonymous account; the seeds' own accounts log in.
                let want = if anonymous { 530 } else { 230 };
                assert_eq!(code, want, "{name}: {transcript:?}");
                logged_in = code == 230;
            } else if !logged_in {
                let want = before_login(line, &replay.known);
                assert_eq!(code, want, "{name}: {line:?} in {transcript:?}");
            } else {
                // A local error (451) or a dropped session (421) would be a server fault.
                assert!(
                    (200..600).contains(&code) && code != 451 && code != 421,
                    "{name}: {line:?} in {transcript:?}"
                );
                if let Some((_, want)) = MALFORMED.iter().find(|(l, _)| l == line) {
                    assert_eq!(code, *want, "{name}: {line:?} in {transcript:?}");
                }
                if !replay.known.contains(&verb(line)) {
                    assert_eq!(code, 502, "{name}: {line:?} in {transcript:?}");
                }
            }
        }
    }
    still_serves(&server, "ubuntu", "ubuntu").await;
}

#[tokio::test]
async fn fuzz_seeds_replayed_without_their_accounts_are_refused_line_by_line() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .config(|c| c.login_fail_delay = Duration::ZERO)
        .start();
    let (_socket, dead_port) = dead_port();
    let replay = Replay {
        server: &server,
        dead_port,
        known: known_verbs(&server).await,
    };
    for (name, seed) in seeds() {
        let transcript = replay.run(&name, &seed).await;
        for (line, codes) in &transcript {
            let want = before_login(line, &replay.known);
            assert_eq!(codes, &[want], "{name}: {line:?} in {transcript:?}");
        }
    }
    // Nothing reached the disk: no home was created for the seeds' accounts.
    for (user, _) in SEED_ACCOUNTS {
        assert!(!server.home(user).exists(), "{user}'s home was created");
    }
    still_serves(&server, "alice", "alice-pw").await;
}
