//! The engine end to end over real HTTP: the production calendar (`GoogleCalendar` on
//! `confsync-gcal`'s client) against a spawned Calendar v3 emulator, the SQLite store in memory
//! and the built-in local provider. Conferences are made the way the add-on makes them: the
//! provider creates the meeting, the event is inserted with add-on conference data carrying the
//! meeting id, and the link is registered in the store. Each test then changes the event through
//! the emulator's HTTP API, runs `Engine::sync` + `Engine::drain`, and checks the local meeting.
//! The recreate tests use the in-memory provider instead (it can refuse a change in place) and
//! a calendar wrapper that edits the event or "crashes" at the moment of the engine's write.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use confsync_core::model::{MeetingSpec, Snapshot, When};
use confsync_core::plan::{Capabilities, Link};
use confsync_core::session::{ListRequest, Page};
use confsync_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{
    CalendarApi, CalendarError, DrainSummary, Engine, EngineConfig, SyncSummary,
};
use confsync_gcal::{ApiMethod, Client, Jitter, RetryPolicy, StaticToken, encode_segment};
use confsync_providers::BoxFuture;
use confsync_providers::local::{LocalProvider, Occurrences};
use confsync_providers::memory::MemoryProvider;
use confsync_store::{Meeting, PlannedChange, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// 10:00 UTC, `days` from today: inside the engine's 30-day full-sync window when not too far
/// in the past, and whole seconds (instance ids and occurrence keys are per second).
fn day_at_ten(days: i64) -> DateTime<Utc> {
    let today = Utc::now().date_naive();
    today
        .and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap())
        .and_utc()
        + chrono::Duration::days(days)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A plain event body: `minutes` long from `start`.
fn event_body(summary: &str, start: DateTime<Utc>, minutes: i64) -> Value {
    json!({
        "summary": summary,
        "description": "Agenda",
        "start": {"dateTime": rfc3339(start), "timeZone": "UTC"},
        "end": {"dateTime": rfc3339(start + chrono::Duration::minutes(minutes)), "timeZone": "UTC"},
    })
}

/// A calendar client that retries fast (small base delays, reproducible jitter).
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(50),
        jitter: Jitter::Seeded(7),
        ..RetryPolicy::default()
    }
}

struct Harness {
    _emulator: RunningEmulator,
    base: String,
    http: reqwest::Client,
    /// A clone of the engine's client (clones share request counters).
    client: Client,
    store: Store,
    engine: Engine,
    creates: AtomicU32,
}

impl Harness {
    async fn start() -> Harness {
        let emulator = Emulator::new(EmulatorConfig::default())
            .spawn("127.0.0.1:0")
            .await
            .expect("the emulator starts");
        let base = emulator.base_url().to_owned();
        let http = reqwest::Client::new();
        let client = Client::new(
            &base,
            Arc::new(StaticToken(format!("dev:{ALICE}"))),
            fast_retry(),
        )
        .expect("a client for the emulator");
        let store = Store::memory().await.expect("an in-memory store");
        let provider = Arc::new(LocalProvider::new(store.clone(), "http://127.0.0.1:9/"));
        let engine = Engine::new(
            store.clone(),
            Arc::new(GoogleCalendar {
                client: client.clone(),
            }),
            provider.clone(),
            EngineConfig::default(),
        );
        let h = Harness {
            _emulator: emulator,
            base,
            http,
            client,
            store,
            engine,
            creates: AtomicU32::new(0),
        };
        // Bob must exist before Alice invites him, or he gets no copy of her events.
        for user in [ALICE, BOB] {
            h.admin(Method::POST, "users", json!({"email": user})).await;
        }
        h
    }

    /// A Calendar v3 call as `user`; the status and the JSON body (Null when empty).
    async fn api(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}calendar/v3/{path}", self.base);
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(format!("dev:{user}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the emulator answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    /// A Calendar v3 call that must succeed.
    async fn ok(&self, user: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.api(user, method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} {path} as {user}: {status} {value}"
        );
        value
    }

    /// An emulator admin call that must succeed.
    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method.clone(), format!("{}emulator/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} emulator/{path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn event_path(calendar_id: &str, event_id: &str) -> String {
        format!(
            "calendars/{}/events/{}",
            encode_segment(calendar_id),
            encode_segment(event_id)
        )
    }

    /// A secondary calendar of Alice's; its id.
    async fn secondary_calendar(&self, summary: &str) -> String {
        let made = self
            .admin(
                Method::POST,
                &format!("users/{ALICE}/calendars"),
                json!({"summary": summary, "timeZone": "UTC"}),
            )
            .await;
        made["id"].as_str().expect("a calendar id").to_owned()
    }

    /// Inserts an event without conference (or with whatever `body` says) as Alice.
    async fn insert(&self, calendar_id: &str, body: Value) -> Value {
        self.ok(
            ALICE,
            Method::POST,
            &format!(
                "calendars/{}/events?conferenceDataVersion=1",
                encode_segment(calendar_id)
            ),
            Some(body),
        )
        .await
    }

    /// The add-on's first steps: create the meeting from the event being drafted and insert the
    /// event with our conference data (no link registered). Returns the created event, the
    /// meeting id and the spec the meeting was made with.
    async fn event_with_our_meeting(
        &self,
        calendar_id: &str,
        mut body: Value,
    ) -> (Value, String, MeetingSpec) {
        // The drafted event as Calendar will describe it (the calendar is the organizer).
        let mut draft = body.clone();
        draft["id"] = json!("draft");
        draft["organizer"] = json!({"email": calendar_id, "self": true});
        let spec = Snapshot::from_json(&draft)
            .expect("a well-formed draft")
            .spec
            .expect("a live draft has a spec");
        let n = self.creates.fetch_add(1, Ordering::Relaxed);
        let meeting = self
            .engine
            .provider
            .create(&spec, &format!("create-{n}"))
            .await
            .expect("the provider creates the meeting");
        body["conferenceData"] = json!({
            "conferenceId": meeting.meeting_id,
            "conferenceSolution": {"key": {"type": "addOn"}, "name": "confsync"},
            "entryPoints": [{"entryPointType": "video", "uri": meeting.join_url}],
            "parameters": {"addOnParameters": {"parameters": {"confsyncConferenceId": meeting.meeting_id}}},
        });
        (
            self.insert(calendar_id, body).await,
            meeting.meeting_id,
            spec,
        )
    }

    /// What the add-on does: [`Harness::event_with_our_meeting`], then register the link.
    /// Returns the created event and meeting id.
    async fn conferenced_event(&self, calendar_id: &str, body: Value) -> (Value, String) {
        let (created, meeting_id, spec) = self.event_with_our_meeting(calendar_id, body).await;
        let snapshot = Snapshot::from_json(&created).expect("the emulator's event parses");
        let link = Link {
            conference_id: meeting_id.clone(),
            provider: self.engine.provider.name().to_owned(),
            calendar_id: calendar_id.to_owned(),
            event_id: snapshot.event_id.clone(),
            spec: snapshot.spec.clone().expect("a live event has a spec"),
            last_etag_seen: snapshot.etag.clone(),
            last_etag_written: None,
            occurrences: Default::default(),
            deleted: false,
            join_url: None,
        };
        assert_eq!(
            link.spec, spec,
            "the meeting was made from the event as it was created"
        );
        let change = PlannedChange {
            link,
            base: confsync_store::LinkBase::New,
            actions: vec![],
            supersede_deletes: false,
            not_before_ms: now_ms(),
        };
        self.store
            .commit_page(calendar_id, &[change], &[], None, now_ms())
            .await
            .expect("the link is registered");
        (created, meeting_id)
    }

    async fn sync(&self, calendar_id: &str) -> SyncSummary {
        self.engine
            .sync(calendar_id, false, now_ms())
            .await
            .unwrap_or_else(|e| panic!("sync of {calendar_id}: {e}"))
    }

    async fn drain(&self) -> DrainSummary {
        self.engine.drain(now_ms()).await.expect("the drain runs")
    }

    /// Syncs each calendar, then drains the outbox: the state a change should reach.
    async fn settle(&self, calendars: &[&str]) -> (Vec<SyncSummary>, DrainSummary) {
        let mut summaries = Vec::new();
        for calendar_id in calendars {
            summaries.push(self.sync(calendar_id).await);
        }
        (summaries, self.drain().await)
    }

    async fn meeting(&self, meeting_id: &str) -> Meeting {
        self.store
            .meeting(meeting_id)
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("meeting {meeting_id} exists"))
    }

