//! Committing a page of a sync pass: the one transaction that makes sync crash-safe.

use confsync_core::model::MeetingSpec;
use confsync_core::plan::{Action, Change, Link};

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::Row;

use crate::conns::Arg;
use crate::db::Tx;
use crate::error::{Context, StoreError};
use crate::links::LinkBase;

/// The spec an action queued with a link just written may take from it instead of storing a
/// copy ([`outbox::Append::link_spec`]): the spec of a link written for the first time (an
/// adopted or created conference, whose first update is most of such rows). A later change of
/// the link's spec writes the spec back into the rows that take it from the link (SQLite 0022);
/// were every update stored that way, each relevant change would rewrite its conference's
/// previous update row, at a random place, to keep it.
fn first_spec(base: LinkBase, link: &Link) -> Option<&MeetingSpec> {
    matches!(base, LinkBase::New).then_some(&link.spec)
}
use crate::{DeadLetter, Store, calendars, dead_letters, links, outbox};

/// What the planner decided for one event of a page (a `Decision::Apply`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// The link's next state, stored keyed by its conference id.
    pub link: Link,
    /// The link this state was planned from: stored only if it is still that one.
    pub base: LinkBase,
    /// Provider calls to queue for the conference, in order.
    pub actions: Vec<Action>,
    /// The conference's pending deletes must not run (the event moved calendars).
    pub supersede_deletes: bool,
    /// The actions are not due before this time (unix ms; 0 for "now").
    pub not_before_ms: i64,
}

/// A pass that ends with the page being committed, recorded in the page's transaction as
/// [`Store::finish_sync`] would record it after: see [`Store::commit_last_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassEnd<'a> {
    /// The worker holding the calendar's sync lease.
    pub worker: &'a str,
    /// The lease's fence.
    pub fence: i64,
    /// The trigger generation the pass read before listing: the triggers it answers.
    pub answered_gen: i64,
}

