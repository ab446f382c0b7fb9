//! `idle`: what a logged-in session that does nothing costs the server in memory, summed
//! over its process tree as Pss, so that forked session processes' shared pages count once.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{Measured, PeerArgs, repeat};
use crate::stats::Figures;

/// Flags of `ferry-load bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Sessions held open.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    sessions: usize,
}

/// How long the sessions sit idle before the server's memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// `idle_kib_per_session` (the tree's Pss with the sessions open, less the baseline, over
/// the sessions) and `idle_sessions_alive` (sessions that still answer a NOOP afterwards).
pub async fn run(args: IdleArgs) -> anyhow::Result<Figures> {
    let peer = args.peer.resolve()?;
    let Some(tree) = peer.tree else {
        anyhow::bail!("idle measures the server's memory: it needs --server-pid");
    };
    crate::check_open_files(args.sessions)?;
    let count = args.sessions.max(1);
    let pss = || tree.pss_kib().context("cannot read the server's memory");
    // One login first, so that one-time costs (a first password check, libraries loaded on
    // first use) stay out of the baseline's difference.
    peer.session(None).await?.quit().await?;
    // One baseline for all runs: the memory a run's sessions freed stays with a server that
    // does not fork, and is reused by the next run's; against a baseline of their own,
    // later runs would seem to cost nothing.
    let before = pss()?;
    repeat("idle", args.peer.runs, async || {
        let mut sessions = peer.sessions(count).await?;
        tokio::time::sleep(SETTLE).await;
        let after = pss()?;
        let mut alive = 0u32;
        for session in &mut sessions {
            match session.noop().await {
                Ok(()) => alive += 1,
                Err(failure) => eprintln!("  an idle session is gone: {failure}"),
            }
        }
        let quits: Vec<_> = sessions
            .into_iter()
            .map(|session| tokio::spawn(session.quit()))
            .collect();
        for quit in quits {
            // The dead sessions are counted above already.
            let _ = quit.await;
        }
        let grown = after as f64 - before as f64;
        Ok(vec![
            Measured::new("idle_kib_per_session", grown / count as f64, 1),
            Measured::new("idle_sessions_alive", f64::from(alive), 0),
        ])
    })
    .await
}
