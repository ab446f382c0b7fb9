//! The `ferry` client commands as a user runs them: the real binary as a child process
//! (ls, get, put, cat, rm, mkdir, rmdir, mv, mirror, get --segments) against a testkit ferry
//! server, over plain FTP, explicit and implicit FTPS, IPv6 and active mode; resume after cuts,
//! checksum verification, credentials, usage errors and progress bars on a terminal (util-linux
//! `script`). Bytes, exit codes, messages and the files on both sides are checked. The
//! scenarios are shared with client_pyftpdlib.rs, which runs them against a server nobody here
//! wrote.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testkit::{TestServer, random_bytes};

use super::quota::Rng;

/// Longest a single client command may run before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The note a transfer prints when the server cannot checksum.
pub(crate) const NOT_VERIFIED: &str = "not verified: server offers no checksum";

/// What one `ferry` run did.
#[derive(Debug)]
pub(crate) struct Run {
    /// The command line, for messages.
    line: String,
    /// The exit code (`None`: killed by a signal).
    pub(crate) code: Option<i32>,
    /// Everything on stdout.
    pub(crate) stdout: Vec<u8>,
    /// Everything on stderr.
    pub(crate) stderr: String,
}

impl Run {
    /// The run as text, for assertion messages.
    pub(crate) fn show(&self) -> String {
        // cat and terminal transcripts can be megabytes: their start tells enough.
        let shown = &self.stdout[..self.stdout.len().min(4096)];
        format!(
            "$ {}\nexit: {:?}\nstdout ({} bytes):\n{}\nstderr:\n{}",
            self.line,
            self.code,
            self.stdout.len(),
            String::from_utf8_lossy(shown),
            self.stderr
        )
    }

    /// Stdout as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.show());
        self
    }

    /// Asserts exit `code` and that stderr mentions `needle`.
    #[track_caller]
    pub(crate) fn fails(&self, code: i32, needle: &str) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}:\n{}",
            self.show()
        );
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}:\n{}",
            self.show()
        );
        self
    }

    /// Asserts that a mirror's stderr (piped: no bars) is empty when the server verifies
    /// transfers, and else holds only "not verified" notes.
    #[track_caller]
    pub(crate) fn mirror_stderr(&self, checksums: bool) -> &Run {
        let other: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| checksums || !l.contains("not verified"))
            .collect();
        assert!(other.is_empty(), "unexpected stderr:\n{}", self.show());
        assert!(
            !self.stderr.contains(['\r', '\x1b']),
            "a bar on piped stderr:\n{}",
            self.show()
        );
        self
    }

    /// Asserts that stderr is empty, or holds only `NOT_VERIFIED` notes when `notes` is set.
    #[track_caller]
    pub(crate) fn quiet_stderr(&self, notes: bool) -> &Run {
        let other: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !(notes && l.ends_with(NOT_VERIFIED)))
            .collect();
        assert!(other.is_empty(), "unexpected stderr:\n{}", self.show());
        if notes {
            assert!(
                self.stderr.contains(NOT_VERIFIED),
                "no {NOT_VERIFIED:?} note:\n{}",
                self.show()
            );
        }
        self
    }
}

/// Runs `cmd` to the end with `stdin` (or none), killing it after [`RUN_LIMIT`].
fn finish(mut cmd: Command, line: String, stdin: Option<&str>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {line}: {err}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let text = text.to_owned();
        // The child may exit without reading: a broken pipe is no failure.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let (done, watch) = channel::<()>();
    let pid = child.id().to_string();
    let watchdog = std::thread::spawn(move || {
        let expired = watch.recv_timeout(RUN_LIMIT) == Err(RecvTimeoutError::Timeout);
        if expired {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        expired
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    let killed = watchdog.join().unwrap();
    let run = Run {
        line,
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!killed, "ran for over {RUN_LIMIT:?}:\n{}", run.show());
    run
}

/// Quotes `word` for a POSIX shell.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A client machine: a temporary directory that is the commands' working directory and their
/// HOME, so no ~/.netrc, FERRY_PASSWORD or RUST_LOG of the machine running the tests leaks in.
#[derive(Debug)]
pub(crate) struct Local {
    dir: TempDir,
}

impl Local {
    pub(crate) fn new() -> Local {
        Local {
            dir: TempDir::new().unwrap(),
        }
    }

    /// The path of `rel` inside the directory, as text for command lines.
    pub(crate) fn file(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_str().unwrap().to_owned()
    }

    /// Writes `bytes` to `rel` (parents created); returns its path.
    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) -> String {
        let path = self.file(rel);
        fs::create_dir_all(Path::new(&path).parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// `ferry ARGS` in this directory, with `env` set.
    pub(crate) fn command(&self, args: &[String], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args);
        self.environment(&mut cmd, env);
        cmd
    }

    fn environment(&self, cmd: &mut Command, env: &[(&str, &str)]) {
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("FERRY_PASSWORD")
            .env_remove("RUST_LOG")
            .env_remove("NETRC");
        for (key, value) in env {
            cmd.env(key, value);
        }
    }

    /// Runs `ferry ARGS` with `env` and `stdin`.
    pub(crate) fn run_with(
        &self,
        args: &[String],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Run {
        finish(
            self.command(args, env),
            format!("ferry {}", args.join(" ")),
            stdin,
        )
    }

    /// Runs `ferry ARGS` with stdout and stderr on a pseudo-terminal (util-linux `script`);
    /// the run's stdout is what the terminal showed.
    pub(crate) fn run_on_tty(&self, args: &[String]) -> Run {
        let mut line = sh_quote(env!("CARGO_BIN_EXE_ferry"));
        for arg in args {
            line.push(' ');
            line.push_str(&sh_quote(arg));
        }
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"]);
        self.environment(&mut cmd, &[]);
        finish(cmd, format!("script -qfec {line} /dev/null"), None)
    }
}

/// A server as the client sees it: how to reach it, who logs in, and where its files are on
/// disk, so tests can plant and inspect them behind the client's back.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// `ftp`, `ftpes` or `ftps`.
    pub(crate) scheme: &'static str,
    /// `127.0.0.1:PORT`.
    pub(crate) host_port: String,
    /// The login name.
    pub(crate) user: String,
    /// Its password.
    pub(crate) password: String,
    /// The login directory on disk.
    pub(crate) home: PathBuf,
    /// Connection flags every command gets (--cacert, --active, --tls).
    pub(crate) flags: Vec<String>,
    /// Whether the server offers checksums, so that transfers are verified.
    pub(crate) checksums: bool,
}

impl Remote {
    /// The URL of `path` (relative to the login directory) with the credentials in it.
    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "{}://{}:{}@{}/{path}",
            self.scheme, self.user, self.password, self.host_port
        )
    }

    /// The URL of `path` with the user but no password.
    pub(crate) fn url_without_password(&self, path: &str) -> String {
        format!("{}://{}@{}/{path}", self.scheme, self.user, self.host_port)
    }

    /// The URL of `path` with no credentials at all.
    pub(crate) fn url_anonymous(&self, path: &str) -> String {
        format!("{}://{}/{path}", self.scheme, self.host_port)
    }

    /// `args` followed by the connection flags.
    pub(crate) fn args(&self, args: &[&str]) -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(self.flags.iter().cloned())
            .collect()
    }

    /// Runs `ferry ARGS FLAGS` on `local`.
    pub(crate) fn run(&self, local: &Local, args: &[&str]) -> Run {
        local.run_with(&self.args(args), &[], None)
    }

    /// The same server with `flag` added to every command.
    pub(crate) fn with_flag(&self, flag: &str) -> Remote {
        let mut remote = self.clone();
        remote.flags.push(flag.to_owned());
        remote
    }
}

