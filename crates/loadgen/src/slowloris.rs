//! `ferry-load slowloris`: connections that each send one byte of a command every few
//! seconds (never logging in, never quitting), while a few well-behaved sessions send NOOP
//! without pause and time the replies. Slow clients must not slow anybody else down: the
//! probes' latency is measured before the slow clients arrive (calm) and while they dribble
//! (flood), and one new connection is timed at the end of the flood.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, Target};
use crate::server::Usage;
use crate::stats::{Errors, Figures, Latencies, Stage, millis};
use crate::{PANICKED, TargetArgs, parse_duration};

/// Flags of `ferry-load slowloris`.
#[derive(Debug, Args)]
pub struct SlowlorisArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Slow connections.
    #[arg(long, value_name = "N", default_value_t = 500)]
    clients: usize,
    /// Pause between two bytes of a slow connection.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    interval: Duration,
    /// Well-behaved sessions measuring NOOP latency.
    #[arg(long, value_name = "N", default_value_t = 10)]
    probes: usize,
    /// Pause between two NOOPs of a probe.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    probe_every: Duration,
    /// Probing before the slow connections arrive, for comparison.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    calm: Duration,
    /// Probing once all slow connections are in.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
}

/// The command a slow connection sends, byte by byte, over and over.
const DRIBBLE: &[u8] = b"NOOP\r\n";

/// How a slow connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dribbled {
    /// It never got in: the connect failed or the greeting was not 220.
    Refused,
    /// The server closed it before the end.
    Dropped,
    /// It was still open at the end.
    Held,
}

/// Runs the scenario and returns its figures.
pub async fn run(args: SlowlorisArgs) -> anyhow::Result<Figures> {
    let (target, server) = args.target.resolve()?;
    crate::check_open_files(args.clients + args.probes + 1)?;
    let stop = CancellationToken::new();
    let target = Arc::new(target);
    let errors = Arc::new(Errors::default());

    let mut probes = Vec::new();
    for _ in 0..args.probes {
        let mut control = Control::connect(&target, None).await?;
        control.login(&target.user, &target.password).await?;
        probes.push(tokio::spawn(probe(
            control,
            args.probe_every,
            Arc::clone(&errors),
            stop.clone(),
        )));
    }
    // The baseline has the probes logged in, so that the server's figures are the slow
    // connections' own, without the memory their password checks leave behind.
    let watch = args.target.watch(server, &stop)?;
    eprintln!(
        "slowloris: {} probes sending NOOP every {:?}; {:?} calm",
        args.probes, args.probe_every, args.calm
    );
    let calm_start = Instant::now();
    sleep_unless(args.calm, &stop).await;

    let flood_arrival = Instant::now();
    let gate = Arc::new(Semaphore::new(args.target.connect_concurrency.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let dribblers: Vec<JoinHandle<Dribbled>> = (0..args.clients)
        .map(|index| {
            let phase = args.interval.mul_f64(index as f64 / args.clients as f64);
            tokio::spawn(dribble(
                index,
                Arc::clone(&target),
                Arc::clone(&gate),
                Arc::clone(&connected),
                phase,
                args.interval,
                stop.clone(),
            ))
        })
        .collect();
    while connected.load(Ordering::Relaxed) < args.clients
        && flood_arrival.elapsed() < target.timeout
        && !stop.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrival = flood_arrival.elapsed();
    eprintln!(
        "slowloris: {} slow connections in after {:.1}s, each sending a byte every {:?}; {:?} flood",
        connected.load(Ordering::Relaxed),
        arrival.as_secs_f64(),
        args.interval,
        args.duration
    );
    let flood_start = Instant::now();
    sleep_unless(args.duration, &stop).await;
    let flood_end = Instant::now();
    let during = match &watch {
        Some(watch) => watch.sample()?,
        None => Usage::default(),
    };
    let fresh_connect = timed_connect(&target, &errors).await;
    stop.cancel();

    let mut calm = Latencies::default();
    let mut flood = Latencies::default();
    for task in probes {
        let samples = task.await.context(PANICKED)?;
        for (sent, took) in samples {
            if sent < flood_arrival && sent >= calm_start {
                calm.push(took);
            } else if sent >= flood_start && sent < flood_end {
                flood.push(took);
            }
        }
    }
    let mut ends = [0usize; 3];
    for task in dribblers {
        let end = task.await.context(PANICKED)?;
        ends[end as usize] += 1;
    }
    eprintln!("slowloris: everybody left; waiting for the server to settle");
    let usages = match watch {
        Some(watch) => Some(watch.finish(during, args.target.settle).await?),
        None => None,
    };

    let mut figures = Figures::default();
    figures.push("slow_clients", args.clients);
    figures.push("slow_interval_s", args.interval.as_secs_f64());
    figures.push("slow_arrival_s", format!("{:.1}", arrival.as_secs_f64()));
    figures.push("slow_held", ends[Dribbled::Held as usize]);
    figures.push("slow_dropped", ends[Dribbled::Dropped as usize]);
    figures.push("slow_refused", ends[Dribbled::Refused as usize]);
    figures.push("probes", args.probes);
    figures.push("window_s", args.duration.as_secs_f64());
    errors.report(&mut figures);
    calm.report("calm_noop", &mut figures);
    flood.report("noop", &mut figures);
    if let Some(took) = fresh_connect {
        figures.push("flood_connect_ms", millis(took));
    }
    if let Some(usages) = usages {
        usages.report(args.clients, &mut figures);
    }
    Ok(figures)
}

/// Sleeps for `pause`, or less when the run is stopped.
async fn sleep_unless(pause: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(pause) => {}
    }
}

/// Sends NOOP every `every` until `stop`; returns when each was sent and how long it took.
async fn probe(
    mut control: Control,
    every: Duration,
    errors: Arc<Errors>,
    stop: CancellationToken,
) -> Vec<(Instant, Duration)> {
    let mut samples = Vec::new();
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        match control.noop().await {
            Ok(took) => samples.push((sent, took)),
            Err(failure) => {
                errors.record(&failure);
                return samples;
            }
        }
        next = tokio::time::Instant::from_std(sent) + every;
    }
    if let Err(failure) = control.quit().await {
        errors.record(&failure);
    }
    samples
}

