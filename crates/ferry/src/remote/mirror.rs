//! `ferry mirror URL DIR` downloads a remote tree into DIR; `ferry mirror --reverse DIR URL`
//! uploads DIR. Only files that differ move, over `--parallel N` sessions taking files from one
//! queue; `--delete` removes what the source lacks.
//!
//! When a file counts as unchanged:
//! - By default, same size and same modification time to the second. A download sets the local
//!   file's time to the server's, so the next run finds them equal. An upload cannot set the
//!   server's time (ferry sends no MFMT): the server stamps it with the upload's time, so a
//!   remote file of the same size at least as new as the local one counts as unchanged.
//! - Servers without MLSD are listed with LIST, whose times are not exact: size alone decides.
//! - With `--checksum`, files of the same size are compared by the server's checksum against
//!   a hash of the local file (by time, with a note, when the server offers no checksum).
//!
//! Downloads land in `NAME.part` and uploads in the server's `NAME.part`, renamed when complete
//! and verified, as `get` and `put` do.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use ferry_client::{Client, StoreMode};
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use super::transfer::{Verified, check, digests, fetch, part_of, send};
use super::{ConnArgs, Connector, Progress, Session, mkdir_parents, note_refused_sessions};

/// `ferry mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The remote directory's URL (with --reverse: the local directory).
    source: String,
    /// The local directory (with --reverse: the remote directory's URL).
    target: String,
    /// Upload: mirror the local directory SOURCE to the URL TARGET.
    #[arg(short = 'R', long)]
    reverse: bool,
    /// Transfer N files at once, each over its own session (at most 64).
    #[arg(short = 'P', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Compare files of the same size by checksum instead of modification time.
    #[arg(long)]
    checksum: bool,
    /// Delete files and directories of the target that the source lacks.
    #[arg(long)]
    delete: bool,
    /// Print what would change; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Skip the checksum comparison after each transfer.
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Which way files move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Remote source, local target.
    Download,
    /// Local source, remote target (--reverse).
    Upload,
}

/// A file's size and modification time, as far as its side tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Facts {
    /// Bytes.
    size: Option<u64>,
    /// Last modification (none from LIST).
    modified: Option<SystemTime>,
}

/// One entry of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A directory.
    Dir,
    /// A file.
    File(Facts),
}

/// A tree by '/'-separated paths relative to its root; sorted, so a directory comes right
/// before what it contains and right after it in reverse.
type Tree = BTreeMap<String, Node>;

/// How differences are judged.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// Which side is the source.
    direction: Direction,
    /// --checksum.
    checksum: bool,
    /// --delete.
    delete: bool,
}

/// What to do with one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Missing or different on the target.
    Transfer,
    /// Same on both sides.
    Unchanged,
    /// Same size; the checksums decide (times do when the server has no checksum).
    CompareChecksums {
        /// What size and time alone would say.
        differs_by_time: bool,
    },
}

/// A file to transfer, or to compare first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileJob {
    /// Relative path.
    path: String,
    /// The source's facts (the size for bars, the time for the downloaded file).
    facts: Facts,
    /// `Transfer` or `CompareChecksums`.
    decision: Decision,
}

/// Everything to do, decided from the two trees before anything changes.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Target entries to remove (--delete), contents before their directory.
    delete: Vec<(String, Node)>,
    /// Target directories to create, parents first.
    mkdir: Vec<String>,
    /// Files to transfer or compare.
    files: Vec<FileJob>,
    /// Files found unchanged.
    unchanged: u64,
    /// Target entries of the wrong kind (a file where the source has a directory or the
    /// reverse) that only --delete may replace; what lies below them is skipped.
    conflicts: Vec<String>,
}

/// Decides everything that the trees alone can tell.
fn plan(source: &Tree, target: &Tree, rules: Rules) -> Plan {
    let mut plan = Plan::default();
    for (path, node) in target.iter().rev() {
        match source.get(path) {
            Some(wanted) if same_kind(wanted, node) => {}
            _ if rules.delete => plan.delete.push((path.clone(), *node)),
            Some(_) => plan.conflicts.push(path.clone()),
            None => {}
        }
    }
    for (path, node) in source {
        if plan.conflicts.iter().any(|c| is_within(path, c)) {
            continue;
        }
        let there = target.get(path).filter(|t| same_kind(node, t));
        match (node, there) {
            (Node::Dir, Some(_)) => {}
            (Node::Dir, None) => plan.mkdir.push(path.clone()),
            (Node::File(facts), there) => {
                let there = match there {
                    Some(Node::File(facts)) => Some(*facts),
                    _ => None,
                };
                match decide(*facts, there, rules) {
                    Decision::Unchanged => plan.unchanged += 1,
                    decision => plan.files.push(FileJob {
                        path: path.clone(),
                        facts: *facts,
                        decision,
                    }),
                }
            }
        }
    }
    plan
}

