//! S3-compatible object storage as clients and the bucket see it, against moto's S3 server:
//! uploads land as objects (multipart when large), downloads and ranged resumes give back
//! exactly those bytes, directories are prefixes with marker objects, rename is copy+delete,
//! RMD refuses non-empty directories, APPE and REST+STOR are 504 without ending the session,
//! and quota usage agrees with the bucket. Objects are read back with curl over plain HTTP,
//! not through ferry's client.

use std::process::Command;

use ferry_server::quota::{Usage, human};
use ferry_server::storage::s3::S3Settings;
use suppaftp::tokio::AsyncFtpStream;
use testkit::{TestServer, moto, random_bytes};

use super::binary::{Server, run_to_end};
use super::quota::{site_quota, usage_file};
use super::raw::Raw;

/// A server keeping `alice`'s and `bob`'s files, and those of `q` (100,000-byte quota), in a
/// bucket of its own.
fn server() -> (TestServer, S3Settings) {
    let bucket = moto::bucket();
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .user("bob", "bob-pw")
        .quota_user("q", "q-pw", Some(100_000), None)
        .s3(bucket.clone())
        .start();
    (server, bucket)
}

/// The key of one of alice's files.
fn key(name: &str) -> String {
    format!("users/alice/{name}")
}

/// The bucket's keys under alice's prefix, relative to it.
fn alice_keys(bucket: &S3Settings) -> Vec<String> {
    moto::keys(bucket)
        .into_iter()
        .filter_map(|k| k.strip_prefix("users/alice/").map(str::to_string))
        .collect()
}

async fn alice(server: &TestServer) -> Raw {
    Raw::login(server.addr(), "alice", "alice-pw").await
}