impl Store {
    /// Commits one page of a calendar's sync pass in ONE transaction:
    /// - each change's link is written (by conference id; a link that moved calendars takes
    ///   its new calendar and event) if its `base` still holds: a link written by anyone since
    ///   it was read fails the whole page with [`StoreError::Stale`] (plan the page again from
    ///   the links stored now). Two changes of one conference in one page (a series and its
    ///   instances) chain: the second is based on the first;
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
        self.commit_page_ending(calendar_id, changes, dead_letters, sync_token, None, now_ms)
            .await
            .map(|_| ())
    }

    /// [`Store::commit_page`] for the last page of a pass that ends with it (nothing to verify
    /// or to run again after it): the same transaction also ends the pass as
    /// [`Store::finish_sync`] does (the lease released, the triggers recorded by
    /// `end.answered_gen` answered, the failure count reset), so a pass makes one commit fewer;
    /// on SQLite that statement goes with the COMMIT, in the same round trip. Answers whether
    /// the calendar is still dirty (a trigger arrived during the pass). Either all of it is
    /// stored or none of it: a page that fails leaves the pass to be released as a failed one.
    pub async fn commit_last_page(
        &self,
        calendar_id: &str,
        changes: &[PlannedChange],
        dead_letters: &[DeadLetter],
        sync_token: &str,
        end: &PassEnd<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.commit_page_ending(
            calendar_id,
            changes,
            dead_letters,
            Some(sync_token),
            Some(end),
            now_ms,
        )
        .await
        .map(|still_dirty| still_dirty.unwrap_or(false))
    }

    async fn commit_page_ending(
        &self,
        calendar_id: &str,
        changes: &[PlannedChange],
        dead_letters: &[DeadLetter],
        sync_token: Option<&str>,
        end: Option<&PassEnd<'_>>,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        let what = || format!("committing a sync page of calendar {calendar_id}");
        let mut keys = self.lock_keys();
        keys.calendar(calendar_id);
        for change in changes {
            let link = &change.link;
            keys.conference(&link.conference_id)
                .event(&link.calendar_id, &link.event_id);
        }
        let mut tx = self.write_tx_keyed(keys, what).await?;
        match sync_token {
            // The pass's last page: the calendar (registered if it was not) takes its new token,
            // first in the transaction, since links name their calendar.
            Some(token) => calendars::store_token(&mut tx, calendar_id, token, now_ms).await?,
            None => calendars::ensure(&mut tx, calendar_id, now_ms).await?,
        }
        let mut queued = 0;
        let mut superseded = 0;
        let mut seen: HashSet<&str> = HashSet::with_capacity(changes.len());
        let distinct = changes
            .iter()
            .all(|c| seen.insert(c.link.conference_id.as_str()));
        if distinct && changes.len() > 1 {
            // Changes of different conferences are independent: a few statements for the page.
            let elsewhere: BTreeSet<&str> = changes
                .iter()
                .map(|c| c.link.calendar_id.as_str())
                .filter(|id| *id != calendar_id)
                .collect();
            for other in elsewhere {
                calendars::ensure(&mut tx, other, now_ms).await?;
            }
            let writes: Vec<(&Link, LinkBase)> =
                changes.iter().map(|c| (&c.link, c.base)).collect();
            links::write_many(&mut tx, calendar_id, &writes, now_ms).await?;
            for change in changes.iter().filter(|c| c.supersede_deletes) {
                superseded +=
                    outbox::supersede_deletes(&mut tx, &change.link.conference_id, now_ms).await?;
            }
            let appends: Vec<outbox::Append<'_>> = changes
                .iter()
                .map(|c| outbox::Append {
                    conference_id: &c.link.conference_id,
                    calendar_id: &c.link.calendar_id,
                    event_id: &c.link.event_id,
                    actions: &c.actions,
                    link_spec: first_spec(c.base, &c.link),
                    not_before_ms: c.not_before_ms,
                })
                .collect();
            queued += outbox::append_many(&mut tx, calendar_id, &appends, now_ms).await?;
        } else {
            // One change, or one conference twice (a series and its instances): change by
            // change, the second change of a conference based on the first.
            let mut written: HashMap<&str, i64> = HashMap::new();
            for change in changes {
                let link = &change.link;
                if link.calendar_id != calendar_id {
                    calendars::ensure(&mut tx, &link.calendar_id, now_ms).await?;
                }
                let base = match written.get(link.conference_id.as_str()) {
                    Some(version) => LinkBase::Version(*version),
                    None => change.base,
                };
                let version = links::write(&mut tx, link, base, now_ms).await?;
                written.insert(&link.conference_id, version);
                if change.supersede_deletes {
                    superseded +=
                        outbox::supersede_deletes(&mut tx, &link.conference_id, now_ms).await?;
                }
                queued += match &change.actions[..] {
                    [action] => {
                        let append = outbox::Append {
                            conference_id: &link.conference_id,
                            calendar_id: &link.calendar_id,
                            event_id: &link.event_id,
                            actions: &change.actions,
                            link_spec: first_spec(base, link),
                            not_before_ms: change.not_before_ms,
                        };
                        outbox::append_one(&mut tx, &append, action, now_ms).await?
                    }
                    actions => {
                        outbox::append(
                            &mut tx,
                            &outbox::Append {
                                conference_id: &link.conference_id,
                                calendar_id: &link.calendar_id,
                                event_id: &link.event_id,
                                actions,
                                link_spec: first_spec(base, link),
                                not_before_ms: change.not_before_ms,
                            },
                            now_ms,
                        )
                        .await?
                    }
                };
            }
        }
        for letter in dead_letters {
            dead_letters::upsert(&mut tx, calendar_id, letter, now_ms).await?;
        }
        let still_dirty = match end {
            Some(end) => Some(self.commit_finishing(tx, calendar_id, end, what).await?),
            None => {
                self.commit(tx, what).await?;
                None
            }
        };
        tracing::debug!(
            calendar_id,
            links = changes.len(),
            queued_at_most = queued,
            superseded,
            dead_letters = dead_letters.len(),
            token_advanced = sync_token.is_some(),
            pass_ended = end.is_some(),
            "sync page committed"
        );
        Ok(still_dirty)
    }

    /// Commits `tx` with the pass's end ([`crate::leases::FINISH_SYNC`]) as its last statement;
    /// answers whether the calendar is still dirty.
    async fn commit_finishing(
        &self,
        tx: Tx,
        calendar_id: &str,
        end: &PassEnd<'_>,
        what: impl Fn() -> String,
    ) -> Result<bool, StoreError> {
        let result = match tx {
            Tx::Sqlite(tx) => tx
                .commit_with(
                    crate::leases::FINISH_SYNC,
                    vec![
                        Arg::Text(calendar_id.to_owned()),
                        Arg::Text(end.worker.to_owned()),
                        Arg::Int(end.fence),
                        Arg::Int(end.answered_gen),
                    ],
                )
                .await
                .and_then(|rows| match rows.first() {
                    Some(row) => row.try_get::<bool, _>(0).map(Some),
                    None => Ok(None),
                }),
            Tx::Postgres(mut tx) => {
                let still_dirty: Result<Option<bool>, sqlx::Error> =
                    sqlx::query_scalar(crate::leases::FINISH_SYNC)
                        .bind(calendar_id)
                        .bind(end.worker)
                        .bind(end.fence)
                        .bind(end.answered_gen)
                        .fetch_optional(&mut *tx)
                        .await;
                match still_dirty {
                    Ok(still_dirty) => tx.commit().await.map(|()| still_dirty),
                    Err(e) => Err(e),
                }
            }
        }
        .ctx(what);
        self.note_write(&result);
        let still_dirty = result?.unwrap_or(false);
        // SQLite's leases are in this process (Postgres': released by the statement above).
        self.local_leases
            .release(calendar_id, end.worker, end.fence);
        Ok(still_dirty)
    }

    /// Queues actions for a conference without touching its link (the executor's follow-ups,
    /// such as a write-back of a join link the provider changed). A replay adds nothing, as in
    /// [`Store::commit_page`]. Queued even when the link is deleted by now: its event may have
    /// moved to another calendar (the delete guard re-homes the link), and the follow-up finds
    /// it where it lives when it runs.
    pub async fn enqueue(
        &self,
        conference_id: &str,
        calendar_id: &str,
        event_id: &str,
        actions: &[Action],
        not_before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let what = || format!("queueing actions for conference {conference_id}");
        let mut keys = self.lock_keys();
        keys.conference(conference_id).event(calendar_id, event_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
        let queued = outbox::append(
            &mut tx,
            &outbox::Append {
                conference_id,
                calendar_id,
                event_id,
                actions,
                link_spec: None,
                not_before_ms,
            },
            now_ms,
        )
        .await?;
        self.commit(tx, what).await?;
        Ok(queued)
    }

    /// Queues `actions` for a conference in place of its other pending work, in one
    /// transaction: its pending rows, `running_row` and deletes aside, are superseded first.
    /// For the executor when the new actions do what those rows were to do (a recreate makes the
    /// meeting from the link's spec and replays its exceptions: the updates still queued for the
    /// old meeting would only change a meeting about to be replaced).
    pub async fn take_over(
        &self,
        conference_id: &str,
        calendar_id: &str,
        event_id: &str,
        running_row: i64,
        actions: &[Action],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let what = || format!("queueing actions for conference {conference_id}");
        let mut keys = self.lock_keys();
        keys.conference(conference_id).event(calendar_id, event_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
        outbox::supersede_all_but_deletes(&mut tx, conference_id, running_row, now_ms).await?;
        let queued = outbox::append(
            &mut tx,
            &outbox::Append {
                conference_id,
                calendar_id,
                event_id,
                actions,
                link_spec: None,
                not_before_ms: now_ms,
            },
            now_ms,
        )
        .await?;
        self.commit(tx, what).await?;
        Ok(queued)
    }

    /// The recreate path's last step, once the event shows the new meeting: in ONE transaction
    /// - `replace` builds the new conference's link and its actions from the old link and the
    ///   new conference's link if one is already stored (both as they are now, inside the
    ///   transaction, so a sync committed meanwhile is not rolled back);
    /// - the old link, and any other live link of the event, are marked deleted and get a
    ///   `Delete { ConferenceReplaced }` (due now; its guard still checks the event);
    /// - the old conference's other pending rows, deletes aside, are superseded (updates,
    ///   occurrence changes, write-backs and further recreates of the old meeting: the new link
    ///   and its actions carry what they were to do); `running_row` is left to the caller;
    /// - the new link is stored live (a deleted one is revived and its pending deletes
    ///   superseded), with `last_etag_written` when the link carries one, and its actions queued.
    ///
    /// Answers the new link. A crash before the commit leaves everything as it was; repeating
    /// the swap after the commit changes nothing more (the deletes are replays, the exceptions
    /// already recorded are not queued again).
    pub async fn swap_link<F>(
        &self,
        old_conference_id: &str,
        new_conference_id: &str,
        running_row: i64,
        now_ms: i64,
        replace: F,
    ) -> Result<Link, StoreError>
    where
        F: FnOnce(&Link, Option<&Link>) -> (Link, Vec<Action>),
    {
        let what = || format!("replacing conference {old_conference_id} with {new_conference_id}");
        if old_conference_id == new_conference_id {
            return Err(StoreError::Conflict {
                what: what(),
                detail: "a conference cannot replace itself".into(),
            });
        }
        let mut tx = self.write_tx(what).await?;
        let old = links::get(&mut tx, old_conference_id)
            .await?
            .ok_or_else(|| StoreError::not_found(format!("{}: no link", what())))?
            .link;
        let existing_record = links::get(&mut tx, new_conference_id).await?;
        let base = existing_record
            .as_ref()
            .map_or(LinkBase::New, |s| LinkBase::Version(s.version));
        let existing = existing_record.map(|s| s.link);
        let (link, actions) = replace(&old, existing.as_ref());
        if link.conference_id != new_conference_id || link.deleted {
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!(
                    "the replacement link is for conference {} (deleted: {})",
                    link.conference_id, link.deleted
                ),
            });
        }
        calendars::ensure(&mut tx, &link.calendar_id, now_ms).await?;
        // The old link and whatever else the event held live: the event shows the new meeting.
        let mut replaced = vec![old.clone()];
        for other in links::live_of_event(&mut tx, &link.calendar_id, &link.event_id).await? {
            let id = &other.link.conference_id;
            if id != new_conference_id && id != old_conference_id {
                replaced.push(other.link);
            }
        }
        for gone in &replaced {
            links::mark_deleted(&mut tx, &gone.conference_id, now_ms).await?;
        }
        if existing.as_ref().is_some_and(|l| l.deleted) {
            outbox::supersede_deletes(&mut tx, new_conference_id, now_ms).await?;
        }
        links::write(&mut tx, &link, base, now_ms).await?;
        if let Some(etag) = &link.last_etag_written {
            links::set_written_etag(&mut tx, new_conference_id, etag).await?;
        }
        let superseded =
            outbox::supersede_all_but_deletes(&mut tx, old_conference_id, running_row, now_ms)
                .await?;
        let mut queued = outbox::append(
            &mut tx,
            &outbox::Append {
                conference_id: new_conference_id,
                calendar_id: &link.calendar_id,
                event_id: &link.event_id,
                actions: &actions,
                link_spec: Some(&link.spec),
                not_before_ms: now_ms,
            },
            now_ms,
        )
        .await?;
        let delete = [Action::Delete {
            reason: Change::ConferenceReplaced,
        }];
        for gone in &replaced {
            queued += outbox::append(
                &mut tx,
                &outbox::Append {
                    conference_id: &gone.conference_id,
                    calendar_id: &gone.calendar_id,
                    event_id: &gone.event_id,
                    actions: &delete,
                    link_spec: None,
                    not_before_ms: now_ms,
                },
                now_ms,
            )
            .await?;
        }
        self.commit(tx, what).await?;
        tracing::debug!(
            old_conference_id,
            new_conference_id,
            queued,
            superseded,
            replaced = replaced.len(),
            "conference replaced"
        );
        Ok(link)
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
