//! S3-compatible object storage: one bucket, each user's files under `<prefix><user>/`. FTP's
//! file-system semantics are mapped onto objects where they can be kept honestly, and refused
//! with 504 where they cannot:
//!
//! - directories are key prefixes; MKD writes a zero-byte marker object `dir/.ferry-dir` (the
//!   object_store crate cannot name a key ending in `/`), so an empty directory exists and is
//!   listed; RMD refuses a directory holding anything but its marker (550);
//! - LIST/MLSD/NLST are delimiter listings (objects are files, common prefixes directories);
//!   SIZE and MDTM are HEAD requests;
//! - RETR after REST n is a ranged GET from n, streamed;
//! - STOR is a multipart upload (a single PUT when it fits one part), made visible by
//!   completing it on commit: S3 replaces an object atomically, so the old one stays whole
//!   until the new one is complete, and an aborted upload is discarded;
//! - RNFR/RNTO is copy then delete (a directory: every object under it, all copied before any
//!   is deleted, so a failure leaves duplicates rather than losses);
//! - REST+STOR (upload resume) and APPE would change an object in place, which S3 cannot do:
//!   they are refused with 504 before any data connection is opened.
//!
//! Confinement: a virtual path has no `.`, `..` or empty segments, and each segment becomes
//! one key segment with `/` and other unsafe bytes percent-encoded, so no key can leave the
//! user's prefix.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::{Path, PathPart};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::quota::Usage;

use super::{
    DirEntry, Download, Listed, Listing, Metadata, Storage, StorageError, Upload, UploadMode,
    VirtualPath,
};

/// The marker object that makes a directory exist while it is empty. Hidden from listings,
/// not counted as a file, and a name clients may not use.
pub const DIR_MARKER: &str = ".ferry-dir";

/// An upload is buffered in memory up to this size and sent as one PUT; a larger one becomes
/// a multipart upload of parts this size (S3's minimum part size is 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one upload sent at once: bounds an upload's memory to about this many parts.
const PARTS_IN_FLIGHT: usize = 4;

/// Where the objects are: read from ferry.toml's `[s3]` table (or flags) and the environment.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// The S3 API's base URL (MinIO, Ceph, moto...); `None` is AWS itself, by region.
    pub endpoint: Option<String>,
    /// The bucket's region (`us-east-1` when not given; most S3-compatible servers ignore it).
    pub region: Option<String>,
    /// The bucket holding every user's files.
    pub bucket: String,
    /// The key folder holding the users' folders, e.g. `ferry/` (a missing final `/` is
    /// implied): alice's files are under `ferry/alice/`. Empty: users are top-level folders.
    pub prefix: String,
    /// Access key; when absent, AWS_ACCESS_KEY_ID (and the rest of the usual environment).
    pub access_key_id: Option<String>,
    /// Secret key; when absent, AWS_SECRET_ACCESS_KEY. Never printed (see the Debug impl).
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "********"),
            )
            .finish()
    }
}

/// A connected bucket, shared by every session of the server; hands out each user's storage.
pub struct S3Bucket {
    /// The client; one connection pool for all sessions.
    store: Arc<dyn ObjectStore>,
    /// The configured prefix as a key path (empty: users are top-level prefixes).
    prefix: Path,
}

impl std::fmt::Debug for S3Bucket {
    /// The bucket and prefix only: the client's own Debug would go as far as its credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Bucket")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

impl S3Bucket {
    /// Builds the client (no request is made yet). Settings left out come from the usual
    /// AWS_* environment variables.
    pub fn open(settings: &S3Settings) -> Result<Self, object_store::Error> {
        // reqwest takes TLS from the process-wide rustls provider: ring, like the rest of
        // ferry. Already installed (a second bucket, a test binary) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A client waits for its reply: a few quick retries, not object_store's three minutes.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        // object_store's own timeouts stand (5 s to connect, 30 s a request).
        let mut builder = AmazonS3Builder::from_env()
            .with_retry(retry)
            .with_bucket_name(&settings.bucket);
        if let Some(endpoint) = &settings.endpoint {
            // Plain HTTP only when the operator wrote an http:// endpoint (a local server).
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build()?;
        Ok(S3Bucket {
            store: Arc::new(store),
            prefix: Path::from(settings.prefix.as_str()),
        })
    }

    /// The storage of `user`: everything under `<prefix><user>/`.
    pub fn storage_for(&self, user: &str) -> S3Storage {
        S3Storage {
            store: Arc::clone(&self.store),
            root: self.prefix.clone().join(user),
        }
    }
}

/// One user's files in the bucket.
#[derive(Clone)]
pub struct S3Storage {
    /// The shared client.
    store: Arc<dyn ObjectStore>,
    /// The user's root ("/") as a key prefix; every key this storage uses is below it.
    root: Path,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("store", &self.store.to_string())
            .field("root", &self.root.as_ref())
            .finish()
    }
}

/// Object store errors as the replies they cause. Anything not about the path is logged here
/// in full and reaches the client as a plain 451, so bucket names, endpoints and keys do not.
fn convert(err: object_store::Error) -> StorageError {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StorageError::NotFound,
        E::AlreadyExists { .. } => StorageError::AlreadyExists,
        E::InvalidPath { .. } => StorageError::InvalidName,
        err @ (E::PermissionDenied { .. } | E::Unauthenticated { .. }) => {
            tracing::error!(%err, "object storage refused the server's credentials");
            StorageError::PermissionDenied
        }
        err => {
            tracing::error!(%err, "object storage request failed");
            StorageError::Io(io::Error::other("object storage request failed"))
        }
    }
}

