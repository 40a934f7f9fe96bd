//! The add-on's create, idempotent per event ([`Engine::create_conference`]), and the clean-up
//! of creates whose meeting never showed up in its event ([`Engine::clean_up_intents`]).
//!
//! 1. [`Store::begin_create`](confsync_store::Store::begin_create): a live link of the event
//!    answers its conference; otherwise the event's create intent is stored (or resumed) and
//!    its key becomes the provider's idempotency key;
//! 2. `create` with that key, at the provider the intent's first attempt recorded
//!    ([`Store::claim_intent_provider`](confsync_store::Store::claim_intent_provider): the
//!    current one then), so a retry after a move to another provider finds the same meeting;
//! 3. [`Store::finish_create`](confsync_store::Store::finish_create): the link (never seen in
//!    Calendar yet) and the intent's `linked` state in one transaction.
//!
//! Crash points (and lost answers): a crash or lost answer after 2 leaves the intent
//! `creating`; the add-on's retry (whatever its request id) resumes it with the same key and
//! the provider answers the same meeting. Two concurrent retries both reach 3; the second finds
//! the first's link and answers it. An intent still open after the grace period (the user
//! closed the event without saving; nobody retried) is cleaned up: the meeting is found again by
//! its key, and deleted through the outbox unless its event shows it by then.

use confsync_core::model::{MeetingSpec, Snapshot, When};
use confsync_core::plan::{Action, Change, Link};
use confsync_providers::ProviderError;
use confsync_store::{CreateIntent, CreateStart, LinkBase, PlannedChange, StoreError};
use tracing::{info, warn};

use crate::{Engine, EngineError, now_utc};

/// What a create answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A meeting was made (or found again by the event's key) and linked by this call.
    New(Link),
    /// The event already had a conference: its link.
    Existing(Link),
}

impl Created {
    pub fn link(&self) -> &Link {
        match self {
            Created::New(l) | Created::Existing(l) => l,
        }
    }
}

/// Why a create failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The spec a meeting starts from when its event is not saved yet: the calendar's first sync
/// brings it in line with the event. Never an empty title.
pub fn placeholder(now_ms: i64) -> MeetingSpec {
    let now = now_utc(now_ms);
    MeetingSpec {
        title: "Meeting".into(),
        description: String::new(),
        start: When::At(now),
        end: When::At(now),
        time_zone: None,
        recurrence: Vec::new(),
        attendees: Vec::new(),
        organizer: None,
    }
}

/// Stale intents handled per clean-up.
const CLEAN_UP_BATCH: i64 = 100;

