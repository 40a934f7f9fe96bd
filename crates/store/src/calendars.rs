//! The `calendars` table: where each calendar's incremental sync stands.

use std::fmt::Write as _;

use crate::Store;
use crate::conns::Arg;
use crate::db::{Cols, Tx, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// One synced calendar's sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarState {
    /// The calendar.
    pub calendar_id: String,
    /// The token of the last completed pass; None before the first one.
    pub sync_token: Option<String>,
    /// The next pass must be a full sync (the token was refused, or a resync was asked for).
    pub needs_full_sync: bool,
    /// When a pass last stored a token (unix ms).
    pub last_sync_at: Option<i64>,
    /// The last pass's error, cleared by the next completed pass.
    pub last_error: Option<String>,
    /// A trigger arrived (at this time, the first not yet synced) and no pass has completed
    /// since: the calendar must be synced, also after a restart.
    pub dirty_at: Option<i64>,
    /// Bumped by every trigger: a pass clears `dirty_at` only if this is still what it read.
    pub dirty_gen: i64,
    /// Passes failed in a row (0 after a completed one).
    pub sync_failures: i64,
    /// When a failed pass is tried again (unix ms).
    pub retry_at: Option<i64>,
}

pub(crate) const COLUMNS: &str = "calendar_id, sync_token, needs_full_sync, last_sync_at, last_error, dirty_at, dirty_gen, \
     sync_failures, retry_at";

pub(crate) fn from_row(row: &impl Cols) -> Result<CalendarState, sqlx::Error> {
    Ok(CalendarState {
        calendar_id: row.col("calendar_id")?,
        sync_token: row.col("sync_token")?,
        needs_full_sync: row.col("needs_full_sync")?,
        last_sync_at: row.col("last_sync_at")?,
        last_error: row.col("last_error")?,
        dirty_at: row.col("dirty_at")?,
        dirty_gen: row.col("dirty_gen")?,
        sync_failures: row.col("sync_failures")?,
        retry_at: row.col("retry_at")?,
    })
}

/// Inserts the calendar's row if it is missing (inside a caller's transaction or not).
pub(crate) async fn ensure(tx: &mut Tx, calendar_id: &str, now_ms: i64) -> Result<(), StoreError> {
    tx.defer(
        ENSURE,
        vec![Arg::Text(calendar_id.to_owned()), Arg::Int(now_ms)],
    )
    .await
    .ctx(|| format!("registering calendar {calendar_id}"))
}

/// Stores a calendar's new sync token (registering the calendar if it was not), clears its
/// full-sync flag and last error, and sets `last_sync_at` (inside a page's transaction).
pub(crate) async fn store_token(
    tx: &mut Tx,
    calendar_id: &str,
    token: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.defer(
        "INSERT INTO calendars (calendar_id, created_at, sync_token, needs_full_sync, last_sync_at) \
         VALUES ($1, $3, $2, FALSE, $3) \
         ON CONFLICT (calendar_id) DO UPDATE SET sync_token = excluded.sync_token, \
           needs_full_sync = FALSE, last_sync_at = excluded.last_sync_at, last_error = NULL",
        vec![
            Arg::Text(calendar_id.to_owned()),
            Arg::Text(token.to_owned()),
            Arg::Int(now_ms),
        ],
    )
    .await
    .ctx(|| format!("storing the sync token of calendar {calendar_id}"))
}

const ENSURE: &str = "INSERT INTO calendars (calendar_id, created_at) VALUES ($1, $2) ON CONFLICT (calendar_id) DO NOTHING";

/// Counts over every calendar, for status at any scale (one query).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarSummary {
    /// Calendars known.
    pub calendars: i64,
    /// With a sync token (synced at least once).
    pub synced: i64,
    /// Whose last pass failed.
    pub failing: i64,
    /// With a trigger not yet answered by a pass.
    pub dirty: i64,
    /// Whose owner must connect their Google account again (the recorded owner, else the user
    /// the calendar's id names, is marked as needing re-authorisation).
    pub needing_reauth: i64,
}

/// How long ago calendars last completed a pass ([`Store::calendar_summary_and_lag`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalendarLag {
    /// The oldest last completed pass among the calendars synced at least once (unix ms);
    /// None when none was.
    pub oldest_sync_at: Option<i64>,
    /// For each cut-off asked for (unix ms), the calendars synced at least once whose last
    /// completed pass is older than it.
    pub synced_before: Vec<i64>,
}

