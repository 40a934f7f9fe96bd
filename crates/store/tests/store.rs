//! The store's contract: what commit_page, the outbox, dead letters and meetings promise.

use std::collections::BTreeMap;

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Change, Link, Occurrence, idempotency_key};
use confsync_store::testing::stores;
use confsync_store::{
    DeadLetter, LinkBase, OutboxState, PassEnd, PlannedChange, Store, StoreError,
};
use serde_json::json;

const ALICE: &str = "alice@example.com";
const TEAM: &str = "team@group.calendar.google.com";

fn spec(title: &str) -> MeetingSpec {
    MeetingSpec {
        title: title.to_owned(),
        description: String::new(),
        start: When::At("2026-12-01T10:00:00Z".parse().unwrap()),
        end: When::At("2026-12-01T11:00:00Z".parse().unwrap()),
        time_zone: Some("Europe/Berlin".to_owned()),
        recurrence: Vec::new(),
        attendees: vec!["bob@example.com".to_owned()],
        organizer: Some(ALICE.to_owned()),
    }
}

fn link(conference_id: &str, calendar_id: &str, event_id: &str, title: &str) -> Link {
    Link {
        conference_id: conference_id.to_owned(),
        provider: "local".to_owned(),
        calendar_id: calendar_id.to_owned(),
        event_id: event_id.to_owned(),
        spec: spec(title),
        last_etag_seen: Some("\"1\"".to_owned()),
        last_etag_written: None,
        occurrences: BTreeMap::new(),
        deleted: false,
        join_url: None,
    }
}

fn update(title: &str) -> Action {
    Action::Update {
        spec: spec(title),
        changes: vec![Change::Retitled],
    }
}

/// Writes the conference's link on ALICE's calendar, titled `title`, with one update to that
/// title queued: a change as a sync page would commit it.
async fn queue_update(
    store: &Store,
    conference_id: &str,
    event_id: &str,
    title: &str,
    now_ms: i64,
) {
    store
        .commit_latest(
            ALICE,
            &[change(
                link(conference_id, ALICE, event_id, title),
                vec![update(title)],
            )],
            &[],
            None,
            now_ms,
        )
        .await
        .unwrap();
}

fn change(link: Link, actions: Vec<Action>) -> PlannedChange {
    PlannedChange {
        link,
        base: LinkBase::New,
        actions,
        supersede_deletes: false,
        not_before_ms: 0,
    }
}

/// The tests below write links as a planner that just read them would: each change based on
/// the version stored now (the conditional write itself is tested on its own).
trait CommitLatest {
    async fn commit_latest(
        &self,
        calendar_id: &str,
        changes: &[PlannedChange],
        dead_letters: &[DeadLetter],
        sync_token: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

impl CommitLatest for Store {
    async fn commit_latest(
        &self,
        calendar_id: &str,
        changes: &[PlannedChange],
        dead_letters: &[DeadLetter],
        sync_token: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut based = Vec::new();
        for change in changes {
            let mut change = change.clone();
            change.base = match self.link_record(&change.link.conference_id).await? {
                Some(stored) => LinkBase::Version(stored.version),
                None => LinkBase::New,
            };
            based.push(change);
        }
        self.commit_page(calendar_id, &based, dead_letters, sync_token, now_ms)
            .await
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_page_is_committed_all_or_nothing() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store
            .commit_latest(
                ALICE,
                &[change(
                    link("m1", ALICE, "e1", "Planning"),
                    vec![update("Planning")],
                )],
                &[],
                Some("t1"),
                1_000,
            )
            .await
            .unwrap();

        // The second link claims the same event with another conference: a constraint violation
        // after the first change (link and outbox row) was already written in the transaction.
        let failing = [
            change(link("m1", ALICE, "e1", "Renamed"), vec![update("Renamed")]),
            change(
                link("m2", ALICE, "e1", "Intruder"),
                vec![update("Intruder")],
            ),
        ];
        let letters = [DeadLetter {
            event_id: Some("bad".into()),
            reason: "no start".into(),
            raw: json!({"id": "bad"}),
        }];
        let error = store
            .commit_latest(ALICE, &failing, &letters, Some("t2"), 2_000)
            .await
            .unwrap_err();
        assert!(error.is_conflict(), "{error}");
        assert!(
            error.to_string().contains(ALICE),
            "the error names the calendar: {error}"
        );

        assert_eq!(
            store.link("m1").await.unwrap().unwrap().spec.title,
            "Planning",
            "the link is unchanged"
        );
        assert_eq!(store.link("m2").await.unwrap(), None);
        assert_eq!(
            store
                .calendar(ALICE)
                .await
                .unwrap()
                .unwrap()
                .sync_token
                .as_deref(),
            Some("t1"),
            "the token did not advance"
        );
        assert_eq!(
            store.outbox_depth().await.unwrap(),
            1,
            "no outbox row was added"
        );
        assert!(store.dead_letters(ALICE).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn replaying_a_page_queues_no_duplicate_actions() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let page = [
            change(
                link("m1", ALICE, "e1", "Planning"),
                vec![update("Planning")],
            ),
            change(
                link("m2", ALICE, "e2", "Weekly"),
                vec![
                    update("Weekly"),
                    Action::CancelOccurrence {
                        occurrence: When::At("2026-12-08T10:00:00Z".parse().unwrap()),
                    },
                ],
            ),
        ];
        store
            .commit_latest(ALICE, &page, &[], None, 1_000)
            .await
            .unwrap();
        store
            .commit_latest(ALICE, &page, &[], None, 2_000)
            .await
            .unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), 3);

        assert_eq!(store.outbox_of("m2").await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn an_action_planned_again_after_it_ran_is_queued_again() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let verify = [change(
            link("m1", ALICE, "e1", "Planning"),
            vec![Action::Verify],
        )];
        store
            .commit_latest(ALICE, &verify, &[], None, 1_000)
            .await
            .unwrap();
        let first = store.due(10, 1_000).await.unwrap().remove(0);
        store.complete(first.id, 1_000).await.unwrap();

        // A later full sync again misses the event: it must be verified again, not skipped as a
        // replay (at least once, never lost).
        store
            .commit_latest(ALICE, &verify, &[], None, 2_000)
            .await
            .unwrap();
        let second = store.due(10, 2_000).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].action, Action::Verify);
        // A fresh key: the planned key with the new row's own id.
        let planned = idempotency_key(ALICE, "e1", &Action::Verify);
        assert_eq!(first.idempotency_key, format!("{planned}#{}", first.id));
        assert_eq!(
            second[0].idempotency_key,
            format!("{planned}#{}", second[0].id)
        );
        assert_ne!(second[0].idempotency_key, first.idempotency_key);
    }
}

#[tokio::test]
async fn outbox_rows_carry_the_planned_idempotency_key() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let action = update("Planning");
        store
            .commit_latest(
                ALICE,
                &[change(
                    link("m1", ALICE, "e1", "Planning"),
                    vec![action.clone()],
                )],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        let due = store.due(10, 1_000).await.unwrap();
        assert_eq!(
            due[0].idempotency_key,
            format!("{}#{}", idempotency_key(ALICE, "e1", &action), due[0].id)
        );
        assert_eq!(
            (
                due[0].calendar_id.as_str(),
                due[0].event_id.as_str(),
                &due[0].action
            ),
            (ALICE, "e1", &action)
        );
    }
}

#[tokio::test]
async fn a_change_back_to_an_earlier_spec_is_queued_again() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        for (i, title) in ["A", "B", "A"].into_iter().enumerate() {
            let now = 1_000 * (i as i64 + 1);
            store
                .commit_latest(
                    ALICE,
                    &[change(link("m1", ALICE, "e1", title), vec![update(title)])],
                    &[],
                    None,
                    now,
                )
                .await
                .unwrap();
        }
        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(rows.len(), 3, "A -> B -> A is three changes, not a replay");
        assert_eq!(rows[2].action, update("A"));
        assert_eq!(
            rows[2].idempotency_key,
            format!(
                "{}#{}",
                idempotency_key(ALICE, "e1", &update("A")),
                rows[2].id
            ),
        );
        assert_ne!(
            rows[2].idempotency_key, rows[0].idempotency_key,
            "the provider sees a fresh key"
        );
    }
}

#[tokio::test]
async fn due_hands_out_only_the_oldest_pending_row_of_each_conference() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        queue_update(&store, "m1", "e1", "Planning", 1_000).await;
        let mut gone = link("m1", ALICE, "e1", "Planning");
        gone.deleted = true;
        store
            .commit_latest(
                ALICE,
                &[change(
                    gone,
                    vec![Action::Delete {
                        reason: Change::EventCancelled,
                    }],
                )],
                &[],
                None,
                2_000,
            )
            .await
            .unwrap();
        queue_update(&store, "m2", "e2", "Other", 3_000).await;

        let due = store.due(10, 5_000).await.unwrap();
        let kinds: Vec<(&str, &str)> = due
            .iter()
            .map(|i| (i.conference_id.as_str(), i.action.kind()))
            .collect();
        assert_eq!(
            kinds,
            [("m1", "update"), ("m2", "update")],
            "m1's delete waits for its update"
        );

        store.complete(due[0].id, 5_000).await.unwrap();
        let due = store.due(10, 5_000).await.unwrap();
        let kinds: Vec<(&str, &str)> = due
            .iter()
            .map(|i| (i.conference_id.as_str(), i.action.kind()))
            .collect();
        assert_eq!(kinds, [("m1", "delete"), ("m2", "update")]);
        assert_eq!(
            store.due(1, 5_000).await.unwrap().len(),
            1,
            "the limit holds"
        );
    }
}

#[tokio::test]
async fn retry_later_hides_a_row_and_its_successors_until_not_before() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let mut gone = link("m1", ALICE, "e1", "Planning");
        gone.deleted = true;
        queue_update(&store, "m1", "e1", "Planning", 1_000).await;
        store
            .commit_latest(
                ALICE,
                &[change(
                    gone,
                    vec![Action::Delete {
                        reason: Change::EventCancelled,
                    }],
                )],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        let first = store.due(10, 1_000).await.unwrap().remove(0);

        store
            .retry_later(
                first.id,
                61_000,
                "429 Too Many Requests (Retry-After: 60)",
                1_000,
            )
            .await
            .unwrap();
        assert!(
            store.due(10, 60_999).await.unwrap().is_empty(),
            "neither the row nor the delete behind it is due"
        );
        assert_eq!(store.outbox_depth().await.unwrap(), 2, "still pending");

        let again = store.due(10, 61_000).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id, again[0].attempts), (first.id, 1));
        let row = &store.outbox_of("m1").await.unwrap()[0];
        assert_eq!(
            row.last_error.as_deref(),
            Some("429 Too Many Requests (Retry-After: 60)")
        );
    }
}

#[tokio::test]
async fn a_permanent_failure_is_visible_and_unblocks_the_conference() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store
            .commit_latest(
                ALICE,
                &[change(link("m1", ALICE, "e1", "A"), vec![update("A")])],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        store
            .commit_latest(
                ALICE,
                &[change(link("m1", ALICE, "e1", "B"), vec![update("B")])],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        let first = store.due(10, 1_000).await.unwrap().remove(0);
        store
            .fail(first.id, "400 invalid meeting", 2_000)
            .await
            .unwrap();

        let failures = store.failures(10).await.unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(
            (
                failures[0].conference_id.as_str(),
                failures[0].kind.as_str(),
                failures[0].error.as_str()
            ),
            ("m1", "update", "400 invalid meeting")
        );
        assert_eq!((failures[0].attempts, failures[0].failed_at), (1, 2_000));
        assert_eq!(store.due(10, 2_000).await.unwrap()[0].action, update("B"));

        store
            .retry_later(first.id, 9_000, "late report", 3_000)
            .await
            .unwrap();
        assert_eq!(
            store.outbox_of("m1").await.unwrap()[0].state,
            OutboxState::Failed,
            "a finished row stays finished"
        );
        assert!(store.complete(999, 3_000).await.unwrap_err().is_not_found());
    }
}

#[tokio::test]
async fn a_link_that_moved_calendars_supersedes_its_pending_delete() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store
            .commit_latest(
                ALICE,
                &[change(link("m1", ALICE, "e1", "Planning"), vec![])],
                &[],
                Some("a1"),
                1_000,
            )
            .await
            .unwrap();
        // The tombstone on Alice's calendar arrives first: a delete is queued.
        let mut gone = link("m1", ALICE, "e1", "Planning");
        gone.deleted = true;
        store
            .commit_latest(
                ALICE,
                &[change(
                    gone,
                    vec![Action::Delete {
                        reason: Change::EventCancelled,
                    }],
                )],
                &[],
                Some("a2"),
                2_000,
            )
            .await
            .unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), 1);

        // Then the event shows up on the team calendar with the same conference.
        let moved = PlannedChange {
            link: link("m1", TEAM, "e1", "Planning"),
            base: LinkBase::New,
            actions: vec![],
            supersede_deletes: true,
            not_before_ms: 0,
        };
        store
            .commit_latest(TEAM, &[moved], &[], Some("t1"), 3_000)
            .await
            .unwrap();

        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(rows[0].state, OutboxState::Superseded);
        assert!(store.due(10, 3_000).await.unwrap().is_empty());
        let now = store.link("m1").await.unwrap().unwrap();
        assert_eq!((now.calendar_id.as_str(), now.deleted), (TEAM, false));
        assert!(store.link_event_ids(ALICE).await.unwrap().is_empty());
        assert_eq!(store.link_event_ids(TEAM).await.unwrap(), ["e1"]);
    }
}

