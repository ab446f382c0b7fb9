//! The real `ferry serve` process: first-start admin account, account changes picked up
//! while running, SIGTERM with idle sessions and during a transfer, several listeners,
//! ferry.toml and usage errors. Each server binds port 0 and announces its address on stdout;
//! tests read that line instead of guessing ports or sleeping.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testkit::random_bytes;

/// How long a server may take to start (the first start hashes the admin password).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `ferry ARGS... --data DATA`.
fn ferry_command(data: &Path, args: &[&str]) -> Command {
    wrapped_command(&[], data, args)
}

/// `PREFIX... ferry ARGS... --data DATA`: `ferry` run by a wrapper command such as
/// `prlimit --fsize=N --` (none when `prefix` is empty).
fn wrapped_command(prefix: &[&str], data: &Path, args: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_ferry");
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    cmd.env_remove("FERRY_DATA")
        .env_remove("RUST_LOG")
        .args(args)
        .arg("--data")
        .arg(data);
    cmd
}

pub(crate) use testkit::drain;

/// Waits for `child` to exit, for at most `limit`.
pub(crate) fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `ferry serve`; killed on drop, so a failing test leaves no process behind.
pub(crate) struct Server {
    child: Child,
    /// The addresses from the "ferry serving FTP on ADDR" lines, in order.
    addrs: Vec<SocketAddr>,
    /// Stdout lines read so far.
    stdout: Vec<String>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// `ferry serve --data DATA ARGS...`, waiting until it announced `listeners` addresses.
    pub(crate) fn start(data: &Path, args: &[&str], listeners: usize) -> Server {
        Server::start_wrapped(&[], data, args, listeners)
    }

