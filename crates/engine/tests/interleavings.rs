//! Interleavings the step-by-step simulation cannot show, each pinned as a regression test: a
//! sync commits while an executor step is between reading a link and writing after its network
//! calls, and a create whose answer is lost is retried. Each runs on the in-memory SQLite store
//! and on a fresh Postgres store (skipped where Postgres is unreachable and not required, see
//! `confsync_store::testing`).

use std::collections::BTreeMap;
use std::sync::Arc;

use confsync_core::model::{MeetingSpec, Snapshot};
use confsync_core::plan::{Capabilities, Link};
use confsync_emulator::store::{WriteKind, WriteOptions};
use confsync_emulator::{Emulator, EmulatorConfig, Shared};
use confsync_engine::calendar::emulated::EmulatorCalendar;
use confsync_engine::create::Created;
use confsync_engine::{Engine, EngineConfig};
use confsync_providers::memory::MemoryProvider;
use confsync_providers::{BoxFuture, ConferenceProvider, Meeting, ProviderError};
use confsync_store::{LinkBase, OutboxState, PlannedChange, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

const ALICE: &str = "alice@example.com";
const NOW: i64 = 1_800_000_000_000;

/// The memory provider, with an update that can be held after it took effect (the call landed
/// at the provider, the engine has not seen the answer yet), and creates whose answer can be
/// lost (the meeting is made, the caller gets a timeout).
struct Held {
    inner: MemoryProvider,
    hold_updates: std::sync::atomic::AtomicBool,
    entered: Notify,
    gate: Semaphore,
    lose_create_answers: std::sync::atomic::AtomicU32,
}

impl ConferenceProvider for Held {
    fn name(&self) -> &str {
        "held"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            let made = self.inner.create(spec, key).await?;
            let lose = &self.lose_create_answers;
            if lose.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                lose.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                return Err(ProviderError::Transient {
                    provider: "held".into(),
                    detail: "timed out waiting for the answer".into(),
                    retry_after: None,
                });
            }
            Ok(made)
        })
    }
    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let result = self.inner.update(meeting_id, spec, key).await;
            if self.hold_updates.load(std::sync::atomic::Ordering::SeqCst) {
                self.entered.notify_one();
                self.gate.acquire().await.unwrap().forget();
            }
            result
        })
    }
    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: confsync_core::model::When,
        start: confsync_core::model::When,
        end: confsync_core::model::When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner
            .update_occurrence(meeting_id, occurrence, start, end, title, key)
    }
    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: confsync_core::model::When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.cancel_occurrence(meeting_id, occurrence, key)
    }
    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.delete(meeting_id, key)
    }
}

struct World {
    shared: Arc<Shared>,
    engine: Engine,
    provider: Arc<Held>,
}

impl World {
    /// A world on the in-memory SQLite store, or on a fresh Postgres one (None when Postgres
    /// is skipped, see `confsync_store::testing`).
    async fn new(postgres: bool) -> Option<World> {
        World::with_delete_grace(postgres, 0).await
    }

    /// [`World::new`] whose deletes wait `delete_grace_ms` after their event's cancellation.
    async fn with_delete_grace(postgres: bool, delete_grace_ms: i64) -> Option<World> {
        let store = if postgres {
            confsync_store::testing::postgres().await?
        } else {
            Store::memory().await.unwrap()
        };
        let emulator = Emulator::new(EmulatorConfig {
            sync_token_max_age: None,
            ..EmulatorConfig::default()
        });
        let shared = emulator.shared().clone();
        shared.world().ensure_user(ALICE, Some("Alice")).unwrap();
        let provider = Arc::new(Held {
            inner: MemoryProvider::new("held", Capabilities::ALL),
            hold_updates: Default::default(),
            entered: Notify::new(),
            gate: Semaphore::new(0),
            lose_create_answers: Default::default(),
        });
        let calendar = Arc::new(EmulatorCalendar::new(shared.clone(), None));
        let config = EngineConfig {
            full_sync_window: None,
            delete_grace_ms,
            ..EngineConfig::default()
        };
        let engine = Engine::new(store, calendar, provider.clone(), config);
        Some(World {
            shared,
            engine,
            provider,
        })
    }