/// Asserts equal bytes, naming the first difference instead of dumping megabytes.
#[track_caller]
pub(crate) fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: size");
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!("{what}: bytes differ from offset {at}");
    }
}

/// Asserts that `path` holds exactly `expected`.
#[track_caller]
pub(crate) fn assert_file(path: impl AsRef<Path>, expected: &[u8]) {
    let path = path.as_ref();
    let actual = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_same_bytes(&actual, expected, &path.display().to_string());
}

/// Asserts that nothing exists at `path`.
#[track_caller]
pub(crate) fn assert_absent(path: impl AsRef<Path>) {
    let path = path.as_ref();
    assert!(
        fs::symlink_metadata(path).is_err(),
        "{} should not exist",
        path.display()
    );
}

/// Size of the files cut and resumed.
const RESUME_LEN: usize = (4 << 20) + 12_345;

/// Seeded cut points inside a file of [`RESUME_LEN`] bytes.
fn cut_points(seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..3)
        .map(|_| rng.range(1, RESUME_LEN as u64 - 1) as usize)
        .collect()
}

/// mkdir -p, put (to a file URL and into a directory URL), ls, ls -l, get (to a path, into a
/// directory, into the working directory, over an existing file), cat, mv, rm, rmdir, and the
/// failures (existing directory, non-empty directory, missing file), all checked on disk.
pub(crate) fn file_commands_round_trip(remote: &Remote, seed: u64) {
    let local = Local::new();
    let data = random_bytes((3 << 20) + 1234, seed);
    let src = local.write("src.bin", &data);
    let notes = !remote.checksums;
    let home = &remote.home;

    remote
        .run(&local, &["mkdir", "-p", &remote.url("a/b/c")])
        .ok()
        .quiet_stderr(false);
    assert!(home.join("a/b/c").is_dir());
    // -p: an existing directory is no error; without -p it is.
    remote
        .run(&local, &["mkdir", "-p", &remote.url("a/b/c/")])
        .ok();
    remote
        .run(&local, &["mkdir", &remote.url("a/b")])
        .fails(1, "MKD");

    let run = remote.run(&local, &["put", &src, &remote.url("a/b/c/big.bin")]);
    run.ok().quiet_stderr(notes);
    assert!(run.stdout.is_empty(), "{}", run.show());
    assert_file(home.join("a/b/c/big.bin"), &data);
    assert_absent(home.join("a/b/c/big.bin.part"));
    // A URL ending in / names a directory: the local name is kept.
    remote
        .run(&local, &["put", &src, &remote.url("a/")])
        .ok()
        .quiet_stderr(notes);
    assert_file(home.join("a/src.bin"), &data);
    assert_absent(home.join("a/src.bin.part"));

    let run = remote.run(&local, &["ls", &remote.url("a/")]);
    assert_eq!(run.ok().text(), "b/\nsrc.bin\n", "{}", run.show());
    let run = remote.run(&local, &["ls", "-l", &remote.url("a/b/c/")]);
    let text = run.ok().text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.show());
    assert!(
        lines[0].starts_with('-') && lines[0].ends_with(" big.bin"),
        "{}",
        run.show()
    );
    let size = data.len().to_string();
    assert!(
        lines[0].split_whitespace().any(|f| f == size),
        "{}",
        run.show()
    );

    let dst = local.file("dst.bin");
    let run = remote.run(&local, &["get", &remote.url("a/b/c/big.bin"), &dst]);
    run.ok().quiet_stderr(notes);
    assert!(run.stdout.is_empty(), "{}", run.show());
    assert_file(&dst, &data);
    assert_absent(format!("{dst}.part"));
    // Over an existing file.
    fs::write(&dst, b"old contents").unwrap();
    remote
        .run(&local, &["get", &remote.url("a/b/c/big.bin"), &dst])
        .ok();
    assert_file(&dst, &data);
    // Into a directory, and into the working directory: the remote name is kept.
    fs::create_dir(local.file("into")).unwrap();
    remote
        .run(
            &local,
            &["get", &remote.url("a/b/c/big.bin"), &local.file("into")],
        )
        .ok();
    assert_file(local.file("into/big.bin"), &data);
    remote
        .run(&local, &["get", &remote.url("a/b/c/big.bin")])
        .ok();
    assert_file(local.file("big.bin"), &data);

    let run = remote.run(&local, &["cat", &remote.url("a/b/c/big.bin")]);
    run.ok().quiet_stderr(false);
    assert_same_bytes(&run.stdout, &data, "cat output");

    remote
        .run(&local, &["mv", &remote.url("a/b/c/big.bin"), "a/moved.bin"])
        .ok()
        .quiet_stderr(false);
    assert_absent(home.join("a/b/c/big.bin"));
    assert_file(home.join("a/moved.bin"), &data);
    // NEWPATH may be written as a URL of the same server too.
    remote
        .run(
            &local,
            &[
                "mv",
                &remote.url("a/moved.bin"),
                &remote.url("a/b/again.bin"),
            ],
        )
        .ok();
    assert_absent(home.join("a/moved.bin"));
    assert_file(home.join("a/b/again.bin"), &data);

    // rmdir of a non-empty directory fails and changes nothing.
    remote
        .run(&local, &["rmdir", &remote.url("a/b")])
        .fails(1, "RMD");
    assert_file(home.join("a/b/again.bin"), &data);
    remote
        .run(&local, &["rm", &remote.url("a/b/again.bin")])
        .ok()
        .quiet_stderr(false);
    assert_absent(home.join("a/b/again.bin"));
    remote
        .run(&local, &["rm", &remote.url("a/b/again.bin")])
        .fails(1, "550");
    remote.run(&local, &["rmdir", &remote.url("a/b/c")]).ok();
    remote.run(&local, &["rmdir", &remote.url("a/b/")]).ok();
    assert_absent(home.join("a/b"));
    assert!(home.join("a").is_dir());

    // A missing remote file: exit 1 with the server's 550, and nothing left behind locally.
    let missing = local.file("missing.bin");
    remote
        .run(&local, &["get", &remote.url("a/missing.bin"), &missing])
        .fails(1, "550");
    assert_absent(&missing);
    assert_absent(format!("{missing}.part"));
    remote
        .run(&local, &["cat", &remote.url("a/missing.bin")])
        .fails(1, "550");
}

