//! One sync pass over one calendar: [`Engine::sync`].
//!
//! The [`Session`] says which `events.list` request comes next; each page's links are loaded,
//! the session plans the page, and the page's links, outbox actions and dead letters (and, on
//! the last page, the new sync token) are committed in ONE store transaction.
//!
//! Crash points (and lost answers): a crash before a page's commit redoes that page from the
//! stored token on the next pass (the token only moves with the last page, and replaying a
//! committed page plans nothing new); a list whose answer is lost is simply asked again.
//!
//! Concurrency: every link a page writes is written only if it is still the version the page
//! was planned from. If another writer (the executor, the add-on API, another pass) changed one
//! meanwhile, the page is not committed and the pass starts again from the stored token, planning
//! against the links as they are now (a few times; then the pass fails and is retried later).

use std::collections::{HashMap, HashSet};

use confsync_core::plan::{Action, Change, Decision};
use confsync_core::session::{LinkSet, Page, Session};
use confsync_store::{CalendarState, DeadLetter, LinkBase, PassEnd, PlannedChange};
use tracing::{info, warn};

use crate::{CalendarError, Engine, EngineError, SyncSummary, now_utc};

/// Passes started again because a link changed under them, before the pass fails.
const REPLANS: u32 = 4;

/// Items from which a page's link-free decoding runs on a blocking thread, beside the read of
/// its links (a thread hand-off costs more than decoding a small page).
const PARALLEL_DECODE_ITEMS: usize = 64;

impl Engine {
    /// One sync pass over `calendar_id`.
    pub async fn sync(
        &self,
        calendar_id: &str,
        force_full: bool,
        now_ms: i64,
    ) -> Result<SyncSummary, EngineError> {
        self.sync_from(calendar_id, force_full, now_ms, None, None)
            .await
            .map(|(summary, _)| summary)
    }

