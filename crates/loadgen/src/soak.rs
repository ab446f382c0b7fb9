//! `ferry-load soak`: many idle sessions and a few busy ones for a bounded time.
//!
//! The idle sessions log in (at most `--connect-concurrency` logins in flight) and then send
//! NOOP every `--noop-every`, spread evenly over that period, timing each reply. Once they are
//! all in, the measured window starts: the active sessions transfer the file without pause,
//! each round one of STOR to a file of its own, RETR of that file, RETR of the shared file,
//! every download compared byte for byte with the reference. At the end of the window every
//! session finishes what it is doing and sends QUIT. Every failure is counted; the server's
//! memory, fds and threads are sampled before, during and after.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ferry_client::{Client, ClientError, Options, StoreMode};
use tokio::io::AsyncWrite;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, Target};
use crate::server::{Usage, Watch};
use crate::stats::{Errors, Failure, Figures, Latencies, Stage};
use crate::{PANICKED, TargetArgs, parse_duration};

/// Flags of `ferry-load soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Idle sessions: logged in, sending only NOOP.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    idle: usize,
    /// Active sessions: transferring the file without pause.
    #[arg(long, value_name = "N", default_value_t = 50)]
    active: usize,
    /// The measured window, which starts once every idle session is logged in.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Pause between two NOOPs of an idle session.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    noop_every: Duration,
    /// A file in the user's home for the active sessions to download; its first download is
    /// the reference the others are compared with. Without it, a generated file of
    /// --file-mib is uploaded as ferry-load.bin first.
    #[arg(long, value_name = "NAME")]
    file: Option<String>,
    /// Size of the generated file.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    file_mib: usize,
    /// Longest time for logging in the idle sessions before the window starts anyway.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = parse_duration)]
    ramp_limit: Duration,
}

/// What every session of the run needs.
#[derive(Debug)]
struct Shared {
    target: Target,
    errors: Errors,
    /// Ends the measured window (or the whole run, when the server passes --rss-limit-mib):
    /// sessions finish what they are doing and leave.
    stop: CancellationToken,
}

/// The file the active sessions move, as it must arrive.
#[derive(Debug)]
struct Payload {
    /// Its name in the user's home.
    name: String,
    bytes: Vec<u8>,
}

/// What one idle session measured.
#[derive(Debug, Default)]
struct IdleSamples {
    /// From connect to 230; `None` when the session never got in.
    login: Option<Duration>,
    /// When each NOOP was sent and how long its reply took.
    noops: Vec<(Instant, Duration)>,
}

/// What active sessions moved.
#[derive(Debug, Default)]
struct ActiveTotals {
    downloads: u64,
    uploads: u64,
    bytes: u64,
}

impl ActiveTotals {
    fn add(&mut self, other: ActiveTotals) {
        self.downloads += other.downloads;
        self.uploads += other.uploads;
        self.bytes += other.bytes;
    }

    /// Counts, megabytes and megabytes per second over `time`.
    fn report(&self, time: Duration, figures: &mut Figures) {
        figures.push("transfers", self.downloads + self.uploads);
        figures.push("downloads", self.downloads);
        figures.push("uploads", self.uploads);
        figures.push("transfer_mb", format!("{:.1}", self.bytes as f64 / 1e6));
        let rate = self.bytes as f64 / 1e6 / time.as_secs_f64();
        figures.push("transfer_mb_s", format!("{rate:.1}"));
    }
}

