//! The client commands: `ferry ls|get|put|rm|mkdir|rmdir|mv|cat|mirror URL ...` on ftp://,
//! ftpes:// and ftps:// URLs, against ferry or any other FTP server.

mod mirror;
mod progress;
mod segments;
mod transfer;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_client::tls::TlsOptions;
use ferry_client::{Client, Endpoint, Options};

pub use progress::Progress;

/// Client subcommands (they share [`ConnArgs`]).
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List a remote directory (names; -l for the server's long listing).
    Ls(LsArgs),
    /// Download a file: to LOCAL, or to its name in the current directory.
    Get(transfer::GetArgs),
    /// Upload a file to URL (a URL ending in / names a directory).
    Put(transfer::PutArgs),
    /// Print a remote file on stdout.
    Cat(UrlArgs),
    /// Delete a remote file.
    Rm(UrlArgs),
    /// Create a remote directory.
    Mkdir(MkdirArgs),
    /// Remove an empty remote directory.
    Rmdir(UrlArgs),
    /// Rename or move a remote file or directory.
    Mv(MvArgs),
    /// Download a remote tree into DIR (with --reverse: upload DIR), moving only what differs.
    Mirror(mirror::MirrorArgs),
}

/// How to reach the server; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Use explicit TLS (AUTH TLS) on an ftp:// URL, as ftpes:// does.
    #[arg(long, global = true)]
    tls: bool,
    /// Active mode (PORT/EPRT): the server connects back to us.
    #[arg(long, global = true)]
    active: bool,
    /// Accept any TLS certificate (test servers only).
    #[arg(long, global = true)]
    insecure: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "PEM", global = true)]
    cacert: Option<PathBuf>,
    /// Read the password from the first line of stdin.
    #[arg(long, global = true)]
    password_stdin: bool,
    /// No progress bars or notes, only errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Seconds to wait for the server before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 60, global = true)]
    timeout: u64,
}