fn same_kind(a: &Node, b: &Node) -> bool {
    matches!(
        (a, b),
        (Node::Dir, Node::Dir) | (Node::File(_), Node::File(_))
    )
}

/// `path` is `dir` or lies below it.
fn is_within(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What to do with a source file, given the target's file at the same path (if any).
fn decide(source: Facts, target: Option<Facts>, rules: Rules) -> Decision {
    let Some(target) = target else {
        return Decision::Transfer;
    };
    let same_size = matches!((source.size, target.size), (Some(a), Some(b)) if a == b);
    if !same_size {
        return Decision::Transfer;
    }
    let differs_by_time = differs_by_time(source, target, rules.direction);
    match (rules.checksum, differs_by_time) {
        (true, _) => Decision::CompareChecksums { differs_by_time },
        (false, true) => Decision::Transfer,
        (false, false) => Decision::Unchanged,
    }
}

/// Whether the times say the file changed (see the module doc for why they differ by
/// direction). Whole seconds, since MLSD and MDTM say no more.
fn differs_by_time(source: Facts, target: Facts, direction: Direction) -> bool {
    let (remote, local) = match direction {
        Direction::Download => (source.modified, target.modified),
        Direction::Upload => (target.modified, source.modified),
    };
    // LIST gives no exact time: size alone decides.
    let Some(remote) = remote.map(whole_seconds) else {
        return false;
    };
    let Some(local) = local.map(whole_seconds) else {
        return true;
    };
    match direction {
        Direction::Download => local != remote,
        Direction::Upload => remote < local,
    }
}

/// Seconds since the epoch, rounded down.
fn whole_seconds(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::from(after.as_secs()),
        Err(before) => {
            let before = before.duration();
            -i128::from(before.as_secs()) - i128::from(before.subsec_nanos() > 0)
        }
    }
}

/// A name from a listing that is safe to use as one local path component: a server could
/// otherwise send `..`, a separator or a control character (a second command line).
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| std::path::is_separator(c) || c.is_control())
}

/// `dir/name` in a tree ("" is the root).
fn join_relative(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `root/relative` on the server, where `root` is a URL path ("" is the login directory).
fn remote_path(root: &str, relative: &str) -> String {
    match (root, relative) {
        ("", relative) => relative.to_string(),
        (root, "") => root.to_string(),
        (root, relative) if root.ends_with('/') => format!("{root}{relative}"),
        (root, relative) => format!("{root}/{relative}"),
    }
}

/// `root/relative` on this machine.
fn local_path(root: &Path, relative: &str) -> PathBuf {
    relative
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(root.to_path_buf(), |path, part| path.join(part))
}

/// The remote tree under `root`, listed one directory at a time. With `may_be_missing`, a
/// root the server refuses to list (550 or, from some servers, 501) gives `None`: a target
/// that is yet to be created. Entries with unusable names are left out, each with a note.
async fn remote_tree(
    client: &mut Client,
    root: &str,
    may_be_missing: bool,
    progress: &Progress,
) -> anyhow::Result<Option<Tree>> {
    let mut tree = Tree::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let path = remote_path(root, &dir);
        let entries = match client.list(&path).await {
            Ok(entries) => entries,
            Err(err) if dir.is_empty() && may_be_missing && refused_for_good(&err) => {
                return Ok(None);
            }
            Err(err) => return Err(err).with_context(|| format!("cannot list {path:?}")),
        };
        for entry in entries {
            if !safe_name(&entry.name) {
                progress.note(&format!(
                    "skipping {path:?}: unusable name {:?}",
                    entry.name
                ));
                continue;
            }
            let relative = join_relative(&dir, &entry.name);
            let node = if entry.is_dir {
                dirs.push(relative.clone());
                Node::Dir
            } else {
                Node::File(Facts {
                    size: entry.size,
                    modified: entry.modified,
                })
            };
            tree.insert(relative, node);
        }
    }
    Ok(Some(tree))
}

