//! Operator changes spanning tables: forgetting a calendar, and queueing the moves of meetings
//! to another provider. Every test runs on SQLite and on a fresh Postgres schema.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Change, Link};
use confsync_store::testing::stores;
use confsync_store::{
    Channel, CreateStart, DeadLetter, LinkBase, OutboxState, PlannedChange, ProviderMoves, Store,
    StoreError,
};
use serde_json::json;

const ALICE: &str = "alice@example.com";
const TEAM: &str = "team@group.calendar.google.com";

fn spec_at(title: &str, start: &str, end: &str) -> MeetingSpec {
    MeetingSpec {
        title: title.to_owned(),
        description: String::new(),
        start: When::At(start.parse().unwrap()),
        end: When::At(end.parse().unwrap()),
        time_zone: Some("Europe/Berlin".to_owned()),
        recurrence: Vec::new(),
        attendees: vec!["bob@example.com".to_owned()],
        organizer: Some(ALICE.to_owned()),
    }
}

fn spec(title: &str) -> MeetingSpec {
    spec_at(title, "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z")
}

fn link(conference_id: &str, provider: &str, calendar_id: &str, event_id: &str) -> Link {
    Link {
        conference_id: conference_id.to_owned(),
        provider: provider.to_owned(),
        calendar_id: calendar_id.to_owned(),
        event_id: event_id.to_owned(),
        spec: spec("Planning"),
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

/// Stores the link (based on the version stored now) with its actions.
async fn put(store: &Store, link: Link, actions: Vec<Action>, now_ms: i64) {
    let base = match store.link_record(&link.conference_id).await.unwrap() {
        Some(stored) => LinkBase::Version(stored.version),
        None => LinkBase::New,
    };
    let calendar_id = link.calendar_id.clone();
    store
        .commit_page(
            &calendar_id,
            &[PlannedChange {
                link,
                base,
                actions,
                supersede_deletes: false,
                not_before_ms: 0,
            }],
            &[],
            None,
            now_ms,
        )
        .await
        .unwrap();
}

fn channel(id: &str, calendar_id: &str) -> Channel {
    Channel {
        channel_id: id.to_owned(),
        calendar_id: calendar_id.to_owned(),
        resource_id: format!("r-{id}"),
        token_hash: "h".to_owned(),
        expiration_ms: i64::MAX,
        created_at: 0,
        stopped: false,
    }
}

/// Forgetting removes the calendar's sync state, links, outbox rows, dead letters and channel
/// records, retires its create intents, and touches no other calendar; the calendar is then
/// unknown to triggers, and comes back afresh (new create generation, fresh idempotency keys).
#[tokio::test]
async fn forgetting_a_calendar_removes_it_and_nothing_else() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        put(
            &store,
            link("m1", "local", ALICE, "e1"),
            vec![update("A")],
            1_000,
        )
        .await;
        let mut gone = link("m2", "local", ALICE, "e2");
        put(&store, gone.clone(), vec![], 1_000).await;
        gone.deleted = true;
        put(
            &store,
            gone,
            vec![Action::Delete {
                reason: Change::EventCancelled,
            }],
            1_100,
        )
        .await;
        let delete_row = store.outbox_of("m2").await.unwrap()[0].id;
        assert!(store.complete(delete_row, 1_200).await.unwrap());
        put(
            &store,
            link("m3", "local", TEAM, "t1"),
            vec![update("T")],
            1_000,
        )
        .await;
        store
            .commit_page(
                ALICE,
                &[],
                &[DeadLetter {
                    event_id: Some("bad".into()),
                    reason: "malformed".into(),
                    raw: json!({"id": "bad"}),
                }],
                Some("token-1"),
                1_300,
            )
            .await
            .unwrap();
        store.channel_create(&channel("c1", ALICE)).await.unwrap();
        let mut old = channel("c0", ALICE);
        old.stopped = true;
        store.channel_create(&old).await.unwrap();
        store.channel_create(&channel("c2", TEAM)).await.unwrap();
        let CreateStart::Create { key: first_key } =
            store.begin_create(ALICE, "e9", 1_400).await.unwrap()
        else {
            panic!("no link yet")
        };
        let m1_key = store.outbox_of("m1").await.unwrap()[0]
            .idempotency_key
            .clone();

        let forgotten = store.forget_calendar(ALICE, 2_000).await.unwrap();
        assert_eq!(forgotten.links, 2);
        assert_eq!(
            forgotten.live_links, 1,
            "m1's meeting stays at the provider"
        );
        assert_eq!(forgotten.outbox_rows, 2);
        assert_eq!(forgotten.pending_rows, 1);
        assert_eq!(forgotten.intents, 1);
        assert_eq!(forgotten.dead_letters, 1);
        assert_eq!(
            forgotten
                .live_channels
                .iter()
                .map(|c| c.channel_id.as_str())
                .collect::<Vec<_>>(),
            ["c1"],
            "only live channels need stopping at Google"
        );

        assert_eq!(store.calendar(ALICE).await.unwrap(), None);
        assert_eq!(store.link("m1").await.unwrap(), None);
        assert!(store.outbox_of("m1").await.unwrap().is_empty());
        assert!(store.outbox_of("m2").await.unwrap().is_empty());
        assert_eq!(store.channel("c1").await.unwrap(), None);
        assert!(
            !store.mark_dirty(ALICE, 2_100).await.unwrap(),
            "a trigger for a forgotten calendar is not recorded (the API answers 404)"
        );
        assert!(
            store
                .lease_calendar(ALICE, "w", 2_100, 5_000)
                .await
                .unwrap()
                .is_none(),
            "nobody syncs it"
        );
        assert!(
            store
                .calendars()
                .await
                .unwrap()
                .iter()
                .all(|c| c.calendar_id != ALICE)
        );
        // The other calendar is untouched.
        assert!(store.calendar(TEAM).await.unwrap().is_some());
        assert!(store.link("m3").await.unwrap().is_some());
        assert_eq!(store.outbox_of("m3").await.unwrap().len(), 1);
        assert!(store.channel("c2").await.unwrap().is_some());

        // Forgetting it again: not synced.
        assert!(matches!(
            store.forget_calendar(ALICE, 2_200).await,
            Err(StoreError::NotFound { .. })
        ));

        // The add-on creates on it again: registered afresh, a new create generation (never
        // the earlier create's key), and actions planned again get fresh keys.
        let CreateStart::Create { key } = store.begin_create(ALICE, "e9", 3_000).await.unwrap()
        else {
            panic!("no link yet")
        };
        assert_ne!(key, first_key, "a retired intent's key is never reused");
        let mut again = link("m9", "local", ALICE, "e9");
        again.last_etag_seen = None;
        store.finish_create(&again, 3_100).await.unwrap();
        let state = store
            .calendar(ALICE)
            .await
            .unwrap()
            .expect("registered afresh");
        assert_eq!(state.sync_token, None, "its first pass is a full sync");
        put(
            &store,
            link("m1", "local", ALICE, "e1"),
            vec![update("A")],
            3_200,
        )
        .await;
        let rows = store.outbox_of("m1").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_ne!(rows[0].idempotency_key, m1_key, "a fresh idempotency key");
    }
}

