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

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement,
};
use sqlx::{Arguments, ConnectOptions, Connection, Either, Execute, Executor, SqlStr, Sqlite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a caller waits for a free connection before the store answers an error (as
/// sqlx's pool did).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hand-offs to SQLite's connection threads since the process started (statements or
/// batches sent, each answered on the caller's side: a thread wake-up on each side).
static ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many round trips to SQLite's connection threads this process has made (see
/// [`ROUND_TRIPS`]): what benchmarks divide by the work done.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a round trip about to be made for `sql` (logged at trace level, target
/// `confsync_store::round_trips`, to see where they come from).
fn trip(sql: &str) {
    ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::trace!(target: "confsync_store::round_trips", sql = sql.get(..sql.len().min(120)).unwrap_or(sql));
}

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
        crate::sqlite_memory::configure();
        let first = options.connect().await?;
        Ok(Conns(Arc::new(Inner {
            options,
            size,
            idle: Mutex::new(vec![(first, false)]),
            permits: Arc::new(Semaphore::new(size as usize)),
        })))
    }

    /// Whether `other` is this same set (a clone of it).
    pub(crate) fn same_set(&self, other: &Conns) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many connections the set may hold.
    pub(crate) fn size(&self) -> u32 {
        self.0.size
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
        let mut stuck = false;
        if needs_rollback {
            // Its last holder let go inside a transaction. SQLite may have ended it already
            // (a failed COMMIT can roll back by itself): "no transaction is active" is fine.
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut conn).await {
                tracing::debug!(error = %e, "rolling back a transaction left open");
                stuck = !matches!(&e, sqlx::Error::Database(d) if d.message().contains("no transaction is active"));
            }
        }
        Ok(Conn {
            conn: Some(conn),
            needs_rollback: false,
            stuck,
            home: self.0.clone(),
            _permit: permit,
        })
    }

    /// Runs `query`, a batch of statements that begins its own transaction and commits it
    /// (`BEGIN IMMEDIATE; ...; COMMIT`), on one connection in ONE hand-off to its thread;
    /// answers the rows its statements returned, in order. A batch that fails part way leaves
    /// its transaction open: the connection is rolled back before its next use, as a
    /// [`SqliteTx`] dropped uncommitted is.
    pub(crate) async fn transaction_batch<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut conn = self.acquire().await?;
        conn.needs_rollback = true;
        trip("(a transaction in one batch)");
        let rows = query.fetch_all(&mut *conn).await?;
        conn.needs_rollback = false;
        Ok(rows)
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
    /// Its rollback before this use failed: it may still be inside that transaction.
    stuck: bool,
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
///
/// Each round trip to the connection's thread is a thread wake-up on each side, which costs
/// more than the short statements of a sync. So the transaction sends as few as it can:
/// - its `BEGIN IMMEDIATE` goes with its first statement (the connection is this
///   transaction's alone from [`SqliteTx::begin`], so nothing else runs in between);
/// - statements whose outcome the caller does not need ([`SqliteTx::defer`]) go with the
///   next statement or the COMMIT. An error of a deferred statement is the error of the
///   statement it went with, and fails the transaction all the same.
///
/// Statements run through `&mut SqliteTx` as an sqlx [`Executor`]; the connection itself is
/// not handed out, so nothing can bypass the BEGIN.
pub(crate) struct SqliteTx {
    conn: Conn,
    /// `BEGIN IMMEDIATE` has been sent.
    begun: bool,
    /// Statements to send with the next one.
    pending: Vec<(Cow<'static, str>, Vec<Arg>)>,
}

/// A value bound to a deferred statement ([`SqliteTx::defer`]).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
    Bool(bool),
}

impl Arg {
    pub(crate) fn add_to(self, args: &mut SqliteArguments) -> Result<(), sqlx::Error> {
        match self {
            Arg::Text(v) => args.add(v),
            Arg::Int(v) => args.add(v),
            Arg::OptText(v) => args.add(v),
            Arg::OptInt(v) => args.add(v),
            Arg::Bool(v) => args.add(v),
        }
        .map_err(sqlx::Error::Encode)
    }
}

