//! The repeated-login fast path: a login whose name, password and stored hash were verified
//! with argon2id a short while ago is accepted without verifying again.
//!
//! Clients that open a connection per transfer (curl, scripts, a mirror's parallel workers)
//! would otherwise pay a full argon2id (tens of MiB, tens of ms of a core) on every one. What is
//! kept is an HMAC-SHA256 of the name, the stored hash and the password under a key drawn at
//! start and never written anywhere, with its expiry time: never the password. Only
//! successes are cached, so wrong passwords and unknown names always cost a full
//! verification, and a password change (a new hash in users.toml) makes old entries miss.
//! Someone who could read the server's memory could test guesses against a tag with one HMAC
//! each instead of one argon2id, which is why entries expire after minutes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_proto::Password;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Most verified logins remembered; when full, expired entries are dropped, and if none has
/// expired nothing new is added (those logins take the slow path).
const MAX_ENTRIES: usize = 65_536;

/// Recently verified logins: keyed hash -> when the entry expires.
#[derive(Debug)]
pub struct VerifiedLogins {
    /// The HMAC key, random per process.
    key: [u8; 32],
    /// How long a verification counts; zero disables the cache.
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl VerifiedLogins {
    /// An empty cache whose entries last `ttl` (zero: nothing is ever cached).
    pub fn new(ttl: Duration) -> Self {
        VerifiedLogins {
            key: rand::random(),
            ttl,
            entries: Mutex::default(),
        }
    }

    /// True when `name` logged in with `password` against the stored hash `phc` within the
    /// last `ttl`.
    pub fn contains(&self, name: &str, phc: &str, password: &Password) -> bool {
        self.contains_at(name, phc, password, Instant::now())
    }

    /// Records a successful argon2id verification.
    pub fn insert(&self, name: &str, phc: &str, password: &Password) {
        self.insert_at(name, phc, password, Instant::now());
    }

    fn contains_at(&self, name: &str, phc: &str, password: &Password, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let tag = self.tag(name, phc, password);
        let mut entries = self.lock();
        match entries.get(&tag) {
            Some(&expires) if expires > now => true,
            Some(_) => {
                entries.remove(&tag);
                false
            }
            None => false,
        }
    }

    fn insert_at(&self, name: &str, phc: &str, password: &Password, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let tag = self.tag(name, phc, password);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, expires| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(tag, now + self.ttl);
    }

    /// Entries currently held (expired ones included until they are looked up or pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// HMAC-SHA256 of the three fields, each prefixed by its length so that no two
    /// different triples give the same input.
    fn tag(&self, name: &str, phc: &str, password: &Password) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length");
        };
        for field in [name, phc, password.expose()] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    #[test]
    fn only_the_exact_name_hash_and_password_hit() {
        let cache = VerifiedLogins::new(Duration::from_secs(60));
        cache.insert("alice", "$argon2id$one", &pw("secret"));
        assert!(cache.contains("alice", "$argon2id$one", &pw("secret")));
        assert!(!cache.contains("alice", "$argon2id$one", &pw("Secret")));
        assert!(!cache.contains("alice", "$argon2id$two", &pw("secret")));
        assert!(!cache.contains("bob", "$argon2id$one", &pw("secret")));
        // Length prefixes: moving bytes between fields is a different login.
        cache.insert("ab", "c", &pw("d"));
        assert!(!cache.contains("a", "bc", &pw("d")));
    }

    #[test]
    fn entries_expire_and_zero_ttl_caches_nothing() {
        let ttl = Duration::from_secs(600);
        let cache = VerifiedLogins::new(ttl);
        let start = Instant::now();
        cache.insert_at("alice", "h", &pw("p"), start);
        let almost = start + ttl - Duration::from_millis(1);
        assert!(cache.contains_at("alice", "h", &pw("p"), almost));
        assert!(!cache.contains_at("alice", "h", &pw("p"), start + ttl));
        assert!(
            cache.is_empty(),
            "an expired entry is dropped when looked up"
        );

        let off = VerifiedLogins::new(Duration::ZERO);
        off.insert("alice", "h", &pw("p"));
        assert!(!off.contains("alice", "h", &pw("p")));
        assert!(off.is_empty());
    }

    #[test]
    fn the_key_is_per_process_instance() {
        let a = VerifiedLogins::new(Duration::from_secs(60));
        let b = VerifiedLogins::new(Duration::from_secs(60));
        assert_ne!(
            a.tag("alice", "h", &pw("p")),
            b.tag("alice", "h", &pw("p")),
            "tags must not be computable without the random key"
        );
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let ttl = Duration::from_secs(600);
        let cache = VerifiedLogins::new(ttl);
        let start = Instant::now();
        for i in 0..MAX_ENTRIES {
            cache.insert_at(&i.to_string(), "h", &pw("p"), start);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // Full of live entries: a new one is not added (it takes the slow path).
        let soon = start + Duration::from_secs(1);
        cache.insert_at("early", "h", &pw("p"), soon);
        assert!(!cache.contains_at("early", "h", &pw("p"), soon));
        assert_eq!(cache.len(), MAX_ENTRIES);
        // Once they have expired, a new entry makes room by dropping them.
        let later = start + ttl;
        cache.insert_at("new", "h", &pw("p"), later);
        assert_eq!(cache.len(), 1);
        assert!(cache.contains_at("new", "h", &pw("p"), later));
    }
}