/// A permanent refusal (5xx): what servers answer for a directory that is not there.
fn refused_for_good(err: &ferry_client::ClientError) -> bool {
    err.reply_code()
        .is_some_and(|code| (500..600).contains(&code))
}

/// A local tree and what it could not include.
#[derive(Debug, Default)]
struct LocalTree {
    /// What can be mirrored.
    tree: Tree,
    /// Entries left out.
    skipped: Vec<Skipped>,
}

/// An entry a local tree leaves out, and why.
#[derive(Debug)]
struct Skipped {
    /// Relative path (lossy for a name that is not UTF-8).
    path: String,
    /// Why, for the message.
    why: String,
    /// A file the user expects mirrored (its name is not UTF-8, which FTP paths here must
    /// be; it cannot be read), rather than a deliberate omission: a symbolic link to a
    /// directory (which could loop), a broken link, a device or socket.
    failure: bool,
}

impl Skipped {
    fn failure(path: String, why: impl ToString) -> Skipped {
        let why = why.to_string();
        Skipped {
            path,
            why,
            failure: true,
        }
    }

    fn omission(path: String, why: &str) -> Skipped {
        let why = why.to_string();
        Skipped {
            path,
            why,
            failure: false,
        }
    }
}

/// The local tree under `root`; `None` when `root` does not exist. Symbolic links to files
/// count as the files.
fn local_tree(root: &Path) -> anyhow::Result<Option<LocalTree>> {
    if !root.exists() {
        return Ok(None);
    }
    let mut local = LocalTree::default();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let path = local_path(root, &dir);
        let entries =
            std::fs::read_dir(&path).with_context(|| format!("cannot list {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let Ok(name) = entry.file_name().into_string() else {
                let shown = join_relative(&dir, &entry.file_name().to_string_lossy());
                local
                    .skipped
                    .push(Skipped::failure(shown, "name is not UTF-8"));
                continue;
            };
            let relative = join_relative(&dir, &name);
            match local_node(&entry, relative.clone()) {
                Ok(Node::Dir) => {
                    dirs.push(relative.clone());
                    local.tree.insert(relative, Node::Dir);
                }
                Ok(node) => {
                    local.tree.insert(relative, node);
                }
                Err(skipped) => local.skipped.push(skipped),
            }
        }
    }
    Ok(Some(local))
}

/// What one directory entry is, or why it is left out.
fn local_node(entry: &std::fs::DirEntry, relative: String) -> Result<Node, Skipped> {
    let kind = match entry.file_type() {
        Ok(kind) => kind,
        Err(err) => return Err(Skipped::failure(relative, err)),
    };
    if kind.is_symlink() {
        return match std::fs::metadata(entry.path()) {
            Ok(meta) if meta.is_file() => Ok(file_node(&meta)),
            Ok(_) => Err(Skipped::omission(
                relative,
                "link to a directory, not followed",
            )),
            Err(_) => Err(Skipped::omission(relative, "broken link")),
        };
    }
    if kind.is_dir() {
        return Ok(Node::Dir);
    }
    if !kind.is_file() {
        return Err(Skipped::omission(relative, "not a regular file"));
    }
    match entry.metadata() {
        Ok(meta) => Ok(file_node(&meta)),
        Err(err) => Err(Skipped::failure(relative, err)),
    }
}

fn file_node(meta: &std::fs::Metadata) -> Node {
    Node::File(Facts {
        size: Some(meta.len()),
        modified: meta.modified().ok(),
    })
}

/// What happened, summed over the sessions.
#[derive(Debug, Default)]
struct Report {
    /// Files transferred (or that would be, in a dry run).
    transferred: u64,
    /// Their bytes.
    bytes: u64,
    /// Files already the same.
    unchanged: u64,
    /// Entries deleted.
    deleted: u64,
    /// Entries that failed (each reported on stderr when it happened).
    failed: u64,
    /// Files transferred that the server could not checksum.
    unverified: u64,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.transferred += other.transferred;
        self.bytes += other.bytes;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.failed += other.failed;
        self.unverified += other.unverified;
    }

    /// Counts a failure and says so on stderr; the mirror goes on.
    fn fail(&mut self, progress: &Progress, path: &str, err: &anyhow::Error) {
        self.failed += 1;
        let path = if path.is_empty() { "." } else { path };
        progress.error(&format!("ferry: mirror: {path}: {err:#}"));
    }

    /// The one-line summary.
    fn summary(&self, dry_run: bool) -> String {
        let Report {
            transferred,
            bytes,
            unchanged,
            deleted,
            ..
        } = self;
        if dry_run {
            format!(
                "dry run: {transferred} files to transfer ({bytes} bytes), {unchanged} unchanged, {deleted} to delete"
            )
        } else {
            format!(
                "{transferred} files transferred ({bytes} bytes), {unchanged} unchanged, {deleted} deleted"
            )
        }
    }
}

