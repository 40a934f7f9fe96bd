//! What `confsync doctor` asks of a store, without leaving anything behind: the migrations
//! applied (read before the store is opened, so a store migrated by a newer binary is reported
//! untouched), whether a write goes through, whether another process holds an SQLite store's
//! single-process claim, and the store's id (for telling whether the service at `public_url`
//! runs on this store).

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::Store;
use crate::db::{on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// The migrations of a store compared with those this binary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied (successfully), in order.
    pub applied: Vec<i64>,
    /// Versions recorded as failed (a migration that stopped half way).
    pub failed: Vec<i64>,
    /// Versions this binary knows, in order.
    pub known: Vec<i64>,
}

impl MigrationReport {
    /// Known versions not applied yet: opening the store applies them.
    pub fn pending(&self) -> Vec<i64> {
        self.known
            .iter()
            .filter(|v| !self.applied.contains(v))
            .copied()
            .collect()
    }

    /// Applied versions this binary does not know: a newer confsync migrated the store, and
    /// this one refuses to open it.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied
            .iter()
            .chain(&self.failed)
            .filter(|v| !self.known.contains(v))
            .copied()
            .collect()
    }
}

/// The migrations of the store at `location` (what [`Store::open`] takes), read on a connection
/// of its own without creating or changing anything. None: an SQLite file that does not exist
/// yet (opening it creates it).
pub async fn inspect_migrations(location: &str) -> Result<Option<MigrationReport>, StoreError> {
    let open_error = |source| StoreError::Open {
        location: crate::store::redact(location),
        source,
    };
    let rows: Vec<(i64, bool)> = if location.starts_with("postgres://")
        || location.starts_with("postgresql://")
    {
        let options = PgConnectOptions::from_str(location).map_err(open_error)?;
        let mut connection = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(open_error)?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut connection)
            .await
            .map_err(open_error)?;
        let rows = if exists {
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut connection)
                .await
                .map_err(open_error)?
        } else {
            Vec::new()
        };
        let _ = connection.close().await;
        rows
    } else {
        let Some(path) = sqlite_file(location) else {
            // An in-memory store is new at every open.
            return Ok(None);
        };
        if !std::path::Path::new(&path).exists() {
            return Ok(None);
        }
        let options = if location.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(location).map_err(open_error)?
        } else {
            SqliteConnectOptions::new().filename(&path)
        }
        .create_if_missing(false);
        crate::sqlite_memory::configure();
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(open_error)?;
        let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
            )
            .fetch_one(&mut connection)
            .await
            .map_err(open_error)?;
        let rows = if exists {
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut connection)
                .await
                .map_err(open_error)?
        } else {
            Vec::new()
        };
        let _ = connection.close().await;
        rows
    };
    let known = if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        crate::store::postgres_migrator()
    } else {
        crate::store::sqlite_migrator()
    };
    Ok(Some(MigrationReport {
        applied: rows.iter().filter(|(_, ok)| *ok).map(|(v, _)| *v).collect(),
        failed: rows
            .iter()
            .filter(|(_, ok)| !*ok)
            .map(|(v, _)| *v)
            .collect(),
        known: known.iter().map(|m| m.version).collect(),
    }))
}

/// The file of an SQLite location (a path or a `sqlite:` URL); None for in-memory ones.
fn sqlite_file(location: &str) -> Option<String> {
    if location.contains(":memory:") || location.contains("mode=memory") {
        return None;
    }
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"))
        .unwrap_or(location);
    Some(path.split('?').next().unwrap_or(path).to_owned())
}

impl Store {
    /// A write that leaves nothing behind: in one write transaction a row is added to
    /// `write_probe` (id 0; readiness uses 1) and removed again, then committed, so the write
    /// lock is taken and the database's file (SQLite's WAL) is written as by any write.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let what = || "a test write (added and removed in one transaction)".to_owned();
        let mut tx = self.write_tx(what).await?;
        let now = self.clock_ms();
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO write_probe (id, probed_at) VALUES (0, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM write_probe WHERE id = 0")
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// SQLite file stores: whether another process holds the single-process claim
    /// ([`Store::claim_single_process`]: a `confsync serve` or `confsync sync` runs on the
    /// store). Looked at with a non-blocking lock on `<db>.lock`, released at once; a missing
    /// lock file means no process ever claimed the store (it is not created). None for
    /// Postgres and in-memory stores, which have no such claim.
    pub fn claimed_by_another_process(&self) -> Result<Option<bool>, StoreError> {
        if self.backend() != "sqlite" {
            return Ok(None);
        }
        let Some(path) = sqlite_file(self.location()) else {
            return Ok(None);
        };
        let lock_path = format!("{path}.lock");
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(false)),
            Err(e) => {
                return Err(StoreError::Locked {
                    location: self.location().to_owned(),
                    detail: format!("cannot open the lock file {lock_path}: {e}"),
                });
            }
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(Some(false))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(Some(true)),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Locked {
                location: self.location().to_owned(),
                detail: format!("cannot lock {lock_path}: {e}"),
            }),
        }
    }

    /// The store's id: random, written once and the same for every process on the store. When
    /// the store has none yet, `fresh` (the caller's random value) becomes it; concurrent
    /// first calls agree on one.
    pub async fn store_id(&self, fresh: &str) -> Result<String, StoreError> {
        let what = || "reading the store's id".to_owned();
        let read = || async {
            on_read!(self, c => sqlx::query_scalar::<_, String>(
                "SELECT value FROM store_meta WHERE name = 'store_id'",
            )
            .fetch_optional(c)
            .await)
            .ctx(what)
        };
        if let Some(id) = read().await? {
            return Ok(id);
        }
        on_write!(self, c => sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ('store_id', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(fresh)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| "recording the store's id".to_owned())?;
        read().await?.ok_or_else(|| StoreError::Database {
            what: "reading the store's id just recorded".to_owned(),
            source: sqlx::Error::RowNotFound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_file_store_reports_every_migration_and_an_id_kept_once() {
        let dir = std::env::temp_dir().join(format!(
            "confsync-store-doctor-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db").to_string_lossy().into_owned();
        assert_eq!(inspect_migrations(&path).await.unwrap(), None);
        let store = Store::open(&path).await.unwrap();
        let report = inspect_migrations(&path).await.unwrap().unwrap();
        assert!(report.pending().is_empty() && report.unknown().is_empty());
        assert_eq!(report.applied, report.known);
        store.probe_write().await.unwrap();
        assert_eq!(store.claimed_by_another_process().unwrap(), Some(false));
        let id = store.store_id("first").await.unwrap();
        assert_eq!(id, "first");
        assert_eq!(store.store_id("second").await.unwrap(), "first");
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
