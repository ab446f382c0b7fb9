//! Confinement: whatever path a client sends, nothing outside its home is read, listed,
//! created, changed, renamed or deleted, and symlinks that lead out are refused and not shown,
//! even when they are swapped in while a transfer resolves its path.
//!
//! Every test plants marker files outside alice's home (in the data directory above `home/`,
//! in `home/` itself, in bob's home and in an unrelated temporary directory), drives alice's
//! session with hostile paths, and then compares a snapshot of everything outside her home
//! with the one taken before.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use testkit::TestServer;

use super::raw::{Raw, Reply};

const SECRET_DATA: &[u8] = b"TOP-SECRET in the data directory";
const SECRET_HOMES: &[u8] = b"TOP-SECRET next to the home directories";
const SECRET_OUTSIDE: &[u8] = b"TOP-SECRET in an unrelated directory";
const VICTIM: &[u8] = b"bob's victim file, hands off";
const VICTIM_INNER: &[u8] = b"bob's inner file, hands off";
const ALICE_A: &[u8] = b"alice's own a.txt";
const PAYLOAD: &[u8] = b"PWNED-BY-ALICE";

/// Byte strings that must never reach alice: the markers and the password hashes.
const NEVER_SEEN: &[&[u8]] = &[
    SECRET_DATA,
    SECRET_HOMES,
    SECRET_OUTSIDE,
    VICTIM,
    VICTIM_INNER,
    b"argon2",
    b"TOP-SECRET",
];

/// One file-system entry, as far as confinement is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything under `root` except the subtree `skip`, by path.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(path.clone(), Node::Link(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(path.clone(), Node::Dir);
                walk(&path, skip, out);
            } else {
                out.insert(path.clone(), Node::File(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// Paths that differ between two snapshots, for failure messages.
fn changes(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let keys: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| match (before.get(k), after.get(k)) {
            (None, Some(_)) => format!("created {}", k.display()),
            (Some(_), None) => format!("removed {}", k.display()),
            _ => format!("changed {}", k.display()),
        })
        .collect()
}

/// (device, inode) of `root` and everything under it, not following symlinks.
fn inodes(root: &Path) -> BTreeSet<(u64, u64)> {
    let mut out = BTreeSet::new();
    let meta = fs::symlink_metadata(root).unwrap();
    out.insert((meta.dev(), meta.ino()));
    if meta.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            out.extend(inodes(&entry.unwrap().path()));
        }
    }
    out
}

/// A server with marker files everywhere outside alice's home.
struct Jail {
    server: TestServer,
    outside: TempDir,
}

impl Jail {
    fn new() -> Jail {
        let server = TestServer::start();
        let data = server.data.path();
        fs::write(data.join("secret.txt"), SECRET_DATA).unwrap();
        fs::write(data.join("home").join("secret.txt"), SECRET_HOMES).unwrap();
        let bob = server.home("bob");
        fs::write(bob.join("victim.txt"), VICTIM).unwrap();
        fs::create_dir(bob.join("dir")).unwrap();
        fs::write(bob.join("dir").join("inner.txt"), VICTIM_INNER).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.txt"), SECRET_OUTSIDE).unwrap();
        fs::create_dir(outside.path().join("sub")).unwrap();
        fs::write(outside.path().join("sub").join("inner.txt"), SECRET_OUTSIDE).unwrap();
        let alice = server.home("alice");
        fs::write(alice.join("a.txt"), ALICE_A).unwrap();
        fs::create_dir_all(alice.join("sub").join("deeper")).unwrap();
        Jail { server, outside }
    }

    fn alice(&self) -> PathBuf {
        self.server.home("alice")
    }

    /// Everything outside alice's home: the data directory and the unrelated directory.
    /// The server's own state files are left out: its running marker and alice's quota usage,
    /// which it writes as it pleases (anything else appearing under quota/ still counts).
    fn outside_state(&self) -> BTreeMap<PathBuf, Node> {
        let data = self.server.data.path();
        let mut all = snapshot(data, &self.alice());
        all.extend(snapshot(self.outside.path(), Path::new("/nonexistent")));
        let quota = data.join("quota");
        for own in [quota.join(".running"), quota.join("alice.toml")] {
            all.remove(&own);
        }
        if all.get(&quota) == Some(&Node::Dir) {
            all.remove(&quota);
        }
        all
    }

    /// Fails listing what changed outside alice's home since `before`.
    fn assert_outside_unchanged(&self, before: &BTreeMap<PathBuf, Node>) {
        let changed = changes(before, &self.outside_state());
        assert!(
            changed.is_empty(),
            "files outside alice's home changed: {changed:#?}"
        );
    }

    /// Inodes outside alice's home, which no listing or MLST may describe.
    fn outside_inodes(&self) -> BTreeSet<(u64, u64)> {
        let mut all = inodes(self.server.data.path());
        all.extend(inodes(self.outside.path()));
        for inside in inodes(&self.alice()) {
            all.remove(&inside);
        }
        all
    }