    fn write(&self, id: &str, body: Value) -> Value {
        let now = self.shared.clock.now();
        let mut world = self.shared.world();
        let options = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        let json = world
            .write_event(now, ALICE, id, body, WriteKind::Patch, &options)
            .unwrap();
        serde_json::from_str(&json).unwrap()
    }

    /// An event with a meeting of ours, linked and synced once.
    async fn event_with_meeting(&self) -> (String, String) {
        let meeting = self
            .provider
            .inner
            .create(
                &confsync_engine::create::placeholder(NOW),
                &format!("seed-{}", self.provider.inner.meetings().len()),
            )
            .await
            .unwrap();
        let body = json!({
            "summary": "Planning",
            "start": {"dateTime": "2027-03-01T09:00:00Z"},
            "end": {"dateTime": "2027-03-01T10:00:00Z"},
            "conferenceData": confsync_engine::conference::fresh(
                &self.engine.config.recognizer, &meeting.meeting_id, &meeting.join_url),
        });
        let now = self.shared.clock.now();
        let created: Value = {
            let mut world = self.shared.world();
            let options = WriteOptions {
                conference_data_version: 1,
                if_match: None,
            };
            let json = world
                .insert_event(now, ALICE, body, WriteKind::Insert, &options)
                .unwrap();
            serde_json::from_str(&json).unwrap()
        };
        let spec = Snapshot::from_json(&created).unwrap().spec.unwrap();
        let link = Link {
            conference_id: meeting.meeting_id.clone(),
            provider: "held".into(),
            calendar_id: ALICE.into(),
            event_id: created["id"].as_str().unwrap().into(),
            spec,
            last_etag_seen: None,
            last_etag_written: None,
            occurrences: BTreeMap::new(),
            deleted: false,
            join_url: Some(meeting.join_url.clone()),
        };
        let change = PlannedChange {
            link,
            base: LinkBase::New,
            actions: vec![],
            supersede_deletes: false,
            not_before_ms: NOW,
        };
        self.engine
            .store
            .commit_page(ALICE, &[change], &[], None, NOW)
            .await
            .unwrap();
        self.engine.sync(ALICE, false, NOW).await.unwrap();
        self.engine.drain(NOW).await.unwrap();
        (
            created["id"].as_str().unwrap().to_owned(),
            meeting.meeting_id,
        )
    }
}

/// Defect: the executor read a link, called the provider, then wrote the whole link back to
/// queue a write-back of the new join link; a sync that marked the link deleted in between (the
/// event was cancelled) was reverted, its delete then found a live link and was superseded, and
/// the meeting outlived its cancelled event.
#[tokio::test(flavor = "current_thread")]
async fn a_cancellation_synced_during_an_update_still_deletes_the_meeting() {
    for postgres in [false, true] {
        let Some(w) = World::new(postgres).await else {
            continue;
        };
        let (event_id, meeting_id) = w.event_with_meeting().await;
        // The user renames the event; the update will come back with a new join link.
        w.write(&event_id, json!({"summary": "Planning (renamed)"}));
        w.engine.sync(ALICE, false, NOW).await.unwrap();
        w.provider.inner.rotate_join_url_next(1);
        w.provider
            .hold_updates
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let drain = w.engine.drain(NOW);
        let meanwhile = async {
            // The update landed at the provider; before the executor sees the answer, the user
            // cancels the event and a sync marks the link deleted.
            w.provider.entered.notified().await;
            w.write(&event_id, json!({"status": "cancelled"}));
            w.engine.sync(ALICE, false, NOW).await.unwrap();
            w.provider.gate.add_permits(1);
        };
        let (drained, ()) = tokio::join!(drain, meanwhile);
        drained.unwrap();
        w.provider
            .hold_updates
            .store(false, std::sync::atomic::Ordering::SeqCst);
        w.engine.drain(NOW + 1).await.unwrap();
        let link = w.engine.store.link(&meeting_id).await.unwrap().unwrap();
        assert!(link.deleted, "the sync's deletion stands: {link:?}");
        let meeting = &w.provider.inner.meetings()[&meeting_id];
        assert!(
            meeting.deleted,
            "the meeting of a cancelled event is deleted; outbox: {:?}",
            w.engine.store.outbox_of(&meeting_id).await.unwrap()
        );
    }
}

