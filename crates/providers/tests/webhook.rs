//! The `webhook` adapter against a fake receiver that verifies every signature with the
//! adapter's own `verify_signature` (as a Rust receiver would) and checks each body's shape.

mod common_rooms;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use chrono::Utc;
use common_rooms::{Canned, Fake, at, day, series, spec};
use confsync_providers::webhook::{
    DEFAULT_TOLERANCE, WebhookConfig, WebhookProvider, verify_signature,
};
use confsync_providers::{ConferenceProvider, Meeting, ProviderError};
use serde_json::{Value, json};

const SECRET: &str = "whsec-current-0123456789";
const OLD_SECRET: &str = "whsec-previous-0123456789";

#[derive(Clone, Default)]
struct App {
    fake: Fake,
    /// Secrets the receiver accepts (two during a rotation).
    secrets: Arc<Mutex<Vec<String>>>,
    meetings: Arc<Mutex<BTreeMap<String, Value>>>,
    by_key: Arc<Mutex<BTreeMap<String, String>>>,
    /// The next update answers this join URL.
    next_join_url: Arc<Mutex<Option<String>>>,
}

fn keys(body: &Value) -> Vec<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

fn is_when(v: &Value) -> bool {
    v.get("at").and_then(Value::as_str).is_some() || v.get("day").and_then(Value::as_str).is_some()
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (seen, fault) = app.fake.record(method, &uri, headers, raw.clone());
    let timestamp = seen.header("confsync-timestamp").unwrap_or("").to_owned();
    let signature = seen.header("confsync-signature").unwrap_or("").to_owned();
    let accepted = app.secrets.lock().unwrap().clone();
    let verified = accepted.iter().any(|s| {
        verify_signature(
            s.as_bytes(),
            &timestamp,
            &signature,
            &raw,
            Utc::now(),
            DEFAULT_TOLERANCE,
        )
        .is_ok()
    });
    if !verified {
        return Canned::json(401, json!({"error": "bad signature"})).into_response();
    }
    if let Some(canned) = fault {
        return canned.into_response();
    }
    if seen.method != Method::POST || seen.path != "/hooks/confsync" {
        return app.fake.problem(format!("unexpected {}", seen.line()));
    }
    if seen.header("content-type") != Some("application/json") {
        return app.fake.problem("not JSON".into());
    }
    let body = seen.json();
    let key = body["idempotencyKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if key.is_empty() || seen.header("idempotency-key") != Some(key.as_str()) {
        return app
            .fake
            .problem(format!("idempotency key header/body mismatch: {body}"));
    }
    let meeting_id = body["meetingId"].as_str().unwrap_or_default().to_owned();
    let expect = |fields: &[&str]| -> Option<Response> {
        let mut want: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut got = keys(&body);
        got.sort();
        (want != got).then(|| {
            app.fake
                .problem(format!("fields {got:?}, expected {want:?}"))
        })
    };
    let known = || app.meetings.lock().unwrap().contains_key(&meeting_id);
    match body["type"].as_str().unwrap_or_default() {
        "create" => {
            if let Some(p) = expect(&["type", "idempotencyKey", "spec"]) {
                return p;
            }
            if !body["spec"]["title"].is_string() || !is_when(&body["spec"]["start"]) {
                return app.fake.problem(format!("bad spec {}", body["spec"]));
            }
            if let Some(id) = app.by_key.lock().unwrap().get(&key) {
                let meeting = app.meetings.lock().unwrap()[id].clone();
                return Canned::json(409, meeting).into_response();
            }
            let n = app.meetings.lock().unwrap().len() + 1;
            let meeting = json!({
                "meetingId": format!("m-{n}"),
                "joinUrl": format!("https://video.example.com/r/{n}"),
            });
            app.meetings
                .lock()
                .unwrap()
                .insert(format!("m-{n}"), meeting.clone());
            app.by_key.lock().unwrap().insert(key, format!("m-{n}"));
            Canned::json(201, meeting).into_response()
        }
        "update" => {
            if let Some(p) = expect(&["type", "idempotencyKey", "meetingId", "spec"]) {
                return p;
            }
            if !known() {
                return Canned::json(404, json!({"error": "no such meeting"})).into_response();
            }
            match app.next_join_url.lock().unwrap().take() {
                Some(url) => Canned::json(200, json!({"joinUrl": url})).into_response(),
                None => Canned::new(204, "").into_response(),
            }
        }
        "update_occurrence" => {
            if let Some(p) = expect(&[
                "type",
                "idempotencyKey",
                "meetingId",
                "occurrence",
                "start",
                "end",
                "title",
            ]) {
                return p;
            }
            if !is_when(&body["occurrence"]) || !is_when(&body["start"]) || !is_when(&body["end"]) {
                return app.fake.problem(format!("bad times {body}"));
            }
            if !known() {
                return Canned::json(404, json!({})).into_response();
            }
            Canned::new(200, "{}").into_response()
        }
        "cancel_occurrence" => {
            if let Some(p) = expect(&["type", "idempotencyKey", "meetingId", "occurrence"]) {
                return p;
            }
            if !known() {
                return Canned::json(404, json!({})).into_response();
            }
            Canned::new(204, "").into_response()
        }
        "delete" => {
            if let Some(p) = expect(&["type", "idempotencyKey", "meetingId"]) {
                return p;
            }
            match app.meetings.lock().unwrap().remove(&meeting_id) {
                Some(_) => Canned::new(204, "").into_response(),
                None => Canned::json(404, json!({"error": "gone"})).into_response(),
            }
        }
        other => app.fake.problem(format!("unknown type {other:?}")),
    }
}