    /// Real paths a reply must never reveal.
    fn real_paths(&self) -> Vec<String> {
        vec![
            self.server.data.path().display().to_string(),
            self.outside.path().display().to_string(),
        ]
    }
}

/// Checks what alice received: no marker bytes, no real paths, no `unique` fact naming an
/// inode outside her home.
fn check_received(jail: &Jail, outside_inodes: &BTreeSet<(u64, u64)>, what: &str, bytes: &[u8]) {
    for marker in NEVER_SEEN {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == *marker),
            "{what}: received {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let text = String::from_utf8_lossy(bytes);
    for real in jail.real_paths() {
        assert!(
            !text.contains(&real),
            "{what}: real path revealed: {text:?}"
        );
    }
    for fact in text.split(';') {
        let Some(unique) = fact.trim().strip_prefix("unique=") else {
            continue;
        };
        let (dev, ino) = unique.split_once('g').unwrap();
        let id = (
            u64::from_str_radix(dev, 16).unwrap(),
            u64::from_str_radix(ino, 16).unwrap(),
        );
        assert!(
            !outside_inodes.contains(&id),
            "{what}: describes a file outside the home: {text:?}"
        );
    }
}

/// The path in a 257 reply, with doubled quotes undone.
fn pwd_path(reply: &Reply) -> String {
    assert_eq!(reply.0, 257, "PWD: {reply:?}");
    let rest = reply.1.strip_prefix('"').expect("PWD path not quoted");
    let mut path = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
            } else {
                return path;
            }
        }
        path.push(ch);
    }
    panic!("unterminated PWD path: {reply:?}");
}

/// PWD shows a normalized path under "/" that names a directory inside alice's home.
async fn check_pwd(c: &mut Raw, jail: &Jail) -> String {
    let path = pwd_path(&c.cmd("PWD").await);
    assert!(path.starts_with('/'), "PWD {path:?}");
    assert!(
        path.split('/').all(|seg| seg != ".." && seg != "."),
        "PWD not normalized: {path:?}"
    );
    let on_disk = jail.alice().join(path.trim_start_matches('/'));
    let real = fs::canonicalize(&on_disk).unwrap();
    assert!(
        real.starts_with(fs::canonicalize(jail.alice()).unwrap()),
        "PWD {path:?} is {real:?}"
    );
    path
}