/// An update whose link is deleted by the time it runs is superseded with the link marked
/// unapplied (and its version bumped); while the link is live it is left to run.
#[tokio::test]
async fn an_update_of_a_deleted_link_is_superseded_with_the_link_marked() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        // An update that landed first: the mark records what it carried.
        queue_update(&store, "m1", "e1", "Planning", 500).await;
        let first = store.due(10, 500).await.unwrap().remove(0);
        assert!(store.complete(&first, 600).await.unwrap());
        let live = link("m1", ALICE, "e1", "Renamed");
        store
            .commit_latest(
                ALICE,
                &[change(live, vec![update("Renamed")])],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        let item = store.due(10, 1_000).await.unwrap().remove(0);
        assert_eq!(
            store
                .supersede_update_of_deleted_link(&item, 1_500)
                .await
                .unwrap(),
            None,
            "a live link's update runs"
        );
        assert_eq!(
            store.outbox_of("m1").await.unwrap()[1].state,
            OutboxState::Pending
        );
        let mut gone = link("m1", ALICE, "e1", "Renamed");
        gone.deleted = true;
        let delete = Action::Delete {
            reason: Change::EventCancelled,
        };
        store
            .commit_latest(ALICE, &[change(gone, vec![delete])], &[], None, 2_000)
            .await
            .unwrap();
        let before = store.link_record("m1").await.unwrap().unwrap();
        assert!(!before.unapplied());
        assert_eq!(
            store
                .supersede_update_of_deleted_link(&item, 2_500)
                .await
                .unwrap(),
            Some(true)
        );
        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.state).collect::<Vec<_>>(),
            [
                OutboxState::Done,
                OutboxState::Superseded,
                OutboxState::Pending
            ]
        );
        let after = store.link_record("m1").await.unwrap().unwrap();
        assert!(after.unapplied() && after.version > before.version);
        assert_eq!(after.link, before.link, "the planner's fields are kept");
        assert_eq!(
            after.applied_fingerprint,
            Some(spec("Planning").fingerprint()),
            "the spec of the last update that landed"
        );
        // Brought back: the link's next write replaces the mark.
        store
            .commit_latest(
                ALICE,
                &[change(link("m1", ALICE, "e1", "Renamed"), vec![])],
                &[],
                None,
                3_000,
            )
            .await
            .unwrap();
        assert!(!store.link_record("m1").await.unwrap().unwrap().unapplied());
    }
}

/// An event holds at most one live link; deleted ones beside it are kept (their deletes may be
/// pending, tombstones find them).
#[tokio::test]
async fn an_event_holds_one_live_link_and_any_number_of_deleted_ones() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let live = |conference_id| change(link(conference_id, ALICE, "e1", "Planning"), vec![]);
        store
            .commit_latest(ALICE, &[live("m1")], &[], None, 1_000)
            .await
            .unwrap();
        assert!(
            store
                .commit_latest(ALICE, &[live("m2")], &[], None, 2_000)
                .await
                .is_err(),
            "a second live link for the event is refused"
        );
        for (n, conference_id) in ["m1", "m2", "m3"].into_iter().enumerate() {
            let mut gone = link(conference_id, ALICE, "e1", "Planning");
            gone.deleted = true;
            store
                .commit_latest(ALICE, &[change(gone, vec![])], &[], None, 3_000 + n as i64)
                .await
                .unwrap();
        }
        store
            .commit_latest(ALICE, &[live("m4")], &[], None, 4_000)
            .await
            .unwrap();
        assert_eq!(store.link_event_ids(ALICE).await.unwrap(), ["e1"]);
        for conference_id in ["m1", "m2", "m3", "m4"] {
            assert!(store.link(conference_id).await.unwrap().is_some());
        }
    }
}

#[tokio::test]
async fn links_finds_events_of_the_calendar_and_conferences_anywhere() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let mut replaced = link("m1", ALICE, "e1", "Old");
        replaced.deleted = true;
        let mut occurrences = link("m3", TEAM, "e9", "Weekly");
        occurrences
            .occurrences
            .insert("2026-12-08T10:00:00Z".into(), Occurrence::Cancelled);
        store
            .commit_latest(
                ALICE,
                &[
                    change(replaced, vec![]),
                    change(link("m2", ALICE, "e1", "New"), vec![]),
                ],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        store
            .commit_latest(
                TEAM,
                &[change(occurrences.clone(), vec![])],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();

        let found = store
            .links(ALICE, &strings(&["e1", "e404"]), &strings(&["m3"]))
            .await
            .unwrap();
        let ids: Vec<&str> = found.iter().map(|l| l.conference_id.as_str()).collect();
        assert_eq!(
            ids,
            ["m2", "m3"],
            "the live link wins over the deleted one of the same event"
        );
        assert_eq!(found[1], occurrences, "a link round-trips");
        assert!(store.links(ALICE, &[], &[]).await.unwrap().is_empty());
        assert_eq!(store.link_event_ids(ALICE).await.unwrap(), ["e1"]);

        let mut gone = link("m2", ALICE, "e1", "New");
        gone.deleted = true;
        store
            .commit_latest(ALICE, &[change(gone, vec![])], &[], None, 2_000)
            .await
            .unwrap();
        let found = store.links(ALICE, &strings(&["e1"]), &[]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].conference_id.as_str(), found[0].deleted),
            ("m2", true),
            "else the latest deleted one"
        );
    }
}

#[tokio::test]
async fn executor_bookkeeping_survives_a_sync_page() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let l = link("m1", ALICE, "e1", "Planning");
        store
            .commit_latest(
                ALICE,
                &[change(l.clone(), vec![update("Planning")])],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        store
            .record_applied("m1", &l.spec.fingerprint())
            .await
            .unwrap();
        store.record_written_etag("m1", "\"7\"").await.unwrap();
        // A pass that read the link before the write-back commits it without the etag.
        queue_update(&store, "m1", "e1", "Renamed", 2_000).await;

        let record = store.link_record("m1").await.unwrap().unwrap();
        assert_eq!(record.link.last_etag_written.as_deref(), Some("\"7\""));
        assert_eq!(record.applied_fingerprint, Some(l.spec.fingerprint()));
        assert_eq!(record.fingerprint, spec("Renamed").fingerprint());
        assert!(
            store
                .record_applied("nope", "x")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}

#[tokio::test]
async fn the_token_and_full_sync_flag_follow_the_passes() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        assert_eq!(store.calendar(ALICE).await.unwrap(), None);
        store.ensure_calendar(ALICE).await.unwrap();
        store.ensure_calendar(ALICE).await.unwrap();
        let fresh = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(
            (fresh.sync_token, fresh.needs_full_sync, fresh.last_sync_at),
            (None, false, None)
        );

        store.set_sync_token(ALICE, "t1", 1_000).await.unwrap();
        store.mark_full_sync_needed(ALICE).await.unwrap();
        store
            .record_sync_error(ALICE, "410 Gone: full sync required")
            .await
            .unwrap();
        let marked = store.calendar(ALICE).await.unwrap().unwrap();
        assert!(marked.needs_full_sync);
        assert_eq!(
            marked.last_error.as_deref(),
            Some("410 Gone: full sync required")
        );

        store
            .commit_latest(ALICE, &[], &[], Some("t2"), 2_000)
            .await
            .unwrap();
        let synced = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(
            (
                synced.sync_token.as_deref(),
                synced.needs_full_sync,
                synced.last_sync_at,
                synced.last_error
            ),
            (Some("t2"), false, Some(2_000), None)
        );
        store
            .commit_latest(ALICE, &[], &[], None, 3_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .calendar(ALICE)
                .await
                .unwrap()
                .unwrap()
                .sync_token
                .as_deref(),
            Some("t2"),
            "a middle page keeps the token"
        );

        store.mark_full_sync_needed(TEAM).await.unwrap();
        let ids: Vec<String> = store
            .calendars()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.calendar_id)
            .collect();
        assert_eq!(ids, [ALICE, TEAM]);
    }
}

