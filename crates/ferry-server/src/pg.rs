//! Accounts and quota usage in PostgreSQL, for several ferry nodes serving the same users.
//!
//! One table, `ferry_users` (migrations/), holds what users.toml holds plus the usage that
//! DATA/quota/<user>.toml holds on a single node. Quota is charged with one conditional
//! `UPDATE ... WHERE used + n <= limit`: PostgreSQL locks the row and re-checks the condition
//! against the latest version, so uploads on two nodes can never jointly pass the limit.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row, migrate::Migrator};

use crate::quota::{Limits, QuotaExceeded, Usage, UsageLedger};
use crate::users::{EntryChange, UserDirectory, UserEntry, UserError};

/// The schema, embedded in the binary and applied at connect.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connections one process keeps; a login or a quota charge holds one for one statement.
const MAX_CONNECTIONS: u32 = 16;

/// How long a login or a quota charge waits for a connection before it fails (421 / 451):
/// a database that is down must not hold sessions for sqlx's default 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns an account is read from.
const ACCOUNT_COLUMNS: &str = "password, home, read_only, require_tls, quota_bytes, quota_files";

/// A PostgreSQL database holding accounts and quota usage.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Shared by sessions; sqlx reconnects broken connections.
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (postgres://user:password@host:port/db) and brings the schema up to
    /// date.
    pub async fn connect(url: &str) -> Result<Self, UserError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(database)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| UserError::Database(Box::new(err)))?;
        Ok(PgStore { pool })
    }
}

fn database(err: sqlx::Error) -> UserError {
    UserError::Database(Box::new(err))
}

/// A u64 setting as a bigint; values past i64::MAX cannot be stored.
fn to_db(value: u64) -> Result<i64, UserError> {
    i64::try_from(value).map_err(|_| UserError::Database(format!("{value} is too large").into()))
}

fn to_db_opt(value: Option<u64>) -> Result<Option<i64>, UserError> {
    value.map(to_db).transpose()
}

/// A bigint column as u64 (the schema's CHECKs keep them non-negative).
fn from_db(row: &PgRow, column: &str) -> Result<Option<u64>, UserError> {
    let value: Option<i64> = row.try_get(column).map_err(database)?;
    Ok(value.map(|v| u64::try_from(v).unwrap_or(0)))
}

fn entry_from(row: &PgRow) -> Result<UserEntry, UserError> {
    let home: String = row.try_get("home").map_err(database)?;
    let mut entry = UserEntry::new(
        row.try_get("password").map_err(database)?,
        PathBuf::from(home),
        row.try_get("read_only").map_err(database)?,
    );
    entry.require_tls = row.try_get("require_tls").map_err(database)?;
    entry.quota_bytes = from_db(row, "quota_bytes")?;
    entry.quota_files = from_db(row, "quota_files")?;
    Ok(entry)
}

fn usage_from(row: &PgRow) -> Result<Option<Usage>, UserError> {
    Ok(
        match (from_db(row, "used_bytes")?, from_db(row, "used_files")?) {
            (Some(bytes), Some(files)) => Some(Usage { bytes, files }),
            _ => None,
        },
    )
}

/// Binds $1 to $7 of a statement writing an account: name, then the columns in schema order.
fn bind_account<'q>(
    query: Query<'q, Postgres, PgArguments>,
    name: &'q str,
    entry: &'q UserEntry,
) -> Result<Query<'q, Postgres, PgArguments>, UserError> {
    Ok(query
        .bind(name)
        .bind(&entry.password)
        .bind(home_text(entry)?)
        .bind(entry.read_only)
        .bind(entry.require_tls)
        .bind(to_db_opt(entry.quota_bytes)?)
        .bind(to_db_opt(entry.quota_files)?))
}

fn home_text(entry: &UserEntry) -> Result<&str, UserError> {
    entry
        .home
        .to_str()
        .ok_or_else(|| UserError::Database("the home path is not UTF-8".into()))
}

#[async_trait]
impl UserDirectory for PgStore {
    async fn is_empty(&self) -> Result<bool, UserError> {
        let row = sqlx::query("SELECT NOT EXISTS (SELECT 1 FROM ferry_users)")
            .fetch_one(&self.pool)
            .await
            .map_err(database)?;
        row.try_get(0).map_err(database)
    }