/// Hostile path arguments: lexical traversal, encodings other layers might decode, absolute
/// and real paths, other users' names, very long chains and invalid UTF-8.
fn traversal_paths(jail: &Jail) -> Vec<Vec<u8>> {
    let data = jail.server.data.path().display().to_string();
    let outside = jail.outside.path().display().to_string();
    let bob = jail.server.home("bob").display().to_string();
    let mut paths: Vec<String> = [
        "..",
        "../",
        "../..",
        "../../..",
        "/..",
        "/../..",
        "/../../../../../../..",
        "../secret.txt",
        "../../secret.txt",
        "../../../secret.txt",
        "/../../secret.txt",
        "sub/../../secret.txt",
        "sub/deeper/../../../../secret.txt",
        "./../secret.txt",
        "../users.toml",
        "../../users.toml",
        "../../quota/alice.toml",
        "../../quota/bob.toml",
        "../../quota/.running",
        "../../etc/passwd",
        "../../../../../../../../etc/passwd",
        "/etc/passwd",
        "/../../../../../../etc/passwd",
        "..\\..\\secret.txt",
        "..\\..\\..\\etc\\passwd",
        "\\..\\..\\secret.txt",
        "....//....//secret.txt",
        "...",
        ".../...",
        "..../secret.txt",
        "..;/secret.txt",
        "..;/..;/secret.txt",
        "%2e%2e/%2e%2e/secret.txt",
        "%2e%2e%2f%2e%2e%2fsecret.txt",
        "..%2f..%2fsecret.txt",
        "..%252f..%252fsecret.txt",
        "%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt",
        "\u{2025}/\u{2025}/secret.txt",
        "\u{ff0e}\u{ff0e}/\u{ff0e}\u{ff0e}/secret.txt",
        "..\u{2215}..\u{2215}secret.txt",
        "..\u{ff0f}..\u{ff0f}secret.txt",
        "~",
        "~/../secret.txt",
        "~bob/victim.txt",
        "~/../../bob/victim.txt",
        "../bob",
        "../bob/",
        "../bob/victim.txt",
        "./../bob/victim.txt",
        "/../bob/victim.txt",
        "../../home/bob/victim.txt",
        "/home/bob/victim.txt",
        "/home/bob",
        "../bob/dir/inner.txt",
        "sub/../../bob/dir",
        " ../secret.txt",
        "../secret.txt ",
        "C:\\Windows\\win.ini",
        "\\\\server\\share\\secret.txt",
        "file:///etc/passwd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    paths.push(format!("{}secret.txt", "../".repeat(1300)));
    paths.push(format!("{}..", "/".repeat(3900)));
    paths.push(format!("{}/secret.txt", data));
    paths.push(format!("{}/home/secret.txt", data));
    paths.push(format!("{}/users.toml", data));
    paths.push(format!("{}/victim.txt", bob));
    paths.push(format!("{}/secret.txt", outside));
    paths.push(format!("{}/sub", outside));
    paths.push(format!("../../..{}/secret.txt", outside));
    let mut paths: Vec<Vec<u8>> = paths.into_iter().map(String::into_bytes).collect();
    // Raw bytes: overlong UTF-8 dots and slashes, and other invalid UTF-8.
    paths.push(b"\xc0\xae\xc0\xae/\xc0\xae\xc0\xae/secret.txt".to_vec());
    paths.push(b"..\xc0\xaf..\xc0\xafsecret.txt".to_vec());
    paths.push(b"\xe0\x80\xae\xe0\x80\xae/secret.txt".to_vec());
    paths.push(b"..\xff/secret.txt".to_vec());
    paths.extend(encoded_traversals());
    paths.extend(odd_paths(jail).into_iter().map(String::into_bytes));
    // Distinct strings only, in a stable order.
    let mut seen = BTreeSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

/// Spellings of `..` that a decoding layer (URL, UTF-8, Unicode folding) might turn into
/// the real thing, as raw bytes (overlong UTF-8 is not valid UTF-8, so not a `str`).
const DOT_DOTS: &[&[u8]] = &[
    b"..",
    b"%2e%2e",
    b"%2E%2E",
    b".%2e",
    b"%2e.",
    b"%252e%252e",
    b"%25252e%25252e",
    b"%u002e%u002e",
    b"\xc0\xae\xc0\xae",
    b"\xe0\x80\xae\xe0\x80\xae",
    b"\xf0\x80\x80\xae\xf0\x80\x80\xae",
    b"%c0%ae%c0%ae",
    b"%e0%80%ae%e0%80%ae",
    "\u{ff0e}\u{ff0e}".as_bytes(),
    "\u{2024}\u{2024}".as_bytes(),
    "\u{fe52}\u{fe52}".as_bytes(),
    b"...",
    b"....",
];

/// Spellings of `/`, likewise.
const SLASHES: &[&[u8]] = &[b"/", b"\\", b"%2f", b"%5c", b"%252f", b"\xc0\xaf", b"//"];

/// Every `..` spelling with every separator, climbing to the data directory's marker or over
/// to bob's home; and each spelling as a trailing component and before a NUL.
fn encoded_traversals() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, dots) in DOT_DOTS.iter().enumerate() {
        for (j, slash) in SLASHES.iter().enumerate() {
            let up = [*dots, *slash].concat();
            // Alternately two levels up to the data directory's marker and over to bob's.
            out.push(if (i + j) % 2 == 0 {
                [up.repeat(2), b"secret.txt".to_vec()].concat()
            } else {
                [&up[..], b"bob", slash, b"victim.txt"].concat()
            });
        }
        // A trailing `..` and a NUL after the dots.
        out.push([*dots, b"/", *dots].concat());
        out.push([*dots, b"\0/secret.txt"].concat());
    }
    out
}