/// `sql` with each `$N` placeholder outside quotes shifted by `offset` (`$1` -> `$(1+offset)`):
/// a statement sent after others in one batch takes its values after theirs.
pub(crate) fn shift_placeholders(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                out.push('$');
                out.push_str(&(n + offset).to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

impl fmt::Debug for SqliteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTx")
            .field("begun", &self.begun)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl SqliteTx {
    /// A write transaction on a connection of `writer` (its BEGIN is sent with its first
    /// statement). A connection that may still be inside an earlier transaction (its rollback
    /// failed) is closed when `reopen` allows (file stores), and a fresh one taken.
    pub(crate) async fn begin(writer: &Conns, reopen: bool) -> Result<SqliteTx, sqlx::Error> {
        let mut conn = writer.acquire().await?;
        if conn.stuck && reopen {
            tracing::warn!(
                "the store's write connection was left inside a failed transaction; reopening it"
            );
            conn.discard().await;
            conn = writer.acquire().await?;
        }
        // From here on, a holder letting go rolls back (harmless if nothing was begun).
        conn.needs_rollback = true;
        Ok(SqliteTx {
            conn,
            begun: false,
            pending: Vec::new(),
        })
    }

    /// Queues `sql` (its `$N` bound to `args`) to be sent with the transaction's next
    /// statement or its COMMIT: for statements whose outcome the caller does not look at.
    pub(crate) fn defer(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) {
        self.pending.push((sql.into(), args));
    }

    /// `sql` with what must go before it (the BEGIN, deferred statements) and their values
    /// after `args`; and how many statements go before it.
    fn batch(
        &mut self,
        sql: &str,
        mut args: SqliteArguments,
    ) -> Result<(String, SqliteArguments, usize), sqlx::Error> {
        let mut before = 0;
        let mut batch = String::new();
        if !self.begun {
            batch.push_str("BEGIN IMMEDIATE; ");
            before += 1;
            self.begun = true;
        }
        for (deferred, values) in std::mem::take(&mut self.pending) {
            batch.push_str(&shift_placeholders(&deferred, args.len()));
            batch.push_str("; ");
            for value in values {
                value.add_to(&mut args)?;
            }
            before += 1;
        }
        batch.push_str(sql);
        Ok((batch, args, before))
    }

    /// Commits (with whatever is still to send). A failed COMMIT leaves the connection to be
    /// rolled back before its next use. A transaction that sent nothing has nothing to commit.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.begun || !self.pending.is_empty() {
            let (sql, args, _) = self.batch("COMMIT", SqliteArguments::default())?;
            trip(&sql);
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(&mut *self.conn)
                .await?;
        }
        self.conn.needs_rollback = false;
        Ok(())
    }

    /// Commits with `sql` (its `$N` bound to `args`) run last before the COMMIT, in the same
    /// round trip as whatever is still to send; answers `sql`'s rows. For a statement whose
    /// answer the caller wants once the transaction is done (a pass's last page records the
    /// pass and learns whether a trigger came since).
    pub(crate) async fn commit_with(
        mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut values = SqliteArguments::default();
        for arg in args {
            arg.add_to(&mut values)?;
        }
        let (mut batch, values, mut before) = self.batch(sql, values)?;
        batch.push_str("; COMMIT");
        trip(&batch);
        let results: Vec<_> = self
            .conn
            .fetch_many(sqlx::query_with(sqlx::AssertSqlSafe(batch), values))
            .collect()
            .await;
        let mut rows = Vec::new();
        for result in results {
            match result? {
                // The statements sent before `sql` return no rows: one result each.
                Either::Left(_) if before > 0 => before -= 1,
                Either::Left(_) => {}
                Either::Right(row) => rows.push(row),
            }
        }
        self.conn.needs_rollback = false;
        Ok(rows)
    }
}

