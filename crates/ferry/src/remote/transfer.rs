//! `ferry get`, `put` and `cat`: progress, resume (-c) and verification against the server's
//! checksum. Downloads land in `NAME.part` and are renamed only when complete and verified;
//! uploads go to `NAME.part` on the server and are renamed the same way. `get --segments` is in
//! `segments.rs`; `mirror` reuses the pieces here.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::{Checksum, Client, StoreMode};
use ferry_proto::digest::{Hasher, hex};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{ConnArgs, Progress, UrlArgs, segments};

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
    /// Fetch N byte ranges at once over N sessions, like lftp's pget -n (at most 64; fewer
    /// for small files; one stream with -c).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    segments: u16,
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
pub(super) fn part_of(path: &Path) -> PathBuf {
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
    let total = session.client.size(&remote).await?;
    let rest = session.client.features().has("REST");
    let ranges = segments::ranges_for(args.segments, args.resume, total, rest, &session.progress);
    if ranges.len() > 1 {
        segments::fetch(&mut session, &remote, &name, &part, &ranges).await?;
    } else {
        let offset = resume_offset(args.resume, &local, &part)?;
        let bar = session.progress.file(&name, total);
        bar.set_position(offset);
        let mut progress = |n| bar.set_position(offset + n);
        fetch(
            &mut session.client,
            &remote,
            &part,
            offset,
            total,
            &mut progress,
        )
        .await?;
        bar.finish_and_clear();
    }
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

/// Where a download continues: the length of `part` with -c (a finished `local` becomes the
/// `.part` again, so -c on it checks it against the server), else 0.
fn resume_offset(resume: bool, local: &Path, part: &Path) -> anyhow::Result<u64> {
    if !resume {
        return Ok(0);
    }
    if !part.exists() && local.exists() {
        std::fs::rename(local, part)
            .with_context(|| format!("cannot continue {}", local.display()))?;
    }
    Ok(std::fs::metadata(part).map(|m| m.len()).unwrap_or(0))
}

/// Downloads `remote` into `part` from `offset`, keeping the bytes before it, and syncs it to
/// disk; returns the bytes received. When `total` says nothing is left (a finished `.part`, an
/// empty file) the file is only created. `progress` gets the bytes received so far.
pub(super) async fn fetch(
    client: &mut Client,
    remote: &str,
    part: &Path,
    offset: u64,
    total: Option<u64>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<u64> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .open(part)
        .await
        .with_context(|| format!("cannot write {}", part.display()))?;
    let mut received = 0;
    if total != Some(offset) {
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        match client.retr(remote, offset, &mut file, progress).await {
            Ok(n) => received = n,
            Err(err) => {
                // Bytes that did arrive stay for -c.
                let _ = file.flush().await;
                drop(file);
                discard_if_empty(part, offset);
                return Err(err.into());
            }
        }
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(received)
}

/// A fresh `.part` that got no byte (the server refused the file) would only be litter; one
/// with bytes stays for -c.
fn discard_if_empty(part: &Path, offset: u64) {
    if offset == 0 && std::fs::metadata(part).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(part);
    }
}

pub(super) async fn put(args: PutArgs) -> anyhow::Result<()> {
    // Checked before connecting, so a wrong argument leaves nothing on the server.
    let meta = std::fs::metadata(&args.local)
        .with_context(|| format!("cannot read {}", args.local.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (use ferry mirror --reverse for a directory)",
            args.local.display()
        );
    }
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
    let mode = match offset {
        0 => StoreMode::Replace,
        n if session.client.features().has("REST") => StoreMode::At(n),
        _ => StoreMode::Append,
    };
    let bar = session.progress.file(local_name, Some(len));
    bar.set_position(offset);
    let mut progress = |n| bar.set_position(offset + n);
    send(
        &mut session.client,
        &args.local,
        offset,
        &temp,
        mode,
        &mut progress,
    )
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

/// Uploads `local` from `offset` to `remote` in `mode`; `progress` gets the bytes sent so far.
pub(super) async fn send(
    client: &mut Client,
    local: &Path,
    offset: u64,
    remote: &str,
    mode: StoreMode,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<u64> {
    let mut file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot read {}", local.display()))?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    Ok(client.stor(remote, mode, &mut file, progress).await?)
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

/// How a finished transfer was checked against the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verified {
    /// The server's checksum matches the local file's.
    Match,
    /// The server offers no checksum command.
    NoServerChecksum,
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
    if check(client, remote, local).await? == Verified::NoServerChecksum {
        progress.note(&format!(
            "{remote}: not verified: server offers no checksum"
        ));
    }
    Ok(())
}

/// Like [`verify`], but says what it found instead of printing it (mirror notes it once).
pub(super) async fn check(
    client: &mut Client,
    remote: &str,
    local: &Path,
) -> anyhow::Result<Verified> {
    let Some((theirs, ours)) = digests(client, remote, local).await? else {
        return Ok(Verified::NoServerChecksum);
    };
    if ours != theirs.hex {
        bail!(
            "checksum mismatch for {remote}: server {} {}, local {ours}; kept as {}",
            theirs.algorithm.name(),
            theirs.hex,
            local.display()
        );
    }
    Ok(Verified::Match)
}

/// The server's checksum of `remote` and `local`'s digest by the same algorithm; `None` when
/// the server offers no checksum command.
pub(super) async fn digests(
    client: &mut Client,
    remote: &str,
    local: &Path,
) -> anyhow::Result<Option<(Checksum, String)>> {
    // When FEAT names the algorithm, the local file is hashed while the server hashes its
    // copy, instead of one after the other.
    let hash_local = |algorithm| {
        let path = local.to_path_buf();
        tokio::task::spawn_blocking(move || hash_file(&path, algorithm))
    };
    let early = client
        .checksum_algorithm()
        .map(|algorithm| (algorithm, hash_local(algorithm)));
    let Some(theirs) = client.checksum(remote).await? else {
        return Ok(None);
    };
    let ours = match early {
        Some((algorithm, task)) if algorithm == theirs.algorithm => task.await??,
        _ => hash_local(theirs.algorithm).await??,
    };
    Ok(Some((theirs, ours)))
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
