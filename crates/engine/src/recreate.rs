//! The recreate path: a meeting the provider cannot change in place is replaced.
//!
//! An update or occurrence change answered with [`ProviderError::Recreate`] queues an
//! [`Action::Recreate`] of the link's spec ([`Store::take_over`](confsync_store::Store::take_over)
//! supersedes the conference's other pending work, deletes aside). Running it:
//! 1. `provider.create` with the row's key (idempotent: a rerun finds the same meeting);
//!    The new meeting's id is recorded on the row (`Store::record_recreate_target`) before
//!    the event can show it;
//! 2. the event is read (also on other synced calendars if it moved); if it shows neither the
//!    old nor the new conference, the new meeting is deleted and a verification of the old
//!    link is queued (the delete guard decides the old meeting's fate: the sync that saw the
//!    change may have queued nothing, or a verification this row superseded);
//! 3. unless it already shows the new conference, its `conferenceData` is PATCHed with
//!    If-Match (three tries on 412, then later);
//! 4. [`Store::swap_link`](confsync_store::Store::swap_link), in one transaction, builds the new
//!    link from the old one as stored now, marks the old link (and any other live link of the
//!    event) deleted, supersedes the old conference's pending rows and queues the old meeting's
//!    delete (whose guard still checks the event).
//!
//! The new meeting is made by the provider the row names (`Action::Recreate::provider`: the
//! current one where the row was queued), on every attempt and whichever worker runs it, so a
//! rerun finds the same meeting even after the deployment moved to another provider; the new
//! link records that provider. A move to another provider (`confsync admin migrate-provider`,
//! [`Store::queue_provider_moves`](confsync_store::Store::queue_provider_moves)) is this path
//! for every future meeting of a previous provider; the old meeting's delete goes to the
//! provider its link names.
//!
//! Crash points (and lost answers): after 1, the rerun's create answers the same meeting; after
//! 3 (or a PATCH whose answer was lost), the rerun reads the event showing the new conference
//! and only swaps; after 4, the row is done or reruns into a swap that changes nothing. A row
//! that gives up deletes the new meeting unless the event shows it. While a recreate is pending,
//! the planner keeps the event on the old link even if it already shows the new conference, so
//! a sync between 3 and 4 neither deletes nor adopts; on another calendar (the event moved
//! there meanwhile) the recorded new id leads the sync to the old link, which moves there. At quiescence each live event with our
//! conference has exactly one live meeting, named by its live link.

use confsync_core::model::{MeetingSpec, Snapshot};
use confsync_core::plan::{Action, Link, Replacement, replacement};
use std::sync::Arc;

use confsync_providers::{ConferenceProvider, Meeting, ProviderError};
use confsync_store::OutboxItem;
use serde_json::Value;
use tracing::{info, warn};

use crate::disposition::{Disposition, Failure, dispose};
use crate::drain::Step;
use crate::{CalendarError, DrainSummary, Engine, EngineError, conference};

impl Engine {
    /// The provider refused to make a change in place: queue a recreate of the meeting with the
    /// spec the link will have once everything planned has run. It takes over the conference's
    /// other pending updates and occurrence changes (the new meeting is made from that spec and
    /// gets the link's exceptions at the swap; rows planned later are taken over by the swap).
    /// Queued before this row is completed: a crash in between repeats the refused call, and a
    /// replayed recreate is not queued twice.
    ///
    /// Also queued when the link is deleted by now: its event may have moved to another
    /// calendar (or come back), and the delete queued before this recreate runs first, so its
    /// guard re-homes the link and the recreate then carries the change; dropping the refused
    /// change here lost it for good (the re-homed link already holds its spec, so nothing plans
    /// it again). If the event is really gone, the delete removes the old meeting and the
    /// recreate deletes the new one it made (a rare, wasted create, never a lost change).
    pub(crate) async fn queue_recreate(
        &self,
        item: &OutboxItem,
        link: Option<Link>,
        now_ms: i64,
    ) -> Result<Step, EngineError> {
        let Some(link) = link else {
            return Ok(Step::Superseded);
        };
        info!(conference_id = %link.conference_id, calendar_id = %link.calendar_id, "the provider cannot change the meeting in place: recreating it");
        self.store
            .take_over(
                &link.conference_id,
                &link.calendar_id,
                &link.event_id,
                item.id,
                &[Action::Recreate {
                    spec: link.spec,
                    provider: Some(self.provider.name().to_owned()),
                }],
                now_ms,
            )
            .await?;
        Ok(Step::Done)
    }

