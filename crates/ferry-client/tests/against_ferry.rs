//! The client library against a real ferry server on 127.0.0.1: plain, explicit and implicit
//! FTPS, transfers compared byte for byte, checksums, and more TLS uploads in a row than one
//! control session has tickets for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::tls::TlsOptions;
use ferry_client::{Client, Endpoint, Options, StoreMode};
use testkit::{TestServer, random_bytes};

fn options(server: &TestServer) -> Options {
    Options {
        tls: TlsOptions {
            insecure: false,
            ca_file: Some(server.cert_path()),
        },
        ..Options::default()
    }
}

async fn round_trip(client: &mut Client, name: &str, data: &[u8]) -> Vec<u8> {
    client
        .stor(name, StoreMode::Replace, &mut &data[..], &mut |_| {})
        .await
        .unwrap();
    let mut back = Vec::new();
    client.retr(name, 0, &mut back, &mut |_| {}).await.unwrap();
    back
}

#[tokio::test]
async fn plain_explicit_and_implicit_sessions_move_bytes_intact() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .implicit_tls()
        .start();
    let data = random_bytes(3 << 20, 1);
    let urls = [
        format!("ftp://{}/", server.addr()),
        format!("ftpes://{}/", server.addr()),
        format!("ftps://{}/", server.implicit_addr()),
    ];
    for (i, url) in urls.iter().enumerate() {
        let endpoint = Endpoint::parse(url, false).unwrap();
        let mut client = Client::connect(&endpoint, "alice", "alice-pw", &options(&server))
            .await
            .unwrap();
        let name = format!("f{i}.bin");
        assert_eq!(round_trip(&mut client, &name, &data).await, data, "{url}");
        assert_eq!(
            std::fs::read(server.home("alice").join(&name)).unwrap(),
            data
        );
        let sum = client.checksum(&name).await.unwrap().unwrap();
        assert_eq!(sum.algorithm, ferry_proto::HashAlgorithm::Sha256);
        let local = {
            let mut h = ferry_proto::digest::Hasher::new(sum.algorithm);
            h.update(&data);
            ferry_proto::digest::hex(&h.finish())
        };
        assert_eq!(sum.hex, local);
        let names: Vec<_> = client
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&name), "{names:?}");
        client.quit().await.unwrap();
    }
}

#[tokio::test]
async fn twenty_tls_uploads_in_a_row_outlast_the_ticket_supply() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let endpoint = Endpoint::parse(&format!("ftpes://{}/", server.addr()), false).unwrap();
    let mut client = Client::connect(&endpoint, "alice", "alice-pw", &options(&server))
        .await
        .unwrap();
    client.mkdir("d").await.unwrap();
    client.cwd("d").await.unwrap();
    for i in 0..20u64 {
        let data = random_bytes(1000, i);
        client
            .stor(
                &format!("u{i}"),
                StoreMode::Replace,
                &mut &data[..],
                &mut |_| {},
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(server.home("alice").join(format!("d/u{i}"))).unwrap(),
            data
        );
    }
    assert_eq!(client.pwd().await.unwrap(), "/d");
}

#[tokio::test]
async fn resume_both_ways_and_refusals_carry_the_reply() {
    let server = TestServer::start();
    let endpoint = Endpoint::parse(&format!("ftp://{}/", server.addr()), false).unwrap();
    let mut client = Client::connect(&endpoint, "alice", "alice-pw", &Options::default())
        .await
        .unwrap();
    let data = random_bytes(100_000, 7);
    client
        .stor("r", StoreMode::Replace, &mut &data[..40_000], &mut |_| {})
        .await
        .unwrap();
    client
        .stor(
            "r",
            StoreMode::At(40_000),
            &mut &data[40_000..],
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(server.home("alice").join("r")).unwrap(), data);
    let mut tail = Vec::new();
    client
        .retr("r", 99_000, &mut tail, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(tail, &data[99_000..]);
    let err = client
        .retr("missing", 0, &mut Vec::new(), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(550));
    assert_eq!(client.size("r").await.unwrap(), Some(100_000));
    let bad = Client::connect(&endpoint, "alice", "wrong", &Options::default())
        .await
        .unwrap_err();
    assert_eq!(bad.reply_code(), Some(530));
}

#[tokio::test]
async fn byte_ranges_stop_with_abor_and_leave_the_session_usable() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .tls()
        .start();
    let data = random_bytes(8 << 20, 3);
    std::fs::write(server.home("alice").join("big"), &data).unwrap();
    for url in [
        format!("ftp://{}/", server.addr()),
        format!("ftpes://{}/", server.addr()),
    ] {
        let endpoint = Endpoint::parse(&url, false).unwrap();
        let mut client = Client::connect(&endpoint, "alice", "alice-pw", &options(&server))
            .await
            .unwrap();
        for (offset, len) in [(0, 1 << 20), (3 << 20, 1_000_001), ((8 << 20) - 10, 10)] {
            let mut range = Vec::new();
            let n = client
                .retr_range("big", offset, len, &mut range, &mut |_| {})
                .await
                .unwrap();
            assert_eq!(n, len, "{url}");
            let (start, end) = (offset as usize, (offset + len) as usize);
            assert_eq!(range, &data[start..end], "{url} {offset}+{len}");
            assert_eq!(client.command("NOOP").await.unwrap().code, 200, "{url}");
        }
        let err = client
            .retr_range("big", (8 << 20) - 10, 11, &mut Vec::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
        assert_eq!(client.command("NOOP").await.unwrap().code, 200, "{url}");
        assert_eq!(client.size("big").await.unwrap(), Some(8 << 20));
        client.quit().await.unwrap();
    }
}
