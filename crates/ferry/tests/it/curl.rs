//! curl as a child process against the in-process server: byte-exact transfers in every data
//! connection mode, resume in both directions, listings, quote commands, IPv6, TYPE A and
//! permission failures. Reply codes show up as curl's exit codes and in its `-v` transcript.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;
use testkit::{TestServer, random_bytes};

/// Runs curl with `args`, silent but showing errors, never for longer than 60 seconds.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is not installed: run scripts/test")
}

/// The output as text, for assertion messages.
fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn assert_success(out: &Output) {
    assert!(out.status.success(), "curl failed:\n{}", show(out));
}

/// The commands curl sent (lines `> CMD` of its `-v` transcript on stderr).
fn sent_commands(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .map(str::to_owned)
        .collect()
}

/// True when curl's transcript shows a command starting with `prefix`.
fn sent(out: &Output, prefix: &str) -> bool {
    sent_commands(out).iter().any(|c| c.starts_with(prefix))
}

/// Reads a downloaded file; curl does not create the output file when nothing arrives, which
/// counts as empty here (the exit code and `size_download` are checked separately).
fn read_download(path: &Path) -> Vec<u8> {
    match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("{}: {err}", path.display()),
    }
}

/// Uploads `data` as `name` with curl `extra` options, checks the bytes on disk, downloads it
/// back with the same options and checks those bytes; returns both transcripts.
fn round_trip(server: &TestServer, name: &str, data: &[u8], extra: &[&str]) -> (Output, Output) {
    let local = TempDir::new().unwrap();
    let src = local.path().join("src");
    fs::write(&src, data).unwrap();
    let url = format!("{}/{name}", server.url("alice"));

    let mut args = extra.to_vec();
    args.extend(["-v", "-T", src.to_str().unwrap(), &url]);
    let up = curl(&args);
    assert_success(&up);
    let on_disk = fs::read(server.home("alice").join(name)).unwrap();
    assert_eq!(on_disk.len(), data.len(), "uploaded size of {name}");
    assert!(on_disk == data, "uploaded bytes of {name} differ");

    let dst = local.path().join("dst");
    let mut args = extra.to_vec();
    args.extend([
        "-v",
        "-w",
        "%{size_download}",
        "-o",
        dst.to_str().unwrap(),
        &url,
    ]);
    let down = curl(&args);
    assert_success(&down);
    assert_eq!(
        String::from_utf8_lossy(&down.stdout),
        data.len().to_string(),
        "size_download of {name}"
    );
    let back = read_download(&dst);
    assert_eq!(back.len(), data.len(), "downloaded size of {name}");
    assert!(back == data, "downloaded bytes of {name} differ");
    (up, down)
}

#[test]
fn passive_epsv_round_trips_empty_one_byte_and_ten_mib_files() {
    let server = TestServer::start();
    for (name, data) in [
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0x5a]),
        ("ten-mib.bin", random_bytes(10 << 20, 1)),
    ] {
        let (up, down) = round_trip(&server, name, &data, &[]);
        for out in [&up, &down] {
            assert!(sent(out, "EPSV"), "{}", show(out));
            assert!(!sent(out, "PASV"), "{}", show(out));
            assert!(sent(out, "TYPE I"), "{}", show(out));
        }
        assert!(sent(&up, &format!("STOR {name}")), "{}", show(&up));
        assert!(sent(&down, &format!("RETR {name}")), "{}", show(&down));
    }
}