    /// `PREFIX... ferry serve --data DATA ARGS...`, `ferry` run by a wrapper command such as
    /// `prlimit --fsize=N --`; otherwise as [`Server::start`].
    pub(crate) fn start_wrapped(
        prefix: &[&str],
        data: &Path,
        args: &[&str],
        listeners: usize,
    ) -> Server {
        let mut serve_args = vec!["serve"];
        serve_args.extend_from_slice(args);
        let mut child = wrapped_command(prefix, data, &serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stderr, _) = drain(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            addrs: Vec::new(),
            stdout: Vec::new(),
            lines,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("ferry serving FTP on ") {
                        server.addrs.push(addr.trim().parse().unwrap());
                    }
                    server.stdout.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no serving line in time\n{}", server.output())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = wait_for_exit(&mut server.child, Duration::from_secs(5));
                    panic!("ferry serve exited ({status:?})\n{}", server.output())
                }
            }
        }
        server
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The process id, to read its memory use from /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far, for assertion messages.
    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The first-start admin password, if this start printed one.
    pub(crate) fn admin_password(&self) -> Option<String> {
        self.stdout.iter().find_map(|l| {
            l.strip_prefix("Created user 'admin' with password: ")
                .map(|p| p.trim().to_owned())
        })
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// How the process ended (waiting a little for it), with what it printed: for the message
    /// of a test whose server went away.
    pub(crate) fn obituary(&mut self) -> String {
        let status = match wait_for_exit(&mut self.child, Duration::from_secs(5)) {
            None => "still running".to_string(),
            Some(status) => match status.signal() {
                Some(signal) => format!("killed by signal {signal}"),
                None => format!("exited with {status}"),
            },
        };
        format!("ferry serve {status}\n{}", self.output())
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the exit and collects the rest of stdout.
    #[track_caller]
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let Some(status) = wait_for_exit(&mut self.child, limit) else {
            panic!(
                "ferry serve still running after {limit:?}\n{}",
                self.output()
            );
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw control connection: one command, one reply.
pub(crate) struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    /// Connects and reads the 220 greeting.
    pub(crate) fn connect(addr: SocketAddr) -> Control {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        Control::greeted(stream)
    }

    /// Reads the 220 greeting on a connected stream.
    pub(crate) fn greeted(stream: TcpStream) -> Control {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut control = Control {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let (code, text) = control.reply();
        assert_eq!(code, 220, "{text}");
        control
    }

    /// Reads one reply (multi-line replies included): its code and all its text.
    pub(crate) fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        let mut first = String::new();
        self.reader.read_line(&mut first).unwrap();
        assert!(first.len() >= 4, "short reply line {first:?}");
        let code: u16 = first[..3].parse().unwrap();
        text.push_str(&first);
        if first.as_bytes()[3] == b'-' {
            let end = format!("{code} ");
            loop {
                let mut line = String::new();
                assert!(self.reader.read_line(&mut line).unwrap() > 0, "{text}");
                text.push_str(&line);
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        (code, text)
    }

    pub(crate) fn cmd(&mut self, line: &str) -> (u16, String) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// USER and PASS; the code of the reply to PASS.
    pub(crate) fn login(&mut self, user: &str, password: &str) -> u16 {
        let (code, text) = self.cmd(&format!("USER {user}"));
        assert_eq!(code, 331, "{text}");
        self.cmd(&format!("PASS {password}")).0
    }
}

/// The PASS reply code for a fresh connection logging in as `user`.
fn login(addr: SocketAddr, user: &str, password: &str) -> u16 {
    let mut control = Control::connect(addr);
    let code = control.login(user, password);
    if code == 230 {
        let _ = control.cmd("QUIT");
    }
    code
}

/// Runs a `ferry` command that should end by itself, with `stdin`; kills it after 20 s.
pub(crate) fn run_to_end(data: &Path, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = ferry_command(data, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may exit without reading (usage errors): a broken pipe is no failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let (stdout, out_thread) = drain(child.stdout.take().unwrap());
    let (stderr, err_thread) = drain(child.stderr.take().unwrap());
    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    out_thread.join().unwrap();
    err_thread.join().unwrap();
    let out = stdout.lock().unwrap().clone();
    let err = stderr.lock().unwrap().clone();
    assert!(
        status.is_some(),
        "`ferry {args:?}` still running after 20 s\nstdout:\n{out}\nstderr:\n{err}"
    );
    (status.unwrap().code(), out, err)
}

#[test]
fn first_start_prints_the_admin_password_once_and_it_logs_in() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");

    let mut server = Server::start(&data, &["--listen", "127.0.0.1:0"], 1);
    let password = server
        .admin_password()
        .unwrap_or_else(|| panic!("no admin password printed\n{}", server.output()));
    assert!(password.len() >= 12, "{password:?}");
    assert_eq!(login(server.addr(), "admin", &password), 230);
    assert_eq!(login(server.addr(), "admin", "not-the-password"), 530);

    let users = fs::read_to_string(data.join("users.toml")).unwrap();
    assert!(users.contains("$argon2id$"), "{users}");
    assert!(!users.contains(&password), "{users}");

    server.sigterm();
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let all = server.stdout.join("\n");
    assert_eq!(all.matches(&password).count(), 1, "{all}");
    assert_eq!(all.matches("Created user").count(), 1, "{all}");
    assert!(all.contains("ferry user passwd admin"), "{all}");
    let stderr = server.stderr.lock().unwrap().clone();
    assert!(
        !stderr.contains(&password),
        "password in the log:\n{stderr}"
    );

    // Second start of the same data directory: no new account, no password, old one works.
    let mut again = Server::start(&data, &["--listen", "127.0.0.1:0"], 1);
    assert_eq!(login(again.addr(), "admin", &password), 230);
    again.sigterm();
    assert_eq!(again.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let all = again.stdout.join("\n");
    assert!(!all.contains("password"), "{all}");
    assert!(!all.contains(&password), "{all}");
    assert_eq!(
        fs::read_to_string(data.join("users.toml")).unwrap(),
        users,
        "users.toml changed on the second start"
    );
}

#[test]
fn user_commands_take_effect_without_a_restart() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    // Failed logins are slow by design; a short delay keeps this test fast.
    fs::write(data.join("ferry.toml"), "login_fail_delay_ms = 50\n").unwrap();
    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    assert_eq!(login(server.addr(), "carol", "carol-pw"), 530);

    add_user(data, "carol", "carol-pw");
    assert_eq!(login(server.addr(), "carol", "carol-pw"), 230);

    let passwd = run_to_end(
        data,
        &["user", "passwd", "carol", "--password-stdin"],
        "carol-new\n",
    );
    assert_eq!(passwd.0, Some(0), "{passwd:?}");
    assert_eq!(login(server.addr(), "carol", "carol-pw"), 530);
    assert_eq!(login(server.addr(), "carol", "carol-new"), 230);

    let del = run_to_end(data, &["user", "del", "carol"], "");
    assert_eq!(del.0, Some(0), "{del:?}");
    assert_eq!(login(server.addr(), "carol", "carol-new"), 530);
    // The admin account is untouched by all this.
    let password = server.admin_password().unwrap();
    assert_eq!(login(server.addr(), "admin", &password), 230);
}

/// `ferry user add NAME --password-stdin`, which must succeed.
pub(crate) fn add_user(data: &Path, name: &str, password: &str) {
    let add = run_to_end(
        data,
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    assert_eq!(add.0, Some(0), "{add:?}");
}

/// How each of the first `n` successful logins was verified, from the server's log, in order.
/// The log reaches the test through a pipe and a reader thread, possibly after the client saw
/// its 230: wait (up to 10 s) until `n` are there, so a missing entry fails, a late one not.
fn login_checks(server: &Server, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checks = logged_login_checks(server);
        if checks.len() >= n || Instant::now() > deadline {
            return checks;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn logged_login_checks(server: &Server) -> Vec<String> {
    let log = server.stderr.lock().unwrap();
    log.lines()
        .filter(|line| line.contains(" login ") || line.ends_with(" login"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("verified=")?;
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn repeated_logins_skip_argon2_until_the_password_changes() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    fs::write(data.join("ferry.toml"), "login_fail_delay_ms = 50\n").unwrap();
    add_user(data, "carol", "pw-1");
    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    for _ in 0..3 {
        assert_eq!(login(server.addr(), "carol", "pw-1"), 230);
    }
    // A wrong password is never answered from the cache, however often the right one was
    // seen.
    assert_eq!(login(server.addr(), "carol", "pw-1 "), 530);
    assert_eq!(login(server.addr(), "carol", "PW-1"), 530);
    let passwd = run_to_end(
        data,
        &["user", "passwd", "carol", "--password-stdin"],
        "pw-2\n",
    );
    assert_eq!(passwd.0, Some(0), "{passwd:?}");
    assert_eq!(
        login(server.addr(), "carol", "pw-1"),
        530,
        "old password cached"
    );
    assert_eq!(login(server.addr(), "carol", "pw-2"), 230);
    assert_eq!(login(server.addr(), "carol", "pw-2"), 230);
    assert_eq!(
        login_checks(&server, 5),
        ["argon2id", "cache", "cache", "argon2id", "cache"],
        "{}",
        server.output()
    );
}

#[test]
fn login_cache_secs_zero_verifies_every_login() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    add_user(data, "carol", "pw-1");
    let args = ["--listen", "127.0.0.1:0", "--login-cache-secs", "0"];
    let server = Server::start(data, &args, 1);
    for _ in 0..3 {
        assert_eq!(login(server.addr(), "carol", "pw-1"), 230);
    }
    assert_eq!(
        login_checks(&server, 3),
        ["argon2id", "argon2id", "argon2id"],
        "{}",
        server.output()
    );
}

/// The soft and hard "Max open files" of a process, from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().unwrap().to_owned();
    let hard = fields.next().unwrap().to_owned();
    (soft, hard)
}

#[test]
fn serve_raises_its_open_files_soft_limit_to_the_hard_limit() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    let prefix = ["prlimit", "--nofile=256:4096", "--"];
    let server = Server::start_wrapped(&prefix, data, &["--listen", "127.0.0.1:0"], 1);
    assert_eq!(
        open_files_limits(server.pid()),
        ("4096".to_owned(), "4096".to_owned()),
        "{}",
        server.output()
    );
}

/// The descriptors a process holds that are directories, and that are sockets.
fn open_dirs_and_sockets(pid: u32) -> (usize, usize) {
    let (mut dirs, mut sockets) = (0, 0);
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = fs::read_link(entry.unwrap().path()) else {
            continue;
        };
        if target.to_string_lossy().starts_with("socket:") {
            sockets += 1;
        } else if target.is_dir() {
            dirs += 1;
        }
    }
    (dirs, sockets)
}

#[test]
fn sessions_of_one_user_share_one_descriptor_of_the_home() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    add_user(data, "carol", "pw-1");
    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    let (dirs_before, sockets_before) = open_dirs_and_sockets(server.pid());
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let mut control = Control::connect(server.addr());
        assert_eq!(control.login("carol", "pw-1"), 230);
        sessions.push(control);
    }
    let (dirs, sockets) = open_dirs_and_sockets(server.pid());
    assert_eq!(sockets - sockets_before, 40, "one socket per session");
    assert_eq!(
        dirs - dirs_before,
        1,
        "one home directory for all 40 sessions"
    );
    for mut control in sessions {
        assert_eq!(control.cmd("PWD").0, 257);
    }
}

#[test]
fn sighup_reloads_users_toml_that_looks_unchanged() {
    let dir = TempDir::new().unwrap();
    let data = dir.path();
    fs::write(data.join("ferry.toml"), "login_fail_delay_ms = 50\n").unwrap();
    add_user(data, "carol", "first-pw");
    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    assert_eq!(login(server.addr(), "carol", "first-pw"), 230);

    // Change the password, then put the new contents back into the old file (same inode,
    // same size, same mtime), so the server's change detection cannot see the edit.
    let users = data.join("users.toml");
    let old_mtime = fs::metadata(&users).unwrap().modified().unwrap();
    let kept = data.join("kept.toml");
    fs::hard_link(&users, &kept).unwrap();
    let passwd = run_to_end(
        data,
        &["user", "passwd", "carol", "--password-stdin"],
        "second-pw\n",
    );
    assert_eq!(passwd.0, Some(0), "{passwd:?}");
    let new_contents = fs::read(&users).unwrap();
    assert_eq!(
        new_contents.len() as u64,
        fs::metadata(&kept).unwrap().len()
    );
    let file = fs::OpenOptions::new().write(true).open(&kept).unwrap();
    (&file).write_all(&new_contents).unwrap();
    file.set_modified(old_mtime).unwrap();
    drop(file);
    fs::rename(&kept, &users).unwrap();
    assert_eq!(
        login(server.addr(), "carol", "second-pw"),
        530,
        "test setup: the edit should be invisible to change detection"
    );

    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The reload happens in the background; the first login after it succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while login(server.addr(), "carol", "second-pw") != 230 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload users.toml\n{}",
            server.output()
        );
    }
    assert_eq!(login(server.addr(), "carol", "first-pw"), 530);
}

#[test]
fn sigterm_while_idle_sends_421_and_exits_zero_promptly() {
    let dir = TempDir::new().unwrap();
    let mut server = Server::start(dir.path(), &["--listen", "127.0.0.1:0"], 1);
    let password = server.admin_password().unwrap();
    let mut logged_in = Control::connect(server.addr());
    assert_eq!(logged_in.login("admin", &password), 230);
    let mut greeted = Control::connect(server.addr());

    let started = Instant::now();
    server.sigterm();
    for control in [&mut logged_in, &mut greeted] {
        let (code, text) = control.reply();
        assert_eq!(code, 421, "{text}");
    }
    // Nobody is transferring, so the 30 s default grace period is not waited out.
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", server.output());
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = TcpStream::connect(server.addr()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

/// The port of a `229 Entering Extended Passive Mode (|||PORT|)` reply.
pub(crate) fn epsv_port(text: &str) -> u16 {
    let inner = text.split("(|||").nth(1).unwrap();
    inner.split('|').next().unwrap().parse().unwrap()
}

#[test]
fn sigterm_during_a_download_lets_it_finish_then_exits_zero() {
    let dir = TempDir::new().unwrap();
    let mut server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "30"],
        1,
    );
    let password = server.admin_password().unwrap();
    // Big enough that most of it cannot sit in socket buffers when the signal arrives.
    let data = random_bytes(64 << 20, 21);
    let home = dir.path().join("home/admin");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("big.bin"), &data).unwrap();

    let mut control = Control::connect(server.addr());
    assert_eq!(control.login("admin", &password), 230);
    assert_eq!(control.cmd("TYPE I").0, 200);
    let (code, text) = control.cmd("EPSV");
    assert_eq!(code, 229, "{text}");
    let data_addr = SocketAddr::new(server.addr().ip(), epsv_port(&text));
    let mut stream = TcpStream::connect_timeout(&data_addr, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (code, text) = control.cmd("RETR big.bin");
    assert_eq!(code, 150, "{text}");

    let mut received = vec![0u8; 1 << 20];
    stream.read_exact(&mut received).unwrap();

    server.sigterm();
    // The server has acted on the signal once it stops accepting connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)) {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => break,
            _ if Instant::now() > deadline => {
                panic!("still accepting after SIGTERM\n{}", server.output())
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited during the transfer\n{}",
        server.output()
    );
    // The transfer is still running: no final reply yet (the rest cannot fit in buffers).
    control.reader.get_ref().set_nonblocking(true).unwrap();
    let pending = control.reader.fill_buf().map(|b| b.to_vec());
    control.reader.get_ref().set_nonblocking(false).unwrap();
    assert!(
        matches!(&pending, Err(err) if err.kind() == ErrorKind::WouldBlock),
        "reply before the transfer was read: {pending:?}"
    );

    stream.read_to_end(&mut received).unwrap();
    assert_eq!(received.len(), data.len(), "downloaded size");
    assert!(received == data, "downloaded bytes differ");
    let (code, text) = control.reply();
    assert_eq!(code, 226, "{text}");
    let (code, text) = control.reply();
    assert_eq!(code, 421, "{text}");

    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.output());
}