#[tokio::test]
async fn dead_letters_are_counted_not_repeated() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let bad = DeadLetter {
            event_id: Some("bad".into()),
            reason: "the event has no start".into(),
            raw: json!({"id": "bad"}),
        };
        let anonymous: DeadLetter = (
            None,
            "the event has no id".to_owned(),
            json!({"status": "confirmed"}),
        )
            .into();
        store
            .commit_latest(ALICE, &[], &[bad.clone(), anonymous.clone()], None, 1_000)
            .await
            .unwrap();
        let mut again = bad.clone();
        again.raw = json!({"id": "bad", "summary": "still broken"});
        store
            .commit_latest(ALICE, &[], &[again, anonymous], None, 2_000)
            .await
            .unwrap();

        let letters = store.dead_letters(ALICE).await.unwrap();
        assert_eq!(letters.len(), 2);
        let named = letters
            .iter()
            .find(|l| l.event_id.as_deref() == Some("bad"))
            .unwrap();
        assert_eq!(
            (named.count, named.first_seen, named.last_seen),
            (2, 1_000, 2_000)
        );
        assert_eq!(
            named.raw["summary"], "still broken",
            "the latest item is kept"
        );
        let unnamed = letters.iter().find(|l| l.event_id.is_none()).unwrap();
        assert_eq!(unnamed.count, 2, "items without an id are counted too");
        assert!(store.dead_letters(TEAM).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn meetings_are_created_once_per_idempotency_key() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let first = store
            .meeting_create(
                "local-1",
                "create:k1",
                r#"{"title":"A"}"#,
                "https://meet.invalid/local-1",
                1_000,
            )
            .await
            .unwrap();
        let second = store
            .meeting_create(
                "local-2",
                "create:k1",
                r#"{"title":"B"}"#,
                "https://meet.invalid/local-2",
                2_000,
            )
            .await
            .unwrap();
        assert_eq!(second, first, "the same key returns the first meeting");
        assert_eq!(store.meetings().await.unwrap().len(), 1);

        let taken = store
            .meeting_create("local-1", "create:k2", "{}", "https://x", 3_000)
            .await
            .unwrap_err();
        assert!(taken.is_conflict(), "{taken}");

        store
            .meeting_update("local-1", r#"{"title":"C"}"#, 4_000)
            .await
            .unwrap();
        store
            .meeting_set_occurrences("local-1", r#"{"2026-12-08T10:00:00Z":null}"#)
            .await
            .unwrap();
        let updated = store.meeting("local-1").await.unwrap().unwrap();
        assert_eq!(
            (
                updated.spec_json.as_str(),
                updated.occurrences_json.as_str()
            ),
            (r#"{"title":"C"}"#, r#"{"2026-12-08T10:00:00Z":null}"#)
        );

        store.meeting_delete("local-1").await.unwrap();
        store.meeting_delete("local-1").await.unwrap();
        assert!(
            store.meeting("local-1").await.unwrap().unwrap().deleted,
            "soft delete"
        );
        assert!(
            store
                .meeting_update("local-1", "{}", 5_000)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            store
                .meeting_delete("nope")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(store.meeting("nope").await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_file_store_keeps_everything_across_reopening() {
    let dir = std::env::temp_dir().join(format!(
        "confsync-store-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("confsync.db");
    let path = path.to_str().unwrap();
    {
        let store = Store::open(path).await.unwrap();
        let letters = [DeadLetter {
            event_id: None,
            reason: "no id".into(),
            raw: json!({}),
        }];
        store
            .commit_latest(
                ALICE,
                &[change(
                    link("m1", ALICE, "e1", "Planning"),
                    vec![update("Planning")],
                )],
                &letters,
                Some("t1"),
                1_000,
            )
            .await
            .unwrap();
        store
            .meeting_create(
                "local-1",
                "create:k1",
                "{}",
                "https://meet.invalid/local-1",
                1_000,
            )
            .await
            .unwrap();
        store.close().await;
    }
    let store = Store::open(&format!("sqlite://{path}")).await.unwrap();
    assert_eq!(
        store
            .calendar(ALICE)
            .await
            .unwrap()
            .unwrap()
            .sync_token
            .as_deref(),
        Some("t1")
    );
    assert_eq!(
        store.link("m1").await.unwrap().unwrap(),
        link("m1", ALICE, "e1", "Planning")
    );
    assert_eq!(store.due(10, 1_000).await.unwrap().len(), 1);
    assert_eq!(store.dead_letters(ALICE).await.unwrap().len(), 1);
    assert!(store.meeting("local-1").await.unwrap().is_some());
    let journal: String = {
        // WAL is on (the -wal file exists while the store is open).
        if dir.join("confsync.db-wal").exists() {
            "wal".into()
        } else {
            "other".into()
        }
    };
    assert_eq!(journal, "wal");
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn unsupported_urls_are_refused_with_the_location() {
    let error = Store::open("mysql://localhost/confsync").await.unwrap_err();
    assert!(
        error.to_string().contains("mysql://localhost/confsync"),
        "{error}"
    );
    // A Postgres URL's password never shows in the error.
    let error = Store::open("postgres://confsync:hunter2@127.0.0.1:1/confsync")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("postgres://confsync:***@127.0.0.1:1/confsync"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn api_keys_are_found_by_hash_and_can_be_revoked() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store.api_key_create("addon", "hash-1", 1).await.unwrap();
        assert!(
            store
                .api_key_create("addon", "hash-2", 2)
                .await
                .unwrap_err()
                .is_conflict(),
            "names are unique"
        );
        assert!(
            store
                .api_key_create("other", "hash-1", 2)
                .await
                .unwrap_err()
                .is_conflict(),
            "hashes are unique"
        );
        assert_eq!(
            store.api_key_by_hash("hash-1").await.unwrap().as_deref(),
            Some("addon")
        );
        assert_eq!(store.api_key_by_hash("nope").await.unwrap(), None);
        store.api_key_revoke("addon").await.unwrap();
        assert_eq!(store.api_key_by_hash("hash-1").await.unwrap(), None);
        assert!(
            store
                .api_key_revoke("ghost")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(store.api_keys().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn swapping_links_replaces_the_old_conference_in_one_transaction() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let mut old = link("m1", ALICE, "e1", "Planning");
        old.occurrences
            .insert("2026-12-08T10:00:00Z".to_owned(), Occurrence::Cancelled);
        store
            .commit_latest(ALICE, &[change(old.clone(), vec![])], &[], None, 1_000)
            .await
            .unwrap();
        // The executor queues the recreate; a sync then plans a newer spec for the old conference.
        let recreate = Action::Recreate {
            spec: spec("Planning"),
            provider: None,
        };
        store
            .enqueue(
                "m1",
                ALICE,
                "e1",
                std::slice::from_ref(&recreate),
                1_000,
                1_000,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .enqueue(
                    "m1",
                    ALICE,
                    "e1",
                    std::slice::from_ref(&recreate),
                    1_000,
                    1_000
                )
                .await
                .unwrap(),
            0,
            "a replayed recreate is not queued twice"
        );
        let running = store.due(10, 1_000).await.unwrap()[0].id;
        assert_eq!(
            store.recreating(&strings(&["m1", "m9"])).await.unwrap(),
            ["m1".to_owned()].into_iter().collect(),
            "the planner learns which meetings are being recreated"
        );
        // And with the links a page loads, by event and by conference id, in the same read.
        for (event_ids, conference_ids) in [(strings(&["e1"]), vec![]), (vec![], strings(&["m1"]))]
        {
            let page = store
                .page_links(ALICE, &event_ids, &conference_ids)
                .await
                .unwrap();
            assert_eq!(page.links.len(), 1);
            assert_eq!(page.recreating, ["m1".to_owned()].into_iter().collect());
            assert!(page.recreate_targets.is_empty());
        }
        // The recreate made meeting m2 (recorded before the event is pointed at it): a page on
        // another calendar whose event shows m2 loads m1's link, and learns m2 is m1's new one.
        store.record_recreate_target(running, "m2").await.unwrap();
        let page = store
            .page_links(
                "bob@example.com",
                &strings(&["e1"]),
                &strings(&["m2", "m9"]),
            )
            .await
            .unwrap();
        assert_eq!(
            page.links
                .iter()
                .map(|s| s.link.conference_id.as_str())
                .collect::<Vec<_>>(),
            ["m1"],
            "{page:?}"
        );
        assert_eq!(page.recreating, ["m1".to_owned()].into_iter().collect());
        assert_eq!(
            page.recreate_targets,
            [("m2".to_owned(), "m1".to_owned())].into_iter().collect()
        );
        let mut renamed = old.clone();
        renamed.spec = spec("Planning (renamed)");
        store
            .commit_latest(
                ALICE,
                &[change(renamed, vec![update("Planning (renamed)")])],
                &[],
                None,
                2_000,
            )
            .await
            .unwrap();

        let swap = |store: Store| async move {
            store
                .swap_link("m1", "m2", running, 3_000, |old, existing| {
                    let mut new = existing.cloned().unwrap_or_else(|| {
                        let mut new = old.clone();
                        new.conference_id = "m2".into();
                        new
                    });
                    new.last_etag_written = Some("\"9\"".into());
                    let actions = if existing.is_some() {
                        vec![]
                    } else {
                        assert_eq!(
                            old.spec.title, "Planning (renamed)",
                            "read in the transaction"
                        );
                        vec![update("Planning (renamed)")]
                    };
                    (new, actions)
                })
                .await
        };
        let new = swap(store.clone()).await.unwrap();
        assert_eq!(new.conference_id, "m2");
        let m1 = store.link("m1").await.unwrap().unwrap();
        let m2 = store.link("m2").await.unwrap().unwrap();
        assert!(m1.deleted && !m2.deleted);
        assert_eq!(m2.occurrences, old.occurrences);
        assert_eq!(m2.last_etag_written.as_deref(), Some("\"9\""));
        assert_eq!(
            store.links(ALICE, &strings(&["e1"]), &[]).await.unwrap(),
            vec![m2.clone()],
            "the event's live link is the new one"
        );
        let states = |rows: Vec<confsync_store::OutboxEntry>| {
            rows.into_iter()
                .map(|r| (r.action.kind(), r.state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(store.outbox_of("m1").await.unwrap()),
            [
                ("recreate", OutboxState::Pending),
                ("update", OutboxState::Superseded),
                ("delete", OutboxState::Pending),
            ],
            "the running row is the caller's; the old meeting's update is taken over"
        );
        assert_eq!(
            states(store.outbox_of("m2").await.unwrap()),
            [("update", OutboxState::Pending)]
        );

        // Repeated after a crash between the swap and completing the row: nothing more.
        swap(store.clone()).await.unwrap();
        assert_eq!(store.outbox_of("m1").await.unwrap().len(), 3);
        assert_eq!(store.outbox_of("m2").await.unwrap().len(), 1);
        assert_eq!(store.link("m2").await.unwrap().unwrap(), m2);

        store.complete(running, 5_000).await.unwrap();
        assert!(
            store
                .recreating(&strings(&["m1"]))
                .await
                .unwrap()
                .is_empty()
        );
        let page = store
            .page_links(ALICE, &strings(&["e1"]), &strings(&["m1", "m2"]))
            .await
            .unwrap();
        assert_eq!(page.links.len(), 2, "{page:?}");
        assert!(page.recreating.is_empty(), "{page:?}");

        let itself = store
            .swap_link("m2", "m2", running, 4_000, |old, _| (old.clone(), vec![]))
            .await
            .unwrap_err();
        assert!(itself.is_conflict(), "{itself}");
    }
}

#[tokio::test]
async fn a_take_over_supersedes_the_pending_work_it_replaces() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store
            .commit_latest(
                ALICE,
                &[change(
                    link("m1", ALICE, "e1", "Planning"),
                    vec![update("Planning (1)"), update("Planning (2)")],
                )],
                &[],
                None,
                1_000,
            )
            .await
            .unwrap();
        let mut gone = link("m1", ALICE, "e1", "Planning (2)");
        gone.deleted = true;
        store
            .commit_latest(
                ALICE,
                &[change(
                    gone,
                    vec![Action::Delete {
                        reason: Change::EventCancelled,
                    }],
                )],
                &[],
                None,
                2_000,
            )
            .await
            .unwrap();
        let running = store.due(10, 2_000).await.unwrap()[0].id;
        let recreate = Action::Recreate {
            spec: spec("Planning (2)"),
            provider: None,
        };
        let queued = store
            .take_over("m1", ALICE, "e1", running, &[recreate], 3_000)
            .await
            .unwrap();
        assert_eq!(queued, 1);
        let states: Vec<_> = store
            .outbox_of("m1")
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.action.kind(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("update", OutboxState::Pending),
                ("update", OutboxState::Superseded),
                ("delete", OutboxState::Pending),
                ("recreate", OutboxState::Pending),
            ],
            "the running row is the caller's, deletes are never taken over"
        );
    }
}

/// A link written by anyone since a writer read it is not overwritten: the write fails as
/// stale and nothing of its transaction (outbox rows, token) is stored.
#[tokio::test]
async fn a_link_write_based_on_a_stale_version_is_refused_and_writes_nothing() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let original = link("m1", ALICE, "e1", "Planning");
        store
            .commit_page(ALICE, &[change(original.clone(), vec![])], &[], None, 1_000)
            .await
            .unwrap();
        let read = store.link_record("m1").await.unwrap().unwrap();
        // A sync marks the link deleted (the event was cancelled) ...
        let mut cancelled = original.clone();
        cancelled.deleted = true;
        let mut by_sync = change(
            cancelled,
            vec![Action::Delete {
                reason: Change::EventCancelled,
            }],
        );
        by_sync.base = LinkBase::Version(read.version);
        store
            .commit_page(ALICE, &[by_sync], &[], None, 2_000)
            .await
            .unwrap();
        // ... while a writer that read it before plans from the old version.
        let mut stale = change(original.clone(), vec![update("Planning")]);
        stale.base = LinkBase::Version(read.version);
        let error = store
            .commit_page(ALICE, &[stale], &[], Some("t9"), 3_000)
            .await
            .unwrap_err();
        assert!(error.is_stale(), "{error}");
        let now = store.link_record("m1").await.unwrap().unwrap();
        assert!(now.link.deleted, "the deletion stands");
        assert_eq!(now.version, read.version + 1);
        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(rows.len(), 1, "only the delete is queued: {rows:?}");
        assert_eq!(
            store.calendar(ALICE).await.unwrap().unwrap().sync_token,
            None,
            "the token did not move"
        );
        // A new link for a conference that has one by now is stale too.
        let again = change(original, vec![]);
        assert!(
            store
                .commit_page(ALICE, &[again], &[], None, 4_000)
                .await
                .unwrap_err()
                .is_stale()
        );
        // Two changes of one conference in one page chain (a series and its instances).
        let current = store.link_record("m1").await.unwrap().unwrap();
        let mut first = change(link("m1", ALICE, "e1", "A"), vec![]);
        first.base = LinkBase::Version(current.version);
        let mut second = change(link("m1", ALICE, "e1", "B"), vec![]);
        second.base = LinkBase::Version(current.version);
        store
            .commit_page(ALICE, &[first, second], &[], None, 5_000)
            .await
            .unwrap();
        assert_eq!(store.link("m1").await.unwrap().unwrap().spec.title, "B");
    }
}

/// A trigger is recorded before it is acknowledged; a pass clears it only if no trigger came
/// after the pass started; a failed pass keeps the calendar dirty with its retry time.
#[tokio::test]
async fn a_trigger_recorded_during_a_pass_keeps_the_calendar_dirty() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        assert!(
            !store.mark_dirty(ALICE, 1_000).await.unwrap(),
            "unknown calendars record nothing"
        );
        store.ensure_calendar(ALICE).await.unwrap();
        assert!(store.mark_dirty(ALICE, 1_000).await.unwrap());
        assert_eq!(
            store.calendars_to_sync().await.unwrap(),
            vec![(ALICE.to_owned(), 1_000)]
        );
        let started = store.calendar(ALICE).await.unwrap().unwrap().dirty_gen;
        // A notification arrives while the pass runs.
        store.mark_dirty(ALICE, 2_000).await.unwrap();
        assert!(
            store.sync_succeeded(ALICE, started).await.unwrap(),
            "still dirty"
        );
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(
            state.dirty_at,
            Some(1_000),
            "still dirty: the second trigger needs a pass"
        );
        assert!(!store.sync_succeeded(ALICE, state.dirty_gen).await.unwrap());
        assert!(store.calendars_to_sync().await.unwrap().is_empty());
        // While another worker syncs it, a dirty calendar is not offered to the others.
        store.mark_dirty(ALICE, 2_500).await.unwrap();
        let far = i64::MAX / 4;
        let fence = store
            .lease_calendar(ALICE, "other", far, 5_000)
            .await
            .unwrap()
            .unwrap();
        assert!(store.calendars_to_sync().await.unwrap().is_empty());
        store.release_calendar(ALICE, "other", fence).await.unwrap();
        assert_eq!(store.calendars_to_sync().await.unwrap().len(), 1);
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        store.sync_succeeded(ALICE, state.dirty_gen).await.unwrap();
        // A failed pass: dirty, with its retry time first in line.
        store.mark_dirty(ALICE, 3_000).await.unwrap();
        assert_eq!(
            store
                .sync_failed(ALICE, "500", Some(9_000), 3_100)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .sync_failed(ALICE, "500", Some(19_000), 9_100)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store.calendars_to_sync().await.unwrap(),
            vec![(ALICE.to_owned(), 19_000)]
        );
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(
            (state.sync_failures, state.last_error.as_deref()),
            (2, Some("500"))
        );
        store.sync_succeeded(ALICE, state.dirty_gen).await.unwrap();
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(
            (state.sync_failures, state.retry_at, state.dirty_at),
            (0, None, None)
        );
        // A pass that failed for want of the owner's grant (no retry time) is not polled: it
        // waits for the owner to connect again.
        store.mark_dirty(ALICE, 30_000).await.unwrap();
        store
            .sync_failed(ALICE, "reauth", None, 30_100)
            .await
            .unwrap();
        assert!(store.calendars_to_sync().await.unwrap().is_empty());
    }
}

/// Creates are keyed by event: retries resume the same key until the meeting is linked; a
/// linked event answers its link; a new create after the link was removed is a new generation.
#[tokio::test]
async fn create_intents_give_every_retry_of_an_event_the_same_key() {
    use confsync_store::CreateStart;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let CreateStart::Create { key: first } =
            store.begin_create(ALICE, "e1", 1_000).await.unwrap()
        else {
            panic!("no link yet")
        };
        let CreateStart::Create { key: retry } =
            store.begin_create(ALICE, "e1", 2_000).await.unwrap()
        else {
            panic!("no link yet")
        };
        assert_eq!(first, retry);
        let CreateStart::Create { key: other } =
            store.begin_create(ALICE, "e2", 2_000).await.unwrap()
        else {
            panic!()
        };
        assert_ne!(first, other);
        let linked = link("m1", ALICE, "e1", "Planning");
        store.finish_create(&linked, 3_000).await.unwrap();
        assert_eq!(
            store.begin_create(ALICE, "e1", 4_000).await.unwrap(),
            CreateStart::Existing(Box::new(linked.clone()))
        );
        // A concurrent retry that made the same meeting answers the first link.
        assert_eq!(
            store.finish_create(&linked, 4_000).await.unwrap(),
            CreateStart::Existing(Box::new(linked.clone()))
        );
        // The conference is removed from the event; a new create is a new generation.
        let mut removed = linked.clone();
        removed.deleted = true;
        let mut change = change(removed, vec![]);
        change.base = LinkBase::Version(store.link_record("m1").await.unwrap().unwrap().version);
        store
            .commit_page(ALICE, &[change], &[], None, 5_000)
            .await
            .unwrap();
        let CreateStart::Create { key: next } =
            store.begin_create(ALICE, "e1", 6_000).await.unwrap()
        else {
            panic!()
        };
        assert_ne!(next, first);
        // Stale intents: "e2" still creating, "e1" generation 2 creating.
        let stale = store.stale_intents(10_000, 10).await.unwrap();
        assert_eq!(stale.len(), 2, "{stale:?}");
    }
}

/// A file store (as in production: a writer and readers) in a directory `name` of this test
/// process, on a file that does not exist before; answers the directory to remove.
async fn file_store(name: &str) -> (std::path::PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!("confsync-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.db");
    let _ = std::fs::remove_file(&path);
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    (dir, store)
}

/// A file store in a fresh directory `name` claimed by one handle, the "process" holding it, and
/// a second handle on the same file: a second open of the lock file stands for another process
/// (flock locks are per open file description). Answers the directory to remove.
async fn claimed_file_store(name: &str) -> (std::path::PathBuf, Store, Store) {
    let (dir, holder) = file_store(name).await;
    holder.claim_single_process().await.unwrap();
    let other = Store::open(dir.join("s.db").to_str().unwrap())
        .await
        .unwrap();
    (dir, holder, other)
}

/// Two processes on one SQLite file would both run the outbox: the second claim is refused
/// with a message that says what to do.
#[tokio::test]
async fn a_second_process_claim_on_a_file_store_is_refused() {
    let (dir, first, second) = claimed_file_store("claim").await;
    first.claim_single_process().await.unwrap(); // the holder may ask again
    let error = second.claim_single_process().await.unwrap_err().to_string();
    assert!(error.contains("another confsync process"), "{error}");
    drop(first);
    drop(second);
    std::fs::remove_dir_all(&dir).ok();
}

/// SQLite's sync leases live in the process holding the store: a pass running there cannot be
/// seen from another process, so another process may not forget a calendar while the holder
/// runs (its admin API can, under the lease); the holder refuses while its pass runs.
#[tokio::test]
async fn another_process_may_not_forget_a_calendar_of_a_claimed_sqlite_store() {
    // `admin` stands for `confsync admin forget` beside a running `serve`.
    let (dir, serve, admin) = claimed_file_store("forget").await;
    serve.ensure_calendar(ALICE).await.unwrap();
    serve.ensure_calendar(TEAM).await.unwrap();
    let now = serve.clock_ms();
    let fence = serve
        .lease_calendar(ALICE, "serve", now, 60_000)
        .await
        .unwrap()
        .expect("free");
    for calendar in [ALICE, TEAM] {
        let error = admin.forget_calendar(calendar, now).await.unwrap_err();
        assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
        assert!(error.to_string().contains("admin API"), "{error}");
    }
    // The holder sees its own pass, and forgets what no pass holds.
    let error = serve.forget_calendar(ALICE, now).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
    serve.forget_calendar(TEAM, now).await.unwrap();
    serve.release_calendar(ALICE, "serve", fence).await.unwrap();
    serve.forget_calendar(ALICE, now).await.unwrap();
    assert!(admin.calendar(ALICE).await.unwrap().is_none());
    drop(serve);
    // Nobody holds the store now: the other process may.
    admin.ensure_calendar(ALICE).await.unwrap();
    admin.forget_calendar(ALICE, now).await.unwrap();
    drop(admin);
    std::fs::remove_dir_all(&dir).ok();
}

/// Postgres: any number of workers share a store (no single-process claim); they divide its
/// work under leases (the tests above).
#[tokio::test]
async fn postgres_stores_are_shared_not_claimed() {
    let Some(url) = confsync_store::testing::postgres_schema_url().await else {
        return;
    };
    let first = Store::open(&url).await.unwrap();
    let second = Store::open(&url).await.unwrap();
    first.claim_single_process().await.unwrap();
    second.claim_single_process().await.unwrap();
    second.ensure_calendar(ALICE).await.unwrap();
    assert_eq!(first.calendars().await.unwrap().len(), 1);
}

/// History past its retention goes; what is still in use stays.
#[tokio::test]
async fn history_past_its_retention_is_pruned() {
    const DAY: i64 = 86_400_000;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let now = 100 * DAY;
        let cutoff = now - 30 * DAY;
        let channel = |id: &str, expiration_ms: i64, created_at: i64| confsync_store::Channel {
            channel_id: id.to_owned(),
            calendar_id: ALICE.to_owned(),
            resource_id: "r".to_owned(),
            token_hash: "h".to_owned(),
            expiration_ms,
            created_at,
            stopped: false,
        };
        store
            .channel_create(&channel("old", cutoff - DAY, cutoff - 8 * DAY))
            .await
            .unwrap();
        store
            .channel_create(&channel("live", now + DAY, now - DAY))
            .await
            .unwrap();
        store
            .channel_create(&channel("stopped", now + DAY, cutoff - DAY))
            .await
            .unwrap();
        store.channel_stop("stopped").await.unwrap();
        let letter = |id: &str| DeadLetter {
            event_id: Some(id.to_owned()),
            reason: "unparseable".into(),
            raw: json!({"id": id}),
        };
        store
            .commit_page(ALICE, &[], &[letter("olde")], None, cutoff - 1)
            .await
            .unwrap();
        store
            .commit_page(ALICE, &[], &[letter("newe")], None, now - 1)
            .await
            .unwrap();
        store
            .oauth_request_put("stale", "sealed", None, now - 2 * 3_600_000, 0, 100)
            .await
            .unwrap();
        store
            .oauth_request_put("fresh", "sealed", None, now - 60_000, 0, 100)
            .await
            .unwrap();

        // Outbox rows: m1's update ran long ago; m2's is still pending (never pruned, however
        // old); m3's link was deleted long ago and its delete ran; m4 was deleted recently.
        for (id, event) in [("m1", "e1"), ("m2", "e2"), ("m3", "e3"), ("m4", "e4")] {
            store
                .commit_latest(
                    ALICE,
                    &[change(
                        link(id, ALICE, event, "Planning"),
                        vec![update("Planning")],
                    )],
                    &[],
                    None,
                    cutoff - 2 * DAY,
                )
                .await
                .unwrap();
        }
        for row in store.due(10, cutoff).await.unwrap() {
            if row.conference_id != "m2" {
                store.complete(row.id, cutoff - DAY).await.unwrap();
            }
        }
        // m1 was renamed since, long ago too: the link keeps what its last update that landed
        // carried (it says what the meeting has), as the rows go.
        queue_update(&store, "m1", "e1", "Renamed", cutoff - DAY).await;
        let renamed = store.due(10, cutoff).await.unwrap();
        assert_eq!(renamed.len(), 2, "m2's and m1's");
        for row in renamed.iter().filter(|r| r.conference_id == "m1") {
            store.complete(row.id, cutoff - DAY + 1).await.unwrap();
        }
        for (id, event, at) in [("m3", "e3", cutoff - DAY), ("m4", "e4", now - DAY)] {
            let mut gone = link(id, ALICE, event, "Planning");
            gone.deleted = true;
            store
                .commit_latest(ALICE, &[change(gone, vec![])], &[], None, at)
                .await
                .unwrap();
        }
        let pruned = store.prune_history(cutoff, now).await.unwrap();
        assert_eq!(
            pruned,
            confsync_store::Pruned {
                oauth_requests: 1,
                channels: 2,
                dead_letters: 1,
                outbox: 4,
                links: 1,
            }
        );
        assert!(store.outbox_of("m1").await.unwrap().is_empty());
        // What m1's last update that landed carried stays on its link.
        assert_eq!(
            store
                .link_record("m1")
                .await
                .unwrap()
                .unwrap()
                .applied_fingerprint,
            Some(spec("Renamed").fingerprint())
        );
        assert_eq!(
            store.outbox_of("m2").await.unwrap()[0].state,
            OutboxState::Pending
        );
        assert!(store.link_record("m3").await.unwrap().is_none());
        assert!(store.link_record("m4").await.unwrap().is_some());
        assert!(
            store.link_record("m1").await.unwrap().is_some(),
            "live links stay"
        );
        // The same intent again after its row was pruned gets a new key, never the first one's.
        queue_update(&store, "m1", "e1", "Planning", now).await;
        let again = store.outbox_of("m1").await.unwrap();
        assert_eq!(
            again[0].idempotency_key,
            format!(
                "{}#{}",
                idempotency_key(ALICE, "e1", &update("Planning")),
                again[0].id
            ),
            "{again:?}"
        );
        assert!(store.channel("live").await.unwrap().is_some());
        assert!(store.channel("old").await.unwrap().is_none());
        assert!(store.channel("stopped").await.unwrap().is_none());
        let letters = store.dead_letters(ALICE).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].event_id.as_deref(), Some("newe"));
        // Again: nothing more.
        assert_eq!(
            store.prune_history(cutoff, now).await.unwrap(),
            confsync_store::Pruned::default()
        );
    }
}

/// A second change of m0 (renamed): its update queues behind m0's first row.
async fn rename_m0(store: &Store, now_ms: i64) {
    queue_update(store, "m0", "e0", "Renamed", now_ms).await;
}

/// Queues one update per conference `m0..m{n}` (each on its own event).
async fn queue_updates(store: &Store, n: usize, now_ms: i64) {
    let changes: Vec<PlannedChange> = (0..n)
        .map(|i| {
            change(
                link(&format!("m{i}"), ALICE, &format!("e{i}"), "Planning"),
                vec![update(&format!("Planning {i}"))],
            )
        })
        .collect();
    store
        .commit_latest(ALICE, &changes, &[], None, now_ms)
        .await
        .unwrap();
}

/// An update queued with the first write of its link is stored without a copy of its spec and
/// reads back whole; once the link's spec changes (with a new update or without one), the rows
/// queued before keep the spec they were queued with.
#[tokio::test]
async fn an_update_stored_with_its_links_spec_keeps_its_own() {
    use confsync_store::testing::execute;
    // Counts (a no-op update) the rows that take their spec from their link.
    const FROM_LINK: &str =
        "UPDATE outbox_actions SET spec_tail = spec_tail WHERE spec_tail IS NOT NULL";
    let actions_of = |entries: Vec<confsync_store::OutboxEntry>| -> Vec<Action> {
        entries.into_iter().map(|e| e.action).collect()
    };
    for store in stores().await {
        eprintln!("on {}", store.backend());
        queue_update(&store, "m1", "e1", "First", 1_000).await;
        queue_update(&store, "m2", "e2", "Other", 1_000).await;
        assert_eq!(execute(&store, FROM_LINK).await, 2, "stored without a copy");
        let batch = store.claim_batch("a", 10, 10, 1_000, 5_000).await.unwrap();
        let claimed: Vec<(&str, &Action)> = batch
            .items
            .iter()
            .map(|i| (i.conference_id.as_str(), &i.action))
            .collect();
        assert_eq!(
            claimed,
            [("m1", &update("First")), ("m2", &update("Other"))]
        );
        // While they run, m1 is renamed again with a new update: a change of a link that
        // exists stores its spec whole, and m1's first row gets its spec back.
        queue_update(&store, "m1", "e1", "Second", 2_000).await;
        assert_eq!(execute(&store, FROM_LINK).await, 1, "m2's row only");
        // m2's link changes with nothing queued: its row gets its spec back too.
        store
            .commit_latest(
                ALICE,
                &[change(link("m2", ALICE, "e2", "Other, moved"), vec![])],
                &[],
                None,
                2_000,
            )
            .await
            .unwrap();
        assert_eq!(execute(&store, FROM_LINK).await, 0);
        assert_eq!(
            actions_of(store.outbox_of("m1").await.unwrap()),
            [update("First"), update("Second")]
        );
        assert_eq!(
            actions_of(store.outbox_of("m2").await.unwrap()),
            [update("Other")]
        );
        for item in &batch.items {
            assert!(store.complete(item, 3_000).await.unwrap());
        }
        let next = store.claim_batch("a", 10, 10, 3_000, 5_000).await.unwrap();
        assert_eq!(next.items.len(), 1);
        assert_eq!(next.items[0].action, update("Second"));
    }
}

/// A stored action this build cannot read (a newer version's, during a rolling upgrade) does
/// not stop the drain: the claim hands out the rows claimed with it and parks that row,
/// pending and uncounted, until a worker that reads it comes; pruning goes past such a row.
#[tokio::test]
async fn an_unreadable_stored_action_is_parked_and_stops_nothing() {
    use confsync_store::testing::execute;
    const UNREADABLE: &str = "UPDATE outbox_actions SET action_json = '{\"kind\":\"teleport\"}' \
         WHERE id IN (SELECT id FROM outbox WHERE conference_id = ";
    for store in stores().await {
        eprintln!("on {}", store.backend());
        queue_updates(&store, 3, 1_000).await;
        assert_eq!(execute(&store, &format!("{UNREADABLE}'m1')")).await, 1);
        let batch = store.claim_batch("a", 10, 10, 1_000, 5_000).await.unwrap();
        let claimed: Vec<&str> = batch
            .items
            .iter()
            .map(|i| i.conference_id.as_str())
            .collect();
        assert_eq!(claimed, ["m0", "m2"], "the readable rows are handed out");
        // The operator's listings leave it out instead of failing.
        let pending: Vec<String> = store
            .actions(OutboxState::Pending, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.conference_id)
            .collect();
        assert_eq!(pending, ["m0", "m2"]);
        assert_eq!(store.outbox_pending(10).await.unwrap().len(), 2);
        assert_eq!(store.outbox_depth().await.unwrap(), 3, "m1 stays pending");
        for item in &batch.items {
            assert!(store.complete(item, 1_000).await.unwrap());
        }
        // Parked by the store's clock (the claim's time).
        let later = store.clock_ms() + confsync_store::PARK_UNREADABLE_MS + 60_000;
        assert!(
            store
                .claim_batch("b", 10, 10, later - 120_000, 5_000)
                .await
                .unwrap()
                .items
                .is_empty(),
            "parked: not claimed again at once"
        );
        // Still unreadable when its time comes: parked again, nothing handed out, no error.
        assert!(
            store
                .claim_batch("b", 10, 10, later, 5_000)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // A worker that reads it (here: the action as this build writes it) runs it, with no
        // attempt counted for the parking.
        let action = serde_json::to_string(&update("Planning 1"))
            .unwrap()
            .replace('\'', "''");
        assert_eq!(
            execute(
                &store,
                &format!(
                    "UPDATE outbox_actions SET action_json = '{action}' \
                     WHERE id IN (SELECT id FROM outbox WHERE conference_id = 'm1')"
                )
            )
            .await,
            1
        );
        let again = store.clock_ms() + 2 * confsync_store::PARK_UNREADABLE_MS + 120_000;
        let batch = store.claim_batch("c", 10, 10, again, 5_000).await.unwrap();
        assert_eq!(batch.items.len(), 1);
        assert_eq!(batch.items[0].conference_id, "m1");
        assert_eq!(batch.items[0].attempts, 0, "parking counts no attempt");
        assert!(store.complete(&batch.items[0], again).await.unwrap());
        // Pruning past a done update whose action does not read: the others go as usual.
        assert_eq!(execute(&store, &format!("{UNREADABLE}'m0')")).await, 1);
        store.prune_history(again + 1, again + 1).await.unwrap();
        assert_eq!(
            store.outbox_rows().await.unwrap(),
            0,
            "every finished row is pruned"
        );
    }
}

#[tokio::test]
async fn a_claim_says_whether_it_took_the_last_rows_due() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let queued = confsync_store::queued_generation();
        queue_updates(&store, 2, 1_000).await;
        assert_ne!(
            confsync_store::queued_generation(),
            queued,
            "queuing is counted"
        );
        rename_m0(&store, 1_000).await;
        // Fewer rows than asked for, but m0's second row waits behind its first: not last.
        let first = store.claim_batch("a", 10, 10, 1_000, 5_000).await.unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(!first.last);
        for item in &first.items {
            assert!(store.complete(item, 1_000).await.unwrap());
        }
        // m0's second row alone, with nothing behind it: last.
        let second = store.claim_batch("a", 10, 10, 1_000, 5_000).await.unwrap();
        assert_eq!(
            second
                .items
                .iter()
                .map(|i| (i.conference_id.as_str(), i.action.clone()))
                .collect::<Vec<_>>(),
            [("m0", update("Renamed"))]
        );
        assert!(second.last);
        assert!(store.complete(&second.items[0], 1_000).await.unwrap());
        // As many rows as asked for: more may be due, not last.
        queue_updates(&store, 3, 2_000).await;
        let full = store.claim_batch("a", 2, 1, 2_000, 5_000).await.unwrap();
        assert_eq!(full.items.len(), 2);
        assert!(!full.last);
        // SQLite reads links in the claim's round trip: those of the first `with_links` rows
        // claimed (in the items' order), and no other.
        if let Some(links) = &full.links {
            let read: Vec<&str> = links.keys().map(String::as_str).collect();
            assert_eq!(
                read,
                [full.items[0].conference_id.as_str()],
                "the link of the first row claimed, not of the second nor of the one left"
            );
            for (id, link) in links {
                assert_eq!(Some(link), store.link(id).await.unwrap().as_ref());
            }
        }
        let rest = store.claim_batch("a", 2, 2, 2_000, 5_000).await.unwrap();
        assert_eq!(rest.items.len(), 1);
        assert!(rest.last);
        // Nothing due: an empty claim is last.
        let none = store.claim_batch("a", 2, 2, 2_000, 5_000).await.unwrap();
        assert!(none.items.is_empty() && none.last);
    }
}

#[tokio::test]
async fn a_claim_is_exclusive_until_it_expires_and_a_late_report_is_refused() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        // Leases are measured by the store's clock.
        let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_000));
        let at = |ms: i64| clock.store(ms, std::sync::atomic::Ordering::SeqCst);
        let store = {
            let clock = clock.clone();
            store.with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst))
        };
        queue_updates(&store, 2, 1_000).await;
        rename_m0(&store, 1_000).await;
        let a = store.claim_due("a", 10, 1_000, 5_000).await.unwrap();
        assert_eq!(
            a.iter()
                .map(|i| i.conference_id.as_str())
                .collect::<Vec<_>>(),
            ["m0", "m1"],
            "each conference's oldest row"
        );
        assert!(a.iter().all(|i| i.fence == 1));
        // Under a's live claims nothing is due for b: not the claimed rows, not m0's second
        // row (its first is still pending), and `due` agrees.
        at(5_999);
        assert!(
            store
                .claim_due("b", 10, 5_999, 5_000)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.due(10, 5_999).await.unwrap().is_empty());
        assert_eq!(store.next_due().await.unwrap(), Some(6_000));
        // a renews one claim; the other expires and b takes it over with a new fence.
        at(5_000);
        assert_eq!(store.renew_claims("a", &[a[1].id], 5_000).await.unwrap(), 1);
        at(6_000);
        let b = store.claim_due("b", 10, 6_000, 5_000).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].id, b[0].fence), (a[0].id, 2));
        // a's late report of the row b holds now is refused and changes nothing; renewing it
        // does not take it back.
        at(6_500);
        assert!(!store.complete(&a[0], 6_500).await.unwrap());
        assert_eq!(store.renew_claims("a", &[a[0].id], 5_000).await.unwrap(), 0);
        assert!(
            !store
                .retry_later(&a[0], 99_000, "late", 6_500)
                .await
                .unwrap()
        );
        assert!(!store.fail(&a[0], "late", 6_500).await.unwrap());
        let row = store.outbox_of("m0").await.unwrap().remove(0);
        assert_eq!((row.state, row.attempts), (OutboxState::Pending, 0));
        // b's report lands; m0's second row becomes due; a's renewed claim on m1 still holds.
        assert!(store.complete(&b[0], 6_500).await.unwrap());
        at(7_000);
        let next = store.claim_due("b", 10, 7_000, 5_000).await.unwrap();
        assert_eq!(
            next.iter()
                .map(|i| (i.conference_id.as_str(), i.action.clone()))
                .collect::<Vec<_>>(),
            [("m0", update("Renamed"))]
        );
        // A report without a fence (admin tools) is not refused.
        assert!(store.supersede(a[1].id).await.unwrap());
        // A retried row's claim ends: it is due again at its not_before, for anyone.
        assert!(
            store
                .retry_later(&next[0], 8_000, "busy", 7_000)
                .await
                .unwrap()
        );
        at(8_000);
        let again = store.claim_due("a", 10, 8_000, 5_000).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1));
    }
}

