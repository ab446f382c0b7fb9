//! Accounts: DATA/users.toml load and atomic save, argon2id hashing, and the
//! [`UserStore`] a running server authenticates against.
//!
//! users.toml looks like this; relative homes are relative to the data dir:
//!
//! ```toml
//! [users.alice]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! home = "home/alice"
//! read_only = false
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use argon2::password_hash::phc::Output;
use argon2::password_hash::{self, PasswordHasher};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use async_trait::async_trait;
use rand::RngExt;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::DEFAULT_LOGIN_CACHE;
use crate::login_cache::VerifiedLogins;
use crate::pg::PgStore;
use crate::quota::{Limits, Usage, UsageLedger, read_usage, usage_file, write_usage};

/// File name of the account database inside the data directory.
pub const USERS_FILE: &str = "users.toml";

/// Longest accepted user name, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// Characters of generated passwords: alphanumerics without 0/O/o and 1/I/l.
const PASSWORD_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz";

/// Length of generated passwords: 20 symbols of 56 give about 116 bits.
const GENERATED_PASSWORD_LEN: usize = 20;

/// Name of the account `ensure_admin` creates in an empty database.
const ADMIN_NAME: &str = "admin";

/// Everything that can go wrong reading, changing or writing accounts.
#[derive(Debug, Error)]
pub enum UserError {
    /// users.toml (or a home directory) exists but could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// users.toml is not valid TOML or lacks a required key.
    #[error("cannot parse {}", path.display())]
    Parse {
        /// The file that could not be parsed.
        path: PathBuf,
        /// Where and why parsing failed.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// users.toml holds a user name that `validate_name` rejects.
    #[error("{}: invalid user name {name:?}: {reason}", path.display())]
    InvalidNameInFile {
        /// The file holding the name.
        path: PathBuf,
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: NameError,
    },
    /// The accounts could not be encoded as TOML (a home path that is not UTF-8).
    #[error("cannot encode the accounts as TOML")]
    Encode(#[source] toml::ser::Error),
    /// users.toml (or its temporary sibling) could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A new user's home directory could not be created.
    #[error("cannot create home directory {}", path.display())]
    CreateHome {
        /// The directory that could not be created.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A name given for a new or existing user breaks the naming rules.
    #[error("invalid user name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: NameError,
    },
    /// `add` of a name that is already taken.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// A change or lookup of a name that is not in users.toml.
    #[error("no such user {0:?}")]
    UnknownUser(String),
    /// argon2 refused the parameters or failed to hash.
    #[error("cannot hash the password")]
    Hash(#[source] password_hash::Error),
    /// The PostgreSQL user store failed (unreachable, refused, a migration failed).
    #[error("user database")]
    Database(#[source] Box<dyn Error + Send + Sync>),
}

/// Why a user name was rejected.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_LEN`].
    #[error("must be 1 to {MAX_NAME_LEN} characters long")]
    Length,
    /// Holds a character outside `[A-Za-z0-9._-]`.
    #[error("may contain only letters, digits, '.', '_' and '-'")]
    Charset,
    /// Starts with '.' or '-' (hidden files, command-line options).
    #[error("must not start with '.' or '-'")]
    LeadingPunctuation,
}

/// Checks a user name: 1 to 32 characters of `[A-Za-z0-9._-]`, not starting with '.' or '-'.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return Err(NameError::Charset);
    }
    if name.starts_with(['.', '-']) {
        return Err(NameError::LeadingPunctuation);
    }
    Ok(())
}

pub use ferry_proto::Password;

/// Hashes a password with argon2id, argon2's default (OWASP) parameters and a random salt.
pub fn hash_password(pw: &Password) -> Result<String, UserError> {
    hash_with(&Argon2::default(), pw)
}

/// Hashes like [`hash_password`] with explicit costs; tests use it for cheap hashes.
pub fn hash_password_with_params(
    pw: &Password,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<String, UserError> {
    let params =
        Params::new(m_cost_kib, t_cost, p_cost, None).map_err(|err| UserError::Hash(err.into()))?;
    hash_with(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        pw,
    )
}

fn hash_with(argon2: &Argon2<'_>, pw: &Password) -> Result<String, UserError> {
    let hash = argon2
        .hash_password(pw.expose().as_bytes())
        .map_err(UserError::Hash)?;
    Ok(hash.to_string())
}

/// Checks a password against a PHC string (whose own parameters are used); malformed => false.
pub fn verify_password(phc: &str, pw: &Password) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => verify_parsed(&hash, pw),
        Err(_) => false,
    }
}

/// Working memory argon2 reuses on threads that verify (the server's password-check
/// threads): beyond this it is allocated per check and freed.
const KEPT_ARGON2_MEMORY: usize = 64 * 1024 * 1024;

