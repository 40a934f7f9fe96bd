//! Leases: how several workers share one store's work with no leader, and how the work of a
//! worker that died goes to the others.
//!
//! - Outbox rows are claimed with a lease and a fence ([`Store::claim_due`] in `outbox.rs`).
//! - A calendar is synced by one worker at a time: [`Store::lease_calendar`] takes its sync
//!   lease (Postgres: the `sync_*` columns of `calendars`; SQLite, which one process holds
//!   alone: [`LocalLeases`], in memory, so taking one costs a read and no write), renewed while
//!   the pass runs ([`Store::renew_calendar_leases`]) and released at its end; a dead worker's
//!   lease expires.
//! - Singleton duties (the sweep, channel renewal, clean-ups, retention) are rows of `duties`:
//!   [`Store::take_duty`] answers whether this worker holds the duty now; the holder keeps it by
//!   taking it again before it expires, and another worker gets it once it has.
//! - Wake-ups: on Postgres, a worker that queues outbox rows sends a notification on the
//!   store's channel ([`Store::notify_outbox`]); the others listen ([`Store::listen`]) and
//!   drain at once instead of at their next poll. Polling stays the fallback: a notification
//!   sent while a listener was reconnecting is lost, and nothing depends on it.
//!
//! Every lease has an expiry in unix ms compared with the caller's `now_ms`: workers' clocks
//! must agree to well within a lease (NTP does this).

use crate::db::{Cols, Db, on_write};
use crate::{CalendarState, Store, calendars};

/// Takes the session advisory lock `key` on a connection of its own, kept out of the pool.
async fn hold_lock(pool: &sqlx::PgPool, key: i64) -> Result<sqlx::PgConnection, StoreError> {
    let what = || "taking the worker's liveness lock".to_owned();
    let mut connection = pool.acquire().await.ctx(what)?.detach();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut connection)
        .await
        .ctx(what)?;
    Ok(connection)
}
use crate::error::{Context, StoreError};

/// A worker's name for its leases: unique per process (host, pid and a random part), never a
/// secret.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let mut random = [0u8; 4];
    // The random part only keeps two processes with the same pid (containers) apart.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, b) in random.iter_mut().enumerate() {
        *b = (seed >> (i * 8)) as u8 ^ (std::process::id() >> (i * 3)) as u8;
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{}-{hex}", std::process::id())
}

/// Postgres: true when the advisory lock `key` is held by no session of this database, i.e. the
/// worker whose liveness lock it is has died (its connection closed). Used inside the lease
/// conditions as `NOT EXISTS (... = <column>)`.
macro_rules! holder_alive {
    ($column:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = ",
            $column,
            ")"
        )
    };
}
pub(crate) use holder_alive;

/// How often the liveness connection is checked.
const LIVENESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// SQLite's calendar sync leases. An SQLite store is one process's alone
/// ([`Store::claim_single_process`]), so its leases need not be in the database: a lease there
/// cost a write transaction (and a WAL commit) per pass, here it costs nothing, and a process
/// that dies takes its leases with it. The semantics are the columns': one holder at a time
/// until the lease's expiry by the caller's clock (a holder that stops renewing loses it), the
/// same worker may take its own lease again, every take bumps the fence, and a release or a
/// renewal by anyone but the holder (by worker and fence) changes nothing.
#[derive(Debug, Default)]
pub(crate) struct LocalLeases(std::sync::Mutex<Local>);

#[derive(Debug, Default)]
struct Local {
    /// The last fence handed out (fences are unique in the process, so per calendar too).
    fence: i64,
    /// Calendar id -> its lease; released ones are removed.
    held: std::collections::HashMap<String, Held>,
}

#[derive(Debug)]
struct Held {
    owner: String,
    until: i64,
    /// 0 while being taken (the calendar's state is being read).
    fence: i64,
}