/// What the sessions share while transferring.
struct Mirror {
    /// Which way files move.
    direction: Direction,
    /// The remote directory (a URL path).
    remote_root: String,
    /// The local directory.
    local_root: PathBuf,
    /// --dry-run.
    dry_run: bool,
    /// Not --no-verify.
    verify: bool,
    /// Cleared when the server turns out to have no checksum, so --checksum notes it once.
    checksums_work: AtomicBool,
    /// Opens the further sessions.
    connector: Connector,
    /// Bars and notes.
    progress: Progress,
    /// The bar for all bytes to move.
    total: ProgressBar,
}

/// The files still to do, shared by the sessions.
type Queue = Mutex<VecDeque<FileJob>>;

pub(super) async fn mirror(args: MirrorArgs) -> anyhow::Result<()> {
    let rules = Rules {
        direction: match args.reverse {
            false => Direction::Download,
            true => Direction::Upload,
        },
        checksum: args.checksum,
        delete: args.delete,
    };
    let (url, local) = match rules.direction {
        Direction::Download => (&args.source, &args.target),
        Direction::Upload => (&args.target, &args.source),
    };
    let mut session = args.conn.open(url).await?;
    let mut mirror = Mirror {
        direction: rules.direction,
        remote_root: session.path.clone(),
        local_root: PathBuf::from(local),
        dry_run: args.dry_run,
        verify: !args.no_verify,
        checksums_work: AtomicBool::new(true),
        connector: session.connector.clone(),
        progress: session.progress.clone(),
        total: ProgressBar::hidden(),
    };
    let mut report = Report::default();
    let client = &mut session.client;
    let (source, target) = scan(client, &mirror, &mut report).await?;
    let plan = plan(&source, target.as_ref().unwrap_or(&Tree::new()), rules);
    report.unchanged = plan.unchanged;
    for path in &plan.conflicts {
        report.fail(&mirror.progress, path, &conflict(&source, path));
    }
    if target.is_none() {
        make_root(client, &mirror).await?;
    }
    delete_extra(client, &mirror, &plan.delete, &mut report).await;
    make_dirs(client, &mirror, &plan.mkdir, &mut report).await;
    mirror.total = mirror
        .progress
        .total(plan.files.iter().filter_map(|f| f.facts.size).sum());
    let (progress, parallel) = (mirror.progress.clone(), usize::from(args.parallel));
    report.add(transfer_all(&mut session, Arc::new(mirror), plan.files, parallel).await);
    session.client.quit().await?;
    finish(&report, &progress, &args)
}

/// The source tree (which must exist) and the target's (`None` when its root is missing).
/// Local files left out of an upload count as failures; deliberate omissions get a note.
async fn scan(
    client: &mut Client,
    mirror: &Mirror,
    report: &mut Report,
) -> anyhow::Result<(Tree, Option<Tree>)> {
    let is_target = mirror.direction == Direction::Upload;
    let remote = remote_tree(client, &mirror.remote_root, is_target, &mirror.progress).await?;
    let root = mirror.local_root.clone();
    let local = tokio::task::spawn_blocking(move || local_tree(&root)).await??;
    match mirror.direction {
        Direction::Download => {
            let remote =
                remote.with_context(|| format!("{:?}: no such directory", mirror.remote_root))?;
            Ok((remote, local.map(|l| l.tree)))
        }
        Direction::Upload => {
            let local = local
                .with_context(|| format!("{}: no such directory", mirror.local_root.display()))?;
            for skipped in &local.skipped {
                let text = format!("skipped: {}", skipped.why);
                match skipped.failure {
                    true => report.fail(&mirror.progress, &skipped.path, &anyhow!(text)),
                    false => mirror.progress.note(&format!("{}: {text}", skipped.path)),
                }
            }
            Ok((local.tree, remote))
        }
    }
}