/// The names NLST sends for `dir`.
async fn nlst(c: &mut Raw, dir: &str) -> Vec<String> {
    let t = c.transfer(format!("NLST {dir}"), None).await;
    assert_eq!(t.code(), 226, "NLST {dir}: {t:?}");
    let text = String::from_utf8(t.data).unwrap();
    text.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn stor_puts_the_object_in_the_bucket_and_retr_gives_back_the_same_bytes() {
    let (server, bucket) = server();
    let mut c = alice(&server).await;
    let small = random_bytes(1000, 1);
    c.stor("small.bin", &small).await;
    assert!(moto::object(&bucket, &key("small.bin")) == Some(small.clone()));
    assert_eq!(c.retr("small.bin").await, small);
    assert_eq!(c.cmd("SIZE small.bin").await, (213, "1000".into()));
    assert_eq!(c.cmd("MDTM small.bin").await.0, 213);

    // A replacement takes the name only when complete; the object then holds the new bytes.
    let replaced = random_bytes(700, 2);
    c.stor("small.bin", &replaced).await;
    assert!(moto::object(&bucket, &key("small.bin")) == Some(replaced));

    // Larger than a part (5 MiB): a multipart upload, through a client nobody here wrote.
    let big = random_bytes(12 * 1024 * 1024 + 17, 3);
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    ftp.put_file("big.bin", &mut big.as_slice()).await.unwrap();
    assert!(moto::object(&bucket, &key("big.bin")) == Some(big.clone()));
    let mut stream = ftp.retr_as_stream("big.bin").await.unwrap();
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .unwrap();
    stream.finish().await.unwrap();
    assert!(back == big, "12 MiB download differs");
    ftp.quit().await.unwrap();

    assert_eq!(c.transfer("RETR missing", None).await.first.0, 550);
    assert!(
        !server.home("alice").join("small.bin").exists(),
        "nothing goes to the local home"
    );
}

#[tokio::test]
async fn listings_show_files_and_directories_and_mkd_makes_empty_ones_that_list() {
    let (server, bucket) = server();
    let mut c = alice(&server).await;
    assert_eq!(c.cmd("MKD docs").await.0, 257);
    assert_eq!(c.cmd("MKD docs/empty").await.0, 257);
    assert_eq!(
        c.cmd("MKD docs").await.0,
        550,
        "MKD of an existing directory"
    );
    assert_eq!(c.cmd("MKD nosuch/sub").await.0, 550, "MKD in a missing one");
    assert_eq!(c.cmd("MKD docs/.ferry-dir").await.0, 553, "the marker name");
    c.stor("a.txt", b"alpha").await;
    c.stor("docs/b.txt", b"bravo!").await;
    c.stor("odd #name%.txt", b"odd").await;
    assert_eq!(
        c.transfer("STOR nosuch/c.txt", Some(b"x")).await.first.0,
        550,
        "STOR into a missing directory"
    );
    assert_eq!(
        alice_keys(&bucket),
        [
            "a.txt",
            "docs/.ferry-dir",
            "docs/b.txt",
            "docs/empty/.ferry-dir",
            "odd %23name%25.txt",
        ]
    );

    assert_eq!(nlst(&mut c, "/").await, ["a.txt", "docs", "odd #name%.txt"]);
    assert_eq!(nlst(&mut c, "docs").await, ["b.txt", "empty"]);
    assert!(nlst(&mut c, "docs/empty").await.is_empty());
    assert_eq!(c.retr("odd #name%.txt").await, b"odd");
    let t = c.transfer("MLSD docs", None).await;
    assert_eq!(t.code(), 226);
    let mlsd = String::from_utf8(t.data).unwrap();
    assert!(
        mlsd.lines()
            .any(|l| l.contains("type=file;") && l.contains("size=6;") && l.ends_with(" b.txt")),
        "{mlsd}"
    );
    assert!(
        mlsd.lines()
            .any(|l| l.contains("type=dir;") && l.ends_with(" empty")),
        "{mlsd}"
    );
    assert!(!mlsd.contains(".ferry-dir"), "{mlsd}");
    assert_eq!(c.cmd("CWD docs/empty").await.0, 250);
    assert_eq!(
        c.cmd("PWD").await,
        (257, "\"/docs/empty\" is the current directory".into())
    );
    assert_eq!(c.cmd("CWD /nosuch").await.0, 550);
    assert_eq!(c.cmd("CWD /a.txt").await.0, 550);

    // Python's ftplib parses the same listings.
    let script = r#"
import ftplib, os
ftp = ftplib.FTP()
ftp.connect('127.0.0.1', int(os.environ['FTP_PORT']), timeout=10)
ftp.login('alice', 'alice-pw')
for name, facts in sorted(ftp.mlsd('/docs')):
    print(name, facts['type'], facts.get('size', '-'))
lines = []
ftp.retrlines('LIST /', lines.append)
print(len(lines), sorted(line.split()[-1] for line in lines if 'name' not in line))
ftp.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("FTP_PORT", server.addr().port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "b.txt file 6\nempty dir 0\n3 ['a.txt', 'docs']\n"
    );
}

#[tokio::test]
async fn rest_then_retr_sends_exactly_the_tail_from_a_ranged_get() {
    let (server, _bucket) = server();
    let mut c = alice(&server).await;
    let data = random_bytes(300_000, 4);
    c.stor("file.bin", &data).await;
    for offset in [1, 123_457, data.len() - 1, data.len()] {
        assert_eq!(c.cmd(format!("REST {offset}")).await.0, 350);
        let tail = c.retr("file.bin").await;
        assert!(
            tail == data[offset..],
            "REST {offset}: {} bytes",
            tail.len()
        );
    }
    assert_eq!(c.cmd(format!("REST {}", data.len() + 1)).await.0, 350);
    let t = c.transfer("RETR file.bin", None).await;
    assert_eq!(t.first.0, 554, "REST beyond the end: {t:?}");

    // curl -C - asks SIZE, then REST from what it has, and appends the tail.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file.bin");
    std::fs::write(&local, &data[..100_000]).unwrap();
    let url = format!("{}/file.bin", server.url("alice"));
    let out = Command::new("curl")
        .args(["-s", "-S", "-C", "-", "-o"])
        .arg(&local)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&local).unwrap() == data,
        "curl -C - result differs"
    );
}