async fn receiver(accepted: &[&str]) -> (App, String) {
    let app = App::default();
    *app.secrets.lock().unwrap() = accepted.iter().map(|s| s.to_string()).collect();
    let base = common_rooms::serve(Router::new().fallback(handle).with_state(app.clone())).await;
    (app, format!("{base}/hooks/confsync"))
}

fn provider(url: &str, secret: &str) -> WebhookProvider {
    let config: WebhookConfig = serde_json::from_value(json!({
        "url": url, "secret": secret, "timeout_secs": 5, "name": "Acme Video",
    }))
    .unwrap();
    WebhookProvider::new(config).unwrap()
}

fn meeting_spec() -> confsync_providers::MeetingSpec {
    spec(
        "Quarterly review",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    )
}

#[tokio::test]
async fn every_operation_is_posted_signed_with_its_documented_shape() {
    let (app, url) = receiver(&[SECRET]).await;
    let p = provider(&url, SECRET);
    assert_eq!(p.display_name(), "Acme Video");
    let m = p.create(&meeting_spec(), "conf-1/create").await.unwrap();
    assert_eq!(
        m,
        Meeting {
            meeting_id: "m-1".into(),
            join_url: "https://video.example.com/r/1".into()
        }
    );
    let sent = app.fake.requests();
    let create = sent[0].json();
    assert_eq!(
        create,
        json!({
            "type": "create",
            "idempotencyKey": "conf-1/create",
            "spec": {
                "title": "Quarterly review",
                "description": "Agenda",
                "start": {"at": "2030-06-01T10:00:00Z"},
                "end": {"at": "2030-06-01T11:00:00Z"},
                "timeZone": "Europe/Berlin",
                "recurrence": [],
                "attendees": ["a@example.com", "b@example.com"],
                "organizer": "o@example.com",
            }
        })
    );
    let signature = sent[0].header("confsync-signature").unwrap();
    assert!(
        signature.starts_with("v1=") && signature.len() == 67,
        "{signature}"
    );
    assert!(
        sent[0]
            .header("confsync-timestamp")
            .unwrap()
            .parse::<i64>()
            .is_ok()
    );

    // An update without a new URL answers None; with one, the new URL.
    let weekly = series(
        "Quarterly review",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    );
    assert_eq!(p.update("m-1", &weekly, "u1").await.unwrap(), None);
    *app.next_join_url.lock().unwrap() = Some("https://video.example.com/r/1b".into());
    assert_eq!(
        p.update("m-1", &weekly, "u2").await.unwrap().as_deref(),
        Some("https://video.example.com/r/1b")
    );
    p.update_occurrence(
        "m-1",
        at("2030-06-08T10:00:00Z"),
        at("2030-06-08T14:00:00Z"),
        at("2030-06-08T15:00:00Z"),
        "Moved",
        "o1",
    )
    .await
    .unwrap();
    p.cancel_occurrence("m-1", day("2030-06-15"), "c1")
        .await
        .unwrap();
    let sent = app.fake.requests();
    assert_eq!(
        sent[3].json(),
        json!({
            "type": "update_occurrence", "idempotencyKey": "o1", "meetingId": "m-1",
            "occurrence": {"at": "2030-06-08T10:00:00Z"},
            "start": {"at": "2030-06-08T14:00:00Z"},
            "end": {"at": "2030-06-08T15:00:00Z"},
            "title": "Moved",
        })
    );
    assert_eq!(sent[4].json()["occurrence"], json!({"day": "2030-06-15"}));
    p.delete("m-1", "d1").await.unwrap();
    p.delete("m-1", "d1").await.unwrap(); // 404: done
    assert!(matches!(
        p.update("m-1", &weekly, "u3").await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(matches!(
        p.cancel_occurrence("m-1", day("2030-06-22"), "c2").await,
        Err(ProviderError::NotFound { .. })
    ));
    assert_eq!(app.fake.requests().len(), 9);
    app.fake.assert_clean();
}

#[tokio::test]
async fn a_repeated_create_adopts_the_meeting_the_409_carries() {
    let (app, url) = receiver(&[SECRET]).await;
    let p = provider(&url, SECRET);
    let first = p.create(&meeting_spec(), "k").await.unwrap();
    let again = p.create(&meeting_spec(), "k").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.meetings.lock().unwrap().len(), 1);
    // A 409 that does not say which meeting: a conflict.
    app.fake
        .fail_next([Canned::json(409, json!({"error": "busy"}))]);
    let e = p.create(&meeting_spec(), "k2").await.unwrap_err();
    assert!(matches!(e, ProviderError::Conflict { .. }), "{e:?}");
    app.fake.assert_clean();
}

#[tokio::test]
async fn a_rejected_signature_is_a_permanent_configuration_error() {
    let (_app, url) = receiver(&[SECRET]).await;
    let p = provider(&url, "not-the-receivers-secret-42");
    let e = p.create(&meeting_spec(), "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("rejected our signature"), "{text}");
    assert!(!text.contains("not-the-receivers-secret-42"), "{text}");
}

#[tokio::test]
async fn a_secret_rotation_works_while_the_receiver_accepts_both() {
    let (app, url) = receiver(&[SECRET, OLD_SECRET]).await;
    provider(&url, OLD_SECRET)
        .create(&meeting_spec(), "a")
        .await
        .unwrap();
    provider(&url, SECRET)
        .create(&meeting_spec(), "b")
        .await
        .unwrap();
    // The receiver drops the old secret: only the new one still works.
    *app.secrets.lock().unwrap() = vec![SECRET.into()];
    assert!(
        provider(&url, OLD_SECRET)
            .create(&meeting_spec(), "c")
            .await
            .is_err()
    );
    provider(&url, SECRET)
        .create(&meeting_spec(), "d")
        .await
        .unwrap();
    app.fake.assert_clean();
}

#[tokio::test]
async fn faults_are_classified() {
    let (app, url) = receiver(&[SECRET]).await;
    let p = provider(&url, SECRET);
    let s = meeting_spec();
    app.fake.fail_next([
        Canned::json(429, json!({})).header("retry-after", "4"),
        Canned::json(429, json!({})),
        Canned::json(503, json!({"error": "down"})).header("x-request-id", "wh-1"),
        Canned::html(200),
        Canned::new(200, r#"{"meetingId": "m-9", "joinU"#),
        Canned::json(200, json!({"joinUrl": "https://video.example.com/r/9"})),
        Canned::json(400, json!({"error": "title too long"})),
        Canned::json(403, json!({"error": "forbidden"})),
        Canned::json(
            200,
            json!({"meetingId": "m-9", "joinUrl": "javascript:alert(1)"}),
        ),
        Canned::html(200),
    ]);
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(4)),
        "{e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }) && e.to_string().contains("request id wh-1"),
        "{e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient { .. }), "HTML: {e:?}");
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }),
        "truncated: {e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }) && e.to_string().contains("no meetingId"),
        "missing id: {e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    assert!(e.to_string().contains("title too long"));
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Permanent { .. }) && e.to_string().contains("signature"),
        "{e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Permanent { .. }) && e.to_string().contains("joinUrl"),
        "{e:?}"
    );
    let e = p.update("m-1", &s, "u").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }),
        "HTML on update: {e:?}"
    );
    // Nothing was made by any of these.
    assert!(app.meetings.lock().unwrap().is_empty());
    app.fake.assert_clean();
}