/// Absolute paths into the system, names at and over the length limits, and paths through
/// the symlinks [`plant_links`] puts in alice's home (intermediate directories that lead out).
fn odd_paths(jail: &Jail) -> Vec<String> {
    let data = jail.server.data.path().display().to_string();
    let mut out: Vec<String> = [
        "//etc/passwd",
        "///..//..//secret.txt",
        "/./../.././secret.txt",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/self/cwd/secret.txt",
        "/proc/self/root/etc/passwd",
        "/dev/zero",
        "C:secret.txt",
        "..\\",
        "\\\\?\\C:\\secret.txt",
        "ftp://127.0.0.1/../secret.txt",
        ". ./secret.txt",
        ".. /secret.txt",
        "out_dir/secret.txt",
        "/out_dir/sub/inner.txt",
        "out_dir/../out_dir/secret.txt",
        "top/secret.txt",
        "/top/users.toml",
        "up/secret.txt",
        "up/bob/victim.txt",
        "/up/bob/dir/inner.txt",
        "bobs/victim.txt",
        "/bobs/dir/inner.txt",
        "bob_victim/../victim.txt",
        "sub/deeper/escape/victim.txt",
        "/sub/deeper/escape/dir/inner.txt",
        "escape/victim.txt",
        "in_dir/../../secret.txt",
        "in_dir/deeper/escape/victim.txt",
        "root/etc/passwd",
        "loop_a/secret.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.push(format!("/proc/self/root{data}/secret.txt"));
    out.push("n".repeat(255));
    out.push("n".repeat(256));
    out.push("n".repeat(4000));
    out.push(format!("../{}", "n".repeat(255)));
    out.push(format!("{}/../../secret.txt", "n".repeat(255)));
    out.push(format!("{}secret.txt", "d/".repeat(1995)));
    out.push(format!("{}/secret.txt", "..".repeat(1990)));
    out
}

/// Commands answering about a path on the control connection.
const INFO_VERBS: &[&str] = &["SIZE", "MDTM", "MLST", "STAT"];

/// Checksum commands: a checksum of a file outside the home leaks it as surely as RETR.
const CHECKSUM_VERBS: &[&str] = &["HASH", "XSHA256", "XSHA1", "XMD5", "XCRC", "MD5", "MMD5"];

/// Sends every path-taking command with `path`, from the directory `base`.
async fn attack(c: &mut Raw, jail: &Jail, ids: &BTreeSet<(u64, u64)>, base: &str, path: &[u8]) {
    let show = String::from_utf8_lossy(path)
        .chars()
        .take(80)
        .collect::<String>();
    let with = |verb: &str| [verb.as_bytes(), b" ", path].concat();
    let check = |what: &str, r: &Reply| {
        check_received(jail, ids, &format!("{what} {show:?}"), r.1.as_bytes());
    };

    let r = c.cmd(with("CWD")).await;
    check("CWD", &r);
    if r.0 == 250 {
        check_pwd(c, jail).await;
        let t = c.transfer("MLSD", None).await;
        check_received(jail, ids, &format!("MLSD after CWD {show:?}"), &t.data);
    }
    assert_eq!(c.cmd(format!("CWD {base}")).await.0, 250);

    for verb in INFO_VERBS.iter().chain(CHECKSUM_VERBS) {
        let r = c.cmd(with(verb)).await;
        check(verb, &r);
    }
    for verb in ["RETR", "LIST", "NLST", "MLSD"] {
        let t = c.transfer(with(verb), None).await;
        check(verb, &t.first);
        if let Some(last) = &t.last {
            check(verb, last);
        }
        check_received(jail, ids, &format!("{verb} {show:?}"), &t.data);
    }
    for verb in ["STOR", "APPE"] {
        let t = c.transfer(with(verb), Some(PAYLOAD)).await;
        check(verb, &t.first);
    }
    // Whatever the upload created (inside the home) reads back as alice's own bytes.
    let t = c.transfer(with("RETR"), None).await;
    if t.code() == 226 {
        assert_eq!(
            t.data,
            [PAYLOAD, PAYLOAD].concat(),
            "RETR {show:?} after STOR"
        );
    }
    for verb in ["MKD", "RMD"] {
        let r = c.cmd(with(verb)).await;
        check(verb, &r);
    }
    // Renaming something that resolves outside to a place inside.
    let r = c.cmd(with("RNFR")).await;
    check("RNFR", &r);
    if r.0 == 350 {
        let r = c.cmd(format!("RNTO {base}/renamed")).await;
        check("RNTO", &r);
    }
    // Renaming alice's own file to a place that might be outside.
    fs::write(jail.alice().join("bait.txt"), b"bait").unwrap();
    assert_eq!(c.cmd("RNFR /bait.txt").await.0, 350);
    let r = c.cmd(with("RNTO")).await;
    check("RNTO", &r);
    let r = c.cmd(with("DELE")).await;
    check("DELE", &r);
    assert_eq!(c.cmd("NOOP").await.0, 200, "session broken by {show:?}");
}

/// Sends every `share`-th traversal path (from `first` on) at a jail of its own, with
/// symlinks leading out planted in the home; returns how many distinct paths there are.
async fn attack_share(first: usize, share: usize) -> usize {
    let jail = Jail::new();
    plant_links(&jail);
    let before = jail.outside_state();
    let ids = jail.outside_inodes();
    let paths = traversal_paths(&jail);
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    for base in ["/", "/sub/deeper"] {
        assert_eq!(c.cmd(format!("CWD {base}")).await.0, 250);
        // From the deeper base only what climbs lexically, where the depth makes a difference.
        let from_here = |p: &&Vec<u8>| base == "/" || p.windows(2).any(|w| w == b"..");
        for path in paths.iter().skip(first).step_by(share).filter(from_here) {
            attack(&mut c, &jail, &ids, base, path).await;
        }
        assert_eq!(check_pwd(&mut c, &jail).await, base);
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert_eq!(c.retr("/a.txt").await, ALICE_A);
    jail.assert_outside_unchanged(&before);
    paths.len()
}

#[tokio::test]
async fn traversal_paths_cannot_leave_the_home() {
    // Two jails side by side: the attacks on one home must run in order (an upload's bytes
    // are read back), so the list is shared out instead.
    let counts = tokio::join!(attack_share(0, 2), attack_share(1, 2));
    let counts = [counts.0, counts.1];
    assert!(counts.iter().all(|n| *n == counts[0]), "{counts:?}");
    assert!(counts[0] >= 200, "only {} distinct paths", counts[0]);
}

#[tokio::test]
async fn nul_and_control_characters_in_paths_are_501() {
    let jail = Jail::new();
    let before = jail.outside_state();
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    let bad: &[&[u8]] = &[
        b"a\0b",
        b"../\0/secret.txt",
        b"a.txt\0.jpg",
        b"\0",
        b"a\x1bb",
        b"a\x7fb",
        b"a\xc2\x85b",
        b"a\tb",
    ];
    for path in bad {
        for verb in [
            "CWD", "RETR", "STOR", "APPE", "DELE", "RNFR", "RNTO", "MKD", "RMD", "SIZE", "MDTM",
            "MLST", "LIST", "NLST", "MLSD", "STAT", "HASH", "XSHA256", "XSHA1", "XMD5", "XCRC",
            "MD5", "MMD5",
        ] {
            let line = [verb.as_bytes(), b" ", path].concat();
            let r = c.cmd(&line).await;
            assert_eq!(r.0, 501, "{:?}: {r:?}", String::from_utf8_lossy(&line));
        }
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert_eq!(pwd_path(&c.cmd("PWD").await), "/");
    jail.assert_outside_unchanged(&before);
    assert!(!jail.alice().join("a").exists());
}

/// Symlinks planted in alice's home (by an admin, an untar, another user of the machine).
fn plant_links(jail: &Jail) {
    use std::os::unix::fs::symlink;
    let alice = jail.alice();
    let outside = jail.outside.path();
    symlink(outside, alice.join("out_dir")).unwrap();
    symlink(outside.join("secret.txt"), alice.join("out_file")).unwrap();
    symlink(outside.join("new.txt"), alice.join("dangling_out")).unwrap();
    symlink("../../new-from-alice.txt", alice.join("dangling_rel")).unwrap();
    symlink("..", alice.join("up")).unwrap();
    symlink("../..", alice.join("top")).unwrap();
    symlink("../bob", alice.join("bobs")).unwrap();
    symlink("../bob/victim.txt", alice.join("bob_victim")).unwrap();
    symlink(
        "../../../bob",
        alice.join("sub").join("deeper").join("escape"),
    )
    .unwrap();
    symlink("/", alice.join("root")).unwrap();
    // Loops: refused without hanging the session.
    symlink("loop_b", alice.join("loop_a")).unwrap();
    symlink("loop_a", alice.join("loop_b")).unwrap();
    symlink("self", alice.join("self")).unwrap();
    // Links that stay inside the home.
    symlink("a.txt", alice.join("in_file")).unwrap();
    symlink("sub", alice.join("in_dir")).unwrap();
    symlink("../a.txt", alice.join("sub").join("back")).unwrap();
    fs::write(alice.join("sub").join("inner.txt"), b"inner").unwrap();
}

const OUT_LINKS: &[&str] = &[
    "out_dir",
    "out_file",
    "dangling_out",
    "dangling_rel",
    "up",
    "top",
    "bobs",
    "bob_victim",
    "root",
    "loop_a",
    "loop_b",
    "self",
];

#[tokio::test]
async fn symlinks_leading_out_are_refused() {
    let jail = Jail::new();
    plant_links(&jail);
    let before = jail.outside_state();
    let ids = jail.outside_inodes();
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    let reads = [
        "out_file",
        "out_dir/secret.txt",
        "out_dir/sub/inner.txt",
        "top/secret.txt",
        "top/users.toml",
        "up/secret.txt",
        "up/bob/victim.txt",
        "bobs/victim.txt",
        "bobs/dir/inner.txt",
        "bob_victim",
        "sub/deeper/escape/victim.txt",
        "/sub/deeper/escape/dir/inner.txt",
    ];
    for path in reads {
        let t = c.transfer(format!("RETR {path}"), None).await;
        assert_eq!(t.code(), 550, "RETR {path}: {t:?}");
        check_received(&jail, &ids, path, &t.data);
        for verb in ["SIZE", "MDTM", "MLST"] {
            let r = c.cmd(format!("{verb} {path}")).await;
            assert_eq!(r.0, 550, "{verb} {path}: {r:?}");
        }
        for verb in CHECKSUM_VERBS {
            let r = c.cmd(format!("{verb} {path}")).await;
            assert!(r.0 >= 400, "{verb} {path}: {r:?}");
            check_received(&jail, &ids, path, r.1.as_bytes());
        }
        let r = c.cmd(format!("RNFR {path}")).await;
        assert_eq!(r.0, 550, "RNFR {path}: {r:?}");
        // DELE of a link itself removes the link (tested below); through a link it is refused.
        if path.contains('/') {
            let r = c.cmd(format!("DELE {path}")).await;
            assert_eq!(r.0, 550, "DELE {path}: {r:?}");
        }
    }
    // Loops and the file-system root: refused (any error), and the session goes on.
    for path in ["loop_a", "loop_b/x", "self", "root", "root/etc/passwd"] {
        let t = c.transfer(format!("RETR {path}"), None).await;
        assert!(t.code() >= 400, "RETR {path}: {t:?}");
        check_received(&jail, &ids, path, &t.data);
        let r = c.cmd(format!("CWD {path}")).await;
        assert!(r.0 >= 400, "CWD {path}: {r:?}");
        let t = c.transfer(format!("LIST {path}"), None).await;
        assert!(t.code() >= 400, "LIST {path}: {t:?}");
        let t = c
            .transfer(format!("STOR {path}/new.txt"), Some(PAYLOAD))
            .await;
        assert!(t.code() >= 400, "STOR {path}/new.txt: {t:?}");
        assert_eq!(c.cmd("NOOP").await.0, 200);
    }
    for dir in [
        "out_dir",
        "out_dir/sub",
        "top",
        "up",
        "bobs",
        "bobs/dir",
        "sub/deeper/escape",
    ] {
        let r = c.cmd(format!("CWD {dir}")).await;
        assert_eq!(r.0, 550, "CWD {dir}: {r:?}");
        assert_eq!(pwd_path(&c.cmd("PWD").await), "/");
        for verb in ["LIST", "NLST", "MLSD"] {
            let t = c.transfer(format!("{verb} {dir}"), None).await;
            assert_eq!(t.code(), 550, "{verb} {dir}: {t:?}");
            check_received(&jail, &ids, dir, &t.data);
        }
        let r = c.cmd(format!("STAT {dir}")).await;
        assert_eq!(r.0, 550, "STAT {dir}: {r:?}");
        let r = c.cmd(format!("MKD {dir}/newdir")).await;
        assert_eq!(r.0, 550, "MKD {dir}/newdir: {r:?}");
    }
    let r = c.cmd("RMD out_dir/sub").await;
    assert_eq!(r.0, 550, "{r:?}");
    let r = c.cmd("RMD bobs/dir").await;
    assert_eq!(r.0, 550, "{r:?}");
    for target in [
        "out_dir/new.txt",
        "out_file",
        "dangling_out",
        "dangling_rel",
        "top/new.txt",
        "up/new.txt",
        "bobs/new.txt",
        "bob_victim",
        "sub/deeper/escape/new.txt",
    ] {
        for verb in ["STOR", "APPE"] {
            let t = c.transfer(format!("{verb} {target}"), Some(PAYLOAD)).await;
            assert_eq!(t.code(), 550, "{verb} {target}: {t:?}");
        }
        assert_eq!(c.cmd("REST 3").await.0, 350);
        let t = c.transfer(format!("STOR {target}"), Some(PAYLOAD)).await;
        assert_eq!(t.code(), 550, "REST 3 + STOR {target}: {t:?}");
    }
    for target in ["out_dir/a.txt", "bobs/a.txt", "top/a.txt", "up/a.txt"] {
        assert_eq!(c.cmd("RNFR a.txt").await.0, 350);
        let r = c.cmd(format!("RNTO {target}")).await;
        assert_eq!(r.0, 550, "RNTO {target}: {r:?}");
    }
    assert_eq!(c.cmd("NOOP").await.0, 200);
    assert_eq!(c.retr("a.txt").await, ALICE_A);
    jail.assert_outside_unchanged(&before);

    // Deleting or replacing a link itself is alice's business; its target stays untouched.
    let _ = c.cmd("DELE out_file").await;
    assert_eq!(c.cmd("RNFR a.txt").await.0, 350);
    let _ = c.cmd("RNTO bob_victim").await;
    assert_eq!(c.cmd("NOOP").await.0, 200);
    jail.assert_outside_unchanged(&before);
}

#[tokio::test]
async fn symlinks_leading_out_are_not_listed_and_links_inside_work() {
    let jail = Jail::new();
    plant_links(&jail);
    let ids = jail.outside_inodes();
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    let nlst = c.transfer("NLST", None).await;
    assert_eq!(nlst.code(), 226);
    let names: BTreeSet<String> = String::from_utf8(nlst.data)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = ["a.txt", "in_dir", "in_file", "sub"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, expected);
    for verb in ["LIST", "MLSD", "LIST -la", "NLST /", "MLSD /"] {
        let t = c.transfer(verb, None).await;
        assert_eq!(t.code(), 226, "{verb}");
        let text = String::from_utf8_lossy(&t.data).into_owned();
        check_received(&jail, &ids, verb, &t.data);
        for hidden in OUT_LINKS {
            assert!(
                !text.split_whitespace().any(|w| w == *hidden),
                "{verb} shows {hidden}: {text}"
            );
        }
        assert!(text.contains("in_file"), "{verb}: {text}");
    }
    let r = c.cmd("STAT /").await;
    assert_eq!(r.0, 213);
    for hidden in OUT_LINKS {
        assert!(
            !r.1.split_whitespace().any(|w| w == *hidden),
            "STAT shows {hidden}: {r:?}"
        );
    }
    let t = c.transfer("NLST sub/deeper", None).await;
    assert_eq!(t.code(), 226);
    assert!(t.data.is_empty(), "{:?}", String::from_utf8_lossy(&t.data));

    // Links that stay inside the home behave like what they point to.
    assert_eq!(c.retr("in_file").await, ALICE_A);
    assert_eq!(c.retr("sub/back").await, ALICE_A);
    assert_eq!(c.retr("in_dir/inner.txt").await, b"inner");
    assert_eq!(
        c.cmd("SIZE in_file").await,
        (213, ALICE_A.len().to_string())
    );
    assert_eq!(c.cmd("CWD in_dir").await.0, 250);
    assert_eq!(check_pwd(&mut c, &jail).await, "/in_dir");
    assert_eq!(c.retr("inner.txt").await, b"inner");
    assert_eq!(c.retr("back").await, ALICE_A);
    let t = c.transfer("NLST", None).await;
    assert!(String::from_utf8_lossy(&t.data).contains("inner.txt"));
    assert_eq!(c.cmd("CWD ..").await.0, 250);
    assert_eq!(check_pwd(&mut c, &jail).await, "/");
}

#[tokio::test]
async fn users_cannot_reach_each_others_files() {
    let jail = Jail::new();
    let before_bob = snapshot(&jail.server.home("bob"), Path::new("/nonexistent"));
    let mut alice = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    for path in [
        "../bob/victim.txt",
        "/../bob/victim.txt",
        "../../home/bob/victim.txt",
        "/home/bob/victim.txt",
        "bob/victim.txt",
        "/bob/victim.txt",
        "../bob/dir/inner.txt",
    ] {
        let t = alice.transfer(format!("RETR {path}"), None).await;
        assert_eq!(t.code(), 550, "RETR {path}: {t:?}");
        let t = alice.transfer(format!("STOR {path}"), Some(PAYLOAD)).await;
        assert_eq!(t.code(), 550, "STOR {path}: {t:?}");
        assert_eq!(
            alice.cmd(format!("DELE {path}")).await.0,
            550,
            "DELE {path}"
        );
        assert_eq!(
            alice.cmd(format!("SIZE {path}")).await.0,
            550,
            "SIZE {path}"
        );
        for verb in CHECKSUM_VERBS {
            let r = alice.cmd(format!("{verb} {path}")).await;
            assert!(r.0 >= 400, "{verb} {path}: {r:?}");
        }
        assert_eq!(
            alice.cmd(format!("RNFR {path}")).await.0,
            550,
            "RNFR {path}"
        );
    }
    for dir in ["../bob", "/../bob", "../bob/dir"] {
        assert_eq!(alice.cmd(format!("CWD {dir}")).await.0, 550, "CWD {dir}");
        let t = alice.transfer(format!("LIST {dir}"), None).await;
        assert_eq!(t.code(), 550, "LIST {dir}");
    }
    // "/bob" is a name inside alice's own home: making it gives her her own file, not bob's.
    assert_eq!(alice.cmd("MKD ../bob").await.0, 257);
    alice.stor("../bob/victim.txt", b"alice's decoy").await;
    assert_eq!(alice.retr("../../bob/victim.txt").await, b"alice's decoy");
    assert_eq!(
        fs::read(jail.alice().join("bob").join("victim.txt")).unwrap(),
        b"alice's decoy"
    );

    let mut bob = Raw::login(jail.server.addr(), "bob", "bob-pw").await;
    assert_eq!(bob.retr("victim.txt").await, VICTIM);
    for path in [
        "../alice/a.txt",
        "/../alice/a.txt",
        "../../home/alice/a.txt",
    ] {
        let t = bob.transfer(format!("RETR {path}"), None).await;
        assert_eq!(t.code(), 550, "bob RETR {path}: {t:?}");
    }
    let t = bob.transfer("NLST", None).await;
    let names: Vec<String> = String::from_utf8(t.data)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, ["dir", "victim.txt"]);
    assert!(before_bob == snapshot(&jail.server.home("bob"), Path::new("/nonexistent")));
}

/// What alice keeps in a/b/file while the race below swaps its way around it.
const RACE_INSIDE: &[u8] = b"alice's a/b/file, inside the home";

/// Cycles of the race: each swaps the directory a/b for a link out and back, then the file
/// a/b/file likewise.
const RACE_CYCLES: u32 = 1000;

/// Swaps `dir`/b for a symlink to `dir_target` and back, then `dir`/b/file for a symlink to
/// `dir_target`/file and back, [`RACE_CYCLES`] times. The server may replace the file's link
/// with a real file meanwhile (a STOR that commits); that is alice's own business and the
/// swap carries on.
fn swap_with_links(dir: &Path, dir_target: &Path) -> u32 {
    use std::os::unix::fs::symlink;
    let (b, b_away) = (dir.join("b"), dir.join("b.away"));
    let (file, file_away) = (b.join("file"), b.join("file.away"));
    let file_target = dir_target.join("file");
    // Each state is held for a varying fraction of a millisecond (xorshift), so that the
    // transfers, which take about as long, meet every phase of the swap. Not a wait for
    // readiness: the race is the point.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut hold = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_micros(x % 800));
    };
    let mut cycles = 0;
    while cycles < RACE_CYCLES {
        fs::rename(&b, &b_away).unwrap();
        symlink(dir_target, &b).unwrap();
        hold();
        fs::remove_file(&b).unwrap();
        fs::rename(&b_away, &b).unwrap();
        hold();
        if fs::rename(&file, &file_away).is_ok() {
            let linked = symlink(&file_target, &file).is_ok();
            hold();
            if linked && fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&file).unwrap();
            }
            fs::rename(&file_away, &file).unwrap();
            hold();
        }
        cycles += 1;
    }
    cycles
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How the transfers of one client ended, by final reply code.
type Outcomes = BTreeMap<u16, u32>;