#[tokio::test]
async fn rename_is_copy_and_delete_for_files_and_whole_directories() {
    let (server, bucket) = server();
    let mut c = alice(&server).await;
    c.stor("a.txt", b"first").await;
    assert_eq!(c.cmd("RNFR a.txt").await.0, 350);
    assert_eq!(c.cmd("RNTO b.txt").await.0, 250);
    assert_eq!(alice_keys(&bucket), ["b.txt"]);
    assert_eq!(c.retr("b.txt").await, b"first");

    // Over an existing file: replaced, as rename(2) does.
    c.stor("c.txt", b"second").await;
    assert_eq!(c.cmd("RNFR b.txt").await.0, 350);
    assert_eq!(c.cmd("RNTO c.txt").await.0, 250);
    assert_eq!(
        moto::object(&bucket, &key("c.txt")),
        Some(b"first".to_vec())
    );

    assert_eq!(c.cmd("MKD d").await.0, 257);
    assert_eq!(c.cmd("MKD d/sub").await.0, 257);
    c.stor("d/x", b"x").await;
    c.stor("d/sub/y", b"y").await;
    assert_eq!(c.cmd("RNFR d").await.0, 350);
    assert_eq!(c.cmd("RNTO e").await.0, 250);
    assert_eq!(
        alice_keys(&bucket),
        [
            "c.txt",
            "e/.ferry-dir",
            "e/sub/.ferry-dir",
            "e/sub/y",
            "e/x"
        ]
    );
    assert_eq!(c.retr("e/sub/y").await, b"y");

    assert_eq!(c.cmd("RNFR e").await.0, 350);
    assert_eq!(c.cmd("RNTO e/sub/inside").await.0, 553, "into itself");
    assert_eq!(c.cmd("RNFR c.txt").await.0, 350);
    assert_eq!(c.cmd("RNTO e").await.0, 550, "a file over a directory");
    assert_eq!(c.cmd("RNFR missing").await.0, 550);
    assert_eq!(
        alice_keys(&bucket).len(),
        5,
        "failed renames change nothing"
    );
}

#[tokio::test]
async fn dele_removes_objects_and_rmd_removes_only_empty_directories() {
    let (server, bucket) = server();
    let mut c = alice(&server).await;
    assert_eq!(c.cmd("MKD d").await.0, 257);
    c.stor("d/f", b"f").await;
    let r = c.cmd("RMD d").await;
    assert_eq!(r, (550, "Directory not empty".into()));
    assert_eq!(c.cmd("DELE d").await.0, 550, "DELE of a directory");
    assert_eq!(c.cmd("DELE d/f").await.0, 250);
    assert_eq!(moto::object(&bucket, &key("d/f")), None);
    assert_eq!(c.cmd("DELE d/f").await.0, 550, "DELE of a missing file");
    assert_eq!(nlst(&mut c, "/").await, ["d"], "the marker keeps it");
    assert_eq!(c.cmd("RMD d").await.0, 250);
    assert!(alice_keys(&bucket).is_empty());
    assert_eq!(c.cmd("RMD d").await.0, 550);
    c.stor("f", b"f").await;
    assert_eq!(c.cmd("RMD f").await.0, 550, "RMD of a file");
    assert_eq!(c.cmd("RMD /").await.0, 550);
}

#[tokio::test]
async fn users_reach_only_their_own_prefix() {
    let (server, bucket) = server();
    let mut bob = Raw::login(server.addr(), "bob", "bob-pw").await;
    bob.stor("secret", b"bob's").await;
    let mut c = alice(&server).await;
    for path in ["../bob/secret", "/../bob/secret", "..%2Fbob/secret"] {
        let t = c.transfer(format!("RETR {path}"), None).await;
        assert_eq!(t.first.0, 550, "RETR {path}: {t:?}");
    }
    c.stor("../../x", b"x").await;
    assert!(nlst(&mut c, "/").await == ["x"]);
    assert_eq!(
        moto::keys(&bucket),
        ["users/alice/x", "users/bob/secret"],
        "everything stays under users/<name>/"
    );
}

