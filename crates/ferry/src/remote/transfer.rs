//! `ferry get`, `put` and `cat`: progress, resume (-c) and verification against the server's
//! checksum. Downloads land in `NAME.part` and are renamed only when complete and verified;
//! uploads go to `NAME.part` on the server and are renamed the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::{Client, StoreMode};
use ferry_proto::digest::{Hasher, hex};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{ConnArgs, Progress, UrlArgs};

/// `ferry get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// URL of the file.
    url: String,
    /// Where to save it (a directory keeps the remote name) [default: the remote name].
    local: Option<PathBuf>,
    /// Continue a partial download (LOCAL.part, or LOCAL itself) from where it stopped.
    #[arg(short = 'c', long = "continue")]
    resume: bool,
    /// Skip the checksum comparison with the server.
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `ferry put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The local file.
    local: PathBuf,
    /// URL of the remote file, or of a directory (ending in /) to upload into.
    url: String,
    /// Continue a partial upload (the remote NAME.part) from where it stopped.
    #[arg(short = 'c', long = "continue")]
    resume: bool,
    /// Skip the checksum comparison with the server.
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// The last path segment.
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// `NAME.part` beside `path`.
fn part_of(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

pub(super) async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let remote = session.path.clone();
    if remote.is_empty() || remote.ends_with('/') {
        bail!(
            "{} names a directory; use ferry ls or ferry mirror",
            args.url
        );
    }
    let name = base_name(&remote).to_string();
    let local = match args.local {
        Some(dir) if dir.is_dir() => dir.join(&name),
        Some(path) => path,
        None => PathBuf::from(&name),
    };
    let part = part_of(&local);
    if args.resume && !part.exists() && local.exists() {
        std::fs::rename(&local, &part)
            .with_context(|| format!("cannot continue {}", local.display()))?;
    }
    let offset = if args.resume {
        std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };
    let total = session.client.size(&remote).await?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .open(&part)
        .await
        .with_context(|| format!("cannot write {}", part.display()))?;
    let bar = session.progress.file(&name, total);
    bar.set_position(offset);
    if total != Some(offset) {
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        session
            .client
            .retr(&remote, offset, &mut file, &mut |n| {
                bar.set_position(offset + n)
            })
            .await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    bar.finish_and_clear();
    verify(
        &mut session.client,
        &remote,
        &part,
        args.no_verify,
        &session.progress,
    )
    .await?;
    std::fs::rename(&part, &local)
        .with_context(|| format!("cannot rename {} to {}", part.display(), local.display()))?;
    session.client.quit().await?;
    Ok(())
}

pub(super) async fn put(args: PutArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let local_name = args
        .local
        .file_name()
        .and_then(|n| n.to_str())
        .context("the local path has no file name")?;
    let remote = if session.path.is_empty() || session.path.ends_with('/') {
        format!("{}{local_name}", session.path)
    } else {
        session.path.clone()
    };
    let temp = format!("{remote}.part");
    let len = std::fs::metadata(&args.local)
        .with_context(|| format!("cannot read {}", args.local.display()))?
        .len();
    let offset = match args.resume {
        true => session
            .client
            .size(&temp)
            .await?
            .filter(|&n| n <= len)
            .unwrap_or(0),
        false => 0,
    };
    let mut file = tokio::fs::File::open(&args.local).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mode = match offset {
        0 => StoreMode::Replace,
        n if session.client.features().has("REST") => StoreMode::At(n),
        _ => StoreMode::Append,
    };
    let bar = session.progress.file(local_name, Some(len));
    bar.set_position(offset);
    session
        .client
        .stor(&temp, mode, &mut file, &mut |n| {
            bar.set_position(offset + n)
        })
        .await?;
    bar.finish_and_clear();
    verify(
        &mut session.client,
        &temp,
        &args.local,
        args.no_verify,
        &session.progress,
    )
    .await?;
    session.client.rename(&temp, &remote).await?;
    session.client.quit().await?;
    Ok(())
}

pub(super) async fn cat(args: UrlArgs) -> anyhow::Result<()> {
    let mut session = args.conn.open(&args.url).await?;
    let mut stdout = tokio::io::stdout();
    session
        .client
        .retr(&session.path.clone(), 0, &mut stdout, &mut |_| {})
        .await?;
    stdout.flush().await?;
    session.client.quit().await?;
    Ok(())
}

/// Compares the server's checksum of `remote` with `local`'s. A mismatch is an error that
/// leaves the `.part` file in place; a server without checksums only earns a note.
pub(super) async fn verify(
    client: &mut Client,
    remote: &str,
    local: &Path,
    skip: bool,
    progress: &Progress,
) -> anyhow::Result<()> {
    if skip {
        return Ok(());
    }
    let Some(theirs) = client.checksum(remote).await? else {
        progress.note(&format!(
            "{remote}: not verified: server offers no checksum"
        ));
        return Ok(());
    };
    let path = local.to_path_buf();
    let algorithm = theirs.algorithm;
    let ours = tokio::task::spawn_blocking(move || hash_file(&path, algorithm)).await??;
    if ours != theirs.hex {
        bail!(
            "checksum mismatch for {remote}: server {} {}, local {ours}; kept as {}",
            algorithm.name(),
            theirs.hex,
            local.display()
        );
    }
    Ok(())
}

fn hash_file(path: &Path, algorithm: ferry_proto::HashAlgorithm) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finish()));
        }
        hasher.update(&buf[..n]);
    }
}
