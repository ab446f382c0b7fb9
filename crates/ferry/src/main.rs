//! The `ferry` binary: parse arguments, resolve them into a config, run.

mod echo;
mod remote;
mod serve;
mod user;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ferry: a multi-user FTP server, an FTP client and a socket toolkit.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the FTP server.
    Serve(Box<serve::ServeArgs>),
    /// Manage the accounts in DATA/users.toml.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Echo, upper-case and greeting services over TCP and UDP, and their client.
    #[command(subcommand)]
    Echo(echo::EchoCommand),
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::User(cmd) => user::run(cmd),
        Command::Echo(cmd) => echo::run(cmd),
        Command::Remote(cmd) => remote::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry: {err:#}");
            // A URL that does not parse is a usage error, like a bad flag (DESIGN: exit 2).
            let usage = err.chain().any(|e| e.is::<ferry_client::url::UrlError>());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Logs go to stderr, one line per event; `RUST_LOG` filters (default: info). Colours only on
/// a terminal, so log files stay plain text.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
