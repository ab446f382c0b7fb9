//! `ferry user add|passwd|set|del|show|list|rescan`: edit the accounts (DATA/users.toml, or
//! the PostgreSQL database named by --database-url / `database_url` in DATA/ferry.toml) and
//! look at quota usage.
//!
//! A running server notices the changes on the next login; no restart is needed.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_server::pg::PgStore;
use ferry_server::quota;
use ferry_server::storage::fs::OpenHomes;
use ferry_server::users::{self, Password, TomlUsers, UserDirectory, UserEntry, UserError};

/// Account management subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account and its home directory.
    Add(AddArgs),
    /// Change an account's password.
    Passwd(PasswdArgs),
    /// Change an account's quota, access or home.
    Set(SetArgs),
    /// Recompute an account's disk usage from its home directory.
    Rescan(NameArgs),
    /// Delete an account; its home directory and files are kept.
    Del(NameArgs),
    /// Show an account's home and access (never its password hash).
    Show(NameArgs),
    /// List all accounts with their usage against their quota.
    List(DataArgs),
}

/// Where the accounts live.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Data directory holding users.toml and the default homes.
    #[arg(
        long = "data",
        value_name = "DIR",
        env = "FERRY_DATA",
        default_value = "./ferry-data"
    )]
    dir: PathBuf,
    /// PostgreSQL user store (postgres://USER:PASSWORD@HOST:PORT/DB) instead of users.toml
    /// [default: `database_url` in DATA/ferry.toml].
    #[arg(long, value_name = "URL", env = "FERRY_DATABASE_URL")]
    database_url: Option<String>,
}

/// How to obtain a new password.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of stdin instead of prompting on the terminal.
    #[arg(long)]
    password_stdin: bool,
}

/// Arguments of `ferry user add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// User name: 1 to 32 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'.
    #[arg(value_parser = parse_name)]
    name: String,
    #[command(flatten)]
    data: DataArgs,
    /// Home directory; relative paths are relative to the data directory [default: home/NAME].
    #[arg(long, value_name = "PATH")]
    home: Option<PathBuf>,
    /// Allow downloads and listings only.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    quota: QuotaArgs,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Quota flags of `add` and `set`.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Disk quota: 500MiB, 2GB, 1048576, or none (unlimited).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    quota_bytes: Option<Limit>,
    /// Most files the user may store, or none (directories do not count).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    quota_files: Option<Limit>,
}

/// A limit given on the command line; `None` inside means unlimited.
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u64>);

fn parse_size(text: &str) -> Result<Limit, String> {
    quota::parse_size(text).map(Limit)
}

fn parse_count(text: &str) -> Result<Limit, String> {
    quota::parse_count(text).map(Limit)
}

impl QuotaArgs {
    fn apply(&self, entry: &mut UserEntry) {
        if let Some(Limit(bytes)) = self.quota_bytes {
            entry.quota_bytes = bytes;
        }
        if let Some(Limit(files)) = self.quota_files {
            entry.quota_files = files;
        }
    }
}

/// Arguments of `ferry user set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// User name.
    #[arg(value_parser = parse_name)]
    name: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    quota: QuotaArgs,
    /// Allow downloads and listings only (true) or everything (false).
    #[arg(long, value_name = "BOOL")]
    read_only: Option<bool>,
    /// New home directory; relative paths are relative to the data directory.
    #[arg(long, value_name = "PATH")]
    home: Option<PathBuf>,
}

/// Arguments of `ferry user passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// User name.
    #[arg(value_parser = parse_name)]
    name: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Arguments of subcommands that name one existing account.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// User name.
    #[arg(value_parser = parse_name)]
    name: String,
    #[command(flatten)]
    data: DataArgs,
}

/// Rejects an invalid name while parsing, so it is a usage error (exit 2).
fn parse_name(name: &str) -> Result<String, users::NameError> {
    users::validate_name(name).map(|()| name.to_owned())
}

