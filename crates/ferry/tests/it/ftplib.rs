//! Python 3's ftplib against the server, as a child process: a client nobody here wrote, with
//! its own ideas about TYPE A, MLSD facts, active mode and error classes. Each test runs one
//! script and checks its output, its exit status and the files on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{TestServer, random_bytes};

/// Connects `ftp` (an ftplib.FTP with a 10 s timeout, so a stuck server fails the script
/// instead of hanging it) and defines helpers the scripts share.
const PRELUDE: &str = r#"
import ftplib, hashlib, io, os, socket, sys
ftp = ftplib.FTP()
ftp.connect(os.environ['FTP_HOST'], int(os.environ['FTP_PORT']), timeout=10)

def read_all(conn):
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    conn.close()
    return b''.join(chunks)

def arg(name):
    return os.environ['ARG_' + name]
"#;

/// Runs `body` after the prelude, not logged in. `args` become `ARG_<name>` environment
/// variables (read with `arg('name')`). Returns stdout; the script must exit 0.
fn python_anonymous(server: &TestServer, args: &[(&str, &str)], body: &str) -> String {
    let script = format!("{PRELUDE}\n{body}\nftp.quit()\n");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(&script)
        .env("FTP_HOST", server.addr().ip().to_string())
        .env("FTP_PORT", server.addr().port().to_string())
        .env("PYTHONIOENCODING", "utf-8");
    for (name, value) in args {
        command.env(format!("ARG_{name}"), value);
    }
    let output = command.output().expect("cannot run python3");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "python exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Like [`python_anonymous`], logged in as `user` (password `<user>-pw`) first.
fn python(server: &TestServer, user: &str, args: &[(&str, &str)], body: &str) -> String {
    let body = format!("ftp.login('{user}', '{user}-pw')\n{body}");
    python_anonymous(server, args, &body)
}

fn home_with(server: &TestServer, user: &str, files: &[(&str, &[u8])]) -> PathBuf {
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

fn disk_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A text of many lines of varying length with LF endings, big enough to cross the server's
/// copy buffer several times, so conversions are checked at chunk boundaries too.
fn lf_text() -> Vec<u8> {
    let mut text = String::new();
    for i in 0..40_000 {
        text.push_str(&format!("line {i} {}\n", "x".repeat(i % 37)));
        if i % 1000 == 0 {
            text.push('\n');
        }
    }
    text.into_bytes()
}

fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 8);
    for &b in lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[test]
fn login_mkd_cwd_pwd() {
    let server = TestServer::start();
    let out = python(
        &server,
        "alice",
        &[],
        r#"
print(ftp.pwd())
print(ftp.mkd('docs'))
ftp.cwd('docs')
print(ftp.pwd())
print(ftp.mkd('inner'))
ftp.cwd('/docs/inner')
print(ftp.pwd())
ftp.cwd('..')
print(ftp.pwd())
try:
    ftp.cwd('/nowhere')
    print('cwd accepted')
except ftplib.error_perm as e:
    print('cwd', str(e)[:3])
print(ftp.pwd())
"#,
    );
    assert_eq!(
        out,
        "/\n/docs\n/docs\n/docs/inner\n/docs/inner\n/docs\ncwd 550\n/docs\n"
    );
    assert!(server.home("alice").join("docs/inner").is_dir());
}

#[test]
fn bad_login_raises_error_perm_530() {
    let server = TestServer::start();
    let out = python_anonymous(
        &server,
        &[],
        r#"
for user, password in [('alice', 'wrong'), ('nobody', 'alice-pw')]:
    try:
        ftp.login(user, password)
        print('accepted', user)
    except ftplib.error_perm as e:
        print('error_perm', str(e)[:3])
    ftp.close()
    ftp.connect(os.environ['FTP_HOST'], int(os.environ['FTP_PORT']), timeout=10)
try:
    ftp.login('alice', 'wrong')
except ftplib.error_perm as e:
    print('error_perm', str(e)[:3])
print(ftp.login('alice', 'alice-pw')[:3])
print(ftp.pwd())
"#,
    );
    assert_eq!(
        out,
        "error_perm 530\nerror_perm 530\nerror_perm 530\n230\n/\n"
    );
}

#[test]
fn storbinary_retrbinary_round_trip() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let scratch = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 21);
    let input = scratch.path().join("in.bin");
    let output = scratch.path().join("out.bin");
    let tail = scratch.path().join("tail.bin");
    std::fs::write(&input, &data).unwrap();
    let out = python(
        &server,
        "alice",
        &[
            ("in", path_str(&input)),
            ("out", path_str(&output)),
            ("tail", path_str(&tail)),
        ],
        r#"
with open(arg('in'), 'rb') as f:
    print(ftp.storbinary('STOR blob.bin', f)[:3])
print(ftp.storbinary('STOR empty.bin', io.BytesIO(b''))[:3])
buf = io.BytesIO()
print(ftp.retrbinary('RETR blob.bin', buf.write)[:3])
with open(arg('out'), 'wb') as f:
    f.write(buf.getvalue())
empty = io.BytesIO()
ftp.retrbinary('RETR empty.bin', empty.write)
print(len(empty.getvalue()))
with open(arg('in'), 'rb') as f:
    print(hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(buf.getvalue()).hexdigest())
# REST through ftplib's own rest= argument: the tail only.
rest = io.BytesIO()
print(ftp.retrbinary('RETR blob.bin', rest.write, rest=1000000)[:3])
with open(arg('tail'), 'wb') as f:
    f.write(rest.getvalue())
"#,
    );
    assert_eq!(out, "226\n226\n226\n0\nTrue\n226\n");
    assert!(std::fs::read(home.join("blob.bin")).unwrap() == data);
    assert!(std::fs::read(&output).unwrap() == data);
    assert!(std::fs::read(&tail).unwrap() == data[1_000_000..]);
    assert_eq!(std::fs::read(home.join("empty.bin")).unwrap(), b"");
}

