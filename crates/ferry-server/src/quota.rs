//! Per-user disk quotas: usage known at login without walking the tree, kept exact as files
//! change, enforced while bytes arrive, and shared by all of a user's sessions so concurrent
//! uploads can never jointly exceed the limit.
//!
//! Usage (bytes and regular files; directories are not counted) lives in memory while the
//! server runs and in DATA/quota/<user>.toml between runs. A marker file says a server is
//! running; finding it at start means the last run ended without a clean shutdown, so usage
//! files may be stale and every user is rescanned at their next login.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use tracing::{info, warn};

use crate::storage::{
    DirectFile, Download, Listing, Metadata, Storage, StorageError, Upload, UploadMode, VirtualPath,
};
use crate::users::{FileStamp, UserError, replace_file, stamp_of};

/// Bytes a node first charges the shared ledger for while a user's uploads run; each further
/// charge doubles, up to [`MAX_LEASE_BYTES`], so a 1 GiB upload costs about 20 database
/// commits, not 256. When the quota has less room, exactly what is needed is charged.
const LEASE_BYTES: u64 = 4 << 20;

/// The most of a user's quota one node holds ahead of its uploads.
const MAX_LEASE_BYTES: u64 = 64 << 20;

/// Folder of the usage files inside the data directory.
const QUOTA_DIR: &str = "quota";
/// Present while a server runs; left behind by a crash.
const RUNNING_MARKER: &str = ".running";

/// A user's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes stored.
    pub bytes: Option<u64>,
    /// Most regular files stored.
    pub files: Option<u64>,
}

/// What a user stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Total size of the user's regular files.
    pub bytes: u64,
    /// Number of regular files.
    pub files: u64,
}

/// An upload or file creation refused because it would exceed the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// The byte limit: this many bytes were left when the write was refused.
    #[error("Disk quota exceeded: {left} of {limit} bytes left")]
    Bytes {
        /// Bytes that could still be stored.
        left: u64,
        /// The limit.
        limit: u64,
    },
    /// The file-count limit.
    #[error("File quota exceeded: {limit} files allowed")]
    Files {
        /// The limit.
        limit: u64,
    },
}

/// Usage shared by several nodes (the PostgreSQL user store): the ledger holds each user's
/// usage, and charges against the limit are atomic there, so nodes cannot jointly exceed it.
/// Usage in the ledger includes what running uploads have charged ahead (leases).
#[async_trait]
pub trait UsageLedger: Send + Sync + std::fmt::Debug {
    /// The recorded usage; `None` until the user's home was first measured.
    async fn usage(&self, user: &str) -> Result<Option<Usage>, UserError>;
    /// Records `scanned` unless another node recorded usage first; returns what is recorded.
    async fn init_usage(&self, user: &str, scanned: Usage) -> Result<Usage, UserError>;
    /// Adds `bytes` and `files` if that stays within the user's limits, atomically; returns
    /// the usage after, or the refusal.
    async fn charge(
        &self,
        user: &str,
        bytes: u64,
        files: u64,
    ) -> Result<Result<Usage, QuotaExceeded>, UserError>;
    /// Adds (or, negative, subtracts) without a limit check; returns the usage after.
    async fn adjust(&self, user: &str, bytes: i64, files: i64) -> Result<Usage, UserError>;
    /// Replaces the usage with a scan's result.
    async fn set_usage(&self, user: &str, usage: Usage) -> Result<(), UserError>;
}

/// Parses a size such as `500MiB`, `2GB`, `1.5 GiB`, `4096` or `none` (unlimited).
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let number: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} (use B, KB, MB, GB, KiB, MiB, GiB, ...)"
            ));
        }
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size out of range: {text:?}"));
    }
    Ok(Some(bytes.round() as u64))
}

/// Parses a count or `none` (unlimited).
pub fn parse_count(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("not a count: {text:?}"))
}

/// A byte count for people: `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The 552 text: what is left under each limit.
pub fn quota_message(used: Usage, limits: Limits) -> String {
    let bytes = match limits.bytes {
        Some(limit) => {
            let left = limit.saturating_sub(used.bytes);
            format!("{left} bytes ({}) left of {limit}", human(left))
        }
        None => "no byte limit".to_string(),
    };
    let files = match limits.files {
        Some(limit) => format!("{} files left of {limit}", limit.saturating_sub(used.files)),
        None => "no file limit".to_string(),
    };
    format!("Quota exceeded: {bytes}; {files}")
}