#[test]
fn config_is_validated() {
    let parse = |v: Value| serde_json::from_value::<WebhookConfig>(v);
    let c = parse(json!({"url": "https://hooks.example.com/confsync", "secret": SECRET})).unwrap();
    assert_eq!(c.timeout_secs, 10);
    let p = WebhookProvider::new(c).unwrap();
    assert_eq!(p.name(), "webhook");
    assert_eq!(p.display_name(), "Video call");
    assert_eq!(p.capabilities(), confsync_providers::Capabilities::ALL);
    assert!(parse(json!({"url": "https://x", "secret": SECRET, "retries": 3})).is_err());
    let e = WebhookProvider::new(parse(json!({"url": "ftp://x", "secret": SECRET})).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("url"), "{e}");
    let e = WebhookProvider::new(parse(json!({"url": "https://x", "secret": "short"})).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("secret") && !e.contains("short"), "{e}");
}

#[tokio::test]
async fn a_410_on_a_change_asks_for_a_new_meeting_and_a_410_on_delete_is_done() {
    let (app, url) = receiver(&[SECRET]).await;
    let p = provider(&url, SECRET);
    let s = meeting_spec();
    app.fake.fail_next([
        Canned::json(410, json!({"error": "room expired"})),
        Canned::json(410, json!({})),
        Canned::json(410, json!({})),
    ]);
    let e = p.update("m-1", &s, "u1").await.unwrap_err();
    assert!(matches!(e, ProviderError::Recreate { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let e = p
        .cancel_occurrence("m-1", at("2030-06-01T10:00:00Z"), "c1")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Recreate { .. }), "{e:?}");
    p.delete("m-1", "d1")
        .await
        .expect("a gone meeting is deleted");
    app.fake.assert_clean();
}

#[tokio::test]
async fn the_doctor_check_sends_nothing_and_says_so() {
    let (app, url) = receiver(&["s3cret-webhook-0123456789"]).await;
    let what = provider(&url, "s3cret-webhook-0123456789")
        .check()
        .await
        .unwrap();
    assert!(what.starts_with("webhook: not checked"), "{what}");
    assert!(!what.contains("s3cret"), "{what}");
    assert!(app.fake.requests().is_empty(), "a check must not act");
}
