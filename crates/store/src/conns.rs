//! SQLite connections handed out without sqlx's pool: [`Conns`].
//!
//! sqlx's pool tests every connection as it comes back (a ping: a round trip to the
//! connection's thread, run in a task it spawns), so each statement run on the pool cost two
//! hand-offs between tokio and SQLite's thread instead of one, and a sync makes a dozen of them.
//! A network connection can be lost between uses; an embedded one cannot. What the test also
//! did, flushing the rollback of a transaction its user dropped, is done here by the next user
//! of the connection, before anything else ([`Conn`]'s `needs_rollback`).
//!
//! Invariants:
//! - at most `size` connections exist; each is used by one holder at a time;
//! - a connection comes back to the idle list only when its holder lets go of it; one that
//!   was inside a transaction when let go (the holder was cancelled, or its COMMIT failed)
//!   is rolled back before its next use;
//! - a connection whose state cannot be trusted is dropped ([`Conn::discard`]) and a fresh one
//!   opened on demand (file stores only: an in-memory database lives in its connection).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement};
use sqlx::{ConnectOptions, Connection, Either, Execute, Executor, SqlStr, Sqlite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a caller waits for a free connection before the store answers an error (as
/// sqlx's pool did).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A fixed set of SQLite connections, opened on first use. Cloning shares the set.
#[derive(Clone)]
pub(crate) struct Conns(Arc<Inner>);

struct Inner {
    options: SqliteConnectOptions,
    size: u32,
    /// Connections not in use, each with whether it must be rolled back before its next use.
    idle: Mutex<Vec<(sqlx::SqliteConnection, bool)>>,
    /// One permit per connection that may exist; closed by [`Conns::close`].
    permits: Arc<Semaphore>,
}

impl fmt::Debug for Conns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conns")
            .field("size", &self.0.size)
            .finish_non_exhaustive()
    }
}

impl Conns {
    /// A set of at most `size` connections opened with `options`; the first is opened now, so
    /// a database that cannot be opened is an error here.
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        size: u32,
    ) -> Result<Conns, sqlx::Error> {
        let first = options.connect().await?;
        Ok(Conns(Arc::new(Inner {
            options,
            size,
            idle: Mutex::new(vec![(first, false)]),
            permits: Arc::new(Semaphore::new(size as usize)),
        })))
    }

    /// A connection for the caller alone, until the [`Conn`] is dropped.
    pub(crate) async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.0.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self
            .0
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (mut conn, needs_rollback) = match idle {
            Some(idle) => idle,
            None => (self.0.options.connect().await?, false),
        };
        if needs_rollback {
            // Its last holder let go inside a transaction. SQLite may have ended it already
            // (a failed COMMIT can roll back by itself): "no transaction is active" is fine.
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut conn).await {
                tracing::debug!(error = %e, "rolling back a transaction left open");
            }
        }
        Ok(Conn {
            conn: Some(conn),
            needs_rollback: false,
            home: self.0.clone(),
            _permit: permit,
        })
    }

    /// Waits until every connection is let go of, then closes them all; later acquires fail.
    pub(crate) async fn close(&self) {
        let Ok(all) = self.0.permits.acquire_many(self.0.size).await else {
            return; // already closed
        };
        self.0.permits.close();
        drop(all);
        let idle = std::mem::take(&mut *self.0.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

/// One connection of a [`Conns`], back in the set when dropped.
pub(crate) struct Conn {
    conn: Option<sqlx::SqliteConnection>,
    /// Inside a transaction this holder has not ended: rolled back before the next use.
    needs_rollback: bool,
    home: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Closes this connection instead of putting it back: the next acquire opens a fresh one.
    pub(crate) async fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        self.conn
            .as_ref()
            .expect("a Conn holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn
            .as_mut()
            .expect("a Conn holds its connection until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.home.permits.is_closed() {
            return; // the set was closed meanwhile: dropping the connection closes it
        }
        self.home
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((conn, self.needs_rollback));
        // The permit goes back after this, with the connection already idle.
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on a connection of the writer set. Dropped without
/// [`SqliteTx::commit`], it is rolled back before the connection's next use.
pub(crate) struct SqliteTx {
    conn: Conn,
}

/// SQLite's answer to a BEGIN on a connection already inside a transaction.
fn is_nested_begin(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains("within a transaction"))
}

impl SqliteTx {
    /// Begins a write transaction on a connection of `writer`. A connection found still inside
    /// a transaction (its rollback failed) is closed when `reopen` allows (file stores), and the
    /// transaction begun on a fresh one.
    pub(crate) async fn begin(writer: &Conns, reopen: bool) -> Result<SqliteTx, sqlx::Error> {
        let mut conn = writer.acquire().await?;
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            Ok(_) => {}
            Err(e) if reopen && is_nested_begin(&e) => {
                tracing::warn!(
                    "the store's write connection was left inside a failed transaction; reopening it"
                );
                conn.discard().await;
                conn = writer.acquire().await?;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            }
            Err(e) => {
                // BEGIN IMMEDIATE failed (busy, I/O): no transaction to end.
                return Err(e);
            }
        }
        conn.needs_rollback = true;
        Ok(SqliteTx { conn })
    }

    /// Commits. A failed COMMIT leaves the connection to be rolled back before its next use.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.conn.needs_rollback = false;
        Ok(())
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// `query.fetch_all(&conns)` and the like: the statement runs on a connection acquired for it,
/// its results collected before the connection goes back (the store reads no unbounded
/// streams through this).
impl<'p> Executor<'p> for &'_ Conns {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let conns = self.clone();
        futures_util::stream::once(async move {
            match conns.acquire().await {
                Ok(mut conn) => conn.fetch_many(query).collect::<Vec<_>>().await,
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(futures_util::stream::iter)
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let conns = self.clone();
        Box::pin(async move { conns.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [sqlx::sqlite::SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        let conns = self.clone();
        Box::pin(async move { conns.acquire().await?.prepare_with(sql, parameters).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory() -> Conns {
        Conns::open(SqliteConnectOptions::new().in_memory(true), 1)
            .await
            .unwrap()
    }

    async fn count(conns: &Conns) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(conns)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_transaction_let_go_of_is_rolled_back_before_the_connection_is_used_again() {
        let conns = memory().await;
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&conns)
            .await
            .unwrap();
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Dropped inside its transaction (its holder cancelled, say).
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        assert_eq!(count(&conns).await, 1, "the dropped insert is rolled back");
        // And the connection begins again (it is not still inside the old transaction).
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&conns).await, 2);
        // A future cancelled between its statements leaves the same.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), async {
            let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
            sqlx::query("INSERT INTO t VALUES (4)")
                .execute(&mut *tx)
                .await
                .unwrap();
            std::future::pending::<()>().await;
        })
        .await;
        assert!(cancelled.is_err());
        assert_eq!(count(&conns).await, 2);
    }

    #[tokio::test]
    async fn a_connection_is_held_by_one_user_at_a_time_and_none_after_close() {
        let conns = memory().await;
        let held = conns.acquire().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), conns.acquire()).await;
        assert!(
            waiting.is_err(),
            "a second user waits for the only connection"
        );
        let conns2 = conns.clone();
        let next = tokio::spawn(async move { conns2.acquire().await.map(drop) });
        drop(held);
        next.await.unwrap().unwrap();
        conns.close().await;
        assert!(matches!(
            conns.acquire().await,
            Err(sqlx::Error::PoolClosed)
        ));
    }
}
