//! Where a user's files live. The session speaks to a [`Storage`] in virtual paths ("/a/b",
//! with the user's home as "/"); the backend confines every operation to that home. Local disk
//! ([`fs::FsStorage`]) is the default; [`s3::S3Storage`] keeps them in S3-compatible object
//! storage. The trait assumes nothing about file descriptors or local paths, beyond two
//! optional fast paths for local files (a [`Download::File`] goes out with sendfile,
//! [`Upload::direct_fd`] lets an upload be spliced in).

pub mod fs;
mod path;
pub mod s3;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

pub use path::{VirtualPath, resolve};

use crate::quota::{QuotaExceeded, Usage};

/// What a storage operation can fail with, phrased as the protocol outcome it causes; the
/// session turns each into a reply in one place ([`StorageError::reply_code`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No such file or directory: 550.
    #[error("No such file or directory")]
    NotFound,
    /// The OS refused, or the path would leave the home directory: 550. Both read the same to
    /// the client, so probing cannot tell what lies outside.
    #[error("Permission denied")]
    PermissionDenied,
    /// The target already exists: 550.
    #[error("File exists")]
    AlreadyExists,
    /// A directory was needed: 550.
    #[error("Not a directory")]
    NotADirectory,
    /// A file was needed: 550.
    #[error("Is a directory")]
    IsADirectory,
    /// RMD of a directory with entries: 550.
    #[error("Directory not empty")]
    DirectoryNotEmpty,
    /// The name itself is unacceptable (the home root, an over-long name): 553.
    #[error("File name not allowed")]
    InvalidName,
    /// The user's quota would be exceeded: 552, saying what is left.
    #[error("{0}")]
    Quota(QuotaExceeded),
    /// A REST offset beyond the end of the file: 554.
    #[error("Invalid REST offset {offset}: file is {len} bytes")]
    InvalidOffset {
        /// The offset the client asked for.
        offset: u64,
        /// The current size of the file.
        len: u64,
    },
    /// The disk is full: 452.
    #[error("Insufficient storage space")]
    NoSpace,
    /// The file would grow past what the system allows one file (EFBIG, RLIMIT_FSIZE): 552.
    #[error("File too large")]
    FileTooLarge,
    /// The backend cannot do this at all (APPE and upload resume on object storage): 504,
    /// with the reason. Refused before any data connection is opened.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Anything else local: 451.
    #[error("Local error: {0}")]
    Io(std::io::Error),
}

impl StorageError {
    /// The reply code this outcome is answered with.
    pub fn reply_code(&self) -> u16 {
        match self {
            StorageError::NotFound
            | StorageError::PermissionDenied
            | StorageError::AlreadyExists
            | StorageError::NotADirectory
            | StorageError::IsADirectory
            | StorageError::DirectoryNotEmpty => 550,
            StorageError::InvalidName => 553,
            StorageError::Quota(_) | StorageError::FileTooLarge => 552,
            StorageError::InvalidOffset { .. } => 554,
            StorageError::NoSpace => 452,
            StorageError::Unsupported(_) => 504,
            StorageError::Io(_) => 451,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        // A quota refusal travels through AsyncWrite as an io::Error carrying the reason.
        if let Some(exceeded) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<QuotaExceeded>())
        {
            return StorageError::Quota(*exceeded);
        }
        match err.kind() {
            K::NotFound => StorageError::NotFound,
            K::PermissionDenied => StorageError::PermissionDenied,
            K::AlreadyExists => StorageError::AlreadyExists,
            K::NotADirectory => StorageError::NotADirectory,
            K::IsADirectory => StorageError::IsADirectory,
            K::DirectoryNotEmpty => StorageError::DirectoryNotEmpty,
            K::StorageFull | K::QuotaExceeded => StorageError::NoSpace,
            K::FileTooLarge => StorageError::FileTooLarge,
            // EINVAL: a directory renamed into itself and similar impossible names.
            K::InvalidFilename | K::InvalidInput => StorageError::InvalidName,
            // cap-std reports a path that would leave the home as "a path led outside".
            _ if is_escape(&err) => StorageError::PermissionDenied,
            _ => StorageError::Io(err),
        }
    }
}

fn is_escape(err: &std::io::Error) -> bool {
    err.to_string().contains("outside of the filesystem")
}

/// The facts about one file or directory that listings and SIZE/MDTM need.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Directory or file: decides the LIST mode letter and the MLSD type fact.
    pub is_dir: bool,
    /// Size in bytes (SIZE, LIST, MLSD size fact).
    pub len: u64,
    /// Last modification (MDTM, LIST date, MLSD modify fact).
    pub modified: SystemTime,
    /// Unix permission bits when the backend has them, for the `ls -l` mode column.
    pub mode: Option<u32>,
    /// A stable identity (MLSD unique fact), so clients can spot hard links and loops.
    pub unique: Option<String>,
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The entry's name within its directory.
    pub name: String,
    /// Its facts (symlinks are followed inside the home; ones pointing out are left out).
    pub metadata: Metadata,
}