/// A calendar one of whose actions runs at the provider right now (a worker's live claim), or
/// that a worker is syncing, is not forgotten: refused, nothing changed; once reported (or the
/// claim expired), it is.
#[tokio::test]
async fn a_calendar_with_work_in_flight_is_not_forgotten() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let clock = Arc::new(AtomicI64::new(1_000));
        let store = {
            let clock = clock.clone();
            store.with_clock(move || clock.load(Ordering::SeqCst))
        };
        put(
            &store,
            link("m1", "local", ALICE, "e1"),
            vec![update("A")],
            1_000,
        )
        .await;
        put(
            &store,
            link("m2", "local", ALICE, "e2"),
            vec![update("B")],
            1_000,
        )
        .await;
        let claimed = store.claim_due("worker-a", 1, 1_000, 5_000).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let refused = store.forget_calendar(ALICE, 1_500).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict { detail, .. }) if detail.contains("running at the provider")),
            "{refused:?}"
        );
        assert!(store.calendar(ALICE).await.unwrap().is_some());
        assert_eq!(store.outbox_of("m1").await.unwrap().len(), 1);
        assert_eq!(store.outbox_of("m2").await.unwrap().len(), 1);
        // The worker reports: nothing in flight any more.
        assert!(store.complete(&claimed[0], 1_600).await.unwrap());

        // A sync lease held: refused too.
        let fence = store
            .lease_calendar(ALICE, "worker-b", 1_000, 5_000)
            .await
            .unwrap()
            .expect("free");
        assert!(matches!(
            store.forget_calendar(ALICE, 1_700).await,
            Err(StoreError::Conflict { .. })
        ));
        store
            .release_calendar(ALICE, "worker-b", fence)
            .await
            .unwrap();

        // A claim whose holder died is free once it expires.
        let claimed = store.claim_due("worker-c", 10, 1_800, 5_000).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(store.forget_calendar(ALICE, 1_900).await.is_err());
        clock.store(7_000, Ordering::SeqCst);
        let forgotten = store.forget_calendar(ALICE, 7_000).await.unwrap();
        assert_eq!(forgotten.pending_rows, 1);
        // The stalled worker's late report finds no row.
        assert!(store.complete(&claimed[0], 7_100).await.is_err());
    }
}