/// Downloads a/b/file until `done`: every download is (a prefix of) alice's bytes, and no
/// reply names anything outside.
async fn retr_while_swapping(jail: &Jail, done: &AtomicBool) -> Outcomes {
    let ids = jail.outside_inodes();
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    let mut outcomes = Outcomes::new();
    while !done.load(Ordering::Relaxed) {
        let t = c.transfer("RETR a/b/file", None).await;
        let what = "RETR during the swap";
        check_received(jail, &ids, what, &t.data);
        for reply in std::iter::once(&t.first).chain(&t.last) {
            check_received(jail, &ids, what, reply.1.as_bytes());
        }
        // A download may meet the file while the other client creates it anew (when the
        // swap had moved it away): then it gets a part of alice's bytes, never other bytes.
        assert!(RACE_INSIDE.starts_with(&t.data), "{what}: {t:?}");
        assert!(
            t.code() == 226 || (t.code() >= 400 && t.code() != 421),
            "{what}: {t:?}"
        );
        *outcomes.entry(t.code()).or_default() += 1;
    }
    outcomes
}

/// Uploads alice's bytes to a/b/file until `done`.
async fn stor_while_swapping(jail: &Jail, done: &AtomicBool) -> Outcomes {
    let mut c = Raw::login(jail.server.addr(), "alice", "alice-pw").await;
    let mut outcomes = Outcomes::new();
    while !done.load(Ordering::Relaxed) {
        let t = c.transfer("STOR a/b/file", Some(RACE_INSIDE)).await;
        assert!(
            t.code() == 226 || (t.code() >= 400 && t.code() != 421),
            "{t:?}"
        );
        *outcomes.entry(t.code()).or_default() += 1;
    }
    outcomes
}

