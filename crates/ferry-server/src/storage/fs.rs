//! Local-disk storage confined by capability: every operation goes through a cap-std `Dir`
//! opened on the user's home, so `..`, absolute paths and symlinks cannot reach anything
//! outside it, whatever the path string says.

use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::quota::Usage;

use super::{
    DirEntry, DirectFile, Download, Listing, Metadata, Storage, StorageError, Upload, UploadMode,
    VirtualPath,
};

/// Prefix of the temporary sibling a replacing upload is written to.
const TEMP_PREFIX: &str = ".ferry-upload-";

/// A user's home directory on local disk.
#[derive(Debug, Clone)]
pub struct FsStorage {
    /// The capability every path is resolved against; shared with blocking tasks.
    home: Arc<Dir>,
}

impl FsStorage {
    /// Opens (creating if needed) the home directory at `home`.
    pub fn open(home: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(home)?;
        let dir = Dir::open_ambient_dir(home, ambient_authority())?;
        Ok(FsStorage {
            home: Arc::new(dir),
        })
    }

    /// Opens `home` through `homes`: sessions of one user share one descriptor (blocking).
    pub fn open_shared(home: &Path, homes: &OpenHomes) -> io::Result<Self> {
        Ok(FsStorage {
            home: homes.open(home)?,
        })
    }

    /// Runs a blocking file-system call off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Dir) -> Result<T, StorageError> + Send + 'static,
    {
        let home = Arc::clone(&self.home);
        tokio::task::spawn_blocking(move || f(&home))
            .await
            .map_err(|err| StorageError::Io(io::Error::other(err)))?
    }
}

/// Home directories open for logged-in sessions: one descriptor per home rather than one per
/// session (10,000 sessions of one user held 10,000 descriptors of the same directory, and
/// with their sockets ran into the open-files limit).
#[derive(Debug, Default)]
pub struct OpenHomes {
    open: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Weak<Dir>>>,
}

impl OpenHomes {
    /// The directory at `home` (created if needed): the one already open if it is still the
    /// directory at that path, else a new handle. Blocking.
    pub fn open(&self, home: &Path) -> io::Result<Arc<Dir>> {
        std::fs::create_dir_all(home)?;
        let at_path = std::fs::metadata(home)?;
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = open.get(home).and_then(std::sync::Weak::upgrade) {
            let same = dir.dir_metadata().is_ok_and(|held| {
                use std::os::unix::fs::MetadataExt as _;
                (held.dev(), held.ino()) == (at_path.dev(), at_path.ino())
            });
            if same {
                return Ok(dir);
            }
        }
        let dir = Arc::new(Dir::open_ambient_dir(home, ambient_authority())?);
        if open.len() >= 1024 {
            open.retain(|_, dir| dir.strong_count() > 0);
        }
        open.insert(home.to_owned(), Arc::downgrade(&dir));
        Ok(dir)
    }
}

fn convert(meta: &cap_std::fs::Metadata) -> Metadata {
    Metadata {
        is_dir: meta.is_dir(),
        len: meta.len(),
        modified: meta
            .modified()
            .map(|t| t.into_std())
            .unwrap_or(SystemTime::UNIX_EPOCH),
        mode: Some(meta.mode()),
        unique: Some(format!("{:x}g{:x}", meta.dev(), meta.ino())),
    }
}

/// Directories with at most this many entries are listed sorted by name; larger ones are sent
/// in directory order, this many entries at a time, so memory stays bounded.
pub const SORTED_LISTING_MAX: usize = 10_000;

/// A directory on disk being listed; each batch is read on a blocking thread.
struct FsListing {
    home: Arc<Dir>,
    /// The directory's path relative to the home (to follow symlinks inside it).
    path: String,
    /// `None` once the end was reached.
    entries: Option<cap_std::fs::ReadDir>,
    /// The first batch is sorted when it holds the whole directory.
    first: bool,
}

impl std::fmt::Debug for FsListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsListing")
            .field("path", &self.path)
            .finish()
    }
}