    async fn spec(&self, meeting_id: &str) -> MeetingSpec {
        let meeting = self.meeting(meeting_id).await;
        serde_json::from_str(&meeting.spec_json).expect("the local provider stores a MeetingSpec")
    }

    async fn occurrences(&self, meeting_id: &str) -> Occurrences {
        let meeting = self.meeting(meeting_id).await;
        serde_json::from_str(&meeting.occurrences_json).expect("occurrences parse")
    }

    /// Every meeting, (id, deleted).
    async fn meeting_states(&self) -> Vec<(String, bool)> {
        self.store
            .meetings()
            .await
            .expect("the store answers")
            .into_iter()
            .map(|m| (m.meeting_id, m.deleted))
            .collect()
    }
}

fn id_of(event: &Value) -> String {
    event["id"].as_str().expect("an event id").to_owned()
}

fn actions(summary: &SyncSummary) -> u64 {
    summary.actions.values().sum()
}

fn kind(drain: &DrainSummary, kind: &str) -> u64 {
    drain.done_by_kind.get(kind).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_rescheduled_event_moves_its_meeting() {
    let h = Harness::start().await;
    let start = day_at_ten(3);
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", start, 60))
        .await;
    let (first, _) = h.settle(&[ALICE]).await;
    assert!(first[0].full, "the first pass is a full sync");
    assert_eq!(
        actions(&first[0]),
        0,
        "a freshly linked event needs nothing"
    );

    let new_start = start + chrono::Duration::hours(2);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&event)),
        Some(json!({
            "start": {"dateTime": rfc3339(new_start), "timeZone": "UTC"},
            "end": {"dateTime": rfc3339(new_start + chrono::Duration::minutes(45)), "timeZone": "UTC"},
        })),
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert!(!summaries[0].full, "the second pass is incremental");
    assert_eq!(summaries[0].actions.get("update"), Some(&1));
    assert_eq!(kind(&drained, "update"), 1);
    let spec = h.spec(&meeting_id).await;
    assert_eq!(spec.start, When::At(new_start));
    assert_eq!(
        spec.end,
        When::At(new_start + chrono::Duration::minutes(45))
    );
    assert_eq!(spec.title, "Planning", "nothing else changed");
}

#[tokio::test]
async fn a_renamed_event_renames_its_meeting() {
    let h = Harness::start().await;
    let start = day_at_ten(2);
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", start, 30))
        .await;
    h.settle(&[ALICE]).await;

    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&event)),
        Some(json!({"summary": "Planning (Q3)"})),
    )
    .await;
    let (_, drained) = h.settle(&[ALICE]).await;

    assert_eq!(kind(&drained, "update"), 1);
    let spec = h.spec(&meeting_id).await;
    assert_eq!(spec.title, "Planning (Q3)");
    assert_eq!(spec.start, When::At(start), "the time did not move");
}

#[tokio::test]
async fn a_colour_change_makes_no_provider_call() {
    let h = Harness::start().await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;
    let before = h.meeting(&meeting_id).await;

    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&event)),
        Some(json!({"colorId": "5"})),
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(summaries[0].events, 1, "the recoloured event was listed");
    assert_eq!(actions(&summaries[0]), 0, "{:?}", summaries[0]);
    assert_eq!(drained.done, 0, "{drained:?}");
    assert_eq!(drained.provider_calls, 0, "{drained:?}");
    let after = h.meeting(&meeting_id).await;
    assert_eq!(
        after.updated_at, before.updated_at,
        "the meeting was not touched"
    );
    assert_eq!(after.spec_json, before.spec_json);
}

#[tokio::test]
async fn a_guest_rsvp_makes_no_provider_call() {
    let h = Harness::start().await;
    let mut body = event_body("Planning", day_at_ten(2), 30);
    body["attendees"] = json!([{"email": BOB}]);
    let (event, meeting_id) = h.conferenced_event(ALICE, body).await;
    h.settle(&[ALICE]).await;
    let before = h.meeting(&meeting_id).await;

    // Bob answers on his copy; the answer reaches Alice's event.
    h.ok(
        BOB,
        Method::PATCH,
        &Harness::event_path(BOB, &id_of(&event)),
        Some(json!({"attendees": [{"email": BOB, "responseStatus": "accepted"}]})),
    )
    .await;
    let organizer_copy = h
        .ok(
            ALICE,
            Method::GET,
            &Harness::event_path(ALICE, &id_of(&event)),
            None,
        )
        .await;
    assert_eq!(organizer_copy["attendees"][0]["responseStatus"], "accepted");
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(summaries[0].events, 1, "the answered event was listed");
    assert_eq!(actions(&summaries[0]), 0, "{:?}", summaries[0]);
    assert_eq!(drained.done, 0, "{drained:?}");
    assert_eq!(drained.provider_calls, 0, "{drained:?}");
    let after = h.meeting(&meeting_id).await;
    assert_eq!(
        after.updated_at, before.updated_at,
        "the meeting was not touched"
    );
    assert_eq!(after.spec_json, before.spec_json);
}