/// Why a conflicting target entry stays.
fn conflict(source: &Tree, path: &str) -> anyhow::Error {
    match source.get(path) {
        Some(Node::Dir) => anyhow!("a file is where the directory goes (--delete replaces it)"),
        _ => anyhow!("a directory is where the file goes (--delete replaces it)"),
    }
}

/// Creates the missing target directory itself, with its parents.
async fn make_root(client: &mut Client, mirror: &Mirror) -> anyhow::Result<()> {
    if mirror.dry_run {
        println!("mkdir .");
        return Ok(());
    }
    match mirror.direction {
        Direction::Download => std::fs::create_dir_all(&mirror.local_root)
            .with_context(|| format!("cannot create {}", mirror.local_root.display())),
        Direction::Upload => mkdir_parents(client, mirror.remote_root.trim_end_matches('/')).await,
    }
}

/// Removes the target entries the source lacks (--delete), contents first.
async fn delete_extra(
    client: &mut Client,
    mirror: &Mirror,
    entries: &[(String, Node)],
    report: &mut Report,
) {
    for (path, node) in entries {
        if mirror.dry_run {
            println!("delete {path}");
            report.deleted += 1;
            continue;
        }
        let removed = match mirror.direction {
            Direction::Download => {
                let local = local_path(&mirror.local_root, path);
                match node {
                    Node::Dir => std::fs::remove_dir(&local),
                    Node::File(_) => std::fs::remove_file(&local),
                }
                .map_err(anyhow::Error::from)
            }
            Direction::Upload => {
                let remote = remote_path(&mirror.remote_root, path);
                match node {
                    Node::Dir => client.rmdir(&remote).await,
                    Node::File(_) => client.delete(&remote).await,
                }
                .map_err(anyhow::Error::from)
            }
        };
        match removed {
            Ok(()) => report.deleted += 1,
            Err(err) => report.fail(&mirror.progress, path, &err.context("cannot delete")),
        }
    }
}

/// Creates the target directories the source has, parents first.
async fn make_dirs(client: &mut Client, mirror: &Mirror, dirs: &[String], report: &mut Report) {
    for path in dirs {
        if mirror.dry_run {
            println!("mkdir {path}");
            continue;
        }
        let made = match mirror.direction {
            Direction::Download => {
                std::fs::create_dir_all(local_path(&mirror.local_root, path)).map_err(Into::into)
            }
            Direction::Upload => {
                let remote = remote_path(&mirror.remote_root, path);
                client.mkdir(&remote).await.map_err(anyhow::Error::from)
            }
        };
        if let Err(err) = made {
            report.fail(
                &mirror.progress,
                path,
                &err.context("cannot create the directory"),
            );
        }
    }
}

/// Runs the file jobs over the session and up to `parallel - 1` more.
async fn transfer_all(
    session: &mut Session,
    mirror: Arc<Mirror>,
    files: Vec<FileJob>,
    parallel: usize,
) -> Report {
    let helpers_wanted = parallel.min(files.len()).saturating_sub(1);
    let queue = Arc::new(Mutex::new(VecDeque::from(files)));
    let mut helpers = JoinSet::new();
    for _ in 0..helpers_wanted {
        helpers.spawn(helper(mirror.clone(), queue.clone()));
    }
    let mut report = take_files(&mut session.client, &mirror, &queue).await;
    let mut refused = Vec::new();
    while let Some(joined) = helpers.join_next().await {
        match joined {
            Ok(Ok(theirs)) => report.add(theirs),
            Ok(Err(err)) => refused.push(err),
            Err(err) => report.fail(&mirror.progress, "", &anyhow!("a session crashed: {err}")),
        }
    }
    mirror.total.finish_and_clear();
    note_refused_sessions(&mirror.progress, "mirror", &refused, helpers_wanted);
    // Left over only when every session was lost.
    let left = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
    for job in left {
        let err = anyhow!("not transferred: no session left");
        report.fail(&mirror.progress, &job.path, &err);
    }
    report
}

/// A further session: logs in and takes files like the first one. One that cannot log in (a
/// server limiting sessions per client, say) leaves its share to the others and returns why.
async fn helper(mirror: Arc<Mirror>, queue: Arc<Queue>) -> anyhow::Result<Report> {
    let mut client = mirror.connector.connect().await?;
    let report = take_files(&mut client, &mirror, &queue).await;
    let _ = client.quit().await;
    Ok(report)
}