thread_local! {
    /// argon2's working memory, kept by each thread that verifies. Allocating and freeing
    /// 19 MiB per login made glibc keep about 58 MiB per malloc arena after a burst of
    /// logins (the dynamic mmap threshold rises to the freed size, so later blocks come from
    /// the arenas, which are not trimmed); reused, it is 19 MiB per thread, for good.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies `pw` against a parsed PHC hash the way `PasswordVerifier` does (same algorithm,
/// version, costs and salt, constant-time comparison of the outputs), on this thread's
/// reused argon2 memory.
fn verify_parsed(hash: &PasswordHash, pw: &Password) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    let mut buffer = [0u8; 64];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let hashed = if blocks * Block::SIZE > KEPT_ARGON2_MEMORY {
        let memory = vec![Block::default(); blocks];
        argon2.hash_password_into_with_memory(pw.expose().as_bytes(), salt.as_ref(), out, memory)
    } else {
        ARGON2_MEMORY.with_borrow_mut(|memory| {
            memory.resize(blocks, Block::default());
            argon2.hash_password_into_with_memory(
                pw.expose().as_bytes(),
                salt.as_ref(),
                out,
                &mut memory[..blocks],
            )
        })
    };
    hashed.is_ok() && Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// A fresh 20-character password from the OS RNG, free of look-alike characters.
pub fn random_password() -> Password {
    // SysRng is fallible; an OS RNG failure is unrecoverable, so UnwrapErr panics on it.
    let mut rng = UnwrapErr(SysRng);
    let cleartext: String = (0..GENERATED_PASSWORD_LEN)
        .map(|_| char::from(PASSWORD_ALPHABET[rng.random_range(..PASSWORD_ALPHABET.len())]))
        .collect();
    Password::new(cleartext)
}

/// One account as stored in users.toml.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserEntry {
    /// argon2id PHC string; it carries its own salt and costs, so old hashes keep verifying.
    pub password: String,
    /// Home directory as written in the file: relative to the data dir, or absolute.
    pub home: PathBuf,
    /// Refuses every command that changes files; for download-only accounts.
    #[serde(default)]
    pub read_only: bool,
    /// Refuse this account's login before AUTH TLS and its data connections without PROT P.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// Most bytes the user may store; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// Most files the user may store (directories are not counted); absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_files: Option<u64>,
    /// Keys this version does not know, kept so a save does not drop settings of a newer ferry.
    #[serde(flatten)]
    extra: toml::Table,
}

impl UserEntry {
    /// An entry with a PHC hash, a home (relative to the data dir or absolute) and access mode.
    pub fn new(password: String, home: PathBuf, read_only: bool) -> Self {
        Self {
            password,
            home,
            read_only,
            require_tls: false,
            quota_bytes: None,
            quota_files: None,
            extra: toml::Table::new(),
        }
    }

    /// The quota limits of this account.
    pub fn limits(&self) -> Limits {
        Limits {
            bytes: self.quota_bytes,
            files: self.quota_files,
        }
    }

    /// The home directory with a relative path resolved against `data_dir`.
    pub fn resolved_home(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.home)
    }
}

impl fmt::Debug for UserEntry {
    // The hash is left out: it is not a password, but offline guessing starts from it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("home", &self.home)
            .field("read_only", &self.read_only)
            .field("quota_bytes", &self.quota_bytes)
            .field("quota_files", &self.quota_files)
            .finish_non_exhaustive()
    }
}

/// The default home of a new user, relative to the data dir: `home/<name>`.
pub fn default_home(name: &str) -> PathBuf {
    Path::new("home").join(name)
}

/// The path of users.toml inside a data directory.
pub fn users_file(data_dir: &Path) -> PathBuf {
    data_dir.join(USERS_FILE)
}

/// The contents of users.toml: accounts by name, sorted so saves are stable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserDb {
    /// Accounts by name; a BTreeMap so the file is written in a stable order.
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