/// A statement inside the transaction: sent with the BEGIN and deferred statements still to
/// send, in ONE round trip; the caller sees its own statement's results only.
impl<'c> Executor<'c> for &'c mut SqliteTx {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        mut query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let persistent = query.persistent();
        let args = query.take_arguments();
        let sql = query.sql();
        futures_util::stream::once(async move {
            let args = match args {
                Ok(args) => args.unwrap_or_default(),
                Err(e) => return vec![Err(sqlx::Error::Encode(e))],
            };
            let (batch, args, mut before) = match self.batch(sql.as_str(), args) {
                Ok(batch) => batch,
                Err(e) => return vec![Err(e)],
            };
            trip(&batch);
            let results: Vec<_> = self
                .conn
                .fetch_many(
                    sqlx::query_with(sqlx::AssertSqlSafe(batch), args).persistent(persistent),
                )
                .collect()
                .await;
            // The statements sent before the caller's return no rows: one result each.
            results
                .into_iter()
                .filter(|r| match r {
                    Ok(Either::Left(_)) if before > 0 => {
                        before -= 1;
                        false
                    }
                    _ => true,
                })
                .collect()
        })
        .flat_map(futures_util::stream::iter)
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        Box::pin(async move {
            let mut results = self.fetch_many(query);
            while let Some(result) = results.next().await {
                if let Either::Right(row) = result? {
                    return Ok(Some(row));
                }
            }
            Ok(None)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [sqlx::sqlite::SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            trip(sql.as_str());
            self.conn.prepare_with(sql, parameters).await
        })
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
                Ok(mut conn) => {
                    trip("(a statement outside a transaction)");
                    conn.fetch_many(query).collect::<Vec<_>>().await
                }
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
        Box::pin(async move {
            let mut conn = conns.acquire().await?;
            trip("(a statement outside a transaction)");
            conn.fetch_optional(query).await
        })
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
        Box::pin(async move {
            let mut conn = conns.acquire().await?;
            trip(sql.as_str());
            conn.prepare_with(sql, parameters).await
        })
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
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Dropped inside its transaction (its holder cancelled, say).
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut tx)
            .await
            .unwrap();
        drop(tx);
        assert_eq!(count(&conns).await, 1, "the dropped insert is rolled back");
        // And the connection begins again (it is not still inside the old transaction).
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&conns).await, 2);
        // A future cancelled between its statements leaves the same.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), async {
            let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
            sqlx::query("INSERT INTO t VALUES (4)")
                .execute(&mut tx)
                .await
                .unwrap();
            std::future::pending::<()>().await;
        })
        .await;
        assert!(cancelled.is_err());
        assert_eq!(count(&conns).await, 2);
    }

    #[test]
    fn placeholders_shift_outside_quotes_only() {
        assert_eq!(
            shift_placeholders(
                "UPDATE t SET a = $1, b = '$2', \"$3\" = $10 WHERE c = $2",
                3
            ),
            "UPDATE t SET a = $4, b = '$2', \"$3\" = $13 WHERE c = $5"
        );
        assert_eq!(
            shift_placeholders("SELECT 'it''s $1', $1", 1),
            "SELECT 'it''s $1', $2"
        );
        assert_eq!(shift_placeholders("SELECT $1", 0), "SELECT $1");
    }

    #[tokio::test]
    async fn deferred_statements_run_in_order_with_the_next_statement_or_the_commit() {
        let conns = memory().await;
        sqlx::query("CREATE TABLE t (x INTEGER, y TEXT)")
            .execute(&conns)
            .await
            .unwrap();
        let rows = |conns: &Conns| {
            let conns = conns.clone();
            async move {
                sqlx::query_as::<_, (i64, String)>("SELECT x, y FROM t ORDER BY x")
                    .fetch_all(&conns)
                    .await
                    .unwrap()
            }
        };
        // Deferred before a statement with values of its own: each takes its own values.
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        tx.defer(
            "INSERT INTO t VALUES ($1, $2)",
            vec![Arg::Int(1), Arg::Text("one".into())],
        );
        tx.defer(
            "INSERT INTO t VALUES ($2, $1)",
            vec![Arg::Text("two".into()), Arg::Int(2)],
        );
        let seen: Vec<(i64, String)> =
            sqlx::query_as("SELECT x, y FROM t WHERE x >= $1 ORDER BY x")
                .bind(0)
                .fetch_all(&mut tx)
                .await
                .unwrap();
        assert_eq!(
            seen,
            vec![(1, "one".into()), (2, "two".into())],
            "run before it, in order"
        );
        let done = sqlx::query("UPDATE t SET y = $1 WHERE x = 2")
            .bind("deux")
            .execute(&mut tx)
            .await
            .unwrap();
        assert_eq!(
            done.rows_affected(),
            1,
            "the caller sees its own statement's count"
        );
        tx.defer(
            "INSERT INTO t VALUES ($1, $2)",
            vec![Arg::Int(3), Arg::Text("three".into())],
        );
        tx.commit().await.unwrap();
        assert_eq!(
            rows(&conns).await,
            vec![(1, "one".into()), (2, "deux".into()), (3, "three".into())],
            "the last one went with the COMMIT"
        );
        // A deferred statement that fails fails the statement it went with, and the
        // transaction comes to nothing.
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        tx.defer(
            "INSERT INTO t VALUES ($1, $2)",
            vec![Arg::Int(4), Arg::Text("four".into())],
        );
        tx.defer("INSERT INTO nowhere VALUES ($1)", vec![Arg::Int(5)]);
        assert!(sqlx::query("DELETE FROM t").execute(&mut tx).await.is_err());
        drop(tx);
        assert_eq!(rows(&conns).await.len(), 3);
        // Nor when it goes with the COMMIT.
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("DELETE FROM t").execute(&mut tx).await.unwrap();
        tx.defer("INSERT INTO nowhere VALUES ($1)", vec![Arg::Int(5)]);
        assert!(tx.commit().await.is_err());
        assert_eq!(
            rows(&conns).await.len(),
            3,
            "the failed commit's delete is rolled back"
        );
        // A transaction that sent nothing commits nothing, and the connection goes on.
        SqliteTx::begin(&conns, false)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        let mut tx = SqliteTx::begin(&conns, false).await.unwrap();
        sqlx::query("DELETE FROM t").execute(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&conns).await.len(), 0);
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
