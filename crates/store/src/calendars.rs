//! The `calendars` table: where each calendar's incremental sync stands.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::Store;
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
}

fn from_row(row: &SqliteRow) -> Result<CalendarState, sqlx::Error> {
    Ok(CalendarState {
        calendar_id: row.try_get("calendar_id")?,
        sync_token: row.try_get("sync_token")?,
        needs_full_sync: row.try_get("needs_full_sync")?,
        last_sync_at: row.try_get("last_sync_at")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Inserts the calendar's row if it is missing (inside a caller's transaction or not).
pub(crate) async fn ensure<'e, E>(
    executor: E,
    calendar_id: &str,
    now_ms: i64,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query("INSERT INTO calendars (calendar_id, created_at) VALUES ($1, $2) ON CONFLICT (calendar_id) DO NOTHING")
        .bind(calendar_id)
        .bind(now_ms)
        .execute(executor)
        .await
        .ctx(|| format!("registering calendar {calendar_id}"))?;
    Ok(())
}

impl Store {
    /// The calendar's sync state, None if it was never registered.
    pub async fn calendar(&self, calendar_id: &str) -> Result<Option<CalendarState>, StoreError> {
        let row = sqlx::query(
            "SELECT calendar_id, sync_token, needs_full_sync, last_sync_at, last_error FROM calendars WHERE calendar_id = $1",
        )
        .bind(calendar_id)
        .fetch_optional(&self.reader)
        .await
        .ctx(|| format!("reading the sync state of calendar {calendar_id}"))?;
        row.as_ref()
            .map(from_row)
            .transpose()
            .ctx(|| format!("reading the sync state of calendar {calendar_id}"))
    }

    /// Registers a calendar (no token: its first pass is a full sync). A no-op if it exists.
    pub async fn ensure_calendar(&self, calendar_id: &str) -> Result<(), StoreError> {
        ensure(&self.writer, calendar_id, self.now()).await
    }

    /// Every registered calendar, by id.
    pub async fn calendars(&self) -> Result<Vec<CalendarState>, StoreError> {
        let rows = sqlx::query(
            "SELECT calendar_id, sync_token, needs_full_sync, last_sync_at, last_error FROM calendars ORDER BY calendar_id",
        )
        .fetch_all(&self.reader)
        .await
        .ctx(|| "listing calendars".to_owned())?;
        rows.iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .ctx(|| "listing calendars".to_owned())
    }

    /// Makes the calendar's next pass a full sync (its token was refused with 410, or an operator
    /// asked for a resync). The flag is cleared when a pass stores a new token. Registers the
    /// calendar if needed.
    pub async fn mark_full_sync_needed(&self, calendar_id: &str) -> Result<(), StoreError> {
        let what = || format!("marking calendar {calendar_id} for a full sync");
        let mut tx = self.write_tx(what).await?;
        ensure(&mut *tx, calendar_id, self.now()).await?;
        sqlx::query("UPDATE calendars SET needs_full_sync = TRUE WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(&mut *tx)
            .await
            .ctx(what)?;
        tx.commit().await.ctx(what)
    }

    /// Records why the calendar's last pass failed (shown on the status page; cleared by the
    /// next pass that stores a token). Registers the calendar if needed.
    pub async fn record_sync_error(
        &self,
        calendar_id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let what = || format!("recording a sync error for calendar {calendar_id}");
        let mut tx = self.write_tx(what).await?;
        ensure(&mut *tx, calendar_id, self.now()).await?;
        sqlx::query("UPDATE calendars SET last_error = $2 WHERE calendar_id = $1")
            .bind(calendar_id)
            .bind(message)
            .execute(&mut *tx)
            .await
            .ctx(what)?;
        tx.commit().await.ctx(what)
    }
}
