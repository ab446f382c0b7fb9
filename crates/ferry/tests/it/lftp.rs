//! lftp as a child process against the in-process server: file commands, mirror both ways,
//! resume in both directions, active mode and both passive commands. lftp runs with
//! `cmd:fail-exit` so any failing command fails the script, and with `-d` so the commands it
//! sent can be checked in its debug transcript.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;
use testkit::{TestServer, random_bytes};

/// What one lftp run printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    /// With `-d`: the protocol transcript (`---> CMD`, `<--- reply`).
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "lftp failed:\n{}", self.show());
    }

    /// The commands lftp sent.
    fn sent(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("---> "))
            .collect()
    }

    /// True when a sent command starts with `prefix`.
    fn sent_any(&self, prefix: &str) -> bool {
        self.sent().iter().any(|c| c.starts_with(prefix))
    }
}

/// Runs `script` in lftp logged in as `user`, with `settings` applied before `open`. Fails
/// loudly when lftp is missing: the interop suite must not pass without it.
fn lftp_with(server: &TestServer, user: &str, settings: &str, script: &str) -> Run {
    let password = &server
        .users
        .iter()
        .find(|u| u.name == user)
        .unwrap()
        .password;
    let commands = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; \
         set net:reconnect-interval-base 1; set ftp:passive-mode on; {settings}; \
         open -u {user},{password} ftp://{}; {script}",
        server.addr()
    );
    // A private HOME: no rc files, bookmarks or history from the machine leak in or out.
    let home = TempDir::new().unwrap();
    let run = super::ftps::run(
        Command::new("lftp")
            .args(["--norc", "-d", "-c", &commands])
            .env("HOME", home.path()),
        "lftp is not installed; run scripts/test, which installs the FTP clients the interop \
         tests drive",
    );
    Run {
        code: run.code,
        stdout: run.stdout,
        stderr: run.stderr,
    }
}

/// Runs `script` as alice in passive mode with lftp's defaults.
fn lftp(server: &TestServer, script: &str) -> Run {
    lftp_with(server, "alice", "", script)
}

/// A path for an lftp script, quoted.
fn q(path: &Path) -> String {
    let s = path.to_str().unwrap();
    assert!(!s.contains('"'), "{s}");
    format!("\"{s}\"")
}

#[track_caller]
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "size of {what}");
    assert!(actual == expected, "bytes of {what} differ");
}

#[test]
fn ls_put_get_mkdir_cd_mv_rm_rmdir() {
    let server = TestServer::start();
    let home = server.home("alice");
    let local = TempDir::new().unwrap();
    let data = random_bytes(1 << 20, 11);
    let src = local.path().join("src.bin");
    fs::write(&src, &data).unwrap();
    fs::write(home.join("existing.txt"), b"I was here first").unwrap();

    let run = lftp(
        &server,
        &format!("ls; mkdir work; cd work; put {} -o big.bin; ls", q(&src)),
    );
    run.assert_success();
    let mut listings = run.stdout.lines();
    let first = listings.next().unwrap_or_default();
    assert!(
        first.starts_with('-') && first.ends_with(" existing.txt"),
        "{}",
        run.show()
    );
    let second: Vec<&str> = listings.collect();
    assert!(
        second.len() == 1 && second[0].ends_with(" big.bin") && second[0].contains(" 1048576 "),
        "{}",
        run.show()
    );
    assert!(run.sent_any("MKD work"), "{}", run.show());
    assert!(run.sent_any("CWD /work"), "{}", run.show());
    assert!(home.join("work").is_dir());
    assert_same_bytes(
        &fs::read(home.join("work/big.bin")).unwrap(),
        &data,
        "uploaded work/big.bin",
    );

    let dst = local.path().join("dst.bin");
    let run = lftp(
        &server,
        &format!(
            "cd work; get big.bin -o {}; mv big.bin renamed.bin",
            q(&dst)
        ),
    );
    run.assert_success();
    assert_same_bytes(&fs::read(&dst).unwrap(), &data, "downloaded big.bin");
    assert!(run.sent_any("RNFR big.bin"), "{}", run.show());
    assert!(!home.join("work/big.bin").exists());
    assert_same_bytes(
        &fs::read(home.join("work/renamed.bin")).unwrap(),
        &data,
        "renamed file",
    );

    // rmdir of a directory that still has a file fails; after rm it succeeds.
    let run = lftp(&server, "rmdir work");
    assert_ne!(run.code, Some(0), "{}", run.show());
    assert!(home.join("work/renamed.bin").exists());
    let run = lftp(&server, "rm work/renamed.bin; rmdir work; ls");
    run.assert_success();
    assert!(!home.join("work").exists());
    assert!(home.join("existing.txt").exists());
    assert!(!run.stdout.contains("work"), "{}", run.show());
}

/// Every file (with its bytes) and directory under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
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

#[track_caller]
fn assert_same_tree(actual: &Path, expected: &Path) {
    let (a, e) = (tree(actual), tree(expected));
    let names = |t: &BTreeMap<String, Option<Vec<u8>>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&e),
        "{} vs {}",
        actual.display(),
        expected.display()
    );
    for (name, bytes) in &e {
        assert!(a[name] == *bytes, "{name} differs in {}", actual.display());
    }
}