#[test]
fn listen_repeats_for_ipv4_and_ipv6() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"],
        2,
    );
    let password = server.admin_password().unwrap();
    assert!(server.addrs[0].is_ipv4(), "{:?}", server.addrs);
    assert!(server.addrs[1].is_ipv6(), "{:?}", server.addrs);
    for addr in &server.addrs {
        assert_ne!(addr.port(), 0);
        let mut control = Control::connect(*addr);
        assert_eq!(control.login("admin", &password), 230, "on {addr}");
        let (code, text) = control.cmd("PWD");
        assert_eq!(code, 257, "{text}");
    }
}

#[test]
fn unknown_key_in_ferry_toml_fails_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("ferry.toml");
    fs::write(&file, "listn = [\"127.0.0.1:0\"]\n").unwrap();
    let (code, out, err) = run_to_end(dir.path(), &["serve", "--listen", "127.0.0.1:0"], "");
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
    assert!(err.contains("listn"), "{err}");
    assert!(!out.contains("serving"), "{out}");
}

#[test]
fn listen_from_ferry_toml_is_used_without_the_flag() {
    let dir = TempDir::new().unwrap();
    fs::write(
        dir.path().join("ferry.toml"),
        "listen = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &[], 1);
    assert_eq!(server.addrs.len(), 1, "{}", server.output());
    let addr = server.addr();
    assert!(addr.ip().is_loopback() && addr.is_ipv4(), "{addr}");
    assert_ne!(addr.port(), 2121, "the default was used, not ferry.toml");
    let password = server.admin_password().unwrap();
    assert_eq!(login(addr, "admin", &password), 230);
}

#[test]
fn invalid_passive_port_range_is_a_usage_error() {
    let dir = TempDir::new().unwrap();
    let (code, out, err) = run_to_end(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0", "--passive-ports", "0-5"],
        "",
    );
    assert_eq!(code, Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("--passive-ports"), "{err}");
    assert!(!out.contains("serving"), "{out}");
    // A usage error stops before anything is created.
    assert!(!dir.path().join("users.toml").exists());
}