#[test]
fn passive_pasv_round_trips_when_epsv_is_disabled() {
    let server = TestServer::start();
    let data = random_bytes(1 << 20, 2);
    let (up, down) = round_trip(&server, "pasv.bin", &data, &["--disable-epsv"]);
    for out in [&up, &down] {
        assert!(sent(out, "PASV"), "{}", show(out));
        assert!(!sent(out, "EPSV"), "{}", show(out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("< 227 "),
            "{}",
            show(out)
        );
    }
}

#[test]
fn active_eprt_round_trips() {
    let server = TestServer::start();
    let data = random_bytes(1 << 20, 3);
    let (up, down) = round_trip(&server, "eprt.bin", &data, &["--ftp-port", "127.0.0.1"]);
    for out in [&up, &down] {
        assert!(sent(out, "EPRT |1|127.0.0.1|"), "{}", show(out));
        assert!(!sent(out, "EPSV") && !sent(out, "PASV"), "{}", show(out));
    }
}

#[test]
fn active_port_round_trips_when_eprt_is_disabled() {
    let server = TestServer::start();
    let data = random_bytes(1 << 20, 4);
    let (up, down) = round_trip(
        &server,
        "port.bin",
        &data,
        &["--ftp-port", "127.0.0.1", "--disable-eprt"],
    );
    for out in [&up, &down] {
        assert!(sent(out, "PORT 127,0,0,1,"), "{}", show(out));
        assert!(!sent(out, "EPRT"), "{}", show(out));
    }
}

#[test]
fn download_resume_completes_a_partial_local_file() {
    let server = TestServer::start();
    let data = random_bytes(3 << 20, 5);
    fs::write(server.home("alice").join("big.bin"), &data).unwrap();
    let local = TempDir::new().unwrap();
    let dst = local.path().join("big.bin");
    let have = 1_234_567;
    fs::write(&dst, &data[..have]).unwrap();

    let url = format!("{}/big.bin", server.url("alice"));
    let out = curl(&[
        "-v",
        "-w",
        "%{size_download}",
        "-C",
        "-",
        "-o",
        dst.to_str().unwrap(),
        &url,
    ]);
    assert_success(&out);
    assert!(sent(&out, &format!("REST {have}")), "{}", show(&out));
    // Only the missing part travelled.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (data.len() - have).to_string()
    );
    let back = fs::read(&dst).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "resumed download differs");
}

#[test]
fn upload_resume_appends_the_missing_part_to_a_partial_remote_file() {
    let server = TestServer::start();
    let data = random_bytes(3 << 20, 6);
    let have = 765_432;
    let remote = server.home("alice").join("up.bin");
    fs::write(&remote, &data[..have]).unwrap();
    let local = TempDir::new().unwrap();
    let src = local.path().join("up.bin");
    fs::write(&src, &data).unwrap();

    let url = format!("{}/up.bin", server.url("alice"));
    let out = curl(&["-v", "-C", "-", "-T", src.to_str().unwrap(), &url]);
    assert_success(&out);
    assert!(sent(&out, "SIZE up.bin"), "{}", show(&out));
    assert!(sent(&out, "APPE up.bin"), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("< 213 {have}")),
        "{}",
        show(&out)
    );
    let on_disk = fs::read(&remote).unwrap();
    assert_eq!(on_disk.len(), data.len());
    assert!(on_disk == data, "resumed upload differs");
}

#[test]
fn directory_listing_shows_ls_lines_and_list_only_shows_names() {
    let server = TestServer::start();
    let home = server.home("alice");
    fs::write(home.join("notes.txt"), b"hello").unwrap();
    fs::write(home.join("data.bin"), random_bytes(4321, 7)).unwrap();
    fs::create_dir(home.join("photos")).unwrap();
    let url = format!("{}/", server.url("alice"));

    let out = curl(&[&url]);
    assert_success(&out);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let line_of = |name: &str| {
        *lines
            .iter()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
    };
    let notes = line_of("notes.txt");
    assert!(notes.starts_with("-r"), "{notes}");
    assert!(notes.split_whitespace().any(|f| f == "5"), "{notes}");
    let data = line_of("data.bin");
    assert!(data.starts_with("-r"), "{data}");
    assert!(data.split_whitespace().any(|f| f == "4321"), "{data}");
    let photos = line_of("photos");
    assert!(photos.starts_with('d'), "{photos}");
    for line in &lines {
        // ls -l: permissions, links, owner, group, size, month, day, time or year, name.
        assert!(line.split_whitespace().count() >= 9, "{line}");
    }

    let out = curl(&["--list-only", "-v", &url]);
    assert_success(&out);
    assert!(sent(&out, "NLST"), "{}", show(&out));
    let mut names: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["data.bin", "notes.txt", "photos"]);

    // A subdirectory URL (trailing slash) lists that directory.
    fs::write(home.join("photos/cat.jpg"), random_bytes(999, 8)).unwrap();
    let out = curl(&["-v", &format!("{url}photos/")]);
    assert_success(&out);
    assert!(sent(&out, "CWD photos"), "{}", show(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line = text.trim_end();
    assert!(
        line.starts_with("-r") && line.ends_with(" cat.jpg"),
        "{text}"
    );
    assert!(line.split_whitespace().any(|f| f == "999"), "{text}");
}

#[test]
fn quote_commands_make_delete_and_rename_on_disk() {
    let server = TestServer::start();
    let home = server.home("alice");
    fs::write(home.join("doomed.txt"), b"bye").unwrap();
    fs::write(home.join("old-name.txt"), b"keep me").unwrap();
    let url = format!("{}/", server.url("alice"));

    let out = curl(&["-Q", "MKD made", "--list-only", &url]);
    assert_success(&out);
    assert!(home.join("made").is_dir());
    // The quote ran before the listing (no `-` prefix), so the listing shows the new dir.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "made"),
        "{}",
        show(&out)
    );

    let out = curl(&["-Q", "DELE doomed.txt", "--list-only", &url]);
    assert_success(&out);
    assert!(!home.join("doomed.txt").exists());

    let out = curl(&[
        "-Q",
        "-RNFR old-name.txt",
        "-Q",
        "-RNTO new-name.txt",
        "--list-only",
        &url,
    ]);
    assert_success(&out);
    // Post-transfer quotes: the listing still saw the old name.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "old-name.txt"),
        "{}",
        show(&out)
    );
    assert!(!home.join("old-name.txt").exists());
    assert_eq!(fs::read(home.join("new-name.txt")).unwrap(), b"keep me");

    // A failing quote command fails curl (QUOTE error, 21) and changes nothing.
    let out = curl(&["-Q", "DELE no-such-file", "--list-only", &url]);
    assert_eq!(out.status.code(), Some(21), "{}", show(&out));
}