#[tokio::test]
async fn reports_made_at_once_are_each_answered_as_if_made_alone() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        queue_updates(&store, 40, 1_000).await;
        let rows = store.claim_due("a", 64, 1_000, 60_000).await.unwrap();
        assert_eq!(rows.len(), 40);
        // Every row reported at once (SQLite commits them in a few transactions): row 0 twice
        // (one report lands, the other finds it done); row 1 under a claim that is not its
        // own (refused); row 2 with no fence (admin tools).
        let mut tasks = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let (store, row) = (store.clone(), row.clone());
            tasks.push(tokio::spawn(async move {
                match i {
                    1 => {
                        let forged = confsync_store::Claimed {
                            id: row.id,
                            fence: Some(row.fence + 1),
                        };
                        store.complete(forged, 2_000).await
                    }
                    2 => store.complete(row.id, 2_000).await,
                    _ => store.complete(&row, 2_000).await,
                }
            }));
        }
        let again = {
            let (store, row) = (store.clone(), rows[0].clone());
            tokio::spawn(async move { store.complete(&row, 2_000).await })
        };
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        let again = again.await.unwrap().unwrap();
        assert!(!answers[1], "a report under another claim is refused");
        assert!(
            answers[0] ^ again,
            "one of row 0's two reports lands: {} and {again}",
            answers[0]
        );
        assert!(answers.iter().enumerate().all(|(i, a)| *a || i <= 1));
        for (i, row) in rows.iter().enumerate() {
            let stored = store.outbox_of(&row.conference_id).await.unwrap().remove(0);
            if i == 1 {
                assert_eq!((stored.state, stored.attempts), (OutboxState::Pending, 0));
            } else {
                assert_eq!(
                    (stored.state, stored.attempts),
                    (OutboxState::Done, 1),
                    "row {i}"
                );
            }
        }
    }
}

