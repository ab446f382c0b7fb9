//! `ferry user add|passwd|del|show|list`: edit DATA/users.toml.

use clap::Subcommand;

/// Account management subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {}

/// Runs one `ferry user` subcommand.
pub fn run(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {}
}