impl UserDb {
    /// Reads users.toml; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<Self, UserError> {
        read_db(path).map(|(db, _)| db)
    }

    /// Writes the database atomically: temporary sibling, fsync, mode 0600, rename.
    pub fn save(&self, path: &Path) -> Result<(), UserError> {
        let text = toml::to_string(self).map_err(UserError::Encode)?;
        write_atomically(path, text.as_bytes())
    }

    /// The entry of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(name)
    }

    /// Adds a new account; the name must be valid and not taken.
    pub fn insert(&mut self, name: &str, entry: UserEntry) -> Result<(), UserError> {
        validate_name(name).map_err(|reason| UserError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        if self.users.contains_key(name) {
            return Err(UserError::UserExists(name.to_owned()));
        }
        self.users.insert(name.to_owned(), entry);
        Ok(())
    }

    /// Replaces the password hash of an existing account.
    pub fn set_password(&mut self, name: &str, phc: String) -> Result<(), UserError> {
        self.get_mut(name)?.password = phc;
        Ok(())
    }

    /// An existing account, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut UserEntry, UserError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| UserError::UnknownUser(name.to_owned()))
    }

    /// Removes an account and returns its entry.
    pub fn remove(&mut self, name: &str) -> Result<UserEntry, UserError> {
        self.users
            .remove(name)
            .ok_or_else(|| UserError::UnknownUser(name.to_owned()))
    }

    /// Accounts in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &UserEntry)> {
        self.users
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no accounts (the server then creates `admin`).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn check_names(&self, path: &Path) -> Result<(), UserError> {
        for name in self.users.keys() {
            validate_name(name).map_err(|reason| UserError::InvalidNameInFile {
                path: path.to_owned(),
                name: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Identity of one version of users.toml, compared before each login to spot edits cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    /// Changes on every write on filesystems with fine-grained timestamps.
    modified: Option<SystemTime>,
    /// Catches edits within one timestamp tick that change the size.
    len: u64,
    /// Every atomic save renames a new file into place, so the inode changes even when
    /// the timestamp and size do not.
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }
}

/// Stats users.toml; `None` when it does not exist.
pub(crate) fn stamp_of(path: &Path) -> io::Result<Option<FileStamp>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(FileStamp::of(&meta))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Reads and parses users.toml, with the stamp of exactly the version that was read.
fn read_db(path: &Path) -> Result<(UserDb, Option<FileStamp>), UserError> {
    let read_err = |source| UserError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((UserDb::default(), None)),
        Err(err) => return Err(read_err(err)),
    };
    let stamp = FileStamp::of(&file.metadata().map_err(read_err)?);
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    let db: UserDb = toml::from_str(&text).map_err(|source| UserError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    db.check_names(path)?;
    Ok((db, Some(stamp)))
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`,
/// so readers (the running server) see the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), UserError> {
    replace_file(path, bytes, true)
}

/// Replaces `path` with `bytes` by writing a sibling and renaming it over, so readers never
/// see half a file. `durable` also syncs the data and the directory; quota usage files skip
/// that because a crash is detected and answered with a rescan anyway.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), UserError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UserError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err(dir))?;
    restrict_to_owner(tmp.as_file()).map_err(write_err(tmp.path()))?;
    tmp.write_all(bytes).map_err(write_err(tmp.path()))?;
    if durable {
        tmp.as_file().sync_all().map_err(write_err(tmp.path()))?;
    }
    tmp.persist(path).map_err(|err| UserError::Write {
        path: path.to_owned(),
        source: err.error,
    })?;
    if durable {
        sync_dir(dir).map_err(write_err(dir))?;
    }
    Ok(())
}

/// Mode 0600: the file holds password hashes.
#[cfg(unix)]
fn restrict_to_owner(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Makes the rename durable: on unix a directory entry change is persisted by syncing the dir.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Adds an account to DATA/users.toml and creates its home directory; returns the home.
pub fn add_user(data_dir: &Path, name: &str, entry: UserEntry) -> Result<PathBuf, UserError> {
    let path = users_file(data_dir);
    let mut db = UserDb::load(&path)?;
    db.insert(name, entry.clone())?;
    // Home first: an account that exists must be able to log in.
    let home = create_home(data_dir, &entry)?;
    db.save(&path)?;
    Ok(home)
}

/// Creates an account's home directory (relative homes inside `data_dir`) if missing;
/// returns it.
pub fn create_home(data_dir: &Path, entry: &UserEntry) -> Result<PathBuf, UserError> {
    let home = entry.resolved_home(data_dir);
    fs::create_dir_all(&home).map_err(|source| UserError::CreateHome {
        path: home.clone(),
        source,
    })?;
    Ok(home)
}

/// Replaces an account's password hash in DATA/users.toml.
pub fn set_password(data_dir: &Path, name: &str, phc: String) -> Result<(), UserError> {
    let path = users_file(data_dir);
    let mut db = UserDb::load(&path)?;
    db.set_password(name, phc)?;
    db.save(&path)
}

/// Changes an account's settings in DATA/users.toml; returns the new entry.
pub fn update_user(
    data_dir: &Path,
    name: &str,
    change: impl FnOnce(&mut UserEntry),
) -> Result<UserEntry, UserError> {
    let path = users_file(data_dir);
    let mut db = UserDb::load(&path)?;
    let entry = db.get_mut(name)?;
    change(entry);
    let entry = entry.clone();
    db.save(&path)?;
    Ok(entry)
}

/// Removes an account from DATA/users.toml; its home directory is kept. Returns the entry.
pub fn delete_user(data_dir: &Path, name: &str) -> Result<UserEntry, UserError> {
    let path = users_file(data_dir);
    let mut db = UserDb::load(&path)?;
    let entry = db.remove(name)?;
    db.save(&path)?;
    Ok(entry)
}

/// On a first start with no accounts, creates `admin` with a random password and its home
/// in `data_dir`, and returns the password.
pub async fn ensure_admin(
    directory: &dyn UserDirectory,
    data_dir: &Path,
) -> Result<Option<Password>, UserError> {
    if !directory.is_empty().await? {
        return Ok(None);
    }
    let password = random_password();
    let entry = UserEntry::new(hash_password(&password)?, default_home(ADMIN_NAME), false);
    create_home(data_dir, &entry)?;
    directory.add(ADMIN_NAME, entry).await?;
    Ok(Some(password))
}

/// What a session needs to know about a user after a successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name, for logs and replies.
    pub name: String,
    /// Absolute home directory: the root of everything the session may touch.
    pub home: PathBuf,
    /// Refuse commands that change files.
    pub read_only: bool,
    /// Disk quota, enforced during uploads.
    pub limits: Limits,
    /// FTPS required for this account.
    pub require_tls: bool,
}

/// The accounts a running server authenticates against: users.toml (reloaded when it
/// changes) or a PostgreSQL database several nodes share. Shared by all sessions.
#[derive(Debug)]
pub struct UserStore {
    /// Absolute data dir, against which relative homes are resolved.
    data_dir: PathBuf,
    /// Where the accounts are.
    backend: Backend,
    /// Logins verified recently: the repeated-login fast path.
    verified: VerifiedLogins,
}

/// Where a [`UserStore`] reads accounts.
#[derive(Debug)]
enum Backend {
    /// DATA/users.toml, cached and re-read when its stamp changes.
    Toml {
        /// DATA/users.toml.
        path: PathBuf,
        /// The last version read; a lock only for swapping it, never held while hashing.
        cache: RwLock<Cached>,
    },
    /// One query per login; the database is the truth for every node.
    Postgres {
        /// The database.
        db: Arc<PgStore>,
        /// Verified for unknown names, like [`Cached::dummy_hash`] (default costs).
        dummy_hash: String,
    },
}

/// An account found by name, before its password was checked.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The stored PHC hash to verify against.
    phc: String,
    /// What the session gets when the password matches.
    account: Account,
}

/// One version of users.toml and the stamp that identifies it.
#[derive(Debug)]
struct Cached {
    /// The accounts.
    db: UserDb,
    /// The file version `db` was read from (`None`: the file was absent); after a failed
    /// reload, the stamp of the broken version, so it is reported once, not on every login.
    stamp: Option<FileStamp>,
    /// Verified when the user is unknown, so that case costs as much as a wrong password:
    /// hashed with the argon2 costs most accounts in `db` use.
    dummy_hash: String,
}

impl Cached {
    fn new(db: UserDb, stamp: Option<FileStamp>) -> Result<Self, UserError> {
        let dummy_hash = dummy_hash_for(&db)?;
        Ok(Cached {
            db,
            stamp,
            dummy_hash,
        })
    }
}

/// A hash of a random password with the argon2 costs most accounts use (the defaults when
/// there are none), so verifying it takes as long as verifying a real account's hash: an
/// unknown name must not answer faster than a wrong password.
fn dummy_hash_for(db: &UserDb) -> Result<String, UserError> {
    let mut counts: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
    for entry in db.users.values() {
        if let Some(params) = PasswordHash::new(&entry.password)
            .ok()
            .and_then(|hash| Params::try_from(&hash).ok())
        {
            *counts
                .entry((params.m_cost(), params.t_cost(), params.p_cost()))
                .or_default() += 1;
        }
    }
    match counts.into_iter().max_by_key(|&(_, n)| n) {
        Some(((m, t, p), _)) => hash_password_with_params(&random_password(), m, t, p),
        None => hash_password(&random_password()),
    }
}

impl UserStore {
    /// Reads DATA/users.toml (absent: no accounts); fails on an unreadable or invalid file.
    pub fn open(data_dir: &Path) -> Result<Self, UserError> {
        let data_dir = absolute_data_dir(data_dir)?;
        let path = users_file(&data_dir);
        let (db, stamp) = read_db(&path)?;
        let cache = RwLock::new(Cached::new(db, stamp)?);
        Ok(Self {
            data_dir,
            backend: Backend::Toml { path, cache },
            verified: VerifiedLogins::new(DEFAULT_LOGIN_CACHE),
        })
    }

    /// Accounts in PostgreSQL; relative homes are resolved against this node's `data_dir`.
    pub fn postgres(data_dir: &Path, db: Arc<PgStore>) -> Result<Self, UserError> {
        Ok(Self {
            data_dir: absolute_data_dir(data_dir)?,
            backend: Backend::Postgres {
                db,
                dummy_hash: hash_password(&random_password())?,
            },
            verified: VerifiedLogins::new(DEFAULT_LOGIN_CACHE),
        })
    }

    /// Remembers verified logins for `ttl` instead of the default (zero: never).
    pub fn with_login_cache(mut self, ttl: Duration) -> Self {
        self.verified = VerifiedLogins::new(ttl);
        self
    }

    /// Where quota usage is shared between nodes: the database, when accounts are there.
    pub fn usage_ledger(&self) -> Option<Arc<dyn UsageLedger>> {
        match &self.backend {
            Backend::Toml { .. } => None,
            Backend::Postgres { db, .. } => Some(Arc::clone(db) as Arc<dyn UsageLedger>),
        }
    }

    /// Re-reads users.toml unconditionally (SIGHUP); on error the previous accounts stay.
    /// The database needs no reload.
    pub fn reload(&self) -> Result<(), UserError> {
        if let Backend::Toml { path, cache } = &self.backend {
            let (db, stamp) = read_db(path)?;
            let cached = Cached::new(db, stamp)?;
            *cache.write().unwrap_or_else(PoisonError::into_inner) = cached;
        }
        Ok(())
    }

    /// The account called `name`, its password not yet checked; `None` for an unknown name
    /// (still verify, with [`UserStore::verify`], so the answer takes as long). An error
    /// means the accounts cannot be read (the database is down).
    pub async fn find(&self, name: &str) -> Result<Option<Candidate>, UserError> {
        match &self.backend {
            Backend::Toml { path, cache } => {
                self.reload_if_changed(path, cache);
                Ok(self.lookup(cache, name))
            }
            Backend::Postgres { db, .. } => Ok(db.get(name).await?.map(|entry| Candidate {
                phc: entry.password.clone(),
                account: self.account(name, &entry),
            })),
        }
    }

    /// The fast path: the account when this exact name, password and stored hash passed
    /// [`UserStore::verify`] recently; `None` means "verify", not "wrong". Cheap (an HMAC),
    /// so it runs on the async threads.
    pub fn verified_recently(&self, found: &Candidate, pw: &Password) -> Option<Account> {
        self.verified
            .contains(&found.account.name, &found.phc, pw)
            .then(|| found.account.clone())
    }

    /// Checks a password against what [`UserStore::find`] found; blocking (exactly one
    /// argon2 verification whatever happens, so timing does not reveal which names exist or
    /// which entries have a broken hash), so call it off the async threads.
    pub fn verify(&self, found: Option<Candidate>, pw: &Password) -> Option<Account> {
        let parsed = found.as_ref().and_then(|found| {
            let hash = PasswordHash::new(&found.phc).ok()?;
            Some((hash, found))
        });
        match parsed {
            Some((hash, found)) => {
                let ok = verify_parsed(&hash, pw);
                if ok {
                    self.verified.insert(&found.account.name, &found.phc, pw);
                }
                ok.then(|| found.account.clone())
            }
            None => {
                verify_password(&self.dummy_hash(), pw);
                None
            }
        }
    }

    fn dummy_hash(&self) -> String {
        match &self.backend {
            Backend::Toml { cache, .. } => read_cache(cache).dummy_hash.clone(),
            Backend::Postgres { dummy_hash, .. } => dummy_hash.clone(),
        }
    }

    /// What a session of `name` works with.
    fn account(&self, name: &str, entry: &UserEntry) -> Account {
        Account {
            name: name.to_owned(),
            home: entry.resolved_home(&self.data_dir),
            read_only: entry.read_only,
            limits: entry.limits(),
            require_tls: entry.require_tls,
        }
    }

    /// The hash and account of `name`, copied out so no lock is held while hashing.
    fn lookup(&self, cache: &RwLock<Cached>, name: &str) -> Option<Candidate> {
        let cache = read_cache(cache);
        let entry = cache.db.get(name)?;
        Some(Candidate {
            phc: entry.password.clone(),
            account: self.account(name, entry),
        })
    }

    /// A stat per login: re-reads users.toml when `ferry user` (or an editor) changed it.
    fn reload_if_changed(&self, path: &Path, cache: &RwLock<Cached>) {
        let current = match stamp_of(path) {
            Ok(stamp) => stamp,
            Err(err) => {
                let path = path.display();
                tracing::warn!(%path, error = &err as &dyn Error, "cannot stat; keeping accounts");
                return;
            }
        };
        if read_cache(cache).stamp == current {
            return;
        }
        match read_db(path).and_then(|(db, stamp)| Cached::new(db, stamp)) {
            Ok(cached) => {
                *cache.write().unwrap_or_else(PoisonError::into_inner) = cached;
                tracing::info!(path = %path.display(), "reloaded accounts");
            }
            Err(err) => {
                tracing::warn!(
                    error = &err as &dyn Error,
                    "keeping previously loaded accounts"
                );
                cache.write().unwrap_or_else(PoisonError::into_inner).stamp = current;
            }
        }
    }
}

fn absolute_data_dir(data_dir: &Path) -> Result<PathBuf, UserError> {
    std::path::absolute(data_dir).map_err(|source| UserError::Read {
        path: data_dir.to_owned(),
        source,
    })
}

fn read_cache(cache: &RwLock<Cached>) -> std::sync::RwLockReadGuard<'_, Cached> {
    cache.read().unwrap_or_else(PoisonError::into_inner)
}

/// A change to an account, applied by [`UserDirectory::update`] under the store's lock.
pub type EntryChange<'a> = dyn for<'e> Fn(&'e mut UserEntry) + Send + Sync + 'a;

/// Account administration (`ferry user`) over either store.
#[async_trait]
pub trait UserDirectory: Send + Sync + fmt::Debug {
    /// True when there are no accounts.
    async fn is_empty(&self) -> Result<bool, UserError>;
    /// The account called `name`, if any.
    async fn get(&self, name: &str) -> Result<Option<UserEntry>, UserError>;
    /// Every account, in name order.
    async fn list(&self) -> Result<Vec<(String, UserEntry)>, UserError>;
    /// Adds an account; [`UserError::UserExists`] when the name is taken.
    async fn add(&self, name: &str, entry: UserEntry) -> Result<(), UserError>;
    /// Changes an account atomically; returns the new entry.
    async fn update(&self, name: &str, change: &EntryChange<'_>) -> Result<UserEntry, UserError>;
    /// Removes an account (not its files); returns what it was.
    async fn remove(&self, name: &str) -> Result<UserEntry, UserError>;
    /// Quota usage as last recorded; `None` until measured.
    async fn usage(&self, name: &str) -> Result<Option<Usage>, UserError>;
    /// Records usage measured by a scan (`ferry user rescan`).
    async fn set_usage(&self, name: &str, usage: Usage) -> Result<(), UserError>;
}

/// users.toml and DATA/quota/ in one data directory.
#[derive(Debug)]
pub struct TomlUsers {
    /// The data directory (absolute).
    data_dir: PathBuf,
}

impl TomlUsers {
    /// The accounts of `data_dir`.
    pub fn new(data_dir: &Path) -> Result<Self, UserError> {
        Ok(TomlUsers {
            data_dir: absolute_data_dir(data_dir)?,
        })
    }

    fn load(&self) -> Result<UserDb, UserError> {
        UserDb::load(&users_file(&self.data_dir))
    }
}

#[async_trait]
impl UserDirectory for TomlUsers {
    async fn is_empty(&self) -> Result<bool, UserError> {
        Ok(self.load()?.is_empty())
    }

    async fn get(&self, name: &str) -> Result<Option<UserEntry>, UserError> {
        Ok(self.load()?.get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<(String, UserEntry)>, UserError> {
        let db = self.load()?;
        Ok(db
            .iter()
            .map(|(name, entry)| (name.to_owned(), entry.clone()))
            .collect())
    }

    async fn add(&self, name: &str, entry: UserEntry) -> Result<(), UserError> {
        add_user(&self.data_dir, name, entry).map(drop)
    }

    async fn update(&self, name: &str, change: &EntryChange<'_>) -> Result<UserEntry, UserError> {
        update_user(&self.data_dir, name, change)
    }

    async fn remove(&self, name: &str) -> Result<UserEntry, UserError> {
        delete_user(&self.data_dir, name)
    }

    async fn usage(&self, name: &str) -> Result<Option<Usage>, UserError> {
        Ok(read_usage(&usage_file(&self.data_dir, name)))
    }

    async fn set_usage(&self, name: &str, usage: Usage) -> Result<(), UserError> {
        write_usage(&usage_file(&self.data_dir, name), usage)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use futures_util::FutureExt;
    use tempfile::TempDir;

    /// Cheapest costs argon2 accepts: tests hash many times.
    fn cheap_hash(pw: &str) -> String {
        hash_password_with_params(&Password::new(pw.to_owned()), 8, 1, 1).unwrap()
    }

    /// A whole login as the session does it (a users.toml lookup never waits).
    fn authenticate(store: &UserStore, name: &str, pw: &Password) -> Option<Account> {
        let found = store.find(name).now_or_never().unwrap().unwrap();
        store.verify(found, pw)
    }

    fn entry(pw: &str, home: &str) -> UserEntry {
        UserEntry::new(cheap_hash(pw), PathBuf::from(home), false)
    }

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        let mut db = UserDb::default();
        db.insert("alice", entry("a", "home/alice")).unwrap();
        let mut bob = entry("b", "/srv/bob");
        bob.read_only = true;
        db.insert("bob", bob).unwrap();
        db.save(&path).unwrap();

        let loaded = UserDb::load(&path).unwrap();
        assert_eq!(loaded.len(), 2);
        let alice = loaded.get("alice").unwrap();
        assert_eq!(alice.home, Path::new("home/alice"));
        assert!(!alice.read_only);
        assert!(verify_password(&alice.password, &pw("a")));
        let bob = loaded.get("bob").unwrap();
        assert_eq!(bob.home, Path::new("/srv/bob"));
        assert!(bob.read_only);
    }

    #[test]
    fn missing_file_is_an_empty_db() {
        let dir = TempDir::new().unwrap();
        assert!(UserDb::load(&users_file(dir.path())).unwrap().is_empty());
    }

    #[test]
    fn file_format_is_a_users_table_with_defaults_and_unknown_keys_kept() {
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        let hash = cheap_hash("x");
        let text = format!(
            "[users.carol]\npassword = \"{hash}\"\nhome = \"home/carol\"\nquota_bytes = 1000\n"
        );
        fs::write(&path, text).unwrap();

        let db = UserDb::load(&path).unwrap();
        assert!(
            !db.get("carol").unwrap().read_only,
            "read_only defaults to false"
        );
        db.save(&path).unwrap();
        let saved = fs::read_to_string(&path).unwrap();
        assert!(saved.contains("[users.carol]"), "{saved}");
        assert!(saved.contains("quota_bytes = 1000"), "{saved}");
    }

    #[test]
    fn invalid_name_in_file_is_rejected_on_load() {
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        fs::write(&path, "[users.\"-x\"]\npassword = \"p\"\nhome = \"h\"\n").unwrap();
        let err = UserDb::load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                UserError::InvalidNameInFile {
                    reason: NameError::LeadingPunctuation,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_file_is_a_parse_error() {
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        fs::write(&path, "[users.alice\n").unwrap();
        assert!(matches!(UserDb::load(&path), Err(UserError::Parse { .. })));
    }

    #[test]
    fn atomic_save_leaves_only_users_toml_behind() {
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        let mut db = UserDb::default();
        db.insert("alice", entry("a", "home/alice")).unwrap();
        db.save(&path).unwrap();
        db.insert("bob", entry("b", "home/bob")).unwrap();
        db.save(&path).unwrap();

        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [USERS_FILE]);
    }

    #[cfg(unix)]
    #[test]
    fn saved_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        let path = users_file(dir.path());
        UserDb::default().save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        let hash = cheap_hash("right");
        assert!(verify_password(&hash, &pw("right")));
        assert!(!verify_password(&hash, &pw("wrong")));
        assert!(!verify_password(&hash, &pw("")));
    }

    #[test]
    fn verification_on_reused_memory_agrees_with_the_argon2_crate() {
        use argon2::password_hash::{CustomizedPasswordHasher, PasswordVerifier};
        let salt = b"saltsaltsaltsalt";
        let mut phcs = Vec::new();
        for (algorithm, version, m, t, p, len) in [
            (Algorithm::Argon2id, Version::V0x13, 8, 1, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 64, 2, 2, 16),
            (Algorithm::Argon2i, Version::V0x13, 32, 3, 1, 32),
            (Algorithm::Argon2d, Version::V0x10, 16, 1, 1, 64),
            (Algorithm::Argon2id, Version::V0x13, 8, 1, 1, 32),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let hash = Argon2::default()
                .hash_password_customized(
                    b"right",
                    salt,
                    Some(algorithm.as_str()),
                    Some(version.into()),
                    params,
                )
                .unwrap();
            phcs.push(hash.to_string());
        }
        // Memory sized for a larger hash first, then smaller ones: the reused blocks must
        // not leak state between checks.
        phcs.rotate_left(1);
        for phc in &phcs {
            let parsed = PasswordHash::new(phc).unwrap();
            for (attempt, expected) in [("right", true), ("wrong", false), ("", false)] {
                let reference = Argon2::default()
                    .verify_password(attempt.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(reference, expected, "{phc} {attempt}");
                assert_eq!(
                    verify_parsed(&parsed, &pw(attempt)),
                    expected,
                    "{phc} {attempt}"
                );
            }
        }
    }

    #[test]
    fn verify_of_a_malformed_hash_is_false() {
        for phc in [
            "",
            "plain",
            "$argon2id$",
            "$argon2id$v=19$m=8,t=1,p=1$!!$!!",
        ] {
            assert!(!verify_password(phc, &pw("x")), "{phc:?}");
        }
    }

    #[test]
    fn default_hash_is_argon2id_with_default_params() {
        let hash = hash_password(&pw("secret")).unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = Params::try_from(&parsed).unwrap();
        let default = Params::default();
        let costs = |p: &Params| (p.m_cost(), p.t_cost(), p.p_cost());
        assert_eq!(costs(&params), costs(&default));
        assert!(verify_password(&hash, &pw("secret")));
    }

    #[test]
    fn hashes_of_one_password_differ_by_salt() {
        assert_ne!(cheap_hash("same"), cheap_hash("same"));
    }

    #[test]
    fn password_debug_and_display_redact() {
        let secret = pw("hunter2");
        assert_eq!(format!("{secret:?}"), "********");
        assert_eq!(format!("{secret}"), "********");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn user_entry_debug_leaves_out_the_hash() {
        let e = entry("a", "home/a");
        assert!(!format!("{e:?}").contains("argon2"));
    }

    #[test]
    fn random_passwords_use_the_unambiguous_alphabet() {
        let a = random_password();
        assert_eq!(a.expose().len(), GENERATED_PASSWORD_LEN);
        assert!(a.expose().bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
        assert_ne!(a.expose(), random_password().expose());
    }

    #[test]
    fn name_validation() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("alice", Ok(())),
            ("a", Ok(())),
            ("A.b_c-9", Ok(())),
            ("9lives", Ok(())),
            ("_x", Ok(())),
            (&long, Ok(())),
            ("", Err(NameError::Length)),
            (&too_long, Err(NameError::Length)),
            (".hidden", Err(NameError::LeadingPunctuation)),
            ("-rf", Err(NameError::LeadingPunctuation)),
            ("a b", Err(NameError::Charset)),
            ("a/b", Err(NameError::Charset)),
            ("..", Err(NameError::LeadingPunctuation)),
            ("é", Err(NameError::Charset)),
            ("a\0", Err(NameError::Charset)),
            ("a\n", Err(NameError::Charset)),
        ];
        for (name, expected) in cases {
            assert_eq!(validate_name(name), *expected, "{name:?}");
        }
    }

    #[test]
    fn insert_rejects_invalid_and_duplicate_names() {
        let mut db = UserDb::default();
        assert!(matches!(
            db.insert("a/b", entry("x", "h")),
            Err(UserError::InvalidName { .. })
        ));
        db.insert("alice", entry("x", "h")).unwrap();
        assert!(matches!(
            db.insert("alice", entry("y", "h")),
            Err(UserError::UserExists(_))
        ));
    }

    #[test]
    fn add_user_creates_home_and_delete_keeps_it() {
        let dir = TempDir::new().unwrap();
        let home = add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        assert_eq!(home, dir.path().join("home/alice"));
        assert!(home.is_dir());
        delete_user(dir.path(), "alice").unwrap();
        assert!(home.is_dir());
        assert!(UserDb::load(&users_file(dir.path())).unwrap().is_empty());
        assert!(matches!(
            delete_user(dir.path(), "alice"),
            Err(UserError::UnknownUser(_))
        ));
    }

    #[test]
    fn ensure_admin_creates_admin_once() {
        let dir = TempDir::new().unwrap();
        let ensure = || {
            let directory = TomlUsers::new(dir.path()).unwrap();
            ensure_admin(&directory, dir.path()).now_or_never().unwrap()
        };
        let password = ensure().unwrap().unwrap();
        assert!(dir.path().join("home/admin").is_dir());
        let store = UserStore::open(dir.path()).unwrap();
        let account = authenticate(&store, "admin", &password).unwrap();
        assert_eq!(account.home, dir.path().join("home/admin"));
        assert!(ensure().unwrap().is_none());
    }

    #[test]
    fn authenticate_returns_the_account_with_an_absolute_home() {
        let dir = TempDir::new().unwrap();
        add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        let mut bob = entry("b", "/srv/bob");
        bob.read_only = true;
        let mut db = UserDb::load(&users_file(dir.path())).unwrap();
        db.insert("bob", bob).unwrap();
        db.save(&users_file(dir.path())).unwrap();

        let store = UserStore::open(dir.path()).unwrap();
        let alice = authenticate(&store, "alice", &pw("a")).unwrap();
        assert_eq!(
            alice,
            Account {
                name: "alice".into(),
                home: dir.path().join("home/alice"),
                read_only: false,
                limits: Limits::default(),
                require_tls: false,
            }
        );
        assert!(alice.home.is_absolute());
        let bob = authenticate(&store, "bob", &pw("b")).unwrap();
        assert_eq!(bob.home, Path::new("/srv/bob"));
        assert!(bob.read_only);
    }

    #[test]
    fn authenticate_rejects_wrong_password_and_unknown_user() {
        let dir = TempDir::new().unwrap();
        add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert_eq!(authenticate(&store, "alice", &pw("b")), None);
        assert_eq!(authenticate(&store, "mallory", &pw("a")), None);
        assert_eq!(authenticate(&store, "", &pw("")), None);
    }

    #[test]
    fn unknown_users_are_checked_against_a_hash_with_the_accounts_costs() {
        let costs = |phc: &str| {
            let params = Params::try_from(&PasswordHash::new(phc).unwrap()).unwrap();
            (params.m_cost(), params.t_cost(), params.p_cost())
        };
        let dir = TempDir::new().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        let default = Params::default();
        let defaults = (default.m_cost(), default.t_cost(), default.p_cost());
        assert_eq!(costs(&store.dummy_hash()), defaults);

        add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        add_user(dir.path(), "bob", entry("b", "home/bob")).unwrap();
        let odd = hash_password_with_params(&pw("c"), 16, 2, 1).unwrap();
        add_user(
            dir.path(),
            "carol",
            UserEntry::new(odd, "home/c".into(), false),
        )
        .unwrap();
        store.reload().unwrap();
        assert_eq!(costs(&store.dummy_hash()), (8, 1, 1));
    }

    #[test]
    fn authenticate_of_a_malformed_hash_is_a_failed_login() {
        let dir = TempDir::new().unwrap();
        let broken = UserEntry::new("not a hash".into(), "home/x".into(), false);
        add_user(dir.path(), "x", broken).unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert_eq!(authenticate(&store, "x", &pw("not a hash")), None);
    }

    #[test]
    fn authenticate_picks_up_edits_made_after_open() {
        let dir = TempDir::new().unwrap();
        add_user(dir.path(), "alice", entry("old", "home/alice")).unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert!(authenticate(&store, "alice", &pw("old")).is_some());

        set_password(dir.path(), "alice", cheap_hash("new")).unwrap();
        add_user(dir.path(), "bob", entry("b", "home/bob")).unwrap();

        assert!(authenticate(&store, "alice", &pw("old")).is_none());
        assert!(authenticate(&store, "alice", &pw("new")).is_some());
        assert!(authenticate(&store, "bob", &pw("b")).is_some());
    }

    #[test]
    fn a_broken_edit_keeps_the_loaded_accounts() {
        let dir = TempDir::new().unwrap();
        add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        fs::write(users_file(dir.path()), "not toml [").unwrap();
        assert!(authenticate(&store, "alice", &pw("a")).is_some());
        assert!(store.reload().is_err());
        assert!(authenticate(&store, "alice", &pw("a")).is_some());
    }

    #[test]
    fn reload_sees_a_deleted_user() {
        let dir = TempDir::new().unwrap();
        add_user(dir.path(), "alice", entry("a", "home/alice")).unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        delete_user(dir.path(), "alice").unwrap();
        store.reload().unwrap();
        assert!(authenticate(&store, "alice", &pw("a")).is_none());
    }
}