/// Takes files off the queue until it is empty. After a failure a session that no longer
/// answers is replaced; one that cannot be leaves the rest to the other sessions.
async fn take_files(client: &mut Client, mirror: &Mirror, queue: &Queue) -> Report {
    let mut report = Report::default();
    loop {
        let job = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let Some(job) = job else {
            return report;
        };
        match one_file(client, mirror, &job).await {
            Ok(done) => report.add(done),
            Err(err) => {
                report.fail(&mirror.progress, &job.path, &err);
                if let Err(err) = recover(client, &mirror.connector).await {
                    let err = err.context("a session was lost and could not log in again");
                    report.fail(&mirror.progress, "", &err);
                    return report;
                }
            }
        }
    }
}

/// Keeps a session that still answers NOOP in step; otherwise logs in anew.
async fn recover(client: &mut Client, connector: &Connector) -> anyhow::Result<()> {
    if client
        .command("NOOP")
        .await
        .is_ok_and(|reply| reply.code == 200)
    {
        return Ok(());
    }
    *client = connector.connect().await?;
    Ok(())
}

/// Compares one file if it needs it, then transfers it unless it turned out unchanged.
async fn one_file(client: &mut Client, mirror: &Mirror, job: &FileJob) -> anyhow::Result<Report> {
    if let Decision::CompareChecksums { differs_by_time } = job.decision
        && !differs_by_checksum(client, mirror, job, differs_by_time).await?
    {
        mirror.total.dec_length(job.facts.size.unwrap_or(0));
        return Ok(Report {
            unchanged: 1,
            ..Report::default()
        });
    }
    let size = job.facts.size.unwrap_or(0);
    let (bytes, verified) = if mirror.dry_run {
        let verb = match mirror.direction {
            Direction::Download => "get",
            Direction::Upload => "put",
        };
        println!("{verb} {}", job.path);
        (size, Verified::Match)
    } else {
        let mut bar = FileBar::new(mirror, &job.path, job.facts.size);
        match mirror.direction {
            Direction::Download => download(client, mirror, job, &mut bar).await?,
            Direction::Upload => upload(client, mirror, job, &mut bar).await?,
        }
    };
    Ok(Report {
        transferred: 1,
        bytes,
        unverified: u64::from(verified == Verified::NoServerChecksum),
        ..Report::default()
    })
}

/// Whether the server's checksum differs from the local file's hash; without server
/// checksums, what the times said (noted once).
async fn differs_by_checksum(
    client: &mut Client,
    mirror: &Mirror,
    job: &FileJob,
    differs_by_time: bool,
) -> anyhow::Result<bool> {
    if !mirror.checksums_work.load(Ordering::Relaxed) {
        return Ok(differs_by_time);
    }
    let remote = remote_path(&mirror.remote_root, &job.path);
    let local = local_path(&mirror.local_root, &job.path);
    match digests(client, &remote, &local).await? {
        Some((theirs, ours)) => Ok(theirs.hex != ours),
        None => {
            if mirror.checksums_work.swap(false, Ordering::Relaxed) {
                mirror.progress.note(
                    "--checksum: the server offers no checksum; comparing sizes and times instead",
                );
            }
            Ok(differs_by_time)
        }
    }
}

/// Downloads into `NAME.part`, verifies, gives it the server's time and renames it.
async fn download(
    client: &mut Client,
    mirror: &Mirror,
    job: &FileJob,
    bar: &mut FileBar<'_>,
) -> anyhow::Result<(u64, Verified)> {
    let remote = remote_path(&mirror.remote_root, &job.path);
    let local = local_path(&mirror.local_root, &job.path);
    let part = part_of(&local);
    let size = job.facts.size;
    let bytes = fetch(client, &remote, &part, 0, size, &mut |n| bar.update(n)).await?;
    let verified = verify(client, mirror, &remote, &part).await?;
    if let Some(time) = job.facts.modified {
        // So that the next run finds the file unchanged.
        std::fs::File::options()
            .write(true)
            .open(&part)
            .and_then(|file| file.set_modified(time))
            .with_context(|| format!("cannot set the time of {}", part.display()))?;
    }
    std::fs::rename(&part, &local)
        .with_context(|| format!("cannot rename {} to {}", part.display(), local.display()))?;
    Ok((bytes, verified))
}