/// Runs the scenario and returns its figures.
pub async fn run(args: SoakArgs) -> anyhow::Result<Figures> {
    let (target, server) = args.target.resolve()?;
    // Each active session holds a control and a data connection.
    crate::check_open_files(args.idle + 2 * args.active)?;
    let shared = Arc::new(Shared {
        target,
        errors: Errors::default(),
        stop: CancellationToken::new(),
    });
    let watch = args.target.watch(server, &shared.stop)?;
    let payload = Arc::new(prepare(&shared.target, args.file.as_deref(), args.file_mib).await?);
    eprintln!(
        "soak: {} idle sessions (NOOP every {:?}), then {} active moving {} ({} bytes) for {:?}",
        args.idle,
        args.noop_every,
        args.active,
        payload.name,
        payload.bytes.len(),
        args.duration
    );

    let ramp_start = Instant::now();
    let progress = Arc::new(Progress::default());
    let idle = spawn_idle(&args, &shared, &progress);
    let ramp = wait_for_ramp(
        &progress,
        args.idle,
        args.ramp_limit,
        &shared,
        watch.as_ref(),
    )
    .await;
    let ramp_time = ramp_start.elapsed();

    let window = Window::from_now(args.duration);
    let mut active = Vec::new();
    if !shared.stop.is_cancelled() {
        eprintln!(
            "soak: {} idle sessions in after {:.1}s; the {:?} window starts",
            progress.logged_in.load(Ordering::Relaxed),
            ramp_time.as_secs_f64(),
            args.duration
        );
        active = (0..args.active)
            .map(|index| {
                tokio::spawn(active_session(
                    index,
                    Arc::clone(&shared),
                    Arc::clone(&payload),
                ))
            })
            .collect();
        window.wait(&shared).await;
    }
    let during = sample(watch.as_ref())?;
    shared.stop.cancel();

    let idle = collect_idle(idle, &window).await?;
    let mut moved = ActiveTotals::default();
    for task in active {
        moved.add(task.await.context(PANICKED)?);
    }
    let active_time = window.start.elapsed();
    eprintln!("soak: all sessions left; waiting for the server to settle");
    let usages = match watch {
        Some(watch) => Some(watch.finish(during, args.target.settle).await?),
        None => None,
    };

    let mut figures = Figures::default();
    figures.push("idle_sessions", idle.logged_in);
    figures.push("active_sessions", args.active);
    figures.push("window_s", args.duration.as_secs_f64());
    figures.push("ramp_s", format!("{:.1}", ramp_time.as_secs_f64()));
    figures.push(
        "logins_per_s",
        format!("{:.1}", idle.logged_in as f64 / ramp_time.as_secs_f64()),
    );
    shared.errors.report(&mut figures);
    idle.login.report("login", &mut figures);
    idle.window_noops.report("noop", &mut figures);
    idle.ramp_noops.report("ramp_noop", &mut figures);
    moved.report(active_time, &mut figures);
    if let Some(usages) = usages {
        usages.report(idle.logged_in + args.active, &mut figures);
        if let Some(marginal) = ramp.marginal_rss_kib() {
            figures.push("rss_per_idle_session_kib", format!("{marginal:.1}"));
        }
    }
    Ok(figures)
}

/// Starts the idle sessions, their first NOOPs spread evenly over one period.
fn spawn_idle(
    args: &SoakArgs,
    shared: &Arc<Shared>,
    progress: &Arc<Progress>,
) -> Vec<JoinHandle<IdleSamples>> {
    let gate = Arc::new(Semaphore::new(args.target.connect_concurrency.max(1)));
    (0..args.idle)
        .map(|index| {
            let phase = args.noop_every.mul_f64(index as f64 / args.idle as f64);
            tokio::spawn(idle_session(
                index,
                Arc::clone(shared),
                Arc::clone(&gate),
                Arc::clone(progress),
                phase,
                args.noop_every,
            ))
        })
        .collect()
}

/// The measured window.
#[derive(Debug)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn from_now(duration: Duration) -> Window {
        let start = Instant::now();
        Window {
            start,
            end: start + duration,
        }
    }

    /// Waits for its end (or for the run to be stopped), telling the errors so far.
    async fn wait(&self, shared: &Shared) {
        while Instant::now() < self.end {
            let left = self.end.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = tokio::time::sleep(left.min(Duration::from_secs(10))) => {}
            }
            eprintln!(
                "soak: {:.0}s into the window, {} errors",
                self.start.elapsed().as_secs_f64(),
                shared.errors.total()
            );
        }
    }
}