#[test]
fn ftp_create_dirs_uploads_into_a_new_directory_path() {
    let server = TestServer::start();
    let local = TempDir::new().unwrap();
    let src = local.path().join("deep.txt");
    let data = random_bytes(10_000, 8);
    fs::write(&src, &data).unwrap();
    let url = format!("{}/one/two/three/deep.txt", server.url("alice"));

    // Without --ftp-create-dirs the missing directories are an error and nothing is created.
    let out = curl(&["-T", src.to_str().unwrap(), &url]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!server.home("alice").join("one").exists());

    let out = curl(&["--ftp-create-dirs", "-T", src.to_str().unwrap(), &url]);
    assert_success(&out);
    let path = server.home("alice").join("one/two/three/deep.txt");
    assert_eq!(fs::read(path).unwrap(), data);
}

#[test]
fn ipv6_upload_and_download() {
    let server = TestServer::builder()
        .user("alice", "alice-pw")
        .listen("[::1]:0")
        .start();
    let addr = server.addr();
    assert!(addr.is_ipv6(), "{addr}");
    let local = TempDir::new().unwrap();
    let src = local.path().join("v6.bin");
    let data = random_bytes(1 << 20, 9);
    fs::write(&src, &data).unwrap();
    let url = format!("ftp://alice:alice-pw@[::1]:{}/v6.bin", addr.port());

    let out = curl(&["-v", "-T", src.to_str().unwrap(), &url]);
    assert_success(&out);
    assert!(sent(&out, "EPSV"), "{}", show(&out));
    assert_eq!(fs::read(server.home("alice").join("v6.bin")).unwrap(), data);

    let dst = local.path().join("back.bin");
    let out = curl(&["-o", dst.to_str().unwrap(), &url]);
    assert_success(&out);
    assert!(fs::read(&dst).unwrap() == data, "IPv6 download differs");

    // Active mode over IPv6: EPRT with protocol 2.
    let dst = local.path().join("active.bin");
    let out = curl(&["-v", "--ftp-port", "::1", "-o", dst.to_str().unwrap(), &url]);
    assert_success(&out);
    assert!(sent(&out, "EPRT |2|::1|"), "{}", show(&out));
    assert!(
        fs::read(&dst).unwrap() == data,
        "IPv6 active download differs"
    );
}

#[test]
fn bad_password_is_login_denied() {
    let server = TestServer::start();
    let url = format!("ftp://alice:wrong@{}/", server.addr());
    let out = curl(&["-v", &url]);
    assert_eq!(out.status.code(), Some(67), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("< 530"),
        "{}",
        show(&out)
    );
}