#[tokio::test]
async fn appe_and_rest_stor_get_504_before_any_data_connection_and_the_session_goes_on() {
    let (server, bucket) = server();
    let mut c = alice(&server).await;
    c.stor("base", b"0123456789").await;

    let t = c.transfer("APPE base", Some(b"more")).await;
    assert_eq!(t.first.0, 504, "APPE: {t:?}");
    assert!(
        t.first
            .1
            .starts_with("APPE is not supported on object storage"),
        "{t:?}"
    );
    assert_eq!(c.cmd("REST 4").await.0, 350);
    let t = c.transfer("STOR base", Some(b"rest")).await;
    assert_eq!(t.first.0, 504, "REST+STOR: {t:?}");
    assert!(
        t.first
            .1
            .starts_with("REST+STOR is not supported on object storage"),
        "{t:?}"
    );
    assert_eq!(
        moto::object(&bucket, &key("base")),
        Some(b"0123456789".to_vec())
    );
    assert_eq!(c.cmd("NOOP").await.0, 200);
    // The refused REST does not linger: the next STOR replaces the whole object.
    c.stor("base", b"whole").await;
    assert_eq!(moto::object(&bucket, &key("base")), Some(b"whole".to_vec()));

    // A client's own resume: suppaftp's APPE reports the 504.
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();
    let err = ftp
        .append_file("base", &mut &b"tail"[..])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("504"), "{err}");
    ftp.noop().await.unwrap();
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn quota_refuses_uploads_over_the_limit_with_552_and_usage_matches_the_bucket() {
    let (mut server, bucket) = server();
    let mut c = Raw::login(server.addr(), "q", "q-pw").await;
    let usage = |bytes, files| Usage { bytes, files };
    c.stor("a", &random_bytes(60_000, 5)).await;
    assert_eq!(site_quota(&mut c).await, usage(60_000, 1));

    let t = c.transfer("STOR b", Some(&random_bytes(60_000, 6))).await;
    assert_eq!(t.first.0, 150);
    let last = t.last.unwrap();
    assert_eq!(last.0, 552, "{last:?}");
    assert!(
        last.1.starts_with("Quota exceeded: 40000 bytes"),
        "{last:?}"
    );
    assert_eq!(
        moto::object(&bucket, "users/q/b"),
        None,
        "nothing left behind"
    );
    assert_eq!(site_quota(&mut c).await, usage(60_000, 1));

    // A replacement may reuse the bytes of the object it replaces; markers are not files.
    c.stor("a", &random_bytes(90_000, 7)).await;
    assert_eq!(c.cmd("MKD d").await.0, 257);
    assert_eq!(site_quota(&mut c).await, usage(90_000, 1));
    assert_eq!(c.cmd("DELE a").await.0, 250);
    c.stor("d/x", &random_bytes(1000, 8)).await;
    assert_eq!(site_quota(&mut c).await, usage(1000, 1));
    assert_eq!(usage_file(server.data.path(), "q"), Some(usage(1000, 1)));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["user", "list", "--data"])
        .arg(server.data.path())
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    let row = list.lines().find(|l| l.starts_with("q ")).unwrap();
    assert!(row.contains(&human(1000)), "{list}");

    // Without a usage file, the next login scans the bucket and finds the same.
    drop(c);
    server.stop();
    std::fs::remove_file(server.data.path().join("quota").join("q.toml")).unwrap();
    server.restart();
    let mut c = Raw::login(server.addr(), "q", "q-pw").await;
    assert_eq!(site_quota(&mut c).await, usage(1000, 1));
}

#[test]
fn ferry_serve_keeps_files_in_the_bucket_its_ferry_toml_names() {
    let bucket = moto::bucket();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let toml = format!(
        "storage = \"s3\"\n\n[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{}\"\nprefix = \"tenants/\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
        moto::endpoint(),
        bucket.bucket
    );
    std::fs::write(data.join("ferry.toml"), toml).unwrap();
    let add = run_to_end(
        data,
        &["user", "add", "carol", "--password-stdin"],
        "carol-pw\n",
    );
    assert_eq!(add.0, Some(0), "{add:?}");
    let server = Server::start(data, &["--listen", "127.0.0.1:0"], 1);
    let url = format!("ftp://carol:carol-pw@{}/hello.txt", server.addr());
    let local = data.join("upload.txt");
    std::fs::write(&local, b"hello bucket").unwrap();

    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-s", "-S"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = curl(&["-T", local.to_str().unwrap(), &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        moto::object(&bucket, "tenants/carol/hello.txt"),
        Some(b"hello bucket".to_vec())
    );
    let out = curl(&[&url]);
    assert_eq!(out.stdout, b"hello bucket");
    // curl --append sends APPE: refused, and the object is as it was.
    let out = curl(&["-a", "-T", local.to_str().unwrap(), &url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("504"),
        "{out:?}"
    );
    assert_eq!(
        moto::object(&bucket, "tenants/carol/hello.txt"),
        Some(b"hello bucket".to_vec())
    );
    assert!(!data.join("home").join("carol").join("hello.txt").exists());
}