/// What all idle sessions measured, the NOOPs split into the ramp and the window.
#[derive(Debug, Default)]
struct IdleFigures {
    logged_in: usize,
    login: Latencies,
    /// Sent while sessions were still logging in: password checks compete for the CPU.
    ramp_noops: Latencies,
    window_noops: Latencies,
}

async fn collect_idle(
    idle: Vec<JoinHandle<IdleSamples>>,
    window: &Window,
) -> anyhow::Result<IdleFigures> {
    let mut figures = IdleFigures::default();
    for task in idle {
        let samples = task.await.context(PANICKED)?;
        if let Some(took) = samples.login {
            figures.logged_in += 1;
            figures.login.push(took);
        }
        for (sent, took) in samples.noops {
            if sent < window.start {
                figures.ramp_noops.push(took);
            } else if sent < window.end {
                figures.window_noops.push(took);
            }
        }
    }
    Ok(figures)
}

/// The server's usage now, or zeros when it is not watched.
fn sample(watch: Option<&Watch>) -> anyhow::Result<Usage> {
    watch
        .map(|s| s.sample().context("cannot sample the server"))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// How far the idle sessions have got.
#[derive(Debug, Default)]
struct Progress {
    /// Sessions that logged in or failed.
    done: AtomicUsize,
    /// Sessions that logged in.
    logged_in: AtomicUsize,
}

/// The server's memory halfway through the ramp and at its end, with the sessions logged
/// in at each point.
#[derive(Debug, Default)]
struct Ramp {
    half: Option<(usize, Usage)>,
    full: Option<(usize, Usage)>,
}

impl Ramp {
    /// What one more idle session costs: the growth over the second half of the ramp per
    /// session. Unlike (during - before) / sessions, it leaves out what the first logins
    /// leave behind once (the password hash's memory, runtime threads).
    fn marginal_rss_kib(&self) -> Option<f64> {
        let ((n1, u1), (n2, u2)) = (self.half?, self.full?);
        let sessions = n2.checked_sub(n1).filter(|&n| n > 0)?;
        Some((u2.rss_kib as f64 - u1.rss_kib as f64) / sessions as f64)
    }
}

/// Waits until `count` sessions have logged in or failed, `limit` has passed or the run is
/// stopped, sampling the server halfway and at the end.
async fn wait_for_ramp(
    progress: &Progress,
    count: usize,
    limit: Duration,
    shared: &Shared,
    watch: Option<&Watch>,
) -> Ramp {
    let start = Instant::now();
    let mut shown = Instant::now();
    let mut ramp = Ramp::default();
    let sample = |logged_in| watch.and_then(|w| w.sample().ok()).map(|u| (logged_in, u));
    loop {
        let done = progress.done.load(Ordering::Relaxed);
        let logged_in = progress.logged_in.load(Ordering::Relaxed);
        if ramp.half.is_none() && done >= count / 2 {
            ramp.half = sample(logged_in);
        }
        if done >= count {
            ramp.full = sample(logged_in);
            return ramp;
        }
        if shared.stop.is_cancelled() {
            return ramp;
        }
        if start.elapsed() >= limit {
            eprintln!("soak: only {done} of {count} idle sessions in after {limit:?}; going on");
            return ramp;
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!(
                "soak: {logged_in} of {count} idle sessions in ({} errors)",
                shared.errors.total()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reference bytes: a download of `file`, or a generated file uploaded first.
async fn prepare(target: &Target, file: Option<&str>, file_mib: usize) -> anyhow::Result<Payload> {
    let mut client = connect(target)
        .await
        .map_err(|f| anyhow::anyhow!("preparing the file: {f}"))?;
    let payload = match file {
        Some(name) => {
            let mut bytes = Vec::new();
            client
                .retr(name, 0, &mut bytes, &mut |_| {})
                .await
                .with_context(|| format!("cannot download {name}"))?;
            Payload {
                name: name.to_string(),
                bytes,
            }
        }
        None => {
            let payload = Payload {
                name: "ferry-load.bin".into(),
                bytes: generated(file_mib * 1024 * 1024),
            };
            let mut source: &[u8] = &payload.bytes;
            client
                .stor(&payload.name, StoreMode::Replace, &mut source, &mut |_| {})
                .await
                .with_context(|| format!("cannot upload {}", payload.name))?;
            payload
        }
    };
    client.quit().await?;
    Ok(payload)
}

/// `len` bytes that do not compress and that no other run would produce by accident
/// (xorshift64).
fn generated(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A `ferry_client` session for transfers, its failures sorted into connect and login.
async fn connect(target: &Target) -> Result<Client, Failure> {
    let options = Options {
        timeout: target.timeout,
        ..Options::default()
    };
    Client::connect(&target.endpoint(), &target.user, &target.password, &options)
        .await
        .map_err(|err| {
            let stage = match err {
                ClientError::Refused { .. } => Stage::Login,
                _ => Stage::Connect,
            };
            Failure::new(stage, err.to_string())
        })
}

/// Logs in (holding a permit of `gate` meanwhile), then sends NOOP every `every`, the first
/// after `phase`, until the window ends; then QUIT.
async fn idle_session(
    index: usize,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    phase: Duration,
    every: Duration,
) -> IdleSamples {
    let mut samples = IdleSamples::default();
    let opened = {
        let _permit = tokio::select! {
            permit = gate.acquire() => permit,
            _ = shared.stop.cancelled() => return samples,
        };
        let start = Instant::now();
        let opened = open_idle(&shared.target, index).await;
        samples.login = opened.is_ok().then(|| start.elapsed());
        opened
    };
    progress.done.fetch_add(1, Ordering::Relaxed);
    if opened.is_ok() {
        progress.logged_in.fetch_add(1, Ordering::Relaxed);
    }
    let mut control = match opened {
        Ok(control) => control,
        Err(failure) => {
            shared.errors.record(&failure);
            return samples;
        }
    };
    let mut next = tokio::time::Instant::now() + phase;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        match control.noop().await {
            Ok(took) => samples.noops.push((sent, took)),
            Err(failure) => {
                shared.errors.record(&failure);
                return samples;
            }
        }
        next = tokio::time::Instant::from_std(sent) + every;
    }
    if let Err(failure) = control.quit().await {
        shared.errors.record(&failure);
    }
    samples
}

async fn open_idle(target: &Target, index: usize) -> Result<Control, Failure> {
    let mut control = Control::connect(target, target.source(index)).await?;
    control.login(&target.user, &target.password).await?;
    Ok(control)
}

/// One step of an active session's cycle.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// STOR the reference bytes to the session's own file.
    Upload,
    /// RETR the session's own file.
    DownloadOwn,
    /// RETR the shared file.
    DownloadShared,
}

/// The cycle; an active session enters it at `Upload` or at `DownloadShared`, so that its
/// own file exists before it is read and the sessions are not all doing the same.
const CYCLE: [Step; 3] = [Step::Upload, Step::DownloadOwn, Step::DownloadShared];

/// Transfers without pause until the window ends. A failed session is replaced by a new
/// one after a short pause, so one failure does not hide the ones after it.
async fn active_session(index: usize, shared: Arc<Shared>, payload: Arc<Payload>) -> ActiveTotals {
    let own = format!("ferry-load-up-{index}.bin");
    let mut totals = ActiveTotals::default();
    let mut client = None;
    let mut round = 2 * (index % 2);
    while !shared.stop.is_cancelled() {
        let session = match client.as_mut() {
            Some(session) => session,
            None => match connect(&shared.target).await {
                Ok(session) => client.insert(session),
                Err(failure) => {
                    shared.errors.record(&failure);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let step = CYCLE[round % CYCLE.len()];
        let moved = match step {
            Step::Upload => upload(session, &own, &payload.bytes).await,
            Step::DownloadOwn => download(session, &own, &payload.bytes).await,
            Step::DownloadShared => download(session, &payload.name, &payload.bytes).await,
        };
        match moved {
            Ok(bytes) => {
                totals.bytes += bytes;
                match step {
                    Step::Upload => totals.uploads += 1,
                    _ => totals.downloads += 1,
                }
                round += 1;
            }
            Err(failure) => {
                shared.errors.record(&failure);
                client = None;
                // Start over with an upload: the own file may be missing or cut short.
                round = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if let Some(mut session) = client {
        let _ = session.delete(&own).await;
        let _ = session.quit().await;
    }
    totals
}

async fn upload(client: &mut Client, name: &str, bytes: &[u8]) -> Result<u64, Failure> {
    let mut source = bytes;
    let sent = client
        .stor(name, StoreMode::Replace, &mut source, &mut |_| {})
        .await
        .map_err(|err| Failure::new(Stage::Transfer, format!("STOR {name}: {err}")))?;
    if sent != bytes.len() as u64 {
        return Err(Failure::new(
            Stage::Mismatch,
            format!("STOR {name}: sent {sent} of {} bytes", bytes.len()),
        ));
    }
    Ok(sent)
}

async fn download(client: &mut Client, name: &str, expected: &[u8]) -> Result<u64, Failure> {
    let mut check = Compare::new(expected);
    let received = client
        .retr(name, 0, &mut check, &mut |_| {})
        .await
        .map_err(|err| Failure::new(Stage::Transfer, format!("RETR {name}: {err}")))?;
    check
        .verdict()
        .map_err(|why| Failure::new(Stage::Mismatch, format!("RETR {name}: {why}")))?;
    Ok(received)
}

/// A sink that compares what is written with the bytes expected, instead of keeping it.
#[derive(Debug)]
struct Compare<'a> {
    expected: &'a [u8],
    /// Bytes written so far.
    at: usize,
    /// Offset of the first byte that differs.
    first_difference: Option<usize>,
}

impl<'a> Compare<'a> {
    fn new(expected: &'a [u8]) -> Self {
        Compare {
            expected,
            at: 0,
            first_difference: None,
        }
    }

    /// Whether exactly the expected bytes arrived.
    fn verdict(&self) -> Result<(), String> {
        if let Some(offset) = self.first_difference {
            return Err(format!("the bytes differ from offset {offset}"));
        }
        if self.at != self.expected.len() {
            return Err(format!(
                "received {} of {} bytes",
                self.at,
                self.expected.len()
            ));
        }
        Ok(())
    }
}

impl AsyncWrite for Compare<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.first_difference.is_none() {
            let rest = this.expected.get(this.at..).unwrap_or_default();
            let same = rest.iter().zip(buf).take_while(|(a, b)| a == b).count();
            if same < buf.len() {
                this.first_difference = Some(this.at + same);
            }
        }
        this.at += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn compare(expected: &[u8], chunks: &[&[u8]]) -> Result<(), String> {
        let mut check = Compare::new(expected);
        for chunk in chunks {
            check.write_all(chunk).await.unwrap();
        }
        check.verdict()
    }

    #[tokio::test]
    async fn identical_bytes_in_any_chunks_pass() {
        assert_eq!(compare(b"abcdef", &[b"ab", b"cdef"]).await, Ok(()));
        assert_eq!(compare(b"", &[]).await, Ok(()));
    }

    #[tokio::test]
    async fn a_changed_byte_is_reported_at_its_offset() {
        let verdict = compare(b"abcdef", &[b"abc", b"dXf"]).await;
        assert_eq!(verdict, Err("the bytes differ from offset 4".into()));
    }

    #[tokio::test]
    async fn short_and_long_files_fail() {
        assert_eq!(
            compare(b"abcdef", &[b"abc"]).await,
            Err("received 3 of 6 bytes".into())
        );
        assert_eq!(
            compare(b"abc", &[b"abcd"]).await,
            Err("the bytes differ from offset 3".into())
        );
    }

    #[test]
    fn generated_files_have_the_size_asked_and_vary() {
        let bytes = generated(1000);
        assert_eq!(bytes.len(), 1000);
        assert!(bytes.windows(2).any(|w| w[0] != w[1]));
    }
}
