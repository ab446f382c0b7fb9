//! `logins`: workers that connect, log in and quit without pause, from source addresses
//! taken in turn so that the connections' TIME_WAIT is spread over them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::session::client_tls;
use super::{Measured, Peer, PeerArgs, repeat};
use crate::control::Control;
use crate::stats::{Failure, Figures, Latencies};
use crate::{PANICKED, parse_duration};

/// Flags of `ferry-load bench logins`.
#[derive(Debug, Args)]
pub struct LoginsArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Sessions logging in at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    workers: usize,
    /// How long the workers start new logins.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
}

/// `logins_per_s` (completed connect-login-quit cycles over the whole time),
/// `login_p50_ms` and `login_p99_ms` (connect to 230).
pub async fn run(args: LoginsArgs) -> anyhow::Result<Figures> {
    let peer = Arc::new(args.peer.resolve()?);
    repeat("logins", args.peer.runs, async || {
        let start = Instant::now();
        let deadline = start + args.duration;
        let connections = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..args.workers.max(1))
            .map(|_| {
                tokio::spawn(worker(
                    Arc::clone(&peer),
                    Arc::clone(&connections),
                    deadline,
                ))
            })
            .collect();
        let mut times = Latencies::default();
        let mut cycles = 0u64;
        for worker in workers {
            for took in worker.await.context(PANICKED)?? {
                times.push(took);
                cycles += 1;
            }
        }
        let took = start.elapsed();
        Ok(vec![
            Measured::per_second("logins_per_s", cycles, took),
            Measured::millis("login_p50_ms", times.quantile(0.5).unwrap_or_default()),
            Measured::millis("login_p99_ms", times.quantile(0.99).unwrap_or_default()),
        ])
    })
    .await
}

/// Logs in and out until `deadline`; returns each login's time from connect to 230.
async fn worker(
    peer: Arc<Peer>,
    connections: Arc<AtomicUsize>,
    deadline: Instant,
) -> Result<Vec<Duration>, Failure> {
    let target = &peer.target;
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let source = target.rotating_source(connections.fetch_add(1, Ordering::Relaxed));
        let start = Instant::now();
        let mut control = Control::connect(target, source).await?;
        if peer.tls {
            control = control.secure(&client_tls(target)?).await?;
        }
        control.login(&target.user, &target.password).await?;
        times.push(start.elapsed());
        control.quit().await?;
    }
    Ok(times)
}
