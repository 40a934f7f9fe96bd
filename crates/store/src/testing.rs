//! For tests: stores on every backend, each fresh. Postgres stores live in a new schema of the
//! test database each, so tests run in parallel without seeing each other.
//!
//! The test database is `CONFSYNC_TEST_POSTGRES_URL`, else the local default
//! (`postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached: with the variable set,
//! or under CI (`CI` set), the test fails; otherwise the Postgres half is skipped with a line on
//! stderr, so a machine without Postgres can still run the SQLite half.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

use crate::Store;

/// The variable naming the test database.
pub const POSTGRES_URL_VAR: &str = "CONFSYNC_TEST_POSTGRES_URL";

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test database's URL, and whether it must be reachable.
pub fn postgres_url() -> (String, bool) {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => (url, true),
        _ => (
            DEFAULT_POSTGRES_URL.to_owned(),
            std::env::var("CI").is_ok_and(|v| !v.is_empty()),
        ),
    }
}

/// A fresh schema in the test database: the URL of a store in it, None when Postgres is not
/// reachable and not required.
pub async fn postgres_schema_url() -> Option<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (url, required) = postgres_url();
    let mut connection = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!(
                "skipping the Postgres half of this test: {} is not reachable ({e}); set {POSTGRES_URL_VAR} to run it",
                crate::store::redact(&url)
            );
            return None;
        }
        Err(e) => panic!(
            "the test Postgres {} is not reachable: {e}",
            crate::store::redact(&url)
        ),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!(
        "confsync_t{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("creating test schema {schema}: {e}"));
    let _ = connection.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options[search_path]={schema}"))
}

/// A fresh Postgres store (see [`postgres_schema_url`]).
pub async fn postgres() -> Option<Store> {
    let url = postgres_schema_url().await?;
    Some(
        Store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening a Postgres test store: {e}")),
    )
}

/// A fresh store on every backend: an in-memory SQLite store, and a Postgres one unless
/// Postgres is skipped.
pub async fn stores() -> Vec<Store> {
    let mut stores = vec![Store::memory().await.expect("an in-memory store")];
    stores.extend(postgres().await);
    stores
}

/// Postgres: the URL the store was opened with is not kept; tests that need a connection of
/// their own beside the store (to hold its locks) get the store's write lock key here. None
/// for SQLite.
pub fn write_lock_key(store: &Store) -> Option<i64> {
    match &store.db {
        crate::db::Db::Postgres { write_lock, .. } => Some(*write_lock),
        crate::db::Db::Sqlite { .. } => None,
    }
}

/// Postgres: a connection of the store's pool, detached from it (for tests that hold locks
/// beside the store). None for SQLite.
pub async fn raw_connection(store: &Store) -> Option<sqlx::PgConnection> {
    match &store.db {
        crate::db::Db::Postgres { pool, .. } => Some(
            pool.acquire()
                .await
                .expect("a Postgres connection")
                .detach(),
        ),
        crate::db::Db::Sqlite { .. } => None,
    }
}

/// Runs one statement on the store's own writer and answers how many rows it changed: for
/// tests that must leave a row as no store write would (an action stored by a newer version,
/// say). Not for production data.
#[doc(hidden)]
pub async fn execute(store: &Store, sql: &str) -> u64 {
    let sql_of = || sqlx::AssertSqlSafe(sql.to_owned());
    let done = match &store.db {
        crate::db::Db::Sqlite { writer, .. } => sqlx::query(sql_of())
            .execute(writer)
            .await
            .map(|r| r.rows_affected()),
        crate::db::Db::Postgres { pool, .. } => sqlx::query(sql_of())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    };
    done.unwrap_or_else(|e| panic!("running {sql}: {e}"))
}

/// SQLite: `EXPLAIN QUERY PLAN` of `sql` on the store's writer, one line per step of the
/// plan ("SEARCH outbox USING INDEX ...", "SCAN links", ...), its `$N` left unbound. Empty on
/// Postgres.
#[doc(hidden)]
pub async fn query_plan(store: &Store, sql: &str) -> Vec<String> {
    use sqlx::Row;
    let crate::db::Db::Sqlite { writer, .. } = &store.db else {
        return Vec::new();
    };
    let explain = sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"));
    sqlx::query(explain)
        .fetch_all(writer)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"))
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect()
}

