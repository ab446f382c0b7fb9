//! `ferry serve`: resolve flags and ferry.toml into a server config, then run it.

use clap::Args;

/// Flags of `ferry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
