//! The two databases behind one [`Store`](crate::Store): SQLite (embedded, the default) and
//! Postgres (several workers on one database). Every statement is written once, in the
//! portable SQL the crate keeps to (`$N` placeholders, `ON CONFLICT`, `RETURNING`, `TRUE` and
//! `FALSE`, no database functions), and run on either backend through the macros below, which
//! expand a statement once per backend so each is bound, run and decoded by its own sqlx
//! driver at full speed (no `Any` driver and its per-row conversions).
//!
//! - [`on_read!`] runs a read on the read pool (SQLite: its read-only connections; Postgres:
//!   the pool);
//! - [`on_write!`] runs one autocommit write (SQLite: the single writer connection);
//! - [`on_tx!`] runs a statement inside a [`Tx`] from [`Store::write_tx`](crate::Store).
//!
//! Rows are decoded by functions over [`Cols`], which both row types implement.
//!
//! Write transactions are serialized so that a transaction's reads and its writes see one state,
//! as the conditional writes and the outbox's replay check assume. SQLite: `BEGIN IMMEDIATE`,
//! one writer at a time. Postgres (several workers on one database): transaction-scoped
//! advisory locks, in two tiers ([`Serial`]), so transactions of different conferences commit
//! side by side (and Postgres groups their WAL flushes) instead of one after another:
//! - [`Serial::All`]: the store's write lock ([`lock_key`] "write") taken exclusively. For
//!   transactions that read across conferences or tables and write from what they read (the
//!   recreate's swap, create intents, owners, OAuth requests, API keys, retention, admin
//!   changes). Nothing else writes while one runs.
//! - [`Serial::Keys`]: the write lock taken shared, then an exclusive lock per key the
//!   transaction reads and writes by (a conference, an event, a calendar), sorted, so two such
//!   transactions wait for each other only when they share a key, and never deadlock on these
//!   locks (every transaction takes the shared lock first, then its keys in ascending order).
//!   A page commit locks its calendar, each change's conference and each linked event (the
//!   unique live link per event); queueing follow-ups locks the conference and its event. A
//!   transaction with more than `MAX_LOCK_KEYS` (128) keys (a full sync's page) takes
//!   [`Serial::All`] instead: Postgres's shared lock table is small.
//! - [`on_write!`]: one statement, under the shared write lock and no key. A single UPDATE
//!   or upsert is atomic on the rows it touches (Postgres re-checks its WHERE on the row's
//!   latest version after waiting for a row lock), and no keyed transaction writes a column
//!   from a value it read earlier that such a statement changes: keyed transactions write links
//!   only on a version they read (a conflict is [`StoreError::Stale`](crate::StoreError)), and
//!   the executor's columns (`applied_fingerprint`, `last_etag_written`, outbox states and
//!   leases) are changed only by single conditional statements.
//!
//! Under READ COMMITTED, each statement then sees every transaction committed before it took
//! its locks: for the rows it depends on, the serial order SQLite gives, across every process
//! sharing the database.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Postgres, Row, Sqlite, Transaction};

use crate::conns::{Conns, SqliteTx};

/// Advisory lock keys are per schema: stores in different schemas of one database (tests,
/// several deployments) do not wait for each other. A key is FNV-1a of `purpose` and the
/// schema's name.
pub(crate) fn lock_key(purpose: &str, schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in purpose.bytes().chain([0]).chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The pools of a store's backend.
#[derive(Clone)]
pub(crate) enum Db {
    /// SQLite: writes through one connection, reads through read-only ones (WAL).
    Sqlite {
        /// The single write connection.
        writer: Conns,
        /// Read-only connections (the writer itself for in-memory stores).
        reader: Conns,
    },
    /// Postgres: one pool for reads and writes.
    Postgres {
        /// The pool.
        pool: PgPool,
        /// The advisory lock every write transaction takes ([`lock_key`] "write").
        write_lock: i64,
        /// The channel workers notify each other on (per schema).
        channel: std::sync::Arc<str>,
        /// The schema's name (worker liveness lock keys are per schema).
        schema: std::sync::Arc<str>,
        /// This process's worker and the key of the liveness lock it holds, once registered
        /// ([`Store::register_worker`](crate::Store::register_worker)).
        liveness: std::sync::Arc<std::sync::OnceLock<(String, i64)>>,
    },
}

/// A write transaction on either backend.
pub(crate) enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// Runs `sql` (its `$N` bound to `args`) in the transaction for its effect alone: SQLite
    /// sends it with the transaction's next statement or its COMMIT, in the same round trip
    /// ([`SqliteTx::defer`]); Postgres runs it now. Either way it runs in order with the
    /// transaction's other statements, and a failure fails the transaction.
    pub(crate) async fn defer(
        &mut self,
        sql: impl Into<std::borrow::Cow<'static, str>>,
        args: Vec<crate::conns::Arg>,
    ) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => {
                t.defer(sql.into(), args);
                Ok(())
            }
            Tx::Postgres(t) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.into().into_owned()));
                for arg in args {
                    query = match arg {
                        crate::conns::Arg::Text(v) => query.bind(v),
                        crate::conns::Arg::Int(v) => query.bind(v),
                        crate::conns::Arg::OptText(v) => query.bind(v),
                        crate::conns::Arg::OptInt(v) => query.bind(v),
                        crate::conns::Arg::Bool(v) => query.bind(v),
                    };
                }
                query.execute(&mut **t).await.map(|_| ())
            }
        }
    }
}