/// DATA/quota/<user>.toml.
pub fn usage_file(data_dir: &Path, user: &str) -> PathBuf {
    data_dir.join(QUOTA_DIR).join(format!("{user}.toml"))
}

/// Reads a usage file; `None` when absent or unreadable (the caller rescans).
pub fn read_usage(path: &Path) -> Option<Usage> {
    let text = std::fs::read_to_string(path).ok()?;
    toml::from_str(&text).ok()
}

/// Writes a usage file atomically.
pub fn write_usage(path: &Path, usage: Usage) -> Result<(), UserError> {
    let text = toml::to_string(&usage).map_err(UserError::Encode)?;
    replace_file(path, text.as_bytes(), false)
}

/// The accounting of one user, shared by all of that user's sessions.
#[derive(Debug)]
pub struct UserQuota {
    /// The user's name, the ledger's key.
    user: String,
    /// DATA/quota/<user>.toml, rewritten after every change (single node).
    file: PathBuf,
    /// Usage shared with other nodes; `None`: this node alone keeps it (in `file`).
    ledger: Option<Arc<dyn UsageLedger>>,
    /// Usage, reservations and limits; held only for arithmetic, never across I/O.
    state: Mutex<State>,
    /// Held across a rename's or delete's look at its target, the change and its settlement,
    /// so two sessions of the user cannot both count one replaced or deleted file.
    changes: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    used: Usage,
    /// Bytes promised to uploads in flight, beyond what is already in `used`.
    reserved_bytes: u64,
    /// Files promised to uploads in flight that create a file.
    reserved_files: u64,
    /// The usage file as this server last wrote it; anything else means `ferry user rescan`
    /// (or a person) replaced it, and it is read again at the next login.
    written: Option<FileStamp>,
    /// Shared usage: bytes and files charged to the ledger and not yet reserved by an upload.
    lease_bytes: u64,
    /// See `lease_bytes`.
    lease_files: u64,
    /// The next byte lease to ask for (doubles per lease while uploads run).
    next_lease: u64,
    /// Shared usage: changes settled here and not yet applied to the ledger.
    pending_bytes: i128,
    /// See `pending_bytes`.
    pending_files: i64,
    /// Paths with uploads running, and how many of each.
    uploading: HashMap<String, usize>,
    /// Something changed a path while an upload to it (or below it) was running, or two
    /// uploads of one path overlapped: their settlements cannot be trusted, so usage is
    /// rescanned from disk once no upload is running.
    tangled: bool,
}