#[async_trait]
impl Listing for FsListing {
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>, StorageError> {
        let Some(mut entries) = self.entries.take() else {
            return Ok(None);
        };
        let (home, path) = (Arc::clone(&self.home), self.path.clone());
        let (batch, entries) = tokio::task::spawn_blocking(move || {
            let batch = read_batch(&home, &path, &mut entries, SORTED_LISTING_MAX);
            (batch, entries)
        })
        .await
        .map_err(|err| StorageError::Io(io::Error::other(err)))?;
        let (mut batch, more) = batch?;
        if more {
            self.entries = Some(entries);
        } else if self.first {
            batch.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.first = false;
        Ok(Some(batch))
    }
}

/// Reads up to `max` entries; the flag says whether more may follow. Symlinks are followed
/// inside the home, and one that leads out (or nowhere) is not listed; neither are the
/// temporary files of uploads in progress.
fn read_batch(
    home: &Dir,
    path: &str,
    entries: &mut cap_std::fs::ReadDir,
    max: usize,
) -> Result<(Vec<DirEntry>, bool), StorageError> {
    let mut batch = Vec::new();
    for entry in entries.by_ref() {
        let entry = entry?;
        if is_temp(&entry) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = match entry.file_type() {
            Ok(t) if t.is_symlink() => match home.metadata(Path::new(path).join(&name)) {
                Ok(meta) => meta,
                Err(_) => continue,
            },
            _ => match entry.metadata() {
                Ok(meta) => meta,
                Err(_) => continue,
            },
        };
        batch.push(DirEntry {
            name,
            metadata: convert(&meta),
        });
        if batch.len() == max {
            return Ok((batch, true));
        }
    }
    Ok((batch, false))
}

fn open_at(home: &Dir, path: &str, offset: u64) -> Result<std::fs::File, StorageError> {
    let file = home.open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(StorageError::IsADirectory);
    }
    if offset > meta.len() {
        return Err(StorageError::InvalidOffset {
            offset,
            len: meta.len(),
        });
    }
    let mut file = file.into_std();
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

/// Calls `visit` with each directory under `root` (itself included) and each entry in it,
/// without following symlinks. Iterative, so a deep tree cannot exhaust the stack.
fn walk(
    root: &Dir,
    mut visit: impl FnMut(&Dir, &cap_std::fs::DirEntry) -> io::Result<()>,
) -> io::Result<()> {
    let mut pending = vec![root.try_clone()?];
    while let Some(dir) = pending.pop() {
        for entry in dir.entries()? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.open_dir()?);
            } else {
                visit(&dir, &entry)?;
            }
        }
    }
    Ok(())
}

/// Names starting like an upload's temporary file are the server's: a client may not create
/// one (it would be hidden, and removed as a leftover after a crash).
fn refuse_reserved(path: &VirtualPath) -> Result<(), StorageError> {
    if path.file_name().starts_with(TEMP_PREFIX) {
        return Err(StorageError::InvalidName);
    }
    Ok(())
}

fn is_temp(entry: &cap_std::fs::DirEntry) -> bool {
    entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
}

/// Sums the regular files under `root` without following symlinks (a link is not the user's
/// bytes) and without counting uploads in progress (they are reserved separately).
pub fn scan_dir(root: &Dir) -> io::Result<Usage> {
    let mut usage = Usage::default();
    walk(root, |_, entry| {
        if entry.file_type()?.is_file() && !is_temp(entry) {
            usage.bytes += entry.metadata()?.len();
            usage.files += 1;
        }
        Ok(())
    })?;
    Ok(usage)
}

/// Removes the temporary files of replacing uploads last written before `cutoff`: those a
/// killed server left behind. Returns how many were removed.
fn remove_stale_uploads(root: &Dir, cutoff: SystemTime) -> io::Result<u64> {
    let mut removed = 0;
    walk(root, |dir, entry| {
        if is_temp(entry)
            && entry.file_type()?.is_file()
            && entry.metadata()?.modified()?.into_std() < cutoff
        {
            dir.remove_file(entry.file_name())?;
            removed += 1;
        }
        Ok(())
    })?;
    Ok(removed)
}

/// [`scan_dir`] of a home directory given by path, for `ferry user rescan`.
pub fn scan_home(home: &Path) -> io::Result<Usage> {
    scan_dir(&Dir::open_ambient_dir(home, ambient_authority())?)
}