#[tokio::test]
async fn workers_claiming_at_once_take_every_row_exactly_once() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        queue_updates(&store, 300, 1_000).await;
        let mut tasks = Vec::new();
        for w in 0..6 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due(&format!("w{w}"), 7, 2_000, 60_000)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|i| i.id));
                }
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!((total, all.len()), (300, 300), "claimed once each");
    }
}

#[tokio::test]
async fn a_calendar_is_synced_under_one_lease_at_a_time() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        assert_eq!(
            store
                .lease_calendar(ALICE, "a", 1_000, 5_000)
                .await
                .unwrap(),
            None,
            "unknown calendar"
        );
        store.ensure_calendar(ALICE).await.unwrap();
        let fence = store
            .lease_calendar(ALICE, "a", 1_000, 5_000)
            .await
            .unwrap();
        assert_eq!(fence, Some(1));
        assert_eq!(
            store
                .lease_calendar(ALICE, "b", 2_000, 5_000)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .renew_calendar_leases("a", &[ALICE.to_owned()], 4_000, 5_000)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .lease_calendar(ALICE, "b", 8_999, 5_000)
                .await
                .unwrap(),
            None
        );
        // a stops renewing (it died): b takes over once the lease has run out.
        let b = store
            .lease_calendar(ALICE, "b", 9_000, 5_000)
            .await
            .unwrap();
        assert_eq!(b, Some(2));
        // a's late release does not free b's lease.
        store.release_calendar(ALICE, "a", 1).await.unwrap();
        assert_eq!(
            store
                .lease_calendar(ALICE, "c", 9_500, 5_000)
                .await
                .unwrap(),
            None
        );
        store.release_calendar(ALICE, "b", 2).await.unwrap();
        // The lease answers the calendar's state as it found it, read by the same statement.
        store
            .commit_page(ALICE, &[], &[], Some("token-1"), 9_400)
            .await
            .unwrap();
        store.mark_dirty(ALICE, 9_450).await.unwrap();
        let (fence, state) = store
            .lease_calendar_with_state(ALICE, "c", 9_500, 5_000)
            .await
            .unwrap()
            .expect("free again");
        assert_eq!(fence, 3);
        assert_eq!(Some(state.clone()), store.calendar(ALICE).await.unwrap());
        assert_eq!(state.sync_token.as_deref(), Some("token-1"));
        assert!(state.dirty_gen > 0 && !state.needs_full_sync, "{state:?}");
        assert_eq!(
            store
                .lease_calendar_with_state(ALICE, "d", 9_600, 5_000)
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn a_duty_has_one_holder_and_passes_on_when_it_stops_renewing() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        assert!(store.take_duty("sweep", "a", 1_000, 10_000).await.unwrap());
        assert!(!store.take_duty("sweep", "b", 2_000, 10_000).await.unwrap());
        assert!(
            store
                .take_duty("retention", "b", 2_000, 10_000)
                .await
                .unwrap(),
            "duties are separate"
        );
        assert!(
            store.take_duty("sweep", "a", 9_000, 10_000).await.unwrap(),
            "renewed"
        );
        assert!(!store.take_duty("sweep", "b", 18_999, 10_000).await.unwrap());
        assert!(
            store.take_duty("sweep", "b", 19_000, 10_000).await.unwrap(),
            "taken over"
        );
        assert!(!store.take_duty("sweep", "a", 19_500, 10_000).await.unwrap());
        let duties = store.duties().await.unwrap();
        assert_eq!(
            duties,
            [
                ("retention".to_owned(), "b".to_owned(), 12_000),
                ("sweep".to_owned(), "b".to_owned(), 29_000)
            ]
        );
    }
}

