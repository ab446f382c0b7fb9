//! `small`: many small files in one session, each over a data connection of its own, as
//! website deployments and source trees move them: what a transfer costs beyond its bytes.

use std::time::Instant;

use clap::Args;

use super::session::{BUFFER, payload};
use super::{Measured, PeerArgs, check_bytes, parse_size, repeat};
use crate::stats::Figures;

/// Flags of `ferry-load bench small`.
#[derive(Debug, Args)]
pub struct SmallArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Files uploaded, downloaded and listed each run.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    count: usize,
    /// Size of each file (K, M, G suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_size)]
    size: u64,
    /// The directory, relative to the login directory, that holds the files (created when
    /// missing; emptied at the end of each run).
    #[arg(long, value_name = "NAME", default_value = "ferry-load-small")]
    dir: String,
}

/// Listings of the directory per run: one would be over quickly.
const LISTINGS: u64 = 5;

/// `small_stor_files_per_s`, `small_retr_files_per_s`, `small_list_files_per_s` (entries
/// listed per second of listing).
pub async fn run(args: SmallArgs) -> anyhow::Result<Figures> {
    let peer = args.peer.resolve()?;
    let payload = payload();
    let mut buf = vec![0u8; BUFFER];
    let names: Vec<String> = (0..args.count).map(|i| format!("f{i:05}")).collect();
    let files = args.count as u64;
    repeat("small", args.peer.runs, async || {
        let mut session = peer.session(None).await?;
        let reply = session.command(&format!("MKD {}", args.dir)).await?;
        // 550 or 521: it exists already; CWD tells if it is something else.
        if !matches!(reply.code, 257 | 521 | 550) {
            anyhow::bail!("MKD {}: {reply}", args.dir);
        }
        session.cwd(&args.dir).await?;

        let start = Instant::now();
        for name in &names {
            session.stor(name, args.size, &payload).await?;
        }
        let stor = start.elapsed();

        let start = Instant::now();
        for name in &names {
            let received = session.retr(name, &mut buf).await?;
            check_bytes(&format!("RETR {name}"), received, args.size)?;
        }
        let retr = start.elapsed();

        let start = Instant::now();
        let mut listed = 0;
        for _ in 0..LISTINGS {
            let entries = session.list(&mut buf).await?;
            if entries < files {
                anyhow::bail!("LIST of {}: {entries} entries, expected {files}", args.dir);
            }
            listed += entries;
        }
        let list = start.elapsed();

        for name in &names {
            session.expect(&format!("DELE {name}"), 250).await?;
        }
        if session.relogins() > 0 {
            eprintln!(
                "  the session logged in again {} times: TLS 1.3 tickets ran out",
                session.relogins()
            );
        }
        session.quit().await?;
        Ok(vec![
            Measured::per_second("small_stor_files_per_s", files, stor),
            Measured::per_second("small_retr_files_per_s", files, retr),
            Measured::per_second("small_list_files_per_s", listed, list),
        ])
    })
    .await
}