/// Uploads to the server's `NAME.part`, verifies and renames it.
async fn upload(
    client: &mut Client,
    mirror: &Mirror,
    job: &FileJob,
    bar: &mut FileBar<'_>,
) -> anyhow::Result<(u64, Verified)> {
    let local = local_path(&mirror.local_root, &job.path);
    let remote = remote_path(&mirror.remote_root, &job.path);
    let temp = format!("{remote}.part");
    let mut progress = |n| bar.update(n);
    let bytes = send(client, &local, 0, &temp, StoreMode::Replace, &mut progress).await?;
    let verified = verify(client, mirror, &temp, &local).await?;
    client.rename(&temp, &remote).await?;
    Ok((bytes, verified))
}

/// The checksum comparison after a transfer, unless --no-verify.
async fn verify(
    client: &mut Client,
    mirror: &Mirror,
    remote: &str,
    local: &Path,
) -> anyhow::Result<Verified> {
    if !mirror.verify {
        return Ok(Verified::Match);
    }
    check(client, remote, local).await
}

/// One file's bar, feeding the total bar too; cleared when dropped, transfer failed or not.
struct FileBar<'a> {
    /// This file's bar.
    bar: ProgressBar,
    /// The bar for all files.
    total: &'a ProgressBar,
    /// Bytes already counted in `total`.
    seen: u64,
}

impl<'a> FileBar<'a> {
    fn new(mirror: &'a Mirror, path: &str, size: Option<u64>) -> Self {
        FileBar {
            bar: mirror.progress.file(path, size),
            total: &mirror.total,
            seen: 0,
        }
    }

    /// The transfer has moved `n` bytes.
    fn update(&mut self, n: u64) {
        self.bar.set_position(n);
        self.total.inc(n.saturating_sub(self.seen));
        self.seen = n;
    }
}