/// Which calendars a [`Store::calendars_ranked`] call answers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worst {
    /// Longest since their last completed pass (never synced first).
    Lagging,
    /// Most failed passes in a row (failing ones only).
    Failing,
    /// Whose owner must connect their Google account again, by id.
    NeedingReauth,
    /// Synced at least once, longest ago first (never synced ones left out): what the
    /// per-calendar lag metric shows.
    SyncedLongestAgo,
}

impl Store {
    /// Counts over every calendar (no rows loaded): one scan, and the re-authorisation count
    /// beside it ([`Store::calendars_needing_reauth_count`], no scan while no user needs it).
    pub async fn calendar_summary(&self) -> Result<CalendarSummary, StoreError> {
        Ok(self.calendar_summary_and_lag(&[]).await?.0)
    }

    /// [`Store::calendar_summary`], plus in the same single scan the oldest last completed pass
    /// and how many calendars last completed one before each of `cut_offs` (unix ms; at most a
    /// handful): sync lag over every calendar, without loading a row.
    pub async fn calendar_summary_and_lag(
        &self,
        cut_offs: &[i64],
    ) -> Result<(CalendarSummary, CalendarLag), StoreError> {
        let mut sql = String::from(
            "SELECT COUNT(*), \
                 COALESCE(SUM(CASE WHEN sync_token IS NOT NULL THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN sync_failures > 0 THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN dirty_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
                 MIN(last_sync_at)",
        );
        for i in 0..cut_offs.len() {
            let _ = write!(
                sql,
                ", COALESCE(SUM(CASE WHEN last_sync_at < ${} THEN 1 ELSE 0 END), 0)",
                i + 1
            );
        }
        sql.push_str(" FROM calendars");
        let what = || "counting calendars".to_owned();
        let scan = async {
            on_read!(self, c => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for cut_off in cut_offs {
                    query = query.bind(*cut_off);
                }
                let row = query.fetch_one(c).await;
                row.and_then(|row| {
                    let count = |i: usize| sqlx::Row::try_get::<i64, _>(&row, i);
                    let summary = CalendarSummary {
                        calendars: count(0)?,
                        synced: count(1)?,
                        failing: count(2)?,
                        dirty: count(3)?,
                        needing_reauth: 0,
                    };
                    let lag = CalendarLag {
                        oldest_sync_at: sqlx::Row::try_get(&row, 4)?,
                        synced_before: (5..5 + cut_offs.len())
                            .map(count)
                            .collect::<Result<Vec<_>, _>>()?,
                    };
                    Ok((summary, lag))
                })
            })
            .ctx(what)
        };
        // Counted apart (at the same time, on another read connection): with no user to
        // re-authorise it costs no scan.
        let ((mut summary, lag), needing_reauth) =
            tokio::try_join!(scan, self.calendars_needing_reauth_count())?;
        summary.needing_reauth = needing_reauth;
        Ok((summary, lag))
    }

    /// A page of calendars in id order: those after `after`, whose id contains `search` (any
    /// characters, matched literally; empty: all), at most `limit`.
    pub async fn calendars_page(
        &self,
        after: &str,
        search: &str,
        limit: i64,
    ) -> Result<Vec<CalendarState>, StoreError> {
        let mut pattern = String::from("%");
        for ch in search.chars() {
            if matches!(ch, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('%');
        let sql = format!(
            "SELECT {COLUMNS} FROM calendars WHERE calendar_id > $1 AND calendar_id LIKE $2 ESCAPE '\\' \
             ORDER BY calendar_id LIMIT CAST($3 AS BIGINT)"
        );
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(&pattern)
                .bind(limit)
                .fetch_all(c)
                .await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(|| "listing a page of calendars".to_owned())
    }

    /// The `limit` worst calendars by `worst` (one query, bounded answer).
    pub async fn calendars_ranked(
        &self,
        worst: Worst,
        limit: i64,
    ) -> Result<Vec<CalendarState>, StoreError> {
        let clause = match worst {
            Worst::Lagging => "ORDER BY COALESCE(last_sync_at, 0), calendar_id",
            Worst::Failing => "WHERE sync_failures > 0 ORDER BY sync_failures DESC, calendar_id",
            Worst::NeedingReauth => {
                // The usual case, nobody to re-authorise, costs no scan of the calendars.
                if !self.any_user_needs_reauth().await? {
                    return Ok(Vec::new());
                }
                concat!(
                    "WHERE ",
                    crate::users::needs_reauth!(),
                    " ORDER BY calendar_id"
                )
            }
            Worst::SyncedLongestAgo => {
                "WHERE last_sync_at IS NOT NULL ORDER BY last_sync_at, calendar_id"
            }
        };
        let sql = format!("SELECT {COLUMNS} FROM calendars {clause} LIMIT CAST($1 AS BIGINT)");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(limit)
                .fetch_all(c)
                .await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(|| "ranking calendars".to_owned())
    }

    /// The calendar's sync state, None if it was never registered.
    pub async fn calendar(&self, calendar_id: &str) -> Result<Option<CalendarState>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM calendars WHERE calendar_id = $1");
        on_read!(self, c => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(calendar_id)
                .fetch_optional(c)
                .await;
            row.and_then(|row| row.as_ref().map(from_row).transpose())
        })
        .ctx(|| format!("reading the sync state of calendar {calendar_id}"))
    }

    /// Registers a calendar (no token: its first pass is a full sync). A no-op if it exists
    /// (found by a read, so a known calendar costs no write transaction).
    pub async fn ensure_calendar(&self, calendar_id: &str) -> Result<(), StoreError> {
        let known: Option<i32> = on_read!(self, c => sqlx::query_scalar("SELECT 1 FROM calendars WHERE calendar_id = $1")
            .bind(calendar_id)
            .fetch_optional(c)
            .await)
        .ctx(|| format!("looking up calendar {calendar_id}"))?;
        if known.is_some() {
            return Ok(());
        }
        let now = self.now();
        on_write!(self, c => sqlx::query(ENSURE).bind(calendar_id).bind(now).execute(c).await.map(|r| r.rows_affected()))
            .ctx(|| format!("registering calendar {calendar_id}"))?;
        Ok(())
    }

    /// Every registered calendar, by id.
    pub async fn calendars(&self) -> Result<Vec<CalendarState>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM calendars ORDER BY calendar_id");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(c).await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(|| "listing calendars".to_owned())
    }

    /// Makes the calendar's next pass a full sync (its token was refused with 410, or an operator
    /// asked for a resync). The flag is cleared when a pass stores a new token. Registers the
    /// calendar if needed.
    pub async fn mark_full_sync_needed(&self, calendar_id: &str) -> Result<(), StoreError> {
        let what = || format!("marking calendar {calendar_id} for a full sync");
        let mut keys = self.lock_keys();
        keys.calendar(calendar_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
        ensure(&mut tx, calendar_id, self.now()).await?;
        on_tx!(&mut tx, c => sqlx::query("UPDATE calendars SET needs_full_sync = TRUE WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// Records why the calendar's last pass failed (shown on the status page; cleared by the
    /// next pass that stores a token). Registers the calendar if needed.
    pub async fn record_sync_error(
        &self,
        calendar_id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let what = || format!("recording a sync error for calendar {calendar_id}");
        let mut keys = self.lock_keys();
        keys.calendar(calendar_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
        ensure(&mut tx, calendar_id, self.now()).await?;
        on_tx!(&mut tx, c => sqlx::query("UPDATE calendars SET last_error = $2 WHERE calendar_id = $1")
            .bind(calendar_id)
            .bind(message)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// Records a sync trigger for a calendar BEFORE it is acknowledged (a push notification, the
    /// add-on's sync call): the calendar stays dirty until a pass that started after this call
    /// completes, across restarts. Answers false (and records nothing) for a calendar that is
    /// not registered.
    pub async fn mark_dirty(&self, calendar_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = on_write!(self, c => sqlx::query(
            "UPDATE calendars SET dirty_gen = dirty_gen + 1, dirty_at = COALESCE(dirty_at, $2) \
             WHERE calendar_id = $1",
        )
        .bind(calendar_id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("recording a sync trigger for calendar {calendar_id}"))?;
        Ok(done > 0)
    }

    /// Calendars to sync without any new trigger: dirty ones (a trigger was acknowledged and no
    /// pass completed since) and those whose last pass failed; with the time each is due (a
    /// failed pass's retry time, else when it became dirty). Calendars another worker is
    /// syncing now (a sync lease that has not expired, by the store's clock) are left out: that
    /// pass answers their triggers, or leaves them dirty for the next one. So are calendars
    /// whose last pass failed with no retry time: they wait for their owner to connect again
    /// (the OAuth callback syncs them), and polling them would fail the same way.
    pub async fn calendars_to_sync(&self) -> Result<Vec<(String, i64)>, StoreError> {
        // Two arms, each through a partial index of its own (`calendars_dirty`,
        // `calendars_failing`: a retry time is only ever set with a failure counted), so the
        // poll reads the waiting calendars only, not every calendar: as one OR, and as a
        // UNION ordered as a whole, SQLite walked the whole table in `calendar_id` order at
        // every poll. On SQLite the indexes are named. A calendar in both arms answers the
        // same row twice (its retry time comes first), which UNION keeps once.
        macro_rules! waiting {
            ($columns:literal, $dirty:literal, $failing:literal) => {
                concat!(
                    "SELECT calendar_id, COALESCE(retry_at, dirty_at) AS due",
                    $columns,
                    " FROM calendars",
                    $dirty,
                    " WHERE dirty_at IS NOT NULL AND NOT (sync_failures > 0 AND retry_at IS NULL) \
                     UNION SELECT calendar_id, retry_at AS due",
                    $columns,
                    " FROM calendars",
                    $failing,
                    " WHERE sync_failures > 0 AND retry_at IS NOT NULL"
                )
            };
        }
        let now = self.now();
        match &self.db {
            // SQLite's sync leases are in this process (`crate::leases::LocalLeases`).
            crate::db::Db::Sqlite { reader, .. } => sqlx::query_as(concat!(
                "SELECT calendar_id, due FROM (",
                waiting!(
                    "",
                    " INDEXED BY calendars_dirty",
                    " INDEXED BY calendars_failing"
                ),
                ") ORDER BY calendar_id"
            ))
            .fetch_all(reader)
            .await
            .map(|mut due: Vec<(String, i64)>| {
                due.retain(|(id, _)| !self.local_leases.held(id, now));
                due
            }),
            // Postgres: a lease whose holder died (its liveness lock is gone) does not count.
            crate::db::Db::Postgres { pool, .. } => {
                sqlx::query_as(concat!(
                    "SELECT calendar_id, due FROM (",
                    waiting!(", sync_until, sync_key", "", ""),
                    ") AS waiting WHERE sync_until <= $1 OR (sync_key <> 0 AND NOT ",
                    crate::leases::holder_alive!("waiting.sync_key"),
                    ") ORDER BY calendar_id"
                ))
                .bind(now)
                .fetch_all(pool)
                .await
            }
        }
        .ctx(|| "listing calendars waiting for a sync".to_owned())
    }

    /// A pass that started when the calendar's `dirty_gen` was `dirty_gen` completed: the
    /// calendar is clean unless a trigger arrived since; its failure count and retry are reset.
    /// Answers true when a trigger arrived since (on this worker or another): the calendar is
    /// still dirty and wants another pass.
    pub async fn sync_succeeded(
        &self,
        calendar_id: &str,
        dirty_gen: i64,
    ) -> Result<bool, StoreError> {
        let still_dirty: Option<bool> = on_write!(self, c => sqlx::query_scalar(
            "UPDATE calendars SET dirty_at = CASE WHEN dirty_gen = $2 THEN NULL ELSE dirty_at END, \
                 sync_failures = 0, retry_at = NULL, last_error = NULL \
             WHERE calendar_id = $1 RETURNING dirty_at IS NOT NULL",
        )
        .bind(calendar_id)
        .bind(dirty_gen)
        .fetch_optional(c)
        .await)
        .ctx(|| format!("recording a completed pass of calendar {calendar_id}"))?;
        Ok(still_dirty.unwrap_or(false))
    }

    /// A pass failed: the calendar stays dirty (a restart syncs it), its error is shown, and it
    /// is tried again at `retry_at` (None: only on the next trigger, e.g. credentials to renew).
    /// Answers the number of failures in a row.
    pub async fn sync_failed(
        &self,
        calendar_id: &str,
        error: &str,
        retry_at: Option<i64>,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let what = || format!("recording a failed pass of calendar {calendar_id}");
        let failures: Option<i64> = on_write!(self, c => sqlx::query_scalar(
            "UPDATE calendars SET last_error = $2, retry_at = $3, sync_failures = sync_failures + 1, \
                 dirty_at = COALESCE(dirty_at, $4) \
             WHERE calendar_id = $1 RETURNING sync_failures",
        )
        .bind(calendar_id)
        .bind(error)
        .bind(retry_at)
        .bind(now_ms)
        .fetch_optional(c)
        .await)
        .ctx(what)?;
        Ok(failures.unwrap_or(0))
    }
}