impl UserQuota {
    /// Accounting persisted in `file`, starting from `used` with nothing reserved.
    fn new(
        user: &str,
        file: PathBuf,
        ledger: Option<Arc<dyn UsageLedger>>,
        limits: Limits,
        used: Usage,
    ) -> Self {
        let state = State {
            limits,
            used,
            reserved_bytes: 0,
            reserved_files: 0,
            lease_bytes: 0,
            lease_files: 0,
            next_lease: LEASE_BYTES,
            pending_bytes: 0,
            pending_files: 0,
            written: None,
            uploading: HashMap::new(),
            tangled: false,
        };
        UserQuota {
            user: user.to_owned(),
            file,
            ledger,
            state: Mutex::new(state),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Usage and limits now, for SITE QUOTA.
    pub fn report(&self) -> (Usage, Limits) {
        let state = self.lock();
        (state.used, state.limits)
    }

    fn try_reserve_bytes(&self, n: u64) -> Result<(), QuotaExceeded> {
        let mut state = self.lock();
        if let Some(limit) = state.limits.bytes {
            let committed = state.used.bytes.saturating_add(state.reserved_bytes);
            if committed.saturating_add(n) > limit {
                return Err(QuotaExceeded::Bytes {
                    left: limit.saturating_sub(committed),
                    limit,
                });
            }
        }
        state.reserved_bytes += n;
        Ok(())
    }

    /// Shared usage: takes `bytes` and `files` from what this node charged ahead; false when
    /// there is not enough and [`UserQuota::lease`] must charge more first.
    fn take_lease(&self, bytes: u64, files: u64) -> bool {
        let mut state = self.lock();
        if state.lease_bytes < bytes || state.lease_files < files {
            return false;
        }
        state.lease_bytes -= bytes;
        state.lease_files -= files;
        state.reserved_bytes += bytes;
        state.reserved_files += files;
        true
    }

    /// Shared usage: charges the ledger for at least `bytes` bytes and `files` files beyond
    /// the lease held; asks for a growing lease (see [`LEASE_BYTES`]) when the quota has
    /// room, so a large upload goes to the database once per lease, not per buffer. A
    /// refusal is an io::Error carrying the [`QuotaExceeded`], as writes report it.
    async fn lease(self: &Arc<Self>, bytes: u64, files: u64) -> io::Result<()> {
        // Its own task: a charge the database made must be recorded here even if the session
        // that asked for it is gone meanwhile (else it stays counted until a rescan); it is
        // given back at the next flush.
        let quota = Arc::clone(self);
        tokio::spawn(async move { quota.charge_lease(bytes, files).await })
            .await
            .map_err(io::Error::other)?
    }

    /// [`UserQuota::lease`]'s work.
    async fn charge_lease(&self, bytes: u64, files: u64) -> io::Result<()> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        let ask = |n| async move {
            ledger
                .charge(&self.user, n, files)
                .await
                .map_err(io::Error::other)
        };
        let next = self.lock().next_lease;
        let generous = if bytes > 0 { bytes.max(next) } else { 0 };
        let (mut granted, mut charged) = (generous, ask(generous).await?);
        if charged.is_err() && generous > bytes {
            (granted, charged) = (bytes, ask(bytes).await?);
        }
        let used = charged.map_err(io::Error::other)?;
        let orphaned = {
            let mut state = self.lock();
            if granted == generous && bytes > 0 {
                state.next_lease = (next * 2).min(MAX_LEASE_BYTES);
            }
            state.lease_bytes += granted;
            state.lease_files += files;
            state.used = used;
            // The upload that asked ended while this was charged: nothing will use the lease.
            state.uploading.is_empty()
        };
        if orphaned {
            self.flush().await;
        }
        Ok(())
    }

    /// True when usage is shared with other nodes through a ledger.
    fn is_shared(&self) -> bool {
        self.ledger.is_some()
    }

    /// Shared usage: applies settled changes to the ledger, and gives back leases once no
    /// upload of this user runs here. Single node: nothing to do.
    async fn flush(&self) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        let (bytes, files) = {
            let mut state = self.lock();
            if state.uploading.is_empty() && state.reserved_bytes == 0 {
                state.next_lease = LEASE_BYTES;
                state.pending_bytes -= i128::from(std::mem::take(&mut state.lease_bytes));
                state.pending_files -=
                    i64::try_from(std::mem::take(&mut state.lease_files)).unwrap_or(i64::MAX);
            }
            (
                std::mem::take(&mut state.pending_bytes),
                std::mem::take(&mut state.pending_files),
            )
        };
        if bytes == 0 && files == 0 {
            return;
        }
        let delta = i64::try_from(bytes).unwrap_or(if bytes < 0 { i64::MIN } else { i64::MAX });
        match ledger.adjust(&self.user, delta, files).await {
            Ok(used) => self.lock().used = used,
            Err(err) => {
                warn!(user = %self.user, error = &err as &dyn std::error::Error, "cannot record quota usage; will retry");
                let mut state = self.lock();
                state.pending_bytes += bytes;
                state.pending_files += files;
            }
        }
    }

    fn try_reserve_file(&self) -> Result<(), QuotaExceeded> {
        let mut state = self.lock();
        if let Some(limit) = state.limits.files
            && state.used.files + state.reserved_files >= limit
        {
            return Err(QuotaExceeded::Files { limit });
        }
        state.reserved_files += 1;
        Ok(())
    }

    /// Ends reservations and applies what really changed on disk, then persists.
    fn settle(
        &self,
        released_bytes: u64,
        released_files: u64,
        bytes_delta: i128,
        files_delta: i64,
    ) {
        let used = {
            let mut state = self.lock();
            state.reserved_bytes = state.reserved_bytes.saturating_sub(released_bytes);
            state.reserved_files = state.reserved_files.saturating_sub(released_files);
            if self.is_shared() {
                // What was reserved is already charged to the ledger; the change left over
                // goes there at the next flush.
                state.pending_bytes += bytes_delta - i128::from(released_bytes);
                state.pending_files +=
                    files_delta - i64::try_from(released_files).unwrap_or(i64::MAX);
                return;
            }
            state.used.bytes =
                (i128::from(state.used.bytes) + bytes_delta).clamp(0, i128::from(u64::MAX)) as u64;
            state.used.files = state.used.files.saturating_add_signed(files_delta);
            state.used
        };
        if bytes_delta != 0 || files_delta != 0 {
            self.persist(used);
        }
    }