impl Drop for FileBar<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Prints the summary and notes, and fails when anything did.
fn finish(report: &Report, progress: &Progress, args: &MirrorArgs) -> anyhow::Result<()> {
    if report.unverified > 0 {
        progress.note(&format!(
            "{} files not verified: the server offers no checksum",
            report.unverified
        ));
    }
    if !args.conn.quiet {
        println!("{}", report.summary(args.dry_run));
    }
    if report.failed > 0 {
        bail!(
            "mirror: {} failed (see above)",
            plural(report.failed, "item")
        );
    }
    Ok(())
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn file(size: u64, secs: u64) -> Node {
        Node::File(Facts {
            size: Some(size),
            modified: at(secs),
        })
    }

    fn facts(size: u64, modified: Option<SystemTime>) -> Facts {
        Facts {
            size: Some(size),
            modified,
        }
    }

    fn tree(entries: &[(&str, Node)]) -> Tree {
        entries.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    const DOWN: Rules = Rules {
        direction: Direction::Download,
        checksum: false,
        delete: false,
    };
    const UP: Rules = Rules {
        direction: Direction::Upload,
        ..DOWN
    };

    #[test]
    fn downloads_are_unchanged_only_with_the_same_size_and_second() {
        let remote = facts(5, at(1000));
        assert_eq!(decide(remote, None, DOWN), Decision::Transfer);
        assert_eq!(
            decide(remote, Some(facts(5, at(1000))), DOWN),
            Decision::Unchanged
        );
        assert_eq!(
            decide(remote, Some(facts(6, at(1000))), DOWN),
            Decision::Transfer
        );
        assert_eq!(
            decide(remote, Some(facts(5, at(999))), DOWN),
            Decision::Transfer
        );
        assert_eq!(
            decide(remote, Some(facts(5, at(1001))), DOWN),
            Decision::Transfer
        );
        let local_with_nanos = at(1000).map(|t| t + Duration::from_millis(700));
        assert_eq!(
            decide(remote, Some(facts(5, local_with_nanos)), DOWN),
            Decision::Unchanged
        );
    }

    #[test]
    fn uploads_are_unchanged_when_the_remote_copy_is_at_least_as_new() {
        let local = facts(5, at(1000).map(|t| t + Duration::from_millis(700)));
        assert_eq!(
            decide(local, Some(facts(5, at(1000))), UP),
            Decision::Unchanged
        );
        assert_eq!(
            decide(local, Some(facts(5, at(2000))), UP),
            Decision::Unchanged
        );
        assert_eq!(
            decide(local, Some(facts(5, at(999))), UP),
            Decision::Transfer
        );
        assert_eq!(
            decide(local, Some(facts(4, at(2000))), UP),
            Decision::Transfer
        );
    }

    #[test]
    fn without_remote_times_size_alone_decides() {
        let list = facts(5, None);
        assert_eq!(
            decide(list, Some(facts(5, at(3))), DOWN),
            Decision::Unchanged
        );
        assert_eq!(decide(facts(5, at(3)), Some(list), UP), Decision::Unchanged);
        assert_eq!(
            decide(list, Some(facts(6, at(3))), DOWN),
            Decision::Transfer
        );
        let unknown = Facts::default();
        assert_eq!(decide(unknown, Some(unknown), DOWN), Decision::Transfer);
    }

    #[test]
    fn checksums_decide_only_between_files_of_the_same_size() {
        let rules = Rules {
            checksum: true,
            ..DOWN
        };
        let remote = facts(5, at(1000));
        assert_eq!(
            decide(remote, Some(facts(5, at(1000))), rules),
            Decision::CompareChecksums {
                differs_by_time: false
            }
        );
        assert_eq!(
            decide(remote, Some(facts(5, at(7))), rules),
            Decision::CompareChecksums {
                differs_by_time: true
            }
        );
        assert_eq!(
            decide(remote, Some(facts(4, at(1000))), rules),
            Decision::Transfer
        );
    }

    #[test]
    fn a_plan_creates_parents_first_and_skips_what_is_unchanged() {
        let source = tree(&[
            ("a", Node::Dir),
            ("a/b", Node::Dir),
            ("a/b/new", file(1, 1)),
            ("empty", Node::Dir),
            ("same", file(3, 3)),
            ("zero", file(0, 4)),
        ]);
        let target = tree(&[("same", file(3, 3))]);
        let plan = plan(&source, &target, DOWN);
        assert_eq!(plan.mkdir, ["a", "a/b", "empty"]);
        let files: Vec<_> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["a/b/new", "zero"]);
        assert_eq!(plan.unchanged, 1);
        assert!(plan.delete.is_empty() && plan.conflicts.is_empty());
    }

    #[test]
    fn delete_removes_contents_before_their_directory_and_only_with_the_flag() {
        let source = tree(&[("keep", file(1, 1))]);
        let target = tree(&[
            ("keep", file(1, 1)),
            ("old", Node::Dir),
            ("old/sub", Node::Dir),
            ("old/sub/f", file(1, 1)),
            ("old b", file(1, 1)),
        ]);
        assert!(plan(&source, &target, DOWN).delete.is_empty());
        let rules = Rules {
            delete: true,
            ..DOWN
        };
        let deleted: Vec<_> = plan(&source, &target, rules)
            .delete
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(deleted, ["old/sub/f", "old/sub", "old b", "old"]);
    }

    #[test]
    fn an_entry_of_the_wrong_kind_is_a_conflict_unless_deleted() {
        let source = tree(&[("x", Node::Dir), ("x/f", file(1, 1)), ("y", file(1, 1))]);
        let target = tree(&[("x", file(1, 1)), ("y", Node::Dir), ("y/g", file(1, 1))]);
        let kept = plan(&source, &target, DOWN);
        assert_eq!(kept.conflicts, ["y", "x"]);
        assert!(kept.mkdir.is_empty() && kept.files.is_empty() && kept.delete.is_empty());
        let rules = Rules {
            delete: true,
            ..DOWN
        };
        let replaced = plan(&source, &target, rules);
        let deleted: Vec<_> = replaced.delete.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(deleted, ["y/g", "y", "x"]);
        assert_eq!(replaced.mkdir, ["x"]);
        let files: Vec<_> = replaced.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["x/f", "y"]);
    }

    #[test]
    fn names_from_a_server_cannot_leave_the_directory() {
        assert!(safe_name("ok name.txt"));
        assert!(safe_name("ünïcødé ✓"));
        assert!(safe_name("..hidden"));
        for bad in ["", ".", "..", "a/b", "../x", "a\rRETR b", "nul\0"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn remote_paths_join_onto_url_paths() {
        assert_eq!(remote_path("", "a/b"), "a/b");
        assert_eq!(remote_path("dir", "a"), "dir/a");
        assert_eq!(remote_path("dir/", "a"), "dir/a");
        assert_eq!(remote_path("/", "a"), "/a");
        assert_eq!(remote_path("dir", ""), "dir");
        assert!(is_within("a/b", "a") && is_within("a", "a"));
        assert!(!is_within("ab", "a") && !is_within("a b", "a"));
    }
}