    /// The recreate path (see the module documentation). Answers what became of it, or the
    /// failure to report for the row (retryable ones resume from the top: the create answers
    /// the same meeting for the row's key).
    pub(crate) async fn recreate(
        &self,
        item: &OutboxItem,
        spec: &MeetingSpec,
        maker: &Arc<dyn ConferenceProvider>,
        link: Option<&Link>,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Result<Recreated, RecreateFailure>, EngineError> {
        // Links are never removed, so there is always one; without it nothing can be swapped.
        let Some(old) = link else {
            return Ok(Ok(Recreated::Superseded));
        };
        // Always made, even when the old link is deleted by now: a crash after an earlier
        // attempt's create must find that meeting again to clean it up (never two live ones).
        summary.provider_calls += 1;
        let meeting = match maker.create(spec, &item.idempotency_key).await {
            Ok(meeting) => meeting,
            Err(e) => return Ok(Err(RecreateFailure::Provider(e))),
        };
        if meeting.meeting_id == old.conference_id {
            // The provider remade the meeting under the same id: nothing to swap, only the
            // join link may have changed.
            if old.join_url.as_deref() != Some(meeting.join_url.as_str()) && !old.deleted {
                self.store
                    .enqueue(
                        &old.conference_id,
                        &old.calendar_id,
                        &old.event_id,
                        &[Action::WriteBack {
                            join_url: meeting.join_url,
                        }],
                        now_ms,
                        now_ms,
                    )
                    .await?;
            }
            return Ok(Ok(Recreated::Swapped));
        }
        let e = match self
            .repoint(item, old, spec, maker, &meeting, now_ms, summary)
            .await?
        {
            Ok(done) => return Ok(Ok(done)),
            Err(e) => e,
        };
        // The row stops for good when its disposition says so: the new meeting must not
        // outlive it.
        let gives_up = matches!(
            dispose(
                Failure::of_provider(&e),
                item.attempts,
                &self.config.backoff,
                &item.idempotency_key,
                now_ms
            ),
            Disposition::Fail
        );
        if !gives_up {
            return Ok(Err(RecreateFailure::Provider(e)));
        }
        Ok(
            match self
                .abandon(item, old, spec, maker, &meeting, now_ms, summary)
                .await?
            {
                Abandoned::Swapped => Ok(Recreated::Swapped),
                Abandoned::Deleted => Err(RecreateFailure::Provider(e)),
                // The new meeting's fate is unknown: the row must not end while it may live.
                Abandoned::Unresolved(why) => Err(RecreateFailure::Unresolved(why)),
            },
        )
    }

    /// Points the event at the new meeting and swaps the links; deletes the new meeting if the
    /// event no longer wants it.
    #[allow(clippy::too_many_arguments)]
    async fn repoint(
        &self,
        item: &OutboxItem,
        old: &Link,
        spec: &MeetingSpec,
        maker: &Arc<dyn ConferenceProvider>,
        meeting: &Meeting,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Result<Recreated, ProviderError>, EngineError> {
        let new_id = meeting.meeting_id.as_str();
        // Before the event can show the new meeting: a sync that sees it there before the swap
        // (the event moved to another calendar meanwhile) plans it against the old link.
        self.store.record_recreate_target(item.id, new_id).await?;
        for _ in 0..3 {
            let found = match self.find_replaced(item, old, new_id).await {
                Ok(found) => found,
                Err(EngineError::Calendar { source, .. }) => {
                    return Ok(Err(calendar_failure(source)));
                }
                Err(e) => return Err(e),
            };
            let Some(found) = found else {
                // Gone, cancelled, or showing another conference: the new meeting is not
                // wanted. The old meeting's fate is the delete guard's: a sync may have seen
                // the change already (and queued a verification this row superseded, or
                // nothing, for a link it had not seen yet), so a verification of the old link
                // is queued; it runs after this row.
                summary.provider_calls += 1;
                let key = format!("{}:abandoned", item.idempotency_key);
                return Ok(match maker.delete(new_id, &key).await {
                    Ok(()) | Err(ProviderError::NotFound { .. }) => {
                        info!(conference_id = %old.conference_id, new_conference_id = new_id, "event no longer shows the meeting: the new meeting was deleted, the old one is verified");
                        if !old.deleted {
                            self.store
                                .enqueue(
                                    &old.conference_id,
                                    &old.calendar_id,
                                    &old.event_id,
                                    &[Action::Verify],
                                    now_ms,
                                    now_ms,
                                )
                                .await?;
                        }
                        Ok(Recreated::Abandoned)
                    }
                    Err(e) => Err(e),
                });
            };
            if found.shows(new_id) {
                // A crash after an earlier attempt's PATCH: only the swap is left.
                self.swap(item, old, spec, maker, meeting, &found, None, now_ms)
                    .await?;
                return Ok(Ok(Recreated::Swapped));
            }
            let Some(etag) = found.snapshot.etag.clone() else {
                return Ok(Err(ProviderError::Permanent {
                    provider: "calendar".into(),
                    detail: format!("event {} has no etag", found.snapshot.event_id),
                }));
            };
            let body = serde_json::json!({
                "conferenceData": conference::repointed(
                    &self.config.recognizer,
                    found.event.get("conferenceData"),
                    &meeting.meeting_id,
                    &meeting.join_url,
                )
            });
            match self
                .calendar
                .patch(&found.calendar_id, &found.snapshot.event_id, &body, &etag)
                .await
            {
                Ok(written) => {
                    let written_etag = written.get("etag").and_then(Value::as_str);
                    let found = match Snapshot::from_json(&written) {
                        Ok(snapshot) => Found {
                            calendar_id: found.calendar_id,
                            snapshot,
                            event: written.clone(),
                        },
                        Err(_) => found,
                    };
                    self.swap(
                        item,
                        old,
                        spec,
                        maker,
                        meeting,
                        &found,
                        written_etag,
                        now_ms,
                    )
                    .await?;
                    return Ok(Ok(Recreated::Swapped));
                }
                // The user edited the event since our read: read it again, never overwrite.
                Err(CalendarError::PreconditionFailed) => continue,
                // Gone from where it was read (moved to another calendar, deleted) or refused
                // there: read again, wherever it is now, before deciding anything.
                Err(CalendarError::Fatal { .. }) => continue,
                Err(e) => return Ok(Err(calendar_failure(e))),
            }
        }
        Ok(Err(ProviderError::Transient {
            provider: "calendar".into(),
            detail: "the event changed during three attempts to point it at the new meeting (412)"
                .into(),
            retry_after: None,
        }))
    }

    /// The row is about to stop for good: the new meeting must not outlive it unless the event
    /// shows it (then the swap is done now). When the event cannot be read, the new meeting is
    /// kept, and the row stays (parked, retried without using attempts) until it can tell: two
    /// live meetings can be cleaned up, an event whose meeting is gone cannot, and a meeting no
    /// row owns would never be.
    #[allow(clippy::too_many_arguments)]
    async fn abandon(
        &self,
        item: &OutboxItem,
        old: &Link,
        spec: &MeetingSpec,
        maker: &Arc<dyn ConferenceProvider>,
        meeting: &Meeting,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Abandoned, EngineError> {
        let new_id = meeting.meeting_id.as_str();
        match self.find_replaced(item, old, new_id).await {
            Ok(Some(found)) if found.shows(new_id) => {
                self.swap(item, old, spec, maker, meeting, &found, None, now_ms)
                    .await?;
                Ok(Abandoned::Swapped)
            }
            Ok(_) => {
                summary.provider_calls += 1;
                let key = format!("{}:abandoned", item.idempotency_key);
                match maker.delete(new_id, &key).await {
                    Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(Abandoned::Deleted),
                    Err(e) => {
                        warn!(new_conference_id = new_id, error = %e, "recreate given up; the new meeting could not be deleted yet");
                        Ok(Abandoned::Unresolved(format!(
                            "giving up a recreate: the new meeting {new_id} could not be deleted: {e}"
                        )))
                    }
                }
            }
            Err(EngineError::Calendar { source, .. }) => {
                warn!(new_conference_id = new_id, error = %source, "recreate given up; the event could not be read, the new meeting is kept for now");
                Ok(Abandoned::Unresolved(format!(
                    "giving up a recreate: the event could not be read to tell whether the new meeting {new_id} is needed: {source}"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// The last step: the links swap in one store transaction, and the old meeting's delete is
    /// queued (its guard still checks that the event no longer shows it).
    #[allow(clippy::too_many_arguments)]
    async fn swap(
        &self,
        item: &OutboxItem,
        old: &Link,
        spec: &MeetingSpec,
        maker: &Arc<dyn ConferenceProvider>,
        meeting: &Meeting,
        found: &Found,
        written_etag: Option<&str>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let capabilities = maker.capabilities();
        let r = Replacement {
            conference_id: &meeting.meeting_id,
            join_url: &meeting.join_url,
            calendar_id: &found.calendar_id,
            snapshot: &found.snapshot,
            created: spec,
            written_etag,
            capabilities,
        };
        let link = self
            .store
            .swap_link(
                &old.conference_id,
                &meeting.meeting_id,
                item.id,
                now_ms,
                |now, existing| {
                    let (mut link, mut actions) = replacement(now, existing, &r);
                    // The new meeting is its maker's (the old one may have been made by another
                    // provider: a move to another provider).
                    link.provider = maker.name().to_owned();
                    // The event shows the new conference with another join link than the
                    // meeting has now (the create ran again after a lost answer, and the
                    // provider answered the meeting's current link): write the current one.
                    let shown = found
                        .snapshot
                        .conference
                        .as_ref()
                        .and_then(|c| c.join_uri.as_deref());
                    if shown.is_some_and(|url| url != meeting.join_url) {
                        actions.push(Action::WriteBack {
                            join_url: meeting.join_url.clone(),
                        });
                    }
                    if now != old {
                        // A sync planned the old link while this recreate ran: what it saw may
                        // be newer than the event this swap read, so read the event once more.
                        actions.push(Action::Verify);
                    }
                    (link, actions)
                },
            )
            .await?;
        info!(conference_id = %old.conference_id, new_conference_id = %link.conference_id, calendar_id = %link.calendar_id, "meeting recreated: the event shows the new one, the old one will be deleted");
        Ok(())
    }

    /// Where the event of a recreate is, if it still carries the old or the new conference: at
    /// the old link's place, at the row's, or (moved) on another synced calendar. None when it
    /// is gone, cancelled, or shows another conference.
    async fn find_replaced(
        &self,
        item: &OutboxItem,
        old: &Link,
        new_id: &str,
    ) -> Result<Option<Found>, EngineError> {
        let mut places = vec![(old.calendar_id.clone(), old.event_id.clone())];
        if (item.calendar_id.as_str(), item.event_id.as_str())
            != (old.calendar_id.as_str(), old.event_id.as_str())
        {
            places.push((item.calendar_id.clone(), item.event_id.clone()));
        }
        let mut looked = 0;
        let mut others_listed = false;
        let mut i = 0;
        while i < places.len() {
            let (calendar_id, event_id) = places[i].clone();
            i += 1;
            let event = self
                .calendar
                .get(&calendar_id, &event_id)
                .await
                .map_err(|source| EngineError::Calendar {
                    calendar_id: calendar_id.clone(),
                    source,
                })?;
            if let Some(event) = event
                && let Ok(snapshot) = Snapshot::from_json(&event)
                && !snapshot.is_cancelled()
                && snapshot.organizer_self
            {
                let found = Found {
                    calendar_id,
                    snapshot,
                    event,
                };
                // The organizer's live copy is the event: it shows ours, or another conference.
                return Ok(
                    (found.shows(&old.conference_id) || found.shows(new_id)).then_some(found)
                );
            }
            if i == places.len() && !others_listed {
                // Not here (moved away, or deleted): an event moved to another synced calendar
                // keeps its id.
                others_listed = true;
                for calendar in self.store.calendars().await? {
                    if looked >= self.config.move_check_limit {
                        break;
                    }
                    if places.iter().any(|(c, _)| c == &calendar.calendar_id) {
                        continue;
                    }
                    looked += 1;
                    places.push((calendar.calendar_id, old.event_id.clone()));
                }
            }
        }
        Ok(None)
    }
}

/// What became of a recreate.
/// Why a recreate attempt did not finish.
pub(crate) enum RecreateFailure {
    /// Disposed like any provider failure.
    Provider(ProviderError),
    /// Given up, but a new meeting may still live: the row must stay (parked) until that is
    /// settled.
    Unresolved(String),
}

/// What giving up a recreate came to.
enum Abandoned {
    /// The event showed the new meeting after all: swapped.
    Swapped,
    /// The new meeting is deleted: nothing is left behind.
    Deleted,
    /// The new meeting may still live (the event could not be read, or the delete failed).
    Unresolved(String),
}

pub(crate) enum Recreated {
    /// The event shows the new meeting and the links are swapped.
    Swapped,
    /// The event no longer wanted a meeting from us: the new one was deleted.
    Abandoned,
    /// Nothing to do (no link).
    Superseded,
}

/// An event of a recreate, as read (or as our PATCH answered it).
struct Found {
    calendar_id: String,
    snapshot: Snapshot,
    event: Value,
}

impl Found {
    fn shows(&self, conference_id: &str) -> bool {
        self.snapshot
            .conference
            .as_ref()
            .and_then(|c| c.conference_id.as_deref())
            == Some(conference_id)
    }
}

/// A calendar failure of an executor step, classified as a provider failure is, so the outbox
/// treats it alike (retry, re-authorisation, permanent).
fn calendar_failure(e: CalendarError) -> ProviderError {
    match e {
        CalendarError::Fatal { detail } => ProviderError::Permanent {
            provider: "calendar".into(),
            detail,
        },
        CalendarError::Reauth { detail } => ProviderError::Reauth {
            provider: "calendar".into(),
            detail,
        },
        other => ProviderError::Transient {
            provider: "calendar".into(),
            detail: other.to_string(),
            retry_after: match other {
                CalendarError::Retryable { retry_after, .. } => retry_after,
                _ => None,
            },
        },
    }
}