/// Connect to the 220 greeting of a new connection while the slow ones hold theirs (no
/// login: its password check would leave memory behind in the server's figures).
async fn timed_connect(target: &Target, errors: &Errors) -> Option<Duration> {
    let start = Instant::now();
    let opened = async {
        let control = Control::connect(target, None).await?;
        let took = start.elapsed();
        control.quit().await?;
        Ok(took)
    };
    opened.await.map_err(|failure| errors.record(&failure)).ok()
}

/// One slow connection: connects (holding a permit of `gate` meanwhile), then sends one
/// byte of `DRIBBLE` every `every`, the first after `phase`, reading the reply whenever a
/// line is complete, until `stop`; then simply goes away.
async fn dribble(
    index: usize,
    target: Arc<Target>,
    gate: Arc<Semaphore>,
    connected: Arc<AtomicUsize>,
    phase: Duration,
    every: Duration,
    stop: CancellationToken,
) -> Dribbled {
    let opened = {
        let _permit = gate.acquire().await;
        Control::connect(&target, target.source(index)).await
    };
    connected.fetch_add(1, Ordering::Relaxed);
    let Ok(mut control) = opened else {
        return Dribbled::Refused;
    };
    let mut next = tokio::time::Instant::now() + phase;
    for &byte in DRIBBLE.iter().cycle() {
        tokio::select! {
            _ = stop.cancelled() => return Dribbled::Held,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += every;
        if control.write_raw(Stage::Noop, &[byte]).await.is_err() {
            return Dribbled::Dropped;
        }
        if byte == b'\n' && control.read(Stage::Noop).await.is_err() {
            return Dribbled::Dropped;
        }
    }
    Dribbled::Held
}