#[tokio::test]
async fn postgres_workers_hear_each_others_outbox_notifications() {
    let Some(url) = confsync_store::testing::postgres_schema_url().await else {
        return;
    };
    let one = Store::open(&url).await.unwrap();
    let two = Store::open(&url).await.unwrap();
    let mut listener = two.listen().await.unwrap().expect("a Postgres listener");
    one.notify_outbox().await;
    let payload = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("notified within 5 s")
        .unwrap();
    assert_eq!(payload, "outbox");
    assert!(
        Store::memory()
            .await
            .unwrap()
            .listen()
            .await
            .unwrap()
            .is_none()
    );
}

/// Postgres: a registered worker that dies (its process, here its runtime, ends and its
/// connections close) loses its claims and calendar leases at once, not when they expire; a
/// live registered worker keeps them.
#[tokio::test]
async fn a_dead_workers_claims_are_taken_over_at_once() {
    let Some(url) = confsync_store::testing::postgres_schema_url().await else {
        return;
    };
    let store = Store::open(&url).await.unwrap();
    queue_updates(&store, 2, 1_000).await;
    store.ensure_calendar(TEAM).await.unwrap();
    store.register_worker("b").await.unwrap();
    // Worker "c" is alive and claims m0 first.
    let c = Store::open(&url).await.unwrap();
    c.register_worker("c").await.unwrap();
    let c_rows = c.claim_due("c", 1, 2_000, 600_000).await.unwrap();
    assert_eq!(c_rows[0].conference_id, "m0");
    // Worker "a" in a runtime of its own, standing for another process: it claims m1.
    let a_url = url.clone();
    let claimed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let a = Store::open(&a_url).await.unwrap();
            a.register_worker("a").await.unwrap();
            let rows = a.claim_due("a", 1, 2_000, 600_000).await.unwrap();
            let lease = a
                .lease_calendar(TEAM, "a", a.clock_ms(), 600_000)
                .await
                .unwrap();
            (rows.len(), lease.is_some())
        })
    })
    .join()
    .unwrap();
    assert_eq!(claimed, (1, true));
    let names =
        |workers: Vec<(String, i64)>| workers.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    // The server ends a's session once it sees the connection closed: moments, not at once.
    let started = std::time::Instant::now();
    let mut live = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        live = names(store.live_workers().await.unwrap());
        live.sort();
        if live == ["b", "c"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(live, ["b", "c"], "a's liveness lock went with its runtime");
    // "a"'s runtime is gone: b takes its row and its calendar lease within moments, though the
    // leases had ten minutes left; c's row stays c's.
    let started = std::time::Instant::now();
    let mut taken = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        taken = store.claim_due("b", 10, 2_000, 600_000).await.unwrap();
        if !taken.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!(
        "a dead worker's claim was taken over {:?} after its death",
        started.elapsed()
    );
    assert_eq!(taken.len(), 1, "the dead worker's row, not the live one's");
    assert_eq!((taken[0].conference_id.as_str(), taken[0].fence), ("m1", 2));
    assert!(
        store
            .lease_calendar(TEAM, "b", store.clock_ms(), 600_000)
            .await
            .unwrap()
            .is_some(),
        "the dead worker's calendar lease is free"
    );
}

/// A completed pass releases its lease and records the triggers it answered in one statement;
/// a trigger that arrived during the pass keeps the calendar dirty; a late finish after the
/// lease passed on leaves the new holder's lease alone.
#[tokio::test]
async fn finishing_a_pass_releases_its_lease_and_says_whether_a_trigger_came_since() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store.ensure_calendar(ALICE).await.unwrap();
        store.mark_dirty(ALICE, 1_000).await.unwrap();
        let answered = store.calendar(ALICE).await.unwrap().unwrap().dirty_gen;
        let fence = store
            .lease_calendar(ALICE, "a", 1_000, 5_000)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !store
                .finish_sync(ALICE, "a", fence, answered)
                .await
                .unwrap()
        );
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(state.dirty_at, None, "clean: nothing came since");
        assert!(
            store
                .lease_calendar(ALICE, "b", 1_001, 5_000)
                .await
                .unwrap()
                .is_some(),
            "released"
        );
        // b's pass hears of a trigger that arrives while it runs.
        let answered = store.calendar(ALICE).await.unwrap().unwrap().dirty_gen;
        store.mark_dirty(ALICE, 2_000).await.unwrap();
        let b = store.calendar(ALICE).await.unwrap().unwrap();
        // a's late finish (its fence is old) does not free b's lease.
        assert!(
            store
                .finish_sync(ALICE, "a", fence, answered)
                .await
                .unwrap()
        );
        assert!(
            store
                .lease_calendar(ALICE, "c", 2_001, 5_000)
                .await
                .unwrap()
                .is_none(),
            "b still holds it"
        );
        assert!(
            store
                .finish_sync(ALICE, "b", fence + 1, answered)
                .await
                .unwrap()
        );
        assert_eq!(
            store.calendar(ALICE).await.unwrap().unwrap().dirty_at,
            b.dirty_at,
            "still dirty for the next pass"
        );
        assert!(
            store
                .lease_calendar(ALICE, "c", 2_002, 5_000)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// `worker` takes ALICE's sync lease at `now_ms` for 5 s: its fence, or None when held.
async fn lease(store: &Store, worker: &str, now_ms: i64) -> Option<i64> {
    store
        .lease_calendar(ALICE, worker, now_ms, 5_000)
        .await
        .unwrap()
}

/// The last page of a pass that ends with it records the pass's end in its own transaction,
/// as `finish_sync` would after it: the lease released, the triggers it answered cleared, and
/// whether one came since. A page that fails stores none of it: the token does not move, the
/// calendar stays dirty and the lease stays its holder's (released by the failed pass itself).
#[tokio::test]
async fn the_last_page_of_a_pass_ends_the_pass_in_its_own_transaction() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        store.ensure_calendar(ALICE).await.unwrap();
        store.mark_dirty(ALICE, 1_000).await.unwrap();
        store
            .sync_failed(ALICE, "earlier failure", Some(1_500), 1_000)
            .await
            .unwrap();
        let answered = store.calendar(ALICE).await.unwrap().unwrap().dirty_gen;
        let fence = lease(&store, "a", 1_000).await.unwrap();
        let end = PassEnd {
            worker: "a",
            fence,
            answered_gen: answered,
        };
        let page = [change(
            link("m1", ALICE, "e1", "Planning"),
            vec![update("Planning")],
        )];
        let still_dirty = store
            .commit_last_page(ALICE, &page, &[], "token-1", &end, 1_100)
            .await
            .unwrap();
        assert!(!still_dirty, "nothing came since");
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(state.sync_token.as_deref(), Some("token-1"));
        assert_eq!(state.dirty_at, None, "the triggers it answered are cleared");
        assert_eq!((state.sync_failures, state.retry_at), (0, None));
        assert_eq!(store.outbox_of("m1").await.unwrap().len(), 1);
        let fence = lease(&store, "b", 1_200)
            .await
            .expect("a's lease went with the page");

        // b's pass: a trigger arrives while it lists.
        let answered = store.calendar(ALICE).await.unwrap().unwrap().dirty_gen;
        store.mark_dirty(ALICE, 1_300).await.unwrap();
        let end = PassEnd {
            worker: "b",
            fence,
            answered_gen: answered,
        };
        // Its page was planned from a link that changed since: nothing of it is stored.
        let read = store.link_record("m1").await.unwrap().unwrap();
        let mut stale = change(link("m1", ALICE, "e1", "Retro"), vec![update("Retro")]);
        stale.base = LinkBase::Version(read.version - 1);
        let error = store
            .commit_last_page(ALICE, &[stale], &[], "token-2", &end, 1_400)
            .await
            .unwrap_err();
        assert!(error.is_stale(), "{error}");
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(state.sync_token.as_deref(), Some("token-1"));
        assert!(state.dirty_at.is_some(), "still dirty");
        assert_eq!(
            store
                .lease_calendar(ALICE, "c", 1_500, 5_000)
                .await
                .unwrap(),
            None,
            "still b's"
        );
        // Planned again, it commits, and says a trigger came since.
        let mut fresh = change(link("m1", ALICE, "e1", "Retro"), vec![update("Retro")]);
        fresh.base = LinkBase::Version(read.version);
        assert!(
            store
                .commit_last_page(ALICE, &[fresh], &[], "token-2", &end, 1_600)
                .await
                .unwrap()
        );
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(state.sync_token.as_deref(), Some("token-2"));
        assert!(state.dirty_at.is_some(), "still dirty for the next pass");
        assert!(lease(&store, "c", 1_700).await.is_some(), "released");
    }
}