/// `put DIR URL`: a directory is no file to put. Refused with exit 1, naming it, and nothing
/// is left on the server (no empty NAME or NAME.part).
pub(crate) fn put_of_a_directory_is_refused(remote: &Remote) {
    let local = Local::new();
    let dir = local.file("folder");
    fs::create_dir(&dir).unwrap();
    local.write("folder/inside.txt", b"inside");
    for url in [remote.url(""), remote.url("folder")] {
        let run = remote.run(&local, &["put", &dir, &url]);
        run.fails(1, &dir);
        let left: Vec<String> = fs::read_dir(&remote.home)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.is_empty(),
            "left on the server: {left:?}\n{}",
            run.show()
        );
    }
}

/// `get -c` continues a partial LOCAL.part (or LOCAL itself) cut at random points, fetching only
/// what is missing; with checksums, a corrupt partial file is caught and kept.
pub(crate) fn download_resume(remote: &Remote, seed: u64) {
    let local = Local::new();
    let data = random_bytes(RESUME_LEN, seed);
    fs::write(remote.home.join("cut.bin"), &data).unwrap();
    let url = remote.url("cut.bin");
    let cuts = cut_points(seed);

    for (i, &cut) in cuts.iter().enumerate() {
        let dst = local.file(&format!("cut-{i}.bin"));
        fs::write(format!("{dst}.part"), &data[..cut]).unwrap();
        remote
            .run(&local, &["get", "-c", &url, &dst])
            .ok()
            .quiet_stderr(!remote.checksums);
        assert_file(&dst, &data);
        assert_absent(format!("{dst}.part"));
    }

    // A partial LOCAL without a .part continues too.
    let dst = local.file("whole.bin");
    fs::write(&dst, &data[..cuts[0]]).unwrap();
    remote.run(&local, &["get", "--continue", &url, &dst]).ok();
    assert_file(&dst, &data);
    assert_absent(format!("{dst}.part"));

    // A complete .part only needs verifying and renaming.
    let dst = local.file("complete.bin");
    fs::write(format!("{dst}.part"), &data).unwrap();
    remote.run(&local, &["get", "-c", &url, &dst]).ok();
    assert_file(&dst, &data);
    assert_absent(format!("{dst}.part"));

    // Only the missing part travels: a marked prefix survives when verification is off.
    let cut = cuts[1];
    let marked: Vec<u8> = vec![0xA5; cut];
    let dst = local.file("marked.bin");
    fs::write(format!("{dst}.part"), &marked).unwrap();
    remote
        .run(&local, &["get", "-c", "--no-verify", &url, &dst])
        .ok()
        .quiet_stderr(false);
    let mut expected = marked.clone();
    expected.extend_from_slice(&data[cut..]);
    assert_file(&dst, &expected);

    if remote.checksums {
        // With verification the wrong prefix is caught: exit 1, LOCAL.part kept, no LOCAL.
        let dst = local.file("caught.bin");
        fs::write(format!("{dst}.part"), &marked).unwrap();
        remote
            .run(&local, &["get", "-c", &url, &dst])
            .fails(1, "checksum mismatch");
        assert_absent(&dst);
        assert_file(format!("{dst}.part"), &expected);
    }
}

