//! The checks that keep a meeting alive while its event lives: the guard before a delete
//! ([`Engine::event_lives`], then [`Engine::relink`] when the event turns out to be alive), and a
//! full sync's verification of a linked event it did not list ([`Engine::verify`]).
//!
//! Each reads the link (with its version), then the event, then plans and writes the link only
//! if its version is unchanged: the event read after the link is at least as new as what the
//! link reflects, so a write based on them never undoes a sync that committed in between; if
//! the link changed, both are read again.
//!
//! Crash points: a relink is committed before its delete row is reported (a crash in between
//! reruns the guard, which finds the link live and supersedes the row); a verification is
//! committed before its row is reported (a rerun plans nothing new).

use confsync_core::model::Snapshot;
use confsync_core::plan::{Applied, Decision, PlanInput, plan};
use confsync_store::{LinkBase, OutboxItem, PlannedChange};
use tracing::info;

use crate::disposition::Failure;
use crate::drain::Step;
use crate::{Engine, EngineError};

/// Times a guard re-reads after a concurrent change of the link before it gives up (the row
/// is retried later).
const REREADS: usize = 3;

impl Engine {
    /// Where the event of a pending delete lives, carrying this conference: on its calendar
    /// (restored) or on another synced calendar (moved there).
    pub(crate) async fn event_lives(
        &self,
        item: &OutboxItem,
    ) -> Result<Option<(String, Snapshot)>, EngineError> {
        if let Some(s) = self.lives_on(&item.calendar_id, item).await? {
            return Ok(Some((item.calendar_id.clone(), s)));
        }
        let others = self.store.calendars().await?;
        for calendar in others
            .iter()
            .filter(|c| c.calendar_id != item.calendar_id)
            .take(self.config.move_check_limit)
        {
            if let Some(s) = self.lives_on(&calendar.calendar_id, item).await? {
                info!(conference_id = %item.conference_id, from = %item.calendar_id, to = %calendar.calendar_id, "event moved calendars: meeting kept");
                return Ok(Some((calendar.calendar_id.clone(), s)));
            }
        }
        Ok(None)
    }

    async fn lives_on(
        &self,
        calendar_id: &str,
        item: &OutboxItem,
    ) -> Result<Option<Snapshot>, EngineError> {
        let event = self
            .calendar
            .get(calendar_id, &item.event_id)
            .await
            .map_err(|source| EngineError::Calendar {
                calendar_id: calendar_id.to_owned(),
                source,
            })?;
        Ok(event
            .and_then(|v| Snapshot::from_json(&v).ok())
            .filter(|s| {
                !s.is_cancelled()
                    && s.organizer_self
                    && s.conference
                        .as_ref()
                        .and_then(|c| c.conference_id.as_deref())
                        == Some(item.conference_id.as_str())
            }))
    }

    /// Plans a live event (found by the delete guard) against its conference's deleted link,
    /// possibly on another calendar: the link moves to where the event is and follows its
    /// current spec. Answers false when the link kept changing under it (try again later); true
    /// when it is live now (restored here, or by someone else meanwhile).
    pub(crate) async fn relink(
        &self,
        calendar_id: &str,
        snapshot: &Snapshot,
        conference_id: &str,
        now_ms: i64,
        summary: &mut crate::DrainSummary,
    ) -> Result<bool, EngineError> {
        for _ in 0..REREADS {
            let Some(stored) = self.store.link_record(conference_id).await? else {
                return Ok(true);
            };
            if !stored.link.deleted {
                return Ok(true); // a sync (or another guard) brought it back already
            }
            let decision = plan(&PlanInput {
                calendar_id,
                snapshot,
                link: None,
                link_elsewhere: Some(&stored.link),
                provider: self.provider.name(),
                recognizer: &self.config.recognizer,
                capabilities: self.capabilities(),
                recreating: false,
                applied: if stored.unapplied() {
                    confsync_core::session::applied_for(
                        stored.applied_fingerprint.as_deref(),
                        snapshot,
                    )
                } else {
                    Applied::Linked
                },
            });
            let Decision::Apply {
                link,
                actions,
                supersede_deletes,
                ..
            } = decision
            else {
                return Ok(true);
            };
            let change = PlannedChange {
                link,
                base: LinkBase::Version(stored.version),
                actions,
                supersede_deletes,
                not_before_ms: now_ms,
            };
            let moved =
                stored.link.calendar_id != calendar_id && !stored.link.spec.recurrence.is_empty();
            match self
                .store
                .commit_page(calendar_id, &[change], &[], None, now_ms)
                .await
            {
                Ok(()) => {
                    if moved {
                        // The link reached this calendar behind its syncs' backs: they may
                        // have passed over changes of the series' instances here while no
                        // link was here to plan them (a cancelled instance carries no
                        // conference to find the link by). Its next pass lists everything.
                        self.store.mark_full_sync_needed(calendar_id).await?;
                        self.store.mark_dirty(calendar_id, now_ms).await?;
                        summary.resync.push(calendar_id.to_owned());
                        info!(
                            conference_id,
                            calendar_id,
                            "link moved here by the delete guard: the calendar's next sync is a full one"
                        );
                    }
                    return Ok(true);
                }
                Err(e) if e.is_stale() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// A linked event a full sync did not list: read it and plan what it says (deleted: the
    /// tombstone plans a delete; alive: a normal update).
    pub(crate) async fn verify(&self, item: &OutboxItem, now_ms: i64) -> Result<Step, EngineError> {
        for _ in 0..REREADS {
            let Some(stored) = self
                .store
                .link_record(&item.conference_id)
                .await?
                .filter(|s| !s.link.deleted)
            else {
                return Ok(Step::Done);
            };
            let link = stored.link;
            let event = self
                .calendar
                .get(&item.calendar_id, &item.event_id)
                .await
                .map_err(|source| EngineError::Calendar {
                    calendar_id: item.calendar_id.clone(),
                    source,
                })?;
            let value = match event {
                Some(value) => value,
                // The add-on makes the conference before Calendar saves the event: a link never
                // seen in Calendar is waiting for its event, not looking at a deleted one.
                None if link.last_etag_seen.is_none() => return Ok(Step::Done),
                None => serde_json::json!({"id": item.event_id, "status": "cancelled"}),
            };
            let Ok(snapshot) = Snapshot::from_json(&value) else {
                return Ok(Step::Done);
            };
            let recreating = !self
                .store
                .recreating(std::slice::from_ref(&link.conference_id))
                .await?
                .is_empty();
            let decision = plan(&PlanInput {
                calendar_id: &item.calendar_id,
                snapshot: &snapshot,
                link: Some(&link),
                link_elsewhere: None,
                provider: self.provider.name(),
                recognizer: &self.config.recognizer,
                capabilities: self.capabilities(),
                recreating,
                applied: Applied::Linked, // a live link
            });
            let Decision::Apply {
                link,
                actions,
                supersede_deletes,
                ..
            } = decision
            else {
                return Ok(Step::Done);
            };
            let change = PlannedChange {
                not_before_ms: self.not_before(&actions, now_ms),
                link,
                base: LinkBase::Version(stored.version),
                actions,
                supersede_deletes,
            };
            match self
                .store
                .commit_page(&item.calendar_id, &[change], &[], None, now_ms)
                .await
            {
                Ok(()) => return Ok(Step::Done),
                Err(e) if e.is_stale() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Step::Failed {
            failure: Failure::Retryable { retry_after: None },
            error: "the link kept changing during the verification".into(),
        })
    }
}