/// Where the bytes of an upload go, and what commit and abort do with them.
#[derive(Debug)]
enum Target {
    /// A temporary sibling renamed over `target` on commit (replacing an existing file).
    /// Both are names inside `dir`, the parent directory opened at the start: if it is
    /// renamed meanwhile, the replacement still lands beside its old file, and a failed or
    /// abandoned upload still finds its temporary file to remove.
    Temp {
        dir: Arc<Dir>,
        temp: String,
        target: String,
    },
    /// The file itself; `created` identifies the file when this upload made it, so that it
    /// can be removed on abort if still empty (and still the file under that name).
    InPlace {
        path: String,
        created: Option<FileId>,
    },
}

/// A file's identity (device, inode), to tell whether a name still refers to it.
type FileId = (u64, u64);

fn file_id(file: &cap_std::fs::File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn start_upload(
    home: &Dir,
    path: &VirtualPath,
    mode: UploadMode,
) -> Result<(std::fs::File, Target), StorageError> {
    if path.is_root() {
        return Err(StorageError::InvalidName);
    }
    let rel = path.relative().to_string();
    let mut opts = OpenOptions::new();
    opts.write(true);
    match mode {
        UploadMode::Replace => {
            match home.metadata(&rel) {
                Ok(meta) if meta.is_dir() => return Err(StorageError::IsADirectory),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    match home.open_with(&rel, opts.clone().create_new(true)) {
                        Ok(file) => {
                            let target = Target::InPlace {
                                path: rel,
                                created: Some(file_id(&file)?),
                            };
                            return Ok((file.into_std(), target));
                        }
                        // Another upload created the name a moment ago: replace its file
                        // like any existing one, rather than write into it or give up.
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                Err(err) => return Err(err.into()),
            }
            let parent = path.parent();
            let dir = if parent.is_root() {
                home.try_clone()?
            } else {
                home.open_dir(parent.relative())?
            };
            let temp = format!("{TEMP_PREFIX}{}", random_suffix());
            let file = dir.open_with(&temp, opts.create_new(true))?;
            let target = Target::Temp {
                dir: Arc::new(dir),
                temp,
                target: path.file_name().to_string(),
            };
            Ok((file.into_std(), target))
        }
        UploadMode::ResumeAt(offset) => {
            let file = home.open_with(&rel, opts.create(offset == 0))?;
            let len = file.metadata()?.len();
            if offset > len {
                return Err(StorageError::InvalidOffset { offset, len });
            }
            file.set_len(offset)?;
            let mut file = file.into_std();
            file.seek(SeekFrom::Start(offset))?;
            Ok((
                file,
                Target::InPlace {
                    path: rel,
                    created: None,
                },
            ))
        }
        UploadMode::Append => {
            let file = home.open_with(&rel, opts.append(true).create(true))?;
            Ok((
                file.into_std(),
                Target::InPlace {
                    path: rel,
                    created: None,
                },
            ))
        }
        UploadMode::CreateNew => {
            let file = home.open_with(&rel, opts.create_new(true))?;
            let created = Some(file_id(&file)?);
            Ok((file.into_std(), Target::InPlace { path: rel, created }))
        }
    }
}

/// An upload in progress on local disk.
#[derive(Debug)]
struct FsUpload {
    /// The open file the bytes are written to.
    file: tokio::fs::File,
    /// Needed to rename or remove the file when the upload ends.
    home: Arc<Dir>,
    /// What commit and abort do.
    target: Target,
    /// Bytes accepted so far; an upload that created a file and wrote nothing leaves nothing.
    written: u64,
    /// Held by direct writes in flight (see [`DirectFile::busy`]).
    direct_writes: Arc<tokio::sync::Mutex<()>>,
    /// Set once committed, so Drop knows there is nothing to clean up.
    done: bool,
}

impl AsyncWrite for FsUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[async_trait]
impl Upload for FsUpload {
    fn direct_fd(&self) -> Option<io::Result<DirectFile>> {
        // splice(2) refuses files opened for appending (APPE): those take the copy path.
        match rustix::fs::fcntl_getfl(&self.file) {
            Ok(flags) if flags.contains(rustix::fs::OFlags::APPEND) => None,
            Ok(_) => Some(self.file.as_fd().try_clone_to_owned().map(|fd| DirectFile {
                fd,
                busy: Arc::clone(&self.direct_writes),
            })),
            Err(err) => Some(Err(err.into())),
        }
    }

    async fn accept_direct(&mut self, n: u64) -> io::Result<()> {
        self.written += n;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        drop(self.direct_writes.lock().await);
        self.file.flush().await?;
        if let Target::Temp { dir, temp, target } = &self.target {
            // The replacement must be on disk before it takes the old file's name.
            self.file.sync_all().await?;
            let (dir, temp, target) = (Arc::clone(dir), temp.clone(), target.clone());
            tokio::task::spawn_blocking(move || dir.rename(&temp, &dir, &target))
                .await
                .map_err(|err| StorageError::Io(io::Error::other(err)))??;
        }
        self.done = true;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        // Bytes accepted in place are kept for a resume, so they must reach the file; Drop
        // does the rest of the clean-up, the same whether or not abort was called.
        drop(self.direct_writes.lock().await);
        if matches!(self.target, Target::InPlace { .. })
            && let Err(err) = self.file.flush().await
        {
            tracing::warn!(%err, "could not flush an aborted upload");
        }
    }
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let leftover = match &self.target {
            Target::Temp { dir, temp, .. } => {
                if let Err(err) = dir.remove_file(temp) {
                    tracing::warn!(%err, temp, "could not remove an aborted upload");
                }
                None
            }
            // Only if the name still holds the empty file this upload made: a concurrent
            // upload of the same name may have replaced it with a complete one meanwhile.
            Target::InPlace {
                path,
                created: Some(id),
            } if self.written == 0
                && self
                    .home
                    .symlink_metadata(path)
                    .is_ok_and(|meta| (meta.dev(), meta.ino()) == *id && meta.len() == 0) =>
            {
                Some(path)
            }
            Target::InPlace { .. } => None,
        };
        if let Some(path) = leftover
            && let Err(err) = self.home.remove_file(path)
        {
            tracing::warn!(%err, path, "could not remove an aborted upload");
        }
    }
}

#[async_trait]
impl Storage for FsStorage {
    async fn metadata(&self, path: &VirtualPath) -> Result<Metadata, StorageError> {
        let rel = path.relative().to_string();
        self.blocking(move |home| Ok(convert(&home.metadata(rel)?)))
            .await
    }

    async fn list(&self, path: &VirtualPath) -> Result<Box<dyn Listing>, StorageError> {
        let rel = path.relative().to_string();
        let path = rel.clone();
        let entries = self.blocking(move |home| Ok(home.read_dir(rel)?)).await?;
        Ok(Box::new(FsListing {
            home: Arc::clone(&self.home),
            path,
            entries: Some(entries),
            first: true,
        }))
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        let rel = path.relative().to_string();
        let file = self
            .blocking(move |home| open_at(home, &rel, offset))
            .await?;
        Ok(Download::File(file))
    }

    async fn write(
        &self,
        path: &VirtualPath,
        mode: UploadMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        refuse_reserved(path)?;
        let path = path.clone();
        let (file, target) = self
            .blocking(move |home| start_upload(home, &path, mode))
            .await?;
        Ok(Box::new(FsUpload {
            file: tokio::fs::File::from_std(file),
            home: Arc::clone(&self.home),
            target,
            written: 0,
            direct_writes: Arc::default(),
            done: false,
        }))
    }

    async fn create_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::AlreadyExists);
        }
        refuse_reserved(path)?;
        let rel = path.relative().to_string();
        self.blocking(move |home| Ok(home.create_dir(rel)?)).await
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::PermissionDenied);
        }
        let rel = path.relative().to_string();
        self.blocking(move |home| Ok(home.remove_dir(rel)?)).await
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let rel = path.relative().to_string();
        self.blocking(move |home| {
            if home.symlink_metadata(&rel)?.is_dir() {
                return Err(StorageError::IsADirectory);
            }
            Ok(home.remove_file(rel)?)
        })
        .await
    }

    async fn scan(&self) -> Result<Usage, StorageError> {
        self.blocking(|home| Ok(scan_dir(home)?)).await
    }

    async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64, StorageError> {
        self.blocking(move |home| Ok(remove_stale_uploads(home, cutoff)?))
            .await
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::PermissionDenied);
        }
        refuse_reserved(to)?;
        let (from, to) = (from.relative().to_string(), to.relative().to_string());
        self.blocking(move |home| Ok(home.rename(from, home, to)?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::resolve;
    use tokio::io::AsyncReadExt;

    fn vpath(s: &str) -> VirtualPath {
        resolve(&VirtualPath::root(), s)
    }

    async fn put(storage: &FsStorage, path: &str, mode: UploadMode, bytes: &[u8]) {
        let mut up = storage.write(&vpath(path), mode).await.unwrap();
        up.write_all(bytes).await.unwrap();
        up.commit().await.unwrap();
    }

    async fn get(storage: &FsStorage, path: &str, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        storage
            .read(&vpath(path), offset)
            .await
            .unwrap()
            .into_reader()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn replace_keeps_the_old_file_until_commit_and_aborted_replace_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        put(&storage, "f", UploadMode::Replace, b"old").await;
        let mut up = storage
            .write(&vpath("f"), UploadMode::Replace)
            .await
            .unwrap();
        up.write_all(b"new new").await.unwrap();
        up.flush().await.unwrap();
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"old");
        up.abort().await;
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
        put(&storage, "f", UploadMode::Replace, b"new").await;
        assert_eq!(get(&storage, "f", 0).await, b"new");
    }

    #[tokio::test]
    async fn uploads_racing_to_create_one_name_all_succeed_and_leave_one_complete_file() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        // The first creates the file in place; the second finds the name taken and goes
        // through a temporary file instead of failing or writing into the first's file.
        let mut first = storage
            .write(&vpath("f"), UploadMode::Replace)
            .await
            .unwrap();
        let mut second = storage
            .write(&vpath("f"), UploadMode::Replace)
            .await
            .unwrap();
        second.write_all(b"second").await.unwrap();
        second.commit().await.unwrap();
        assert_eq!(get(&storage, "f", 0).await, b"second");
        // The first, abandoned with nothing written, must not remove the second's file.
        first.flush().await.unwrap();
        drop(first);
        assert_eq!(get(&storage, "f", 0).await, b"second");

        let mut third = storage
            .write(&vpath("g"), UploadMode::Replace)
            .await
            .unwrap();
        let mut fourth = storage
            .write(&vpath("g"), UploadMode::Replace)
            .await
            .unwrap();
        third.write_all(b"third").await.unwrap();
        fourth.write_all(b"fourth").await.unwrap();
        fourth.commit().await.unwrap();
        third.commit().await.unwrap();
        // The in-place file was replaced by the committed temporary one.
        assert_eq!(get(&storage, "g", 0).await, b"fourth");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "temporary files left behind");
    }

    #[tokio::test]
    async fn stale_upload_leftovers_are_removed_and_running_uploads_and_files_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        for name in ["sub/.ferry-upload-0123", "old-but-mine"] {
            let file = std::fs::File::create(tmp.path().join(name)).unwrap();
            file.set_modified(hour_ago).unwrap();
        }
        let storage = FsStorage::open(tmp.path()).unwrap();
        put(&storage, "f", UploadMode::Replace, b"old").await;
        let mut running = storage
            .write(&vpath("f"), UploadMode::Replace)
            .await
            .unwrap();
        running.write_all(b"new").await.unwrap();

        let cutoff = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(storage.remove_stale_uploads(cutoff).await.unwrap(), 1);
        assert!(!tmp.path().join("sub/.ferry-upload-0123").exists());
        assert!(tmp.path().join("old-but-mine").exists());
        running.commit().await.unwrap();
        assert_eq!(get(&storage, "f", 0).await, b"new");
    }

    /// Every name a listing gives, batch by batch.
    async fn batches(storage: &FsStorage, path: &str) -> Vec<Vec<String>> {
        let mut listing = storage.list(&vpath(path)).await.unwrap();
        let mut out = Vec::new();
        while let Some(batch) = listing.next_batch().await.unwrap() {
            out.push(batch.into_iter().map(|e| e.name).collect());
        }
        out
    }

    async fn names(storage: &FsStorage, path: &str) -> Vec<String> {
        batches(storage, path).await.concat()
    }

    #[tokio::test]
    async fn small_directories_are_listed_sorted_without_upload_temporaries() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["b", "a", "c", ".ferry-upload-0123"] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let storage = FsStorage::open(tmp.path()).unwrap();
        assert_eq!(batches(&storage, "/").await, [["a", "b", "c"]]);
    }

    #[tokio::test]
    async fn huge_directories_are_listed_in_bounded_batches_each_entry_once() {
        let tmp = tempfile::tempdir().unwrap();
        let count = SORTED_LISTING_MAX * 2 + 7;
        for i in 0..count {
            std::fs::File::create(tmp.path().join(format!("f{i}"))).unwrap();
        }
        let storage = FsStorage::open(tmp.path()).unwrap();
        let batches = batches(&storage, "/").await;
        assert!(batches.len() >= 3, "{} batches", batches.len());
        assert!(batches.iter().all(|b| b.len() <= SORTED_LISTING_MAX));
        let mut all = batches.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[tokio::test]
    async fn clients_cannot_create_names_reserved_for_upload_temporaries() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        put(&storage, "f", UploadMode::Replace, b"x").await;
        let reserved = vpath("sub/.ferry-upload-1");
        storage.create_dir(&vpath("sub")).await.unwrap();
        let err = storage
            .write(&reserved, UploadMode::Replace)
            .await
            .err()
            .unwrap();
        assert_eq!(err.reply_code(), 553);
        let err = storage.create_dir(&reserved).await.unwrap_err();
        assert_eq!(err.reply_code(), 553);
        let err = storage.rename(&vpath("f"), &reserved).await.unwrap_err();
        assert_eq!(err.reply_code(), 553);
        assert_eq!(names(&storage, "sub").await, Vec::<String>::new());
        assert!(!tmp.path().join("sub/.ferry-upload-1").exists());
    }

    #[tokio::test]
    async fn resume_truncates_to_the_offset_and_continues() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        put(&storage, "f", UploadMode::Replace, b"abcdef").await;
        put(&storage, "f", UploadMode::ResumeAt(3), b"XY").await;
        assert_eq!(get(&storage, "f", 0).await, b"abcXY");
        let err = storage
            .write(&vpath("f"), UploadMode::ResumeAt(99))
            .await
            .err()
            .unwrap();
        assert_eq!(err.reply_code(), 554);
        put(&storage, "f", UploadMode::Append, b"!").await;
        assert_eq!(get(&storage, "f", 2).await, b"cXY!");
    }

    #[tokio::test]
    async fn read_beyond_the_end_is_554() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        put(&storage, "f", UploadMode::Replace, b"abc").await;
        assert_eq!(get(&storage, "f", 3).await, b"");
        let err = storage.read(&vpath("f"), 4).await.err().unwrap();
        assert_eq!(err.reply_code(), 554);
    }

    #[tokio::test]
    async fn symlinks_leading_out_of_the_home_are_refused_and_not_listed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("s")).unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        for path in ["out/secret", "s"] {
            let err = storage.read(&vpath(path), 0).await.err().unwrap();
            assert_eq!(err.reply_code(), 550, "{path}: {err:?}");
        }
        assert!(storage.list(&vpath("out")).await.is_err());
        assert!(names(&storage, "/").await.is_empty());
        assert!(
            storage
                .write(&vpath("out/new"), UploadMode::Replace)
                .await
                .is_err()
        );
        assert!(!outside.path().join("new").exists());
    }

    #[tokio::test]
    async fn a_directory_renamed_into_itself_is_553_not_a_local_error() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        storage.create_dir(&vpath("d")).await.unwrap();
        let err = storage
            .rename(&vpath("d"), &vpath("d/e"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.reply_code(), 553, "{err:?}");
    }

    #[tokio::test]
    async fn the_root_cannot_be_removed_or_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(tmp.path()).unwrap();
        assert!(storage.remove_dir(&VirtualPath::root()).await.is_err());
        assert!(
            storage
                .rename(&VirtualPath::root(), &vpath("x"))
                .await
                .is_err()
        );
        assert!(tmp.path().exists());
    }

    #[test]
    fn sessions_of_one_home_share_a_descriptor_until_the_directory_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("alice");
        let homes = OpenHomes::default();
        let first = homes.open(&home).unwrap();
        let second = homes.open(&home).unwrap();
        assert!(Arc::ptr_eq(&first, &second));

        // The admin moves the home away and makes a new one: new logins get the new one.
        std::fs::rename(&home, tmp.path().join("old")).unwrap();
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("new.txt"), b"x").unwrap();
        let third = homes.open(&home).unwrap();
        assert!(!Arc::ptr_eq(&first, &third));
        assert!(third.exists("new.txt"));
        assert!(!first.exists("new.txt"));

        // Once no session holds it, the handle is closed, not kept by the registry.
        drop((first, second));
        let weak = Arc::downgrade(&third);
        drop(third);
        assert!(weak.upgrade().is_none());
    }
}