/// How a test puts a partial upload on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plant {
    /// Written straight into the server's directory.
    OnDisk,
    /// Uploaded with `ferry put`.
    Upload,
}

/// Puts `bytes` on the server as `name` the way `plant` says.
fn plant(remote: &Remote, local: &Local, how: Plant, name: &str, bytes: &[u8]) {
    match how {
        Plant::OnDisk => fs::write(remote.home.join(name), bytes).unwrap(),
        Plant::Upload => {
            let prefix = local.write("prefix.bin", bytes);
            remote.run(local, &["put", &prefix, &remote.url(name)]).ok();
        }
    }
    assert_file(remote.home.join(name), bytes);
}

/// `put -c` continues a partial remote NAME.part cut at random points, sending only what is
/// missing; with checksums, a corrupt partial file is caught and left as NAME.part.
pub(crate) fn upload_resume(remote: &Remote, seed: u64, how: Plant) {
    let local = Local::new();
    let data = random_bytes(RESUME_LEN, seed);
    let src = local.write("up.bin", &data);
    let url = remote.url("up.bin");
    let cuts = cut_points(seed);

    for &cut in &cuts {
        plant(remote, &local, how, "up.bin.part", &data[..cut]);
        remote
            .run(&local, &["put", "-c", &src, &url])
            .ok()
            .quiet_stderr(!remote.checksums);
        assert_file(remote.home.join("up.bin"), &data);
        assert_absent(remote.home.join("up.bin.part"));
        fs::remove_file(remote.home.join("up.bin")).unwrap();
    }

    // Only the missing part travels: a marked prefix survives when verification is off.
    let cut = cuts[2];
    let marked: Vec<u8> = vec![0x5A; cut];
    let mut expected = marked.clone();
    expected.extend_from_slice(&data[cut..]);
    plant(remote, &local, how, "up.bin.part", &marked);
    remote
        .run(&local, &["put", "--continue", "--no-verify", &src, &url])
        .ok()
        .quiet_stderr(false);
    assert_file(remote.home.join("up.bin"), &expected);
    assert_absent(remote.home.join("up.bin.part"));

    if remote.checksums {
        fs::remove_file(remote.home.join("up.bin")).unwrap();
        plant(remote, &local, how, "up.bin.part", &marked);
        remote
            .run(&local, &["put", "-c", &src, &url])
            .fails(1, "checksum mismatch");
        assert_absent(remote.home.join("up.bin"));
        assert_file(remote.home.join("up.bin.part"), &expected);
    }
}

/// `get --segments 4` of files of odd size, tiny and empty gives the same bytes.
pub(crate) fn segmented_get(remote: &Remote, seed: u64) {
    let local = Local::new();
    for (name, len) in [
        ("seg.bin", (5 << 20) + 3),
        ("tiny.bin", 3),
        ("empty.bin", 0),
    ] {
        let data = random_bytes(len, seed ^ len as u64);
        fs::write(remote.home.join(name), &data).unwrap();
        let dst = local.file(name);
        remote
            .run(&local, &["get", "--segments", "4", &remote.url(name), &dst])
            .ok()
            .quiet_stderr(!remote.checksums);
        assert_file(&dst, &data);
        let leftovers: Vec<String> = fs::read_dir(local.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name) && n != name)
            .collect();
        assert!(leftovers.is_empty(), "{name}: left behind {leftovers:?}");
    }
}

/// Every directory (`None`) and file (its bytes) under `root`, by path relative to it.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that two directory trees hold the same names and bytes.
#[track_caller]
pub(crate) fn assert_same_tree(actual: &Path, expected: &Path) {
    let (a, e) = (tree(actual), tree(expected));
    let names = |t: &BTreeMap<String, Option<Vec<u8>>>| {
        t.iter()
            .map(|(k, v)| {
                if v.is_none() {
                    format!("{k}/")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&a),
        names(&e),
        "entries of {} (left) vs {} (right)",
        actual.display(),
        expected.display()
    );
    for (name, bytes) in &e {
        if let (Some(expected_bytes), Some(Some(actual_bytes))) = (bytes, a.get(name)) {
            assert_same_bytes(actual_bytes, expected_bytes, name);
        }
    }
}

/// Plants the mirror tree under `root`: nested directories, empty files, an empty directory,
/// names with spaces and non-ASCII characters, and a directory of many small files. Returns
/// the number of files and their total size.
pub(crate) fn plant_tree(root: &Path, seed: u64) -> (u64, u64) {
    let mut files: Vec<(String, usize)> = [
        ("top.txt", 1000),
        ("empty.txt", 0),
        ("sub/a.bin", 200_000),
        ("sub/deeper/b.bin", (1 << 20) + 3),
        ("sub/deeper/empty", 0),
        ("grüße/日本.txt", 4321),
        ("with space/a file.txt", 17),
    ]
    .iter()
    .map(|&(n, l)| (n.to_owned(), l))
    .collect();
    for i in 0..24 {
        files.push((format!("many/f{i:02}.txt"), 1000 + 97 * i));
    }
    let mut bytes = 0;
    for (i, (name, len)) in files.iter().enumerate() {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(*len, seed + i as u64)).unwrap();
        bytes += *len as u64;
    }
    fs::create_dir_all(root.join("emptydir")).unwrap();
    (files.len() as u64, bytes)
}

/// The numbers of mirror's summary "N files transferred (X bytes), M unchanged, D deleted".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) transferred: u64,
    pub(crate) bytes: u64,
    pub(crate) unchanged: u64,
    pub(crate) deleted: u64,
}

/// The digits right before `word` in `line`.
fn number_before(line: &str, word: &str) -> Option<u64> {
    let before = line[..line.find(word)?].trim_end();
    let start = before
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    before[start..].parse().ok()
}