    /// An upload of `path` begins.
    fn begin_upload(&self, path: &VirtualPath) {
        let mut state = self.lock();
        let running = state
            .uploading
            .entry(path.as_str().to_string())
            .or_default();
        *running += 1;
        if *running > 1 {
            state.tangled = true;
        }
    }

    /// `path` is renamed, replaced or deleted: if an upload runs there or below, usage will be
    /// rescanned once uploads are over.
    fn note_change(&self, path: &VirtualPath) {
        let mut state = self.lock();
        let dir = format!("{}/", path.as_str().trim_end_matches('/'));
        if state
            .uploading
            .keys()
            .any(|running| running == path.as_str() || running.starts_with(&dir))
        {
            state.tangled = true;
        }
    }

    /// An upload of `path` ended (after settling); true when it was the last one running and
    /// usage must be rescanned.
    fn end_upload(&self, path: &VirtualPath) -> bool {
        let mut state = self.lock();
        if let Some(running) = state.uploading.get_mut(path.as_str()) {
            *running -= 1;
            if *running == 0 {
                state.uploading.remove(path.as_str());
            }
        }
        let rescan = state.tangled && state.uploading.is_empty();
        if rescan {
            state.tangled = false;
        }
        rescan
    }

    /// Usage as a scan found it (taken while no upload ran and nothing else could change).
    /// Shared usage: the scan replaces the ledger's figure, so an upload running on another
    /// node at that moment is counted when it settles, not before.
    async fn rescanned(&self, used: Usage) {
        if let Some(ledger) = &self.ledger {
            self.flush().await;
            if let Err(err) = ledger.set_usage(&self.user, used).await {
                warn!(user = %self.user, error = &err as &dyn std::error::Error, "cannot record rescanned quota usage");
            }
        }
        self.lock().used = used;
        info!(
            bytes = used.bytes,
            files = used.files,
            "quota usage rescanned after concurrent changes"
        );
        self.persist(used);
    }

    fn persist(&self, used: Usage) {
        if self.is_shared() {
            return;
        }
        match write_usage(&self.file, used) {
            Ok(()) => self.lock().written = stamp_of(&self.file).ok().flatten(),
            Err(err) => warn!(
                err = &err as &dyn std::error::Error,
                "cannot save quota usage"
            ),
        }
    }
}

/// All users' quota state in one server.
#[derive(Debug)]
pub struct QuotaRegistry {
    /// The data directory (usage files live in DATA/quota/).
    data_dir: PathBuf,
    /// One entry per user who logged in since start; kept so sessions share it.
    users: Mutex<HashMap<String, Arc<UserQuota>>>,
    /// When this server started: temporary upload files older than this are a killed
    /// server's leftovers.
    started: SystemTime,
    /// Usage shared with other nodes; `None`: kept in DATA/quota/.
    ledger: Option<Arc<dyn UsageLedger>>,
}

impl QuotaRegistry {
    /// Prepares DATA/quota/. Finding the running marker means the previous server stopped
    /// without a clean shutdown, so its usage files may be stale: they are removed, and each
    /// user is rescanned at the next login.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join(QUOTA_DIR);
        std::fs::create_dir_all(&dir)?;
        let marker = dir.join(RUNNING_MARKER);
        if marker.exists() {
            warn!(
                "the last run did not stop cleanly: quota usage will be rescanned at each user's next login"
            );
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        std::fs::write(&marker, b"")?;
        Ok(QuotaRegistry {
            data_dir: data_dir.to_path_buf(),
            users: Mutex::default(),
            started: SystemTime::now(),
            ledger: None,
        })
    }

    /// Usage kept in `ledger`, shared with the other nodes using it; nothing in DATA/quota/.
    pub fn shared(data_dir: &Path, ledger: Arc<dyn UsageLedger>) -> Self {
        QuotaRegistry {
            data_dir: data_dir.to_path_buf(),
            users: Mutex::default(),
            started: SystemTime::now(),
            ledger: Some(ledger),
        }
    }

    /// Marks a clean stop: usage files are current.
    pub fn close(&self) {
        if self.ledger.is_some() {
            return;
        }
        let marker = self.data_dir.join(QUOTA_DIR).join(RUNNING_MARKER);
        if let Err(err) = std::fs::remove_file(marker) {
            warn!(%err, "cannot remove the quota running marker");
        }
    }

