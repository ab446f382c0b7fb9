//! `ferry user add|passwd|del|show|list`: edit DATA/users.toml.
//!
//! A running server notices the changes on the next login; no restart is needed.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_server::users::{self, Password, UserDb, UserEntry, UserError};

/// Account management subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account and its home directory.
    Add(AddArgs),
    /// Change an account's password.
    Passwd(PasswdArgs),
    /// Delete an account; its home directory and files are kept.
    Del(NameArgs),
    /// Show an account's home and access (never its password hash).
    Show(NameArgs),
    /// List all accounts.
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
    password: PasswordArgs,
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
    match cmd {
        UserCommand::Add(args) => add(args),
        UserCommand::Passwd(args) => passwd(args),
        UserCommand::Del(args) => del(args),
        UserCommand::Show(args) => show(args),
        UserCommand::List(args) => list(args),
    }
}

fn add(args: AddArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.data.dir)?;
    // Checked before prompting so nobody types a password twice for nothing.
    if load(&data_dir)?.get(&args.name).is_some() {
        return Err(UserError::UserExists(args.name).into());
    }
    let password = read_new_password(&args.password)?;
    let home = args.home.unwrap_or_else(|| users::default_home(&args.name));
    let entry = UserEntry::new(users::hash_password(&password)?, home, args.read_only);
    let home = users::add_user(&data_dir, &args.name, entry)?;
    println!("added user {} with home {}", args.name, home.display());
    Ok(())
}

fn passwd(args: PasswdArgs) -> anyhow::Result<()> {
    let data_dir = &args.data.dir;
    if load(data_dir)?.get(&args.name).is_none() {
        return Err(UserError::UnknownUser(args.name).into());
    }
    let password = read_new_password(&args.password)?;
    users::set_password(data_dir, &args.name, users::hash_password(&password)?)?;
    println!("changed the password of {}", args.name);
    Ok(())
}

fn del(args: NameArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.data.dir)?;
    let entry = users::delete_user(&data_dir, &args.name)?;
    println!(
        "deleted user {}; kept home directory {}",
        args.name,
        entry.resolved_home(&data_dir).display()
    );
    Ok(())
}

fn show(args: NameArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.data.dir)?;
    let db = load(&data_dir)?;
    let entry = db
        .get(&args.name)
        .ok_or_else(|| UserError::UnknownUser(args.name.clone()))?;
    println!("name:      {}", args.name);
    println!("home:      {}", entry.resolved_home(&data_dir).display());
    println!("read-only: {}", yes_no(entry.read_only));
    Ok(())
}

fn list(args: DataArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.dir)?;
    let db = load(&data_dir)?;
    let width = db
        .iter()
        .map(|(name, _)| name.len())
        .fold("NAME".len(), usize::max);
    println!("{:width$}  READ-ONLY  HOME", "NAME");
    for (name, entry) in db.iter() {
        let home = entry.resolved_home(&data_dir);
        let read_only = yes_no(entry.read_only);
        println!("{name:width$}  {read_only:9}  {}", home.display());
    }
    Ok(())
}

fn load(data_dir: &Path) -> Result<UserDb, UserError> {
    UserDb::load(&users::users_file(data_dir))
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