#[tokio::test]
async fn a_cancelled_event_deletes_its_meeting() {
    let h = Harness::start().await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;

    h.ok(
        ALICE,
        Method::DELETE,
        &Harness::event_path(ALICE, &id_of(&event)),
        None,
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(summaries[0].actions.get("delete"), Some(&1));
    assert_eq!(kind(&drained, "delete"), 1, "{drained:?}");
    assert!(h.meeting(&meeting_id).await.deleted);
}

#[tokio::test]
async fn removing_the_conference_deletes_the_meeting() {
    let h = Harness::start().await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;

    let patched = h
        .ok(
            ALICE,
            Method::PATCH,
            &format!(
                "{}?conferenceDataVersion=1",
                Harness::event_path(ALICE, &id_of(&event))
            ),
            Some(json!({"conferenceData": null})),
        )
        .await;
    assert!(patched.get("conferenceData").is_none(), "{patched}");
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(summaries[0].actions.get("delete"), Some(&1));
    assert_eq!(kind(&drained, "delete"), 1, "{drained:?}");
    assert!(h.meeting(&meeting_id).await.deleted);
}

#[tokio::test]
async fn meet_events_and_events_without_conference_are_skipped() {
    let h = Harness::start().await;
    let mut meet = event_body("Meet call", day_at_ten(2), 30);
    meet["conferenceData"] = json!({
        "createRequest": {"requestId": "meet-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}},
    });
    let meet = h.insert(ALICE, meet).await;
    assert_eq!(
        meet["conferenceData"]["conferenceSolution"]["key"]["type"],
        "hangoutsMeet"
    );
    let plain = h
        .insert(ALICE, event_body("Lunch", day_at_ten(2), 60))
        .await;

    let (first, drained) = h.settle(&[ALICE]).await;
    assert_eq!(first[0].events, 2);
    assert_eq!(first[0].skipped.get("not_ours"), Some(&1), "{:?}", first[0]);
    assert_eq!(
        first[0].skipped.get("no_conference"),
        Some(&1),
        "{:?}",
        first[0]
    );
    assert_eq!(actions(&first[0]), 0);
    assert_eq!(drained.provider_calls, 0);

    // Edits to them are skipped as well.
    for event in [&meet, &plain] {
        h.ok(
            ALICE,
            Method::PATCH,
            &Harness::event_path(ALICE, &id_of(event)),
            Some(json!({"summary": "renamed"})),
        )
        .await;
    }
    let (second, drained) = h.settle(&[ALICE]).await;
    assert!(!second[0].full);
    assert_eq!(second[0].events, 2);
    assert_eq!(actions(&second[0]), 0, "{:?}", second[0]);
    assert_eq!(drained.provider_calls, 0);
    assert!(
        h.store.link_event_ids(ALICE).await.unwrap().is_empty(),
        "nothing was adopted"
    );
    assert!(h.meeting_states().await.is_empty(), "no meeting was made");
}

#[tokio::test]
async fn a_first_full_sync_adopts_our_conferences_without_reading_them_again() {
    let h = Harness::start().await;
    // Events carrying meetings of ours that the store has never linked (a store restored from
    // nothing): the add-on's steps without the link.
    let mut meetings = Vec::new();
    for n in 0..3 {
        let body = event_body(&format!("Review {n}"), day_at_ten(n + 1), 30);
        let (_, meeting_id, _) = h.event_with_our_meeting(ALICE, body).await;
        meetings.push(meeting_id);
    }
    h.insert(ALICE, event_body("No conference", day_at_ten(5), 30))
        .await;
    let gets = h.client.request_count(ApiMethod::EventsGet);

    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert!(summaries[0].full);
    assert_eq!(
        summaries[0].verifications, 0,
        "links this pass made itself, from the events it listed, are not read again: {:?}",
        summaries[0]
    );
    assert_eq!(
        h.client.request_count(ApiMethod::EventsGet) - gets,
        0,
        "no events.get during the pass or its drain"
    );
    assert_eq!(kind(&drained, "verify"), 0, "{drained:?}");
    for id in &meetings {
        let link = h
            .store
            .link(id)
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("meeting {id} is linked"));
        assert!(!link.deleted);
        assert!(!h.meeting(id).await.deleted);
    }
    let (again, drained) = h.settle(&[ALICE]).await;
    assert_eq!(actions(&again[0]), 0, "{:?}", again[0]);
    assert_eq!(drained.done, 0);
}

#[tokio::test]
async fn an_expired_sync_token_full_syncs_that_calendar_only_and_deletes_nothing() {
    let h = Harness::start().await;
    let team = h.secondary_calendar("Team").await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    // Older than the full-sync window: a windowed full sync does not list it.
    let (_, old_meeting) = h
        .conferenced_event(ALICE, event_body("Retro", day_at_ten(-60), 30))
        .await;
    let (_, team_meeting) = h
        .conferenced_event(&team, event_body("Team sync", day_at_ten(4), 30))
        .await;
    let (first, _) = h.settle(&[ALICE, &team]).await;
    assert!(first.iter().all(|s| s.full));

    // A change lands, then Google drops Alice's tokens.
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&event)),
        Some(json!({"summary": "Planning (moved room)"})),
    )
    .await;
    h.admin(
        Method::POST,
        &format!("calendars/{}/expire-sync-tokens", encode_segment(ALICE)),
        json!({}),
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE, &team]).await;

    assert!(
        summaries[0].full,
        "Alice's calendar is fully synced after the 410"
    );
    assert!(!summaries[1].full, "the other calendar stays incremental");
    assert_eq!(
        summaries[0].verifications, 0,
        "the meeting that ended before the listing window is neither listed nor checked \
         (one query picks the links that can still matter), and not presumed deleted"
    );
    assert_eq!(kind(&drained, "delete"), 0, "{drained:?}");
    assert_eq!(
        h.spec(&meeting_id).await.title,
        "Planning (moved room)",
        "the change made before the 410 is not lost"
    );
    for id in [&meeting_id, &old_meeting, &team_meeting] {
        assert!(!h.meeting(id).await.deleted, "meeting {id} was deleted");
    }
    let state = h.store.calendar(ALICE).await.unwrap().unwrap();
    assert!(!state.needs_full_sync && state.sync_token.is_some());

    // And the next pass is incremental again.
    assert!(!h.sync(ALICE).await.full);
}

#[tokio::test]
async fn a_cancellation_hidden_by_an_expired_sync_token_still_deletes_its_meeting() {
    let h = Harness::start().await;
    // One event in the full-sync window, one before it; both are cancelled while the engine is
    // away and the token expires, so only a full sync can find out.
    let (recent, recent_meeting) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    let (old, old_meeting) = h
        .conferenced_event(ALICE, event_body("Retro", day_at_ten(-60), 30))
        .await;
    let (_, kept_meeting) = h
        .conferenced_event(ALICE, event_body("Review", day_at_ten(5), 30))
        .await;
    h.settle(&[ALICE]).await;
    for event in [&recent, &old] {
        h.ok(
            ALICE,
            Method::DELETE,
            &Harness::event_path(ALICE, &id_of(event)),
            None,
        )
        .await;
    }
    h.admin(
        Method::POST,
        &format!("calendars/{}/expire-sync-tokens", encode_segment(ALICE)),
        json!({}),
    )
    .await;

    let (summaries, first_drain) = h.settle(&[ALICE]).await;
    assert!(summaries[0].full);
    // The verification of the out-of-window event plans its delete during the first drain; a
    // second drain runs it if it was not picked up in the same drain.
    let second_drain = h.drain().await;
    let deletes = kind(&first_drain, "delete") + kind(&second_drain, "delete");
    assert_eq!(deletes, 2, "{first_drain:?} {second_drain:?}");
    assert!(h.meeting(&recent_meeting).await.deleted, "in the window");
    assert!(h.meeting(&old_meeting).await.deleted, "before the window");
    assert!(
        !h.meeting(&kept_meeting).await.deleted,
        "the live event keeps its meeting"
    );
}