impl LocalLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts taking `calendar_id`'s lease for `worker`: false when another worker holds it.
    fn begin_take(&self, calendar_id: &str, worker: &str, now_ms: i64, lease_ms: i64) -> bool {
        let mut local = self.lock();
        if let Some(held) = local.held.get(calendar_id)
            && held.until > now_ms
            && held.owner != worker
        {
            return false;
        }
        local.held.insert(
            calendar_id.to_owned(),
            Held {
                owner: worker.to_owned(),
                until: now_ms + lease_ms,
                fence: 0,
            },
        );
        true
    }

    /// Ends a take [`LocalLeases::begin_take`] started: the lease's fence, or None (and no
    /// lease) when the calendar is not known or someone took the lease meanwhile.
    fn finish_take(&self, calendar_id: &str, worker: &str, known: bool) -> Option<i64> {
        let mut local = self.lock();
        let ours = local
            .held
            .get(calendar_id)
            .is_some_and(|held| held.owner == worker && held.fence == 0);
        if !ours {
            return None;
        }
        if !known {
            local.held.remove(calendar_id);
            return None;
        }
        local.fence += 1;
        let fence = local.fence;
        if let Some(held) = local.held.get_mut(calendar_id) {
            held.fence = fence;
        }
        Some(fence)
    }

    fn renew(&self, worker: &str, calendar_ids: &[String], until: i64) -> u64 {
        let mut local = self.lock();
        let mut renewed = 0;
        for id in calendar_ids {
            if let Some(held) = local.held.get_mut(id)
                && held.owner == worker
            {
                held.until = until;
                renewed += 1;
            }
        }
        renewed
    }

    /// Ends `worker`'s lease taken with `fence`; another's is left alone.
    pub(crate) fn release(&self, calendar_id: &str, worker: &str, fence: i64) {
        let mut local = self.lock();
        if local
            .held
            .get(calendar_id)
            .is_some_and(|held| held.owner == worker && held.fence == fence)
        {
            local.held.remove(calendar_id);
        }
    }

    /// Ends every lease of `worker` (of everyone with None); answers how many.
    fn release_all(&self, worker: Option<&str>) -> u64 {
        let mut local = self.lock();
        let before = local.held.len();
        local
            .held
            .retain(|_, held| worker.is_some_and(|w| held.owner != w));
        (before - local.held.len()) as u64
    }

    /// Whether someone holds `calendar_id`'s lease at `now_ms`.
    pub(crate) fn held(&self, calendar_id: &str, now_ms: i64) -> bool {
        self.lock()
            .held
            .get(calendar_id)
            .is_some_and(|held| held.until > now_ms)
    }
}

/// A completed pass: its lease ends (`$2` the worker, `$3` the fence; another worker's lease
/// is left alone) and the triggers recorded by generation `$4` are answered; answers whether
/// the calendar is still dirty. [`Store::finish_sync`], and a pass's last page
/// ([`Store::commit_last_page`]).
pub(crate) const FINISH_SYNC: &str = "UPDATE calendars SET \
     sync_owner = CASE WHEN sync_owner = $2 AND sync_fence = $3 THEN NULL ELSE sync_owner END, \
     sync_until = CASE WHEN sync_owner = $2 AND sync_fence = $3 THEN 0 ELSE sync_until END, \
     dirty_at = CASE WHEN dirty_gen = $4 THEN NULL ELSE dirty_at END, \
     sync_failures = 0, retry_at = NULL, last_error = NULL \
     WHERE calendar_id = $1 RETURNING dirty_at IS NOT NULL";