    /// The user's quota state with the account's current limits; usage comes from memory,
    /// else the usage file, else a scan of the home through `storage`.
    pub async fn for_user(
        &self,
        name: &str,
        limits: Limits,
        storage: &dyn Storage,
    ) -> Result<Arc<UserQuota>, StorageError> {
        if let Some(ledger) = &self.ledger {
            return self.shared_for_user(ledger, name, limits, storage).await;
        }
        let file = usage_file(&self.data_dir, name);
        let existing = self.known(name);
        if let Some(quota) = existing {
            let replaced = {
                let state = quota.lock();
                state.written != stamp_of(&file).ok().flatten()
            };
            let reread = if replaced { read_usage(&file) } else { None };
            let mut state = quota.lock();
            state.limits = limits;
            if let Some(used) = reread {
                info!(
                    user = name,
                    bytes = used.bytes,
                    files = used.files,
                    "quota usage reloaded after a rescan"
                );
                state.used = used;
                state.written = stamp_of(&file).ok().flatten();
            }
            drop(state);
            return Ok(quota);
        }
        let used = match read_usage(&file) {
            Some(used) => used,
            // No usage file: first login ever, or the last server was killed.
            None => self.measure(name, storage).await?,
        };
        let quota = Arc::new(UserQuota::new(name, file, None, limits, used));
        quota.persist(used);
        Ok(self.remember(name, quota))
    }

    /// [`QuotaRegistry::for_user`] with usage in the ledger: read at every login, so this
    /// node starts from what all nodes did; measured once, by the first node to need it.
    async fn shared_for_user(
        &self,
        ledger: &Arc<dyn UsageLedger>,
        name: &str,
        limits: Limits,
        storage: &dyn Storage,
    ) -> Result<Arc<UserQuota>, StorageError> {
        let ledger_err = |err: UserError| StorageError::Io(io::Error::other(err));
        let used = match ledger.usage(name).await.map_err(ledger_err)? {
            Some(used) => used,
            None => {
                let scanned = self.measure(name, storage).await?;
                ledger.init_usage(name, scanned).await.map_err(ledger_err)?
            }
        };
        let existing = self.known(name);
        if let Some(quota) = existing {
            let mut state = quota.lock();
            state.limits = limits;
            state.used = used;
            drop(state);
            return Ok(quota);
        }
        let file = usage_file(&self.data_dir, name);
        let quota = UserQuota::new(name, file, Some(Arc::clone(ledger)), limits, used);
        Ok(self.remember(name, Arc::new(quota)))
    }

    /// Usage measured by walking the home, after removing uploads an earlier run left
    /// half-done (their temporary files would be counted).
    async fn measure(&self, name: &str, storage: &dyn Storage) -> Result<Usage, StorageError> {
        match storage.remove_stale_uploads(self.started).await {
            Ok(0) => {}
            Ok(n) => info!(
                user = name,
                files = n,
                "removed interrupted uploads of an earlier run"
            ),
            Err(err) => warn!(user = name, %err, "cannot remove interrupted uploads"),
        }
        let used = storage.scan().await?;
        info!(
            user = name,
            bytes = used.bytes,
            files = used.files,
            "quota usage scanned"
        );
        Ok(used)
    }

    /// The accounting of `name` kept since an earlier login.
    fn known(&self, name: &str) -> Option<Arc<UserQuota>> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users.get(name).cloned()
    }

    /// Keeps `quota` for the user's next sessions (or the one another login kept first).
    fn remember(&self, name: &str, quota: Arc<UserQuota>) -> Arc<UserQuota> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(users.entry(name.to_string()).or_insert(quota))
    }
}

/// A user's storage with quota accounting around every change.
#[derive(Debug)]
pub struct QuotaStorage {
    /// Where the files really are.
    inner: Arc<dyn Storage>,
    /// The user's shared accounting.
    quota: Arc<UserQuota>,
}

impl QuotaStorage {
    /// Wraps `inner` with `quota`.
    pub fn new(inner: Arc<dyn Storage>, quota: Arc<UserQuota>) -> Self {
        QuotaStorage { inner, quota }
    }

    /// The accounting, for SITE QUOTA.
    pub fn quota(&self) -> &Arc<UserQuota> {
        &self.quota
    }

    /// Shared usage: reserves the file a new upload creates, charging the ledger if this
    /// node holds no file lease.
    async fn reserve_shared_file(&self) -> Result<(), StorageError> {
        if !self.quota.take_lease(0, 1) {
            self.quota.lease(0, 1).await?;
            if !self.quota.take_lease(0, 1) {
                // Another session of this user here took the file just charged.
                return Err(StorageError::Quota(QuotaExceeded::Files {
                    limit: self.quota.report().1.files.unwrap_or(0),
                }));
            }
        }
        Ok(())
    }

