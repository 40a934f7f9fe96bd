//! The engine: drives the sans-IO core against a calendar, a store and a provider.
//!
//! [`Engine::sync`] runs one pass over one calendar: it asks the [`Session`] for each request,
//! preloads the links the page needs, lets the session plan the page, and commits the page's
//! links, outbox actions and dead letters (and, on the last page, the new sync token) in one
//! store transaction. [`Engine::drain`] runs due outbox actions against the provider, in
//! per-conference order, with retries and backoff.
//!
//! When the provider cannot make a change in place ([`ProviderError::Recreate`]), the executor
//! queues an [`Action::Recreate`]: create a new meeting (idempotent by the row's key), point the
//! event's conference data at it (If-Match, re-read on 412), then in one store transaction swap
//! the links and queue the old meeting's delete. Each step is found again after a crash: the
//! create by its key, the PATCH by the event showing the new conference id, the swap by the
//! links; so once the outbox has run, a crash has left neither two live meetings for an event
//! nor none. While the recreate is pending, sync plans the event against the old link even
//! when it already shows the new conference ([`PlanInput::recreating`]).
//!
//! Time is an argument everywhere (`now_ms`), never read here, so the deterministic simulation
//! can drive the engine. The calendar is reached through [`CalendarApi`]: the Google client in
//! production, the in-process emulator in the simulation.

pub mod backoff;
pub mod calendar;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use confsync_core::model::{MeetingSpec, Snapshot};
use confsync_core::plan::{
    Action, Capabilities, Decision, Link, PlanInput, Recognizer, Replacement, idempotency_key,
    plan, replacement,
};
use confsync_core::session::{LinkSet, Page, Session, SessionConfig, SessionError};
use confsync_providers::{ConferenceProvider, Meeting, ProviderError};
use confsync_store::{DeadLetter, OutboxItem, PlannedChange, Store, StoreError};
use serde_json::Value;
use tracing::{info, warn};

pub use calendar::{CalendarApi, CalendarError, WatchedChannel};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub recognizer: Recognizer,
    /// How far back a full sync lists; None lists everything.
    pub full_sync_window: Option<chrono::Duration>,
    pub page_size: u32,
    /// Deletes wait this long, so an event moved to another synced calendar is seen there first.
    pub delete_grace_ms: i64,
    /// Before a delete, up to this many other synced calendars are checked for the event (an
    /// event moved to another calendar leaves a tombstone behind that looks like a deletion).
    pub move_check_limit: usize,
    pub backoff: backoff::Backoff,
    /// Provider calls a drain makes at the same time (each for a different conference: the
    /// outbox hands out one row per conference). Real providers answer in 100s of ms, so
    /// running them one by one would cap a service at a few calls per second.
    pub drain_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            recognizer: Recognizer {
                solution_names: vec!["confsync".into()],
                parameter_key: Some("confsyncConferenceId".into()),
            },
            full_sync_window: Some(chrono::Duration::days(30)),
            page_size: 2500,
            delete_grace_ms: 0,
            move_check_limit: 50,
            backoff: backoff::Backoff::default(),
            drain_concurrency: 16,
        }
    }
}

/// What can stop a pass or a drain.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("calendar {calendar_id}: {source}")]
    Calendar {
        calendar_id: String,
        source: CalendarError,
    },
    #[error("calendar {calendar_id}: {source}")]
    Session {
        calendar_id: String,
        source: SessionError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long an action waiting for re-authorisation is put off before it is tried again.
pub const REAUTH_PARK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The summary of one sync pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSummary {
    pub calendar_id: String,
    pub full: bool,
    pub pages: u32,
    pub events: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub actions: BTreeMap<&'static str, u64>,
    pub dead_letters: u64,
    /// Linked events a full sync did not list, queued for an events.get check.
    pub verifications: u64,
}

/// The summary of one outbox drain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainSummary {
    pub done: u64,
    pub retried: u64,
    pub failed: u64,
    pub superseded: u64,
    /// Provider calls made (successful or not).
    pub provider_calls: u64,
    /// Completed actions by kind (`update`, `delete`, ...).
    pub done_by_kind: BTreeMap<&'static str, u64>,
}