/// Bytes curl's `--trace` file shows for `direction` ("<= Recv data" or "=> Send data").
fn traced_data(trace: &str, direction: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut inside = false;
    for line in trace.lines() {
        if line.starts_with("<= ") || line.starts_with("=> ") || line.starts_with("== ") {
            inside = line.starts_with(direction);
            continue;
        }
        if !inside {
            continue;
        }
        // "0000: 61 0d 0a 62 ...   a..b": 16 hex pairs after the offset, then the text.
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        let hex: String = rest.chars().take(16 * 3).collect();
        for pair in hex.split_whitespace() {
            bytes.push(u8::from_str_radix(pair, 16).unwrap());
        }
    }
    bytes
}

#[test]
fn type_a_puts_crlf_on_the_wire_and_stores_lf() {
    let server = TestServer::start();
    let home = server.home("alice");
    let text = b"first line\nsecond line\n\nlast line without newline";
    let wire = b"first line\r\nsecond line\r\n\r\nlast line without newline";
    fs::write(home.join("unix.txt"), text).unwrap();
    let local = TempDir::new().unwrap();

    // Download: the server converts LF to CRLF; curl on Linux converts it back for the file,
    // so the wire bytes come from curl's trace.
    let trace = local.path().join("down.trace");
    let dst = local.path().join("unix.txt");
    let url = format!("{}/unix.txt", server.url("alice"));
    let out = curl(&[
        "--use-ascii",
        "--trace",
        trace.to_str().unwrap(),
        "-w",
        "%{size_download}",
        "-o",
        dst.to_str().unwrap(),
        &url,
    ]);
    assert_success(&out);
    let trace_text = fs::read_to_string(&trace).unwrap();
    assert!(trace_text.contains("TYPE A"), "{trace_text}");
    assert_eq!(
        String::from_utf8_lossy(&traced_data(&trace_text, "<= Recv data")),
        String::from_utf8_lossy(wire)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), wire.len().to_string());
    assert_eq!(fs::read(&dst).unwrap(), text, "round trip through TYPE A");

    // The same download with ;type=A in the URL.
    let dst2 = local.path().join("unix2.txt");
    let out = curl(&[
        "-w",
        "%{size_download}",
        "-o",
        dst2.to_str().unwrap(),
        &format!("{url};type=A"),
    ]);
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), wire.len().to_string());

    // Upload: curl sends CRLF, the server stores LF.
    let trace = local.path().join("up.trace");
    let src = local.path().join("local.txt");
    fs::write(&src, text).unwrap();
    let out = curl(&[
        "--use-ascii",
        "--trace",
        trace.to_str().unwrap(),
        "-T",
        src.to_str().unwrap(),
        &format!("{}/uploaded.txt", server.url("alice")),
    ]);
    assert_success(&out);
    let trace_text = fs::read_to_string(&trace).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&traced_data(&trace_text, "=> Send data")),
        String::from_utf8_lossy(wire)
    );
    assert_eq!(
        String::from_utf8_lossy(&fs::read(home.join("uploaded.txt")).unwrap()),
        String::from_utf8_lossy(text)
    );

    // TYPE I after TYPE A on the same file gives the stored bytes unchanged.
    let dst3 = local.path().join("binary.txt");
    let out = curl(&["-o", dst3.to_str().unwrap(), &url]);
    assert_success(&out);
    assert_eq!(fs::read(&dst3).unwrap(), text);
}

#[test]
fn read_only_user_cannot_upload() {
    let server = TestServer::start();
    let local = TempDir::new().unwrap();
    let src = local.path().join("nope.txt");
    fs::write(&src, b"should not arrive").unwrap();
    let url = format!("{}/nope.txt", server.url("reader"));

    let out = curl(&["-v", "-T", src.to_str().unwrap(), &url]);
    // CURLE_UPLOAD_FAILED: the server refused STOR.
    assert_eq!(out.status.code(), Some(25), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("< 550")
            || String::from_utf8_lossy(&out.stderr).contains("< 553"),
        "{}",
        show(&out)
    );
    assert!(!server.home("reader").join("nope.txt").exists());
    let leftovers: Vec<_> = fs::read_dir(server.home("reader"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Reading still works for that user.
    fs::write(server.home("reader").join("readable.txt"), b"ok").unwrap();
    let out = curl(&[&format!("{}/readable.txt", server.url("reader"))]);
    assert_success(&out);
    assert_eq!(out.stdout, b"ok");
}