/// Defect: an update planned before its event was cancelled (or lost our conference) still
/// went to the provider, for a meeting about to be deleted (simulation seed 12428, where the
/// meeting happened to have that spec already). Now it is dropped, and the link marked: when
/// the event comes back before the delete runs, the spec the dropped update carried is sent.
#[tokio::test(flavor = "current_thread")]
async fn an_update_of_a_cancelled_event_is_dropped_and_sent_if_the_event_comes_back() {
    for postgres in [false, true] {
        let Some(w) = World::with_delete_grace(postgres, 3_600_000).await else {
            continue;
        };
        let (event_id, meeting_id) = w.event_with_meeting().await;
        let title = |w: &World| w.provider.inner.meetings()[&meeting_id].spec.title.clone();
        let made = title(&w); // the add-on's placeholder, as the meeting was made
        w.write(&event_id, json!({"summary": "Planning (renamed)"}));
        w.engine.sync(ALICE, false, NOW).await.unwrap();
        w.write(&event_id, json!({"status": "cancelled"}));
        w.engine.sync(ALICE, false, NOW).await.unwrap();
        let calls = w.provider.inner.calls().len();
        let drained = w.engine.drain(NOW).await.unwrap();
        assert_eq!(
            (w.provider.inner.calls().len(), drained.superseded),
            (calls, 1),
            "the update of the cancelled event is not sent: {drained:?}"
        );
        assert_eq!(title(&w), made);
        // The user restores the event before the delete's grace period is over.
        w.write(&event_id, json!({"status": "confirmed"}));
        w.engine.sync(ALICE, false, NOW + 1_000).await.unwrap();
        w.engine.drain(NOW + 7_200_000).await.unwrap();
        let meeting = &w.provider.inner.meetings()[&meeting_id];
        assert!(!meeting.deleted, "the restored event keeps its meeting");
        assert_eq!(
            meeting.spec.title,
            "Planning (renamed)",
            "the dropped update's spec is sent once the event is back; outbox: {:?}",
            w.engine.store.outbox_of(&meeting_id).await.unwrap()
        );
        let link = w.engine.store.link(&meeting_id).await.unwrap().unwrap();
        assert!(!link.deleted, "{link:?}");
    }
}

/// A batch's successes are reported together, once every row of the batch has made its call
/// (their reports then share one transaction): a success waits for a slower call, without
/// holding its window slot, and is reported with it.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_reports_its_successes_once_its_calls_are_made() {
    for postgres in [false, true] {
        let Some(w) = World::new(postgres).await else {
            continue;
        };
        let (first, one) = w.event_with_meeting().await;
        let (second, two) = w.event_with_meeting().await;
        w.write(&first, json!({"summary": "One"}));
        w.write(&second, json!({"summary": "Two"}));
        w.engine.sync(ALICE, false, NOW).await.unwrap();
        let calls = w.provider.inner.calls().len();
        w.provider
            .hold_updates
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let states = |w: &World| {
            let store = w.engine.store.clone();
            let (one, two) = (one.clone(), two.clone());
            async move {
                let mut states = Vec::new();
                for conference_id in [one, two] {
                    let rows = store.outbox_of(&conference_id).await.unwrap();
                    states.push(rows.last().unwrap().state);
                }
                states
            }
        };
        let drain = w.engine.drain(NOW);
        let meanwhile = async {
            // Both updates landed at the provider and wait for their answers.
            while w.provider.inner.calls().len() < calls + 2 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            // One answer comes; the other call is still out.
            w.provider.gate.add_permits(1);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert_eq!(
                states(&w).await,
                [OutboxState::Pending, OutboxState::Pending],
                "the answered success waits for the batch's other call"
            );
            w.provider.gate.add_permits(1);
        };
        let (drained, ()) = tokio::join!(drain, meanwhile);
        let drained = drained.unwrap();
        assert_eq!(drained.done, 2, "{drained:?}");
        assert_eq!(states(&w).await, [OutboxState::Done, OutboxState::Done]);
    }
}