    /// [`Engine::sync`], its first pass starting from `state` when given (the calendar's state
    /// as its lease was taken, read by the same statement); a pass planned again reads it anew.
    ///
    /// `lease` (the worker and fence of the calendar's sync lease, when the pass is to answer
    /// its triggers): a pass that ends with its last page records its end in that page's
    /// transaction ([`confsync_store::Store::commit_last_page`]), and answers `Some(still
    /// dirty)`; None when the end is left to the caller (a full pass verifies after its last
    /// page, and a pass that moved a series here marks the calendar after it).
    async fn sync_from(
        &self,
        calendar_id: &str,
        force_full: bool,
        now_ms: i64,
        mut state: Option<CalendarState>,
        lease: Option<(&str, i64)>,
    ) -> Result<(SyncSummary, Option<bool>), EngineError> {
        let mut replans = 0;
        loop {
            match self
                .pass(calendar_id, force_full, now_ms, state.take(), lease)
                .await
            {
                Err(EngineError::Store(e)) if e.is_stale() && replans < REPLANS => {
                    replans += 1;
                    info!(calendar_id, replans, reason = %e, "a link changed during the pass: planning it again");
                }
                Ok((mut summary, ended)) => {
                    summary.replans = replans;
                    if summary.actions.values().any(|n| *n > 0) {
                        // Other workers drain too: wake them (Postgres; best effort).
                        self.store.notify_outbox().await;
                    }
                    return Ok((summary, ended));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Engine::sync`] under the calendar's sync lease, so no other worker sharing the store
    /// syncs it at the same time: answers None, having done nothing, when another worker holds
    /// the lease (its pass covers what is recorded as dirty by then; see
    /// [`confsync_store::Store::sync_succeeded`]). The lease is renewed while the pass runs and
    /// released after it; a worker that dies loses it after `lease_ms`.
    ///
    /// `answer_triggers`: when the pass completes, the release also records that it answered
    /// the triggers recorded before it read the calendar's state (its `dirty_gen` then, before
    /// any listing; one statement, [`confsync_store::Store::finish_sync`]), and the summary's
    /// `still_dirty` says whether one arrived since. A pass that ends with its last page (an
    /// incremental one that moved no series here) records that in the page's own transaction
    /// instead ([`confsync_store::Store::commit_last_page`]): one commit fewer per pass.
    pub async fn sync_leased(
        &self,
        calendar_id: &str,
        force_full: bool,
        now_ms: i64,
        answer_triggers: bool,
    ) -> Result<Option<SyncSummary>, EngineError> {
        let worker = self.config.worker.as_str();
        let lease_ms = self.config.lease_ms.max(1_000);
        let mut lease = self
            .store
            .lease_calendar_with_state(calendar_id, worker, self.store.clock_ms(), lease_ms)
            .await?;
        if lease.is_none() && self.store.calendar(calendar_id).await?.is_none() {
            // Not registered yet (its first pass): register it and take the lease.
            self.store.ensure_calendar(calendar_id).await?;
            lease = self
                .store
                .lease_calendar_with_state(calendar_id, worker, self.store.clock_ms(), lease_ms)
                .await?;
        }
        let Some((fence, state)) = lease else {
            return Ok(None);
        };
        let ids = [calendar_id.to_owned()];
        let renew = async {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis((lease_ms / 3) as u64)).await;
                if let Err(e) = self
                    .store
                    .renew_calendar_leases(worker, &ids, self.store.clock_ms(), lease_ms)
                    .await
                {
                    tracing::warn!(calendar_id, error = %e, "could not renew the calendar's sync lease");
                }
            }
        };
        let lease = answer_triggers.then_some((worker, fence));
        let mut result = tokio::select! {
            result = self.sync_from(calendar_id, force_full, now_ms, Some(state), lease) => result,
            never = renew => never,
        };
        let released = match &mut result {
            // Ended (lease released, triggers answered) with the last page's commit.
            Ok((summary, Some(still_dirty))) => {
                summary.still_dirty |= *still_dirty;
                Ok(())
            }
            Ok((summary, None)) if answer_triggers => self
                .store
                .finish_sync(calendar_id, worker, fence, summary.answered_gen)
                .await
                .map(|still_dirty| summary.still_dirty |= still_dirty),
            _ => {
                self.store
                    .release_calendar(calendar_id, worker, fence)
                    .await
            }
        };
        if let Err(e) = released {
            tracing::warn!(calendar_id, error = %e, "could not release the calendar's sync lease (or record the pass); it expires, and the calendar is synced again");
            if let Ok((summary, _)) = &mut result {
                summary.still_dirty = true;
            }
        }
        result.map(|(summary, _)| Some(summary))
    }

    async fn pass(
        &self,
        calendar_id: &str,
        force_full: bool,
        now_ms: i64,
        leased: Option<CalendarState>,
        lease: Option<(&str, i64)>,
    ) -> Result<(SyncSummary, Option<bool>), EngineError> {
        let mut state = match leased {
            Some(state) => Some(state),
            None => self.store.calendar(calendar_id).await?,
        };
        if state.is_none() {
            self.store.ensure_calendar(calendar_id).await?;
            state = self.store.calendar(calendar_id).await?;
        }
        // The triggers this pass answers: those recorded before this read (the listing starts
        // after it).
        let answered_gen = state.as_ref().map_or(0, |s| s.dirty_gen);
        let end = lease.map(|(worker, fence)| PassEnd {
            worker,
            fence,
            answered_gen,
        });
        // Some(still dirty) once the last page's commit ended the pass.
        let mut ended: Option<bool> = None;
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
        // A series link moved here during this pass (see `commit_page`).
        let mut moved_here = false;
        // The live links this pass's own pages wrote here: event id -> conference id.
        let mut written_here: HashMap<String, String> = HashMap::new();
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
            // The pass may end with this page's commit only if nothing follows its last page:
            // an incremental pass that moved no series here.
            let end = end.as_ref().filter(|_| !session.is_full() && !moved_here);
            let (moved, still_dirty) = self
                .commit_page(&mut session, page, filter, &mut written_here, end, now_ms)
                .await?;
            moved_here |= moved;
            ended = ended.or(still_dirty);
            if let Some(progress) = &self.progress {
                progress(
                    calendar_id,
                    session.tally().pages,
                    session.tally().events,
                    session.is_full(),
                );
            }
        }
        let resync = moved_here && !session.is_full();
        if resync {
            // After the last page (whose commit clears the flag): the next pass is a full one,
            // and it runs at once (recorded as a trigger, so a restart keeps it).
            self.store.mark_full_sync_needed(calendar_id).await?;
            self.store.mark_dirty(calendar_id, now_ms).await?;
        }
        let mut verifications = 0;
        if session.is_full() {
            // Links whose meeting ended before the listing window were not listed and do not
            // matter: only the others are verified (a day's slack around the window's start).
            let now_linked = match self.config.full_sync_window {
                Some(window) => {
                    let from = now_ms - window.num_milliseconds() - 86_400_000;
                    self.store
                        .link_event_ids_ending_after(calendar_id, from)
                        .await?
                }
                None => self.store.link_event_ids(calendar_id).await?,
            };
            let mut unseen: Vec<(String, Action)> = session
                .unseen(now_linked.iter().map(String::as_str))
                .into_iter()
                .collect();
            // Links made while this pass listed (the add-on's create, an executor's relink)
            // were not in the set its pages loaded: their events may have been listed and
            // skipped (a tombstone carries no conference to find the link by), so each is
            // verified with an events.get. Links this pass's own pages wrote were planned from
            // their event as listed: nothing to verify unless another writer replaced them
            // since (checked below, on the stored links).
            let mut made_meanwhile: HashSet<String> = HashSet::new();
            if let Some(at_start) = &linked {
                let listed_unseen: HashSet<String> =
                    unseen.iter().map(|(id, _)| id.clone()).collect();
                for event_id in now_linked {
                    if !at_start.contains(&event_id) && !listed_unseen.contains(&event_id) {
                        made_meanwhile.insert(event_id.clone());
                        unseen.push((event_id, Action::Verify));
                    }
                }
            }
            if !unseen.is_empty() {
                let event_ids: Vec<String> = unseen.iter().map(|(id, _)| id.clone()).collect();
                let records = self
                    .store
                    .link_records(calendar_id, &event_ids, &[])
                    .await?;
                let mut by_event: HashMap<&str, &confsync_store::StoredLink> = HashMap::new();
                for record in &records {
                    if record.link.calendar_id == calendar_id && !record.link.deleted {
                        by_event.insert(record.link.event_id.as_str(), record);
                    }
                }
                let changes: Vec<PlannedChange> = unseen
                    .into_iter()
                    .filter_map(|(event_id, action)| {
                        let record = by_event.get(event_id.as_str())?;
                        let ours = written_here.get(&event_id) == Some(&record.link.conference_id);
                        if ours && made_meanwhile.contains(&event_id) {
                            return None;
                        }
                        Some(PlannedChange {
                            link: record.link.clone(),
                            base: LinkBase::Version(record.version),
                            actions: vec![action],
                            supersede_deletes: false,
                            not_before_ms: now_ms,
                        })
                    })
                    .collect();
                verifications = changes.len() as u64;
                if !changes.is_empty() {
                    self.store
                        .commit_page(calendar_id, &changes, &[], None, now_ms)
                        .await?;
                }
            }
        }
        let tally = session.tally();
        let summary = SyncSummary {
            calendar_id: calendar_id.to_owned(),
            full: session.is_full(),
            pages: tally.pages,
            events: tally.events,
            skipped: tally.skipped.clone(),
            actions: tally.actions.clone(),
            dead_letters: tally.dead_letters,
            verifications,
            replans: 0,
            resync,
            still_dirty: false,
            answered_gen,
        };
        Ok((summary, ended))
    }

    async fn commit_page(
        &self,
        session: &mut Session,
        page: Page,
        linked: Option<&HashSet<String>>,
        written_here: &mut HashMap<String, String>,
        end: Option<&PassEnd<'_>>,
        now_ms: i64,
    ) -> Result<(bool, Option<bool>), EngineError> {
        let calendar_id = session.calendar_id().to_owned();
        // Only what says whether an item may concern us is read first; the items that may are
        // decoded once their links are known (most of a full sync's events are not ours).
        let page = page.scan();
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
        let conference_ids = page.conference_ids();
        // A large page's items that need no links to be decoded (conference data, instances)
        // are decoded on another thread while its links are read.
        let decoding = if page.len() >= PARALLEL_DECODE_ITEMS {
            Err(tokio::task::spawn_blocking(move || page.decode_unlinked()))
        } else {
            Ok(page)
        };
        // The links, and which of their meetings are being recreated (their event may already
        // show the new conference, which is not a replacement to delete for): one read, and one
        // more only for conference ids no link has (a recreate's new meeting, before its swap).
        let read = self
            .store
            .page_links(&calendar_id, &event_ids, &conference_ids)
            .await;
        // (Ok: a small page, decoded here; Err: the blocking thread's task.)
        let page = match decoding {
            Ok(page) => page.decode_unlinked(),
            Err(task) => match task.await {
                Ok(page) => page,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(EngineError::ShuttingDown),
            },
        };
        let confsync_store::PageLinks {
            links: loaded,
            recreating,
            recreate_targets,
        } = read?;
        // What each link was when read: its write is conditional on it.
        let versions: HashMap<String, i64> = loaded
            .iter()
            .map(|s| (s.link.conference_id.clone(), s.version))
            .collect();
        let unapplied: Vec<(String, Option<String>)> = loaded
            .iter()
            .filter(|s| s.unapplied())
            .map(|s| (s.link.conference_id.clone(), s.applied_fingerprint.clone()))
            .collect();
        let mut links = LinkSet::new(loaded.into_iter().map(|s| s.link));
        links.set_unapplied(unapplied);
        links.set_recreating(recreating);
        links.set_recreate_targets(recreate_targets);
        let page = page.finish(|event_id| links.get(&calendar_id, event_id).is_some());
        let outcome = session
            .on_page(page, &mut links)
            .map_err(|source| EngineError::Session {
                calendar_id: calendar_id.clone(),
                source,
            })?;
        // Links that moved here from another calendar (an event moved between synced
        // calendars): this calendar's earlier passes may have passed over changes of the
        // series' instances while no link was here to plan them (a cancelled instance carries
        // no conference to find the link by), so its next pass lists everything.
        let mut moved_here = false;
        // The session hands on only decisions that change a link or call a provider.
        let changes: Vec<PlannedChange> = outcome
            .decisions
            .into_iter()
            .filter_map(|(_, decision)| match decision {
                Decision::Apply {
                    link,
                    actions,
                    changes,
                    supersede_deletes,
                } => {
                    moved_here |= changes.contains(&Change::MovedCalendar)
                        && link.calendar_id == calendar_id
                        && !link.spec.recurrence.is_empty();
                    let not_before_ms = self.not_before(&actions, now_ms);
                    let base = versions
                        .get(&link.conference_id)
                        .map_or(LinkBase::New, |v| LinkBase::Version(*v));
                    Some(PlannedChange {
                        link,
                        base,
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
        // The last page of a pass that ends with it also records the pass's end.
        let still_dirty = match (outcome.sync_token.as_deref(), end) {
            (Some(token), Some(end)) if !moved_here => Some(
                self.store
                    .commit_last_page(&calendar_id, &changes, &dead, token, end, now_ms)
                    .await?,
            ),
            (token, _) => {
                self.store
                    .commit_page(&calendar_id, &changes, &dead, token, now_ms)
                    .await?;
                None
            }
        };
        for change in &changes {
            let link = &change.link;
            if link.calendar_id == calendar_id && !link.deleted {
                written_here.insert(link.event_id.clone(), link.conference_id.clone());
            }
        }
        Ok((moved_here, still_dirty))
    }

    /// When planned actions may run: deletes wait the grace period (an event moved to another
    /// synced calendar is seen there first), everything else now.
    pub(crate) fn not_before(&self, actions: &[Action], now_ms: i64) -> i64 {
        if actions.iter().any(|a| matches!(a, Action::Delete { .. })) {
            now_ms + self.config.delete_grace_ms
        } else {
            now_ms
        }
    }
}