/// A directory being listed. Entries come in batches, so a directory of any size is sent
/// without ever being held in memory whole.
#[async_trait]
pub trait Listing: Send {
    /// The next entries; `None` once all were given.
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>, StorageError>;
}

/// A listing of entries already at hand (one file, a small directory, tests).
#[derive(Debug)]
pub struct Listed(pub Option<Vec<DirEntry>>);

#[async_trait]
impl Listing for Listed {
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>, StorageError> {
        Ok(self.0.take())
    }
}

/// How an upload treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// STOR: replace atomically on commit; the old file stays until the upload completed.
    Replace,
    /// REST n + STOR: keep the first n bytes and continue writing in place (upload resume).
    ResumeAt(u64),
    /// APPE: append, creating the file if needed.
    Append,
    /// STOU: the name must not exist yet.
    CreateNew,
}

/// The file behind an upload, for writing it directly; see [`Upload::direct_fd`].
#[derive(Debug)]
pub struct DirectFile {
    /// The file, positioned where the next byte goes.
    pub fd: OwnedFd,
    /// Held by every write in flight. The upload's commit and abort wait for it, so that a
    /// write still running on the blocking pool after its transfer was cancelled lands
    /// before the upload is measured and settled.
    pub busy: Arc<tokio::sync::Mutex<()>>,
}

/// A file being written. Bytes go through `AsyncWrite`; nothing is final until `commit`.
#[async_trait]
pub trait Upload: AsyncWrite + Send + Unpin {
    /// Makes the upload visible under its final name (renames a replacement into place).
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
    /// Gives up: a replacement's temporary file is removed and the old file stays as it was;
    /// bytes already written in place (new file, resume, append) are kept so the client can
    /// resume from there.
    async fn abort(self: Box<Self>);
    /// For a receive that writes the file directly (splice(2) from the socket): a handle to
    /// the file being written, positioned where the next byte goes. Bytes may only be written
    /// to it after [`Upload::accept_direct`] accepted them. `None`: this upload only takes
    /// bytes through `AsyncWrite`.
    fn direct_fd(&self) -> Option<io::Result<DirectFile>> {
        None
    }
    /// Accounts for `n` bytes about to be written through [`Upload::direct_fd`]; an error
    /// (the quota) means they must not be written, and fails the upload as a write would.
    /// May wait: a quota shared between nodes is charged in the database.
    async fn accept_direct(&mut self, n: u64) -> io::Result<()> {
        let _ = n;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this upload takes bytes only through AsyncWrite",
        ))
    }
}

/// A readable file positioned at the requested offset.
pub enum Download {
    /// A local file: a plain binary download sends it with sendfile(2), from the page cache
    /// to the socket without a copy through the server.
    File(std::fs::File),
    /// Any other source, copied through a buffer.
    Stream(Box<dyn AsyncRead + Send + Unpin>),
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Download::File(file) => f.debug_tuple("File").field(file).finish(),
            Download::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl Download {
    /// The bytes as a stream, whatever the source.
    pub fn into_reader(self) -> Box<dyn AsyncRead + Send + Unpin> {
        match self {
            Download::File(file) => Box::new(InlineFile(file)),
            Download::Stream(reader) => reader,
        }
    }
}

/// A local file read on the calling thread, like sendfile(2) reads it: one read(2) per
/// buffer straight into the caller's buffer, where `tokio::fs::File` would hop to the
/// blocking pool and copy each buffer twice (FTPS downloads ran at 0.43 of plain). A page
/// that is not cached blocks this thread for the disk read.
struct InlineFile(std::fs::File);

impl AsyncRead for InlineFile {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Read;
        let n = self.0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

/// A user's file space. Every path is virtual and absolute ("/" is the home).
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Facts about one path (symlinks followed inside the home).
    async fn metadata(&self, path: &VirtualPath) -> Result<Metadata, StorageError>;
    /// The entries of a directory: sorted by name, except that a very large directory may
    /// come in the backend's own order so that it is never held in memory whole.
    async fn list(&self, path: &VirtualPath) -> Result<Box<dyn Listing>, StorageError>;
    /// Opens a file for reading from `offset` (beyond the end: [`StorageError::InvalidOffset`]).
    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError>;
    /// Starts an upload.
    async fn write(
        &self,
        path: &VirtualPath,
        mode: UploadMode,
    ) -> Result<Box<dyn Upload>, StorageError>;
    /// MKD.
    async fn create_dir(&self, path: &VirtualPath) -> Result<(), StorageError>;
    /// RMD (the directory must be empty).
    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError>;
    /// DELE.
    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError>;
    /// RNFR + RNTO.
    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError>;
    /// Walks everything under the root: total bytes and number of regular files (symlinks
    /// and uploads in progress not counted). For quota usage when it is not known.
    async fn scan(&self) -> Result<Usage, StorageError>;
    /// Discards the partial data of replacing uploads that were still running when an earlier
    /// server process was killed (begun before `cutoff`, this process's start). Only called
    /// when no session of this user can have an upload from before `cutoff` running.
    async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64, StorageError>;
}
