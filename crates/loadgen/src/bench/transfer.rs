//! One stream at a time: `raw-tcp` (the loopback's own speed, no FTP), `retr` and `stor`,
//! with the server's CPU seconds per GiB moved when its pid is known.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::session::{BUFFER, payload};
use super::{Measured, PeerArgs, RunsArg, check_bytes, parse_size, repeat};
use crate::PANICKED;

/// Flags of `ferry-load bench raw-tcp`.
#[derive(Debug, Args)]
pub struct RawTcpArgs {
    /// Bytes sent (K, M, G suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: u64,
    #[command(flatten)]
    runs: RunsArg,
}

/// Flags of `ferry-load bench retr` and `ferry-load bench stor`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// The file, relative to the login directory: downloaded whole (it must have --size
    /// bytes), or replaced by the upload.
    #[arg(long, value_name = "NAME")]
    path: String,
    /// Bytes moved (K, M, G suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    size: u64,
}

/// `raw_tcp_mbps`: a listener on 127.0.0.1 and a sender in this process, the receiver
/// reading into one 1 MiB buffer, the sender writing from another.
pub async fn raw_tcp(args: RawTcpArgs) -> anyhow::Result<crate::stats::Figures> {
    let payload = payload();
    repeat("raw-tcp", args.runs, async || {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut buf = vec![0u8; BUFFER];
        let receiver = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut received = 0u64;
            loop {
                match stream.read(&mut buf).await? {
                    0 => return Ok::<u64, std::io::Error>(received),
                    n => received += n as u64,
                }
            }
        });
        let start = Instant::now();
        let mut sender = TcpStream::connect(addr).await?;
        sender.set_nodelay(true)?;
        let mut left = args.size;
        while left > 0 {
            let n = left.min(BUFFER as u64) as usize;
            sender.write_all(&payload[..n]).await?;
            left -= n as u64;
        }
        sender.shutdown().await?;
        let received = receiver.await.context(PANICKED)??;
        let took = start.elapsed();
        check_bytes("raw TCP", received, args.size)?;
        Ok(vec![Measured::mbps("raw_tcp_mbps", args.size, took)])
    })
    .await
}

/// `retr_mbps` and `retr_cpu_s_per_gib`: one download per run, on a session of its own,
/// timed from EPSV to the final reply.
pub async fn retr(args: TransferArgs) -> anyhow::Result<crate::stats::Figures> {
    let peer = args.peer.resolve()?;
    let mut buf = vec![0u8; BUFFER];
    repeat("retr", args.peer.runs, async || {
        let mut session = peer.session(None).await?;
        let cpu = peer.cpu_mark()?;
        let start = Instant::now();
        let received = session.retr(&args.path, &mut buf).await?;
        let took = start.elapsed();
        let cpu = cpu.map(|mark| mark.seconds()).transpose()?;
        session.quit().await?;
        check_bytes(&format!("RETR {}", args.path), received, args.size)?;
        Ok(rates(
            ["retr_mbps", "retr_cpu_s_per_gib"],
            args.size,
            took,
            cpu,
        ))
    })
    .await
}

/// `stor_mbps` and `stor_cpu_s_per_gib`: one upload per run, on a session of its own, timed
/// from EPSV to the final reply; SIZE checks the result when the server has it.
pub async fn stor(args: TransferArgs) -> anyhow::Result<crate::stats::Figures> {
    let peer = args.peer.resolve()?;
    let payload = payload();
    repeat("stor", args.peer.runs, async || {
        let mut session = peer.session(None).await?;
        let cpu = peer.cpu_mark()?;
        let start = Instant::now();
        session.stor(&args.path, args.size, &payload).await?;
        let took = start.elapsed();
        let cpu = cpu.map(|mark| mark.seconds()).transpose()?;
        let reply = session.command(&format!("SIZE {}", args.path)).await?;
        session.quit().await?;
        if reply.code == 213 {
            let stored = reply.lines.first().and_then(|l| l.trim().parse().ok());
            check_bytes(
                &format!("SIZE {} after STOR", args.path),
                stored.unwrap_or(0),
                args.size,
            )?;
        }
        Ok(rates(
            ["stor_mbps", "stor_cpu_s_per_gib"],
            args.size,
            took,
            cpu,
        ))
    })
    .await
}

/// The rate under `keys[0]`, and the server's CPU seconds per GiB under `keys[1]` when they
/// were measured.
fn rates(keys: [&'static str; 2], bytes: u64, took: Duration, cpu: Option<f64>) -> Vec<Measured> {
    let mut measured = vec![Measured::mbps(keys[0], bytes, took)];
    if let Some(seconds) = cpu {
        measured.push(Measured::cpu_per_gib(keys[1], seconds, bytes));
    }
    measured
}