impl Store {
    /// Postgres: makes `worker`'s liveness visible to the other workers. The process holds a
    /// session advisory lock (keyed by the worker's name and the schema) on a connection of its
    /// own for as long as it lives; claims it takes record the key, and when the process dies
    /// (however it dies: Postgres drops its sessions when their connection closes) the others
    /// take its claims over at once instead of when they expire. A failed liveness connection
    /// is replaced (meanwhile the others may take its claims over; fences refuse its late
    /// reports). Without a registration claims last until they expire. SQLite: no-op.
    pub async fn register_worker(&self, worker: &str) -> Result<(), StoreError> {
        let Db::Postgres {
            pool,
            schema,
            liveness,
            ..
        } = &self.db
        else {
            return Ok(());
        };
        if liveness.get().is_some() {
            return Ok(());
        }
        let key = crate::db::lock_key(&format!("worker:{worker}"), schema);
        let connection = hold_lock(pool, key).await?;
        let _ = liveness.set((worker.to_owned(), key));
        let now = self.now();
        on_write!(self, c => sqlx::query(
            "INSERT INTO workers (name, lock_key, started_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET lock_key = excluded.lock_key, started_at = excluded.started_at",
        )
        .bind(worker)
        .bind(key)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| "registering the worker".to_owned())?;
        on_write!(self, c => sqlx::query(concat!(
            "DELETE FROM workers WHERE NOT ",
            holder_alive!("workers.lock_key")
        ))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| "forgetting dead workers".to_owned())?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut connection = connection;
            loop {
                tokio::time::sleep(LIVENESS_CHECK).await;
                let alive = tokio::time::timeout(LIVENESS_CHECK * 5, async {
                    sqlx::Connection::ping(&mut connection).await
                })
                .await;
                if matches!(alive, Ok(Ok(()))) {
                    continue;
                }
                tracing::error!(
                    "the worker's liveness connection failed: other workers may take its work over; reconnecting"
                );
                loop {
                    match hold_lock(&pool, key).await {
                        Ok(c) => {
                            connection = c;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot restore the liveness connection; retrying");
                            tokio::time::sleep(LIVENESS_CHECK).await;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// The live workers sharing a Postgres store (name, when it started), oldest first: those
    /// registered whose liveness lock is held. SQLite: none (one process owns the store).
    pub async fn live_workers(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let Db::Postgres { pool, .. } = &self.db else {
            return Ok(Vec::new());
        };
        sqlx::query_as(concat!(
            "SELECT name, started_at FROM workers WHERE ",
            holder_alive!("workers.lock_key"),
            " ORDER BY started_at, name"
        ))
        .fetch_all(pool)
        .await
        .ctx(|| "listing live workers".to_owned())
    }

    /// The liveness key claims by `worker` record: its lock key when this process registered
    /// it, else 0 (claims then last until they expire).
    pub(crate) fn liveness_key(&self, worker: &str) -> i64 {
        match &self.db {
            Db::Postgres { liveness, .. } => liveness
                .get()
                .filter(|(registered, _)| registered == worker)
                .map_or(0, |(_, key)| *key),
            Db::Sqlite { .. } => 0,
        }
    }

    /// Takes `calendar_id`'s sync lease for `worker` until `now_ms + lease_ms`, unless another
    /// worker holds a lease that has not expired. Answers the lease's fence (bumped by every
    /// take), or None when the calendar is busy elsewhere (or unknown).
    pub async fn lease_calendar(
        &self,
        calendar_id: &str,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .lease_calendar_with_state(calendar_id, worker, now_ms, lease_ms)
            .await?
            .map(|(fence, _)| fence))
    }

    /// [`Store::lease_calendar`], answering with the fence the calendar's sync state as the
    /// lease found it ([`Store::calendar`]): on Postgres read by the same statement, on SQLite
    /// read once the lease is held ([`LocalLeases`]).
    pub async fn lease_calendar_with_state(
        &self,
        calendar_id: &str,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<(i64, CalendarState)>, StoreError> {
        let what = || format!("taking the sync lease of calendar {calendar_id}");
        let result = match &self.db {
            // In this process, and the calendar's state read on a read connection: no write.
            // The lease is taken before the read, so the state read is at least as new as the
            // last pass's commit (its holder released the lease after its commit).
            Db::Sqlite { .. } => {
                let leases = &self.local_leases;
                if !leases.begin_take(calendar_id, worker, now_ms, lease_ms) {
                    return Ok(None);
                }
                let state = self.calendar(calendar_id).await;
                let known = matches!(state, Ok(Some(_)));
                let fence = leases.finish_take(calendar_id, worker, known);
                return Ok(fence.zip(state?));
            }
            // A lease whose holder died (its liveness lock is gone) is taken at once.
            Db::Postgres { .. } => on_write!(self, c => sqlx::query(sqlx::AssertSqlSafe(format!(
                concat!(
                    "UPDATE calendars SET sync_owner = $2, sync_until = $4, sync_fence = sync_fence + 1, sync_key = $5 \
                     WHERE calendar_id = $1 AND (sync_until <= $3 OR sync_owner = $2 \
                       OR (sync_key <> 0 AND NOT ",
                    holder_alive!("calendars.sync_key"),
                    ")) RETURNING sync_fence, {}"
                ),
                calendars::COLUMNS
            )))
            .bind(calendar_id)
            .bind(worker)
            .bind(now_ms)
            .bind(now_ms + lease_ms)
            .bind(self.liveness_key(worker))
            .fetch_optional(c)
            .await
            .and_then(|row| leased(row.as_ref())))
            .ctx(what),
        };
        self.note_write(&result);
        result
    }

    /// Extends `worker`'s sync leases on these calendars to `now_ms + lease_ms` (passes still
    /// running). Answers how many were extended.
    pub async fn renew_calendar_leases(
        &self,
        worker: &str,
        calendar_ids: &[String],
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        if let Db::Sqlite { .. } = &self.db {
            return Ok(self
                .local_leases
                .renew(worker, calendar_ids, now_ms + lease_ms));
        }
        let mut renewed = 0;
        for chunk in crate::db::chunks(calendar_ids, 500) {
            renewed += on_write!(self, c => {
                let mut query = sqlx::QueryBuilder::new("UPDATE calendars SET sync_until = ");
                query
                    .push_bind(now_ms + lease_ms)
                    .push(" WHERE sync_owner = ")
                    .push_bind(worker)
                    .push(" AND calendar_id IN (");
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                query.push(")");
                query.build().execute(c).await.map(|r| r.rows_affected())
            })
            .ctx(|| format!("renewing {} calendar sync leases", chunk.len()))?;
        }
        Ok(renewed)
    }

    /// Ends `worker`'s sync lease on `calendar_id` (taken with `fence`); another worker's lease
    /// is left alone.
    pub async fn release_calendar(
        &self,
        calendar_id: &str,
        worker: &str,
        fence: i64,
    ) -> Result<(), StoreError> {
        if let Db::Sqlite { .. } = &self.db {
            self.local_leases.release(calendar_id, worker, fence);
            return Ok(());
        }
        on_write!(self, c => sqlx::query(
            "UPDATE calendars SET sync_owner = NULL, sync_until = 0 \
             WHERE calendar_id = $1 AND sync_owner = $2 AND sync_fence = $3",
        )
        .bind(calendar_id)
        .bind(worker)
        .bind(fence)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("releasing the sync lease of calendar {calendar_id}"))?;
        Ok(())
    }

    /// Ends `worker`'s sync lease on `calendar_id` (taken with `fence`; another worker's lease
    /// is left alone) after a pass that completed, and records it as
    /// [`Store::sync_succeeded`] does for `answered_gen` (the trigger generation read before
    /// the pass), in one statement: answers true when the calendar is still dirty (a trigger
    /// arrived during the pass, here or at another worker).
    pub async fn finish_sync(
        &self,
        calendar_id: &str,
        worker: &str,
        fence: i64,
        answered_gen: i64,
    ) -> Result<bool, StoreError> {
        let still_dirty: Option<bool> = on_write!(self, c => sqlx::query_scalar(FINISH_SYNC)
        .bind(calendar_id)
        .bind(worker)
        .bind(fence)
        .bind(answered_gen)
        .fetch_optional(c)
        .await)
        .ctx(|| format!("recording a completed pass of calendar {calendar_id}"))?;
        self.local_leases.release(calendar_id, worker, fence);
        Ok(still_dirty.unwrap_or(false))
    }

    /// Whether `worker` holds the singleton duty `name` until `now_ms + ttl_ms`: it does when
    /// nobody held it, when it held it already (renewed), or when the holder's time ran out
    /// (taken over). A holder keeps a duty by taking it again well before `ttl_ms` passes.
    pub async fn take_duty(
        &self,
        name: &str,
        worker: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let fence: Option<i64> = on_write!(self, c => sqlx::query_scalar(
            "INSERT INTO duties (name, holder, until, fence) VALUES ($1, $2, $4, 1) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until, \
                 fence = CASE WHEN duties.holder = excluded.holder THEN duties.fence ELSE duties.fence + 1 END \
             WHERE duties.holder = excluded.holder OR duties.until <= $3 \
             RETURNING fence",
        )
        .bind(name)
        .bind(worker)
        .bind(now_ms)
        .bind(now_ms + ttl_ms)
        .fetch_optional(c)
        .await)
        .ctx(|| format!("taking the duty {name}"))?;
        Ok(fence.is_some())
    }

    /// Ends every lease `worker` holds (outbox claims, calendar syncs, duties): a worker that
    /// stops cleanly hands its work over at once instead of after the lease time. With `worker`
    /// None, every lease of every worker: only for a store this process holds alone (an SQLite
    /// file after its claim: whoever held leases before is dead). Answers how many were ended.
    pub async fn release_leases(&self, worker: Option<&str>) -> Result<u64, StoreError> {
        let what = || "releasing leases".to_owned();
        let any = worker.is_none();
        let worker_name = worker;
        let worker = worker.unwrap_or("");
        // Three single statements on lease columns only (see `crate::db`).
        let mut tx = self.write_tx_keyed(self.lock_keys(), what).await?;
        let mut released = self.local_leases.release_all(worker_name);
        released += crate::db::on_tx!(&mut tx, c => sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = 0 \
             WHERE lease_owner IS NOT NULL AND state = 'pending' AND ($1 OR lease_owner = $2)",
        )
        .bind(any)
        .bind(worker)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        released += crate::db::on_tx!(&mut tx, c => sqlx::query(
            "UPDATE calendars SET sync_owner = NULL, sync_until = 0 \
             WHERE sync_owner IS NOT NULL AND ($1 OR sync_owner = $2)",
        )
        .bind(any)
        .bind(worker)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        released += crate::db::on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM duties WHERE $1 OR holder = $2",
        )
        .bind(any)
        .bind(worker)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(released)
    }

    /// Who holds each duty and until when (status, tests).
    pub async fn duties(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        crate::db::on_read!(self, c => sqlx::query_as(
            "SELECT name, holder, until FROM duties ORDER BY name",
        )
        .fetch_all(c)
        .await)
        .ctx(|| "listing duties".to_owned())
    }

    /// Postgres: tells every listening worker that outbox rows were queued. SQLite: nothing
    /// (one process; its drainer is woken in process). Best effort: a lost notification costs a
    /// poll interval.
    pub async fn notify_outbox(&self) {
        if let Db::Postgres { pool, channel, .. } = &self.db
            && let Err(e) = sqlx::query("SELECT pg_notify($1, 'outbox')")
                .bind(channel.as_ref())
                .execute(pool)
                .await
        {
            tracing::debug!(error = %e, "could not notify other workers");
        }
    }

    /// Postgres: a listener on the store's notification channel; None for SQLite.
    pub async fn listen(&self) -> Result<Option<Listener>, StoreError> {
        let Db::Postgres { pool, channel, .. } = &self.db else {
            return Ok(None);
        };
        let what = || "listening for other workers' notifications".to_owned();
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .ctx(what)?;
        listener.listen(channel).await.ctx(what)?;
        Ok(Some(Listener(listener)))
    }
}

/// Notifications from other workers ([`Store::listen`]).
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// Waits for the next notification; answers its payload (`outbox`). An error means the
    /// connection failed (the listener reconnects on the next call; notifications sent meanwhile
    /// are lost, which polling covers).
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        self.0
            .recv()
            .await
            .map(|n| n.payload().to_owned())
            .ctx(|| "receiving a notification".to_owned())
    }
}

/// A taken lease's fence and the calendar's state, from the lease's RETURNING row.
fn leased(row: Option<&impl Cols>) -> Result<Option<(i64, CalendarState)>, sqlx::Error> {
    row.map(|row| Ok((row.col("sync_fence")?, calendars::from_row(row)?)))
        .transpose()
}