/// Defect: a create whose provider answer was lost, retried by the add-on with a fresh request
/// id, made a second meeting; the first stayed forever in the host's account.
#[tokio::test(flavor = "current_thread")]
async fn a_create_retried_after_a_lost_answer_adopts_the_first_meeting() {
    for postgres in [false, true] {
        let Some(w) = World::new(postgres).await else {
            continue;
        };
        w.provider
            .lose_create_answers
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let spec = confsync_engine::create::placeholder(NOW);
        let first = w.engine.create_conference(ALICE, "evt1", &spec, NOW).await;
        assert!(first.is_err(), "the answer was lost: {first:?}");
        let second = w
            .engine
            .create_conference(ALICE, "evt1", &spec, NOW + 1_000)
            .await
            .unwrap();
        let third = w
            .engine
            .create_conference(ALICE, "evt1", &spec, NOW + 2_000)
            .await
            .unwrap();
        assert!(matches!(second, Created::New(_)), "{second:?}");
        assert!(matches!(third, Created::Existing(_)), "{third:?}");
        assert_eq!(second.link().conference_id, third.link().conference_id);
        let live: Vec<_> = w
            .provider
            .inner
            .meetings()
            .into_iter()
            .filter(|(_, m)| !m.deleted)
            .collect();
        assert_eq!(live.len(), 1, "one meeting for one event: {live:?}");
    }
}

/// A create whose meeting never shows up in its event (the user closed the event without
/// saving it) is cleaned up after the grace period: the meeting is deleted through the outbox.
/// One that shows up is left alone.
#[tokio::test(flavor = "current_thread")]
async fn an_abandoned_create_is_deleted_after_the_grace_period() {
    for postgres in [false, true] {
        let Some(w) = World::new(postgres).await else {
            continue;
        };
        let spec = confsync_engine::create::placeholder(NOW);
        // Never saved into an event.
        let abandoned = w
            .engine
            .create_conference(ALICE, "never-saved", &spec, NOW)
            .await
            .unwrap();
        // Lost answer, never retried: the intent is still "creating".
        w.provider
            .lose_create_answers
            .store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(
            w.engine
                .create_conference(ALICE, "lost", &spec, NOW)
                .await
                .is_err()
        );
        // Saved: an event that shows its conference.
        let (kept_event, kept) = w.event_with_meeting().await;
        let grace = w.engine.config.intent_grace_ms;
        assert_eq!(
            w.engine.clean_up_intents(NOW + 1_000).await.unwrap(),
            0,
            "not before the grace period"
        );
        let closed = w.engine.clean_up_intents(NOW + grace + 1).await.unwrap();
        assert_eq!(closed, 2);
        w.engine.drain(NOW + grace + 2).await.unwrap();
        let meetings = w.provider.inner.meetings();
        assert!(meetings[&abandoned.link().conference_id].deleted);
        let lost: Vec<_> = meetings
            .iter()
            .filter(|(id, m)| !m.deleted && **id != kept)
            .collect();
        assert!(
            lost.is_empty(),
            "the lost create's meeting is found by its key and deleted: {lost:?}"
        );
        assert!(!meetings[&kept].deleted, "event {kept_event} shows it");
        // A new create for the abandoned event makes a new meeting (a new generation).
        let again = w
            .engine
            .create_conference(ALICE, "never-saved", &spec, NOW + grace + 3)
            .await
            .unwrap();
        assert!(matches!(again, Created::New(_)));
        assert_ne!(again.link().conference_id, abandoned.link().conference_id);
    }
}