/// A column type both backends decode.
pub(crate) trait Col:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}

impl<T> Col for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// A row of either backend, read by column name.
pub(crate) trait Cols {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error>;
}

impl Cols for SqliteRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

impl Cols for PgRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

/// `on_read!(store, c => expr)`: `expr` with `c` the backend's read executor.
macro_rules! on_read {
    ($store:expr, $ex:ident => $body:expr) => {
        match &$store.db {
            $crate::db::Db::Sqlite { reader: $ex, .. } => $body,
            $crate::db::Db::Postgres { pool: $ex, .. } => $body,
        }
    };
}

/// `on_write!(store, c => expr)`: `expr` (a `Result<_, sqlx::Error>`) with `c` the backend's
/// write executor, for ONE statement that needs no transaction of its own (atomic by itself:
/// see the module's doc before using it for anything else). SQLite runs it on the single
/// writer connection; Postgres in a transaction under the shared write lock, so no
/// [`Serial::All`] transaction runs meanwhile (committed when `expr` is Ok).
macro_rules! on_write {
    ($store:expr, $ex:ident => $body:expr) => {
        match &$store.db {
            $crate::db::Db::Sqlite { writer: $ex, .. } => $body,
            $crate::db::Db::Postgres {
                pool, write_lock, ..
            } => match $crate::db::pg_write_tx(pool, *write_lock, $crate::db::Serial::Keys(&[]))
                .await
            {
                Ok(mut t) => {
                    let result = {
                        let $ex = &mut *t;
                        $body
                    };
                    match result {
                        Ok(value) => t.commit().await.map(|()| value),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
        }
    };
}

/// What a Postgres write transaction is serialized with (see the module's doc).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Serial<'a> {
    /// Every other write: the write lock, exclusively.
    All,
    /// Writes sharing one of these keys (advisory lock keys, sorted and without duplicates):
    /// the write lock shared, then each key exclusively. No keys: one atomic statement.
    Keys(&'a [i64]),
}

/// A Postgres transaction holding the store's write lock (exclusive or shared, as `serial`
/// says) and its keys, all released when it ends (commit, rollback, or the connection's death).
pub(crate) async fn pg_write_tx(
    pool: &PgPool,
    write_lock: i64,
    serial: Serial<'_>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    match serial {
        Serial::All => {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(write_lock)
                .execute(&mut *tx)
                .await?;
        }
        Serial::Keys(keys) => {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                .bind(write_lock)
                .execute(&mut *tx)
                .await?;
            if !keys.is_empty() {
                debug_assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys must be sorted");
                // unnest yields the array in order, and the aggregate takes each lock as the
                // row reaches it: ascending, as the deadlock freedom above needs.
                sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k")
                    .bind(keys)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(tx)
}

/// `on_tx!(tx, c => expr)`: `expr` with `c` the transaction's connection (`tx: &mut Tx`).
macro_rules! on_tx {
    ($tx:expr, $ex:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $ex = &mut *t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $ex = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {on_read, on_tx, on_write};

/// Statements a connection keeps prepared. Every statement the store sends is kept prepared
/// (preparing a many-row statement costs more than running it), and [`chunks`] bounds the
/// shapes a many-row statement comes in, so they all fit.
pub(crate) const STATEMENT_CACHE: usize = 512;

/// Up to this many items go in one statement of their exact count (see [`chunks`]).
const EXACT: usize = 16;

/// `items` in chunks of at most `max`. The rest after the full chunks goes in one chunk when it
/// is at most [`EXACT`] items (a sync page's or a group commit's usual count), else in chunks of
/// power-of-two sizes (e.g. 200 + 32 + 16 + 2 for 250 with `max` 200). A statement with a row
/// or a value per item therefore comes in a few shapes only (at most 16 + 4 + 1 for `max`
/// 200), each prepared once per connection and then reused, instead of a new statement for
/// every count.
pub(crate) fn chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = max.max(1);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= max {
            max
        } else if rest.len() <= EXACT {
            rest.len()
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_come_in_few_sizes_and_keep_every_item_once_in_order() {
        let sizes = |n: usize, max: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = chunks(&items, max).collect();
            let flat: Vec<usize> = parts.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(flat, items, "{n} items, max {max}");
            parts.iter().map(|c| c.len()).collect()
        };
        assert_eq!(sizes(0, 200), Vec::<usize>::new());
        assert_eq!(sizes(1, 200), [1]);
        assert_eq!(sizes(7, 200), [7]);
        assert_eq!(sizes(16, 200), [16]);
        assert_eq!(sizes(17, 200), [16, 1]);
        assert_eq!(sizes(250, 200), [200, 32, 16, 2]);
        assert_eq!(sizes(400, 200), [200, 200]);
        assert_eq!(sizes(7, 4), [4, 3]);
        assert_eq!(sizes(3, 0), [1, 1, 1]);
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..=1000 {
            shapes.extend(sizes(n, 200));
        }
        // 1..=16, 32, 64, 128, 200
        assert_eq!(shapes.len(), 20, "{shapes:?}");
    }
}
