//! Push channels end to end: the service watches calendars on the emulator, which POSTs real
//! notifications to the service's webhook.

mod common;

use std::time::Duration;

use confsync_core::model::MeetingSpec;
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const KEY: &str = "cs_push-test-key";

struct Harness {
    http: reqwest::Client,
    calendar: String,
    service: String,
    store: Store,
}

async fn start(ttl_seconds: Option<u64>, renew_check: Duration) -> Harness {
    let r = common::start(
        KEY,
        Some(common::Push {
            ttl_seconds,
            renew_check,
        }),
    )
    .await;
    Harness {
        http: r.http,
        calendar: r.calendar,
        service: r.service,
        store: r.store,
    }
}

impl Harness {
    async fn emulator_channels(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}emulator/channels", self.calendar))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    async fn until<T>(&self, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "condition never met; emulator channels: {:?}",
            self.emulator_channels().await
        );
    }

    async fn create_conference(&self, event_id: &str) -> Value {
        self.http
            .post(format!("{}v1/conferences", self.service))
            .bearer_auth(KEY)
            .json(&json!({"calendarId": ALICE, "eventId": event_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_calendar_change_reaches_the_meeting_through_a_push_notification() {
    let h = start(None, Duration::from_secs(60)).await;
    let conference = h.create_conference("pushed0001").await;
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    // One channel, pointing at our webhook, and its `sync` message was accepted.
    let channel = h
        .until(async || {
            let chans = h.emulator_channels().await;
            chans.into_iter().find(|c| c["active"] == true)
        })
        .await;
    assert_eq!(
        channel["address"],
        json!(format!("{}webhooks/google", h.service))
    );
    assert_eq!(
        h.emulator_channels().await.len(),
        1,
        "one channel per calendar"
    );

    let mut e = json!({"id": "pushed0001", "summary": "Pushed", "start": {"dateTime": "2026-12-03T10:00:00Z"}, "end": {"dateTime": "2026-12-03T11:00:00Z"}, "conferenceData": conference});
    e["conferenceData"]["conferenceId"] = json!(id);
    let response = h
        .http
        .post(format!(
            "{}calendar/v3/calendars/primary/events?conferenceDataVersion=1",
            h.calendar
        ))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&e)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    // Nobody calls /sync: the notification does.
    h.until(async || {
        let m = h.store.meeting(&id).await.unwrap().unwrap();
        let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
        (spec.title == "Pushed").then_some(())
    })
    .await;
    let log: Value = h
        .http
        .get(format!("{}emulator/notifications", h.calendar))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == 200),
        "{log}"
    );
}

#[tokio::test]
async fn forged_and_unknown_notifications_are_answered_without_effect() {
    let h = start(None, Duration::from_secs(60)).await;
    h.create_conference("forged0001").await;
    let channel = h
        .until(async || {
            h.emulator_channels()
                .await
                .into_iter()
                .find(|c| c["active"] == true)
        })
        .await;
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = h.http.post(format!("{}webhooks/google", h.service));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.send()
    };
    let id = channel["id"].as_str().unwrap().to_owned();
    let resource = channel["resourceId"].as_str().unwrap().to_owned();
    let forged = post(vec![
        ("X-Goog-Channel-ID", id.clone()),
        ("X-Goog-Resource-ID", resource.clone()),
        ("X-Goog-Resource-State", "exists".into()),
        ("X-Goog-Channel-Token", "guess".into()),
        ("X-Goog-Message-Number", "20".into()),
    ])
    .await
    .unwrap();
    assert_eq!(forged.status(), 401);
    let no_token = post(vec![
        ("X-Goog-Channel-ID", id.clone()),
        ("X-Goog-Resource-ID", resource.clone()),
        ("X-Goog-Resource-State", "exists".into()),
        ("X-Goog-Message-Number", "21".into()),
    ])
    .await
    .unwrap();
    assert_eq!(no_token.status(), 401);
    let missing = post(vec![("X-Goog-Channel-ID", id.clone())]).await.unwrap();
    assert_eq!(missing.status(), 400);
    // An id we did not make (it does not verify under the channel key): refused, no stop.
    let unknown = post(vec![
        ("X-Goog-Channel-ID", "cs-not-ours".into()),
        ("X-Goog-Resource-ID", "r".into()),
        ("X-Goog-Resource-State", "exists".into()),
        ("X-Goog-Message-Number", "3".into()),
    ])
    .await
    .unwrap();
    assert_eq!(unknown.status(), 400, "made-up ids are refused");
    // One of ours the store does not know (lost): acknowledged, and stopped.
    let orphan = post(vec![
        ("X-Goog-Channel-ID", common::channel_key().new_id()),
        ("X-Goog-Resource-ID", "r".into()),
        ("X-Goog-Resource-State", "exists".into()),
        ("X-Goog-Message-Number", "3".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        orphan.status(),
        200,
        "orphans are acknowledged (and stopped)"
    );
    let status: Value = h
        .http
        .get(format!("{}v1/status", h.service))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["webhooks"]["rejected"].as_u64().unwrap() >= 4,
        "{status}"
    );
    assert_eq!(status["webhooks"]["orphans"], 1);
}

#[tokio::test]
async fn channels_are_replaced_before_they_expire_and_the_old_one_is_stopped() {
    let h = start(Some(2), Duration::from_millis(100)).await;
    h.create_conference("renew00001").await;
    let first = h
        .until(async || {
            h.emulator_channels()
                .await
                .into_iter()
                .find(|c| c["active"] == true)
        })
        .await;
    let replaced = h
        .until(async || {
            let chans = h.emulator_channels().await;
            let old_stopped = chans
                .iter()
                .any(|c| c["id"] == first["id"] && c["active"] == false);
            let new_active = chans
                .iter()
                .any(|c| c["id"] != first["id"] && c["active"] == true);
            (old_stopped && new_active).then_some(chans)
        })
        .await;
    assert!(replaced.len() >= 2);
    let live = h
        .store
        .live_channels(chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    assert_eq!(
        live.len(),
        1,
        "one live channel per calendar after the overlap"
    );
    assert_ne!(live[0].channel_id, first["id"].as_str().unwrap());
}

#[tokio::test]
async fn metrics_report_syncs_channels_and_notifications_without_secrets() {
    let h = start(None, Duration::from_secs(60)).await;
    h.create_conference("metrics001").await;
    h.until(async || {
        h.emulator_channels()
            .await
            .into_iter()
            .find(|c| c["active"] == true)
    })
    .await;
    let unknown = h
        .http
        .post(format!("{}webhooks/google", h.service))
        .header("X-Goog-Channel-ID", common::channel_key().new_id())
        .header("X-Goog-Resource-ID", "r")
        .header("X-Goog-Resource-State", "exists")
        .header("X-Goog-Message-Number", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
    let metrics = h
        .until(async || {
            let text = h
                .http
                .get(format!("{}metrics", h.service))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            // The drainer runs the first sync's verification right after the sync: wait
            // for both, not for a lucky scrape in between.
            (text.contains("confsync_sync_runs_total{outcome=\"ok\"} 1")
                && text.contains("confsync_outbox_depth 0"))
            .then_some(text)
        })
        .await;
    assert!(
        metrics.contains("confsync_notifications_total{outcome=\"orphan\"} 1"),
        "{metrics}"
    );
    // Push coverage as aggregates: the calendar has its channel, expiring in about a week.
    assert!(
        metrics.contains("confsync_calendars_with_channel 1"),
        "{metrics}"
    );
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("confsync_channel_expiry_seconds_min "))
        .expect("the first channel's expiry")
        .parse()
        .unwrap();
    assert!(expiry > 3600.0, "{metrics}");
    assert!(
        !metrics.contains("calendar_id="),
        "no per-calendar series unless opted in: {metrics}"
    );
    assert!(metrics.contains("confsync_outbox_depth 0"), "{metrics}");
    assert!(!metrics.contains(KEY), "no secrets in metrics");
}
