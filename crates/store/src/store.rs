//! Opening the database: connection settings, pools, migrations, the clock.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::conns::Conns;

use crate::db::{Db, Tx, on_write};
use crate::error::{Context, StoreError};

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections of a file-backed store (writes go through one connection).
const READERS: u32 = 4;

/// The schema, embedded at compile time. `sqlx::migrate!` needs sqlx's `macros` feature, which
/// the workspace does not enable, so the list is spelled out here; sqlx's migrator still does the
/// bookkeeping (`_sqlx_migrations`, checksums). Add new files at the end, never edit old ones.
pub(crate) fn sqlite_migrator() -> Migrator {
    let migrations = [
        (
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        (
            2,
            "api keys",
            include_str!("../migrations/sqlite/0002_api_keys.sql"),
        ),
        (
            3,
            "channels",
            include_str!("../migrations/sqlite/0003_channels.sql"),
        ),
        (
            4,
            "google users",
            include_str!("../migrations/sqlite/0004_google_users.sql"),
        ),
        (
            5,
            "channel messages",
            include_str!("../migrations/sqlite/0005_channel_messages.sql"),
        ),
        (
            6,
            "guarantees",
            include_str!("../migrations/sqlite/0006_guarantees.sql"),
        ),
        (
            7,
            "leases",
            include_str!("../migrations/sqlite/0007_leases.sql"),
        ),
        (
            8,
            "planned keys",
            include_str!("../migrations/sqlite/0008_planned_keys.sql"),
        ),
        (
            9,
            "lease keys",
            include_str!("../migrations/sqlite/0009_lease_keys.sql"),
        ),
        (
            10,
            "link ends",
            include_str!("../migrations/sqlite/0010_link_ends.sql"),
        ),
        (
            11,
            "api key scopes",
            include_str!("../migrations/sqlite/0011_api_key_scopes.sql"),
        ),
        (
            12,
            "store meta",
            include_str!("../migrations/sqlite/0012_store_meta.sql"),
        ),
        (
            13,
            "channel silence",
            include_str!("../migrations/sqlite/0013_channel_silence.sql"),
        ),
        (
            14,
            "intent provider",
            include_str!("../migrations/sqlite/0014_intent_provider.sql"),
        ),
        (
            15,
            "status indexes",
            include_str!("../migrations/sqlite/0015_status_indexes.sql"),
        ),
        (
            16,
            "outbox write cost",
            include_str!("../migrations/sqlite/0016_outbox_write_cost.sql"),
        ),
        (
            17,
            "write guard",
            include_str!("../migrations/sqlite/0017_write_guard.sql"),
        ),
        (
            18,
            "recreate target",
            include_str!("../migrations/sqlite/0018_recreate_target.sql"),
        ),
        (
            19,
            "index write cost",
            include_str!("../migrations/sqlite/0019_index_write_cost.sql"),
        ),
        (
            20,
            "outbox actions",
            include_str!("../migrations/sqlite/0020_outbox_actions.sql"),
        ),
        (
            21,
            "link ends unindexed",
            include_str!("../migrations/sqlite/0021_link_ends_unindexed.sql"),
        ),
        (
            22,
            "action spec from link",
            include_str!("../migrations/sqlite/0022_action_spec_from_link.sql"),
        ),
        (
            23,
            "keys from row ids",
            include_str!("../migrations/sqlite/0023_keys_from_row_ids.sql"),
        ),
    ];
    migrator_of(&migrations)
}

/// Postgres's own migrations (its first one builds what SQLite's 0001-0006 build).
pub(crate) fn postgres_migrator() -> Migrator {
    let migrations = [
        (
            1,
            "init",
            include_str!("../migrations/postgres/0001_init.sql"),
        ),
        (
            2,
            "leases",
            include_str!("../migrations/postgres/0002_leases.sql"),
        ),
        (
            3,
            "planned keys",
            include_str!("../migrations/postgres/0003_planned_keys.sql"),
        ),
        (
            4,
            "lease keys",
            include_str!("../migrations/postgres/0004_lease_keys.sql"),
        ),
        (
            5,
            "link ends",
            include_str!("../migrations/postgres/0005_link_ends.sql"),
        ),
        (
            6,
            "api key scopes",
            include_str!("../migrations/postgres/0006_api_key_scopes.sql"),
        ),
        (
            7,
            "store meta",
            include_str!("../migrations/postgres/0007_store_meta.sql"),
        ),
        (
            8,
            "channel silence",
            include_str!("../migrations/postgres/0008_channel_silence.sql"),
        ),
        (
            9,
            "intent provider",
            include_str!("../migrations/postgres/0009_intent_provider.sql"),
        ),
        (
            10,
            "status indexes",
            include_str!("../migrations/postgres/0010_status_indexes.sql"),
        ),
        (
            11,
            "outbox write cost",
            include_str!("../migrations/postgres/0011_outbox_write_cost.sql"),
        ),
        (
            12,
            "recreate target",
            include_str!("../migrations/postgres/0012_recreate_target.sql"),
        ),
        (
            13,
            "outbox actions",
            include_str!("../migrations/postgres/0013_outbox_actions.sql"),
        ),
        (
            14,
            "link ends unindexed",
            include_str!("../migrations/postgres/0014_link_ends_unindexed.sql"),
        ),
        (
            15,
            "action spec from link",
            include_str!("../migrations/postgres/0015_action_spec_from_link.sql"),
        ),
        (
            16,
            "keys from row ids",
            include_str!("../migrations/postgres/0016_keys_from_row_ids.sql"),
        ),
    ];
    migrator_of(&migrations)
}

fn migrator_of(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The most keys a keyed write transaction locks; one with more takes the write lock
/// exclusively instead. Postgres keeps advisory locks in its shared lock table (64 per
/// connection by default, `max_locks_per_transaction`): a few concurrent commits of this size
/// fit with room to spare.
const MAX_LOCK_KEYS: usize = 128;

/// The keys a keyed write transaction locks ([`Store::write_tx_keyed`]): the conferences,
/// events and calendars whose rows it reads and writes by. Postgres only (SQLite serializes
/// every write anyway).
pub(crate) struct LockKeys {
    schema: Option<Arc<str>>,
    keys: Vec<i64>,
}

impl LockKeys {
    fn add(&mut self, kind: &str, parts: &[&str]) {
        if let Some(schema) = &self.schema {
            let mut purpose = String::from(kind);
            for part in parts {
                purpose.push('\u{1f}');
                purpose.push_str(part);
            }
            self.keys.push(crate::db::lock_key(&purpose, schema));
        }
    }

    /// A conference: its link and outbox rows.
    pub(crate) fn conference(&mut self, conference_id: &str) -> &mut Self {
        self.add("conference", &[conference_id]);
        self
    }

    /// An event: the one live link it may have (and the planned keys named after it).
    pub(crate) fn event(&mut self, calendar_id: &str, event_id: &str) -> &mut Self {
        self.add("event", &[calendar_id, event_id]);
        self
    }

    /// A calendar: its sync token and page commits.
    pub(crate) fn calendar(&mut self, calendar_id: &str) -> &mut Self {
        self.add("calendar", &[calendar_id]);
        self
    }

    fn finish(mut self) -> Vec<i64> {
        self.keys.sort_unstable();
        self.keys.dedup();
        self.keys
    }
}

/// Reads "now" in unix milliseconds.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A handle to the store. Cheap to clone (the pools are shared).
///
/// SQLite: writes go through a single connection (SQLite allows one writer at a time anyway,
/// and queueing in the pool is cheaper than retrying on `SQLITE_BUSY`); reads use their own
/// pool and, thanks to WAL, never wait for writes. Postgres: one pool; write transactions are
/// serialized by an advisory lock (see [`crate::db`]).
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    clock: Clock,
    location: Arc<str>,
    /// Unix ms since when writes fail (0: they work), for readiness.
    write_failing_since: Arc<AtomicI64>,
    /// The single-process claim ([`Store::claim_single_process`]): the lock file of a file
    /// store, the connection holding the advisory lock of a Postgres one.
    claim: Arc<std::sync::OnceLock<Claim>>,
    /// A file store (its writer connection can be replaced; an in-memory one cannot).
    file_backed: bool,
    /// Successes of the drain waiting to be committed together (SQLite).
    pub(crate) completions: Arc<crate::outbox::Completions>,
    /// Push messages waiting for their group commit (SQLite, `channels.rs`).
    pub(crate) push_group: Arc<crate::channels::PushGroup>,
    /// SQLite's calendar sync leases, held in this process ([`crate::leases::LocalLeases`]).
    pub(crate) local_leases: Arc<crate::leases::LocalLeases>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it if missing) the SQLite database at `url_or_path`: a file path, or a
    /// `sqlite:` URL (`sqlite://data/confsync.db`, `sqlite::memory:`). Sets WAL,
    /// `synchronous=NORMAL`, foreign keys and a busy timeout, and runs pending migrations.
    pub async fn open(url_or_path: &str) -> Result<Store, StoreError> {
        let location = url_or_path.to_owned();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
            return Store::open_postgres(url_or_path).await;
        }
        let options = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path).map_err(open_error)?
        } else if url_or_path.contains("://") {
            return Err(open_error(sqlx::Error::Configuration(
                format!("unsupported database URL {:?}: use a file path, a sqlite: URL or a postgres:// URL", redact(url_or_path)).into(),
            )));
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        if url_or_path.contains(":memory:") || url_or_path.contains("mode=memory") {
            return Store::single(options.in_memory(true), url_or_path).await;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // A page commit's multi-row statements and the replay check's window sort in
            // temporary b-trees: in memory (at most a page's rows), not in files written out.
            .pragma("temp_store", "MEMORY")
            .statement_cache_capacity(crate::db::STATEMENT_CACHE);
        // One write connection; read-only connections beside it (WAL). Not sqlx's pool: see
        // `crate::conns` (no round trip to test each connection as it comes back).
        let writer = Conns::open(options.clone(), 1).await.map_err(open_error)?;
        migrate_sqlite(&writer, url_or_path).await?;
        // SQLite: `query_only` makes a stray write on a read connection an error instead of a
        // second writer.
        let reader = Conns::open(options.pragma("query_only", "ON"), READERS)
            .await
            .map_err(open_error)?;
        tracing::debug!(location = url_or_path, "store opened");
        Ok(Store {
            db: Db::Sqlite { writer, reader },
            clock: Arc::new(system_clock),
            location: url_or_path.into(),
            write_failing_since: Arc::default(),
            completions: Arc::default(),
            push_group: Arc::default(),
            local_leases: Arc::default(),
            claim: Arc::default(),
            file_backed: true,
        })
    }

    /// A fresh in-memory store for tests: one connection, kept open as long as the store (an
    /// in-memory SQLite database lives only as long as its connections).
    pub async fn memory() -> Result<Store, StoreError> {
        Store::single(SqliteConnectOptions::new().in_memory(true), ":memory:").await
    }

    async fn single(options: SqliteConnectOptions, location: &str) -> Result<Store, StoreError> {
        // One connection, never closed before the store is: the database lives in it.
        let options = options
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(crate::db::STATEMENT_CACHE);
        let pool = Conns::open(options, 1)
            .await
            .map_err(|source| StoreError::Open {
                location: location.to_owned(),
                source,
            })?;
        migrate_sqlite(&pool, location).await?;
        Ok(Store {
            db: Db::Sqlite {
                writer: pool.clone(),
                reader: pool,
            },
            clock: Arc::new(system_clock),
            location: location.into(),
            write_failing_since: Arc::default(),
            completions: Arc::default(),
            push_group: Arc::default(),
            local_leases: Arc::default(),
            claim: Arc::default(),
            file_backed: false,
        })
    }

    /// Replaces the clock used for timestamps the caller does not pass (`created_at` of a
    /// calendar, `updated_at` of bookkeeping writes). Simulations pass their simulated clock.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Store {
        self.clock = Arc::new(clock);
        self
    }

    /// Opens a Postgres store (`postgres://user@host:port/database?...`, any option sqlx's
    /// Postgres driver takes, `sslmode` included) and runs pending migrations. The URL's
    /// password never appears in errors or logs ([`Store::location`] is redacted).
    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let location = redact(url);
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_error)?
            .statement_cache_capacity(crate::db::STATEMENT_CACHE);
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        postgres_migrator()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                location: location.clone(),
                source,
            })?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(open_error)?;
        tracing::debug!(location = %location, schema, "store opened");
        Ok(Store {
            db: Db::Postgres {
                pool,
                write_lock: crate::db::lock_key("write", &schema),
                channel: format!("confsync_{:016x}", crate::db::lock_key("notify", &schema)).into(),
                schema: schema.clone().into(),
                liveness: Arc::default(),
            },
            clock: Arc::new(system_clock),
            location: location.into(),
            write_failing_since: Arc::default(),
            completions: Arc::default(),
            push_group: Arc::default(),
            local_leases: Arc::default(),
            claim: Arc::default(),
            file_backed: false,
        })
    }

    /// Where the store lives, as given to [`Store::open`] (a URL's password replaced by
    /// `***`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Which database the store runs on: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match &self.db {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    /// SQLite: copies the write-ahead log into the database file and empties it (`PRAGMA
    /// wal_checkpoint(TRUNCATE)`), as the automatic checkpoints do every 1,000 pages; nothing
    /// on Postgres. For measurements that must count every byte a piece of work wrote
    /// (`confsync bench adopt`), and for a store about to be copied.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Db::Sqlite { writer, .. } = &self.db {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(writer)
                .await
                .ctx(|| "checkpointing the write-ahead log".to_owned())?;
        }
        Ok(())
    }

    /// SQLite: the bytes this store's write connection has appended to the write-ahead log
    /// since it was opened: pages written (`SQLITE_DBSTATUS_CACHE_WRITE`, which in WAL mode
    /// counts WAL frames) times the page size plus each frame's 24-byte header. Checkpoints'
    /// copies into the database file are not in it. None on Postgres. For measurements
    /// (`confsync bench adopt`); it waits for the write connection like any write.
    pub async fn sqlite_wal_bytes(&self) -> Result<Option<u64>, StoreError> {
        let Db::Sqlite { writer, .. } = &self.db else {
            return Ok(None);
        };
        let what = || "reading the write connection's WAL page count".to_owned();
        let mut conn = writer.acquire().await.ctx(what)?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await
            .ctx(what)?;
        let mut handle = conn.lock_handle().await.ctx(what)?;
        let (mut pages, mut highwater) = (0, 0);
        // SAFETY: the handle is locked out of the connection's worker thread for this call,
        // and the two out-pointers live across it.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_status(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBSTATUS_CACHE_WRITE,
                &mut pages,
                &mut highwater,
                0,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!("sqlite3_db_status answered {rc}"),
            });
        }
        Ok(Some(
            u64::try_from(pages).unwrap_or(0) * (u64::try_from(page_size).unwrap_or(0) + 24),
        ))
    }

    /// Closes every connection (waiting for running statements); further calls fail.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }

    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The store's clock (unix ms): the system clock unless [`Store::with_clock`] replaced it.
    /// Leases are measured by it.
    pub fn clock_ms(&self) -> i64 {
        self.now()
    }

    /// Starts a write transaction.
    ///
    /// A write that failed at COMMIT (disk full, I/O error) leaves the writer connection to be
    /// rolled back before its next use; one still found inside a transaction then (the
    /// rollback failed too) is closed and a fresh one opened, so the store recovers by itself
    /// once the cause is gone.
    pub(crate) async fn write_tx(&self, what: impl FnOnce() -> String) -> Result<Tx, StoreError> {
        self.write_tx_in(crate::db::Serial::All, what).await
    }

    /// Starts a write transaction serialized only with those sharing one of `keys` (and with
    /// [`Store::write_tx`]'s): see [`crate::db`] for what such a transaction may do.
    pub(crate) async fn write_tx_keyed(
        &self,
        keys: LockKeys,
        what: impl FnOnce() -> String,
    ) -> Result<Tx, StoreError> {
        let keys = keys.finish();
        if keys.len() > MAX_LOCK_KEYS {
            // A big page (a full sync's): one exclusive lock instead of thousands of keys,
            // which would crowd Postgres's shared lock table (sized by
            // max_locks_per_transaction) and cost more than they save.
            return self.write_tx_in(crate::db::Serial::All, what).await;
        }
        self.write_tx_in(crate::db::Serial::Keys(&keys), what).await
    }

    /// The lock keys of a keyed write transaction, to be filled in.
    pub(crate) fn lock_keys(&self) -> LockKeys {
        LockKeys {
            schema: match &self.db {
                Db::Postgres { schema, .. } => Some(schema.clone()),
                Db::Sqlite { .. } => None,
            },
            keys: Vec::new(),
        }
    }

    async fn write_tx_in(
        &self,
        serial: crate::db::Serial<'_>,
        what: impl FnOnce() -> String,
    ) -> Result<Tx, StoreError> {
        let result = match &self.db {
            Db::Sqlite { writer, .. } => {
                // SQLite: BEGIN IMMEDIATE takes the write lock up front, so a transaction that
                // reads before it writes cannot fail with SQLITE_BUSY when upgrading its lock
                // (the busy timeout does not apply to upgrades). A write connection left inside
                // a failed transaction is reopened (file stores; an in-memory database lives in
                // its connection).
                crate::conns::SqliteTx::begin(writer, self.file_backed)
                    .await
                    .map(Tx::Sqlite)
            }
            Db::Postgres {
                pool, write_lock, ..
            } => crate::db::pg_write_tx(pool, *write_lock, serial)
                .await
                .map(Tx::Postgres),
        };
        let result = result.ctx(what);
        self.note_write(&result);
        result
    }

    /// Commits a write transaction, noting the outcome for [`Store::writable`].
    pub(crate) async fn commit(
        &self,
        tx: Tx,
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let result = match tx {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .ctx(what);
        self.note_write(&result);
        result
    }

    /// Notes whether a write worked (stale and conflicting writes say nothing about the disk).
    pub(crate) fn note_write<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.write_failing_since.store(0, Ordering::Relaxed),
            Err(StoreError::Database { .. }) => {
                let _ = self.write_failing_since.compare_exchange(
                    0,
                    self.now().max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Err(_) => {}
        }
    }

    /// Whether the store takes writes now: a small write is tried (the disk may be full, the
    /// file read-only, the database locked by another process). Answers since when writes
    /// fail, or None when they work. For readiness checks: a store that cannot write must not
    /// be sent work it would acknowledge and lose.
    pub async fn writable(&self) -> Option<i64> {
        let now = self.now();
        let probe = on_write!(self, c => sqlx::query(
            "INSERT INTO write_probe (id, probed_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| "probing whether the store takes writes".to_owned());
        if let Err(e) = &probe {
            tracing::warn!(error = %e, "the store does not take writes");
        }
        self.note_write(&probe);
        match self.write_failing_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// Claims an SQLite file store for this process alone, so two processes never run the same
    /// outbox rows or sync the same calendar at once: an exclusive lock on `<path>.lock`,
    /// released when the process ends, however it ends; a second process is refused. Commands
    /// that only read or add API keys do not claim. In-memory stores: no-op. Postgres stores:
    /// no-op, since any number of workers share one (they take work under leases, see
    /// [`Store::claim_due`] and [`Store::lease_calendar`]).
    pub async fn claim_single_process(&self) -> Result<(), StoreError> {
        self.claim_single_process_inner().await
    }

    /// Whether this handle holds the single-process claim ([`Store::claim_single_process`]).
    pub(crate) fn holds_claim(&self) -> bool {
        self.claim.get().is_some()
    }

    async fn claim_single_process_inner(&self) -> Result<(), StoreError> {
        if self.claim.get().is_some() {
            return Ok(());
        }
        match &self.db {
            Db::Sqlite { .. } if self.file_backed => {
                self.claim_file()?;
                // Whoever held leases on this file before is dead (the claim was free): its
                // work is this process's now, not after the lease time.
                let released = self.release_leases(None).await?;
                if released > 0 {
                    tracing::info!(released, "leases of the store's previous process released");
                }
                Ok(())
            }
            Db::Sqlite { .. } | Db::Postgres { .. } => Ok(()),
        }
    }

    fn claim_file(&self) -> Result<(), StoreError> {
        let path = self
            .location
            .strip_prefix("sqlite://")
            .or_else(|| self.location.strip_prefix("sqlite:"))
            .unwrap_or(&self.location);
        let path = path.split('?').next().unwrap_or(path);
        let lock_path = format!("{path}.lock");
        let open_error = |detail: String| StoreError::Locked {
            location: self.location.to_string(),
            detail,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(format!("cannot open the lock file {lock_path}: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(open_error(
                    "another confsync process is running on this store (an SQLite store \
                     serves one process; stop the other one, or use Postgres for several workers)"
                        .to_owned(),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(open_error(format!("cannot lock {lock_path}: {e}")));
            }
        }
        let _ = self.claim.set(Claim::File(file));
        Ok(())
    }
}

/// The single-process claim a file store holds: its lock file, locked.
enum Claim {
    File(#[allow(dead_code)] std::fs::File),
}

/// Connections of a Postgres store's pool.
const POSTGRES_CONNECTIONS: u32 = 8;

/// A database URL with its password replaced by `***` (for errors and logs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

async fn migrate_sqlite(conns: &Conns, location: &str) -> Result<(), StoreError> {
    let migrate_error = |source| StoreError::Migrate {
        location: location.to_owned(),
        source,
    };
    let mut conn = conns
        .acquire()
        .await
        .map_err(|e| migrate_error(sqlx::migrate::MigrateError::Execute(e)))?;
    sqlite_migrator()
        .run(&mut *conn)
        .await
        .map_err(|source| StoreError::Migrate {
            location: location.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(store: &Store) -> &Conns {
        match &store.db {
            Db::Sqlite { writer, .. } => writer,
            Db::Postgres { .. } => unreachable!("a SQLite store"),
        }
    }

    fn reader(store: &Store) -> &Conns {
        match &store.db {
            Db::Sqlite { reader, .. } => reader,
            Db::Postgres { .. } => unreachable!("a SQLite store"),
        }
    }

    async fn int(pool: &Conns, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    /// A store file in a fresh temporary folder (`name`), migrated up to (not including)
    /// `version` as a build of that time would have left it, holding calendar `c` and its link
    /// `m1` (event `e1`). Answers the folder, the file's path and a pool on it.
    async fn store_before(
        name: &str,
        version: i64,
    ) -> (std::path::PathBuf, String, sqlx::SqlitePool) {
        let dir =
            std::env::temp_dir().join(format!("confsync-store-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap().to_owned();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let mut before = sqlite_migrator();
        before.migrations = Cow::Owned(
            before
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        );
        before.run(&pool).await.unwrap();
        for sql in [
            "INSERT INTO calendars (calendar_id, created_at) VALUES ('c', 0)",
            "INSERT INTO links (conference_id, provider, calendar_id, event_id, spec_json, fingerprint, created_at, updated_at) \
             VALUES ('m1', 'local', 'c', 'e1', '{}', 'f', 0, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        (dir, path, pool)
    }

    /// Migration 0020 moves each queued row's action to `outbox_actions`: a store made before it
    /// keeps its rows' actions, and a row deleted takes its action with it.
    #[tokio::test]
    async fn queued_actions_survive_the_move_to_their_own_table() {
        let action = confsync_core::plan::Action::Delete {
            reason: confsync_core::plan::Change::EventCancelled,
        };
        let (dir, path, pool) = store_before("0020", 20).await;
        {
            sqlx::query(
                "INSERT INTO outbox (conference_id, calendar_id, event_id, kind, action_json, planned_key, \
                     idempotency_key, created_at, updated_at) VALUES ('m1', 'c', 'e1', 'delete', $1, 'k', 'k', 0, 0)",
            )
            .bind(serde_json::to_string(&action).unwrap())
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = Store::open(&path).await.unwrap();
        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].action, action);
        sqlx::query("DELETE FROM outbox")
            .execute(writer(&store))
            .await
            .unwrap();
        assert_eq!(
            int(writer(&store), "SELECT COUNT(*) FROM outbox_actions").await,
            0
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A build older than its store (a newer version migrated it since) refuses to open it,
    /// naming the migration it does not know, rather than run on a schema that is not its own.
    #[tokio::test]
    async fn a_store_migrated_past_this_build_is_refused() {
        let dir = std::env::temp_dir().join(format!("confsync-store-newer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap().to_owned();
        let store = Store::open(&path).await.unwrap();
        // What a newer version's first start would leave: a migration this build lacks.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer version', TRUE, X'00', 0)",
        )
        .execute(writer(&store))
        .await
        .unwrap();
        store.close().await;
        let refused = Store::open(&path).await.unwrap_err().to_string();
        assert!(refused.contains("9999"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Migration 0023 rebuilds the outbox without its unique key: a row queued before keeps the
    /// key it was given (a retry sends the same one), a row queued after takes `planned#id`, and
    /// no id handed out before (a removed newest row's included) is handed out again.
    #[tokio::test]
    async fn keys_given_before_the_rebuild_stay_and_no_row_id_comes_back() {
        let action = confsync_core::plan::Action::Delete {
            reason: confsync_core::plan::Change::EventCancelled,
        };
        let action_json = serde_json::to_string(&action).unwrap();
        let (dir, path, pool) = store_before("0023", 23).await;
        {
            for (id, key) in [(1, "k"), (2, "k#2"), (3, "k#3")] {
                sqlx::query(
                    "INSERT INTO outbox (id, conference_id, calendar_id, event_id, kind, planned_key, \
                         idempotency_key, created_at, updated_at) VALUES ($1, 'm1', 'c', 'e1', 'delete', 'k', $2, 0, 0)",
                )
                .bind(id)
                .bind(key)
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query("INSERT INTO outbox_actions (id, action_json) VALUES ($1, $2)")
                    .bind(id)
                    .bind(&action_json)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            // The newest row is gone (pruned, or its calendar forgotten) before the upgrade.
            sqlx::query("DELETE FROM outbox WHERE id = 3")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = Store::open(&path).await.unwrap();
        let keys = |rows: Vec<crate::OutboxEntry>| -> Vec<(i64, String, bool)> {
            rows.into_iter()
                .map(|r| (r.id, r.idempotency_key, r.action == action))
                .collect()
        };
        assert_eq!(
            keys(store.outbox_of("m1").await.unwrap()),
            [(1, "k".to_owned(), true), (2, "k#2".to_owned(), true)]
        );
        sqlx::query(
            "INSERT INTO outbox (conference_id, calendar_id, event_id, kind, planned_key, created_at, updated_at) \
             VALUES ('m1', 'c', 'e1', 'delete', 'k', 0, 0)",
        )
        .execute(writer(&store))
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO outbox_actions (id, action_json) VALUES (last_insert_rowid(), $1)",
        )
        .bind(&action_json)
        .execute(writer(&store))
        .await
        .unwrap();
        assert_eq!(
            keys(store.outbox_of("m1").await.unwrap())[2],
            (4, "k#4".to_owned(), true),
            "id 3 was handed out before: never again"
        );
        // The rebuilt action table still goes with its rows, and the trigger that keeps an
        // update's spec is back.
        sqlx::query("DELETE FROM outbox WHERE id = 1")
            .execute(writer(&store))
            .await
            .unwrap();
        assert_eq!(
            int(writer(&store), "SELECT COUNT(*) FROM outbox_actions").await,
            2
        );
        assert_eq!(
            int(
                writer(&store),
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'links_spec_kept_for_actions'"
            )
            .await,
            1
        );
        assert_eq!(
            int(
                writer(&store),
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'planned_keys'"
            )
            .await,
            0
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_store_runs_with_wal_normal_sync_foreign_keys_and_a_busy_timeout() {
        let dir =
            std::env::temp_dir().join(format!("confsync-store-pragmas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("s.db").to_str().unwrap())
            .await
            .unwrap();
        for pool in [writer(&store), reader(&store)] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            assert_eq!(int(pool, "PRAGMA synchronous").await, 1, "NORMAL");
            assert_eq!(int(pool, "PRAGMA foreign_keys").await, 1);
            assert_eq!(
                int(pool, "PRAGMA busy_timeout").await,
                BUSY_TIMEOUT.as_millis() as i64
            );
            assert_eq!(int(pool, "PRAGMA temp_store").await, 2, "MEMORY");
        }
        assert_eq!(int(reader(&store), "PRAGMA query_only").await, 1);
        let write = sqlx::query("INSERT INTO calendars (calendar_id, created_at) VALUES ('x', 0)")
            .execute(reader(&store))
            .await;
        assert!(write.is_err(), "read connections refuse writes");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_memory_store_keeps_its_data_on_its_single_connection() {
        let store = Store::memory().await.unwrap();
        assert_eq!(int(writer(&store), "PRAGMA foreign_keys").await, 1);
        store.ensure_calendar("c").await.unwrap();
        assert_eq!(store.calendars().await.unwrap().len(), 1);
        let applied = int(writer(&store), "SELECT COUNT(*) FROM _sqlx_migrations").await;
        assert_eq!(
            applied,
            sqlite_migrator().iter().count() as i64,
            "every migration ran"
        );
        assert!(applied >= 4);
    }

    /// Defect: after one failed write (disk full), every later write failed with "attempted
    /// to call begin_with at non-zero transaction depth" until restart. A full disk is stood for
    /// by SQLite's page limit (the same SQLITE_FULL at the same places).
    #[tokio::test]
    async fn writes_recover_by_themselves_after_the_disk_fills() {
        let dir = std::env::temp_dir().join(format!("confsync-store-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("s.db").to_str().unwrap())
            .await
            .unwrap();
        store.ensure_calendar("c").await.unwrap();
        assert_eq!(store.writable().await, None);
        let pages: i64 = int(writer(&store), "PRAGMA page_count").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(writer(&store))
        .await
        .unwrap();
        let big = "x".repeat(200_000);
        let mut failed = 0;
        for i in 0..5 {
            let letter = crate::DeadLetter {
                event_id: Some(format!("e{i}")),
                reason: "big".into(),
                raw: serde_json::json!({"pad": big}),
            };
            if store
                .commit_page("c", &[], &[letter], None, i)
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        assert!(failed > 0, "the full disk refused writes");
        assert!(store.writable().await.is_some() || failed > 0);
        // Space comes back (a new connection would not keep the pragma either way).
        let _ = sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(writer(&store))
            .await;
        let mut recovered = false;
        for _ in 0..3 {
            if store
                .commit_page("c", &[], &[], Some("t1"), 99)
                .await
                .is_ok()
            {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "writes work again without a restart");
        assert_eq!(store.writable().await, None);
        assert_eq!(
            store
                .calendar("c")
                .await
                .unwrap()
                .unwrap()
                .sync_token
                .as_deref(),
            Some("t1")
        );
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }
}