/// A directory's facts: object storage keeps no times for prefixes.
fn dir_metadata() -> Metadata {
    Metadata {
        is_dir: true,
        len: 0,
        modified: SystemTime::UNIX_EPOCH,
        mode: None,
        unique: None,
    }
}

fn file_metadata(meta: &ObjectMeta) -> Metadata {
    Metadata {
        is_dir: false,
        len: meta.size,
        modified: meta.last_modified.into(),
        mode: None,
        unique: None,
    }
}

/// The client's name for a key segment (segments are stored percent-encoded).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

impl S3Storage {
    /// The key of a virtual path. A name equal to the directory marker is refused (553).
    fn key(&self, path: &VirtualPath) -> Result<Path, StorageError> {
        let mut key = self.root.clone();
        for segment in path.as_str().split('/').filter(|s| !s.is_empty()) {
            if segment == DIR_MARKER {
                return Err(StorageError::InvalidName);
            }
            key = key.join(PathPart::from(segment));
        }
        Ok(key)
    }

    /// The object at `key`, if there is one.
    async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>, StorageError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(convert(err)),
        }
    }

    /// Whether anything (a marker, a file) lies under `key/`: that is a directory.
    async fn is_dir(&self, key: &Path) -> Result<bool, StorageError> {
        if *key == self.root {
            return Ok(true);
        }
        match self.store.list(Some(key)).next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(err)) => Err(convert(err)),
            None => Ok(false),
        }
    }

    /// The parent of a new name must be an existing directory, as on disk: a STOR or MKD
    /// into a missing directory is 550, not an implicit new prefix.
    async fn check_parent(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let parent = self.key(&path.parent())?;
        if self.is_dir(&parent).await? {
            return Ok(());
        }
        match self.head(&parent).await? {
            Some(_) => Err(StorageError::NotADirectory),
            None => Err(StorageError::NotFound),
        }
    }

    /// Every object under `key/`, markers included.
    async fn objects_under(&self, key: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        self.store
            .list(Some(key))
            .try_collect()
            .await
            .map_err(convert)
    }

    /// Copies every object under `from/` to the same place under `to/`, then deletes the
    /// originals: all copies first, so a failure half-way loses nothing.
    async fn rename_dir(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let objects = self.objects_under(from).await?;
        for object in &objects {
            let Some(rest) = object.location.prefix_match(from) else {
                continue;
            };
            let mut target = to.clone();
            for part in rest {
                target = target.join(part);
            }
            self.store
                .copy(&object.location, &target)
                .await
                .map_err(convert)?;
        }
        for object in &objects {
            self.store.delete(&object.location).await.map_err(convert)?;
        }
        Ok(())
    }
}

/// A streaming download: object_store's byte stream as an `AsyncRead`.
fn stream_reader(result: object_store::GetResult) -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    let stream = result.into_stream().map_err(io::Error::from);
    Box::new(tokio_util::io::StreamReader::new(stream))
}

/// An upload in progress: buffered and sent by object_store's `BufWriter` (one PUT, or a
/// multipart upload once it outgrows a part), completed on commit.
struct S3Upload {
    /// `None` once committed or aborted.
    writer: Option<BufWriter>,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload").finish_non_exhaustive()
    }
}

/// A failed part upload, logged in full; the client's 451 says only what failed.
fn hide_details(err: io::Error) -> io::Error {
    tracing::error!(%err, "object storage upload failed");
    io::Error::other("object storage upload failed")
}