impl DrainSummary {
    /// Adds another drain's counts to this one.
    pub fn merge(&mut self, other: DrainSummary) {
        self.done += other.done;
        self.retried += other.retried;
        self.failed += other.failed;
        self.superseded += other.superseded;
        self.provider_calls += other.provider_calls;
        for (kind, n) in other.done_by_kind {
            *self.done_by_kind.entry(kind).or_default() += n;
        }
    }
}

/// Polls futures together until all are done; answers their outputs in order. (The few lines
/// a `futures::join_all` would bring in a crate for.)
async fn join_all<F: Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut slots: Vec<(F, Option<F::Output>)> = futures.into_iter().map(|f| (f, None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in slots.iter_mut() {
            if out.is_none() {
                match std::pin::Pin::new(future).poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, out)| out).collect()
}

/// Called after each page of a sync: (calendar id, pages so far, events so far, full sync?).
pub type Progress = Arc<dyn Fn(&str, u32, u64, bool) + Send + Sync>;

/// The engine for one provider.
pub struct Engine {
    pub store: Store,
    pub calendar: Arc<dyn CalendarApi>,
    pub provider: Arc<dyn ConferenceProvider>,
    pub config: EngineConfig,
    progress: Option<Progress>,
}

fn now_utc(now_ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default()
}

impl Engine {
    pub fn new(
        store: Store,
        calendar: Arc<dyn CalendarApi>,
        provider: Arc<dyn ConferenceProvider>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            store,
            calendar,
            provider,
            config,
            progress: None,
        }
    }

    /// Reports progress after each page (the CLI's progress bar on full syncs).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_results: self.config.page_size,
            full_sync_window: self.config.full_sync_window,
            recognizer: self.config.recognizer.clone(),
            capabilities: self.provider.capabilities(),
            provider: self.provider.name().to_owned(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.provider.capabilities()
    }

    /// One sync pass over `calendar_id`.
    pub async fn sync(
        &self,
        calendar_id: &str,
        force_full: bool,
        now_ms: i64,
    ) -> Result<SyncSummary, EngineError> {
        self.store.ensure_calendar(calendar_id).await?;
        let state = self.store.calendar(calendar_id).await?;
        let (token, needs_full) = state
            .map(|s| (s.sync_token, s.needs_full_sync))
            .unwrap_or((None, true));
        let now = now_utc(now_ms);
        let mut session = Session::new(
            calendar_id,
            token,
            force_full || needs_full,
            now,
            self.session_config(),
        );
        let calendar_error = |source| EngineError::Calendar {
            calendar_id: calendar_id.to_owned(),
            source,
        };
        let mut linked: Option<HashSet<String>> = None;
        while !session.is_done() {
            if session.is_full() && linked.is_none() {
                linked = Some(
                    self.store
                        .link_event_ids(calendar_id)
                        .await?
                        .into_iter()
                        .collect(),
                );
            }
            let request = session.request();
            let page = match self.calendar.list(calendar_id, &request).await {
                Ok(page) => page,
                Err(CalendarError::FullSyncRequired) => {
                    info!(
                        calendar_id,
                        "sync token refused (410): full sync of this calendar"
                    );
                    session
                        .restart_full(now)
                        .map_err(|source| EngineError::Session {
                            calendar_id: calendar_id.to_owned(),
                            source,
                        })?;
                    self.store.mark_full_sync_needed(calendar_id).await?;
                    continue;
                }
                Err(e) => return Err(calendar_error(e)),
            };
            let filter = if session.is_full() {
                linked.as_ref()
            } else {
                None
            };
            self.commit_page(&mut session, page, filter, now_ms).await?;
            if let Some(progress) = &self.progress {
                progress(
                    calendar_id,
                    session.tally().pages,
                    session.tally().events,
                    session.is_full(),
                );
            }
        }
        let mut verifications = 0;
        if session.is_full() {
            let linked = self.store.link_event_ids(calendar_id).await?;
            let unseen = session.unseen(linked.iter().map(String::as_str));
            let mut changes = Vec::new();
            for (event_id, action) in unseen {
                let found = self
                    .store
                    .links(calendar_id, std::slice::from_ref(&event_id), &[])
                    .await?;
                if let Some(link) = found
                    .into_iter()
                    .find(|l| l.calendar_id == calendar_id && l.event_id == event_id)
                {
                    changes.push(PlannedChange {
                        link,
                        actions: vec![action],
                        supersede_deletes: false,
                        not_before_ms: now_ms,
                    });
                }
            }
            verifications = changes.len() as u64;
            if !changes.is_empty() {
                self.store
                    .commit_page(calendar_id, &changes, &[], None, now_ms)
                    .await?;
            }
        }
        let tally = session.tally();
        Ok(SyncSummary {
            calendar_id: calendar_id.to_owned(),
            full: session.is_full(),
            pages: tally.pages,
            events: tally.events,
            skipped: tally.skipped.clone(),
            actions: tally.actions.clone(),
            dead_letters: tally.dead_letters,
            verifications,
        })
    }

    async fn commit_page(
        &self,
        session: &mut Session,
        page: Page,
        linked: Option<&HashSet<String>>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let calendar_id = session.calendar_id().to_owned();
        let page = page.parse();
        let mut event_ids = page.event_ids();
        if let Some(linked) = linked {
            // A full sync lists every event; only the linked ones have anything to load. Series
            // of listed instances are always loaded: their link may have reached this calendar
            // during this pass, after `linked` was read.
            let series = page.series_ids();
            event_ids.retain(|id| linked.contains(id) || series.contains(id));
        }
        if page.next_page_token.is_none() {
            event_ids.extend(session.deferred_series());
        }
        let loaded = self
            .store
            .links(&calendar_id, &event_ids, &page.conference_ids())
            .await?;
        let before: HashMap<String, Link> = loaded
            .iter()
            .map(|l| (l.conference_id.clone(), l.clone()))
            .collect();
        // Links whose meeting is being recreated: their event may already show the new
        // conference, which is not a replacement to delete for.
        let recreating = if loaded.is_empty() {
            HashSet::new()
        } else {
            let ids: Vec<String> = loaded.iter().map(|l| l.conference_id.clone()).collect();
            self.store.recreating(&ids).await?
        };
        let mut links = LinkSet::new(loaded);
        links.set_recreating(recreating);
        let outcome = session
            .on_page(page, &mut links)
            .map_err(|source| EngineError::Session {
                calendar_id: calendar_id.clone(),
                source,
            })?;
        let changes: Vec<PlannedChange> = outcome
            .decisions
            .into_iter()
            .filter_map(|(_, decision)| match decision {
                // Nothing to run and nothing new to remember: no write (most of a full sync).
                Decision::Apply {
                    link,
                    actions,
                    supersede_deletes: false,
                    ..
                } if actions.is_empty() && before.get(&link.conference_id) == Some(&link) => None,
                Decision::Apply {
                    link,
                    actions,
                    supersede_deletes,
                    ..
                } => {
                    let delete = actions.iter().any(|a| matches!(a, Action::Delete { .. }));
                    let not_before_ms = if delete {
                        now_ms + self.config.delete_grace_ms
                    } else {
                        now_ms
                    };
                    Some(PlannedChange {
                        link,
                        actions,
                        supersede_deletes,
                        not_before_ms,
                    })
                }
                Decision::Skip(_) => None,
            })
            .collect();
        // Each dead letter is logged once, when first seen; the store counts the repeats.
        let known: HashSet<(Option<String>, String)> = if outcome.dead_letters.is_empty() {
            HashSet::new()
        } else {
            self.store
                .dead_letters(&calendar_id)
                .await?
                .into_iter()
                .map(|d| (d.event_id, d.reason))
                .collect()
        };
        let dead: Vec<DeadLetter> = outcome
            .dead_letters
            .into_iter()
            .map(|(event_id, reason, raw)| {
                if !known.contains(&(event_id.clone(), reason.clone())) {
                    warn!(calendar_id = %calendar_id, event_id = event_id.as_deref().unwrap_or("?"), %reason, "event dead-lettered");
                }
                DeadLetter { event_id, reason, raw }
            })
            .collect();
        self.store
            .commit_page(
                &calendar_id,
                &changes,
                &dead,
                outcome.sync_token.as_deref(),
                now_ms,
            )
            .await?;
        Ok(())
    }

    /// Runs every outbox action due at `now_ms` (and those that become due as earlier actions of
    /// the same conference complete), until none is due.
    pub async fn drain(&self, now_ms: i64) -> Result<DrainSummary, EngineError> {
        let mut summary = DrainSummary::default();
        loop {
            let due = self.store.due(64, now_ms).await?;
            if due.is_empty() {
                return Ok(summary);
            }
            for chunk in due.chunks(self.config.drain_concurrency.max(1)) {
                let runs: Vec<_> = chunk
                    .iter()
                    .cloned()
                    .map(|item| Box::pin(self.run_one(item, now_ms)))
                    .collect();
                let mut error = None;
                for result in join_all(runs).await {
                    match result {
                        Ok(one) => summary.merge(one),
                        Err(e) => error = Some(e),
                    }
                }
                if let Some(e) = error {
                    return Err(e);
                }
            }
        }
    }

    /// Runs one outbox row and reports it.
    async fn run_one(&self, item: OutboxItem, now_ms: i64) -> Result<DrainSummary, EngineError> {
        let mut summary = DrainSummary::default();
        let (id, attempts) = (item.id, item.attempts);
        let key = item.idempotency_key.clone();
        match self.execute(item, now_ms, &mut summary).await {
            // A calendar read the action needed (the guard before a delete, the check of a new
            // link) failed: this row waits, the others go on.
            Err(EngineError::Calendar {
                calendar_id,
                source,
            }) => {
                let error = format!("calendar {calendar_id}: {source}");
                let (retry_after, reauth) = match &source {
                    CalendarError::Retryable { retry_after, .. } => (*retry_after, false),
                    CalendarError::Reauth { .. } => (None, true),
                    _ => (None, false),
                };
                if reauth {
                    let until = now_ms + REAUTH_PARK.as_millis() as i64;
                    self.store.park(id, until, &error, now_ms).await?;
                } else if attempts + 1 < self.config.backoff.max_attempts {
                    let delay = self.config.backoff.delay(attempts, retry_after, &key);
                    let until = now_ms + delay.as_millis() as i64;
                    self.store.retry_later(id, until, &error, now_ms).await?;
                } else {
                    warn!(%error, "action failed permanently");
                    self.store.fail(id, &error, now_ms).await?;
                    summary.failed += 1;
                    return Ok(summary);
                }
                summary.retried += 1;
                Ok(summary)
            }
            other => other.map(|()| summary),
        }
    }

    async fn execute(
        &self,
        item: OutboxItem,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<(), EngineError> {
        let link = self.store.link(&item.conference_id).await?;
        let key = item.idempotency_key.clone();
        let id = item.conference_id.as_str();
        let result = match &item.action {
            Action::Update { spec, .. } => {
                summary.provider_calls += 1;
                match self.provider.update(id, spec, &key).await {
                    Ok(join_url) => {
                        // Compared with the link, not with what this call changed: after a crash
                        // between a join-link change and this point, the retried update still
                        // finds the difference.
                        let stale = |l: &Link| join_url.is_some() && l.join_url != join_url;
                        if let (Some(join_url), Some(link)) =
                            (join_url.clone(), link.clone().filter(|l| stale(l)))
                        {
                            // Queued before the update is marked done: a crash in between
                            // repeats the (idempotent) update, never loses the write-back.
                            let change = PlannedChange {
                                link,
                                actions: vec![Action::WriteBack { join_url }],
                                supersede_deletes: false,
                                not_before_ms: now_ms,
                            };
                            self.store
                                .commit_page(&item.calendar_id, &[change], &[], None, now_ms)
                                .await?;
                        }
                        Ok(Some(spec.fingerprint()))
                    }
                    Err(e) => Err(e),
                }
            }
            Action::WriteBack { join_url } => self
                .write_back(&item, join_url)
                .await
                .map(|_| None)
                .map_err(calendar_failure),
            Action::Recreate { spec } => {
                match self
                    .recreate(&item, spec, link.as_ref(), now_ms, summary)
                    .await?
                {
                    Ok(Recreated::Superseded) => {
                        self.store.supersede(item.id).await?;
                        summary.superseded += 1;
                        return Ok(());
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Action::UpdateOccurrence {
                occurrence,
                start,
                end,
                title,
            } => {
                summary.provider_calls += 1;
                self.provider
                    .update_occurrence(id, *occurrence, *start, *end, title, &key)
                    .await
                    .map(|_| None)
            }
            Action::CancelOccurrence { occurrence } => {
                summary.provider_calls += 1;
                self.provider
                    .cancel_occurrence(id, *occurrence, &key)
                    .await
                    .map(|_| None)
            }
            Action::Delete { .. } => {
                // The link moved (event moved to another calendar) or came back: not ours to delete.
                let still_ours = link
                    .as_ref()
                    .is_some_and(|l| l.deleted && l.calendar_id == item.calendar_id);
                if !still_ours {
                    self.store.supersede(item.id).await?;
                    summary.superseded += 1;
                    return Ok(());
                }
                if let (Some((calendar_id, event)), Some(link)) =
                    (self.event_lives(&item).await?, link.as_ref())
                {
                    // Restored, or moved to another synced calendar whose sync has not run yet:
                    // keep the meeting and re-home the link now, so a later change there finds it.
                    self.store.supersede(item.id).await?;
                    summary.superseded += 1;
                    self.relink(&calendar_id, &event, link, now_ms).await?;
                    return Ok(());
                }
                summary.provider_calls += 1;
                match self.provider.delete(id, &key).await {
                    Err(ProviderError::NotFound { .. }) => Ok(None),
                    other => other.map(|_| None),
                }
            }
            Action::Verify => {
                self.verify(&item, link, now_ms).await?;
                self.store.complete(item.id, now_ms).await?;
                summary.done += 1;
                return Ok(());
            }
        };
        match result {
            Err(ProviderError::Recreate { .. })
                if matches!(
                    item.action,
                    Action::Update { .. }
                        | Action::UpdateOccurrence { .. }
                        | Action::CancelOccurrence { .. }
                ) =>
            {
                self.queue_recreate(&item, link, now_ms, summary).await?;
            }
            Ok(applied) => {
                if let Some(fingerprint) = applied {
                    self.store.record_applied(id, &fingerprint).await?;
                }
                self.store.complete(item.id, now_ms).await?;
                summary.done += 1;
                *summary.done_by_kind.entry(item.action.kind()).or_default() += 1;
            }
            Err(ProviderError::NotFound { .. }) => {
                // The meeting is gone while its event lives: nothing to update. Visible, not retried.
                self.store
                    .fail(
                        item.id,
                        &format!("{}: meeting not found at the provider", item.conference_id),
                        now_ms,
                    )
                    .await?;
                summary.failed += 1;
            }
            Err(e @ ProviderError::Reauth { .. }) => {
                // Credentials to renew (the provider's, or the calendar owner's grant): the
                // action waits for them without using up its attempts, and is never lost.
                self.store
                    .park(
                        item.id,
                        now_ms + REAUTH_PARK.as_millis() as i64,
                        &e.to_string(),
                        now_ms,
                    )
                    .await?;
                summary.retried += 1;
            }
            Err(e) if e.is_retryable() && item.attempts + 1 < self.config.backoff.max_attempts => {
                let delay = self
                    .config
                    .backoff
                    .delay(item.attempts, e.retry_after(), &key);
                self.store
                    .retry_later(
                        item.id,
                        now_ms + delay.as_millis() as i64,
                        &e.to_string(),
                        now_ms,
                    )
                    .await?;
                summary.retried += 1;
            }
            Err(e) => {
                warn!(conference_id = %item.conference_id, error = %e, "action failed permanently");
                self.store.fail(item.id, &e.to_string(), now_ms).await?;
                summary.failed += 1;
            }
        }
        Ok(())
    }

    /// The provider refused to make a change in place: queue a recreate of the meeting with the
    /// spec the link will have once everything planned has run. It takes over the conference's
    /// other pending updates and occurrence changes (the new meeting is made from that spec and
    /// gets the link's exceptions at the swap; rows planned later are taken over by the swap).
    /// Queued before this row is completed: a crash in between repeats the refused call, and a
    /// replayed recreate is not queued twice. A link no longer live (the event was cancelled
    /// meanwhile) needs nothing.
    async fn queue_recreate(
        &self,
        item: &OutboxItem,
        link: Option<Link>,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<(), EngineError> {
        let Some(link) = link.filter(|l| !l.deleted) else {
            self.store.supersede(item.id).await?;
            summary.superseded += 1;
            return Ok(());
        };
        info!(conference_id = %link.conference_id, calendar_id = %link.calendar_id, "the provider cannot change the meeting in place: recreating it");
        self.store
            .take_over(
                &link.conference_id,
                &link.calendar_id,
                &link.event_id,
                item.id,
                &[Action::Recreate { spec: link.spec }],
                now_ms,
            )
            .await?;
        self.store.complete(item.id, now_ms).await?;
        summary.done += 1;
        *summary.done_by_kind.entry(item.action.kind()).or_default() += 1;
        Ok(())
    }

    /// The recreate path (see the module documentation). Answers what became of it, or the
    /// failure to report for the row (retryable ones resume from the top: the create answers
    /// the same meeting for the row's key).
    async fn recreate(
        &self,
        item: &OutboxItem,
        spec: &MeetingSpec,
        link: Option<&Link>,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Result<Recreated, ProviderError>, EngineError> {
        // Links are never removed, so there is always one; without it nothing can be swapped.
        let Some(old) = link else {
            return Ok(Ok(Recreated::Superseded));
        };
        // Always made, even when the old link is deleted by now: a crash after an earlier
        // attempt's create must find that meeting again to clean it up (never two live ones).
        summary.provider_calls += 1;
        let meeting = match self.provider.create(spec, &item.idempotency_key).await {
            Ok(meeting) => meeting,
            Err(e) => return Ok(Err(e)),
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
        let result = self
            .repoint(item, old, spec, &meeting, now_ms, summary)
            .await?;
        let Err(e) = result else {
            return Ok(result);
        };
        let last_attempt = item.attempts + 1 >= self.config.backoff.max_attempts;
        let gives_up = match &e {
            ProviderError::Reauth { .. } => false,
            e => !e.is_retryable() || last_attempt,
        };
        if gives_up
            && let Some(done) = self
                .abandon(item, old, spec, &meeting, now_ms, summary)
                .await?
        {
            return Ok(Ok(done));
        }
        Ok(Err(e))
    }

    /// Points the event at the new meeting and swaps the links; deletes the new meeting if the
    /// event no longer wants it.
    async fn repoint(
        &self,
        item: &OutboxItem,
        old: &Link,
        spec: &MeetingSpec,
        meeting: &Meeting,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Result<Recreated, ProviderError>, EngineError> {
        let new_id = meeting.meeting_id.as_str();
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
                // wanted. The old link's fate is the normal sync's business.
                summary.provider_calls += 1;
                let key = format!("{}:abandoned", item.idempotency_key);
                return Ok(match self.provider.delete(new_id, &key).await {
                    Ok(()) | Err(ProviderError::NotFound { .. }) => {
                        info!(conference_id = %old.conference_id, new_conference_id = new_id, "event no longer shows the meeting: the new meeting was deleted");
                        Ok(Recreated::Abandoned)
                    }
                    Err(e) => Err(e),
                });
            };
            if found.shows(new_id) {
                // A crash after an earlier attempt's PATCH: only the swap is left.
                self.swap(item, old, spec, meeting, &found, None, now_ms)
                    .await?;
                return Ok(Ok(Recreated::Swapped));
            }
            let Some(etag) = found.snapshot.etag.clone() else {
                return Ok(Err(ProviderError::Permanent {
                    provider: "calendar".into(),
                    detail: format!("event {} has no etag", found.snapshot.event_id),
                }));
            };
            let body = self.repointed_conference(&found.event, meeting);
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
                    self.swap(item, old, spec, meeting, &found, written_etag, now_ms)
                        .await?;
                    return Ok(Ok(Recreated::Swapped));
                }
                // The user edited the event since our read: read it again, never overwrite.
                Err(CalendarError::PreconditionFailed) => continue,
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
    /// kept: two live meetings can be cleaned up, an event whose meeting is gone cannot.
    async fn abandon(
        &self,
        item: &OutboxItem,
        old: &Link,
        spec: &MeetingSpec,
        meeting: &Meeting,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Option<Recreated>, EngineError> {
        let new_id = meeting.meeting_id.as_str();
        match self.find_replaced(item, old, new_id).await {
            Ok(Some(found)) if found.shows(new_id) => {
                self.swap(item, old, spec, meeting, &found, None, now_ms)
                    .await?;
                Ok(Some(Recreated::Swapped))
            }
            Ok(_) => {
                summary.provider_calls += 1;
                let key = format!("{}:abandoned", item.idempotency_key);
                if let Err(e) = self.provider.delete(new_id, &key).await
                    && !matches!(e, ProviderError::NotFound { .. })
                {
                    warn!(new_conference_id = new_id, error = %e, "recreate given up; the new meeting could not be deleted");
                }
                Ok(None)
            }
            Err(EngineError::Calendar { source, .. }) => {
                warn!(new_conference_id = new_id, error = %source, "recreate given up; the event could not be read, the new meeting is kept");
                Ok(None)
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
        meeting: &Meeting,
        found: &Found,
        written_etag: Option<&str>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let capabilities = self.capabilities();
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
                    let (link, mut actions) = replacement(now, existing, &r);
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

    /// The event's conference data pointed at the new meeting: the same solution and add-on
    /// parameters, the new conference id (also as our add-on parameter), and the new join link
    /// as the only entry point (phone numbers, PINs and other entry points belong to the old
    /// meeting). The signature is left to Calendar to make again.
    fn repointed_conference(&self, event: &Value, meeting: &Meeting) -> Value {
        let mut conference = event
            .get("conferenceData")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(map) = conference.as_object_mut() {
            map.remove("signature");
            map.remove("createRequest");
        }
        let join = meeting.join_url.as_str();
        conference["conferenceId"] = Value::from(meeting.meeting_id.as_str());
        conference["entryPoints"] = serde_json::json!([{
            "entryPointType": "video",
            "uri": join,
            "label": join.split("://").nth(1).unwrap_or(join),
        }]);
        if let Some(key) = &self.config.recognizer.parameter_key {
            conference["parameters"]["addOnParameters"]["parameters"][key.as_str()] =
                Value::from(meeting.meeting_id.as_str());
        }
        serde_json::json!({ "conferenceData": conference })
    }

    /// Writes a new join link into the event's conference data: PATCH of `conferenceData` only,
    /// with If-Match of a fresh read and conferenceDataVersion=1. On 412 (the user edited the
    /// event meanwhile) it re-reads and re-applies, at most three times; the user's edit is
    /// never overwritten and reaches the provider through the next sync like any other change.
    async fn write_back(&self, item: &OutboxItem, join_url: &str) -> Result<(), CalendarError> {
        for _ in 0..3 {
            let Some(event) = self.calendar.get(&item.calendar_id, &item.event_id).await? else {
                return Ok(()); // the event is gone: nothing to write
            };
            let Ok(snapshot) = Snapshot::from_json(&event) else {
                return Ok(());
            };
            let ours = snapshot
                .conference
                .as_ref()
                .and_then(|c| c.conference_id.as_deref())
                == Some(item.conference_id.as_str());
            if snapshot.is_cancelled() || !ours {
                return Ok(());
            }
            if snapshot
                .conference
                .as_ref()
                .and_then(|c| c.join_uri.as_deref())
                == Some(join_url)
            {
                return Ok(());
            }
            let Some(etag) = snapshot.etag.clone() else {
                return Ok(());
            };
            let mut conference = event.get("conferenceData").cloned().unwrap_or_default();
            if let Some(entry_points) = conference
                .get_mut("entryPoints")
                .and_then(Value::as_array_mut)
            {
                for entry in entry_points
                    .iter_mut()
                    .filter(|e| e["entryPointType"] == "video")
                {
                    entry["uri"] = Value::from(join_url);
                    entry["label"] = Value::from(join_url.split("://").nth(1).unwrap_or(join_url));
                }
            }
            let body = serde_json::json!({ "conferenceData": conference });
            match self
                .calendar
                .patch(&item.calendar_id, &item.event_id, &body, &etag)
                .await
            {
                Ok(written) => {
                    if let Some(etag) = written.get("etag").and_then(Value::as_str) {
                        self.store
                            .record_written_etag(&item.conference_id, etag)
                            .await
                            .map_err(|e| CalendarError::Retryable {
                                detail: e.to_string(),
                                retry_after: None,
                            })?;
                    }
                    info!(conference_id = %item.conference_id, calendar_id = %item.calendar_id, "join link written back to the event");
                    return Ok(());
                }
                Err(CalendarError::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CalendarError::Retryable {
            detail: "the event changed during three write-back attempts (412)".into(),
            retry_after: None,
        })
    }

    /// Where the event of a pending delete lives, carrying this conference: on its calendar
    /// (restored) or on another synced calendar (moved there).
    async fn event_lives(
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

    /// Plans a live event against a link that was marked deleted (possibly on another calendar):
    /// the link moves to where the event is and follows its current spec.
    async fn relink(
        &self,
        calendar_id: &str,
        snapshot: &Snapshot,
        link: &Link,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let decision = plan(&PlanInput {
            calendar_id,
            snapshot,
            link: None,
            link_elsewhere: Some(link),
            provider: self.provider.name(),
            recognizer: &self.config.recognizer,
            capabilities: self.capabilities(),
            recreating: false,
        });
        if let Decision::Apply {
            link,
            actions,
            supersede_deletes,
            ..
        } = decision
        {
            let change = PlannedChange {
                link,
                actions,
                supersede_deletes,
                not_before_ms: now_ms,
            };
            self.store
                .commit_page(calendar_id, &[change], &[], None, now_ms)
                .await?;
        }
        Ok(())
    }

    /// A linked event a full sync did not list: read it and plan what it says (deleted: the
    /// tombstone plans a delete; alive: a normal update).
    async fn verify(
        &self,
        item: &OutboxItem,
        link: Option<Link>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let Some(link) = link.filter(|l| !l.deleted) else {
            return Ok(());
        };
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
            None if link.last_etag_seen.is_none() => return Ok(()),
            None => serde_json::json!({"id": item.event_id, "status": "cancelled"}),
        };
        let Ok(snapshot) = Snapshot::from_json(&value) else {
            return Ok(());
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
        });
        if let Decision::Apply {
            link,
            actions,
            supersede_deletes,
            ..
        } = decision
        {
            let delete = actions.iter().any(|a| matches!(a, Action::Delete { .. }));
            let not_before_ms = if delete {
                now_ms + self.config.delete_grace_ms
            } else {
                now_ms
            };
            let change = PlannedChange {
                link,
                actions,
                supersede_deletes,
                not_before_ms,
            };
            self.store
                .commit_page(&item.calendar_id, &[change], &[], None, now_ms)
                .await?;
        }
        Ok(())
    }
}

/// What became of a recreate.
enum Recreated {
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

/// The key of an action, as the store derives it (re-exported for tests and tools).
pub fn key_of(calendar_id: &str, event_id: &str, action: &Action) -> String {
    idempotency_key(calendar_id, event_id, action)
}