/// A command taking one URL.
#[derive(Debug, Args)]
pub struct UrlArgs {
    /// ftp://, ftpes:// or ftps:// URL.
    url: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `ferry ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The server's long listing (LIST) instead of names.
    #[arg(short = 'l')]
    long: bool,
    /// ftp://, ftpes:// or ftps:// URL of a directory.
    url: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `ferry mkdir`.
#[derive(Debug, Args)]
pub struct MkdirArgs {
    /// Create missing parents too; an existing directory is not an error.
    #[arg(short = 'p', long)]
    parents: bool,
    /// URL of the directory to create.
    url: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `ferry mv`.
#[derive(Debug, Args)]
pub struct MvArgs {
    /// URL of the file or directory.
    url: String,
    /// New path on the same server (relative to the login directory, like URL paths).
    to: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs one client command on a fresh runtime.
pub fn run(cmd: RemoteCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cmd {
            RemoteCommand::Ls(args) => ls(args).await,
            RemoteCommand::Get(args) => transfer::get(args).await,
            RemoteCommand::Put(args) => transfer::put(args).await,
            RemoteCommand::Cat(args) => transfer::cat(args).await,
            RemoteCommand::Rm(args) => {
                simple(&args, |c, p| Box::pin(async move { c.delete(&p).await })).await
            }
            RemoteCommand::Rmdir(args) => {
                simple(&args, |c, p| Box::pin(async move { c.rmdir(&p).await })).await
            }
            RemoteCommand::Mkdir(args) => mkdir(args).await,
            RemoteCommand::Mv(args) => mv(args).await,
            RemoteCommand::Mirror(args) => mirror::mirror(args).await,
        }
    })
}

/// A logged-in session and the path the URL names.
#[derive(Debug)]
pub struct Session {
    /// The session.
    pub client: Client,
    /// The URL's path (relative to the login directory).
    pub path: String,
    /// Whether bars and notes may be shown.
    pub progress: Progress,
    /// Opens more sessions like this one, for transfers in parallel.
    pub connector: Connector,
}

/// Everything needed to log in to one server, resolved once: --password-stdin can be read
/// only once, yet parallel transfers open several sessions.
#[derive(Clone)]
pub struct Connector {
    /// The server (its path is the URL's).
    endpoint: Endpoint,
    /// Login name.
    user: String,
    /// Password; never printed (see the Debug impl).
    password: String,
    /// TLS, active mode and timeout.
    options: Options,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint.with_path(""))
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Logs in with a new session.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let endpoint = &self.endpoint;
        Client::connect(endpoint, &self.user, &self.password, &self.options)
            .await
            .with_context(|| format!("{}:{}", endpoint.host, endpoint.port))
    }
}

/// One note for the further sessions of a parallel command (`what`) that could not log in out
/// of `wanted`, such as a server limiting sessions per client; the work goes on over the rest.
fn note_refused_sessions(
    progress: &Progress,
    what: &str,
    refused: &[anyhow::Error],
    wanted: usize,
) {
    if let Some(first) = refused.first() {
        progress.note(&format!(
            "{what}: {} of {wanted} more sessions could not log in ({first:#}); going on with fewer",
            refused.len()
        ));
    }
}

impl ConnArgs {
    /// Parses `url`, finds the credentials and logs in.
    pub async fn open(&self, url: &str) -> anyhow::Result<Session> {
        let connector = self.connector(url)?;
        Ok(Session {
            client: connector.connect().await?,
            path: connector.endpoint.path.clone(),
            progress: Progress::new(self.quiet),
            connector,
        })
    }

    /// Parses `url` and finds the credentials, without connecting yet.
    fn connector(&self, url: &str) -> anyhow::Result<Connector> {
        let endpoint = Endpoint::parse(url, self.tls)?;
        let (user, password) = self.credentials(&endpoint)?;
        let options = Options {
            tls: TlsOptions {
                insecure: self.insecure,
                ca_file: self.cacert.clone(),
            },
            active: self.active,
            timeout: Duration::from_secs(self.timeout.max(1)),
        };
        Ok(Connector {
            endpoint,
            user,
            password,
            options,
        })
    }

    /// URL, then --password-stdin, FERRY_PASSWORD, ~/.netrc; anonymous when none names a user.
    fn credentials(&self, endpoint: &Endpoint) -> anyhow::Result<(String, String)> {
        let netrc = netrc_entry(&endpoint.host);
        let user = endpoint
            .user
            .clone()
            .or_else(|| netrc.as_ref().map(|(login, _)| login.clone()))
            .unwrap_or_else(|| "anonymous".to_string());
        if let Some(password) = &endpoint.password {
            return Ok((user, password.clone()));
        }
        if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_to_string(&mut line)
                .context("cannot read the password from stdin")?;
            let password = line.lines().next().unwrap_or("").to_string();
            return Ok((user, password));
        }
        if let Ok(password) = std::env::var("FERRY_PASSWORD") {
            return Ok((user, password));
        }
        if let Some((login, password)) = netrc
            && login == user
        {
            return Ok((user, password));
        }
        if user == "anonymous" {
            return Ok((user, "ferry@".to_string()));
        }
        if std::io::stdin().is_terminal() {
            let password =
                rpassword::prompt_password(format!("Password for {user}@{}: ", endpoint.host))?;
            return Ok((user, password));
        }
        bail!(
            "no password for {user}: put it in the URL, FERRY_PASSWORD, ~/.netrc or pass --password-stdin"
        )
    }
}

/// `machine HOST login USER password PASS` (or `default ...`) from ~/.netrc.
fn netrc_entry(host: &str) -> Option<(String, String)> {
    let home = std::env::var_os("HOME")?;
    let text = std::fs::read_to_string(PathBuf::from(home).join(".netrc")).ok()?;
    parse_netrc(&text, host)
}

fn parse_netrc(text: &str, host: &str) -> Option<(String, String)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut found = None;
    let mut i = 0;
    while i < words.len() {
        let matches = match words[i] {
            "machine" => {
                i += 1;
                words.get(i) == Some(&host)
            }
            "default" => found.is_none(),
            _ => {
                i += 1;
                continue;
            }
        };
        i += 1;
        let (mut login, mut password) = (None, None);
        while i < words.len() && words[i] != "machine" && words[i] != "default" {
            match words[i] {
                "login" => login = words.get(i + 1).map(|s| s.to_string()),
                "password" => password = words.get(i + 1).map(|s| s.to_string()),
                _ => {}
            }
            i += 2;
        }
        if matches && let (Some(l), Some(p)) = (login, password) {
            found = Some((l, p));
        }
    }
    found
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

async fn simple(
    args: &UrlArgs,
    op: impl FnOnce(&mut Client, String) -> BoxFuture<'_, Result<(), ferry_client::ClientError>>,
) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let path = session.path.clone();
    op(&mut session.client, path).await?;
    session.client.quit().await?;
    Ok(())
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    if args.long {
        for line in session.client.listing_lines("LIST", &session.path).await? {
            println!("{line}");
        }
    } else {
        let mut entries = session.client.list(&session.path).await?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            println!("{}{}", entry.name, if entry.is_dir { "/" } else { "" });
        }
    }
    session.client.quit().await?;
    Ok(())
}

async fn mkdir(args: MkdirArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let path = session.path.trim_end_matches('/').to_string();
    if args.parents {
        mkdir_parents(&mut session.client, &path).await?;
    } else {
        session.client.mkdir(&path).await?;
    }
    session.client.quit().await?;
    Ok(())
}

/// Creates the remote directory `path` and its missing parents; those already there are fine.
async fn mkdir_parents(client: &mut Client, path: &str) -> anyhow::Result<()> {
    let absolute = path.starts_with('/');
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !prefix.is_empty() || absolute {
            prefix.push('/');
        }
        prefix.push_str(part);
        if client.mkdir(&prefix).await.is_err() {
            // Already there is fine; anything else shows when we try to use it.
            let here = client.pwd().await?;
            client
                .cwd(&prefix)
                .await
                .with_context(|| format!("cannot create {prefix}"))?;
            client.cwd(&here).await?;
        }
    }
    Ok(())
}

async fn mv(args: MvArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let to = match Endpoint::parse(&args.to, false) {
        Ok(endpoint) => endpoint.path,
        Err(_) => args.to.clone(),
    };
    session.client.rename(&session.path, &to).await?;
    session.client.quit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_machine_entries_win_over_default() {
        let text = "default login anon password a\nmachine h login bob password s3cret\n";
        assert_eq!(
            parse_netrc(text, "h"),
            Some(("bob".into(), "s3cret".into()))
        );
        assert_eq!(
            parse_netrc(text, "other"),
            Some(("anon".into(), "a".into()))
        );
        assert_eq!(parse_netrc("machine x login a password b", "h"), None);
    }
}
