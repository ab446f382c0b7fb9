//! The transfer log in the xferlog format of wu-ftpd and vsftpd (`man 5 xferlog`), which log
//! analysers read: one line per completed or aborted file transfer, appended. Lines go
//! through a channel to a thread of their own, so a slow disk never holds a session.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use tracing::warn;

use crate::metrics::Direction;

/// One finished transfer, as xferlog records it.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// How long it took (written in whole seconds, at least 1 as vsftpd does).
    pub took: Duration,
    /// The client's address.
    pub remote: IpAddr,
    /// Bytes moved.
    pub bytes: u64,
    /// The file, as the client sees it inside its home.
    pub path: &'a str,
    /// TYPE A (`true`) or I.
    pub ascii: bool,
    /// Which way the file went.
    pub direction: Direction,
    /// The account.
    pub user: &'a str,
    /// Whether it completed (`c`) or not (`i`).
    pub complete: bool,
}

impl Entry<'_> {
    /// The line, without its newline, stamped with `now` (local time, as `ctime` prints it).
    pub fn line(&self, now: &str) -> String {
        // Fields are separated by single spaces: a space in a name would shift the columns.
        let path: String = self
            .path
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        let seconds = self.took.as_secs_f64().round().max(1.0) as u64;
        format!(
            "{now} {seconds} {remote} {bytes} {path} {kind} _ {direction} r {user} ftp 0 * {status}",
            remote = self.remote,
            bytes = self.bytes,
            kind = if self.ascii { 'a' } else { 'b' },
            direction = match self.direction {
                Direction::Download => 'o',
                Direction::Upload => 'i',
            },
            user = self.user,
            status = if self.complete { 'c' } else { 'i' },
        )
    }
}

/// An open transfer log; lines are written by its own thread.
#[derive(Debug)]
pub struct Xferlog {
    lines: Sender<String>,
    path: PathBuf,
}

impl Xferlog {
    /// Opens `path` for appending (created when missing) and starts the writer thread, which
    /// ends when this is dropped.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot open the xferlog {}: {err}", path.display()),
                )
            })?;
        let (lines, received) = channel();
        let shown = path.to_path_buf();
        std::thread::Builder::new()
            .name("xferlog".into())
            .spawn(move || write_lines(file, received, &shown))?;
        Ok(Xferlog {
            lines,
            path: path.to_path_buf(),
        })
    }

    /// Queues the line for `entry`; never blocks.
    pub fn record(&self, entry: &Entry<'_>) {
        let now = chrono::Local::now()
            .format("%a %b %e %H:%M:%S %Y")
            .to_string();
        if self.lines.send(entry.line(&now)).is_err() {
            warn!(path = %self.path.display(), "xferlog writer is gone; line lost");
        }
    }
}

/// Writes lines as they come, flushing whenever none is waiting.
fn write_lines(file: File, lines: Receiver<String>, path: &Path) {
    let mut out = BufWriter::new(file);
    while let Ok(line) = lines.recv() {
        let mut result = writeln!(out, "{line}");
        while let (Ok(()), Ok(line)) = (&result, lines.try_recv()) {
            result = writeln!(out, "{line}");
        }
        if let Err(err) = result.and_then(|()| out.flush()) {
            warn!(path = %path.display(), %err, "cannot write the xferlog");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_fourteen_xferlog_fields() {
        let entry = Entry {
            took: Duration::from_millis(2600),
            remote: "192.0.2.7".parse().unwrap(),
            bytes: 1234,
            path: "/dir/my file.txt",
            ascii: false,
            direction: Direction::Upload,
            user: "alice",
            complete: true,
        };
        assert_eq!(
            entry.line("Sun Nov 22 11:27:05 2026"),
            "Sun Nov 22 11:27:05 2026 3 192.0.2.7 1234 /dir/my_file.txt b _ i r alice ftp 0 * c"
        );
        let quick = Entry {
            took: Duration::from_millis(10),
            direction: Direction::Download,
            ascii: true,
            complete: false,
            ..entry
        };
        let line = quick.line("Sun Nov 22 11:27:05 2026");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 18, "{line}");
        assert_eq!(fields[5], "1", "at least one second");
        assert_eq!(
            &fields[9..],
            ["a", "_", "o", "r", "alice", "ftp", "0", "*", "i"]
        );
    }

    #[test]
    fn lines_are_appended_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xferlog");
        std::fs::write(&path, "old line\n").unwrap();
        let log = Xferlog::open(&path).unwrap();
        let entry = Entry {
            took: Duration::from_secs(1),
            remote: "127.0.0.1".parse().unwrap(),
            bytes: 5,
            path: "/f",
            ascii: false,
            direction: Direction::Download,
            user: "bob",
            complete: true,
        };
        log.record(&entry);
        log.record(&entry);
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 3 {
                assert!(text.starts_with("old line\n"), "{text}");
                assert!(text.lines().skip(1).all(|l| l.ends_with(" bob ftp 0 * c")));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