    async fn get(&self, name: &str) -> Result<Option<UserEntry>, UserError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM ferry_users WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        row.as_ref().map(entry_from).transpose()
    }

    async fn list(&self) -> Result<Vec<(String, UserEntry)>, UserError> {
        let sql = format!("SELECT name, {ACCOUNT_COLUMNS} FROM ferry_users ORDER BY name");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.iter()
            .map(|row| Ok((row.try_get("name").map_err(database)?, entry_from(row)?)))
            .collect()
    }

    async fn add(&self, name: &str, entry: UserEntry) -> Result<(), UserError> {
        let insert = "INSERT INTO ferry_users (name, password, home, read_only, require_tls, \
                      quota_bytes, quota_files) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (name) DO NOTHING";
        let inserted = bind_account(sqlx::query(insert), name, &entry)?
            .execute(&self.pool)
            .await
            .map_err(database)?;
        if inserted.rows_affected() == 0 {
            return Err(UserError::UserExists(name.to_owned()));
        }
        Ok(())
    }

    async fn update(&self, name: &str, change: &EntryChange<'_>) -> Result<UserEntry, UserError> {
        // Read, change and write under the row's lock, so two admins changing one account
        // at once both take effect.
        let mut tx = self.pool.begin().await.map_err(database)?;
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM ferry_users WHERE name = $1 FOR UPDATE");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database)?
            .ok_or_else(|| UserError::UnknownUser(name.to_owned()))?;
        let mut entry = entry_from(&row)?;
        change(&mut entry);
        let update = "UPDATE ferry_users SET password = $2, home = $3, read_only = $4, \
                      require_tls = $5, quota_bytes = $6, quota_files = $7, updated_at = now() \
                      WHERE name = $1";
        bind_account(sqlx::query(update), name, &entry)?
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        Ok(entry)
    }

    async fn remove(&self, name: &str) -> Result<UserEntry, UserError> {
        let sql = format!("DELETE FROM ferry_users WHERE name = $1 RETURNING {ACCOUNT_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?
            .ok_or_else(|| UserError::UnknownUser(name.to_owned()))?;
        entry_from(&row)
    }

    async fn usage(&self, name: &str) -> Result<Option<Usage>, UserError> {
        let row = sqlx::query("SELECT used_bytes, used_files FROM ferry_users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?
            .ok_or_else(|| UserError::UnknownUser(name.to_owned()))?;
        usage_from(&row)
    }

    async fn set_usage(&self, name: &str, usage: Usage) -> Result<(), UserError> {
        let updated = sqlx::query(
            "UPDATE ferry_users SET used_bytes = $2, used_files = $3, updated_at = now() \
             WHERE name = $1",
        )
        .bind(name)
        .bind(to_db(usage.bytes)?)
        .bind(to_db(usage.files)?)
        .execute(&self.pool)
        .await
        .map_err(database)?;
        if updated.rows_affected() == 0 {
            return Err(UserError::UnknownUser(name.to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for PgStore {
    async fn usage(&self, user: &str) -> Result<Option<Usage>, UserError> {
        UserDirectory::usage(self, user).await
    }

    async fn init_usage(&self, user: &str, scanned: Usage) -> Result<Usage, UserError> {
        // Another node may have measured first; its figure (and what it charged since) wins.
        let row = sqlx::query(
            "UPDATE ferry_users SET used_bytes = COALESCE(used_bytes, $2), \
             used_files = COALESCE(used_files, $3) WHERE name = $1 \
             RETURNING used_bytes, used_files",
        )
        .bind(user)
        .bind(to_db(scanned.bytes)?)
        .bind(to_db(scanned.files)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?
        .ok_or_else(|| UserError::UnknownUser(user.to_owned()))?;
        Ok(usage_from(&row)?.unwrap_or(scanned))
    }

    async fn charge(
        &self,
        user: &str,
        bytes: u64,
        files: u64,
    ) -> Result<Result<Usage, QuotaExceeded>, UserError> {
        let charged = sqlx::query(
            "UPDATE ferry_users SET used_bytes = used_bytes + $2, used_files = used_files + $3 \
             WHERE name = $1 AND used_bytes IS NOT NULL AND used_files IS NOT NULL \
             AND ($2 = 0 OR quota_bytes IS NULL OR used_bytes + $2 <= quota_bytes) \
             AND ($3 = 0 OR quota_files IS NULL OR used_files + $3 <= quota_files) \
             RETURNING used_bytes, used_files",
        )
        .bind(user)
        .bind(to_db(bytes)?)
        .bind(to_db(files)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        if let Some(row) = charged {
            return Ok(Ok(usage_from(&row)?.unwrap_or_default()));
        }
        // Refused: say what is left, as a single node does.
        let row = sqlx::query(
            "SELECT used_bytes, used_files, quota_bytes, quota_files FROM ferry_users \
             WHERE name = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?
        .ok_or_else(|| UserError::UnknownUser(user.to_owned()))?;
        let used = usage_from(&row)?.unwrap_or_default();
        let limits = Limits {
            bytes: from_db(&row, "quota_bytes")?,
            files: from_db(&row, "quota_files")?,
        };
        Ok(Err(match (limits.bytes, limits.files) {
            (Some(limit), _) if bytes > 0 && used.bytes.saturating_add(bytes) > limit => {
                QuotaExceeded::Bytes {
                    left: limit.saturating_sub(used.bytes),
                    limit,
                }
            }
            (_, Some(limit)) => QuotaExceeded::Files { limit },
            // The limit was raised between the two statements: refuse this once.
            (Some(limit), None) => QuotaExceeded::Bytes {
                left: limit.saturating_sub(used.bytes),
                limit,
            },
            (None, None) => QuotaExceeded::Bytes { left: 0, limit: 0 },
        }))
    }

    async fn adjust(&self, user: &str, bytes: i64, files: i64) -> Result<Usage, UserError> {
        let row = sqlx::query(
            "UPDATE ferry_users SET used_bytes = GREATEST(used_bytes + $2, 0), \
             used_files = GREATEST(used_files + $3, 0) WHERE name = $1 \
             RETURNING used_bytes, used_files",
        )
        .bind(user)
        .bind(bytes)
        .bind(files)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?
        .ok_or_else(|| UserError::UnknownUser(user.to_owned()))?;
        Ok(usage_from(&row)?.unwrap_or_default())
    }

    async fn set_usage(&self, user: &str, usage: Usage) -> Result<(), UserError> {
        UserDirectory::set_usage(self, user, usage).await
    }
}