#[test]
fn mirror_up_then_down_reproduces_the_tree() {
    let server = TestServer::start();
    let local = TempDir::new().unwrap();
    let src = local.path().join("tree");
    let dirs = [
        "",
        "docs",
        "docs/old",
        "src",
        "src/deep",
        "src/deep/er",
        "empty",
    ];
    for dir in dirs {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    for i in 0..20u64 {
        let dir = dirs[(i as usize) % 6];
        let len = match i {
            0 => 0,
            1 => 1,
            _ => (i as usize * 7919) % 150_000,
        };
        fs::write(
            src.join(dir).join(format!("file-{i:02}.dat")),
            random_bytes(len, 100 + i),
        )
        .unwrap();
    }
    assert_eq!(
        tree(&src).values().filter(|v| v.is_some()).count(),
        20,
        "fixture"
    );

    let run = lftp(&server, &format!("mirror -R {} remote", q(&src)));
    run.assert_success();
    assert_same_tree(&server.home("alice").join("remote"), &src);

    let back = local.path().join("back");
    let run = lftp(&server, &format!("mirror remote {}", q(&back)));
    run.assert_success();
    assert_same_tree(&back, &src);
}

#[test]
fn get_continue_resumes_a_partial_download() {
    let server = TestServer::start();
    let data = random_bytes(2 << 20, 12);
    fs::write(server.home("alice").join("big.bin"), &data).unwrap();
    let local = TempDir::new().unwrap();
    let dst = local.path().join("big.bin");
    let have = 700_001;
    fs::write(&dst, &data[..have]).unwrap();

    let run = lftp(&server, &format!("get -c big.bin -o {}", q(&dst)));
    run.assert_success();
    assert!(run.sent_any(&format!("REST {have}")), "{}", run.show());
    assert!(run.sent_any("RETR big.bin"), "{}", run.show());
    assert_same_bytes(&fs::read(&dst).unwrap(), &data, "resumed download");
}

#[test]
fn put_continue_and_reput_complete_partial_uploads() {
    let server = TestServer::start();
    let home = server.home("alice");
    let local = TempDir::new().unwrap();
    let data = random_bytes(2 << 20, 13);
    let src = local.path().join("src.bin");
    fs::write(&src, &data).unwrap();

    for (cmd, name, have) in [("put -c", "a.bin", 333_333), ("reput", "b.bin", 1_500_000)] {
        fs::write(home.join(name), &data[..have]).unwrap();
        let run = lftp(&server, &format!("{cmd} {} -o {name}", q(&src)));
        run.assert_success();
        // lftp resumes with SIZE, then REST + STOR.
        assert!(run.sent_any(&format!("SIZE {name}")), "{}", run.show());
        assert!(run.sent_any(&format!("REST {have}")), "{}", run.show());
        assert!(
            run.stderr
                .contains(&format!("({} bytes)", data.len() - have)),
            "only the rest should travel:\n{}",
            run.show()
        );
        assert_same_bytes(&fs::read(home.join(name)).unwrap(), &data, cmd);
    }
}

#[test]
fn active_mode_get_and_put() {
    let server = TestServer::start();
    let data = random_bytes(1 << 20, 14);
    fs::write(server.home("alice").join("active.bin"), &data).unwrap();
    let local = TempDir::new().unwrap();
    let dst = local.path().join("active.bin");

    let run = lftp_with(
        &server,
        "alice",
        "set ftp:passive-mode off",
        &format!("get active.bin -o {}; put {} -o copy.bin", q(&dst), q(&dst)),
    );
    run.assert_success();
    assert!(
        run.sent_any("PORT ") || run.sent_any("EPRT "),
        "{}",
        run.show()
    );
    assert!(
        !run.sent_any("PASV") && !run.sent_any("EPSV"),
        "{}",
        run.show()
    );
    assert_same_bytes(&fs::read(&dst).unwrap(), &data, "active download");
    assert_same_bytes(
        &fs::read(server.home("alice").join("copy.bin")).unwrap(),
        &data,
        "active upload",
    );
}

#[test]
fn passive_with_and_without_prefer_epsv() {
    let server = TestServer::start();
    let data = random_bytes(300_000, 15);
    fs::write(server.home("alice").join("p.bin"), &data).unwrap();
    let local = TempDir::new().unwrap();

    for (prefer, used, unused) in [("yes", "EPSV", "PASV"), ("no", "PASV", "EPSV")] {
        let dst = local.path().join(format!("p-{prefer}.bin"));
        let run = lftp_with(
            &server,
            "alice",
            &format!("set ftp:prefer-epsv {prefer}"),
            &format!("get p.bin -o {}; ls", q(&dst)),
        );
        run.assert_success();
        assert!(run.sent_any(used), "{}", run.show());
        assert!(!run.sent_any(unused), "{}", run.show());
        assert_same_bytes(&fs::read(&dst).unwrap(), &data, prefer);
        assert!(run.stdout.contains(" p.bin"), "{}", run.show());
    }
}
