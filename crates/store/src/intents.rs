//! The `create_intents` table: creates idempotent per event.
//!
//! The add-on asks for a conference before Calendar has saved the event, and retries with a new
//! request id when an answer is lost. An intent keyed by (calendar, event) is stored before the
//! provider's create, and the create's idempotency key derives from it, so every retry for the
//! event reaches the same meeting. The intent becomes `linked` in the transaction that stores
//! the conference's link; an intent whose meeting never shows up in its event is cleaned up by
//! the engine after a grace period (`abandoned`: the meeting is deleted).

use confsync_core::plan::Link;

use crate::Store;
use crate::db::{Cols, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};
use crate::links::{self, LinkBase};

/// What a create for an event starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateStart {
    /// The event has a live link: its conference is the answer, nothing is created.
    Existing(Box<Link>),
    /// Create the meeting with this idempotency key (the same for every retry of the event's
    /// create until it is linked or abandoned).
    Create {
        /// The provider's idempotency key for the create.
        key: String,
    },
}

/// An open intent the engine checks after the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateIntent {
    /// The event's calendar.
    pub calendar_id: String,
    /// The event.
    pub event_id: String,
    /// Which create of the event this is (1, then 2 after the first meeting was removed, ...).
    pub generation: i64,
    /// The create's idempotency key.
    pub key: String,
    /// The meeting, once linked.
    pub conference_id: Option<String>,
    /// When the intent was made (unix ms).
    pub created_at: i64,
    /// The provider that makes its meeting, as its first attempt recorded it
    /// ([`Store::claim_intent_provider`]); None before that (or before providers were named).
    pub provider: Option<String>,
}

fn intent_key(calendar_id: &str, event_id: &str, generation: i64) -> String {
    format!("create:{calendar_id}:{event_id}:{generation}")
}

fn intent_from_row(row: &impl Cols) -> Result<CreateIntent, sqlx::Error> {
    let calendar_id: String = row.col("calendar_id")?;
    let event_id: String = row.col("event_id")?;
    let generation: i64 = row.col("generation")?;
    Ok(CreateIntent {
        key: intent_key(&calendar_id, &event_id, generation),
        calendar_id,
        event_id,
        generation,
        conference_id: row.col("conference_id")?,
        created_at: row.col("created_at")?,
        provider: row.col("provider")?,
    })
}