/// A weekly series of four, linked; its id, its meeting and its first start.
async fn weekly_series(h: &Harness) -> (String, String, DateTime<Utc>) {
    let first = day_at_ten(3);
    let mut body = event_body("Weekly", first, 30);
    body["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
    let (event, meeting_id) = h.conferenced_event(ALICE, body).await;
    h.settle(&[ALICE]).await;
    (id_of(&event), meeting_id, first)
}

fn instance_id(series: &str, original: DateTime<Utc>) -> String {
    format!("{series}_{}", original.format("%Y%m%dT%H%M%SZ"))
}

#[tokio::test]
async fn a_moved_instance_of_a_weekly_series_moves_that_occurrence() {
    let h = Harness::start().await;
    let (series, meeting_id, first) = weekly_series(&h).await;
    let spec_before = h.meeting(&meeting_id).await.spec_json;

    let original = first + chrono::Duration::weeks(1);
    let start = original + chrono::Duration::hours(2);
    let end = start + chrono::Duration::minutes(30);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &instance_id(&series, original)),
        Some(json!({
            "start": {"dateTime": rfc3339(start), "timeZone": "UTC"},
            "end": {"dateTime": rfc3339(end), "timeZone": "UTC"},
        })),
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(
        summaries[0].actions.get("update_occurrence"),
        Some(&1),
        "{:?}",
        summaries[0]
    );
    assert_eq!(kind(&drained, "update_occurrence"), 1, "{drained:?}");
    let occurrences = h.occurrences(&meeting_id).await;
    assert_eq!(
        occurrences.get(&When::At(original).key()),
        Some(&Some((When::At(start), When::At(end), "Weekly".to_owned()))),
        "{occurrences:?}"
    );
    assert_eq!(
        occurrences.len(),
        1,
        "only that occurrence: {occurrences:?}"
    );
    assert_eq!(
        h.meeting(&meeting_id).await.spec_json,
        spec_before,
        "the series itself is unchanged"
    );
}

#[tokio::test]
async fn a_cancelled_instance_of_a_weekly_series_cancels_that_occurrence() {
    let h = Harness::start().await;
    let (series, meeting_id, first) = weekly_series(&h).await;

    let original = first + chrono::Duration::weeks(2);
    h.ok(
        ALICE,
        Method::DELETE,
        &Harness::event_path(ALICE, &instance_id(&series, original)),
        None,
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert_eq!(
        summaries[0].actions.get("cancel_occurrence"),
        Some(&1),
        "{:?}",
        summaries[0]
    );
    assert_eq!(kind(&drained, "cancel_occurrence"), 1, "{drained:?}");
    assert_eq!(kind(&drained, "delete"), 0, "the series lives on");
    let occurrences = h.occurrences(&meeting_id).await;
    assert_eq!(
        occurrences.get(&When::At(original).key()),
        Some(&None),
        "{occurrences:?}"
    );
    assert_eq!(
        occurrences.len(),
        1,
        "only that occurrence: {occurrences:?}"
    );
    assert!(!h.meeting(&meeting_id).await.deleted);
}

/// An event with a meeting on Alice's primary calendar, a synced Team calendar, and the event
/// moved there with `events.move`. Returns (team id, event id, meeting id, join URL).
async fn moved_to_team(h: &Harness) -> (String, String, String, String) {
    let team = h.secondary_calendar("Team").await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE, &team]).await;
    let join_url = h.meeting(&meeting_id).await.join_url;
    let id = id_of(&event);
    let moved = h
        .ok(
            ALICE,
            Method::POST,
            &format!(
                "{}/move?destination={}",
                Harness::event_path(ALICE, &id),
                encode_segment(&team)
            ),
            Some(json!({})),
        )
        .await;
    assert_eq!(moved["organizer"]["email"], json!(team));
    (team, id, meeting_id, join_url)
}

async fn assert_kept_on(h: &Harness, team: &str, event_id: &str, meeting_id: &str, join: &str) {
    let meeting = h.meeting(meeting_id).await;
    assert!(!meeting.deleted, "the moved event's meeting was deleted");
    assert_eq!(meeting.join_url, join, "the same meeting, same join link");
    let link = h.store.link(meeting_id).await.unwrap().expect("a link");
    assert_eq!(
        (
            link.calendar_id.as_str(),
            link.event_id.as_str(),
            link.deleted
        ),
        (team, event_id, false),
        "the link followed the event"
    );
    // A later change on the new calendar still reaches the meeting.
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(team, event_id),
        Some(json!({"summary": "Planning (team)"})),
    )
    .await;
    h.settle(&[ALICE, team]).await;
    assert_eq!(h.spec(meeting_id).await.title, "Planning (team)");
    assert!(!h.meeting(meeting_id).await.deleted);
}

#[tokio::test]
async fn an_event_moved_to_another_synced_calendar_keeps_its_meeting() {
    let h = Harness::start().await;
    let (team, id, meeting_id, join) = moved_to_team(&h).await;

    // The source calendar syncs first: it sees only the tombstone the move left.
    let source = h.sync(ALICE).await;
    assert_eq!(source.actions.get("delete"), Some(&1), "{source:?}");
    let drained = h.drain().await;
    assert_eq!(kind(&drained, "delete"), 0, "{drained:?}");
    assert!(!h.meeting(&meeting_id).await.deleted);
    let (_, drained) = h.settle(&[&team]).await;
    assert_eq!(kind(&drained, "delete"), 0, "{drained:?}");

    assert_kept_on(&h, &team, &id, &meeting_id, &join).await;
}

#[tokio::test]
async fn an_event_moved_to_another_synced_calendar_keeps_its_meeting_when_the_destination_syncs_first()
 {
    let h = Harness::start().await;
    let (team, id, meeting_id, join) = moved_to_team(&h).await;

    let (_, drained) = h.settle(&[&team, ALICE]).await;
    assert_eq!(kind(&drained, "delete"), 0, "{drained:?}");
    assert!(!h.meeting(&meeting_id).await.deleted);

    assert_kept_on(&h, &team, &id, &meeting_id, &join).await;
}

