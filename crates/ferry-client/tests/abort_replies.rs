//! `Client::retr_range` against a scripted server that answers ABOR in either order: the
//! aborted RETR's 426 before the ABOR's 226 (RFC 959), or the ABOR's reply first. Either way
//! the session must stay in step, which the NOOP after it shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_client::{Client, Endpoint, Options};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Replies to ABOR, in the order the scripted server sends them.
type AbortReplies = &'static [&'static str];

/// Serves one session: login, EPSV, REST, a RETR that streams until the client goes away,
/// ABOR answered with `abort_replies`, NOOP and QUIT.
async fn scripted_server(listener: TcpListener, abort_replies: AbortReplies) {
    let (control, _) = listener.accept().await.unwrap();
    let (read, mut write) = control.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 scripted\r\n").await.unwrap();
    let mut data_listener = None;
    let mut sender = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "USER" => "331 password\r\n".into(),
            "PASS" => "230 in\r\n".into(),
            "FEAT" => "211-Features\r\n EPSV\r\n REST STREAM\r\n211 End\r\n".into(),
            "TYPE" | "NOOP" => "200 ok\r\n".into(),
            "REST" => "350 rest\r\n".into(),
            "EPSV" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                data_listener = Some(listener);
                format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
            }
            "RETR" => {
                let listener = data_listener.take().unwrap();
                write.write_all(b"150 here it comes\r\n").await.unwrap();
                let (data, _) = listener.accept().await.unwrap();
                sender = Some(tokio::spawn(stream_until_closed(data)));
                continue;
            }
            "ABOR" => {
                // Let the send fail first, as a real server's would.
                let _ = sender.take().unwrap().await;
                abort_replies.concat()
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await.unwrap();
                return;
            }
            _ => "502 not here\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await.unwrap();
    }
}

/// Sends 'x' bytes until the client closes the data connection.
async fn stream_until_closed(mut data: TcpStream) {
    let chunk = [b'x'; 64 * 1024];
    while data.write_all(&chunk).await.is_ok() {}
}

async fn range_then_noop(abort_replies: AbortReplies) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(scripted_server(listener, abort_replies));
    let endpoint = Endpoint::parse(&format!("ftp://{addr}/"), false).unwrap();
    let mut client = Client::connect(&endpoint, "u", "p", &Options::default())
        .await
        .unwrap();
    let mut range = Vec::new();
    let n = client
        .retr_range("f", 1000, 300_000, &mut range, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(n, 300_000);
    assert!(range.iter().all(|&b| b == b'x'));
    let noop = client.command("NOOP").await.unwrap();
    assert_eq!(noop.code, 200, "{noop}");
    client.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn transfer_reply_before_abor_reply() {
    range_then_noop(&["426 Transfer aborted\r\n", "226 ABOR successful\r\n"]).await;
}

#[tokio::test]
async fn abor_reply_before_transfer_reply() {
    range_then_noop(&["225 ABOR successful\r\n", "426 Transfer aborted\r\n"]).await;
}
