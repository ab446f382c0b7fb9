//! The `ferry` client commands against pyftpdlib, a server nobody here wrote, started by each
//! test on 127.0.0.1 port 0 (the script prints the bound port; no sleeps). pyftpdlib has no
//! checksum commands, so transfers succeed with a "not verified" note instead. The scenarios
//! are the ones client_ferry.rs runs against ferry.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use testkit::random_bytes;

use super::client_ferry::{
    Local, NOT_VERIFIED, Plant, Remote, assert_file, credentials, download_resume,
    file_commands_round_trip, mirror_download, mirror_upload, progress,
    put_of_a_directory_is_refused, segmented_get, upload_resume,
};

/// The server: one user with every permission (`M`: chmod, `T`: MFMT) in the given home;
/// failed logins answered at once; the port it bound printed on stdout.
const SERVER: &str = r#"
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

home, user, password = sys.argv[1:4]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, home, perm="elradfmwMT")
FTPHandler.authorizer = authorizer
FTPHandler.auth_failed_timeout = 0
server = FTPServer(("127.0.0.1", 0), FTPHandler)
print(server.address[1], flush=True)
server.serve_forever()
"#;

const USER: &str = "carol";
const PASSWORD: &str = "carol-pw";

/// A running pyftpdlib; killed on drop, so a failing test leaves no process behind.
struct PyFtpd {
    child: Child,
    port: u16,
    home: TempDir,
    /// pyftpdlib's log (every command), for failure messages.
    log: Arc<Mutex<String>>,
}

impl PyFtpd {
    fn start() -> PyFtpd {
        let home = TempDir::new().unwrap();
        let mut child = Command::new("python3")
            .args(["-u", "-c", SERVER])
            .arg(home.path())
            .args([USER, PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is not installed: run scripts/test");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let mut stderr = child.stderr.take().unwrap();
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.wait();
            // The pipe closed with the exit: the whole message is in once the thread ends.
            let _ = drain.join();
            let log = log.lock().unwrap().clone();
            if log.contains("No module named 'pyftpdlib'") {
                panic!("pyftpdlib is not installed: run scripts/test, which installs it");
            }
            panic!("pyftpdlib did not start (stdout {line:?}):\n{log}");
        };
        PyFtpd {
            child,
            port,
            home,
            log,
        }
    }

    fn remote(&self) -> Remote {
        Remote {
            scheme: "ftp",
            host_port: format!("127.0.0.1:{}", self.port),
            user: USER.into(),
            password: PASSWORD.into(),
            home: self.home.path().to_path_buf(),
            flags: Vec::new(),
            checksums: false,
        }
    }
}

impl PyFtpd {
    /// The most control connections the server had open at once so far, from its log.
    fn max_concurrent_sessions(&self) -> usize {
        let log = self.log.lock().unwrap();
        let (mut open, mut most) = (0usize, 0usize);
        for line in log.lines() {
            if line.ends_with("FTP session opened (connect)") {
                open += 1;
                most = most.max(open);
            } else if line.contains("FTP session closed") {
                open = open.saturating_sub(1);
            }
        }
        most
    }
}

impl Drop for PyFtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("pyftpdlib log:\n{}", self.log.lock().unwrap());
        }
    }
}

#[test]
fn file_commands_round_trip_over_plain_ftp() {
    let server = PyFtpd::start();
    file_commands_round_trip(&server.remote(), 201);
}

#[test]
fn file_commands_round_trip_in_active_mode() {
    let server = PyFtpd::start();
    file_commands_round_trip(&server.remote().with_flag("--active"), 202);
}

#[test]
fn put_of_a_directory_is_refused_and_leaves_nothing() {
    let server = PyFtpd::start();
    put_of_a_directory_is_refused(&server.remote());
}

#[test]
fn download_resumes_from_random_cuts() {
    let server = PyFtpd::start();
    download_resume(&server.remote(), 211);
}

#[test]
fn upload_resumes_from_random_cuts() {
    let server = PyFtpd::start();
    upload_resume(&server.remote(), 212, Plant::Upload);
}

#[test]
fn transfers_say_they_are_not_verified_unless_quiet() {
    let server = PyFtpd::start();
    let remote = server.remote();
    let local = Local::new();
    let data = random_bytes(300_000, 221);
    let src = local.write("n.bin", &data);

    let run = remote.run(&local, &["put", &src, &remote.url("n.bin")]);
    run.ok().quiet_stderr(true);
    assert!(run.stderr.contains("n.bin"), "{}", run.show());
    assert_file(remote.home.join("n.bin"), &data);
    let run = remote.run(&local, &["get", &remote.url("n.bin"), &local.file("g.bin")]);
    run.ok().quiet_stderr(true);
    assert!(run.stderr.contains("n.bin"), "{}", run.show());
    assert_file(local.file("g.bin"), &data);

    for args in [
        ["put", "--quiet", &src, &remote.url("q.bin")],
        ["get", "-q", &remote.url("q.bin"), &local.file("q.bin")],
    ] {
        let run = remote.run(&local, &args);
        run.ok().quiet_stderr(false);
        assert!(!run.stderr.contains(NOT_VERIFIED), "{}", run.show());
    }
    assert_file(remote.home.join("q.bin"), &data);
    assert_file(local.file("q.bin"), &data);
}

#[test]
fn segmented_get_gives_identical_bytes() {
    let server = PyFtpd::start();
    segmented_get(&server.remote(), 241);
    // Four segments are four sessions at once, not one after the other.
    assert!(
        server.max_concurrent_sessions() >= 4,
        "at most {} sessions at once",
        server.max_concurrent_sessions()
    );
}

#[test]
fn mirror_downloads_a_tree_then_only_changes() {
    let server = PyFtpd::start();
    mirror_download(&server.remote(), 251);
    // --parallel 4 moves files over four sessions at once.
    assert!(
        server.max_concurrent_sessions() >= 4,
        "at most {} sessions at once",
        server.max_concurrent_sessions()
    );
}

#[test]
fn mirror_reverse_uploads_a_tree_then_only_changes() {
    let server = PyFtpd::start();
    mirror_upload(&server.remote(), 252);
    // --parallel 4 moves files over four sessions at once.
    assert!(
        server.max_concurrent_sessions() >= 4,
        "at most {} sessions at once",
        server.max_concurrent_sessions()
    );
}

#[test]
fn credentials_come_from_env_stdin_and_netrc() {
    let server = PyFtpd::start();
    credentials(&server.remote());
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let server = PyFtpd::start();
    progress(&server.remote(), 271);
}

#[test]
fn put_to_the_login_directory_keeps_the_name_and_leaves_no_part() {
    let server = PyFtpd::start();
    let remote = server.remote();
    let local = Local::new();
    let data = random_bytes(10_000, 281);
    let src = local.write("plain.bin", &data);
    remote.run(&local, &["put", &src, &remote.url("")]).ok();
    let names: Vec<String> = fs::read_dir(&remote.home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["plain.bin"]);
    assert_file(remote.home.join("plain.bin"), &data);
}
