//! The shortest path through the server with suppaftp: login, upload, list, download.

use suppaftp::tokio::AsyncFtpStream;
use testkit::TestServer;

#[tokio::test]
async fn upload_list_and_download_round_trip() {
    let server = TestServer::start();
    let mut ftp = AsyncFtpStream::connect(server.addr()).await.unwrap();
    ftp.login("alice", "alice-pw").await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    let data = b"hello ferry".to_vec();
    ftp.put_file("hello.txt", &mut data.as_slice())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(server.home("alice").join("hello.txt")).unwrap(),
        data
    );
    assert_eq!(ftp.nlst(None).await.unwrap(), vec!["hello.txt".to_string()]);
    let mut stream = ftp.retr_as_stream("hello.txt").await.unwrap();
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .unwrap();
    stream.finish().await.unwrap();
    assert_eq!(back, data);
    ftp.quit().await.unwrap();
}
