//! Two `ferry serve` nodes sharing one PostgreSQL user store (a real server, testkit's) and
//! one home directory tree, as several machines behind a load balancer would share a database
//! and a network filesystem: accounts made with `ferry user` on one node log in on the other,
//! and uploads for one user on both nodes at once never jointly pass the quota, with the
//! recorded usage exact afterwards; the same with the files in one S3 bucket (moto's server).

use std::fs;
use std::path::Path;

use ferry_server::storage::s3::S3Settings;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tempfile::TempDir;
use testkit::{moto, random_bytes};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::binary::{Server, run_to_end};
use super::raw::Raw;

/// A node's data directory whose ferry.toml points at `url`.
fn node_data(root: &Path, name: &str, url: &str) -> std::path::PathBuf {
    let data = root.join(name);
    fs::create_dir_all(&data).unwrap();
    fs::write(
        data.join("ferry.toml"),
        format!("database_url = \"{url}\"\nlogin_fail_delay_ms = 10\n"),
    )
    .unwrap();
    data
}

/// `ferry user ARGS...` against `data`, which must succeed; its stdout.
fn ferry_user(data: &Path, args: &[&str], stdin: &str) -> String {
    let mut full = vec!["user"];
    full.extend_from_slice(args);
    let (code, out, err) = run_to_end(data, &full, stdin);
    assert_eq!(
        code,
        Some(0),
        "ferry user {args:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// The PASS reply of a fresh suppaftp login: 230, or the code of the refusal.
async fn login_code(node: &Server, user: &str, password: &str) -> u32 {
    let mut ftp = AsyncFtpStream::connect(node.addr()).await.unwrap();
    match ftp.login(user, password).await {
        Ok(()) => {
            ftp.quit().await.unwrap();
            230
        }
        Err(suppaftp::FtpError::UnexpectedResponse(response)) => response.status.code(),
        Err(err) => panic!("login as {user}: {err}"),
    }
}

/// Usage (bytes, files) as the database records it.
fn recorded_usage(url: &str, user: &str) -> (u64, u64) {
    let row = testkit::postgres::server().query(
        url,
        &format!("SELECT used_bytes, used_files FROM ferry_users WHERE name = '{user}'"),
    );
    let (bytes, files) = row.split_once('|').unwrap_or_else(|| panic!("row {row:?}"));
    (bytes.parse().unwrap(), files.parse().unwrap())
}

/// Bytes and regular files under `dir`.
fn on_disk(dir: &Path) -> (u64, u64) {
    let usage = ferry_server::storage::fs::scan_home(dir).unwrap();
    (usage.bytes, usage.files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_made_on_one_node_log_in_on_the_other() {
    let url = testkit::postgres::server().create_database();
    let root = TempDir::new().unwrap();
    let (a, b) = (
        node_data(root.path(), "a", &url),
        node_data(root.path(), "b", &url),
    );
    let node_a = Server::start(&a, &["--listen", "127.0.0.1:0"], 1);
    let node_b = Server::start(&b, &["--listen", "127.0.0.1:0"], 1);
    // Only the first node to start finds the database empty and creates `admin`.
    assert!(node_a.admin_password().is_some());
    assert!(node_b.admin_password().is_none());
    assert_eq!(
        login_code(&node_b, "admin", &node_a.admin_password().unwrap()).await,
        230
    );

    let home = root.path().join("shared/alice");
    let home_arg = home.to_str().unwrap();
    ferry_user(
        &a,
        &["add", "alice", "--home", home_arg, "--password-stdin"],
        "first-pw\n",
    );
    assert_eq!(login_code(&node_b, "alice", "first-pw").await, 230);

    // An upload through node B is in the shared home and counted in the database.
    let mut ftp = AsyncFtpStream::connect(node_b.addr()).await.unwrap();
    ftp.login("alice", "first-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    let data = random_bytes(100_000, 1);
    ftp.put_file("one.bin", &mut data.as_slice()).await.unwrap();
    ftp.quit().await.unwrap();
    assert_eq!(fs::read(home.join("one.bin")).unwrap(), data);
    assert_eq!(recorded_usage(&url, "alice"), (100_000, 1));
    let list = ferry_user(&a, &["list"], "");
    let row = list.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(row.contains(home_arg), "{list}");

    // A password changed on node B is the password on node A.
    ferry_user(&b, &["passwd", "alice", "--password-stdin"], "second-pw\n");
    assert_eq!(login_code(&node_a, "alice", "first-pw").await, 530);
    assert_eq!(login_code(&node_a, "alice", "second-pw").await, 230);

    // A quota set on A is what `show` on B reports.
    ferry_user(&a, &["set", "alice", "--quota-bytes", "1MiB"], "");
    let show = ferry_user(&b, &["show", "alice"], "");
    assert!(show.contains("/ 1.0 MiB"), "{show}");

    // Renamed and deleted through node A: the database follows.
    let mut ftp = AsyncFtpStream::connect(node_a.addr()).await.unwrap();
    ftp.login("alice", "second-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.put_file("two.bin", &mut data[..1000].as_ref())
        .await
        .unwrap();
    assert_eq!(recorded_usage(&url, "alice"), (101_000, 2));
    ftp.rename("two.bin", "one.bin").await.unwrap();
    assert_eq!(recorded_usage(&url, "alice"), (1000, 1));
    ftp.rm("one.bin").await.unwrap();
    assert_eq!(recorded_usage(&url, "alice"), (0, 0));
    ftp.put_file("three.bin", &mut data.as_slice())
        .await
        .unwrap();
    ftp.quit().await.unwrap();

    // Files changed behind the server's back: `rescan` on either node records the truth.
    fs::write(home.join("side.bin"), [7u8; 500]).unwrap();
    ferry_user(&b, &["rescan", "alice"], "");
    assert_eq!(recorded_usage(&url, "alice"), (100_500, 2));

    // Deleted on A: refused on B, files kept.
    ferry_user(&a, &["del", "alice"], "");
    assert_eq!(login_code(&node_b, "alice", "second-pw").await, 530);
    assert!(home.join("three.bin").exists());
}

/// One upload through `node`: true when it completed (226), false when the quota refused it
/// (552); anything else fails the test.
async fn upload(node: std::net::SocketAddr, name: String, data: Vec<u8>) -> bool {
    let mut ftp = AsyncFtpStream::connect(node).await.unwrap();
    ftp.login("carol", "carol-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    let result = ftp.put_file(&name, &mut data.as_slice()).await;
    let done = match result {
        Ok(_) => true,
        Err(suppaftp::FtpError::UnexpectedResponse(response)) => {
            assert_eq!(response.status.code(), 552, "{name}: {response:?}");
            false
        }
        // The server may stop reading when the quota is reached, so the client's write
        // fails before it sees the reply.
        Err(suppaftp::FtpError::ConnectionError(_)) => false,
        Err(err) => panic!("{name}: {err}"),
    };
    let _ = ftp.quit().await;
    done
}

/// `count` uploads for carol at once, `f0.bin`, `f1.bin`, ... of `size` bytes (seeded by
/// their number), alternating between the nodes; how many completed.
async fn upload_at_once(nodes: [&Server; 2], count: u64, size: usize) -> u64 {
    let mut uploads = JoinSet::new();
    for i in 0..count {
        let node = nodes[(i % 2) as usize].addr();
        uploads.spawn(upload(node, format!("f{i}.bin"), random_bytes(size, i)));
    }
    let done = uploads.join_all().await;
    done.into_iter().filter(|completed| *completed).count() as u64
}

/// With carol's usage settled at `used` (bytes, files), what is left of `quota` can be
/// uploaded through the first node, and the second then refuses a single byte.
async fn rest_of_the_quota_is_usable_and_no_more(
    nodes: [&Server; 2],
    url: &str,
    quota: u64,
    (bytes, files): (u64, u64),
) {
    let rest = random_bytes((quota - bytes) as usize, 9);
    assert!(upload(nodes[0].addr(), "rest.bin".into(), rest).await);
    assert!(!upload(nodes[1].addr(), "over.bin".into(), vec![1]).await);
    assert_eq!(recorded_usage(url, "carol"), (quota, files + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_uploading_for_one_user_stay_within_the_quota() {
    const QUOTA: u64 = 10 << 20;
    const FILE: usize = 3 << 20;
    let url = testkit::postgres::server().create_database();
    let root = TempDir::new().unwrap();
    let (a, b) = (
        node_data(root.path(), "a", &url),
        node_data(root.path(), "b", &url),
    );
    let home = root.path().join("shared/carol");
    ferry_user(
        &a,
        &[
            "add",
            "carol",
            "--home",
            home.to_str().unwrap(),
            "--quota-bytes",
            &QUOTA.to_string(),
            "--password-stdin",
        ],
        "carol-pw\n",
    );
    let node_a = Server::start(&a, &["--listen", "127.0.0.1:0"], 1);
    let node_b = Server::start(&b, &["--listen", "127.0.0.1:0"], 1);

    // Six 3 MiB uploads at once, three through each node: 18 MiB against a 10 MiB quota.
    let completed = upload_at_once([&node_a, &node_b], 6, FILE).await;

    let (bytes, files) = on_disk(&home);
    assert!(bytes <= QUOTA, "{bytes} bytes stored, quota {QUOTA}");
    // Quota is reserved as bytes arrive, so uploads that run side by side may all be stopped
    // before any completes; what matters is that together they never pass the limit.
    assert!(completed <= 3, "{completed} uploads of 3 MiB completed");
    for i in 0..6u64 {
        let path = home.join(format!("f{i}.bin"));
        if let Ok(stored) = fs::read(&path) {
            assert_eq!(
                stored,
                random_bytes(FILE, i),
                "{} is not whole",
                path.display()
            );
        }
    }
    assert_eq!(files, completed, "files on disk vs uploads completed");
    assert_eq!(bytes, completed * FILE as u64);
    // Exact: what the nodes charged ahead while uploading was all given back.
    assert_eq!(recorded_usage(&url, "carol"), (bytes, files));

    rest_of_the_quota_is_usable_and_no_more([&node_b, &node_a], &url, QUOTA, (bytes, files)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_connection_can_require_a_verified_tls_server() {
    let pg = testkit::postgres::server();
    let url = pg.create_database();
    let root = TempDir::new().unwrap();
    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        pg.ca_path().display()
    );
    let data = node_data(root.path(), "a", &verified);
    let node = Server::start(&data, &["--listen", "127.0.0.1:0"], 1);
    let admin = node.admin_password().unwrap();
    assert_eq!(login_code(&node, "admin", &admin).await, 230);
    let database = url.rsplit('/').next().unwrap();
    let encrypted = pg.query(
        &url,
        &format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{database}' \
             AND a.pid <> pg_backend_pid()"
        ),
    );
    let (tls, all) = encrypted.split_once('|').unwrap();
    assert!(all.parse::<u32>().unwrap() >= 1, "{encrypted}");
    assert_eq!(tls, all, "connections with TLS | all: {encrypted}");

    // A server whose certificate does not chain to the given root is refused.
    let other = root.path().join("other-ca.pem");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    fs::write(&other, made.cert.pem()).unwrap();
    let wrong = format!("{url}?sslmode=verify-full&sslrootcert={}", other.display());
    let data = node_data(root.path(), "b", &wrong);
    let (code, _, err) = run_to_end(&data, &["user", "list"], "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot open the user database"), "{err}");
}

/// A node's data directory whose ferry.toml points at the database at `url` and keeps files
/// in `bucket`.
fn s3_node_data(root: &Path, name: &str, url: &str, bucket: &S3Settings) -> std::path::PathBuf {
    let data = node_data(root, name, url);
    let mut toml = fs::read_to_string(data.join("ferry.toml")).unwrap();
    toml.push_str(&format!(
        "storage = \"s3\"\n\n[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{}\"\n\
         prefix = \"{}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
        moto::endpoint(),
        bucket.bucket,
        bucket.prefix,
    ));
    fs::write(data.join("ferry.toml"), toml).unwrap();
    data
}

/// Bytes and objects under `prefix` in the bucket.
fn in_bucket(bucket: &S3Settings, prefix: &str) -> (u64, u64) {
    let keys: Vec<String> = moto::keys(bucket)
        .into_iter()
        .filter(|key| key.starts_with(prefix))
        .collect();
    let bytes = keys
        .iter()
        .map(|key| moto::object(bucket, key).unwrap().len() as u64)
        .sum();
    (bytes, keys.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_bucket_and_one_database_hold_the_quota_together() {
    const QUOTA: u64 = 2_500_000;
    const FILE: usize = 1_000_000;
    let url = testkit::postgres::server().create_database();
    let bucket = moto::bucket();
    let root = TempDir::new().unwrap();
    let (a, b) = (
        s3_node_data(root.path(), "a", &url, &bucket),
        s3_node_data(root.path(), "b", &url, &bucket),
    );
    ferry_user(
        &a,
        &[
            "add",
            "carol",
            "--quota-bytes",
            &QUOTA.to_string(),
            "--password-stdin",
        ],
        "carol-pw\n",
    );
    let node_a = Server::start(&a, &["--listen", "127.0.0.1:0"], 1);
    let node_b = Server::start(&b, &["--listen", "127.0.0.1:0"], 1);

    // Six 1 MB uploads at once, three through each node, against a 2.5 MB quota.
    let completed = upload_at_once([&node_a, &node_b], 6, FILE).await;

    let prefix = format!("{}carol/", bucket.prefix);
    let (bytes, objects) = in_bucket(&bucket, &prefix);
    assert!(bytes <= QUOTA, "{bytes} bytes stored, quota {QUOTA}");
    assert!(completed <= 2, "{completed} uploads completed");
    assert_eq!((bytes, objects), (completed * FILE as u64, completed));
    for key in moto::keys(&bucket) {
        let i: u64 = key.trim_start_matches(&prefix)[1..2].parse().unwrap();
        assert_eq!(moto::object(&bucket, &key).unwrap(), random_bytes(FILE, i));
    }
    assert_eq!(recorded_usage(&url, "carol"), (bytes, objects));

    rest_of_the_quota_is_usable_and_no_more([&node_a, &node_b], &url, QUOTA, (bytes, objects))
        .await;

    // Objects changed behind the nodes' back: `ferry user rescan` measures the bucket.
    let mut ftp = AsyncFtpStream::connect(node_b.addr()).await.unwrap();
    ftp.login("carol", "carol-pw").await.unwrap();
    ftp.rm(&moto::keys(&bucket)[0][prefix.len()..])
        .await
        .unwrap();
    ftp.quit().await.unwrap();
    assert_eq!(recorded_usage(&url, "carol"), in_bucket(&bucket, &prefix));
    testkit::postgres::server().query(
        &url,
        "UPDATE ferry_users SET used_bytes = 1, used_files = 7 WHERE name = 'carol'",
    );
    ferry_user(&b, &["rescan", "carol"], "");
    assert_eq!(recorded_usage(&url, "carol"), in_bucket(&bucket, &prefix));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_get_421_while_the_database_is_unavailable() {
    let pg = testkit::postgres::server();
    let url = pg.create_database();
    let root = TempDir::new().unwrap();
    let data = node_data(root.path(), "a", &url);
    let mut node = Server::start(&data, &["--listen", "127.0.0.1:0"], 1);
    let admin = node.admin_password().unwrap();
    assert_eq!(login_code(&node, "admin", &admin).await, 230);

    // The database disappears under the running node (its connections are cut).
    let (server_url, database) = url.rsplit_once('/').unwrap();
    pg.query(
        &format!("{server_url}/postgres"),
        &format!("DROP DATABASE {database} WITH (FORCE)"),
    );
    assert_eq!(login_code(&node, "admin", &admin).await, 421);
    // The server stays up and keeps answering.
    assert_eq!(login_code(&node, "admin", &admin).await, 421);
    assert!(node.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_upload_leaves_the_recorded_usage_exact() {
    let url = testkit::postgres::server().create_database();
    let root = TempDir::new().unwrap();
    let data = node_data(root.path(), "a", &url);
    let home = root.path().join("shared/dave");
    ferry_user(
        &data,
        &[
            "add",
            "dave",
            "--home",
            home.to_str().unwrap(),
            "--quota-bytes",
            "1GiB",
            "--password-stdin",
        ],
        "dave-pw\n",
    );
    let node = Server::start(&data, &["--listen", "127.0.0.1:0"], 1);
    let mut ftp = AsyncFtpStream::connect(node.addr()).await.unwrap();
    ftp.login("dave", "dave-pw").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.put_file("whole.bin", &mut random_bytes(200_000, 1).as_slice())
        .await
        .unwrap();
    ftp.quit().await.unwrap();
    // 6 MB sent (past the first 4 MiB lease), then the client's machine resets the data
    // connection: the node has charged leases for bytes that will never come.
    let mut c = Raw::login(node.addr(), "dave", "dave-pw").await;
    assert_eq!(c.cmd("TYPE I").await.0, 200);
    let mut data_conn = c.open_data().await;
    assert_eq!(c.cmd("STOR cut.bin").await.0, 150);
    data_conn
        .write_all(&random_bytes(6_000_000, 2))
        .await
        .unwrap();
    data_conn.set_zero_linger().unwrap();
    drop(data_conn);
    let reply = c.reply().await;
    assert!(matches!(reply.0, 426 | 451), "{reply:?}");

    // The node settles in the background once it notices; the database must come to say
    // exactly what is on disk (the cut file is kept for a resume), leases given back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (recorded, stored) = (recorded_usage(&url, "dave"), on_disk(&home));
        if recorded == stored && stored.1 == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recorded {recorded:?}, on disk {stored:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