/// Postgres: page commits are serialized per conference, event and calendar, not store-wide.
/// A writer holding the store's write lock shared (as every keyed commit does) blocks none of
/// them; one holding it exclusively (as a cross-conference transaction does) blocks them all
/// until it ends. Many workers committing pages at once, some of them on the same conference,
/// lose no action and keep each conference's rows in commit order.
#[tokio::test]
async fn postgres_page_commits_wait_only_for_writes_they_share_a_key_with() {
    let Some(store) = confsync_store::testing::postgres().await else {
        eprintln!("Postgres skipped");
        return;
    };
    let write_lock = confsync_store::testing::write_lock_key(&store).unwrap();
    let mut other = confsync_store::testing::raw_connection(&store)
        .await
        .unwrap();
    let commit = |store: Store, n: usize| async move {
        let calendar = format!("cal{n}@example.com");
        store
            .commit_latest(
                &calendar,
                &[change(
                    link(&format!("conf-{n}"), &calendar, &format!("ev{n}"), "t"),
                    vec![update(&format!("t{n}"))],
                )],
                &[],
                None,
                1_000,
            )
            .await
    };
    let within = std::time::Duration::from_secs(5);
    // Shared holders do not block keyed commits.
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(write_lock)
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::timeout(within, commit(store.clone(), 1))
        .await
        .expect("a keyed commit does not wait for a shared holder")
        .unwrap();
    // A page too big to lock key by key (a full sync's) takes the write lock exclusively.
    let big: Vec<PlannedChange> = (0..70)
        .map(|i| {
            change(
                link(&format!("big-{i}"), TEAM, &format!("bigev{i}"), "t"),
                vec![update("t")],
            )
        })
        .collect();
    let big_commit = {
        let store = store.clone();
        tokio::spawn(async move { store.commit_latest(TEAM, &big, &[], None, 1_000).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !big_commit.is_finished(),
        "141 keys: waits for the shared holder like any exclusive writer"
    );
    sqlx::query("SELECT pg_advisory_unlock_shared($1)")
        .bind(write_lock)
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::timeout(within, big_commit)
        .await
        .expect("the big page commits once the shared holder lets go")
        .unwrap()
        .unwrap();
    // An exclusive holder blocks them until it lets go.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(write_lock)
        .execute(&mut other)
        .await
        .unwrap();
    let waiting = tokio::spawn(commit(store.clone(), 2));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits for the exclusive holder");
    assert!(store.link("conf-2").await.unwrap().is_none());
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(write_lock)
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::timeout(within, waiting)
        .await
        .expect("runs once the exclusive holder lets go")
        .unwrap()
        .unwrap();

    // Eight workers, 20 pages each: their own conference every time, and a shared one
    // (`conf-shared`, queued through enqueue) in between.
    store.ensure_calendar(ALICE).await.unwrap();
    store
        .commit_latest(
            ALICE,
            &[change(link("conf-shared", ALICE, "shared", "s"), vec![])],
            &[],
            None,
            1_000,
        )
        .await
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let calendar = format!("worker{w}@example.com");
            for page in 0..20 {
                let conference = format!("conf-w{w}");
                let title = format!("w{w} p{page}");
                loop {
                    let result = store
                        .commit_latest(
                            &calendar,
                            &[change(
                                link(&conference, &calendar, &format!("ev{w}"), &title),
                                vec![update(&title)],
                            )],
                            &[],
                            Some(&format!("token-{page}")),
                            1_000 + page,
                        )
                        .await;
                    match result {
                        Ok(()) => break,
                        Err(StoreError::Stale { .. }) => continue,
                        Err(e) => panic!("page commit failed: {e}"),
                    }
                }
                store
                    .enqueue(
                        "conf-shared",
                        ALICE,
                        "shared",
                        &[update(&format!("shared by w{w} p{page}"))],
                        0,
                        1_000,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    for w in 0..8 {
        let rows = store.outbox_of(&format!("conf-w{w}")).await.unwrap();
        let titles: Vec<String> = rows
            .iter()
            .map(|r| match &r.action {
                Action::Update { spec, .. } => spec.title.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let expected: Vec<String> = (0..20).map(|p| format!("w{w} p{p}")).collect();
        assert_eq!(titles, expected, "worker {w}'s rows in its commit order");
        let calendar = store
            .calendar(&format!("worker{w}@example.com"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(calendar.sync_token.as_deref(), Some("token-19"));
    }
    let shared = store.outbox_of("conf-shared").await.unwrap();
    assert_eq!(shared.len(), 8 * 20, "every shared action queued once");
    let mut ids: Vec<i64> = shared.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 160);
}

/// Silence is watched from the store: a channel that never heard its `sync` handshake is
/// polled once after the grace; one that usually hears every 30 s is polled once it has been
/// quiet for three gaps (and the floor), once per silence; a quiet channel is not polled before
/// the floor. Whichever worker accepted each message.
#[tokio::test]
async fn quiet_push_channels_are_found_once_per_silence() {
    use confsync_store::Quiet;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let channel = |id: &str| confsync_store::Channel {
            channel_id: id.to_owned(),
            calendar_id: ALICE.to_owned(),
            resource_id: "r".to_owned(),
            token_hash: "h".to_owned(),
            expiration_ms: 10_000_000,
            created_at: 0,
            stopped: false,
        };
        for id in ["mute", "busy"] {
            store.channel_create(&channel(id)).await.unwrap();
        }
        let quiet = |now: i64, floor: i64| {
            let store = store.clone();
            async move {
                let mut found: Vec<(String, Quiet)> = store
                    .channels_gone_quiet(now, 120_000, floor)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(c, q)| (c.channel_id, q))
                    .collect();
                found.sort_by(|a, b| a.0.cmp(&b.0));
                found
            }
        };
        // "busy" hears a message every 30 s from 0 to 270 s (any worker); "mute" nothing.
        for i in 0..10 {
            assert!(
                store
                    .channel_message_accept("busy", i + 1, i * 30_000)
                    .await
                    .unwrap()
            );
        }
        assert!(
            !store
                .channel_message_accept("busy", 3, 300_000)
                .await
                .unwrap(),
            "a replayed number is refused"
        );
        assert_eq!(quiet(100_000, 60_000).await, vec![], "within the grace");
        let last = 9 * 30_000;
        assert_eq!(
            quiet(last + 80_000, 60_000).await,
            vec![("mute".to_owned(), Quiet::NoHandshake)],
            "the handshake is late; busy is within three gaps"
        );
        assert_eq!(
            quiet(last + 100_000, 60_000).await,
            vec![("busy".to_owned(), Quiet::Silent)],
            "busy: quiet for more than three gaps; mute answered already"
        );
        assert_eq!(
            quiet(last + 200_000, 60_000).await,
            vec![],
            "once per silence"
        );
        store
            .channel_message_accept("busy", 11, last + 210_000)
            .await
            .unwrap();
        assert_eq!(quiet(last + 220_000, 60_000).await, vec![], "heard again");
        // A stopped channel is not watched.
        store.channel_stop("busy").await.unwrap();
        assert_eq!(quiet(5_000_000, 60_000).await, vec![]);
        // "slow": two messages a second apart; three gaps are 3 s, but the floor is 600 s.
        let t0 = 6_000_000;
        store.channel_create(&channel("slow")).await.unwrap();
        store.channel_message_accept("slow", 1, t0).await.unwrap();
        store
            .channel_message_accept("slow", 2, t0 + 1_000)
            .await
            .unwrap();
        assert_eq!(quiet(t0 + 300_000, 600_000).await, vec![]);
        assert_eq!(
            quiet(t0 + 602_000, 600_000).await,
            vec![("slow".to_owned(), Quiet::Silent)]
        );
        store.channel_stop("slow").await.unwrap();
    }
}

/// Everything a store holds of some conferences: each link with its version, and each
/// conference's outbox rows (ids aside).
async fn holdings(store: &Store, conferences: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in conferences {
        let record = store.link_record(id).await.unwrap();
        out.push(format!("{id}: {:?}", record.map(|r| (r.link, r.version))));
        for row in store.outbox_of(id).await.unwrap() {
            out.push(format!(
                "  {} {} {:?} {} {:?} not before {}",
                row.calendar_id,
                row.event_id,
                row.action,
                row.idempotency_key,
                row.state,
                row.not_before
            ));
        }
    }
    // What the links' stored ends answer (the full sync's window check).
    for calendar in [ALICE, TEAM] {
        // 2026-12-01 at 11:30 and at 10:30 UTC.
        for after in [1_796_124_600_000_i64, 1_796_121_000_000] {
            let ids = store
                .link_event_ids_ending_after(calendar, after)
                .await
                .unwrap();
            out.push(format!("{calendar} ending after {after}: {ids:?}"));
        }
    }
    out
}

/// A page of changes to different conferences is committed in a few statements for all of them
/// (links, replay checks, key uses, rows): it must store exactly what committing its changes
/// one at a time stores: the same links and versions, the same rows with the same keys (a key
/// planned twice in one page takes two uses, in order), the same replays skipped, the same
/// deletes superseded. Pages of random changes, replays of earlier pages, and reports between
/// them, on both stores alike.
#[tokio::test]
async fn a_page_of_many_conferences_stores_what_its_changes_one_at_a_time_store() {
    let backends: Vec<(Store, Store)> = stores().await.into_iter().zip(stores().await).collect();
    for (paged, single) in backends {
        eprintln!("on {}", paged.backend());
        let conferences: Vec<String> = (0..24).map(|i| format!("m{i}")).collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut deleted = vec![false; conferences.len()];
        let mut moved = vec![false; conferences.len()];
        let mut pages: Vec<Vec<PlannedChange>> = Vec::new();
        for round in 0..14_i64 {
            let now = 1_000 * (round + 1);
            let page: Vec<PlannedChange> = if round > 1 && next(4) == 0 {
                // A replay of an earlier page (a pass redone after a crash).
                pages[next(pages.len() as u64) as usize].clone()
            } else {
                let mut page = Vec::new();
                for (i, id) in conferences.iter().enumerate() {
                    if next(3) == 0 {
                        continue;
                    }
                    let event = format!("e{i}");
                    let title = ["A", "B", "C"][next(3) as usize];
                    let calendar = if moved[i] { TEAM } else { ALICE };
                    let mut l = link(id, calendar, &event, title);
                    // The meeting's end moves now and then (the `ends_at` column follows it).
                    let end = ["2026-12-01T11:00:00Z", "2026-12-01T12:00:00Z"][next(2) as usize];
                    l.spec.end = When::At(end.parse().unwrap());
                    let mut supersede_deletes = false;
                    let actions = if deleted[i] && next(2) == 0 {
                        // The event turned up on the team calendar: its delete is superseded.
                        deleted[i] = false;
                        moved[i] = true;
                        l.calendar_id = TEAM.to_owned();
                        supersede_deletes = true;
                        vec![]
                    } else if !deleted[i] && next(5) == 0 {
                        deleted[i] = true;
                        l.deleted = true;
                        vec![Action::Delete {
                            reason: Change::EventCancelled,
                        }]
                    } else {
                        l.deleted = deleted[i];
                        match next(4) {
                            0 => vec![],
                            1 => vec![update(title)],
                            2 => vec![Action::Verify],
                            _ => vec![
                                update(title),
                                Action::CancelOccurrence {
                                    occurrence: When::At("2026-12-08T10:00:00Z".parse().unwrap()),
                                },
                            ],
                        }
                    };
                    page.push(PlannedChange {
                        link: l,
                        base: LinkBase::New,
                        actions,
                        supersede_deletes,
                        not_before_ms: now + next(3) as i64,
                    });
                }
                page
            };
            let token = format!("t{round}");
            paged
                .commit_latest(ALICE, &page, &[], Some(&token), now)
                .await
                .unwrap();
            for change in &page {
                single
                    .commit_latest(ALICE, std::slice::from_ref(change), &[], None, now)
                    .await
                    .unwrap();
            }
            single
                .commit_latest(ALICE, &[], &[], Some(&token), now)
                .await
                .unwrap();
            // Some rows run in between, on both stores alike (a replay of a page whose rows
            // ran is queued again).
            let due = paged.due(100, now + 10).await.unwrap();
            let due_single = single.due(100, now + 10).await.unwrap();
            let keys = |rows: &[confsync_store::OutboxItem]| -> Vec<String> {
                rows.iter().map(|r| r.idempotency_key.clone()).collect()
            };
            assert_eq!(
                keys(&due),
                keys(&due_single),
                "round {round}: the same rows are due"
            );
            for (a, b) in due.iter().zip(&due_single).filter(|_| next(2) == 0) {
                paged.complete(a.id, now + 20).await.unwrap();
                single.complete(b.id, now + 20).await.unwrap();
            }
            pages.push(page);
            assert_eq!(
                holdings(&paged, &conferences).await,
                holdings(&single, &conferences).await,
                "round {round}: a page stores what its changes store one at a time"
            );
        }
        // The runs above must have met what the batch has to get right.
        let all = holdings(&paged, &conferences).await.join("\n");
        for expected in ["Superseded", "Done", "Verify", "deleted: true"] {
            assert!(
                all.contains(expected),
                "the runs never produced {expected}:\n{all}"
            );
        }
        // ... and an intent planned again for a conference (a fresh key for the same planned
        // key, in a row of its own).
        let mut recurred = false;
        for id in &conferences {
            let planned: Vec<String> = paged
                .outbox_of(id)
                .await
                .unwrap()
                .iter()
                .map(|r| r.idempotency_key.split('#').next().unwrap().to_owned())
                .collect();
            let distinct: std::collections::HashSet<&String> = planned.iter().collect();
            recurred |= distinct.len() < planned.len();
        }
        assert!(recurred, "the runs never planned an intent again:\n{all}");

        // One key planned for two conferences in one page (a replaced conference and its
        // successor on one event): two rows, two keys, in page order.
        let mut old = link("r1", ALICE, "shared", "Old");
        old.deleted = true;
        let page = [
            change(old, vec![Action::Verify]),
            change(link("r2", ALICE, "shared", "New"), vec![Action::Verify]),
        ];
        paged
            .commit_latest(ALICE, &page, &[], None, 100_000)
            .await
            .unwrap();
        let key = idempotency_key(ALICE, "shared", &Action::Verify);
        let (r1, r2) = (
            paged.outbox_of("r1").await.unwrap().remove(0),
            paged.outbox_of("r2").await.unwrap().remove(0),
        );
        assert!(r1.id < r2.id, "in page order");
        assert_eq!(r1.idempotency_key, format!("{key}#{}", r1.id));
        assert_eq!(r2.idempotency_key, format!("{key}#{}", r2.id));

        // One stale link among many: nothing of the page is stored.
        let before = holdings(&paged, &conferences).await;
        let mut page = Vec::new();
        for (i, id) in conferences.iter().enumerate() {
            let stored = paged.link_record(id).await.unwrap().unwrap();
            let mut l = stored.link.clone();
            l.spec.title = "Stale page".into();
            page.push(PlannedChange {
                link: l,
                base: LinkBase::Version(stored.version - i64::from(i == 17)),
                actions: vec![update("Stale page")],
                supersede_deletes: false,
                not_before_ms: 0,
            });
        }
        let error = paged
            .commit_page(ALICE, &page, &[], Some("never"), 200_000)
            .await
            .unwrap_err();
        assert!(error.is_stale(), "{error}");
        assert_eq!(holdings(&paged, &conferences).await, before);
        assert_ne!(
            paged
                .calendar(ALICE)
                .await
                .unwrap()
                .unwrap()
                .sync_token
                .as_deref(),
            Some("never")
        );
    }
}

/// A push message is accepted, with its calendar's trigger, in one step, and only when the
/// channel is live and the message carries its token and resource: nothing is recorded for a
/// forged, stopped, unknown or repeated one. Of concurrent deliveries of one number, exactly
/// one is accepted and records one trigger.
#[tokio::test]
async fn a_push_message_is_accepted_with_its_trigger_in_one_step() {
    use confsync_store::PushMessage;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let channel = |id: &str, calendar: &str, resource: &str| confsync_store::Channel {
            channel_id: id.to_owned(),
            calendar_id: calendar.to_owned(),
            resource_id: resource.to_owned(),
            token_hash: "h".to_owned(),
            expiration_ms: 10_000_000,
            created_at: 0,
            stopped: false,
        };
        store.ensure_calendar(ALICE).await.unwrap();
        store
            .channel_create(&channel("c", ALICE, "r"))
            .await
            .unwrap();
        let push = |channel_id: &'static str, number: i64| PushMessage {
            channel_id,
            resource_id: "r",
            token_hash: "h",
            number,
            now_ms: 1_000 * number,
            record_trigger: true,
        };
        let dirty_gen = || {
            let store = store.clone();
            async move { store.calendar(ALICE).await.unwrap().unwrap().dirty_gen }
        };
        let gen0 = dirty_gen().await;
        let forged = [
            PushMessage {
                token_hash: "x",
                ..push("c", 1)
            },
            PushMessage {
                resource_id: "other",
                ..push("c", 1)
            },
            push("unknown", 1),
        ];
        for message in &forged {
            assert_eq!(
                store.accept_push(message).await.unwrap(),
                None,
                "{message:?}"
            );
        }
        assert_eq!(store.channel_highest_message("c").await.unwrap(), Some(0));
        assert_eq!(
            dirty_gen().await,
            gen0,
            "nothing recorded for a refused message"
        );
        // The `sync` handshake: accepted, no trigger.
        let handshake = PushMessage {
            record_trigger: false,
            ..push("c", 1)
        };
        assert_eq!(
            store.accept_push(&handshake).await.unwrap(),
            Some((ALICE.to_owned(), false))
        );
        assert_eq!(dirty_gen().await, gen0);
        assert_eq!(store.calendar(ALICE).await.unwrap().unwrap().dirty_at, None);
        // An `exists` message: accepted with its trigger.
        assert_eq!(
            store.accept_push(&push("c", 2)).await.unwrap(),
            Some((ALICE.to_owned(), true))
        );
        assert_eq!(dirty_gen().await, gen0 + 1);
        assert_eq!(
            store.calendar(ALICE).await.unwrap().unwrap().dirty_at,
            Some(2_000)
        );
        assert_eq!(
            store.accept_push(&push("c", 2)).await.unwrap(),
            None,
            "a replay"
        );
        assert_eq!(
            store.accept_push(&push("c", 1)).await.unwrap(),
            None,
            "an older one"
        );
        assert_eq!(dirty_gen().await, gen0 + 1, "no trigger for a replay");
        // Concurrent deliveries of one number.
        let tries = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.accept_push(&push("c", 9)).await.unwrap() })
        });
        let mut accepted = 0;
        for t in tries {
            accepted += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(accepted, 1);
        assert_eq!(dirty_gen().await, gen0 + 2);
        // A channel whose watch answer has not come yet has no resource id: any is taken.
        store
            .channel_create(&channel("new", ALICE, ""))
            .await
            .unwrap();
        assert_eq!(
            store.accept_push(&push("new", 1)).await.unwrap(),
            Some((ALICE.to_owned(), true))
        );
        // A stopped channel accepts nothing.
        store.channel_stop("c").await.unwrap();
        assert_eq!(store.accept_push(&push("c", 10)).await.unwrap(), None);
        assert_eq!(store.channel_highest_message("c").await.unwrap(), Some(9));
        assert_eq!(dirty_gen().await, gen0 + 3);
    }
}