/// Moves to the current provider are queued once, for live links made by a previous provider
/// whose meeting has not ended and that Calendar has shown; ended meetings, links of another
/// provider not configured, and links never seen stay; counts follow.
#[tokio::test]
async fn moves_to_another_provider_are_queued_once_for_future_meetings() {
    let from = vec!["zoom".to_owned()];
    // 2026-06-01T00:00:00Z
    let now = 1_780_272_000_000_i64;
    for store in stores().await {
        eprintln!("on {}", store.backend());
        // m1: zoom, future, with a pending update (taken over by the move).
        put(
            &store,
            link("m1", "zoom", ALICE, "e1"),
            vec![update("A")],
            1_000,
        )
        .await;
        // m2: zoom, ended.
        let mut past = link("m2", "zoom", ALICE, "e2");
        past.spec = spec_at("Old", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z");
        put(&store, past, vec![], 1_000).await;
        // m3: already on the current provider.
        put(&store, link("m3", "teams", ALICE, "e3"), vec![], 1_000).await;
        // m4: zoom, never seen in Calendar.
        let mut unseen = link("m4", "zoom", ALICE, "e4");
        unseen.last_etag_seen = None;
        put(&store, unseen, vec![], 1_000).await;
        // m5: zoom, deleted.
        let mut deleted = link("m5", "zoom", ALICE, "e5");
        put(&store, deleted.clone(), vec![], 1_000).await;
        deleted.deleted = true;
        put(&store, deleted, vec![], 1_100).await;
        // m6: a provider that is not configured.
        put(&store, link("m6", "webex", ALICE, "e6"), vec![], 1_000).await;
        // m7: a zoom series (no end recorded) on another calendar.
        let mut series = link("m7", "zoom", TEAM, "s1");
        series.spec.recurrence = vec!["RRULE:FREQ=WEEKLY".into()];
        put(&store, series, vec![], 1_000).await;

        let before = store
            .provider_moves("teams", &from, None, now)
            .await
            .unwrap();
        assert_eq!(
            before,
            ProviderMoves {
                to_move: 4,
                not_in_calendar_yet: 1,
                queued: 0,
                moved: 0,
                failed: 0,
                ended: 1,
                unreachable: 1,
            }
        );
        let dry = store
            .provider_moves("teams", &from, Some(TEAM), now)
            .await
            .unwrap();
        assert_eq!(dry.to_move, 1, "one calendar's counts");

        let queued = store
            .queue_provider_moves("teams", &from, None, 1, now)
            .await
            .unwrap();
        assert_eq!(
            queued
                .iter()
                .map(|m| m.conference_id.as_str())
                .collect::<Vec<_>>(),
            ["m1"],
            "the limit holds"
        );
        let queued = store
            .queue_provider_moves("teams", &from, None, 100, now)
            .await
            .unwrap();
        assert_eq!(
            queued
                .iter()
                .map(|m| m.conference_id.as_str())
                .collect::<Vec<_>>(),
            ["m7"]
        );
        assert_eq!(queued[0].provider, "zoom");
        assert!(
            store
                .queue_provider_moves("teams", &from, None, 100, now)
                .await
                .unwrap()
                .is_empty(),
            "a rerun queues nothing already queued"
        );
        let rows: Vec<_> = store
            .outbox_of("m1")
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.action.kind(), r.state))
            .collect();
        assert_eq!(
            rows,
            [
                ("update", OutboxState::Superseded),
                ("recreate", OutboxState::Pending)
            ],
            "the move takes over the pending update (the recreate makes the meeting from the link's spec)"
        );
        let Action::Recreate { spec, provider } = &store.outbox_of("m1").await.unwrap()[1].action
        else {
            panic!()
        };
        assert_eq!(spec, &store.link("m1").await.unwrap().unwrap().spec);
        assert_eq!(
            provider.as_deref(),
            Some("teams"),
            "made by the current provider"
        );

        let during = store
            .provider_moves("teams", &from, None, now)
            .await
            .unwrap();
        assert_eq!((during.to_move, during.queued), (2, 2), "{during:?}");

        // m1's move completes; m7's fails for good (the link stays on zoom).
        let m1_row = store.outbox_of("m1").await.unwrap()[1].id;
        assert!(store.complete(m1_row, 2_000).await.unwrap());
        let m7_row = store.outbox_of("m7").await.unwrap()[0].id;
        assert!(store.fail(m7_row, "provider refused", 2_000).await.unwrap());
        let after = store
            .provider_moves("teams", &from, None, now)
            .await
            .unwrap();
        assert_eq!(
            (after.queued, after.moved, after.failed),
            (0, 1, 1),
            "{after:?}"
        );
        // A rerun queues the failed one again, with a fresh key. (m1's link is still zoom here:
        // no swap ran in this store-only test; the engine test covers the whole path.)
        let again = store
            .queue_provider_moves("teams", &from, Some(TEAM), 100, now)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_ne!(
            store.outbox_of("m7").await.unwrap()[1].idempotency_key,
            store.outbox_of("m7").await.unwrap()[0].idempotency_key,
            "a new attempt gets a fresh key"
        );
        // No previous provider configured: nothing is queued.
        assert!(
            store
                .queue_provider_moves("teams", &[], None, 100, now)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// A create intent's provider is recorded by its first attempt, and every later attempt (on
/// any worker, before or after a move to another provider) gets that one.
#[tokio::test]
async fn a_create_keeps_the_provider_its_first_attempt_used() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let CreateStart::Create { key } = store.begin_create(ALICE, "e1", 1_000).await.unwrap()
        else {
            panic!("no link yet")
        };
        let first = store
            .claim_intent_provider(ALICE, "e1", &key, "zoom")
            .await
            .unwrap();
        assert_eq!(first.as_deref(), Some("zoom"));
        let later = store
            .claim_intent_provider(ALICE, "e1", &key, "teams")
            .await
            .unwrap();
        assert_eq!(
            later.as_deref(),
            Some("zoom"),
            "the first attempt's provider"
        );
        let stale = store.stale_intents(2_000, 10).await.unwrap();
        assert_eq!(stale[0].provider.as_deref(), Some("zoom"));
        assert_eq!(
            store
                .claim_intent_provider(ALICE, "e2", "create:x:e2:1", "teams")
                .await
                .unwrap(),
            None,
            "no such intent"
        );
        assert_eq!(
            store
                .claim_intent_provider(ALICE, "e1", "not-a-key", "teams")
                .await
                .unwrap(),
            None
        );
    }
}