#[tokio::test]
async fn swapping_a_directory_or_file_for_a_symlink_out_mid_transfer_never_crosses() {
    let jail = Jail::new();
    let a = jail.alice().join("a");
    fs::create_dir_all(a.join("b")).unwrap();
    fs::write(a.join("b").join("file"), RACE_INSIDE).unwrap();
    // Where the links point: a directory outside with a file of the same name.
    let target = jail.outside.path().join("race");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("file"), SECRET_OUTSIDE).unwrap();
    let before = jail.outside_state();
    let outside_inodes = inodes(jail.outside.path());

    let done = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (a, target, done) = (a.clone(), target.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            // Set however the swap ends, so the clients stop even if it panics.
            let _done = SetOnDrop(done);
            swap_with_links(&a, &target)
        })
    };
    let (retrs, stors) = tokio::join!(
        retr_while_swapping(&jail, &done),
        stor_while_swapping(&jail, &done)
    );
    assert_eq!(swapper.join().unwrap(), RACE_CYCLES);

    jail.assert_outside_unchanged(&before);
    assert_eq!(inodes(jail.outside.path()), outside_inodes);
    assert_eq!(fs::read(target.join("file")).unwrap(), SECRET_OUTSIDE);
    assert_eq!(fs::read(a.join("b").join("file")).unwrap(), RACE_INSIDE);
    // No upload left a temporary file behind, wherever its directory was when it ended.
    let mut left: Vec<String> = fs::read_dir(a.join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["file"]);
    // Both sides of the race happened: transfers that went through and ones the links
    // stopped.
    for (what, outcomes) in [("RETR", &retrs), ("STOR", &stors)] {
        let ok = outcomes.get(&226).copied().unwrap_or(0);
        let refused: u32 = outcomes
            .iter()
            .filter(|(c, _)| **c != 226)
            .map(|(_, n)| n)
            .sum();
        assert!(ok > 0 && refused > 0, "{what}: {outcomes:?}");
    }
}