/// Many notifications at once (on SQLite they are group-committed): each is answered as if
/// it had been accepted alone, in some order. Of two deliveries of one number exactly one is
/// accepted; a forged one is refused among accepted ones; every accepted `exists` message
/// records its trigger.
#[tokio::test]
async fn concurrent_push_messages_are_each_answered_as_if_alone() {
    use confsync_store::PushMessage;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let calendars: Vec<String> = (0..8).map(|i| format!("cal{i}@example.com")).collect();
        for (i, calendar) in calendars.iter().enumerate() {
            store.ensure_calendar(calendar).await.unwrap();
            store
                .channel_create(&confsync_store::Channel {
                    channel_id: format!("c{i}"),
                    calendar_id: calendar.clone(),
                    resource_id: "r".to_owned(),
                    token_hash: "h".to_owned(),
                    expiration_ms: 10_000_000,
                    created_at: 0,
                    stopped: false,
                })
                .await
                .unwrap();
        }
        // Per channel: numbers 1 to 4 (3 delivered twice), and a forged number 5.
        let mut messages: Vec<(String, i64, &'static str)> = Vec::new();
        for i in 0..calendars.len() {
            for number in [1, 2, 3, 3, 4] {
                messages.push((format!("c{i}"), number, "h"));
            }
            messages.push((format!("c{i}"), 5, "forged"));
        }
        let handles: Vec<_> = messages
            .iter()
            .cloned()
            .map(|(channel_id, number, token_hash)| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .accept_push(&PushMessage {
                            channel_id: &channel_id,
                            resource_id: "r",
                            token_hash,
                            number,
                            now_ms: 1_000,
                            record_trigger: true,
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.unwrap());
        }
        for (i, calendar) in calendars.iter().enumerate() {
            let channel_id = format!("c{i}");
            let accepted: Vec<(i64, bool)> = messages
                .iter()
                .zip(&answers)
                .filter(|((c, _, _), _)| *c == channel_id)
                .filter_map(|((_, number, _), answer)| {
                    answer.as_ref().map(|(cal, recorded)| {
                        assert_eq!(cal, calendar);
                        (*number, *recorded)
                    })
                })
                .collect();
            // Numbers arrive in any order, and one not above the highest accepted is a
            // duplicate: 4 must be accepted, 3 at most once, the forged 5 never.
            assert!(accepted.contains(&(4, true)), "{channel_id}: {accepted:?}");
            assert!(
                accepted.iter().filter(|(n, _)| *n == 3).count() <= 1,
                "{channel_id}: {accepted:?}"
            );
            assert!(
                accepted.iter().all(|(n, recorded)| *n != 5 && *recorded),
                "{channel_id}: {accepted:?}"
            );
            assert_eq!(
                store.channel_highest_message(&channel_id).await.unwrap(),
                Some(4)
            );
            assert_eq!(
                store.calendar(calendar).await.unwrap().unwrap().dirty_gen,
                accepted.len() as i64,
                "{channel_id}: one trigger per accepted message"
            );
        }
    }
}

/// No statement of a sync's or a drain's path is prepared again at each run: SQLite (3.51)
/// re-prepares a statement whose LIMIT is a bare parameter every time it is bound (its planner
/// reads the value), which cost the claim a parse and a plan each time; the store writes
/// `LIMIT CAST($N AS BIGINT)`. A file store, as in production (a writer and readers).
#[tokio::test]
async fn the_statements_of_a_sync_and_a_drain_are_prepared_once() {
    let (dir, store) = file_store("prepared-once").await;
    for round in 0..3_i64 {
        let now = 1_000 * (round + 1);
        // A page of one change, then a page of several.
        queue_update(&store, "single", "e-single", &format!("Title {round}"), now).await;
        queue_updates(&store, 3, now).await;
        let batch = store
            .claim_batch("worker", 10, 10, now, 5_000)
            .await
            .unwrap();
        assert!(!batch.items.is_empty());
        for item in &batch.items {
            store.complete(item, now).await.unwrap();
        }
        store.due(10, now).await.unwrap();
        store.next_due().await.unwrap();
        store.outbox_pending(10).await.unwrap();
        store.outbox_recent(10).await.unwrap();
        store.failures(10).await.unwrap();
    }
    let again: Vec<_> = confsync_store::testing::reprepared_statements(&store)
        .await
        .into_iter()
        .filter(|(sql, _, _)| !sql.contains("_sqlx_migrations"))
        .collect();
    assert!(again.is_empty(), "prepared again: {again:#?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// SQLite's virtual machine steps of one run of the scheduler's poll, with what it answered.
async fn steps_of_poll(store: &Store) -> (i64, Vec<(String, i64)>) {
    use confsync_store::testing::statement_counters;
    statement_counters(store, true).await;
    let waiting = store.calendars_to_sync().await.unwrap();
    let steps = statement_counters(store, true)
        .await
        .iter()
        .filter(|c| c.runs > 0)
        .map(|c| i64::from(c.vm_steps))
        .sum();
    (steps, waiting)
}

/// The scheduler's poll (every 2 s) reads the calendars waiting for a sync, not every
/// calendar: its work is the same with 2,000 more calendars that wait for nothing. (Written as
/// one OR, SQLite walked the whole table at every poll: some 40 ms each with 100,000
/// calendars.)
#[tokio::test]
async fn the_poll_for_waiting_calendars_reads_only_those() {
    use confsync_store::testing::{CalendarFixture, insert_calendars};
    let store = Store::memory().await.unwrap();
    for id in [
        "dirty@example.com",
        "failing@example.com",
        "reauth@example.com",
    ] {
        store.ensure_calendar(id).await.unwrap();
        store.mark_dirty(id, 1_000).await.unwrap();
    }
    store
        .sync_failed("failing@example.com", "500", Some(9_000), 2_000)
        .await
        .unwrap();
    store
        .sync_failed("reauth@example.com", "401", None, 2_000)
        .await
        .unwrap();
    let expected = vec![
        ("dirty@example.com".to_owned(), 1_000),
        ("failing@example.com".to_owned(), 9_000),
    ];
    steps_of_poll(&store).await; // prepared
    let (few, waiting) = steps_of_poll(&store).await;
    assert_eq!(waiting, expected);
    let clean: Vec<CalendarFixture> = (0..2_000)
        .map(|i| CalendarFixture {
            calendar_id: format!("clean{i:04}@example.com"),
            last_sync_at: Some(1_000),
            ..CalendarFixture::default()
        })
        .collect();
    insert_calendars(&store, &clean).await.unwrap();
    let (many, waiting) = steps_of_poll(&store).await;
    assert_eq!(waiting, expected);
    assert!(
        many <= few + few / 2 + 50,
        "the poll's steps grew with calendars waiting for nothing: {few} -> {many}"
    );
}

/// One change synced and drained, as the service does it for a paced change: the calendar's
/// state, the page's links, the page's commit, the claim, the report, the next due time.
async fn sync_and_drain_one(store: &Store, round: i64) {
    let now = 1_000_000 + round;
    store.calendar(ALICE).await.unwrap();
    store
        .page_links(ALICE, &["e-hot".to_owned()], &["hot".to_owned()])
        .await
        .unwrap();
    queue_update(store, "hot", "e-hot", &format!("Title {round}"), now).await;
    let batch = store
        .claim_batch("worker", 256, 16, now, 5_000)
        .await
        .unwrap();
    assert_eq!(batch.items.len(), 1, "round {round}");
    assert!(batch.links.is_some_and(|links| links.contains_key("hot")));
    store.complete(&batch.items[0], now).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), None);
}

/// Virtual machine steps per statement text (summed over the connections that prepared it)
/// of `rounds` syncs and drains of one change.
async fn steps_of_syncs(store: &Store, rounds: std::ops::Range<i64>) -> BTreeMap<String, i64> {
    use confsync_store::testing::statement_counters;
    statement_counters(store, true).await;
    let runs = rounds.end - rounds.start;
    for round in rounds {
        sync_and_drain_one(store, round).await;
    }
    let mut steps = BTreeMap::new();
    for counted in statement_counters(store, true).await {
        if counted.runs > 0 {
            *steps.entry(counted.sql).or_default() += i64::from(counted.vm_steps) / runs;
        }
    }
    steps
}

/// The statements a change's sync and drain run do the same work whatever the history the
/// store keeps: no scan of the outbox's finished rows or of other conferences' links. SQLite
/// chose a walk of the whole outbox for the claim's links (asked for in id order), and a
/// paced sync's CPU grew with the outbox: 0.37 ms of SQLite's time per change with 1,000
/// calendars' history, 0.61 ms with 4,000. Counted in SQLite's virtual machine steps, which
/// a scan of 2,000 rows multiplies and one more b-tree level barely moves.
#[tokio::test]
async fn the_statements_of_a_sync_and_a_drain_do_not_grow_with_history() {
    let (dir, store) = file_store("no-scans").await;
    steps_of_syncs(&store, 0..3).await; // every statement prepared
    let small = steps_of_syncs(&store, 3..8).await;
    // History: 1,000 other conferences, each with two finished actions.
    for wave in 0..2 {
        queue_updates(&store, 1_000, 2_000_000 + wave).await;
        loop {
            let batch = store
                .claim_batch("other", 256, 16, 2_000_000 + wave, 5_000)
                .await
                .unwrap();
            if batch.items.is_empty() {
                break;
            }
            for item in &batch.items {
                store.complete(item, 2_000_000 + wave).await.unwrap();
            }
        }
    }
    let large = steps_of_syncs(&store, 8..13).await;
    assert!(large.len() >= 6, "statements run: {large:#?}");
    let grown: Vec<_> = large
        .iter()
        .filter(|(sql, after)| {
            let before = small.get(*sql).copied().unwrap_or(0);
            **after > before + before / 2 + 50
        })
        .map(|(sql, after)| (sql, small.get(sql).copied().unwrap_or(0), *after))
        .collect();
    assert!(
        grown.is_empty(),
        "steps per run grew with history (statement, before, after): {grown:#?}"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