/// Runs one `ferry user` subcommand.
pub fn run(cmd: UserCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cmd {
            UserCommand::Add(args) => add(args).await,
            UserCommand::Passwd(args) => passwd(args).await,
            UserCommand::Set(args) => set(args).await,
            UserCommand::Rescan(args) => rescan(args).await,
            UserCommand::Del(args) => del(args).await,
            UserCommand::Show(args) => show(args).await,
            UserCommand::List(args) => list(args).await,
        }
    })
}

/// The accounts `args` point at, and the absolute data directory homes are relative to.
async fn open(args: &DataArgs) -> anyhow::Result<(Box<dyn UserDirectory>, PathBuf)> {
    let data_dir = absolute(&args.dir)?;
    let url = match &args.database_url {
        Some(url) => Some(url.clone()),
        None => crate::serve::configured_database_url(&data_dir)?,
    };
    let directory: Box<dyn UserDirectory> = match url {
        Some(url) => Box::new(
            PgStore::connect(&url)
                .await
                .context("cannot open the user database")?,
        ),
        None => Box::new(TomlUsers::new(&data_dir)?),
    };
    Ok((directory, data_dir))
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args.data).await?;
    // Checked before prompting so nobody types a password twice for nothing.
    if directory.get(&args.name).await?.is_some() {
        return Err(UserError::UserExists(args.name).into());
    }
    let password = read_new_password(&args.password)?;
    let home = args.home.unwrap_or_else(|| users::default_home(&args.name));
    let mut entry = UserEntry::new(users::hash_password(&password)?, home, args.read_only);
    args.quota.apply(&mut entry);
    let home = users::create_home(&data_dir, &entry)?;
    directory.add(&args.name, entry).await?;
    println!("added user {} with home {}", args.name, home.display());
    Ok(())
}

async fn passwd(args: PasswdArgs) -> anyhow::Result<()> {
    let (directory, _) = open(&args.data).await?;
    if directory.get(&args.name).await?.is_none() {
        return Err(UserError::UnknownUser(args.name).into());
    }
    let password = read_new_password(&args.password)?;
    let phc = users::hash_password(&password)?;
    directory
        .update(&args.name, &|entry: &mut UserEntry| {
            entry.password.clone_from(&phc)
        })
        .await?;
    println!("changed the password of {}", args.name);
    Ok(())
}

async fn set(args: SetArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args.data).await?;
    let change = |entry: &mut UserEntry| {
        args.quota.apply(entry);
        if let Some(read_only) = args.read_only {
            entry.read_only = read_only;
        }
        if let Some(home) = &args.home {
            entry.home.clone_from(home);
        }
    };
    let entry = directory.update(&args.name, &change).await?;
    let home = users::create_home(&data_dir, &entry)?;
    println!(
        "updated {}: quota {}, {} files, read-only {}, home {}",
        args.name,
        limit_text(entry.quota_bytes, quota::human),
        limit_text(entry.quota_files, |n| n.to_string()),
        yes_no(entry.read_only),
        home.display()
    );
    Ok(())
}

async fn rescan(args: NameArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args.data).await?;
    let entry = directory
        .get(&args.name)
        .await?
        .ok_or_else(|| UserError::UnknownUser(args.name.clone()))?;
    // Measured where the server keeps the files: the home directory, or the user's prefix
    // in the bucket.
    let home = entry.resolved_home(&data_dir);
    let storage = crate::serve::configured_storage(&data_dir)?
        .open(&args.name, &home, &OpenHomes::default())
        .with_context(|| format!("cannot open the files of {}", args.name))?;
    let usage = storage
        .scan()
        .await
        .with_context(|| format!("cannot measure the files of {}", args.name))?;
    directory.set_usage(&args.name, usage).await?;
    println!(
        "{}: {} in {} files ({} bytes)",
        args.name,
        quota::human(usage.bytes),
        usage.files,
        usage.bytes
    );
    Ok(())
}

fn limit_text(limit: Option<u64>, show: impl Fn(u64) -> String) -> String {
    limit.map_or_else(|| "unlimited".to_string(), show)
}