    /// Size of the regular file at `path`, if there is one.
    async fn file_len(&self, path: &VirtualPath) -> Option<u64> {
        match self.inner.metadata(path).await {
            Ok(meta) if !meta.is_dir => Some(meta.len),
            _ => None,
        }
    }
}

#[async_trait]
impl Storage for QuotaStorage {
    async fn metadata(&self, path: &VirtualPath) -> Result<Metadata, StorageError> {
        self.inner.metadata(path).await
    }

    async fn list(&self, path: &VirtualPath) -> Result<Box<dyn Listing>, StorageError> {
        self.inner.list(path).await
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        self.inner.read(path, offset).await
    }

    async fn write(
        &self,
        path: &VirtualPath,
        mode: UploadMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        // Registered before the target is looked at, and under the lock renames and deletes
        // hold, so a change to the path between the look and the start marks it tangled.
        let changing = self.quota.changes.lock().await;
        self.quota.begin_upload(path);
        let before = self.file_len(path).await;
        let creates_file = before.is_none();
        let opened = if !creates_file {
            Ok(())
        } else if self.quota.is_shared() {
            self.reserve_shared_file().await
        } else {
            self.quota.try_reserve_file().map_err(StorageError::Quota)
        };
        let opened = match opened {
            Ok(()) => self.inner.write(path, mode).await.inspect_err(|_| {
                self.quota.settle(0, u64::from(creates_file), 0, 0);
            }),
            Err(err) => Err(err),
        };
        let upload = match opened {
            Ok(upload) => upload,
            Err(err) => {
                drop(changing);
                if self.quota.end_upload(path) {
                    rescan_usage(Arc::clone(&self.inner), Arc::clone(&self.quota)).await;
                }
                self.quota.flush().await;
                return Err(err);
            }
        };
        drop(changing);
        // What stays on disk if the upload goes no further: nothing new for a replacement
        // (it goes to a temporary file), the kept prefix for a resume, the file for an append.
        let (kept, credit) = match (mode, before) {
            (UploadMode::Replace, Some(old)) => (old, old),
            (UploadMode::ResumeAt(offset), Some(_)) => (offset, 0),
            (_, Some(old)) => (old, 0),
            (_, None) => (0, 0),
        };
        if let Some(old) = before.filter(|&old| old != kept) {
            // A resume truncates to its offset as it opens the file.
            self.quota
                .settle(0, 0, i128::from(kept) - i128::from(old), 0);
        }
        Ok(Box::new(QuotaUpload {
            inner: Some(upload),
            quota: Arc::clone(&self.quota),
            storage: Arc::clone(&self.inner),
            path: path.clone(),
            replaces: matches!((mode, before), (UploadMode::Replace, Some(_))),
            creates_file,
            kept,
            credit,
            written: 0,
            reserved: 0,
            exceeded: false,
            leasing: None,
        }))
    }

    async fn create_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        self.inner.create_dir(path).await
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        self.inner.remove_dir(path).await
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let _changing = self.quota.changes.lock().await;
        self.quota.note_change(path);
        let len = self.file_len(path).await;
        self.inner.remove_file(path).await?;
        if let Some(len) = len {
            self.quota.settle(0, 0, -i128::from(len), -1);
            self.quota.flush().await;
        }
        Ok(())
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        let _changing = self.quota.changes.lock().await;
        self.quota.note_change(from);
        self.quota.note_change(to);
        // Renaming over an existing file replaces it: its bytes and its count are freed.
        let replaced = if from == to {
            None
        } else {
            self.file_len(to).await
        };
        self.inner.rename(from, to).await?;
        if let Some(len) = replaced {
            self.quota.settle(0, 0, -i128::from(len), -1);
            self.quota.flush().await;
        }
        Ok(())
    }

    async fn scan(&self) -> Result<Usage, StorageError> {
        self.inner.scan().await
    }

    async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64, StorageError> {
        self.inner.remove_stale_uploads(cutoff).await
    }
}