/// Defect (simulation seeds 2307 and 2427): a recreate pointed the event at its new meeting,
/// and the event moved to another calendar before the recreate swapped the links. The sync of
/// that calendar found a conference of ours no link named and adopted it, stamping the
/// deployment's current provider on a meeting the previous provider had made: the adoption's
/// update failed for good ("meeting not found") and the meeting kept the event's old title.
/// The recreate records the new meeting before the PATCH, and the sync plans the event against
/// the link being recreated, which moves with its event.
#[tokio::test(flavor = "current_thread")]
async fn an_event_moved_between_a_recreates_patch_and_its_swap_stays_the_recreates() {
    const BOB: &str = "bob@example.com";
    for postgres in [false, true] {
        let Some(w) = World::new(postgres).await else {
            continue;
        };
        w.shared.world().ensure_user(BOB, Some("Bob")).unwrap();
        let (event_id, old_id) = w.event_with_meeting().await;
        // The deployment moved to another provider; the link's meeting is the previous one's.
        let current = Arc::new(MemoryProvider::new("current", Capabilities::ALL));
        let calendar = Arc::new(EmulatorCalendar::new(w.shared.clone(), None));
        let engine = Engine::new(
            w.engine.store.clone(),
            calendar,
            current.clone(),
            w.engine.config.clone(),
        )
        .with_previous_providers([w.provider.clone() as Arc<dyn ConferenceProvider>]);
        engine.sync(BOB, false, NOW).await.unwrap();
        // The previous provider refused an update in place: a recreate by it is queued.
        let spec = engine.store.link(&old_id).await.unwrap().unwrap().spec;
        let recreate = confsync_core::plan::Action::Recreate {
            spec: spec.clone(),
            provider: Some("held".into()),
        };
        engine
            .store
            .enqueue(&old_id, ALICE, &event_id, &[recreate], NOW, NOW)
            .await
            .unwrap();
        let row = engine.store.due(10, NOW).await.unwrap().remove(0);
        // Its first run made the meeting, recorded it and pointed the event at it, then
        // stopped before the swap (a crash, or a lost answer).
        let made = w
            .provider
            .inner
            .create(&spec, &row.idempotency_key)
            .await
            .unwrap();
        engine
            .store
            .record_recreate_target(row.id, &made.meeting_id)
            .await
            .unwrap();
        let event = w.write(&event_id, json!({}));
        w.write(
            &event_id,
            json!({"conferenceData": confsync_engine::conference::repointed(
                &engine.config.recognizer,
                event.get("conferenceData"),
                &made.meeting_id,
                &made.join_url,
            )}),
        );
        // The user renames the event and moves it to Bob's calendar; both calendars sync.
        w.write(&event_id, json!({"summary": "Planning (moved)"}));
        {
            let now = w.shared.clock.now();
            w.shared
                .world()
                .move_event(now, ALICE, &event_id, BOB)
                .unwrap();
        }
        engine.sync(BOB, false, NOW + 1).await.unwrap();
        engine.sync(ALICE, false, NOW + 1).await.unwrap();
        assert_eq!(
            engine.store.link(&made.meeting_id).await.unwrap(),
            None,
            "the new meeting is not adopted as a stranger before the swap"
        );
        let moved = engine.store.link(&old_id).await.unwrap().unwrap();
        assert_eq!((moved.calendar_id.as_str(), moved.deleted), (BOB, false));
        // The recreate runs again: the same meeting, the swap, the old meeting's delete.
        engine.drain(NOW + 2).await.unwrap();
        engine.drain(NOW + 3).await.unwrap();
        let link = engine.store.link(&made.meeting_id).await.unwrap().unwrap();
        assert_eq!(
            (
                link.provider.as_str(),
                link.calendar_id.as_str(),
                link.deleted
            ),
            ("held", BOB, false),
            "{link:?}"
        );
        let meetings = w.provider.inner.meetings();
        assert_eq!(meetings[&made.meeting_id].spec.title, "Planning (moved)");
        assert!(!meetings[&made.meeting_id].deleted);
        assert!(meetings[&old_id].deleted, "the old meeting is deleted");
        assert!(current.meetings().is_empty(), "{:?}", current.calls());
        for id in [&old_id, &made.meeting_id] {
            for row in engine.store.outbox_of(id).await.unwrap() {
                assert_ne!(row.state, confsync_store::OutboxState::Failed, "{row:?}");
            }
        }
    }
}
