//! `ferry get --segments N`: one file fetched as byte ranges over up to N sessions at once,
//! like lftp's `pget -n`, every session writing into the same `.part` at its own offsets.
//!
//! Resuming (-c) continues `.part` in one stream, so a failed or interrupted (Ctrl-C)
//! segmented download cuts `.part` back to the ranges complete from its start: bytes that never
//! arrived are never taken for data. Only a harder kill (SIGKILL) can leave holes behind, and
//! the checksum comparison after `-c` then reports the mismatch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, anyhow, bail};
use ferry_client::Client;
use indicatif::ProgressBar;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Connector, Progress, Session, note_refused_sessions};

/// Fewer bytes than this per session do not repay the session's connection and login.
const MIN_SEGMENT: u64 = 1 << 20;

/// One byte range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    /// Its first byte.
    offset: u64,
    /// Its length.
    len: u64,
}

/// The ranges for `get --segments wanted`; fewer than two means one plain stream: with -c
/// (which continues `.part` where it stops), when the server does not tell the size or does
/// not offer REST STREAM, and for files too small to split.
pub(super) fn ranges_for(
    wanted: u16,
    resume: bool,
    size: Option<u64>,
    rest: bool,
    progress: &Progress,
) -> Vec<Segment> {
    if wanted <= 1 {
        return Vec::new();
    }
    if resume {
        progress.note("--segments with -c: continuing the download in one stream");
        return Vec::new();
    }
    if !rest {
        progress.note("--segments: the server offers no REST; downloading in one stream");
        return Vec::new();
    }
    let Some(size) = size else {
        progress.note("--segments: the server does not tell the size; downloading in one stream");
        return Vec::new();
    };
    split(size, u64::from(wanted), MIN_SEGMENT)
}

/// Splits `size` bytes into at most `wanted` ranges of at least `min` bytes each (one range
/// for a smaller file); the last range takes the remainder.
fn split(size: u64, wanted: u64, min: u64) -> Vec<Segment> {
    let count = (size / min.max(1)).clamp(1, wanted.max(1));
    let len = size / count;
    (0..count)
        .map(|i| Segment {
            offset: i * len,
            len: if i + 1 == count { size - i * len } else { len },
        })
        .collect()
}

/// How much of the file is known good from its start: the complete ranges before the first
/// incomplete one.
fn complete_prefix(segments: &[Segment], done: &[bool]) -> u64 {
    segments
        .iter()
        .zip(done)
        .take_while(|(_, done)| **done)
        .map(|(segment, _)| segment.len)
        .sum()
}

/// What the sessions of one segmented download share.
struct Job {
    /// The remote file.
    remote: String,
    /// The `.part` file every session writes into.
    part: PathBuf,
    /// The ranges, taken in order so that complete ones tend to form a prefix.
    segments: Vec<Segment>,
    /// Index of the next range to take.
    next: AtomicUsize,
    /// Which ranges are complete: a failure keeps only the prefix they form.
    done: Vec<AtomicBool>,
    /// Cancelled by the first failure or Ctrl-C so the other sessions stop too, and once the
    /// ranges are all done.
    stop: CancellationToken,
    /// The first failure; the sessions it stopped have nothing to add.
    failure: Mutex<Option<anyhow::Error>>,
    /// One bar for the whole file.
    bar: ProgressBar,
}

impl Job {
    /// Records `err` unless a failure came first, and stops every session.
    fn fail(&self, err: anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(err);
        self.stop.cancel();
    }
}

/// Downloads `segments` of `remote` into `part` over the session and one more session per
/// further range (as many as can log in), then syncs `part`. The bar is `name`'s.
pub(super) async fn fetch(
    session: &mut Session,
    remote: &str,
    name: &str,
    part: &Path,
    segments: &[Segment],
) -> anyhow::Result<()> {
    let size = segments.iter().map(|s| s.len).sum();
    std::fs::File::create(part)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("cannot write {}", part.display()))?;
    let job = Arc::new(Job {
        remote: remote.to_string(),
        part: part.to_path_buf(),
        segments: segments.to_vec(),
        next: AtomicUsize::new(0),
        done: segments.iter().map(|_| AtomicBool::new(false)).collect(),
        stop: CancellationToken::new(),
        failure: Mutex::new(None),
        bar: session.progress.file(name, Some(size)),
    });
    watch_interrupt(job.clone());
    let mut helpers = JoinSet::new();
    for _ in 1..segments.len() {
        helpers.spawn(helper(session.connector.clone(), job.clone()));
    }
    take_ranges(&mut session.client, &job).await;
    let mut refused = Vec::new();
    while let Some(joined) = helpers.join_next().await {
        refused.extend(joined.ok().flatten());
    }
    job.bar.finish_and_clear();
    let wanted = segments.len().saturating_sub(1);
    note_refused_sessions(&session.progress, "--segments", &refused, wanted);
    job.stop.cancel();
    settle(&job)
}

/// Ctrl-C stops the sessions so that [`settle`] can cut `.part` back; a second one, or one
/// after the ranges are done (nothing left to clean up), ends the process as usual.
fn watch_interrupt(job: Arc<Job>) {
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if job.stop.is_cancelled() {
                std::process::exit(130);
            }
            job.fail(anyhow!("interrupted"));
        }
    });
}

