//! The outbox drain: [`Engine::drain`] runs due rows, one per conference at a time (the store
//! hands out only a conference's oldest pending row), up to `drain_concurrency` conferences at
//! once, and reports each row's outcome exactly once: done, superseded, or a failure whose fate
//! [`dispose`] decides (retry, park, fail).
//!
//! Crash points (and lost answers): a row is reported only after its provider call answered,
//! so a crash, or a call whose answer never came, leaves it pending and it runs again with the
//! same idempotency key (the provider makes the change once). Follow-ups are queued before the
//! row is reported (a write-back of a new join link, a recreate), so a crash in between repeats
//! the idempotent call and never loses the follow-up; a replayed follow-up is not queued twice.

use confsync_core::plan::{Action, Link};
use confsync_providers::ProviderError;
use confsync_store::OutboxItem;
use tracing::{info, warn};

use crate::disposition::{Disposition, Failure, dispose};
use crate::recreate::{RecreateFailure, Recreated};
use crate::{DrainSummary, Engine, EngineError};

/// What one attempt at a row came to, before it is reported.
pub(crate) enum Step {
    /// Done.
    Done,
    /// Not needed any more (the link moved on, the event came back).
    Superseded,
    /// An update of a deleted link, already superseded in the store with the link's mark
    /// ([`confsync_store::Store::supersede_update_of_deleted_link`]); false: refused (another
    /// worker claimed the row since).
    Dropped { accepted: bool },
    /// Failed; [`dispose`] decides its fate.
    Failed { failure: Failure, error: String },
}

