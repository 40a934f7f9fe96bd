//! The `dead_letters` table: events a calendar returned that the engine could not understand.
//! They are counted, not retried: the next change to the event brings it back through sync.

use serde_json::Value;

use crate::Store;
use crate::db::{Tx, on_read, on_tx};
use crate::error::{Context, StoreError};

/// An item of a page that could not be understood, as the sync session reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event's id, when the item had a usable one.
    pub event_id: Option<String>,
    /// Why it could not be understood (e.g. `malformed event: the event has no start`).
    pub reason: String,
    /// The item as received.
    pub raw: Value,
}

impl From<(Option<String>, String, Value)> for DeadLetter {
    /// From the tuples of `confsync_core::session::PageOutcome::dead_letters`.
    fn from((event_id, reason, raw): (Option<String>, String, Value)) -> Self {
        DeadLetter {
            event_id,
            reason,
            raw,
        }
    }
}

/// A stored dead letter: one row per (calendar, event, reason), counted.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    /// The calendar.
    pub calendar_id: String,
    /// The event's id, None when the item had no usable one.
    pub event_id: Option<String>,
    /// Why it could not be understood.
    pub reason: String,
    /// The item as last received.
    pub raw: Value,
    /// First time it was seen (unix ms).
    pub first_seen: i64,
    /// Last time it was seen (unix ms).
    pub last_seen: i64,
    /// How many times it was seen.
    pub count: i64,
}

/// Adds one sighting of a dead letter (inside the page's transaction).
pub(crate) async fn upsert(
    tx: &mut Tx,
    calendar_id: &str,
    letter: &DeadLetter,
    now_ms: i64,
) -> Result<(), StoreError> {
    let event = letter.event_id.as_deref().unwrap_or("");
    let what = || format!("recording a dead letter for calendar {calendar_id}, event {event:?}");
    let raw_json = serde_json::to_string(&letter.raw).ctx(what)?;
    // No usable id is stored as '' (see the migration): NULLs never collide in a key.
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO dead_letters (calendar_id, event_id, reason, raw_json, first_seen, last_seen, count) \
         VALUES ($1, $2, $3, $4, $5, $5, 1) \
         ON CONFLICT (calendar_id, event_id, reason) DO UPDATE SET \
             raw_json = excluded.raw_json, last_seen = excluded.last_seen, count = dead_letters.count + 1",
    )
    .bind(calendar_id)
    .bind(event)
    .bind(&letter.reason)
    .bind(&raw_json)
    .bind(now_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .ctx(what)?;
    Ok(())
}

impl Store {
    /// The calendar's dead letters, most recently seen first.
    pub async fn dead_letters(
        &self,
        calendar_id: &str,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let what = || format!("listing dead letters of calendar {calendar_id}");
        let rows: Vec<(String, String, String, String, i64, i64, i64)> = on_read!(self, c => sqlx::query_as(
            "SELECT calendar_id, event_id, reason, raw_json, first_seen, last_seen, count FROM dead_letters \
             WHERE calendar_id = $1 ORDER BY last_seen DESC, event_id, reason",
        )
        .bind(calendar_id)
        .fetch_all(c)
        .await)
        .ctx(what)?;
        rows.into_iter()
            .map(
                |(row_calendar_id, event_id, reason, raw_json, first_seen, last_seen, count)| {
                    Ok(DeadLetterRecord {
                        calendar_id: row_calendar_id,
                        raw: serde_json::from_str(&raw_json).ctx(|| {
                            format!(
                                "dead letter of calendar {calendar_id}, event {event_id:?}, raw_json"
                            )
                        })?,
                        event_id: Some(event_id).filter(|id| !id.is_empty()),
                        reason,
                        first_seen,
                        last_seen,
                        count,
                    })
                },
            )
            .collect()
    }
}

/// What [`Store::prune_history`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Authorization requests that were never completed (their 10 minutes are long gone).
    pub oauth_requests: u64,
    /// Push channel records stopped or expired before the retention cut-off.
    pub channels: u64,
    /// Dead letters not seen again since the cut-off.
    pub dead_letters: u64,
    /// Finished outbox rows (done, failed, superseded) last changed before the cut-off.
    pub outbox: u64,
    /// Links deleted before the cut-off with no outbox row left.
    pub links: u64,
}

impl Store {
    /// Removes history past its use, in one transaction: dead letters last seen before
    /// `before_ms`, push channel records that stopped or expired before it, and authorization
    /// requests older than an hour (they are refused after ten minutes), finished outbox rows
    /// last changed before it (a conference's last done update first leaves its spec's
    /// fingerprint on the link), links deleted before it with no outbox row left (and the
    /// create intents that answered them). Pending rows and live links are never touched. An
    /// idempotency key ends in its row's id, and row ids are never handed out again, so a row
    /// pruned never lends its key to a later one.
    pub async fn prune_history(&self, before_ms: i64, now_ms: i64) -> Result<Pruned, StoreError> {
        let what = || "pruning history past its retention".to_owned();
        let mut tx = self.write_tx(what).await?;
        let oauth_requests = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM oauth_requests WHERE created_at < $1",
        )
        .bind(now_ms - 3_600_000)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let channels = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM channels WHERE expiration_ms < $1 OR (stopped AND created_at < $1)",
        )
        .bind(before_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let dead_letters = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM dead_letters WHERE last_seen < $1",
        )
        .bind(before_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        // Finished outbox rows (done, failed, superseded) last changed before the cut-off: the
        // status page shows failures within the retention. A conference's later rows never
        // depend on them (order is among pending rows; keys end in row ids, never reused).
        // A conference's last update that landed says what its meeting has: before its row
        // goes, the link keeps its spec's fingerprint (`applied_fingerprint`).
        crate::outbox::keep_applied(&mut tx, before_ms).await?;
        let outbox = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM outbox WHERE state <> 'pending' AND updated_at < $1",
        )
        .bind(before_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        // Dead links: deleted before the cut-off (their meeting is gone), with no outbox row
        // left; the create intents that answered them go with them.
        let links = on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM links WHERE deleted AND updated_at < $1 \
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.conference_id = links.conference_id)",
        )
        .bind(before_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        on_tx!(&mut tx, c => sqlx::query(
            "DELETE FROM create_intents WHERE updated_at < $1 AND state <> 'creating' \
               AND NOT EXISTS (SELECT 1 FROM links l WHERE l.conference_id = create_intents.conference_id)",
        )
        .bind(before_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(Pruned {
            oauth_requests,
            channels,
            dead_letters,
            outbox,
            links,
        })
    }
}
