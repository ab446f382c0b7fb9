//! `ferry-load`: load generators for the benchmarks in bench/ (not run by the tests). Each
//! subcommand drives one scenario against a running server, shows progress on stderr and
//! prints its figures as `key=value` lines on stdout; judging them is the scripts' business.

mod bench;
mod control;
mod server;
mod slowloris;
mod soak;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::control::Target;
use crate::server::{RssGuard, Server, Watch};

#[derive(Debug, Parser)]
#[command(name = "ferry-load", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Thousands of idle sessions sending NOOP while a few others transfer without pause.
    Soak(soak::SoakArgs),
    /// Connections that send one byte of a command every few seconds, while well-behaved
    /// sessions measure the NOOP latency.
    Slowloris(slowloris::SlowlorisArgs),
    /// One figure of the comparison with other FTP servers on loopback: throughput, logins,
    /// small files, idle memory.
    Bench(bench::BenchArgs),
}

/// The server under load and how to reach it; shared by every scenario.
#[derive(Debug, Args)]
struct TargetArgs {
    /// The server's control address.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// The account every session logs in as.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Environment variable holding the password (kept out of the process list).
    #[arg(long, value_name = "VAR")]
    password_env: String,
    /// Sessions per source address: sessions come from 127.0.0.2, .3, ... when the server
    /// is on loopback, so its per-IP limit and one address's ephemeral ports do not bite.
    #[arg(long, value_name = "N", default_value_t = 100)]
    per_source: usize,
    /// Logins in flight at once while sessions are being opened.
    #[arg(long, value_name = "N", default_value_t = 32)]
    connect_concurrency: usize,
    /// Longest wait for a connection, a reply or progress on a transfer.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// The server's process id: its memory, fds and threads are sampled from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Stop the run when the server's RSS passes this (MiB), before it exhausts the
    /// machine's memory; the run then reports `rss_limit_hit=1`.
    #[arg(long, value_name = "MIB", requires = "server_pid")]
    rss_limit_mib: Option<u64>,
    /// After the load, longest wait for the server's fds and threads to return to where
    /// they were before it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    settle: Duration,
}

impl TargetArgs {
    /// Starts watching `server` (when --server-pid names one); passing --rss-limit-mib
    /// cancels `stop`.
    fn watch(
        &self,
        server: Option<Server>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<Watch>> {
        let guard = self.rss_limit_mib.map(|mib| RssGuard {
            limit_kib: mib * 1024,
            abort: stop.clone(),
        });
        server
            .map(|server| Watch::start(server, guard).context("cannot sample the server"))
            .transpose()
    }

    /// Reads the password and finds the server process.
    fn resolve(&self) -> anyhow::Result<(Target, Option<Server>)> {
        let password = std::env::var(&self.password_env)
            .with_context(|| format!("no password in ${}", self.password_env))?;
        let server = self
            .server_pid
            .map(|pid| Server::new(pid).with_context(|| format!("cannot read /proc/{pid}")))
            .transpose()?;
        let target = Target {
            addr: self.addr,
            user: self.user.clone(),
            password,
            timeout: self.timeout,
            per_source: self.per_source,
        };
        Ok((target, server))
    }
}

/// Why a run fails when one of its session tasks panicked: a bug here, not in the server.
const PANICKED: &str = "a session task of ferry-load panicked";

/// Raises the limit on open files when `connections` would run out of them, or fails early
/// with the remedy when it cannot.
fn check_open_files(connections: usize) -> anyhow::Result<()> {
    let needed = connections as u64 + 64;
    match server::open_files_limit() {
        Some(limit) if limit < needed => server::raise_open_files_limit(needed).with_context(|| {
            format!(
                "{connections} connections need about {needed} open files, the limit is {limit} and this process cannot raise it: run it under `prlimit --nofile={needed}` or after `ulimit -n {needed}`"
            )
        }),
        _ => Ok(()),
    }
}

/// `500ms`, `3s`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected e.g. 500ms, 3s, 2m"))?;
    let seconds = match unit {
        "ms" => number / 1e3,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("bad unit {unit:?} in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("bad duration {text:?}: {err}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry-load: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let figures = runtime.block_on(async {
        match cli.scenario {
            Scenario::Soak(args) => soak::run(args).await,
            Scenario::Slowloris(args) => slowloris::run(args).await,
            Scenario::Bench(args) => bench::run(args).await,
        }
    })?;
    figures.print().context("cannot print the figures")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
