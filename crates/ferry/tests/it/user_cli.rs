//! `ferry user ...` run as a process: exit codes, output, and users.toml on disk.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ferry_server::users::{Password, UserDb, verify_password};
use tempfile::TempDir;

/// Runs `ferry user ARGS --data DATA`, feeding `stdin` (never a terminal).
fn ferry_user(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("user").args(args).arg("--data").arg(data);
    run(cmd.env_remove("FERRY_DATA"), stdin)
}

/// Runs `cmd` with `stdin` piped in, collecting its output.
fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // The child may exit without reading (usage errors), which breaks the pipe: not a failure.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn add(data: &Path, name: &str, password: &str) -> Output {
    ferry_user(
        data,
        &["add", name, "--password-stdin"],
        &format!("{password}\n"),
    )
}

fn users_toml(data: &Path) -> String {
    fs::read_to_string(data.join("users.toml")).unwrap()
}

/// The PHC string stored for `name`.
fn stored_hash(data: &Path, name: &str) -> String {
    let db = UserDb::load(&data.join("users.toml")).unwrap();
    db.get(name).unwrap().password.clone()
}

fn password(s: &str) -> Password {
    Password::new(s.to_owned())
}

#[test]
fn add_then_list_and_show_without_the_hash() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "s3cret"), 0);
    let out = ferry_user(
        data.path(),
        &["add", "bob", "--read-only", "--password-stdin"],
        "pw\n",
    );
    assert_exit(&out, 0);

    let list = ferry_user(data.path(), &["list"], "");
    assert_exit(&list, 0);
    let text = stdout(&list);
    // Neither account has logged in yet, so usage is unknown and a note says how to get it.
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('(')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(text.contains("ferry user rescan"), "{text}");
    assert!(
        lines[1].starts_with("alice") && lines[1].contains(" no "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("bob") && lines[2].contains(" yes "),
        "{text}"
    );
    let alice_home = data.path().join("home/alice");
    assert!(lines[1].ends_with(&*alice_home.to_string_lossy()), "{text}");

    let show = ferry_user(data.path(), &["show", "alice"], "");
    assert_exit(&show, 0);
    let text = stdout(&show);
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains(&*alice_home.to_string_lossy()), "{text}");
    assert!(text.contains("read-only: no"), "{text}");

    for out in [&list, &show] {
        assert!(!stdout(out).contains("argon2"), "{}", stdout(out));
    }
    assert!(alice_home.is_dir());
    assert!(data.path().join("home/bob").is_dir());
}

#[test]
fn users_toml_holds_an_argon2id_phc_string_that_verifies() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "s3cret"), 0);
    let toml = users_toml(data.path());
    assert!(toml.contains("[users.alice]"), "{toml}");
    assert!(!toml.contains("s3cret"), "{toml}");
    let hash = stored_hash(data.path(), "alice");
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(verify_password(&hash, &password("s3cret")));
}

#[test]
fn add_with_home_stores_it_and_creates_it() {
    let data = TempDir::new().unwrap();
    let elsewhere = TempDir::new().unwrap();
    let home = elsewhere.path().join("alice-files");
    let out = ferry_user(
        data.path(),
        &[
            "add",
            "alice",
            "--home",
            home.to_str().unwrap(),
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_exit(&out, 0);
    assert!(home.is_dir());
    let show = stdout(&ferry_user(data.path(), &["show", "alice"], ""));
    assert!(show.contains(&*home.to_string_lossy()), "{show}");
}

#[test]
fn duplicate_add_fails_and_keeps_the_first_password() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "first"), 0);
    let out = add(data.path(), "alice", "second");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(verify_password(
        &stored_hash(data.path(), "alice"),
        &password("first")
    ));
}

#[test]
fn passwd_replaces_the_hash() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "old"), 0);
    let before = stored_hash(data.path(), "alice");

    let out = ferry_user(
        data.path(),
        &["passwd", "alice", "--password-stdin"],
        "new\r\n",
    );
    assert_exit(&out, 0);

    let after = stored_hash(data.path(), "alice");
    assert_ne!(before, after);
    assert!(verify_password(&after, &password("new")));
    assert!(!verify_password(&after, &password("old")));
}

#[test]
fn del_removes_the_entry_and_keeps_the_home() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "pw"), 0);
    assert_exit(&add(data.path(), "bob", "pw"), 0);
    let home = data.path().join("home/alice");
    fs::write(home.join("keep.txt"), "data").unwrap();

    let out = ferry_user(data.path(), &["del", "alice"], "");
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("kept home directory"),
        "{}",
        stdout(&out)
    );

    assert!(home.join("keep.txt").is_file());
    let toml = users_toml(data.path());
    assert!(!toml.contains("alice"), "{toml}");
    assert!(toml.contains("[users.bob]"), "{toml}");
}

#[test]
fn unknown_user_fails_for_passwd_del_and_show() {
    let data = TempDir::new().unwrap();
    assert_exit(&add(data.path(), "alice", "pw"), 0);
    for args in [
        &["passwd", "nobody", "--password-stdin"][..],
        &["del", "nobody"],
        &["show", "nobody"],
    ] {
        let out = ferry_user(data.path(), args, "pw\n");
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("no such user"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_name_is_a_usage_error() {
    let data = TempDir::new().unwrap();
    // "-rf" reaches clap as a flag rather than a name; still a usage error.
    for name in ["-rf", ".hidden", "a/b", "with space", "", &"a".repeat(33)] {
        let out = ferry_user(data.path(), &["add", name, "--password-stdin"], "pw\n");
        assert_exit(&out, 2);
    }
    let out = ferry_user(data.path(), &["add", "a/b", "--password-stdin"], "pw\n");
    let message = stderr(&out);
    assert!(message.contains("invalid value 'a/b'"), "{message}");
    assert!(message.contains("may contain only"), "{message}");
    assert!(!data.path().join("users.toml").exists());
}

#[test]
fn without_a_terminal_the_password_must_come_from_stdin() {
    let data = TempDir::new().unwrap();
    let out = ferry_user(data.path(), &["add", "alice"], "pw\n");
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
    assert!(!data.path().join("users.toml").exists());
}

#[test]
fn empty_password_on_stdin_is_refused() {
    let data = TempDir::new().unwrap();
    let out = add(data.path(), "alice", "");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("empty password"), "{}", stderr(&out));
}

#[test]
fn list_of_an_empty_data_dir_prints_only_the_header() {
    let data = TempDir::new().unwrap();
    let out = ferry_user(data.path(), &["list"], "");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn data_dir_comes_from_ferry_data() {
    let data = TempDir::new().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["user", "add", "alice", "--password-stdin"]);
    let out = run(cmd.env("FERRY_DATA", data.path()), "pw\n");
    assert_exit(&out, 0);
    assert!(data.path().join("users.toml").is_file());
}
