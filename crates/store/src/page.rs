//! Committing a page of a sync pass: the one transaction that makes sync crash-safe.

use confsync_core::plan::{Action, Link};

use crate::error::{Context, StoreError};
use crate::{DeadLetter, Store, calendars, dead_letters, links, outbox};

/// What the planner decided for one event of a page (a `Decision::Apply`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// The link's next state, stored keyed by its conference id.
    pub link: Link,
    /// Provider calls to queue for the conference, in order.
    pub actions: Vec<Action>,
    /// The conference's pending deletes must not run (the event moved calendars).
    pub supersede_deletes: bool,
    /// The actions are not due before this time (unix ms; 0 for "now").
    pub not_before_ms: i64,
}

impl Store {
    /// Commits one page of a calendar's sync pass in ONE transaction:
    /// - each change's link is upserted (by conference id; a link that moved calendars takes
    ///   its new calendar and event);
    /// - if asked, the conference's pending deletes are superseded;
    /// - each action becomes an outbox row with its idempotency key; a replayed page adds none;
    /// - dead letters are recorded (or counted again);
    /// - when `sync_token` is Some (the pass's last page), it becomes the calendar's token, the
    ///   full-sync flag and last error are cleared, and `last_sync_at` is set.
    ///
    /// Either all of it is stored or, on any error, none of it: the token never advances past
    /// changes whose actions were not recorded.
    pub async fn commit_page(
        &self,
        calendar_id: &str,
        changes: &[PlannedChange],
        dead_letters: &[DeadLetter],
        sync_token: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let what = || format!("committing a sync page of calendar {calendar_id}");
        let mut tx = self.write_tx(what).await?;
        calendars::ensure(&mut *tx, calendar_id, now_ms).await?;
        let mut queued = 0;
        let mut superseded = 0;
        for change in changes {
            let link = &change.link;
            if link.calendar_id != calendar_id {
                calendars::ensure(&mut *tx, &link.calendar_id, now_ms).await?;
            }
            links::upsert(&mut tx, link, now_ms).await?;
            if change.supersede_deletes {
                superseded +=
                    outbox::supersede_deletes(&mut tx, &link.conference_id, now_ms).await?;
            }
            queued += outbox::append(
                &mut tx,
                &link.conference_id,
                &link.calendar_id,
                &link.event_id,
                &change.actions,
                change.not_before_ms,
                now_ms,
            )
            .await?;
        }
        for letter in dead_letters {
            dead_letters::upsert(&mut tx, calendar_id, letter, now_ms).await?;
        }
        if let Some(token) = sync_token {
            sqlx::query(
                "UPDATE calendars SET sync_token = $2, needs_full_sync = FALSE, last_sync_at = $3, last_error = NULL \
                 WHERE calendar_id = $1",
            )
            .bind(calendar_id)
            .bind(token)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .ctx(|| format!("storing the sync token of calendar {calendar_id}"))?;
        }
        tx.commit().await.ctx(what)?;
        tracing::debug!(
            calendar_id,
            links = changes.len(),
            queued,
            superseded,
            dead_letters = dead_letters.len(),
            token_advanced = sync_token.is_some(),
            "sync page committed"
        );
        Ok(())
    }

    /// Stores a calendar's new sync token alone (a pass whose last page changed nothing):
    /// `commit_page` with no changes.
    pub async fn set_sync_token(
        &self,
        calendar_id: &str,
        sync_token: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.commit_page(calendar_id, &[], &[], Some(sync_token), now_ms)
            .await
    }
}
