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