impl Step {
    fn provider(e: ProviderError) -> Step {
        Step::Failed {
            failure: Failure::of_provider(&e),
            error: e.to_string(),
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

/// The claimed rows of one batch still making their calls. A row whose call succeeded waits
/// for the others before reporting, so the batch's successes share one group commit (one
/// transaction instead of one per few rows: issue 11's bytes written per action). Nothing
/// waits on those reports meanwhile: the next claim comes after the whole batch anyway.
struct Calls {
    left: std::sync::atomic::AtomicUsize,
    all_made: tokio::sync::Notify,
}

impl Calls {
    fn new(rows: usize) -> Calls {
        Calls {
            left: std::sync::atomic::AtomicUsize::new(rows),
            all_made: tokio::sync::Notify::new(),
        }
    }
}

/// One row's part in [`Calls`]: its calls are over when it is finished or dropped (a row that
/// does not start, or is cancelled, holds nobody back).
struct Called<'a> {
    calls: &'a Calls,
    finished: bool,
}

impl Called<'_> {
    fn finish(&mut self) {
        if !std::mem::replace(&mut self.finished, true)
            && self
                .calls
                .left
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
                == 1
        {
            self.calls.all_made.notify_waiters();
        }
    }

    /// Finishes this row's part, then waits until every row of the batch has finished its.
    async fn wait_for_the_others(mut self) {
        self.finish();
        loop {
            let all_made = self.calls.all_made.notified();
            tokio::pin!(all_made);
            all_made.as_mut().enable();
            if self.calls.left.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            all_made.await;
        }
    }
}

impl Drop for Called<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A report whose row is gone (its calendar was forgotten, `confsync admin forget`, after this
/// worker's claim expired) is refused like one whose claim passed on: logged, not an error of
/// the drain.
fn gone(
    item: &OutboxItem,
    report: Result<bool, confsync_store::StoreError>,
) -> Result<bool, confsync_store::StoreError> {
    match report {
        Err(e) if e.is_not_found() => {
            warn!(outbox_id = item.id, conference_id = %item.conference_id, "outbox row removed while it ran (its calendar was forgotten): report ignored");
            Ok(false)
        }
        other => other,
    }
}

impl Engine {
    /// Runs every outbox action due at `now_ms` (and those that become due as earlier actions of
    /// the same conference complete), until none is due.
    ///
    /// Rows are claimed in the store ([`confsync_store::Store::claim_due`]) under this
    /// worker's name, so several workers drain one store at once without running a row twice;
    /// claims are renewed while their calls run, and a row whose claim this worker can no
    /// longer vouch for (renewals failing) is not started. Up to `drain_concurrency` rows run
    /// at a time as a sliding window: a slow call holds one slot, not a whole batch.
    pub async fn drain(&self, now_ms: i64) -> Result<DrainSummary, EngineError> {
        let mut summary = DrainSummary::default();
        let worker = self.config.worker.as_str();
        let lease_ms = self.config.lease_ms.max(1_000);
        let claim_limit = self
            .config
            .claim_batch
            .unwrap_or_else(|| crate::default_claim_batch(self.store.backend()))
            .max(1) as i64;
        let concurrency = self.config.drain_concurrency.max(1);
        loop {
            let queued = confsync_store::queued_generation();
            let batch = self
                .store
                .claim_batch(worker, claim_limit, concurrency as i64, now_ms, lease_ms)
                .await?;
            let (due, last, mut links) = (batch.items, batch.last, batch.links);
            if due.is_empty() {
                return Ok(summary);
            }
            let ids: Vec<i64> = due.iter().map(|item| item.id).collect();
            // Until when this worker's claims hold, as far as it knows (store clock).
            let valid_until = std::sync::atomic::AtomicI64::new(self.store.clock_ms() + lease_ms);
            let slots = tokio::sync::Semaphore::new(concurrency);
            let calls = Calls::new(due.len());
            let runs: Vec<_> = due
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    let (slots, valid_until, calls) = (&slots, &valid_until, &calls);
                    // The rows that start at once use the links the claim read for them
                    // (their read before the provider call; a conference the claim did not
                    // answer is read as for any other row); the others read theirs when they
                    // start.
                    let link = match &mut links {
                        Some(links) if index < concurrency => {
                            links.remove(&item.conference_id).map(Some)
                        }
                        _ => None,
                    };
                    Box::pin(async move {
                        let called = Called {
                            calls,
                            finished: false,
                        };
                        let slot = slots.acquire().await.ok();
                        // A call started now must be able to finish inside the claim; if
                        // renewals failed, leave the row to whoever claims it after expiry.
                        let left = valid_until.load(std::sync::atomic::Ordering::SeqCst)
                            - self.store.clock_ms();
                        if left < lease_ms / 2 {
                            warn!(
                                outbox_id = item.id,
                                left_ms = left,
                                "claim not renewed in time: leaving the row to another worker"
                            );
                            return Ok(DrainSummary::default());
                        }
                        // Boxed once it has a slot: all the claimed rows' futures exist at
                        // once, and a row's run is large.
                        Box::pin(self.run_one(item, link, slot, called, now_ms)).await
                    })
                })
                .collect();
            let renew = async {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis((lease_ms / 3) as u64))
                        .await;
                    let at = self.store.clock_ms();
                    match self.store.renew_claims(worker, &ids, lease_ms).await {
                        Ok(_) => {
                            valid_until.store(at + lease_ms, std::sync::atomic::Ordering::SeqCst)
                        }
                        Err(e) => warn!(error = %e, "could not renew outbox claims"),
                    }
                }
            };
            let results = tokio::select! {
                results = join_all(runs) => results,
                never = renew => never,
            };
            let mut error = None;
            for result in results {
                match result {
                    Ok(one) => summary.merge(one),
                    Err(e) => error = Some(e),
                }
            }
            if let Some(e) = error {
                return Err(e);
            }
            // Every row due was in this claim, none had another behind it, and nothing was
            // queued in this process since (a follow-up of these rows, say): the claim would
            // find nothing. (A row queued elsewhere meanwhile wakes the drainer, or is found
            // by the scheduler's `next_due`.)
            if last && confsync_store::queued_generation() == queued {
                return Ok(summary);
            }
        }
    }

    /// Runs one outbox row and reports its outcome.
    /// `link`: the row's link as read just now (None: read it here). `slot`: the row's place in
    /// the drain's window. A success lets go of it and waits for the batch's other rows to
    /// make their calls (`called`), then reports with them in one group commit; any other
    /// outcome is reported at once, in its slot.
    async fn run_one(
        &self,
        item: OutboxItem,
        link: Option<Option<Link>>,
        slot: Option<tokio::sync::SemaphorePermit<'_>>,
        called: Called<'_>,
        now_ms: i64,
    ) -> Result<DrainSummary, EngineError> {
        let mut summary = DrainSummary::default();
        let executed = self.execute(&item, link, now_ms, &mut summary).await;
        if let Ok(Step::Done) = executed {
            drop(slot);
            called.wait_for_the_others().await;
        } else {
            drop(called);
        }
        let step = match executed {
            Ok(step) => step,
            // A calendar read the action needed (the guard before a delete, a verification)
            // failed: this row's fate is decided like any failure; the others go on.
            Err(EngineError::Calendar {
                calendar_id,
                source,
            }) => Step::Failed {
                failure: Failure::of_calendar(&source),
                error: format!("calendar {calendar_id}: {source}"),
            },
            Err(e) => return Err(e),
        };
        let kind = item.action.kind();
        match step {
            Step::Done => {
                let accepted = gone(&item, self.store.complete(&item, now_ms).await)?;
                // Refused: another worker claimed the row since (this one stalled past its
                // claim) and reports it itself.
                if accepted {
                    summary.done += 1;
                    *summary.done_by_kind.entry(kind).or_default() += 1;
                }
            }
            Step::Superseded => {
                gone(&item, self.store.supersede(&item).await)?;
                summary.superseded += 1;
            }
            Step::Dropped { accepted } => {
                if accepted {
                    summary.superseded += 1;
                }
            }
            Step::Failed { failure, error } => {
                let key = &item.idempotency_key;
                match dispose(failure, item.attempts, &self.config.backoff, key, now_ms) {
                    Disposition::Retry { not_before_ms } => {
                        if self.should_warn_retry(&item.conference_id, now_ms) {
                            warn!(conference_id = %item.conference_id, action = kind, attempt = item.attempts + 1, retry_in_ms = not_before_ms - now_ms, %error, "action failed; retrying later");
                        }
                        gone(
                            &item,
                            self.store
                                .retry_later(&item, not_before_ms, &error, now_ms)
                                .await,
                        )?;
                        summary.retried += 1;
                        *summary.retried_by_kind.entry(kind).or_default() += 1;
                    }
                    Disposition::Park { not_before_ms } => {
                        if self.should_warn_retry(&item.conference_id, now_ms) {
                            warn!(conference_id = %item.conference_id, action = kind, %error, "action waits for credentials to be renewed");
                        }
                        gone(
                            &item,
                            self.store.park(&item, not_before_ms, &error, now_ms).await,
                        )?;
                        summary.retried += 1;
                        *summary.retried_by_kind.entry(kind).or_default() += 1;
                    }
                    Disposition::Fail => {
                        warn!(conference_id = %item.conference_id, action = kind, attempts = item.attempts + 1, %error, "action failed permanently");
                        gone(&item, self.store.fail(&item, &error, now_ms).await)?;
                        summary.failed += 1;
                    }
                }
            }
        }
        Ok(summary)
    }

    /// One attempt at a row. Calendar failures of the guards come back as
    /// [`EngineError::Calendar`]; provider failures as [`Step::Failed`].
    async fn execute(
        &self,
        item: &OutboxItem,
        link: Option<Option<Link>>,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Step, EngineError> {
        let mut link = match link {
            Some(link) => link,
            None => self.store.link(&item.conference_id).await?,
        };
        // An update planned before its event was cancelled or lost our conference: the
        // meeting is on its way out (a delete is queued behind), and the call would change
        // nothing that matters. Dropped, and the link marked so that the event coming back
        // sends its spec; if the link came back meanwhile, the update runs. Only on the row's
        // first claim with no attempt made: an earlier claim's call may have landed with its
        // answer lost, and finishing it with the same key is no new change (dropping it would
        // make the event's return send the spec again, under a new key).
        let first_run = item.attempts == 0 && item.fence <= 1;
        if matches!(item.action, Action::Update { .. })
            && first_run
            && link.as_ref().is_some_and(|l| l.deleted)
        {
            match self
                .store
                .supersede_update_of_deleted_link(item, now_ms)
                .await
            {
                Ok(None) => link = self.store.link(&item.conference_id).await?,
                Ok(Some(accepted)) => return Ok(Step::Dropped { accepted }),
                Err(e) => {
                    let accepted = gone(item, Err(e))?;
                    return Ok(Step::Dropped { accepted });
                }
            }
        }
        let key = item.idempotency_key.as_str();
        let id = item.conference_id.as_str();
        // Updates, occurrence changes and deletes go to the provider that made the meeting.
        // One this worker does not have configured parks the row (pending, its error naming
        // the provider, no attempt used): another worker may have it (a rolling change of
        // configuration), or the operator configures it again or drops the row.
        let calls_provider = matches!(
            item.action,
            Action::Update { .. }
                | Action::UpdateOccurrence { .. }
                | Action::CancelOccurrence { .. }
                | Action::Delete { .. }
        );
        let provider = match self.provider_of(link.as_ref()) {
            Ok(provider) => provider,
            Err(error) if calls_provider => {
                return Ok(Step::Failed {
                    failure: Failure::Unresolved,
                    error,
                });
            }
            Err(_) => &self.provider,
        };
        let refused = match &item.action {
            Action::Update { spec, .. } => {
                summary.provider_calls += 1;
                match provider.update(id, spec, key).await {
                    Ok(join_url) => {
                        self.follow_join_url(item, link.as_ref(), join_url, now_ms)
                            .await?;
                        return Ok(Step::Done);
                    }
                    Err(e) => e,
                }
            }
            Action::UpdateOccurrence {
                occurrence,
                start,
                end,
                title,
            } => {
                summary.provider_calls += 1;
                match provider
                    .update_occurrence(id, *occurrence, *start, *end, title, key)
                    .await
                {
                    Ok(_) => return Ok(Step::Done),
                    Err(e) => e,
                }
            }
            Action::CancelOccurrence { occurrence } => {
                summary.provider_calls += 1;
                match provider.cancel_occurrence(id, *occurrence, key).await {
                    Ok(()) => return Ok(Step::Done),
                    Err(e) => e,
                }
            }
            Action::WriteBack { join_url } => {
                return Ok(match self.write_back(item, join_url).await? {
                    Ok(()) => Step::Done,
                    Err(e) => Step::Failed {
                        failure: Failure::of_calendar(&e),
                        error: format!("calendar {}: {e}", item.calendar_id),
                    },
                });
            }
            Action::Recreate { spec, provider } => {
                // The provider the row names makes the new meeting on every attempt (an
                // earlier attempt's meeting is found by its key there, not at another one).
                let maker = match provider.as_deref() {
                    None => &self.provider,
                    Some(name) => match self.provider_named(name) {
                        Some(maker) => maker,
                        None => {
                            return Ok(Step::Failed {
                                failure: Failure::Unresolved,
                                error: format!(
                                    "this recreate makes its meeting with provider {name:?}, which is not configured (the current provider is {:?})",
                                    self.provider.name()
                                ),
                            });
                        }
                    },
                };
                return Ok(
                    match self
                        .recreate(item, spec, maker, link.as_ref(), now_ms, summary)
                        .await?
                    {
                        Ok(Recreated::Superseded) => Step::Superseded,
                        Ok(_) => Step::Done,
                        Err(RecreateFailure::Provider(e)) => Step::provider(e),
                        Err(RecreateFailure::Unresolved(error)) => Step::Failed {
                            failure: Failure::Unresolved,
                            error,
                        },
                    },
                );
            }
            Action::Delete { .. } => {
                return self
                    .delete(item, link.as_ref(), provider, now_ms, summary)
                    .await;
            }
            Action::Verify => {
                return self.verify(item, now_ms).await;
            }
        };
        // An update or occurrence change the provider cannot make in place: recreate.
        if matches!(refused, ProviderError::Recreate { .. }) {
            return self.queue_recreate(item, link, now_ms).await;
        }
        Ok(Step::provider(refused))
    }

    /// The provider answered a new join link for the meeting: queue its write-back into the
    /// event (before the update is reported: a crash in between repeats the idempotent update
    /// and finds the difference again, because it is compared with the link, not with what
    /// this call changed). Queued also for a link deleted meanwhile: the event may have moved,
    /// and the write-back looks for it where it lives when it runs. The link itself is never
    /// written here (a sync may have changed it while the provider answered).
    async fn follow_join_url(
        &self,
        item: &OutboxItem,
        link: Option<&Link>,
        join_url: Option<String>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let (Some(join_url), Some(link)) = (join_url, link) else {
            return Ok(());
        };
        if link.join_url.as_deref() == Some(join_url.as_str()) {
            return Ok(());
        }
        self.store
            .enqueue(
                &item.conference_id,
                &link.calendar_id,
                &link.event_id,
                &[Action::WriteBack { join_url }],
                now_ms,
                now_ms,
            )
            .await?;
        Ok(())
    }

    /// A delete, behind its guard (sent to `provider`, the one that made the meeting): it runs
    /// only if the link still points at the row's calendar and is deleted, and the event is alive neither there (restored) nor on another synced
    /// calendar (moved); a live event gets its link back instead and the delete is superseded.
    async fn delete(
        &self,
        item: &OutboxItem,
        link: Option<&Link>,
        provider: &std::sync::Arc<dyn confsync_providers::ConferenceProvider>,
        now_ms: i64,
        summary: &mut DrainSummary,
    ) -> Result<Step, EngineError> {
        // The link moved (event moved to another calendar) or came back: not ours to delete.
        let still_ours = link.is_some_and(|l| l.deleted && l.calendar_id == item.calendar_id);
        if !still_ours {
            return Ok(Step::Superseded);
        }
        if let Some((calendar_id, event)) = self.event_lives(item).await? {
            // Restored, or moved to another synced calendar whose sync has not run yet: keep
            // the meeting and re-home the link now, so a later change there finds it. The link
            // is brought back before this row is reported: a crash in between reruns the
            // guard, which then finds the link live and supersedes the row.
            return Ok(
                match self
                    .relink(&calendar_id, &event, &item.conference_id, now_ms, summary)
                    .await?
                {
                    true => Step::Superseded,
                    false => Step::Failed {
                        failure: Failure::Retryable { retry_after: None },
                        error: "the link kept changing while it was being restored".into(),
                    },
                },
            );
        }
        summary.provider_calls += 1;
        Ok(
            match provider
                .delete(&item.conference_id, &item.idempotency_key)
                .await
            {
                Ok(()) | Err(ProviderError::NotFound { .. }) => {
                    info!(conference_id = %item.conference_id, calendar_id = %item.calendar_id, "meeting deleted");
                    Step::Done
                }
                Err(e) => Step::provider(e),
            },
        )
    }
}