impl Engine {
    /// Creates (or finds again) the conference of an event. See the module documentation.
    pub async fn create_conference(
        &self,
        calendar_id: &str,
        event_id: &str,
        spec: &MeetingSpec,
        now_ms: i64,
    ) -> Result<Created, CreateError> {
        let key = match self
            .store
            .begin_create(calendar_id, event_id, now_ms)
            .await?
        {
            CreateStart::Existing(link) => return Ok(Created::Existing(*link)),
            CreateStart::Create { key } => key,
        };
        // The provider the event's create started with (recorded by its first attempt): a
        // retry after a move to another provider still finds the meeting made before it.
        let recorded = self
            .store
            .claim_intent_provider(calendar_id, event_id, &key, self.provider.name())
            .await?;
        let maker = match recorded.as_deref() {
            None => &self.provider,
            Some(name) => self.provider_named(name).ok_or_else(|| {
                ProviderError::Transient {
                    provider: name.to_owned(),
                    detail: format!(
                        "the create of this event started with provider {name:?}, which is not configured here"
                    ),
                    retry_after: None,
                }
            })?,
        };
        let meeting = maker.create(spec, &key).await?;
        let link = Link {
            conference_id: meeting.meeting_id.clone(),
            provider: maker.name().to_owned(),
            calendar_id: calendar_id.to_owned(),
            event_id: event_id.to_owned(),
            spec: spec.clone(),
            last_etag_seen: None,
            last_etag_written: None,
            occurrences: Default::default(),
            deleted: false,
            join_url: Some(meeting.join_url.clone()),
        };
        match self.store.finish_create(&link, now_ms).await {
            Ok(CreateStart::Existing(existing)) => Ok(Created::Existing(*existing)),
            Ok(CreateStart::Create { .. }) => {
                info!(calendar_id, event_id, conference_id = %link.conference_id, "conference created");
                Ok(Created::New(link))
            }
            // A concurrent retry linked the same meeting first: the same answer.
            Err(e) if e.is_stale() => match self.store.link(&link.conference_id).await? {
                Some(existing) if !existing.deleted => Ok(Created::Existing(existing)),
                _ => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Cleans up creates older than the grace period whose meeting never showed up in its event
    /// (at most a batch per call; the scheduler calls it periodically). Answers how many were
    /// closed. Intents whose link Calendar has shown are pruned first.
    pub async fn clean_up_intents(&self, now_ms: i64) -> Result<u64, EngineError> {
        self.store.prune_seen_intents().await?;
        let cutoff = now_ms - self.config.intent_grace_ms;
        let stale = self.store.stale_intents(cutoff, CLEAN_UP_BATCH).await?;
        let mut closed = 0;
        for intent in stale {
            match self.clean_up(&intent, now_ms).await {
                Ok(()) => closed += 1,
                Err(e) => {
                    warn!(calendar_id = %intent.calendar_id, event_id = %intent.event_id, error = %e, "could not clean up an abandoned create; trying again later")
                }
            }
        }
        Ok(closed)
    }

    async fn clean_up(&self, intent: &CreateIntent, now_ms: i64) -> Result<(), EngineError> {
        let (calendar_id, event_id) = (intent.calendar_id.as_str(), intent.event_id.as_str());
        // Still creating: the answer never came or the process died before linking. The key
        // finds the meeting if it was made (and makes one if not, which is deleted below: the
        // provider offers no lookup by key that every adapter shares).
        let conference_id = match &intent.conference_id {
            Some(id) => id.clone(),
            None => {
                // The provider its first attempt used (or, none recorded, the current one, now
                // recorded so a late retry of the add-on agrees).
                let Some(name) = self
                    .store
                    .claim_intent_provider(calendar_id, event_id, &intent.key, self.provider.name())
                    .await?
                else {
                    return Ok(()); // linked or abandoned meanwhile
                };
                let Some(maker) = self.provider_named(&name) else {
                    return Err(EngineError::Store(StoreError::Conflict {
                        what: format!("cleaning up an abandoned create ({})", intent.key),
                        detail: format!("its provider {name:?} is not configured"),
                    }));
                };
                let meeting = match maker
                    .create(&placeholder(intent.created_at), &intent.key)
                    .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(EngineError::Store(StoreError::Conflict {
                            what: format!(
                                "finding the meeting of an abandoned create ({})",
                                intent.key
                            ),
                            detail: e.to_string(),
                        }));
                    }
                };
                let link = Link {
                    conference_id: meeting.meeting_id.clone(),
                    provider: maker.name().to_owned(),
                    calendar_id: calendar_id.to_owned(),
                    event_id: event_id.to_owned(),
                    spec: placeholder(intent.created_at),
                    last_etag_seen: None,
                    last_etag_written: None,
                    occurrences: Default::default(),
                    deleted: false,
                    join_url: Some(meeting.join_url.clone()),
                };
                match self.store.finish_create(&link, now_ms).await {
                    Ok(CreateStart::Existing(_)) => {
                        // The event got another conference meanwhile: this meeting is nobody's.
                        self.delete_unlinked(maker, &meeting.meeting_id, &intent.key)
                            .await?;
                        self.store
                            .close_intent(calendar_id, event_id, intent.generation, true, now_ms)
                            .await?;
                        return Ok(());
                    }
                    Ok(CreateStart::Create { .. }) => {}
                    Err(e) if e.is_stale() || e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
                meeting.meeting_id
            }
        };
        let Some(stored) = self.store.link_record(&conference_id).await? else {
            return Ok(());
        };
        let shown = match self.calendar.get(calendar_id, event_id).await {
            Ok(Some(event)) => Snapshot::from_json(&event).is_ok_and(|s| {
                !s.is_cancelled()
                    && s.conference
                        .as_ref()
                        .and_then(|c| c.conference_id.as_deref())
                        == Some(conference_id.as_str())
            }),
            Ok(None) => false,
            Err(source) => {
                return Err(EngineError::Calendar {
                    calendar_id: calendar_id.to_owned(),
                    source,
                });
            }
        };
        if shown || stored.link.deleted || stored.link.last_etag_seen.is_some() {
            // The event has it (the next sync takes it in), or its fate is the sync's already.
            self.store
                .close_intent(calendar_id, event_id, intent.generation, false, now_ms)
                .await?;
            return Ok(());
        }
        info!(calendar_id, event_id, conference_id = %conference_id, "the event never showed the conference created for it: deleting the meeting");
        let mut link = stored.link.clone();
        link.deleted = true;
        let change = PlannedChange {
            link,
            base: LinkBase::Version(stored.version),
            actions: vec![Action::Delete {
                reason: Change::ConferenceRemoved,
            }],
            supersede_deletes: false,
            not_before_ms: now_ms,
        };
        match self
            .store
            .commit_page(calendar_id, &[change], &[], None, now_ms)
            .await
        {
            // Changed meanwhile (a sync saw the event): left to the next clean-up's check.
            Err(e) if e.is_stale() => return Ok(()),
            other => other?,
        }
        self.store
            .close_intent(calendar_id, event_id, intent.generation, true, now_ms)
            .await?;
        Ok(())
    }

    async fn delete_unlinked(
        &self,
        maker: &std::sync::Arc<dyn confsync_providers::ConferenceProvider>,
        meeting_id: &str,
        key: &str,
    ) -> Result<(), EngineError> {
        match maker.delete(meeting_id, &format!("{key}:abandoned")).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(EngineError::Store(StoreError::Conflict {
                what: format!("deleting meeting {meeting_id} of an abandoned create"),
                detail: e.to_string(),
            })),
        }
    }
}
