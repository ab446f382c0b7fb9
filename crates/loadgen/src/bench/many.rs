//! `many-retr`: many sessions log in first, then all download the same file at once; the
//! aggregate rate and each session's completion time tell how the server shares itself.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use super::session::BUFFER;
use super::{Measured, PeerArgs, check_bytes, parse_size, repeat};
use crate::PANICKED;
use crate::stats::{Figures, Latencies};

/// Flags of `ferry-load bench many-retr`.
#[derive(Debug, Args)]
pub struct ManyRetrArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Sessions downloading at once.
    #[arg(long, value_name = "N", default_value_t = 200)]
    clients: usize,
    /// The file every session downloads, relative to the login directory.
    #[arg(long, value_name = "NAME")]
    path: String,
    /// Its size (K, M, G suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: u64,
}

/// `many_retr_mbps` (all bytes over the time from the start to the last finish),
/// `many_retr_p50_ms` and `many_retr_p99_ms` (each session's time to its final reply).
pub async fn run(args: ManyRetrArgs) -> anyhow::Result<Figures> {
    let peer = args.peer.resolve()?;
    // A control and a data connection each.
    crate::check_open_files(2 * args.clients)?;
    repeat("many-retr", args.peer.runs, async || {
        let sessions = peer.sessions(args.clients).await?;
        let buffers: Vec<Vec<u8>> = sessions.iter().map(|_| vec![0u8; BUFFER]).collect();
        // Spawning them all takes microseconds: they start together.
        let start = Instant::now();
        let downloads: Vec<_> = sessions
            .into_iter()
            .zip(buffers)
            .map(|(mut session, mut buf)| {
                let path = args.path.clone();
                tokio::spawn(async move {
                    let received = session.retr(&path, &mut buf).await?;
                    let took = start.elapsed();
                    session.quit().await?;
                    anyhow::Ok((received, took))
                })
            })
            .collect();
        let mut times = Latencies::default();
        let mut last = None;
        for download in downloads {
            let (received, took) = download.await.context(PANICKED)??;
            check_bytes(&format!("RETR {}", args.path), received, args.size)?;
            times.push(took);
            last = last.max(Some(took));
        }
        let total = args.size * args.clients as u64;
        let last = last.unwrap_or_default();
        Ok(vec![
            Measured::mbps("many_retr_mbps", total, last),
            Measured::millis("many_retr_p50_ms", times.quantile(0.5).unwrap_or_default()),
            Measured::millis("many_retr_p99_ms", times.quantile(0.99).unwrap_or_default()),
        ])
    })
    .await
}