#[test]
fn type_a_converts_line_endings_both_ways() {
    let server = TestServer::start();
    let lf = lf_text();
    let crlf = to_crlf(&lf);
    let home = home_with(
        &server,
        "alice",
        &[
            ("unix.txt", &lf),
            ("small.txt", b"first\nsecond\n\nlast\n"),
            ("mixed.txt", b"dos\r\nunix\nlone\rcr\n"),
        ],
    );
    let scratch = tempfile::tempdir().unwrap();
    let wire = scratch.path().join("wire.bin");
    let binary = scratch.path().join("binary.bin");
    let upload = scratch.path().join("upload.txt");
    std::fs::write(&upload, &crlf).unwrap();
    let out = python(
        &server,
        "alice",
        &[
            ("wire", path_str(&wire)),
            ("binary", path_str(&binary)),
            ("upload", path_str(&upload)),
        ],
        r#"
# Raw bytes of a download in TYPE A: LF on disk must be CRLF on the wire.
ftp.voidcmd('TYPE A')
conn = ftp.transfercmd('RETR unix.txt')
with open(arg('wire'), 'wb') as f:
    f.write(read_all(conn))
print(ftp.voidresp()[:3])
conn = ftp.transfercmd('RETR small.txt')
print(repr(read_all(conn)))
ftp.voidresp()
# A CRLF already on disk is not doubled; a lone CR stays.
conn = ftp.transfercmd('RETR mixed.txt')
print(repr(read_all(conn)))
ftp.voidresp()
# The same file in TYPE I: unchanged.
ftp.voidcmd('TYPE I')
conn = ftp.transfercmd('RETR unix.txt')
with open(arg('binary'), 'wb') as f:
    f.write(read_all(conn))
ftp.voidresp()
# retrlines (TYPE A) gives the lines without endings.
lines = []
ftp.retrlines('RETR small.txt', lines.append)
print(repr(lines))
# A TYPE A upload with CRLF lines lands with LF.
ftp.voidcmd('TYPE A')
conn = ftp.transfercmd('STOR fromwire.txt')
with open(arg('upload'), 'rb') as f:
    conn.sendall(f.read())
conn.close()
print(ftp.voidresp()[:3])
print(ftp.storlines('STOR storlines.txt', io.BytesIO(b'alpha\nbeta\r\ngamma\n'))[:3])
# CRLF becomes LF; a CR not followed by LF is data, also at the very end.
conn = ftp.transfercmd('STOR lonecr.txt')
conn.sendall(b'a\r\nb\rc\r\n\r')
conn.close()
print(ftp.voidresp()[:3])
# The same CRLF bytes in TYPE I are stored as they are.
ftp.voidcmd('TYPE I')
conn = ftp.transfercmd('STOR binary-crlf.txt')
conn.sendall(b'one\r\ntwo\r\n')
conn.close()
print(ftp.voidresp()[:3])
"#,
    );
    assert_eq!(
        out,
        "226\nb'first\\r\\nsecond\\r\\n\\r\\nlast\\r\\n'\n\
         b'dos\\r\\nunix\\r\\nlone\\rcr\\r\\n'\n\
         ['first', 'second', '', 'last']\n226\n226\n226\n226\n"
    );
    let on_wire = std::fs::read(&wire).unwrap();
    assert_eq!(on_wire.len(), crlf.len(), "TYPE A download length");
    assert!(on_wire == crlf, "TYPE A download is not the CRLF form");
    assert!(
        std::fs::read(&binary).unwrap() == lf,
        "TYPE I changed bytes"
    );
    assert!(
        std::fs::read(home.join("fromwire.txt")).unwrap() == lf,
        "TYPE A upload not stored with LF"
    );
    assert_eq!(
        std::fs::read(home.join("storlines.txt")).unwrap(),
        b"alpha\nbeta\ngamma\n"
    );
    assert_eq!(
        std::fs::read(home.join("lonecr.txt")).unwrap(),
        b"a\nb\rc\n\r"
    );
    assert_eq!(
        std::fs::read(home.join("binary-crlf.txt")).unwrap(),
        b"one\r\ntwo\r\n"
    );
}