/// A further session: logs in, then takes ranges like the first one. One that cannot log in
/// (a server limiting sessions per client, say) leaves its share to the others and returns why.
async fn helper(connector: Connector, job: Arc<Job>) -> Option<anyhow::Error> {
    let connected = tokio::select! {
        connected = connector.connect() => connected,
        () = job.stop.cancelled() => return None,
    };
    let mut client = match connected {
        Ok(client) => client,
        Err(err) => return Some(err),
    };
    take_ranges(&mut client, &job).await;
    if !job.stop.is_cancelled() {
        let _ = client.quit().await;
    }
    None
}

/// Fetches ranges until none are left or the download stops.
async fn take_ranges(client: &mut Client, job: &Job) {
    while !job.stop.is_cancelled() {
        let index = job.next.fetch_add(1, Ordering::Relaxed);
        let Some(&segment) = job.segments.get(index) else {
            return;
        };
        let last = index + 1 == job.segments.len();
        match fetch_segment(client, job, segment, last).await {
            Ok(()) => job.done[index].store(true, Ordering::Release),
            Err(err) => return job.fail(err),
        }
    }
}

/// Downloads one range into its place in `.part`. The last range reads to the end of the
/// file, which also notices a file that grew since SIZE.
async fn fetch_segment(
    client: &mut Client,
    job: &Job,
    segment: Segment,
    last: bool,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&job.part)
        .await
        .with_context(|| format!("cannot write {}", job.part.display()))?;
    file.seek(std::io::SeekFrom::Start(segment.offset)).await?;
    let mut seen = 0;
    let mut progress = |n: u64| {
        job.bar.inc(n.saturating_sub(seen));
        seen = n;
    };
    let Segment { offset, len } = segment;
    let transfer = async {
        if last {
            client
                .retr(&job.remote, offset, &mut file, &mut progress)
                .await
        } else {
            let sink = &mut file;
            client
                .retr_range(&job.remote, offset, len, sink, &mut progress)
                .await
        }
    };
    let received = tokio::select! {
        received = transfer => received.map_err(anyhow::Error::from),
        () = job.stop.cancelled() => Err(anyhow!("stopped")),
    };
    // Also completes writes a stopped transfer left in flight, before `.part` is cut back.
    file.flush().await?;
    let received =
        received.with_context(|| format!("{}: the range from byte {offset}", job.remote))?;
    if received != len {
        bail!(
            "{}: {received} bytes from offset {offset} where {len} were expected: the file changed",
            job.remote
        );
    }
    Ok(())
}

/// Syncs a complete `.part`; after a failure cuts it back to the prefix of complete ranges
/// (for -c), or removes it when there is none, and returns the failure.
fn settle(job: &Job) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&job.part)
        .with_context(|| format!("cannot write {}", job.part.display()))?;
    let done: Vec<bool> = job.done.iter().map(|d| d.load(Ordering::Acquire)).collect();
    let failure = job
        .failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let failure = match failure {
        None if done.iter().all(|d| *d) => return Ok(file.sync_all()?),
        None => anyhow!("a session ended before its range was complete"),
        Some(err) => err,
    };
    let kept = complete_prefix(&job.segments, &done);
    if kept == 0 {
        drop(file);
        let _ = std::fs::remove_file(&job.part);
        return Err(failure.context("segmented download failed"));
    }
    file.set_len(kept)?;
    file.sync_all()?;
    Err(failure.context(format!(
        "segmented download failed; {} keeps the first {kept} bytes for -c",
        job.part.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(segments: &[Segment]) -> Vec<u64> {
        segments.iter().map(|s| s.len).collect()
    }

    #[test]
    fn ranges_cover_the_file_end_to_end_with_the_remainder_last() {
        let segments = split(10 << 20 | 3, 4, MIN_SEGMENT);
        assert_eq!(segments.len(), 4);
        let mut next = 0;
        for s in &segments {
            assert_eq!(s.offset, next);
            next += s.len;
        }
        assert_eq!(next, 10 << 20 | 3);
        assert_eq!(segments[3].len, segments[0].len + 3);
    }

    #[test]
    fn small_files_get_fewer_ranges_of_at_least_the_minimum() {
        assert_eq!(lens(&split(3 << 20, 8, MIN_SEGMENT)), [1 << 20; 3]);
        assert_eq!(lens(&split((1 << 20) - 1, 8, MIN_SEGMENT)), [(1 << 20) - 1]);
        assert_eq!(lens(&split(0, 8, MIN_SEGMENT)), [0]);
        assert_eq!(lens(&split(5, 0, 1)), [5]);
    }

    #[test]
    fn one_stream_with_resume_or_without_a_size() {
        let progress = Progress::new(true);
        let big = Some(100 << 20);
        assert!(ranges_for(4, true, big, true, &progress).is_empty());
        assert!(ranges_for(4, false, None, true, &progress).is_empty());
        assert!(ranges_for(4, false, big, false, &progress).is_empty());
        assert!(ranges_for(1, false, big, true, &progress).is_empty());
        assert_eq!(ranges_for(4, false, big, true, &progress).len(), 4);
    }

    #[test]
    fn a_failure_keeps_only_the_complete_ranges_from_the_start() {
        let segments = split(4 << 20, 4, MIN_SEGMENT);
        assert_eq!(
            complete_prefix(&segments, &[true, true, false, true]),
            2 << 20
        );
        assert_eq!(complete_prefix(&segments, &[false, true, true, true]), 0);
        assert_eq!(complete_prefix(&segments, &[true; 4]), 4 << 20);
    }
}