/// What SQLite counted for one statement prepared on one of a store's connections
/// (`sqlite3_stmt_status`), since it was prepared or since the counters were last reset.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct StatementCounters {
    /// The statement's text as prepared.
    pub sql: String,
    /// Times it was run.
    pub runs: i32,
    /// Times SQLite prepared it again (`SQLITE_STMTSTATUS_REPREPARE`): a statement whose plan
    /// depends on a bound value is parsed and planned each time it is bound anew.
    pub reprepared: i32,
    /// Virtual machine operations it ran (`SQLITE_STMTSTATUS_VM_STEP`): its work, rows
    /// visited included.
    pub vm_steps: i32,
}

/// SQLite: the counters of every statement prepared on the store's connections
/// ([`StatementCounters`]), each reset to zero after it is read when `reset`. Empty on
/// Postgres. Connections busy elsewhere are skipped; call it at rest.
#[doc(hidden)]
pub async fn statement_counters(store: &Store, reset: bool) -> Vec<StatementCounters> {
    let crate::db::Db::Sqlite { writer, reader } = &store.db else {
        return Vec::new();
    };
    let mut found = Vec::new();
    // Every connection of each set, held at once (so each is a different one).
    let mut held = Vec::new();
    let sets = if writer.same_set(reader) {
        vec![writer]
    } else {
        vec![writer, reader]
    };
    for conns in sets {
        for _ in 0..conns.size() {
            if let Ok(conn) = conns.acquire().await {
                held.push(conn);
            }
        }
    }
    for conn in &mut held {
        let Ok(mut handle) = conn.lock_handle().await else {
            continue;
        };
        let db = handle.as_raw_handle().as_ptr();
        let reset = i32::from(reset);
        // SAFETY: the handle is locked out of its worker thread for the loop; each statement
        // pointer comes from `sqlite3_next_stmt` on it and is read, never kept.
        unsafe {
            use libsqlite3_sys as ffi;
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let sql = ffi::sqlite3_sql(stmt);
                if !sql.is_null() {
                    found.push(StatementCounters {
                        sql: std::ffi::CStr::from_ptr(sql).to_string_lossy().into_owned(),
                        runs: ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_RUN, reset),
                        reprepared: ffi::sqlite3_stmt_status(
                            stmt,
                            ffi::SQLITE_STMTSTATUS_REPREPARE,
                            reset,
                        ),
                        vm_steps: ffi::sqlite3_stmt_status(
                            stmt,
                            ffi::SQLITE_STMTSTATUS_VM_STEP,
                            reset,
                        ),
                    });
                }
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
        }
    }
    found
}

/// SQLite: the statements prepared on the store's connections that SQLite prepared again
/// (see [`StatementCounters::reprepared`]), with how many times and how many runs. Empty on
/// Postgres. Connections busy elsewhere are skipped; call it at rest.
#[doc(hidden)]
pub async fn reprepared_statements(store: &Store) -> Vec<(String, i32, i32)> {
    statement_counters(store, false)
        .await
        .into_iter()
        .filter(|c| c.reprepared > 0)
        .map(|c| (c.sql, c.reprepared, c.runs))
        .collect()
}

/// One calendar for [`insert_calendars`]: a row of `calendars` as the service would have left
/// it, and optionally its push channels.
#[derive(Debug, Clone, Default)]
pub struct CalendarFixture {
    /// The calendar.
    pub calendar_id: String,
    /// Whose grant reaches it (None: the user its id names).
    pub owner: Option<String>,
    /// Synced at least once: a token and when its last pass completed (unix ms).
    pub last_sync_at: Option<i64>,
    /// Passes failed in a row, with the last error.
    pub sync_failures: i64,
    /// The last pass's error.
    pub last_error: Option<String>,
    /// When a failed pass is tried again (unix ms).
    pub retry_at: Option<i64>,
    /// An unanswered trigger (unix ms).
    pub dirty_at: Option<i64>,
    /// A live push channel expiring then (unix ms).
    pub channel_expires_at: Option<i64>,
    /// Stopped channels kept as history (renewals within the retention period).
    pub stopped_channels: usize,
}