#[test]
fn mlsd_facts() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "alice",
        &[("data.bin", &[0u8; 4321][..]), ("a dir/inside", b"x")],
    );
    let file = std::fs::File::options()
        .write(true)
        .open(home.join("data.bin"))
        .unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
    let out = python(
        &server,
        "alice",
        &[],
        r#"
for name, facts in sorted(ftp.mlsd(facts=['type', 'size', 'modify', 'perm', 'unique'])):
    print(name, facts.get('type'), facts.get('size'), facts.get('modify'), facts.get('perm'),
          'unique' if facts.get('unique') else 'no-unique', sep='|')
for name, facts in ftp.mlsd('a dir'):
    print(name, facts.get('type'), facts.get('size'), sep='|')
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let dir: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(dir[..2], ["a dir", "dir"], "{out}");
    assert!(
        dir[4].contains('e') && dir[4].contains('l'),
        "dir perm: {out}"
    );
    assert_eq!(dir[5], "unique");
    let data: Vec<&str> = lines[1].split('|').collect();
    assert_eq!(
        data[..4],
        ["data.bin", "file", "4321", "20010909014640"],
        "{out}"
    );
    assert!(data[4].contains('r') && data[4].contains('w'), "{out}");
    assert_eq!(data[5], "unique");
    assert_eq!(lines[2], "inside|file|1");
}

#[test]
fn nlst_size_rename_delete_rmd() {
    let server = TestServer::start();
    let home = home_with(
        &server,
        "alice",
        &[
            ("a.bin", &[9u8; 777][..]),
            ("gone.txt", b"bye"),
            ("full/keep", b"k"),
        ],
    );
    std::fs::create_dir(home.join("empty")).unwrap();
    let out = python(
        &server,
        "alice",
        &[],
        r#"
print(sorted(ftp.nlst()))
ftp.voidcmd('TYPE I')
print(ftp.size('a.bin'))
print(ftp.rename('a.bin', 'b.bin')[:3])
print(ftp.delete('gone.txt')[:3])
print(ftp.rmd('empty')[:3])
for what, call in [('rmd-full', lambda: ftp.rmd('full')),
                   ('delete-missing', lambda: ftp.delete('missing')),
                   ('size-dir', lambda: ftp.size('full')),
                   ('rename-missing', lambda: ftp.rename('missing', 'x'))]:
    try:
        call()
        print(what, 'accepted')
    except ftplib.error_perm as e:
        print(what, str(e)[:3])
print(sorted(ftp.nlst()))
print(ftp.nlst('full'))
"#,
    );
    assert_eq!(
        out,
        "['a.bin', 'empty', 'full', 'gone.txt']\n777\n250\n250\n250\n\
         rmd-full 550\ndelete-missing 550\nsize-dir 550\nrename-missing 550\n\
         ['b.bin', 'full']\n['keep']\n"
    );
    assert_eq!(disk_names(&home), ["b.bin", "full"]);
    assert_eq!(std::fs::read(home.join("b.bin")).unwrap(), [9u8; 777]);
    assert!(home.join("full/keep").is_file());
}