fn finished() -> io::Error {
    io::Error::other("upload already finished")
}

impl AsyncWrite for S3Upload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_write(cx, buf).map_err(hide_details),
            None => Poll::Ready(Err(finished())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_flush(cx).map_err(hide_details),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Completing the object is commit's job; a shutdown must not publish it early.
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        // Taken first: a commit that fails half-way must not be aborted again by Drop.
        let Some(mut writer) = self.writer.take() else {
            return Err(StorageError::Io(finished()));
        };
        writer
            .shutdown()
            .await
            .map_err(|err| StorageError::Io(hide_details(err)))
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(mut writer) = self.writer.take()
            && let Err(err) = writer.abort().await
        {
            tracing::warn!(%err, "could not abort an object storage upload");
        }
    }
}

impl Drop for S3Upload {
    /// An upload dropped unfinished (its session died) aborts its multipart upload, so the
    /// parts already sent do not linger in the bucket.
    fn drop(&mut self) {
        if let Some(mut writer) = self.writer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(err) = writer.abort().await {
                    tracing::warn!(%err, "could not abort an object storage upload");
                }
            });
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn metadata(&self, path: &VirtualPath) -> Result<Metadata, StorageError> {
        let key = self.key(path)?;
        if path.is_root() {
            return Ok(dir_metadata());
        }
        if let Some(meta) = self.head(&key).await? {
            return Ok(file_metadata(&meta));
        }
        if self.is_dir(&key).await? {
            return Ok(dir_metadata());
        }
        Err(StorageError::NotFound)
    }

    async fn list(&self, path: &VirtualPath) -> Result<Box<dyn Listing>, StorageError> {
        let key = self.key(path)?;
        let listed = self
            .store
            .list_with_delimiter(Some(&key))
            .await
            .map_err(convert)?;
        if listed.objects.is_empty() && listed.common_prefixes.is_empty() && !path.is_root() {
            return Err(match self.head(&key).await? {
                Some(_) => StorageError::NotADirectory,
                None => StorageError::NotFound,
            });
        }
        let dirs = listed.common_prefixes.iter().filter_map(|prefix| {
            Some(DirEntry {
                name: decode(prefix.filename()?),
                metadata: dir_metadata(),
            })
        });
        // A `dir/` key some other tool made lists as the directory itself: not an entry.
        let files = listed
            .objects
            .iter()
            .filter(|object| object.location != key)
            .filter_map(|object| {
                let name = object.location.filename()?;
                (name != DIR_MARKER).then(|| DirEntry {
                    name: decode(name),
                    metadata: file_metadata(object),
                })
            });
        let mut entries: Vec<DirEntry> = dirs.chain(files).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Box::new(Listed(Some(entries))))
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        let key = self.key(path)?;
        let Some(meta) = self.head(&key).await? else {
            return Err(if self.is_dir(&key).await? {
                StorageError::IsADirectory
            } else {
                StorageError::NotFound
            });
        };
        if offset > meta.size {
            return Err(StorageError::InvalidOffset {
                offset,
                len: meta.size,
            });
        }
        if offset == meta.size {
            // A range starting at the end is unsatisfiable (416) to S3: nothing to fetch.
            return Ok(Download::Stream(Box::new(tokio::io::empty())));
        }
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(&key, options).await.map_err(convert)?;
        Ok(Download::Stream(stream_reader(result)))
    }

    async fn write(
        &self,
        path: &VirtualPath,
        mode: UploadMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        match mode {
            UploadMode::Append => {
                return Err(StorageError::Unsupported(
                    "APPE is not supported on object storage: objects cannot be appended to",
                ));
            }
            UploadMode::ResumeAt(_) => {
                return Err(StorageError::Unsupported(
                    "REST+STOR is not supported on object storage: an upload cannot be resumed; send the whole file with STOR",
                ));
            }
            UploadMode::Replace | UploadMode::CreateNew => {}
        }
        if path.is_root() {
            return Err(StorageError::InvalidName);
        }
        let key = self.key(path)?;
        if self.is_dir(&key).await? {
            return Err(StorageError::IsADirectory);
        }
        if mode == UploadMode::CreateNew && self.head(&key).await?.is_some() {
            return Err(StorageError::AlreadyExists);
        }
        self.check_parent(path).await?;
        let writer = BufWriter::with_capacity(Arc::clone(&self.store), key, PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(S3Upload {
            writer: Some(writer),
        }))
    }

    async fn create_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::AlreadyExists);
        }
        let key = self.key(path)?;
        if self.head(&key).await?.is_some() || self.is_dir(&key).await? {
            return Err(StorageError::AlreadyExists);
        }
        self.check_parent(path).await?;
        self.store
            .put(&key.join(DIR_MARKER), Default::default())
            .await
            .map_err(convert)?;
        Ok(())
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::PermissionDenied);
        }
        let key = self.key(path)?;
        let marker = key.clone().join(DIR_MARKER);
        let mut under = self.store.list(Some(&key));
        let mut found_marker = false;
        while let Some(object) = under.next().await {
            if object.map_err(convert)?.location != marker {
                return Err(StorageError::DirectoryNotEmpty);
            }
            found_marker = true;
        }
        if !found_marker {
            return Err(match self.head(&key).await? {
                Some(_) => StorageError::NotADirectory,
                None => StorageError::NotFound,
            });
        }
        self.store.delete(&marker).await.map_err(convert)
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let key = self.key(path)?;
        if self.head(&key).await?.is_none() {
            return Err(if self.is_dir(&key).await? {
                StorageError::IsADirectory
            } else {
                StorageError::NotFound
            });
        }
        self.store.delete(&key).await.map_err(convert)
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::PermissionDenied);
        }
        let (from_key, to_key) = (self.key(from)?, self.key(to)?);
        if from_key == to_key {
            return self.metadata(from).await.map(|_| ());
        }
        let from_is_file = self.head(&from_key).await?.is_some();
        if !from_is_file && !self.is_dir(&from_key).await? {
            return Err(StorageError::NotFound);
        }
        if self.is_dir(&to_key).await? {
            return Err(if from_is_file {
                StorageError::IsADirectory
            } else {
                StorageError::AlreadyExists
            });
        }
        self.check_parent(to).await?;
        if from_is_file {
            // Over an existing file: S3's copy replaces it, as rename(2) would.
            self.store.copy(&from_key, &to_key).await.map_err(convert)?;
            return self.store.delete(&from_key).await.map_err(convert);
        }
        if to_key.prefix_matches(&from_key) {
            // A directory moved into itself.
            return Err(StorageError::InvalidName);
        }
        if self.head(&to_key).await?.is_some() {
            return Err(StorageError::AlreadyExists);
        }
        self.rename_dir(&from_key, &to_key).await
    }

    async fn scan(&self) -> Result<Usage, StorageError> {
        let mut usage = Usage::default();
        let mut objects = self.store.list(Some(&self.root));
        while let Some(object) = objects.next().await {
            let object = object.map_err(convert)?;
            if object.location.filename() != Some(DIR_MARKER) {
                usage.bytes += object.size;
                usage.files += 1;
            }
        }
        Ok(usage)
    }

    /// Nothing to do: an unfinished upload never became an object. Its multipart parts are
    /// aborted when the upload is dropped; those of a killed server are left to the bucket's
    /// lifecycle rule (AbortIncompleteMultipartUpload), as object_store cannot list them.
    async fn remove_stale_uploads(&self, _cutoff: SystemTime) -> Result<u64, StorageError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::storage::resolve;

    /// The S3 mapping over object_store's in-memory store: the same trait S3 is driven
    /// through, without a server (tests/it/s3.rs runs against a real S3 protocol server).
    fn storage() -> S3Storage {
        S3Storage {
            store: Arc::new(InMemory::new()),
            root: Path::from("users/alice"),
        }
    }

    fn vpath(s: &str) -> VirtualPath {
        resolve(&VirtualPath::root(), s)
    }

    async fn put(storage: &S3Storage, path: &str, bytes: &[u8]) {
        let mut up = storage
            .write(&vpath(path), UploadMode::Replace)
            .await
            .unwrap();
        up.write_all(bytes).await.unwrap();
        up.commit().await.unwrap();
    }

    async fn get(storage: &S3Storage, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let download = storage.read(&vpath(path), 0).await.unwrap();
        download.into_reader().read_to_end(&mut out).await.unwrap();
        out
    }

    async fn names(storage: &S3Storage, path: &str) -> Vec<(String, bool)> {
        let mut listing = storage.list(&vpath(path)).await.unwrap();
        let mut names = Vec::new();
        while let Some(batch) = listing.next_batch().await.unwrap() {
            names.extend(batch.into_iter().map(|e| (e.name, e.metadata.is_dir)));
        }
        names
    }

    #[test]
    fn keys_stay_under_the_users_prefix_one_segment_per_name() {
        let s = storage();
        for name in [
            "/a/b",
            "/..\\..\\etc",
            "/a%2F..%2F..%2Fbob",
            "/%2e%2e/x",
            "/x/..",
            "/../../bob/secret",
            "/ a /\t",
        ] {
            let path = vpath(name);
            let key = s.key(&path).unwrap();
            assert!(key.prefix_matches(&s.root), "{name} -> {key}");
            let segments = path.as_str().split('/').filter(|p| !p.is_empty()).count();
            assert_eq!(key.parts().count(), 2 + segments, "{name} -> {key}");
        }
    }

    #[tokio::test]
    async fn the_marker_name_is_not_a_name_clients_may_use() {
        let s = storage();
        let marker = vpath("/d/.ferry-dir");
        assert!(matches!(
            s.write(&marker, UploadMode::Replace).await,
            Err(StorageError::InvalidName)
        ));
        assert!(matches!(
            s.create_dir(&marker).await,
            Err(StorageError::InvalidName)
        ));
        assert!(matches!(
            s.metadata(&marker).await,
            Err(StorageError::InvalidName)
        ));
    }

    #[tokio::test]
    async fn markers_make_empty_directories_and_are_neither_listed_nor_counted() {
        let s = storage();
        s.create_dir(&vpath("/d")).await.unwrap();
        assert_eq!(names(&s, "/").await, [("d".to_string(), true)]);
        assert!(names(&s, "/d").await.is_empty());
        put(&s, "/d/f", b"abc").await;
        assert_eq!(names(&s, "/d").await, [("f".to_string(), false)]);
        assert_eq!(s.scan().await.unwrap(), Usage { bytes: 3, files: 1 });
        assert!(matches!(
            s.remove_dir(&vpath("/d")).await,
            Err(StorageError::DirectoryNotEmpty)
        ));
        s.remove_file(&vpath("/d/f")).await.unwrap();
        s.remove_dir(&vpath("/d")).await.unwrap();
        assert!(matches!(
            s.metadata(&vpath("/d")).await,
            Err(StorageError::NotFound)
        ));
        assert_eq!(s.scan().await.unwrap(), Usage::default());
    }

    #[tokio::test]
    async fn aborted_or_dropped_uploads_leave_the_old_object_or_nothing() {
        let s = storage();
        put(&s, "/f", b"old").await;
        let mut up = s.write(&vpath("/f"), UploadMode::Replace).await.unwrap();
        up.write_all(b"new bytes").await.unwrap();
        up.abort().await;
        assert_eq!(get(&s, "/f").await, b"old");
        let mut up = s.write(&vpath("/g"), UploadMode::Replace).await.unwrap();
        up.write_all(b"never committed").await.unwrap();
        drop(up);
        assert!(matches!(
            s.metadata(&vpath("/g")).await,
            Err(StorageError::NotFound)
        ));
    }

    #[tokio::test]
    async fn an_empty_upload_is_an_empty_object_and_a_read_at_its_end_is_empty() {
        let s = storage();
        put(&s, "/empty", b"").await;
        assert_eq!(s.metadata(&vpath("/empty")).await.unwrap().len, 0);
        assert!(get(&s, "/empty").await.is_empty());
        put(&s, "/f", b"abc").await;
        let mut tail = Vec::new();
        let download = s.read(&vpath("/f"), 3).await.unwrap();
        download.into_reader().read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty());
        assert!(matches!(
            s.read(&vpath("/f"), 4).await,
            Err(StorageError::InvalidOffset { offset: 4, len: 3 })
        ));
    }

    #[tokio::test]
    async fn append_and_resume_are_refused_with_504() {
        let s = storage();
        put(&s, "/f", b"0123").await;
        for mode in [UploadMode::Append, UploadMode::ResumeAt(2)] {
            let Err(err) = s.write(&vpath("/f"), mode).await else {
                panic!("{mode:?} accepted");
            };
            assert_eq!(err.reply_code(), 504, "{mode:?}: {err}");
        }
        assert_eq!(get(&s, "/f").await, b"0123");
    }

    #[tokio::test]
    async fn a_directory_renamed_into_itself_is_553_and_moves_nothing() {
        let s = storage();
        s.create_dir(&vpath("/d")).await.unwrap();
        put(&s, "/d/f", b"f").await;
        let err = s
            .rename(&vpath("/d"), &vpath("/d/inner"))
            .await
            .unwrap_err();
        assert_eq!(err.reply_code(), 553);
        assert_eq!(get(&s, "/d/f").await, b"f");
    }
}