impl Store {
    /// Starts (or resumes) the create of a conference for an event, in one transaction: a live
    /// link of the event answers [`CreateStart::Existing`]; otherwise the event's intent is
    /// resumed if it is still creating, or a new generation is started (none yet, or the
    /// earlier meeting was linked and removed since, or abandoned).
    pub async fn begin_create(
        &self,
        calendar_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<CreateStart, StoreError> {
        let what = || format!("starting a create for event {event_id} (calendar {calendar_id})");
        let mut tx = self.write_tx(what).await?;
        if let Some(live) = links::live_of_event(&mut tx, calendar_id, event_id)
            .await?
            .into_iter()
            .next()
        {
            return Ok(CreateStart::Existing(Box::new(live.link)));
        }
        let row: Option<(i64, String)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT generation, state FROM create_intents WHERE calendar_id = $1 AND event_id = $2",
        )
        .bind(calendar_id)
        .bind(event_id)
        .fetch_optional(c)
        .await)
        .ctx(what)?;
        let generation = match row {
            Some((generation, state)) if state == "creating" => generation,
            Some((generation, _)) => {
                on_tx!(&mut tx, c => sqlx::query(
                    "UPDATE create_intents SET generation = $3, state = 'creating', conference_id = NULL, \
                         created_at = $4, updated_at = $4 \
                     WHERE calendar_id = $1 AND event_id = $2",
                )
                .bind(calendar_id)
                .bind(event_id)
                .bind(generation + 1)
                .bind(now_ms)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))
                .ctx(what)?;
                generation + 1
            }
            None => {
                on_tx!(&mut tx, c => sqlx::query(
                    "INSERT INTO create_intents (calendar_id, event_id, generation, state, created_at, updated_at) \
                     VALUES ($1, $2, 1, 'creating', $3, $3)",
                )
                .bind(calendar_id)
                .bind(event_id)
                .bind(now_ms)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))
                .ctx(what)?;
                1
            }
        };
        self.commit(tx, what).await?;
        Ok(CreateStart::Create {
            key: intent_key(calendar_id, event_id, generation),
        })
    }

    /// The provider made the meeting: in one transaction its link is stored (new, never seen in
    /// Calendar yet) and the intent becomes `linked`. When a concurrent retry linked the event
    /// first, its link is the answer ([`CreateStart::Existing`]); `Create` answers that this
    /// call linked it.
    pub async fn finish_create(&self, link: &Link, now_ms: i64) -> Result<CreateStart, StoreError> {
        let (calendar_id, event_id) = (link.calendar_id.as_str(), link.event_id.as_str());
        let what =
            || format!("linking the new conference of event {event_id} (calendar {calendar_id})");
        let mut tx = self.write_tx(what).await?;
        if let Some(live) = links::live_of_event(&mut tx, calendar_id, event_id)
            .await?
            .into_iter()
            .next()
        {
            return Ok(CreateStart::Existing(Box::new(live.link)));
        }
        crate::calendars::ensure(&mut tx, calendar_id, now_ms).await?;
        if let Some(stored) = links::get(&mut tx, &link.conference_id).await? {
            // The same meeting was linked before (and removed since): never revived here.
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!(
                    "conference {} already has a link (event {}, deleted: {})",
                    link.conference_id, stored.link.event_id, stored.link.deleted
                ),
            });
        }
        links::write(&mut tx, link, LinkBase::New, now_ms).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE create_intents SET state = 'linked', conference_id = $3, updated_at = $4 \
             WHERE calendar_id = $1 AND event_id = $2",
        )
        .bind(calendar_id)
        .bind(event_id)
        .bind(&link.conference_id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(CreateStart::Create { key: String::new() })
    }

    /// Intents made before `cutoff_ms` whose meeting has not shown up in its event: still
    /// creating (the create's answer never came, or the process died before linking), or
    /// linked to a live link that was never seen in Calendar. At most `limit`, oldest first.
    pub async fn stale_intents(
        &self,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<CreateIntent>, StoreError> {
        on_read!(self, c => {
            let rows = sqlx::query(
                "SELECT i.calendar_id, i.event_id, i.generation, i.conference_id, i.created_at, i.provider \
                 FROM create_intents i LEFT JOIN links l ON l.conference_id = i.conference_id \
                 WHERE i.created_at < $1 AND (i.state = 'creating' \
                       OR (i.state = 'linked' AND l.last_etag_seen IS NULL AND NOT l.deleted)) \
                 ORDER BY i.created_at LIMIT CAST($2 AS BIGINT)",
            )
            .bind(cutoff_ms)
            .bind(limit)
            .fetch_all(c)
            .await;
            rows.ctx(|| "listing stale create intents".to_owned())
                .and_then(|rows| {
                    rows.iter()
                        .map(intent_from_row)
                        .collect::<Result<_, sqlx::Error>>()
                        .ctx(|| "reading stale create intents".to_owned())
                })
        })
    }

    /// Closes an intent: its meeting showed up in the event (`abandoned = false`: the row is
    /// removed, the link carries on), or it never did and was cleaned up (`abandoned = true`).
    /// Only the given generation is closed: a newer create of the event is left alone.
    pub async fn close_intent(
        &self,
        calendar_id: &str,
        event_id: &str,
        generation: i64,
        abandoned: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let query = if abandoned {
            "UPDATE create_intents SET state = 'abandoned', updated_at = $4 \
             WHERE calendar_id = $1 AND event_id = $2 AND generation = $3"
        } else {
            "DELETE FROM create_intents WHERE calendar_id = $1 AND event_id = $2 AND generation = $3 AND $4 = $4"
        };
        on_write!(self, c => sqlx::query(query)
            .bind(calendar_id)
            .bind(event_id)
            .bind(generation)
            .bind(now_ms)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(|| {
            format!("closing the create intent of event {event_id} (calendar {calendar_id})")
        })?;
        Ok(())
    }

    /// Intents whose link has been seen in Calendar need no more watching: removed.
    pub async fn prune_seen_intents(&self) -> Result<u64, StoreError> {
        on_write!(self, c => sqlx::query(
            "DELETE FROM create_intents WHERE state = 'linked' AND conference_id IN \
             (SELECT conference_id FROM links WHERE last_etag_seen IS NOT NULL)",
        )
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| "pruning create intents whose meeting is in Calendar".to_owned())
    }
}