#[test]
fn active_mode_port_and_eprt() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let scratch = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 22);
    let input = scratch.path().join("in.bin");
    let output = scratch.path().join("out.bin");
    let eprt_out = scratch.path().join("eprt.bin");
    std::fs::write(&input, &data).unwrap();
    let out = python(
        &server,
        "alice",
        &[
            ("in", path_str(&input)),
            ("out", path_str(&output)),
            ("eprt", path_str(&eprt_out)),
        ],
        r#"
ftp.set_pasv(False)
with open(arg('in'), 'rb') as f:
    print(ftp.storbinary('STOR active.bin', f)[:3])
buf = io.BytesIO()
print(ftp.retrbinary('RETR active.bin', buf.write)[:3])
with open(arg('out'), 'wb') as f:
    f.write(buf.getvalue())
print(ftp.nlst())
# EPRT by hand, to a listener of our own (nlst left TYPE A behind).
ftp.voidcmd('TYPE I')
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(1)
listener.settimeout(10)
port = listener.getsockname()[1]
print(ftp.sendcmd('EPRT |1|127.0.0.1|%d|' % port)[:3])
print(ftp.sendcmd('RETR active.bin')[:3])
conn, peer = listener.accept()
with open(arg('eprt'), 'wb') as f:
    f.write(read_all(conn))
print(ftp.voidresp()[:3])
try:
    ftp.sendcmd('EPRT |1|10.9.8.7|%d|' % port)
    print('foreign EPRT accepted')
except ftplib.error_perm as e:
    print('foreign', str(e)[:3])
"#,
    );
    assert_eq!(
        out,
        "226\n226\n['active.bin']\n200\n150\n226\nforeign 504\n"
    );
    assert!(std::fs::read(home.join("active.bin")).unwrap() == data);
    assert!(std::fs::read(&output).unwrap() == data);
    assert!(std::fs::read(&eprt_out).unwrap() == data);
}

#[test]
fn stou_through_transfercmd() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let out = python(
        &server,
        "alice",
        &[],
        r#"
replies = []
plain_sendcmd = ftp.sendcmd
def recording_sendcmd(cmd):
    reply = plain_sendcmd(cmd)
    replies.append(reply)
    return reply
ftp.sendcmd = recording_sendcmd
ftp.voidcmd('TYPE I')
conn = ftp.transfercmd('STOU')
conn.sendall(b'unique bytes\x00\xff\r\n')
conn.close()
print(ftp.voidresp()[:3])
print(replies[-1])
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "226");
    let name = lines[1]
        .strip_prefix("150 FILE: ")
        .unwrap_or_else(|| panic!("STOU preliminary reply: {out}"))
        .trim();
    assert_eq!(disk_names(&home), [name]);
    assert_eq!(
        std::fs::read(home.join(name)).unwrap(),
        b"unique bytes\x00\xff\r\n"
    );
}

#[test]
fn utf8_names_through_ftplib() {
    let server = TestServer::start();
    let home = home_with(&server, "alice", &[]);
    let out = python(
        &server,
        "alice",
        &[],
        r#"
name = 'grüße-日本.txt'
ftp.storbinary('STOR ' + name, io.BytesIO('Grüße'.encode('utf-8')))
print(ftp.nlst())
buf = io.BytesIO()
ftp.retrbinary('RETR ' + name, buf.write)
print(buf.getvalue().decode('utf-8'))
"#,
    );
    assert_eq!(out, "['grüße-日本.txt']\nGrüße\n");
    assert_eq!(
        std::fs::read(home.join("grüße-日本.txt")).unwrap(),
        "Grüße".as_bytes()
    );
}

#[test]
fn read_only_user_gets_error_perm_on_writes() {
    let server = TestServer::start();
    let home = home_with(&server, "reader", &[("doc.txt", b"read me")]);
    let out = python(
        &server,
        "reader",
        &[],
        r#"
for what, call in [('stor', lambda: ftp.storbinary('STOR new.txt', io.BytesIO(b'x'))),
                   ('appe', lambda: ftp.storbinary('APPE doc.txt', io.BytesIO(b'x'))),
                   ('dele', lambda: ftp.delete('doc.txt')),
                   ('mkd', lambda: ftp.mkd('d')),
                   ('rnfr', lambda: ftp.rename('doc.txt', 'x.txt'))]:
    try:
        call()
        print(what, 'accepted')
    except ftplib.error_perm as e:
        print(what, str(e)[:3])
buf = io.BytesIO()
ftp.retrbinary('RETR doc.txt', buf.write)
print(buf.getvalue().decode())
"#,
    );
    assert_eq!(
        out,
        "stor 550\nappe 550\ndele 550\nmkd 550\nrnfr 550\nread me\n"
    );
    assert_eq!(disk_names(&home), ["doc.txt"]);
    assert_eq!(std::fs::read(home.join("doc.txt")).unwrap(), b"read me");
}