/// An upload that reserves quota as bytes arrive and settles the accounting when it ends.
struct QuotaUpload {
    /// The real upload; taken when it ends.
    inner: Option<Box<dyn Upload>>,
    quota: Arc<UserQuota>,
    /// To remove a new file cut off by the quota, and to measure what an abort left behind.
    storage: Arc<dyn Storage>,
    path: VirtualPath,
    /// STOR over an existing file: bytes go to a temporary file until commit.
    replaces: bool,
    /// This upload creates the file (a file was reserved for it).
    creates_file: bool,
    /// Bytes of the target counted in usage before any new byte arrived.
    kept: u64,
    /// Bytes the new content may take without a reservation: a replacement frees the old
    /// file's bytes when it commits, so it may use them.
    credit: u64,
    /// Bytes accepted so far.
    written: u64,
    /// Bytes reserved so far beyond the credit.
    reserved: u64,
    /// The quota refused a write: a file this upload created is removed.
    exceeded: bool,
    /// Shared usage: the ledger being charged for the write waiting in `poll_write`.
    leasing: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send>>>,
}

impl std::fmt::Debug for QuotaUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaUpload")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl QuotaUpload {
    /// Accounting when the upload ends with `len` bytes in the target (None: nothing new on
    /// disk, the old state stands) and whether a created file remains.
    fn settle(&mut self, new_len: Option<u64>, file_remains: bool) {
        let files_delta = i64::from(self.creates_file && file_remains);
        let bytes_delta = new_len.map_or(0, |len| i128::from(len) - i128::from(self.kept));
        self.quota.settle(
            self.reserved,
            u64::from(self.creates_file),
            bytes_delta,
            files_delta,
        );
        self.reserved = 0;
        self.creates_file = false;
    }

    /// Reserves quota for `n` more bytes than written so far; refused past the limit.
    /// Shared usage: `Ok(Some(need))` when the ledger must first be charged for `need`.
    fn reserve(&mut self, n: u64) -> io::Result<Option<u64>> {
        let wanted = (self.written + n).saturating_sub(self.credit);
        let need = wanted.saturating_sub(self.reserved);
        if need > 0 && self.quota.is_shared() {
            if !self.quota.take_lease(need, 0) {
                return Ok(Some(need));
            }
            self.reserved += need;
        } else if need > 0 {
            if let Err(exceeded) = self.quota.try_reserve_bytes(need) {
                self.exceeded = true;
                return Err(io::Error::other(exceeded));
            }
            self.reserved += need;
        }
        Ok(None)
    }

    /// Marks the upload over; when it was tangled with other changes and the last running,
    /// usage must be rescanned from disk: the returned future does it.
    fn end(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.quota
            .end_upload(&self.path)
            .then(|| rescan_usage(Arc::clone(&self.storage), Arc::clone(&self.quota)))
    }
}

/// Replaces a user's usage with a scan of their files.
/// Holds the lock renames, deletes and upload starts take, so nothing moves while the tree
/// is walked; if an upload started meanwhile, its end rescans instead.
async fn rescan_usage(storage: Arc<dyn Storage>, quota: Arc<UserQuota>) {
    let _changing = quota.changes.lock().await;
    {
        let mut state = quota.lock();
        if !state.uploading.is_empty() {
            state.tangled = true;
            return;
        }
    }
    match storage.scan().await {
        Ok(used) => quota.rescanned(used).await,
        Err(err) => warn!(%err, "cannot rescan quota usage"),
    }
}