/// Inserts calendars (and their channels) in bulk, a few hundred rows per statement in one
/// transaction: status at scale for tests and `confsync bench status`, where registering
/// 100,000 calendars one by one would take minutes. Not for production data: it writes the
/// rows as given, with none of the checks the store's own writes make.
#[doc(hidden)]
pub async fn insert_calendars(
    store: &Store,
    calendars: &[CalendarFixture],
) -> Result<(), crate::StoreError> {
    use crate::db::on_tx;
    use crate::error::Context;
    const ROWS: usize = 400;
    let what = || format!("inserting {} calendar fixtures", calendars.len());
    let mut tx = store.write_tx(what).await?;
    for chunk in calendars.chunks(ROWS) {
        let values = (0..chunk.len())
            .map(|i| {
                let p = i * 8;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 0)",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO calendars (calendar_id, owner, sync_token, last_sync_at, sync_failures, \
             last_error, retry_at, dirty_at, created_at) VALUES {values}"
        );
        on_tx!(&mut tx, c => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for f in chunk {
                query = query
                    .bind(&f.calendar_id)
                    .bind(&f.owner)
                    .bind(f.last_sync_at.map(|t| format!("fixture-token-{t}")))
                    .bind(f.last_sync_at)
                    .bind(f.sync_failures)
                    .bind(&f.last_error)
                    .bind(f.retry_at)
                    .bind(f.dirty_at);
            }
            query.execute(c).await.map(|r| r.rows_affected())
        })
        .ctx(what)?;
    }
    channels(&mut tx, calendars, "", what).await?;
    store.commit(tx, what).await
}

/// Postgres: refreshes the planner's statistics of the tables [`insert_calendars`] fills, as
/// autovacuum does after a bulk load (its next round may be a minute away, and until then the
/// planner guesses: 235 users needing re-authorisation, say, and a hash join over every
/// calendar where five index lookups do). A benchmark of a large store measures what a
/// deployment that has run a while sees. Nothing on SQLite, where nothing analyzes a store in
/// production either.
#[doc(hidden)]
pub async fn analyze_filled_tables(store: &Store) -> Result<(), crate::StoreError> {
    use crate::error::Context;
    if let crate::db::Db::Postgres { pool, .. } = &store.db {
        sqlx::query("ANALYZE calendars, channels, google_users")
            .execute(pool)
            .await
            .ctx(|| "analyzing the filled tables".to_owned())?;
    }
    Ok(())
}

/// Inserts the channels of `calendars` (their calendars must exist): each one's live channel
/// (`channel_expires_at`) and its stopped history, with ids made of `tag` and the calendar id
/// (a new tag adds channels beside those inserted before).
#[doc(hidden)]
pub async fn insert_channels(
    store: &Store,
    calendars: &[CalendarFixture],
    tag: &str,
) -> Result<(), crate::StoreError> {
    let what = || {
        format!(
            "inserting the channels of {} calendar fixtures",
            calendars.len()
        )
    };
    let mut tx = store.write_tx(what).await?;
    channels(&mut tx, calendars, tag, what).await?;
    store.commit(tx, what).await
}

async fn channels(
    tx: &mut crate::db::Tx,
    calendars: &[CalendarFixture],
    tag: &str,
    what: impl Fn() -> String + Copy,
) -> Result<(), crate::StoreError> {
    use crate::db::on_tx;
    use crate::error::Context;
    const ROWS: usize = 400;
    // The live one, then the stopped history (expired long ago).
    let channels: Vec<(String, &str, i64, bool)> = calendars
        .iter()
        .flat_map(|f| {
            let live = f.channel_expires_at.map(|exp| {
                (
                    format!("fixture{tag}-{}", f.calendar_id),
                    f.calendar_id.as_str(),
                    exp,
                    false,
                )
            });
            let stopped = (0..f.stopped_channels).map(move |k| {
                (
                    format!("fixture{tag}-{}-stopped-{k}", f.calendar_id),
                    f.calendar_id.as_str(),
                    k as i64,
                    true,
                )
            });
            live.into_iter().chain(stopped)
        })
        .collect();
    for chunk in channels.chunks(ROWS) {
        let values = (0..chunk.len())
            .map(|i| {
                let p = i * 4;
                format!(
                    "(${}, ${}, 'fixture', 'fixture', ${}, 0, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO channels (channel_id, calendar_id, resource_id, token_hash, expiration_ms, \
             created_at, stopped) VALUES {values}"
        );
        on_tx!(&mut *tx, c => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (channel_id, calendar_id, expires, stopped) in chunk {
                query = query
                    .bind(channel_id)
                    .bind(*calendar_id)
                    .bind(*expires)
                    .bind(*stopped);
            }
            query.execute(c).await.map(|r| r.rows_affected())
        })
        .ctx(what)?;
    }
    Ok(())
}