/// Reads the summary line of a mirror run (stdout or stderr).
#[track_caller]
pub(crate) fn summary(run: &Run) -> Summary {
    let all = format!("{}\n{}", run.text(), run.stderr);
    let line = all
        .lines()
        .find(|l| l.contains(" transferred (") && l.contains(" unchanged"))
        .unwrap_or_else(|| panic!("no summary line:\n{}", run.show()));
    let bytes = line.split_once(" transferred (").and_then(|(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    let parsed = (
        number_before(line, " file"),
        bytes,
        number_before(line, " unchanged"),
        number_before(line, " deleted"),
    );
    let (Some(transferred), Some(bytes), Some(unchanged), Some(deleted)) = parsed else {
        panic!("summary line {line:?} not understood:\n{}", run.show());
    };
    Summary {
        transferred,
        bytes,
        unchanged,
        deleted,
    }
}

/// Rewrites six files of a planted tree with new sizes and bytes; returns how many and their
/// new total size.
fn change_tree(root: &Path, seed: u64) -> (u64, u64) {
    fs::write(root.join("sub/a.bin"), random_bytes(150_001, seed)).unwrap();
    for i in 0..5 {
        let path = root.join(format!("many/f{i:02}.txt"));
        fs::write(path, random_bytes(2_000, seed + 1 + i)).unwrap();
    }
    (6, 150_001 + 5 * 2_000)
}

/// `ferry mirror URL DIR`: a dry run, the whole tree (--parallel 4), nothing on a second run,
/// then only the changed files (--parallel 4); local extras stay without --delete and go with
/// it.
pub(crate) fn mirror_download(remote: &Remote, seed: u64) {
    let local = Local::new();
    let source = remote.home.join("tree");
    let (files, bytes) = plant_tree(&source, seed);
    let dest = local.file("dest");
    let url = remote.url("tree/");

    // A dry run says what it would do and writes no file.
    let run = remote.run(&local, &["mirror", "--dry-run", &url, &dest]);
    let said = format!("{}{}", run.ok().text(), run.stderr);
    assert!(said.contains("dry run"), "{}", run.show());
    if Path::new(&dest).exists() {
        let files = tree(Path::new(&dest)).into_values().flatten().count();
        assert_eq!(files, 0, "a dry run wrote files:\n{}", run.show());
    }

    let run = remote.run(&local, &["mirror", "--parallel", "4", &url, &dest]);
    run.ok().mirror_stderr(remote.checksums);
    assert_same_tree(Path::new(&dest), &source);
    assert_eq!(
        summary(&run),
        Summary {
            transferred: files,
            bytes,
            unchanged: 0,
            deleted: 0
        },
        "{}",
        run.show()
    );

    let run = remote.run(&local, &["mirror", &url, &dest]);
    run.ok().mirror_stderr(remote.checksums);
    assert_eq!(
        summary(&run),
        Summary {
            transferred: 0,
            bytes: 0,
            unchanged: files,
            deleted: 0
        },
        "second run:\n{}",
        run.show()
    );
    assert_same_tree(Path::new(&dest), &source);

    let (changed, changed_bytes) = change_tree(&source, seed + 100);
    local.write("dest/extra.txt", b"only here");
    local.write("dest/extra-dir/inner.txt", b"only here too");
    let run = remote.run(&local, &["mirror", "--parallel", "4", &url, &dest]);
    run.ok().mirror_stderr(remote.checksums);
    let s = summary(&run);
    assert_eq!(
        (s.transferred, s.bytes, s.deleted),
        (changed, changed_bytes, 0),
        "{}",
        run.show()
    );
    for name in ["sub/a.bin", "many/f04.txt"] {
        assert_file(
            Path::new(&dest).join(name),
            &fs::read(source.join(name)).unwrap(),
        );
    }
    assert_file(local.file("dest/extra.txt"), b"only here");
    assert_file(local.file("dest/extra-dir/inner.txt"), b"only here too");

    let run = remote.run(&local, &["mirror", "--delete", &url, &dest]);
    run.ok().mirror_stderr(remote.checksums);
    let s = summary(&run);
    assert_eq!(s.transferred, 0, "{}", run.show());
    assert!((2..=3).contains(&s.deleted), "{}", run.show());
    assert_same_tree(Path::new(&dest), &source);
}

/// `ferry mirror --reverse DIR URL`: the whole tree (one at a time), nothing on a second run
/// (--parallel 4), then only the changed files (--parallel 4); extras on the server stay
/// without --delete and go with it.
pub(crate) fn mirror_upload(remote: &Remote, seed: u64) {
    let local = Local::new();
    let src = local.file("src");
    let (files, bytes) = plant_tree(Path::new(&src), seed);
    let target = remote.home.join("up");
    let url = remote.url("up");

    let run = remote.run(&local, &["mirror", "--reverse", &src, &url]);
    run.ok().mirror_stderr(remote.checksums);
    assert_same_tree(&target, Path::new(&src));
    assert_eq!(
        summary(&run),
        Summary {
            transferred: files,
            bytes,
            unchanged: 0,
            deleted: 0
        },
        "{}",
        run.show()
    );

    let run = remote.run(
        &local,
        &["mirror", "--reverse", "--parallel", "4", &src, &url],
    );
    run.ok().mirror_stderr(remote.checksums);
    assert_eq!(
        summary(&run),
        Summary {
            transferred: 0,
            bytes: 0,
            unchanged: files,
            deleted: 0
        },
        "second run:\n{}",
        run.show()
    );
    assert_same_tree(&target, Path::new(&src));

    let (changed, changed_bytes) = change_tree(Path::new(&src), seed + 100);
    fs::write(target.join("extra.txt"), b"only there").unwrap();
    fs::create_dir(target.join("extra-dir")).unwrap();
    fs::write(target.join("extra-dir/inner.txt"), b"only there too").unwrap();
    let run = remote.run(
        &local,
        &["mirror", "--reverse", "--parallel", "4", &src, &url],
    );
    run.ok().mirror_stderr(remote.checksums);
    let s = summary(&run);
    assert_eq!(
        (s.transferred, s.bytes, s.deleted),
        (changed, changed_bytes, 0),
        "{}",
        run.show()
    );
    for name in ["sub/a.bin", "many/f04.txt"] {
        assert_file(
            target.join(name),
            &fs::read(Path::new(&src).join(name)).unwrap(),
        );
    }
    assert_file(target.join("extra.txt"), b"only there");
    assert_file(target.join("extra-dir/inner.txt"), b"only there too");

    let run = remote.run(
        &local,
        &[
            "mirror",
            "--reverse",
            "--delete",
            "--parallel",
            "4",
            &src,
            &url,
        ],
    );
    run.ok().mirror_stderr(remote.checksums);
    let s = summary(&run);
    assert_eq!(s.transferred, 0, "{}", run.show());
    assert!((2..=3).contains(&s.deleted), "{}", run.show());
    assert_same_tree(&target, Path::new(&src));
}

/// The password from FERRY_PASSWORD, --password-stdin and ~/.netrc; which wins; a wrong one
/// fails with the server's 530 and is not echoed; a user without any password fails.
pub(crate) fn credentials(remote: &Remote) {
    let local = Local::new();
    let secret = b"only the logged-in user sees this";
    fs::write(remote.home.join("whoami.txt"), secret).unwrap();
    let bare = remote.url_without_password("whoami.txt");
    let pw = remote.password.as_str();
    let cat = |url: &str, env: &[(&str, &str)], stdin: Option<&str>, extra: &[&str]| {
        let mut args = vec!["cat"];
        args.extend_from_slice(extra);
        args.push(url);
        local.run_with(&remote.args(&args), env, stdin)
    };
    let check = |run: Run| {
        run.ok();
        assert_eq!(run.stdout, secret, "{}", run.show());
    };

    check(cat(&bare, &[("FERRY_PASSWORD", pw)], None, &[]));
    // --password-stdin reads the first line and wins over FERRY_PASSWORD.
    check(cat(
        &bare,
        &[("FERRY_PASSWORD", "not-it")],
        Some(&format!("{pw}\nsecond line\n")),
        &["--password-stdin"],
    ));
    // The URL's password wins over both.
    check(cat(
        &remote.url("whoami.txt"),
        &[("FERRY_PASSWORD", "not-it")],
        None,
        &[],
    ));

    // ~/.netrc (HOME is the client directory): with no user in the URL, and with one.
    let host = remote.host_port.rsplit_once(':').unwrap().0;
    local.write(
        ".netrc",
        format!(
            "machine elsewhere.invalid login nobody password nothing\n\
             machine {host} login {} password {pw}\n",
            remote.user
        )
        .as_bytes(),
    );
    check(cat(&remote.url_anonymous("whoami.txt"), &[], None, &[]));
    check(cat(&bare, &[], None, &[]));
    fs::remove_file(local.file(".netrc")).unwrap();

    // Wrong passwords: the server's 530, exit 1, and the password is not repeated.
    let wrong = "Wr0ng-Pa55";
    let url = format!(
        "{}://{}:{wrong}@{}/whoami.txt",
        remote.scheme, remote.user, remote.host_port
    );
    for run in [
        cat(&url, &[], None, &[]),
        cat(&bare, &[("FERRY_PASSWORD", wrong)], None, &[]),
        cat(
            &bare,
            &[],
            Some(&format!("{wrong}\n")),
            &["--password-stdin"],
        ),
    ] {
        run.fails(1, "530");
        assert!(run.stdout.is_empty(), "{}", run.show());
        assert!(
            !run.stderr.contains(wrong),
            "password shown:\n{}",
            run.show()
        );
    }
    // A user but no password anywhere, and stdin is no terminal: say how to give one.
    cat(&bare, &[], None, &[]).fails(1, "no password for");
}

/// Piped stderr gets no bar; on a terminal a bar with byte counters appears; --quiet there
/// shows nothing.
pub(crate) fn progress(remote: &Remote, seed: u64) {
    let local = Local::new();
    let data = random_bytes(32 << 20, seed);
    fs::write(remote.home.join("bar.bin"), &data).unwrap();
    let url = remote.url("bar.bin");

    let dst = local.file("piped.bin");
    let run = remote.run(&local, &["get", &url, &dst]);
    run.ok().quiet_stderr(!remote.checksums);
    for needle in ["\r", "\x1b", "MiB", "=>"] {
        assert!(!run.stderr.contains(needle), "{needle:?}:\n{}", run.show());
    }
    assert_file(&dst, &data);

    let dst = local.file("tty.bin");
    let run = local.run_on_tty(&remote.args(&["get", &url, &dst]));
    run.ok();
    let shown = run.text();
    assert!(
        shown.contains("MiB") && shown.contains('/') && shown.contains("bar.bin"),
        "no progress bar on the terminal:\n{}",
        run.show()
    );
    assert_file(&dst, &data);

    // mirror draws its bars there too (piped, the mirror tests see none).
    let dst = local.file("mirrored");
    let run = local.run_on_tty(&remote.args(&["mirror", &remote.url(""), &dst]));
    run.ok();
    let shown = run.text();
    assert!(
        shown.contains("MiB") && shown.contains('/') && shown.contains("bar.bin"),
        "no progress bar on the terminal:\n{}",
        run.show()
    );
    assert_same_tree(Path::new(&dst), &remote.home);

    let dst = local.file("quiet.bin");
    let run = local.run_on_tty(&remote.args(&["get", "--quiet", &url, &dst]));
    run.ok();
    let shown = run.text();
    assert!(
        !shown.contains("MiB") && !shown.contains(NOT_VERIFIED),
        "--quiet showed something:\n{}",
        run.show()
    );
    assert_file(&dst, &data);
}

// ---------------------------------------------------------------------------------------------
// Against ferry.

/// alice on `server`'s first listener, plain FTP.
fn plain(server: &TestServer) -> Remote {
    Remote {
        scheme: "ftp",
        host_port: server.addr().to_string(),
        user: "alice".into(),
        password: "alice-pw".into(),
        home: server.home("alice"),
        flags: Vec::new(),
        checksums: true,
    }
}

/// A server with explicit and implicit FTPS, and alice reaching it with `scheme`.
fn tls_remote(server: &TestServer, scheme: &'static str) -> Remote {
    let host_port = match scheme {
        "ftps" => server.implicit_addr().to_string(),
        _ => server.addr().to_string(),
    };
    Remote {
        scheme,
        host_port,
        flags: vec![
            "--cacert".into(),
            server.cert_path().to_str().unwrap().to_owned(),
        ],
        ..plain(server)
    }
}

fn tls_server() -> TestServer {
    TestServer::builder()
        .user("alice", "alice-pw")
        .implicit_tls()
        .start()
}

#[test]
fn file_commands_round_trip_over_plain_ftp() {
    let server = TestServer::start();
    file_commands_round_trip(&plain(&server), 101);
}

#[test]
fn file_commands_round_trip_in_active_mode() {
    let server = TestServer::start();
    file_commands_round_trip(&plain(&server).with_flag("--active"), 102);
}

#[test]
fn file_commands_round_trip_over_ftpes_with_cacert() {
    let server = tls_server();
    file_commands_round_trip(&tls_remote(&server, "ftpes"), 103);
}

#[test]
fn file_commands_round_trip_over_ftp_with_tls_flag_in_active_mode() {
    let server = tls_server();
    let remote = tls_remote(&server, "ftp")
        .with_flag("--tls")
        .with_flag("--active");
    file_commands_round_trip(&remote, 104);
}

#[test]
fn file_commands_round_trip_over_implicit_ftps_with_cacert() {
    let server = tls_server();
    file_commands_round_trip(&tls_remote(&server, "ftps"), 105);
}

#[test]
fn file_commands_round_trip_over_ipv6_passive_and_active() {
    for (flags, seed) in [(&[][..], 106), (&["--active"][..], 107)] {
        let server = TestServer::builder()
            .user("alice", "alice-pw")
            .listen("[::1]:0")
            .start();
        let remote = Remote {
            host_port: server.addr().to_string(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..plain(&server)
        };
        assert!(remote.host_port.starts_with("[::1]:"), "{remote:?}");
        file_commands_round_trip(&remote, seed);
    }
}

#[test]
fn put_of_a_directory_is_refused_and_leaves_nothing() {
    let server = TestServer::start();
    put_of_a_directory_is_refused(&plain(&server));
}

#[test]
fn an_untrusted_certificate_fails_unless_insecure() {
    let server = tls_server();
    let local = Local::new();
    fs::write(server.home("alice").join("f.txt"), b"hello").unwrap();
    for scheme in ["ftpes", "ftps"] {
        let remote = Remote {
            flags: Vec::new(),
            ..tls_remote(&server, scheme)
        };
        let run = remote.run(&local, &["cat", &remote.url("f.txt")]);
        assert_eq!(run.code, Some(1), "{}", run.show());
        assert!(
            run.stderr.to_lowercase().contains("certificate"),
            "{}",
            run.show()
        );
        assert!(run.stdout.is_empty(), "{}", run.show());
        let run = remote.run(&local, &["cat", "--insecure", &remote.url("f.txt")]);
        assert_eq!(run.ok().stdout, b"hello", "{}", run.show());
    }
    // A plain ftp:// URL with --tls and no trust also refuses.
    let remote = Remote {
        flags: vec!["--tls".into()],
        ..tls_remote(&server, "ftp")
    };
    let run = remote.run(&local, &["cat", &remote.url("f.txt")]);
    assert_eq!(run.code, Some(1), "{}", run.show());
}

#[test]
fn download_resumes_from_random_cuts() {
    let server = TestServer::start();
    download_resume(&plain(&server), 111);
}

#[test]
fn upload_resumes_from_random_cuts() {
    let server = TestServer::start();
    upload_resume(&plain(&server), 112, Plant::OnDisk);
}

#[test]
fn download_resumes_over_ftpes() {
    let server = tls_server();
    download_resume(&tls_remote(&server, "ftpes"), 113);
}

#[test]
fn a_file_changed_on_the_server_during_get_fails_verification_and_keeps_the_part() {
    let server = TestServer::start();
    let remote = plain(&server);
    let local = Local::new();
    let data = random_bytes(64 << 20, 121);
    let other = random_bytes(1 << 20, 122);
    let served = remote.home.join("big.bin");
    let url = remote.url("big.bin");
    // The change must land after the first MiB left the server and before the server hashes
    // the file; a machine that stalls this test for the whole transfer makes a try
    // inconclusive, so a few are allowed.
    for attempt in 0..3 {
        fs::write(&served, &data).unwrap();
        let dst = local.file(&format!("big-{attempt}.bin"));
        let part = format!("{dst}.part");
        let mut child = local
            .command(&remote.args(&["get", &url, &dst]), &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + RUN_LIMIT;
        let decisive = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(Instant::now() < deadline, "get did not progress");
            let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if have >= 2 << 20 {
                let mut file = fs::OpenOptions::new().write(true).open(&served).unwrap();
                file.write_all(&other).unwrap();
                file.sync_all().unwrap();
                drop(file);
                // Still short: the client had not finished, so it had not asked for the hash.
                let now = fs::metadata(&part).map(|m| m.len()).unwrap_or(u64::MAX);
                break now < data.len() as u64;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let out = child.wait_with_output().unwrap();
        let run = Run {
            line: format!("ferry get {url} {dst}"),
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !decisive {
            continue;
        }
        run.fails(1, "checksum mismatch");
        assert!(run.stderr.contains("big.bin"), "{}", run.show());
        assert_absent(&dst);
        assert_file(&part, &data);
        return;
    }
    panic!("three tries finished before the file could be changed");
}

#[test]
fn transfers_from_ferry_are_verified_silently() {
    // ferry offers HASH: no "not verified" note, nothing at all on stderr.
    let server = TestServer::start();
    let remote = plain(&server);
    let local = Local::new();
    let data = random_bytes(100_000, 131);
    let src = local.write("v.bin", &data);
    remote
        .run(&local, &["put", &src, &remote.url("v.bin")])
        .ok()
        .quiet_stderr(false);
    remote
        .run(
            &local,
            &["get", &remote.url("v.bin"), &local.file("back.bin")],
        )
        .ok()
        .quiet_stderr(false);
    assert_file(local.file("back.bin"), &data);
}

#[test]
fn segmented_get_gives_identical_bytes() {
    let server = TestServer::start();
    segmented_get(&plain(&server), 141);
}

#[test]
fn segmented_get_over_ftpes_gives_identical_bytes() {
    let server = tls_server();
    segmented_get(&tls_remote(&server, "ftpes"), 142);
}

#[test]
fn mirror_downloads_a_tree_then_only_changes() {
    let server = TestServer::start();
    mirror_download(&plain(&server), 151);
}

#[test]
fn mirror_reverse_uploads_a_tree_then_only_changes() {
    let server = TestServer::start();
    mirror_upload(&plain(&server), 152);
}

#[test]
fn mirror_over_ftpes_in_parallel() {
    let server = tls_server();
    mirror_download(&tls_remote(&server, "ftpes"), 153);
}

/// Rewrites `path` with other bytes of the same size and puts its modification time back.
fn change_keeping_size_and_time(path: &Path, seed: u64) {
    let len = fs::metadata(path).unwrap().len() as usize;
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    fs::write(path, random_bytes(len, seed)).unwrap();
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn mirror_checksum_finds_changes_that_keep_size_and_time() {
    let server = TestServer::start();
    let remote = plain(&server);
    let local = Local::new();
    let source = remote.home.join("tree");
    plant_tree(&source, 161);
    let dest = local.file("dest");
    let url = remote.url("tree/");
    remote.run(&local, &["mirror", &url, &dest]).ok();
    assert_same_tree(Path::new(&dest), &source);

    change_keeping_size_and_time(&source.join("sub/a.bin"), 162);
    let run = remote.run(&local, &["mirror", "--checksum", &url, &dest]);
    run.ok();
    let s = summary(&run);
    assert_eq!((s.transferred, s.bytes), (1, 200_000), "{}", run.show());
    assert_same_tree(Path::new(&dest), &source);
    let run = remote.run(&local, &["mirror", "--checksum", &url, &dest]);
    assert_eq!(summary(run.ok()).transferred, 0, "{}", run.show());

    // Upwards too.
    change_keeping_size_and_time(&Path::new(&dest).join("top.txt"), 163);
    let run = remote.run(&local, &["mirror", "--reverse", "--checksum", &dest, &url]);
    run.ok();
    let s = summary(&run);
    assert_eq!((s.transferred, s.bytes), (1, 1000), "{}", run.show());
    assert_same_tree(&source, Path::new(&dest));
}

#[test]
fn credentials_come_from_env_stdin_and_netrc() {
    let server = TestServer::start();
    credentials(&plain(&server));
    // No user anywhere: anonymous, which this server refuses with 530.
    let remote = plain(&server);
    let local = Local::new();
    remote
        .run(&local, &["ls", &remote.url_anonymous("")])
        .fails(1, "530");
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let server = TestServer::start();
    progress(&plain(&server), 171);
}

#[test]
fn usage_errors_exit_2() {
    let local = Local::new();
    let run = |args: &[&str]| {
        local.run_with(
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[],
            None,
        )
    };
    run(&["ls", "--bogus", "ftp://127.0.0.1:21/"]).fails(2, "--bogus");
    run(&["get"]).fails(2, "URL");
    run(&["put", "only-one-arg"]).fails(2, "URL");
    run(&["mv", "ftp://127.0.0.1:21/a"]).fails(2, "Usage");
    run(&["get", "--timeout", "soon", "ftp://127.0.0.1:21/a"]).fails(2, "--timeout");
}

#[test]
fn a_malformed_url_is_a_usage_error() {
    let local = Local::new();
    for url in [
        "not-a-url",
        "http://127.0.0.1/file",
        "ftp://127.0.0.1:99999/",
    ] {
        let run = local.run_with(&["ls".to_string(), url.to_string()], &[], None);
        run.fails(2, url);
    }
}

#[test]
fn unreachable_and_silent_servers_fail_with_exit_1() {
    let local = Local::new();
    // Nobody listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = local.run_with(
        &["ls".into(), format!("ftp://u:p@127.0.0.1:{port}/")],
        &[],
        None,
    );
    run.fails(1, "refused");
    // A server that accepts (the backlog does) but never greets: --timeout gives up.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let run = local.run_with(
        &[
            "ls".into(),
            format!("ftp://u:p@{}/", silent.local_addr().unwrap()),
            "--timeout".into(),
            "1".into(),
        ],
        &[],
        None,
    );
    run.fails(1, "timed out");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{}",
        run.show()
    );
}