impl AsyncWrite for QuotaUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Some(leasing) = this.leasing.as_mut() {
                let leased = std::task::ready!(leasing.as_mut().poll(cx));
                this.leasing = None;
                if let Err(err) = leased {
                    this.exceeded = is_quota(&err);
                    return Poll::Ready(Err(err));
                }
            }
            match this.reserve(buf.len() as u64) {
                Ok(None) => break,
                Ok(Some(need)) => {
                    let quota = Arc::clone(&this.quota);
                    this.leasing = Some(Box::pin(async move { quota.lease(need, 0).await }));
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(io::Error::other("upload already finished")));
        };
        let poll = Pin::new(inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.written += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[async_trait]
impl Upload for QuotaUpload {
    fn direct_fd(&self) -> Option<io::Result<DirectFile>> {
        self.inner.as_ref()?.direct_fd()
    }

    async fn accept_direct(&mut self, n: u64) -> io::Result<()> {
        while let Some(need) = self.reserve(n)? {
            if let Err(err) = self.quota.lease(need, 0).await {
                self.exceeded = is_quota(&err);
                return Err(err);
            }
        }
        let Some(inner) = self.inner.as_mut() else {
            return Err(io::Error::other("upload already finished"));
        };
        inner.accept_direct(n).await?;
        self.written += n;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let Some(inner) = self.inner.take() else {
            return Ok(());
        };
        match inner.commit().await {
            Ok(()) => {
                let fallback = self.kept + self.written;
                let len = remaining_len(Arc::clone(&self.storage), self.path.clone(), false).await;
                self.settle(Some(len.unwrap_or(fallback)), true);
                if let Some(rescan) = self.end() {
                    rescan.await;
                }
                self.quota.flush().await;
                Ok(())
            }
            Err(err) => {
                let len =
                    remaining_len(Arc::clone(&self.storage), self.path.clone(), self.replaces)
                        .await;
                self.settle(len, len.is_some());
                if let Some(rescan) = self.end() {
                    rescan.await;
                }
                self.quota.flush().await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        inner.abort().await;
        if self.exceeded && self.creates_file {
            // A new file cut off by the quota is not kept half-written. On object storage
            // an aborted upload never became an object: nothing to remove.
            let (storage, path) = (Arc::clone(&self.storage), self.path.clone());
            if let Err(err) = storage.remove_file(&path).await
                && !matches!(err, StorageError::NotFound)
            {
                warn!(path = %self.path, %err, "cannot remove an upload stopped by the quota");
            }
        }
        let len = remaining_len(Arc::clone(&self.storage), self.path.clone(), self.replaces).await;
        self.settle(len, len.is_some());
        if let Some(rescan) = self.end() {
            rescan.await;
        }
        self.quota.flush().await;
    }
}

/// True when `err` is a quota refusal travelling as an io::Error.
fn is_quota(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<QuotaExceeded>().is_some())
}

/// The target's size after an upload ended early; `None` when the old state stands (a
/// replacement's temporary file is gone) or nothing is left. A free function so the future
/// does not borrow the upload, which is not `Sync`.
async fn remaining_len(
    storage: Arc<dyn Storage>,
    path: VirtualPath,
    replaces: bool,
) -> Option<u64> {
    if replaces {
        return None;
    }
    storage
        .metadata(&path)
        .await
        .ok()
        .filter(|m| !m.is_dir)
        .map(|m| m.len)
}

impl Drop for QuotaUpload {
    fn drop(&mut self) {
        // Dropped without commit or abort (the session ended mid-transfer): the inner upload
        // cleans up on its own drop; count what it leaves in place.
        if self.inner.take().is_some() {
            let len = (!self.replaces && (self.written > 0 || !self.creates_file))
                .then_some(self.kept + self.written);
            self.settle(len, len.is_some());
            let rescan = self.end();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let quota = Arc::clone(&self.quota);
                runtime.spawn(async move {
                    if let Some(rescan) = rescan {
                        rescan.await;
                    }
                    quota.flush().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_si_and_binary_units() {
        assert_eq!(parse_size("500MiB"), Ok(Some(500 << 20)));
        assert_eq!(parse_size("2GB"), Ok(Some(2_000_000_000)));
        assert_eq!(parse_size("1.5 KiB"), Ok(Some(1536)));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size("none"), Ok(None));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_count("10000"), Ok(Some(10000)));
        assert_eq!(parse_count("none"), Ok(None));
        assert!(parse_count("1e3").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
    }

    fn quota(limits: Limits, used: Usage) -> UserQuota {
        let file =
            std::env::temp_dir().join(format!("ferry-quota-test-{}.toml", rand::random::<u64>()));
        UserQuota::new("test", file, None, limits, used)
    }

    #[test]
    fn reservations_of_concurrent_uploads_add_up_against_the_limit() {
        let q = quota(
            Limits {
                bytes: Some(100),
                files: None,
            },
            Usage {
                bytes: 40,
                files: 1,
            },
        );
        assert_eq!(q.try_reserve_bytes(30), Ok(()));
        assert_eq!(q.try_reserve_bytes(30), Ok(()));
        assert_eq!(
            q.try_reserve_bytes(1),
            Err(QuotaExceeded::Bytes {
                left: 0,
                limit: 100
            })
        );
        q.settle(30, 0, 0, 0);
        assert_eq!(q.try_reserve_bytes(30), Ok(()));
        let _ = std::fs::remove_file(&q.file);
    }

    #[test]
    fn file_count_limit_counts_reserved_files() {
        let q = quota(
            Limits {
                bytes: None,
                files: Some(2),
            },
            Usage { bytes: 0, files: 1 },
        );
        assert_eq!(q.try_reserve_file(), Ok(()));
        assert_eq!(q.try_reserve_file(), Err(QuotaExceeded::Files { limit: 2 }));
        q.settle(0, 1, 10, 1);
        assert_eq!(
            q.report().0,
            Usage {
                bytes: 10,
                files: 2
            }
        );
        let _ = std::fs::remove_file(&q.file);
    }
}