/// "1.2 MiB / 500.0 MiB" or "1.2 MiB" when unlimited; "?" when usage is not known yet.
fn usage_text(used: Option<u64>, limit: Option<u64>, show: impl Fn(u64) -> String) -> String {
    let used = used.map_or_else(|| "?".to_string(), &show);
    match limit {
        Some(limit) => format!("{used} / {}", show(limit)),
        None => used,
    }
}

async fn del(args: NameArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args.data).await?;
    let entry = directory.remove(&args.name).await?;
    println!(
        "deleted user {}; kept home directory {}",
        args.name,
        entry.resolved_home(&data_dir).display()
    );
    Ok(())
}

async fn show(args: NameArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args.data).await?;
    let entry = directory
        .get(&args.name)
        .await?
        .ok_or_else(|| UserError::UnknownUser(args.name.clone()))?;
    println!("name:      {}", args.name);
    println!("home:      {}", entry.resolved_home(&data_dir).display());
    println!("read-only: {}", yes_no(entry.read_only));
    let usage = directory.usage(&args.name).await?;
    let bytes = usage_text(usage.map(|u| u.bytes), entry.quota_bytes, quota::human);
    let files = usage_text(usage.map(|u| u.files), entry.quota_files, |n| n.to_string());
    println!("disk:      {bytes}");
    println!("files:     {files}");
    Ok(())
}

async fn list(args: DataArgs) -> anyhow::Result<()> {
    let (directory, data_dir) = open(&args).await?;
    let mut rows: Vec<[String; 5]> = Vec::new();
    for (name, entry) in directory.list().await? {
        let usage = directory.usage(&name).await?;
        rows.push([
            name,
            yes_no(entry.read_only).to_string(),
            usage_text(usage.map(|u| u.bytes), entry.quota_bytes, quota::human),
            usage_text(usage.map(|u| u.files), entry.quota_files, |n| n.to_string()),
            entry.resolved_home(&data_dir).display().to_string(),
        ]);
    }
    let header = ["NAME", "READ-ONLY", "DISK", "FILES", "HOME"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if rows.iter().any(|row| row[2].starts_with('?')) {
        println!(
            "(? = usage not known yet: computed at the next login, or now with `ferry user rescan NAME`)"
        );
    }
    Ok(())
}

/// Makes homes print as absolute paths, which is what the server will use.
fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// The new password: from stdin with --password-stdin, else typed twice on the terminal.
fn read_new_password(args: &PasswordArgs) -> anyhow::Result<Password> {
    if args.password_stdin {
        return password_from_line(io::stdin().lock());
    }
    if !io::stdin().is_terminal() {
        bail!("stdin is not a terminal: pass --password-stdin to read the password from stdin");
    }
    prompt_twice()
}

/// Reads the first line of `input` as a password; line ending stripped, empty refused.
fn password_from_line(mut input: impl BufRead) -> anyhow::Result<Password> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let cleartext = line.strip_suffix('\n').unwrap_or(&line);
    let cleartext = cleartext.strip_suffix('\r').unwrap_or(cleartext);
    if cleartext.is_empty() {
        bail!("empty password on stdin");
    }
    Ok(Password::new(cleartext.to_owned()))
}

fn prompt_twice() -> anyhow::Result<Password> {
    let first = prompt("New password: ")?;
    if first.expose().is_empty() {
        bail!("empty password");
    }
    let second = prompt("Repeat password: ")?;
    if first.expose() != second.expose() {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn prompt(text: &str) -> anyhow::Result<Password> {
    let cleartext = rpassword::prompt_password(text).context("cannot read the password")?;
    Ok(Password::new(cleartext))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn password_line_loses_its_line_ending_only() {
        for (input, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            (" pw \n", " pw "),
            ("pw\nignored\n", "pw"),
        ] {
            let password = password_from_line(input.as_bytes()).unwrap();
            assert_eq!(password.expose(), expected, "{input:?}");
        }
    }

    #[test]
    fn empty_password_line_is_refused() {
        for input in ["", "\n", "\r\n"] {
            assert!(password_from_line(input.as_bytes()).is_err(), "{input:?}");
        }
    }
}
