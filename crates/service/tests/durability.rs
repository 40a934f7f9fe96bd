//! Durable triggers: a sync request or push notification answered 2xx is recorded in the store
//! first, so a process that dies before syncing (kill -9, a deploy) loses nothing: the next
//! process syncs every dirty calendar at startup. A failed sync is retried with backoff without
//! any new trigger, its failure visible in /v1/status and /metrics.

use std::sync::Arc;
use std::time::Duration;

use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::local::LocalProvider;
use confsync_service::{Scheduler, SchedulerConfig, ServerLimits, Service, hash_api_key, router};
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const KEY: &str = "cs_durability-test-key-0123";

/// A service on `store`, served on its own listener; answers its base URL.
async fn serve(store: Store, calendar: &str, debounce: Duration, retry: RetryPolicy) -> String {
    let provider = Arc::new(LocalProvider::new(store.clone(), "http://127.0.0.1:9/"));
    let client = Client::new(
        calendar,
        Arc::new(StaticToken(format!("dev:{ALICE}"))),
        retry,
    )
    .unwrap();
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(GoogleCalendar { client }),
        provider.clone(),
        EngineConfig::default(),
    ));
    let scheduler = Scheduler::start(
        engine,
        SchedulerConfig {
            debounce,
            workers: 2,
            ..SchedulerConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let service = Arc::new(Service {
        store,
        provider,
        scheduler,
        create_deadline: Duration::from_secs(10),
        channels: None,
        oauth: None,
        public_url: None,
        budgets: None,
        host_key: None,
        identity: None,
    });
    tokio::spawn(confsync_service::serve(
        listener,
        router(service),
        ServerLimits::default(),
        std::future::pending(),
    ));
    url
}

async fn call(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    bearer: &str,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An event with a conference made through the add-on API; answers (event id, meeting id).
async fn event_with_conference(calendar: &str, service: &str) -> (String, String) {
    let (_, created) = call(
        reqwest::Method::POST,
        format!("{calendar}calendar/v3/calendars/{ALICE}/events"),
        Some(json!({"summary": "Planning", "start": {"dateTime": "2027-03-01T09:00:00Z"}, "end": {"dateTime": "2027-03-01T10:00:00Z"}})),
        &format!("dev:{ALICE}"),
    )
    .await;
    let event_id = created["id"].as_str().unwrap().to_owned();
    let (status, conference) = call(
        reqwest::Method::POST,
        format!("{service}v1/conferences"),
        Some(json!({"calendarId": ALICE, "eventId": event_id, "requestId": "r1"})),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "{conference}");
    let (status, _) = call(
        reqwest::Method::PATCH,
        format!(
            "{calendar}calendar/v3/calendars/{ALICE}/events/{event_id}?conferenceDataVersion=1"
        ),
        Some(json!({"conferenceData": conference})),
        &format!("dev:{ALICE}"),
    )
    .await;
    assert_eq!(status, 200);
    (
        event_id,
        conference["conferenceId"].as_str().unwrap().to_owned(),
    )
}

async fn rename(calendar: &str, event_id: &str, title: &str) {
    let (status, _) = call(
        reqwest::Method::PATCH,
        format!("{calendar}calendar/v3/calendars/{ALICE}/events/{event_id}"),
        Some(json!({"summary": title})),
        &format!("dev:{ALICE}"),
    )
    .await;
    assert_eq!(status, 200);
}

async fn meeting_title(store: &Store, meeting_id: &str) -> String {
    let meeting = store.meeting(meeting_id).await.unwrap().unwrap();
    let spec: Value = serde_json::from_str(&meeting.spec_json).unwrap();
    spec["title"].as_str().unwrap_or_default().to_owned()
}

async fn wait_for_title(store: &Store, meeting_id: &str, title: &str, within: Duration) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if meeting_title(store, meeting_id).await == title {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Defect: a change acknowledged (202 to the add-on's trigger, 200 to Google's notification)
/// was lost until the next sweep when the process stopped before syncing; nothing synced at
/// startup.
#[test]
fn an_acknowledged_sync_request_survives_a_process_death() {
    let dir = std::env::temp_dir().join(format!("confsync-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("confsync.db").to_string_lossy().into_owned();
    let main = tokio::runtime::Runtime::new().unwrap();
    let emulator = main.block_on(async {
        confsync_emulator::Emulator::new(Default::default())
            .spawn("127.0.0.1:0")
            .await
            .unwrap()
    });
    let calendar = emulator.base_url().to_owned();

    // The first process: it acknowledges the trigger, then dies before its (long) debounce.
    let doomed = tokio::runtime::Runtime::new().unwrap();
    let (event_id, meeting_id) = doomed.block_on(async {
        let store = Store::open(&path).await.unwrap();
        store
            .api_key_create("addon", &hash_api_key(KEY), 0)
            .await
            .unwrap();
        let service = serve(
            store.clone(),
            &calendar,
            Duration::from_secs(3600),
            RetryPolicy::default(),
        )
        .await;
        let (event_id, meeting_id) = event_with_conference(&calendar, &service).await;
        rename(&calendar, &event_id, "Planning (moved to Friday)").await;
        let (status, answer) = call(
            reqwest::Method::POST,
            format!("{service}v1/calendars/{ALICE}/sync"),
            None,
            KEY,
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        assert_ne!(
            meeting_title(&store, &meeting_id).await,
            "Planning (moved to Friday)"
        );
        (event_id, meeting_id)
    });
    doomed.shutdown_background(); // kill -9: no task runs again, nothing is flushed
    let _ = event_id;

    // The next process syncs the dirty calendar at startup, with no new trigger.
    main.block_on(async {
        let store = Store::open(&path).await.unwrap();
        let _service = serve(
            store.clone(),
            &calendar,
            Duration::ZERO,
            RetryPolicy::default(),
        )
        .await;
        assert!(
            wait_for_title(
                &store,
                &meeting_id,
                "Planning (moved to Friday)",
                Duration::from_secs(10)
            )
            .await,
            "the change acknowledged before the crash reached the provider after the restart"
        );
        let state = store.calendar(ALICE).await.unwrap().unwrap();
        assert_eq!(state.dirty_at, None, "the pass cleared the trigger");
    });
    drop(emulator);
    std::fs::remove_dir_all(&dir).ok();
}

/// Defect: a sync that failed (Calendar errors outlasting the client's retries) was not
/// retried; its changes waited for the next trigger or the sweep.
#[tokio::test]
async fn a_failed_sync_is_retried_with_backoff_and_shown_meanwhile() {
    let emulator = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let calendar = emulator.base_url().to_owned();
    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(KEY), 0)
        .await
        .unwrap();
    let retry = RetryPolicy {
        max_attempts: 2,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let service = serve(store.clone(), &calendar, Duration::ZERO, retry).await;
    let (event_id, meeting_id) = event_with_conference(&calendar, &service).await;
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{service}v1/calendars/{ALICE}/sync"),
        None,
        KEY,
    )
    .await;
    assert_eq!(status, 202);
    assert!(wait_for_title(&store, &meeting_id, "Planning", Duration::from_secs(10)).await);
    // Calendar answers 500 to the next listings, more than the client retries.
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{calendar}emulator/faults"),
        Some(json!({"status": 500, "reason": "backendError", "method": "calendar.events.list", "count": 4})),
        "unused",
    )
    .await;
    assert_eq!(status, 200);
    rename(&calendar, &event_id, "Planning (renamed)").await;
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{service}v1/calendars/{ALICE}/sync"),
        None,
        KEY,
    )
    .await;
    assert_eq!(status, 202);
    // The failure shows while the retry waits.
    let mut seen_failing = false;
    for _ in 0..100 {
        let (_, status) = call(
            reqwest::Method::GET,
            format!("{service}v1/status"),
            None,
            KEY,
        )
        .await;
        let calendar_state = status["calendars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["calendarId"] == ALICE)
            .cloned()
            .unwrap();
        if calendar_state["syncFailures"].as_i64().unwrap_or(0) > 0 {
            assert!(calendar_state["retryAt"].is_i64(), "{calendar_state}");
            assert!(calendar_state["lastError"].is_string(), "{calendar_state}");
            seen_failing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_failing, "the failed sync is visible in /v1/status");
    let metrics = reqwest::get(format!("{service}metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("confsync_sync_runs_total"), "{metrics}");
    // No new trigger: the retry alone brings the change to the meeting.
    assert!(
        wait_for_title(
            &store,
            &meeting_id,
            "Planning (renamed)",
            Duration::from_secs(20)
        )
        .await,
        "the failed sync was retried with backoff"
    );
    let state = store.calendar(ALICE).await.unwrap().unwrap();
    assert_eq!((state.sync_failures, state.retry_at), (0, None));
}

/// A retried POST /v1/conferences with another request id (the add-on's retry) answers the
/// same conference; no second meeting is made.
#[tokio::test]
async fn a_create_retried_with_another_request_id_answers_the_same_conference() {
    let emulator = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(KEY), 0)
        .await
        .unwrap();
    let service = serve(
        store.clone(),
        emulator.base_url(),
        Duration::ZERO,
        RetryPolicy::default(),
    )
    .await;
    let mut ids = Vec::new();
    for request_id in ["a", "b", "c"] {
        let (status, answer) = call(
            reqwest::Method::POST,
            format!("{service}v1/conferences"),
            Some(json!({"calendarId": ALICE, "eventId": "not-saved-yet", "requestId": request_id})),
            KEY,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["conferenceId"].as_str().unwrap().to_owned());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}