#[tokio::test]
async fn transient_503s_on_events_list_are_retried_and_the_sync_succeeds() {
    let h = Harness::start().await;
    let (event, meeting_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&event)),
        Some(json!({"summary": "Planning (after outage)"})),
    )
    .await;

    h.admin(
        Method::POST,
        "faults",
        json!({"status": 503, "count": 2, "method": "calendar.events.list"}),
    )
    .await;
    let lists_before = h.client.request_count(ApiMethod::EventsList);
    let summary = h.sync(ALICE).await;
    let lists = h.client.request_count(ApiMethod::EventsList) - lists_before;

    assert_eq!(lists, 3, "two 503s, then the page");
    assert!(!summary.full, "a 503 is not a 410: the token is kept");
    assert_eq!(summary.actions.get("update"), Some(&1));
    let drained = h.drain().await;
    assert_eq!(kind(&drained, "update"), 1);
    assert_eq!(h.spec(&meeting_id).await.title, "Planning (after outage)");
}

/// A calendar that lists one fixed page (a malformed item among good ones) and records the
/// requests it gets. The emulator validates every write, so it cannot produce such an item.
struct MalformedCalendar {
    requests: Mutex<Vec<ListRequest>>,
    broken: Value,
}

impl CalendarApi for MalformedCalendar {
    fn list<'a>(
        &'a self,
        _calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<Page, CalendarError>> {
        Box::pin(async move {
            let mut requests = self.requests.lock().unwrap();
            requests.push(request.clone());
            let page = if requests.len() == 1 {
                Page::from_values(
                    vec![
                        self.broken.clone(),
                        // Broken too, but no conference and no link: nothing of it is planned,
                        // so it is not decoded, and not dead-lettered.
                        json!({
                            "kind": "calendar#event", "etag": "\"3\"", "id": "unrelated", "status": "confirmed",
                            "start": {"dateTime": "later"},
                            "end": {"dateTime": "2026-12-01T11:00:00Z"},
                        }),
                        json!({
                            "kind": "calendar#event", "etag": "\"2\"", "id": "fine", "status": "confirmed",
                            "summary": "Lunch",
                            "start": {"dateTime": "2026-12-01T12:00:00Z"},
                            "end": {"dateTime": "2026-12-01T13:00:00Z"},
                            "organizer": {"email": ALICE, "self": true},
                        }),
                    ],
                    None,
                    Some("token-1".into()),
                )
            } else {
                Page::from_values(vec![], None, Some("token-2".into()))
            };
            Ok(page)
        })
    }

    fn get<'a>(
        &'a self,
        _calendar_id: &'a str,
        _event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
        Box::pin(async { Ok(None) })
    }

    fn patch<'a>(
        &'a self,
        _calendar_id: &'a str,
        _event_id: &'a str,
        _body: &'a Value,
        _if_match: &'a str,
    ) -> BoxFuture<'a, Result<Value, CalendarError>> {
        Box::pin(async {
            Err(CalendarError::Fatal {
                detail: "this calendar is read-only".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_malformed_event_is_dead_lettered_and_the_sync_token_still_advances() {
    let store = Store::memory().await.unwrap();
    // It carries a conference, so it may be ours: it is decoded, and cannot be.
    let broken = json!({
        "kind": "calendar#event", "etag": "\"1\"", "id": "broken", "status": "confirmed",
        "summary": "Broken",
        "start": {"dateTime": "soon"},
        "end": {"dateTime": "2026-12-01T11:00:00Z"},
        "conferenceData": {"conferenceId": "m-1", "conferenceSolution": {"name": "Confsync"}},
    });
    let calendar = Arc::new(MalformedCalendar {
        requests: Mutex::new(Vec::new()),
        broken: broken.clone(),
    });
    let engine = Engine::new(
        store.clone(),
        calendar.clone(),
        Arc::new(LocalProvider::new(store.clone(), "http://127.0.0.1:9/")),
        EngineConfig::default(),
    );

    let summary = engine.sync(ALICE, false, now_ms()).await.unwrap();
    assert_eq!(
        (summary.events, summary.dead_letters),
        (3, 1),
        "{summary:?}"
    );
    assert_eq!(
        summary.skipped.get("no_conference"),
        Some(&2),
        "the unrelated items count as skipped: {summary:?}"
    );

    let letters = store.dead_letters(ALICE).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.event_id.as_deref(), Some("broken"));
    assert!(
        letter.reason.contains("start.dateTime") && letter.reason.contains("soon"),
        "the reason says what is wrong: {}",
        letter.reason
    );
    assert_eq!(letter.raw, broken, "the item is kept as received");
    assert_eq!(letter.count, 1);
    let state = store.calendar(ALICE).await.unwrap().unwrap();
    assert_eq!(
        state.sync_token.as_deref(),
        Some("token-1"),
        "one bad event does not hold the calendar back"
    );

    // The next pass continues from that token.
    let next = engine.sync(ALICE, false, now_ms()).await.unwrap();
    assert!(!next.full);
    let requests = calendar.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].sync_token.as_deref(), Some("token-1"));
    assert_eq!(engine.drain(now_ms()).await.unwrap().provider_calls, 0);
}

#[tokio::test]
async fn an_instance_cancelled_behind_an_expired_sync_token_still_reaches_the_occurrences() {
    let h = Harness::start().await;
    let (series, meeting_id, first) = weekly_series(&h).await;

    let original = first + chrono::Duration::weeks(3);
    h.ok(
        ALICE,
        Method::DELETE,
        &Harness::event_path(ALICE, &instance_id(&series, original)),
        None,
    )
    .await;
    h.admin(
        Method::POST,
        &format!("calendars/{}/expire-sync-tokens", encode_segment(ALICE)),
        json!({}),
    )
    .await;
    let (summaries, drained) = h.settle(&[ALICE]).await;

    assert!(summaries[0].full, "{:?}", summaries[0]);
    assert_eq!(kind(&drained, "cancel_occurrence"), 1, "{drained:?}");
    assert_eq!(kind(&drained, "delete"), 0, "{drained:?}");
    let occurrences = h.occurrences(&meeting_id).await;
    assert_eq!(
        occurrences.get(&When::At(original).key()),
        Some(&None),
        "{occurrences:?}"
    );
    assert!(!h.meeting(&meeting_id).await.deleted);
}

/// The calendar between the engine and the emulator, so a test can act at the moment of the
/// engine's write: a user's edit just before it (a real PATCH, so the engine's If-Match fails),
/// or a crash just after it landed (its answer is lost).
struct Interposed {
    inner: GoogleCalendar,
    http: reqwest::Client,
    base: String,
    edit_before_next_patch: Mutex<Option<Value>>,
    crash_after_next_patch: AtomicBool,
    patches: AtomicU32,
}

impl CalendarApi for Interposed {
    fn list<'a>(
        &'a self,
        calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<Page, CalendarError>> {
        self.inner.list(calendar_id, request)
    }

    fn get<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
        self.inner.get(calendar_id, event_id)
    }

    fn patch<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        body: &'a Value,
        if_match: &'a str,
    ) -> BoxFuture<'a, Result<Value, CalendarError>> {
        Box::pin(async move {
            self.patches.fetch_add(1, Ordering::Relaxed);
            let edit = self.edit_before_next_patch.lock().unwrap().take();
            if let Some(edit) = edit {
                let response = self
                    .http
                    .patch(format!(
                        "{}calendar/v3/{}",
                        self.base,
                        Harness::event_path(calendar_id, event_id)
                    ))
                    .bearer_auth(format!("dev:{ALICE}"))
                    .json(&edit)
                    .send()
                    .await
                    .expect("the emulator answers");
                assert!(response.status().is_success(), "the user's edit lands");
            }
            let written = self
                .inner
                .patch(calendar_id, event_id, body, if_match)
                .await;
            if written.is_ok() && self.crash_after_next_patch.swap(false, Ordering::Relaxed) {
                return Err(CalendarError::Retryable {
                    detail: "the process crashed after the write landed".into(),
                    retry_after: None,
                });
            }
            written
        })
    }
}

impl Harness {
    /// The harness with the in-memory provider (which can refuse changes in place) and the
    /// interposed calendar.
    async fn recreating() -> (Harness, Arc<MemoryProvider>, Arc<Interposed>) {
        let mut h = Harness::start().await;
        let memory = Arc::new(MemoryProvider::new("mem", Capabilities::ALL));
        let calendar = Arc::new(Interposed {
            inner: GoogleCalendar {
                client: h.client.clone(),
            },
            http: h.http.clone(),
            base: h.base.clone(),
            edit_before_next_patch: Mutex::new(None),
            crash_after_next_patch: AtomicBool::new(false),
            patches: AtomicU32::new(0),
        });
        h.engine = Engine::new(
            h.store.clone(),
            calendar.clone(),
            memory.clone(),
            EngineConfig::default(),
        );
        (h, memory, calendar)
    }

    async fn get_event(&self, event_id: &str) -> Value {
        self.ok(
            ALICE,
            Method::GET,
            &Harness::event_path(ALICE, event_id),
            None,
        )
        .await
    }
}

/// The ids of the provider's live meetings.
fn live_meetings(memory: &MemoryProvider) -> Vec<String> {
    memory
        .meetings()
        .into_iter()
        .filter(|(_, m)| !m.deleted)
        .map(|(id, _)| id)
        .collect()
}

/// The event shows `meeting_id` everywhere our conference data names it, with its join link.
fn assert_shows(event: &Value, memory: &MemoryProvider, meeting_id: &str) {
    let cd = &event["conferenceData"];
    assert_eq!(cd["conferenceId"], json!(meeting_id), "{cd}");
    assert_eq!(
        cd["parameters"]["addOnParameters"]["parameters"]["confsyncConferenceId"],
        json!(meeting_id),
        "{cd}"
    );
    assert_eq!(cd["conferenceSolution"]["name"], json!("confsync"), "{cd}");
    let join = memory
        .meeting(meeting_id)
        .expect("the meeting exists")
        .join_url;
    assert_eq!(
        cd["entryPoints"],
        json!([{"entryPointType": "video", "uri": join, "label": join.trim_start_matches("https://")}])
    );
}

#[tokio::test]
async fn a_reschedule_the_provider_cannot_make_in_place_recreates_the_meeting() {
    let (h, memory, calendar) = Harness::recreating().await;
    let start = day_at_ten(3);
    let (event, old_id) = h
        .conferenced_event(ALICE, event_body("Planning", start, 60))
        .await;
    h.settle(&[ALICE]).await;
    let id = id_of(&event);

    let new_start = start + chrono::Duration::hours(2);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id),
        Some(json!({
            "start": {"dateTime": rfc3339(new_start), "timeZone": "UTC"},
            "end": {"dateTime": rfc3339(new_start + chrono::Duration::minutes(60)), "timeZone": "UTC"},
        })),
    )
    .await;
    memory.recreate_next(1);
    // The user renames the event between the engine's read and its write: the PATCH answers
    // 412, the engine reads again and writes again.
    *calendar.edit_before_next_patch.lock().unwrap() =
        Some(json!({"summary": "Planning (edited meanwhile)"}));
    let (_, drained) = h.settle(&[ALICE]).await;

    // The refused update, then the new meeting taking the edit its PATCH met.
    assert_eq!(kind(&drained, "update"), 2, "{drained:?}");
    assert_eq!(kind(&drained, "recreate"), 1, "{drained:?}");
    assert_eq!(kind(&drained, "delete"), 1, "{drained:?}");
    assert_eq!(
        drained.provider_calls, 4,
        "update, create, update, delete: {drained:?}"
    );
    assert_eq!(
        calendar.patches.load(Ordering::Relaxed),
        2,
        "412, then the write on a fresh read"
    );
    let live = live_meetings(&memory);
    assert_eq!(live.len(), 1, "exactly one live meeting: {live:?}");
    let new_id = live[0].clone();
    assert_ne!(new_id, old_id);
    assert!(
        memory.meeting(&old_id).unwrap().deleted,
        "the old meeting is deleted"
    );
    let now = h.get_event(&id).await;
    assert_shows(&now, &memory, &new_id);
    assert_eq!(
        now["summary"], "Planning (edited meanwhile)",
        "the user's edit is not overwritten"
    );
    let spec = memory.meeting(&new_id).unwrap().spec;
    assert_eq!(
        spec.start,
        When::At(new_start),
        "the new meeting is at the new time"
    );
    assert_eq!(
        spec.title, "Planning (edited meanwhile)",
        "and follows the edit it met"
    );
    let creates: Vec<_> = memory
        .calls()
        .into_iter()
        .filter(|c| c.op == "create")
        .collect();
    assert_eq!(
        creates.len(),
        2,
        "the add-on's, then the recreate's: {creates:?}"
    );
    let old_link = h.store.link(&old_id).await.unwrap().unwrap();
    let new_link = h.store.link(&new_id).await.unwrap().unwrap();
    assert!(old_link.deleted && !new_link.deleted);
    assert_eq!(
        (new_link.calendar_id.as_str(), new_link.event_id.as_str()),
        (ALICE, id.as_str())
    );
    assert_eq!(
        new_link.join_url,
        Some(memory.meeting(&new_id).unwrap().join_url)
    );

    // Our write comes back as an echo: nothing more to do.
    let (summaries, drained) = h.settle(&[ALICE]).await;
    assert_eq!(actions(&summaries[0]), 0, "{:?}", summaries[0]);
    assert_eq!(drained.provider_calls, 0, "{drained:?}");
    // And later changes reach the new meeting.
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id),
        Some(json!({"summary": "Planning (final)"})),
    )
    .await;
    h.settle(&[ALICE]).await;
    assert_eq!(
        memory.meeting(&new_id).unwrap().spec.title,
        "Planning (final)"
    );
    assert_eq!(live_meetings(&memory), [new_id]);
}

#[tokio::test]
async fn a_recreate_interrupted_after_the_create_resumes_with_the_same_meeting() {
    let (h, memory, _) = Harness::recreating().await;
    let (event, old_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;
    let id = id_of(&event);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id),
        Some(json!({"summary": "Planning (new host)"})),
    )
    .await;
    memory.recreate_next(1);
    // Every attempt of the event's PATCH fails (the client's retries included): the row stops
    // after the create, as a crash there would leave it.
    h.admin(
        Method::POST,
        "faults",
        json!({"status": 503, "count": 5, "method": "PATCH"}),
    )
    .await;
    let (_, first) = h.settle(&[ALICE]).await;
    h.admin(Method::DELETE, "faults", json!({})).await;
    assert_eq!(kind(&first, "recreate"), 0, "{first:?}");
    assert_eq!(first.retried, 1, "{first:?}");
    assert_eq!(
        h.get_event(&id).await["conferenceData"]["conferenceId"],
        json!(old_id),
        "the event still shows the old meeting"
    );
    assert_eq!(
        live_meetings(&memory).len(),
        2,
        "the new meeting exists, not yet shown"
    );

    let second = h
        .engine
        .drain(now_ms() + 3_600_000)
        .await
        .expect("the drain runs");
    assert_eq!(kind(&second, "recreate"), 1, "{second:?}");
    assert_eq!(kind(&second, "delete"), 1, "{second:?}");
    let live = live_meetings(&memory);
    assert_eq!(live.len(), 1, "exactly one live meeting: {live:?}");
    let new_id = live[0].clone();
    assert_ne!(new_id, old_id);
    assert_eq!(memory.meetings().len(), 2, "no second new meeting was made");
    let creates: Vec<_> = memory
        .calls()
        .into_iter()
        .filter(|c| c.op == "create")
        .skip(1)
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(
        creates[0].key, creates[1].key,
        "the retry used the same key"
    );
    assert!(creates[0].key.starts_with("recreate:"), "{creates:?}");
    let now = h.get_event(&id).await;
    assert_shows(&now, &memory, &new_id);
    assert_eq!(
        memory.meeting(&new_id).unwrap().spec.title,
        "Planning (new host)"
    );
}

#[tokio::test]
async fn a_recreate_interrupted_after_the_event_was_repointed_ends_with_one_meeting() {
    let (h, memory, calendar) = Harness::recreating().await;
    let (event, old_id) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(2), 30))
        .await;
    h.settle(&[ALICE]).await;
    let id = id_of(&event);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id),
        Some(json!({"description": "New agenda"})),
    )
    .await;
    memory.recreate_next(1);
    calendar
        .crash_after_next_patch
        .store(true, Ordering::Relaxed);
    let (_, first) = h.settle(&[ALICE]).await;
    assert_eq!(first.retried, 1, "{first:?}");
    let shown = h.get_event(&id).await["conferenceData"]["conferenceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(shown, old_id, "the PATCH landed before the crash");

    // A sync sees the repointed event before the recreate resumes: the recreate in flight is
    // not taken for a replacement by the user (no delete, no adoption of the new conference).
    let seen = h.sync(ALICE).await;
    assert_eq!(seen.events, 1, "{seen:?}");
    assert_eq!(actions(&seen), 0, "{seen:?}");
    assert!(!h.store.link(&old_id).await.unwrap().unwrap().deleted);
    assert_eq!(h.store.link(&shown).await.unwrap(), None);
    let second = h
        .engine
        .drain(now_ms() + 3_600_000)
        .await
        .expect("the drain runs");
    assert_eq!(kind(&second, "recreate"), 1, "{second:?}");
    assert_eq!(kind(&second, "delete"), 1, "{second:?}");
    assert_eq!(live_meetings(&memory), std::slice::from_ref(&shown));
    assert!(memory.meeting(&old_id).unwrap().deleted);
    assert_shows(&h.get_event(&id).await, &memory, &shown);
    let link = h.store.link(&shown).await.unwrap().expect("the new link");
    assert!(!link.deleted);
    assert_eq!(
        h.store.link_event_ids(ALICE).await.unwrap(),
        std::slice::from_ref(&id),
        "one live link for the event"
    );
    // Quiet afterwards, and later changes reach the new meeting.
    let (_, drained) = h.settle(&[ALICE]).await;
    assert_eq!(drained.provider_calls, 0, "{drained:?}");
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id),
        Some(json!({"summary": "Planning (later)"})),
    )
    .await;
    h.settle(&[ALICE]).await;
    assert_eq!(
        memory.meeting(&shown).unwrap().spec.title,
        "Planning (later)"
    );
    assert_eq!(
        memory.meeting(&shown).unwrap().spec.description,
        "New agenda"
    );
}

/// A deployment moving from one provider to another (`confsync admin migrate-provider`): every
/// future meeting (a single event, a weekly series with a moved instance, an event the user
/// edits during the move) is recreated on the new provider through the recreate path, each
/// event repointed with If-Match (the user's edit kept), the old meetings deleted at the OLD
/// provider; a past meeting stays there and still gets its event's changes. A crash right after
/// one event's PATCH landed, and a restart (a new engine over the same store), converge with no
/// duplicate meeting and no orphan; a rerun queues nothing. Once the old provider's config is
/// gone, its links' actions fail clearly (never sent to the new provider, never dropped).
#[tokio::test]
async fn every_future_meeting_moves_to_the_new_provider() {
    use confsync_providers::ConferenceProvider;
    let (mut h, _, calendar) = Harness::recreating().await;
    let old = Arc::new(MemoryProvider::new("zoom", Capabilities::ALL));
    let new = Arc::new(MemoryProvider::new("teams", Capabilities::ALL));
    // One row at a time: the user's edit and the crash below meet the first move.
    let config = || EngineConfig {
        drain_concurrency: 1,
        ..EngineConfig::default()
    };
    h.engine = Engine::new(h.store.clone(), calendar.clone(), old.clone(), config());
    let (single, single_old) = h
        .conferenced_event(ALICE, event_body("Planning", day_at_ten(3), 60))
        .await;
    let first = day_at_ten(4);
    let mut body = event_body("Weekly", first, 30);
    body["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
    let (series, series_old) = h.conferenced_event(ALICE, body).await;
    let (past, past_old) = h
        .conferenced_event(ALICE, event_body("Retro", day_at_ten(-2), 60))
        .await;
    let (review, review_old) = h
        .conferenced_event(ALICE, event_body("Review", day_at_ten(5), 45))
        .await;
    h.settle(&[ALICE]).await;
    let series_id = id_of(&series);
    // An exception of the series, recorded at the old provider.
    let original = first + chrono::Duration::weeks(1);
    let moved_start = original + chrono::Duration::hours(2);
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &instance_id(&series_id, original)),
        Some(json!({
            "start": {"dateTime": rfc3339(moved_start), "timeZone": "UTC"},
            "end": {"dateTime": rfc3339(moved_start + chrono::Duration::minutes(30)), "timeZone": "UTC"},
        })),
    )
    .await;
    h.settle(&[ALICE]).await;
    assert_eq!(old.meeting(&series_old).unwrap().occurrences.len(), 1);

    // The switch: the new provider is current, the old one still configured as previous.
    let engine_after_switch = || {
        Engine::new(h.store.clone(), calendar.clone(), new.clone(), config())
            .with_previous_providers([old.clone() as Arc<dyn ConferenceProvider>])
    };
    h.engine = engine_after_switch();
    let before = h.engine.provider_moves(None, now_ms()).await.unwrap();
    assert_eq!(
        (before.to_move, before.ended, before.queued),
        (3, 1, 0),
        "{before:?}"
    );
    let queued = h
        .engine
        .queue_provider_moves(None, 100, now_ms())
        .await
        .unwrap();
    assert_eq!(queued.len(), 3, "{queued:?}");
    assert!(
        h.engine
            .queue_provider_moves(None, 100, now_ms())
            .await
            .unwrap()
            .is_empty(),
        "a rerun queues nothing already queued"
    );

    // The first move meets a user's edit (412: re-read, patch again), and the process
    // "crashes" right after its PATCH landed: that row is retried later.
    *calendar.edit_before_next_patch.lock().unwrap() =
        Some(json!({"description": "Edited during the move"}));
    calendar
        .crash_after_next_patch
        .store(true, Ordering::Relaxed);
    let interrupted = h.drain().await;
    assert_eq!(interrupted.retried, 1, "{interrupted:?}");
    assert_eq!(kind(&interrupted, "recreate"), 2, "{interrupted:?}");
    let during = h.engine.provider_moves(None, now_ms()).await.unwrap();
    assert_eq!((during.moved, during.queued), (2, 1), "{during:?}");

    // A restart: a new engine over the same store resumes the interrupted move.
    h.engine = engine_after_switch();
    let resumed = h.engine.drain(now_ms() + 3_600_000).await.unwrap();
    assert_eq!(kind(&resumed, "recreate"), 1, "{resumed:?}");
    h.settle(&[ALICE]).await;
    h.engine.drain(now_ms() + 3_600_000).await.unwrap();

    // Exactly one live meeting per moved event, at the new provider; none made twice.
    let mut live_new = live_meetings(&new);
    live_new.sort();
    assert_eq!(live_new.len(), 3, "{live_new:?}");
    let creates = new.calls().iter().filter(|c| c.op == "create").count();
    let distinct: std::collections::BTreeSet<_> = new
        .calls()
        .into_iter()
        .filter(|c| c.op == "create")
        .map(|c| c.key)
        .collect();
    assert_eq!(
        distinct.len(),
        3,
        "one create key per move ({creates} calls)"
    );
    for (event, old_id) in [
        (&single, &single_old),
        (&series, &series_old),
        (&review, &review_old),
    ] {
        let id = id_of(event);
        let now = h.get_event(&id).await;
        let new_id = now["conferenceData"]["conferenceId"]
            .as_str()
            .expect("a conference")
            .to_owned();
        assert!(live_new.contains(&new_id), "{id} shows {new_id}");
        assert_shows(&now, &new, &new_id);
        assert!(
            old.meeting(old_id).unwrap().deleted,
            "the old meeting of {id} is deleted at the old provider"
        );
        let old_link = h.store.link(old_id).await.unwrap().unwrap();
        let new_link = h.store.link(&new_id).await.unwrap().unwrap();
        assert!(old_link.deleted && !new_link.deleted);
        assert_eq!(
            (old_link.provider.as_str(), new_link.provider.as_str()),
            ("zoom", "teams")
        );
        // The user's edit is kept, and the new meeting follows it.
        let description = now["description"].as_str().unwrap_or_default();
        assert_eq!(
            new.meeting(&new_id).unwrap().spec.description,
            description,
            "{id}"
        );
    }
    let edited: Vec<_> = {
        let mut found = Vec::new();
        for event in [&single, &series, &review] {
            let now = h.get_event(&id_of(event)).await;
            if now["description"] == "Edited during the move" {
                found.push(now["summary"].clone());
            }
        }
        found
    };
    assert_eq!(edited.len(), 1, "the racing edit landed once and was kept");
    // The series' exception was replayed on its new meeting.
    let series_new = h.get_event(&series_id).await["conferenceData"]["conferenceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        new.meeting(&series_new).unwrap().occurrences.len(),
        1,
        "the moved instance is replayed on the new meeting"
    );
    // The past meeting stays at the old provider, and its event's edits still reach it.
    assert!(!old.meeting(&past_old).unwrap().deleted);
    assert_eq!(
        h.get_event(&id_of(&past)).await["conferenceData"]["conferenceId"],
        json!(past_old)
    );
    let after = h.engine.provider_moves(None, now_ms()).await.unwrap();
    assert_eq!(
        (
            after.to_move,
            after.queued,
            after.moved,
            after.failed,
            after.ended
        ),
        (0, 0, 3, 0, 1),
        "{after:?}"
    );
    assert!(
        h.engine
            .queue_provider_moves(None, 100, now_ms())
            .await
            .unwrap()
            .is_empty(),
        "a rerun after the move queues nothing"
    );
    h.ok(
        ALICE,
        Method::PATCH,
        &Harness::event_path(ALICE, &id_of(&past)),
        Some(json!({"summary": "Retro (notes)"})),
    )
    .await;
    let (_, drained) = h.settle(&[ALICE]).await;
    assert_eq!(kind(&drained, "update"), 1, "{drained:?}");
    assert_eq!(old.meeting(&past_old).unwrap().spec.title, "Retro (notes)");

    // The old provider's config is removed: its link's actions wait (parked, no attempt used),
    // visibly, naming it; never sent to the new provider, never dropped.
    h.engine = Engine::new(h.store.clone(), calendar.clone(), new.clone(), config());
    let new_calls = new.calls().len();
    h.ok(
        ALICE,
        Method::DELETE,
        &Harness::event_path(ALICE, &id_of(&past)),
        None,
    )
    .await;
    let (_, drained) = h.settle(&[ALICE]).await;
    assert_eq!((drained.failed, drained.retried), (0, 1), "{drained:?}");
    let waiting = h.store.outbox_of(&past_old).await.unwrap();
    let delete = waiting.last().unwrap();
    assert_eq!(delete.state, confsync_store::OutboxState::Pending);
    assert_eq!(delete.attempts, 0, "no attempt used");
    assert!(
        delete
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("\"zoom\"")),
        "{delete:?}"
    );
    assert_eq!(
        new.calls().len(),
        new_calls,
        "nothing sent to the new provider"
    );
    assert!(!old.meeting(&past_old).unwrap().deleted);
}
