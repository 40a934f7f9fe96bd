//! The `daily` adapter against a fake Daily REST API written from Daily's reference
//! (`/rooms` create, get, set config, delete; errors as `{"error", "info"}`).

mod common_rooms;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use common_rooms::{Canned, Fake, Seen, at, day, series, serve, spec, unix};
use confsync_providers::daily::{DailyConfig, DailyProvider, RateLimiter};
use confsync_providers::{ConferenceProvider, ProviderError};
use serde_json::{Value, json};

const KEY: &str = "test-api-key-123";

#[derive(Clone)]
struct App {
    fake: Fake,
    rooms: Arc<Mutex<BTreeMap<String, Value>>>,
    domain: Arc<Mutex<String>>,
    /// When each DELETE arrived (tokio's clock), for the documented limit.
    deletes: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl App {
    fn new() -> App {
        App {
            fake: Fake::default(),
            rooms: Arc::default(),
            domain: Arc::new(Mutex::new("https://confsync-test.daily.co".into())),
            deletes: Arc::default(),
        }
    }

    fn room(&self, name: &str) -> Option<Value> {
        self.rooms.lock().unwrap().get(name).cloned()
    }

    /// What Daily does when a room's exp passes: it looks deleted.
    fn expire(&self, name: &str) {
        self.rooms.lock().unwrap().remove(name);
    }
}

fn error(status: u16, kind: &str, info: &str) -> Response {
    Canned::json(status, json!({"error": kind, "info": info}))
        .header("x-request-id", "req-42")
        .into_response()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks a `properties` object; answers the problem.
fn check_properties(properties: &Value, creating: bool) -> Result<(), String> {
    let Some(map) = properties.as_object() else {
        return Err("properties is not an object".into());
    };
    for (k, v) in map {
        match k.as_str() {
            "nbf" if v.is_i64() => {}
            "exp" if v.is_i64() || (!creating && v.is_null()) => {}
            "eject_at_room_exp" if v.is_boolean() => {}
            _ => return Err(format!("unexpected property {k} = {v}")),
        }
    }
    if !map.contains_key("nbf") {
        return Err("no nbf".into());
    }
    Ok(())
}

fn check_privacy(body: &Value) -> Result<(), String> {
    match body.get("privacy").and_then(Value::as_str) {
        Some("public" | "private") => Ok(()),
        other => Err(format!("privacy {other:?}")),
    }
}

fn room_object(app: &App, name: &str, privacy: &str, config: Value) -> Value {
    json!({
        "id": format!("id-{name}"),
        "name": name,
        "api_created": true,
        "privacy": privacy,
        "url": format!("{}/{name}", app.domain.lock().unwrap()),
        "created_at": "2026-01-01T00:00:00.000Z",
        "config": config,
    })
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (seen, fault) = app.fake.record(method, &uri, headers, body);
    if let Some(canned) = fault {
        return canned.into_response();
    }
    if seen.header("authorization") != Some(&format!("Bearer {KEY}")) {
        return error(401, "authentication-error", "bad key");
    }
    let Some(path) = seen.path.strip_prefix("/v1/rooms") else {
        return app.fake.problem(format!("unexpected path {}", seen.line()));
    };
    let body = seen.json();
    if seen.method == Method::POST && seen.header("content-type") != Some("application/json") {
        return app.fake.problem("POST without JSON content type".into());
    }
    match (seen.method.as_str(), path) {
        // "List rooms": `limit` 1..=100 (default 100), `{total_count, data}`.
        ("GET", "") => {
            let limit = seen
                .query
                .as_deref()
                .unwrap_or("")
                .split('&')
                .find_map(|p| p.strip_prefix("limit="))
                .map(|l| l.parse::<usize>());
            let limit = match limit {
                None => 100,
                Some(Ok(l)) if (1..=100).contains(&l) => l,
                Some(_) => return app.fake.problem(format!("bad limit in {}", seen.line())),
            };
            let rooms = app.rooms.lock().unwrap();
            let data: Vec<Value> = rooms.values().take(limit).cloned().collect();
            Canned::json(200, json!({"total_count": rooms.len(), "data": data})).into_response()
        }
        ("POST", "") => {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            if !valid_name(&name) {
                return app.fake.problem(format!("invalid room name {name:?}"));
            }
            if let Err(p) =
                check_privacy(&body).and_then(|_| check_properties(&body["properties"], true))
            {
                return app.fake.problem(p);
            }
            if app.room(&name).is_some() {
                return error(
                    400,
                    "invalid-request-error",
                    &format!("a room named {name} already exists"),
                );
            }
            let room = room_object(
                &app,
                &name,
                body["privacy"].as_str().unwrap(),
                body["properties"].clone(),
            );
            app.rooms.lock().unwrap().insert(name, room.clone());
            Canned::json(200, room).into_response()
        }
        ("GET", name) if name.starts_with('/') => match app.room(&name[1..]) {
            Some(room) => Canned::json(200, room).into_response(),
            None => error(404, "not-found", "room not found"),
        },
        ("POST", name) if name.starts_with('/') => {
            let name = &name[1..];
            if let Err(p) =
                check_privacy(&body).and_then(|_| check_properties(&body["properties"], false))
            {
                return app.fake.problem(p);
            }
            let mut rooms = app.rooms.lock().unwrap();
            let Some(room) = rooms.get_mut(name) else {
                return error(404, "not-found", "room not found");
            };
            room["privacy"] = body["privacy"].clone();
            for (k, v) in body["properties"].as_object().unwrap() {
                if v.is_null() {
                    room["config"].as_object_mut().unwrap().remove(k);
                } else {
                    room["config"][k] = v.clone();
                }
            }
            Canned::json(200, room.clone()).into_response()
        }
        ("DELETE", name) if name.starts_with('/') => {
            // docs.daily.co, REST API reference, "Rate limits": DELETE /rooms/:name allows
            // "about 2 requests per second, or 50 requests over a 30 second window"; beyond
            // that Daily answers 429 rate-limit-error. The fake enforces the window strictly.
            {
                let mut deletes = app.deletes.lock().unwrap();
                let recent = deletes
                    .iter()
                    .filter(|t| seen.at.duration_since(**t) < Duration::from_secs(30))
                    .count();
                if recent >= 50 {
                    return Canned::json(429, json!({"error": "rate-limit-error"}))
                        .header("retry-after", "5")
                        .into_response();
                }
                deletes.push(seen.at);
            }
            match app.rooms.lock().unwrap().remove(&name[1..]) {
                Some(_) => {
                    Canned::json(200, json!({"deleted": true, "name": &name[1..]})).into_response()
                }
                None => error(404, "not-found", "room not found"),
            }
        }
        _ => app.fake.problem(format!("unexpected {}", seen.line())),
    }
}

async fn daily(extra: Value) -> (App, DailyProvider) {
    let app = App::new();
    let base = serve(Router::new().fallback(handle).with_state(app.clone())).await;
    let mut config = json!({"api_key": KEY, "base_url": format!("{base}/v1"), "timeout_secs": 5});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let config: DailyConfig = serde_json::from_value(config).unwrap();
    (app, DailyProvider::new(config).unwrap())
}

fn meeting_spec() -> confsync_providers::MeetingSpec {
    spec(
        "Planning",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    )
}

fn no_secret(e: &ProviderError) {
    assert!(!e.to_string().contains(KEY), "secret leaked: {e}");
}

#[tokio::test]
async fn create_makes_one_deterministic_room_with_the_join_window() {
    let (app, p) = daily(json!({})).await;
    let m = p.create(&meeting_spec(), "conf-1/create").await.unwrap();
    assert!(
        m.meeting_id.starts_with("cs-") && m.meeting_id.len() == 35,
        "{m:?}"
    );
    assert!(m.meeting_id[3..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        m.join_url,
        format!("https://confsync-test.daily.co/{}", m.meeting_id)
    );
    let sent = app.fake.requests();
    assert_eq!(app.fake.lines(), ["POST /v1/rooms"]);
    let body = sent[0].json();
    assert_eq!(body["name"], json!(m.meeting_id));
    assert_eq!(body["privacy"], "public");
    // nbf = start - 15 min, exp = end + 60 min (the defaults).
    assert_eq!(
        body["properties"],
        json!({
            "nbf": unix(at("2030-06-01T09:45:00Z")),
            "exp": unix(at("2030-06-01T12:00:00Z")),
            "eject_at_room_exp": true,
        })
    );
    // The name is not the title, nor the key.
    assert!(!m.meeting_id.contains("Planning") && !m.meeting_id.contains("conf-1"));
    let other = p.create(&meeting_spec(), "conf-2/create").await.unwrap();
    assert_ne!(other.meeting_id, m.meeting_id);
    app.fake.assert_clean();
}

#[tokio::test]
async fn a_retried_create_adopts_the_room_daily_says_already_exists() {
    let (app, p) = daily(json!({})).await;
    let first = p.create(&meeting_spec(), "k").await.unwrap();
    app.fake.clear();
    let again = p.create(&meeting_spec(), "k").await.unwrap();
    assert_eq!(again, first, "same key, same room");
    let name = &first.meeting_id;
    assert_eq!(
        app.fake.lines(),
        [
            "POST /v1/rooms".to_owned(),
            format!("GET /v1/rooms/{name}"),
            format!("POST /v1/rooms/{name}"),
        ]
    );
    assert_eq!(app.rooms.lock().unwrap().len(), 1);
    app.fake.assert_clean();
}

#[tokio::test]
async fn a_400_for_another_reason_is_permanent() {
    let (app, p) = daily(json!({})).await;
    app.fake.fail_next([Canned::json(
        400,
        json!({"error": "invalid-request-error", "info": "nbf must be a number"}),
    )]);
    let e = p.create(&meeting_spec(), "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    assert!(e.to_string().contains("nbf must be a number"), "{e}");
    assert_eq!(app.fake.lines().len(), 2, "checked with a GET first");
    no_secret(&e);
}

#[tokio::test]
async fn a_reschedule_moves_the_window_and_keeps_the_url() {
    let (app, p) = daily(json!({"grace_minutes": 30, "early_join_minutes": 5})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    app.fake.clear();
    let moved = spec(
        "Planning",
        at("2030-06-02T15:00:00Z"),
        at("2030-06-02T16:30:00Z"),
    );
    let url = p.update(&m.meeting_id, &moved, "k2").await.unwrap();
    assert_eq!(url.as_deref(), Some(m.join_url.as_str()));
    let sent = app.fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].line(), format!("POST /v1/rooms/{}", m.meeting_id));
    assert_eq!(
        sent[0].json()["properties"]["nbf"],
        unix(at("2030-06-02T14:55:00Z"))
    );
    assert_eq!(
        sent[0].json()["properties"]["exp"],
        unix(at("2030-06-02T17:00:00Z"))
    );
    let room = app.room(&m.meeting_id).unwrap();
    assert_eq!(room["config"]["exp"], unix(at("2030-06-02T17:00:00Z")));
    app.fake.assert_clean();
}

#[tokio::test]
async fn an_expired_room_is_recreated_with_the_same_name_and_its_new_url_returned() {
    let (app, p) = daily(json!({})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    app.expire(&m.meeting_id);
    *app.domain.lock().unwrap() = "https://renamed-team.daily.co".into();
    app.fake.clear();
    let url = p
        .update(&m.meeting_id, &meeting_spec(), "k2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        url,
        format!("https://renamed-team.daily.co/{}", m.meeting_id)
    );
    assert_ne!(url, m.join_url, "the engine writes the new URL back");
    assert_eq!(
        app.fake.lines(),
        [
            format!("POST /v1/rooms/{}", m.meeting_id),
            "POST /v1/rooms".to_owned()
        ]
    );
    assert_eq!(app.fake.requests()[1].json()["name"], json!(m.meeting_id));
    app.fake.assert_clean();
}

/// Issue 14, item 9: a series' room used to get no `exp` and piled up against the plan's room
/// limit. Now it expires after the series' last occurrence (Daily's room `exp` property,
/// docs.daily.co, REST API reference, rooms, "config"), and an endless series after a bounded
/// horizon renewed by each update.
#[tokio::test]
async fn a_series_room_expires_after_its_last_occurrence() {
    let (app, p) = daily(json!({})).await;
    let single = p.create(&meeting_spec(), "k").await.unwrap();
    // Weekly, 10 times from Saturday 2030-06-01: the last is 2030-08-03, 10:00 to 11:00 UTC.
    let weekly = series(
        "Weekly",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    );
    let s = p.create(&weekly, "series").await.unwrap();
    let last_exp = unix(at("2030-08-03T12:00:00Z"));
    assert_eq!(
        app.fake.requests()[1].json()["properties"],
        json!({"nbf": unix(at("2030-06-01T09:45:00Z")), "exp": last_exp,
               "eject_at_room_exp": true})
    );
    assert_eq!(app.room(&s.meeting_id).unwrap()["config"]["exp"], last_exp);
    // A single meeting that becomes the series: its room now closes after the last occurrence.
    p.update(&single.meeting_id, &weekly, "k3").await.unwrap();
    assert_eq!(
        app.room(&single.meeting_id).unwrap()["config"]["exp"],
        last_exp
    );
    // UNTIL (a date, in the event's zone) and EXDATE are honoured.
    let mut until = weekly.clone();
    until.recurrence = vec!["RRULE:FREQ=DAILY;UNTIL=20300605".into()];
    p.update(&s.meeting_id, &until, "u").await.unwrap();
    assert_eq!(
        app.room(&s.meeting_id).unwrap()["config"]["exp"],
        unix(at("2030-06-05T12:00:00Z"))
    );

    // Endless: now + series_horizon_days (90), renewed by every update.
    let mut endless = weekly.clone();
    endless.recurrence = vec!["RRULE:FREQ=WEEKLY".into()];
    let before = chrono::Utc::now();
    let e = p.create(&endless, "endless").await.unwrap();
    let exp = app.room(&e.meeting_id).unwrap()["config"]["exp"]
        .as_i64()
        .unwrap();
    let horizon = chrono::TimeDelta::days(90);
    assert!(
        exp >= (before + horizon).timestamp() && exp <= (chrono::Utc::now() + horizon).timestamp()
            || exp == (unix(at("2030-06-01T09:45:00Z")) + horizon.num_seconds()),
        "{exp}"
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn all_day_and_past_events_get_sensible_windows() {
    let (app, p) = daily(json!({"early_join_minutes": 0, "grace_minutes": 0})).await;
    p.create(&spec("Offsite", day("2030-06-01"), day("2030-06-02")), "d")
        .await
        .unwrap();
    let properties = app.fake.requests()[0].json()["properties"].clone();
    // The day in every zone: 2030-06-01 00:00 at UTC+14 to 2030-06-02 00:00 at UTC-12.
    assert_eq!(properties["nbf"], unix(at("2030-05-31T10:00:00Z")));
    assert_eq!(properties["exp"], unix(at("2030-06-02T12:00:00Z")));
    let before = chrono::Utc::now().timestamp();
    p.create(
        &spec(
            "Old",
            at("2020-01-01T10:00:00Z"),
            at("2020-01-01T11:00:00Z"),
        ),
        "old",
    )
    .await
    .unwrap();
    let exp = app.fake.requests()[1].json()["properties"]["exp"]
        .as_i64()
        .unwrap();
    assert!(
        exp >= before + 600,
        "a past event's room must still be accepted"
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn deletes_are_done_when_the_room_is_gone() {
    let (app, p) = daily(json!({"delete_interval_ms": 0})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    p.delete(&m.meeting_id, "d").await.unwrap();
    assert!(app.room(&m.meeting_id).is_none());
    p.delete(&m.meeting_id, "d").await.unwrap(); // 404: done
    let lines = app.fake.lines();
    assert_eq!(lines[1], format!("DELETE /v1/rooms/{}", m.meeting_id));
    assert_eq!(lines.len(), 3);
    app.fake.assert_clean();
}

#[tokio::test]
async fn faults_are_classified_without_leaking_the_key() {
    let (app, p) = daily(json!({})).await;
    app.fake.fail_next([
        Canned::json(429, json!({"error": "rate-limit-error"})).header("retry-after", "7"),
        Canned::json(429, json!({"error": "rate-limit-error"})),
        Canned::json(500, json!({"error": "server-error"})).header("x-request-id", "r-500"),
        Canned::html(502),
        Canned::new(200, r#"{"id": "x", "name": "cs-1", "ur"#),
        Canned::json(200, json!({"id": "x", "name": "cs-1"})),
        Canned::json(403, json!({"error": "forbidden-error"})),
    ]);
    let s = meeting_spec();
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
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
    assert!(matches!(e, ProviderError::Transient { .. }), "{e:?}");
    assert!(e.to_string().contains("HTTP 500, request id r-500"), "{e}");
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient { .. }), "{e:?}");
    assert!(e.to_string().contains("502 Bad Gateway"), "{e}");
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }) && e.to_string().contains("unreadable"),
        "truncated JSON: {e:?}"
    );
    let e = p.create(&s, "k").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }) && e.to_string().contains("no name or url"),
        "missing url: {e:?}"
    );
    let e = p.delete("cs-abc", "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    no_secret(&e);
    // A wrong key: re-authorisation needed.
    let (_other, wrong) = daily(json!({"api_key": "another-key-xyz"})).await;
    let e = wrong.create(&s, "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Reauth { .. }), "{e:?}");
    assert!(!e.to_string().contains("another-key-xyz"));
    // A room name that cannot be Daily's never reaches the URL.
    let e = p.delete("../users", "k").await.unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    app.fake.assert_clean();
}

#[test]
fn config_is_validated_with_precise_messages() {
    let parse = |v: Value| serde_json::from_value::<DailyConfig>(v);
    let c = parse(json!({"api_key": "k"})).unwrap();
    assert_eq!(c.base_url, "https://api.daily.co/v1");
    assert_eq!(c.room_prefix, "cs-");
    assert_eq!(c.delete_interval_ms, 500);
    assert_eq!((c.delete_burst, c.delete_window_secs), (50, 30));
    assert_eq!(c.series_horizon_days, 90);
    assert!(parse(json!({"api_key": "k", "colour": "red"})).is_err());
    assert!(parse(json!({"api_key": "k", "privacy": "secret"})).is_err());
    let e = DailyProvider::new(parse(json!({"api_key": "k", "room_prefix": "a b"})).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("room_prefix"), "{e}");
    let e = DailyProvider::new(parse(json!({"api_key": "k", "grace_minutes": 100000})).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("grace_minutes"), "{e}");
    let e = DailyProvider::new(parse(json!({"api_key": "k", "base_url": "ftp://x"})).unwrap())
        .err()
        .unwrap();
    assert!(e.contains("base_url"), "{e}");
    let p = DailyProvider::new(parse(json!({"api_key": "k"})).unwrap()).unwrap();
    assert_eq!(p.name(), "daily");
    let caps = p.capabilities();
    assert!(caps.time && !caps.title && !caps.occurrences);
}

// The delete limiter, on tokio's paused clock: no wall-clock assertions.

#[tokio::test(start_paused = true)]
async fn the_limiter_spaces_callers_in_order() {
    let limiter = Arc::new(RateLimiter::new(Duration::from_millis(500)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            l.acquire().await;
            tokio::time::Instant::now() - start
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.push(t.await.unwrap().as_millis());
    }
    offsets.sort();
    assert_eq!(offsets, [0, 500, 1000, 1500]);
    // After a quiet spell the next caller goes at once.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = tokio::time::Instant::now();
    limiter.acquire().await;
    assert_eq!(tokio::time::Instant::now(), before);
    // A server's Retry-After holds everyone back.
    limiter.hold_off(Duration::from_secs(3));
    let before = tokio::time::Instant::now();
    limiter.acquire().await;
    assert_eq!(tokio::time::Instant::now() - before, Duration::from_secs(3));
}

fn deletes(seen: &[Seen]) -> Vec<tokio::time::Instant> {
    seen.iter()
        .filter(|s| s.method == Method::DELETE)
        .map(|s| s.at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_provider_sends_deletes_through_one_shared_limiter() {
    let (app, p) = daily(json!({"timeout_secs": 300})).await;
    let p = Arc::new(p);
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(
            p.create(&meeting_spec(), &format!("k{i}"))
                .await
                .unwrap()
                .meeting_id,
        );
    }
    let mut tasks = Vec::new();
    for name in names {
        let p = p.clone();
        tasks.push(tokio::spawn(async move { p.delete(&name, "d").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let at = deletes(&app.fake.requests());
    assert_eq!(at.len(), 3);
    let mut at = at;
    at.sort();
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(500),
            "deletes {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(app.rooms.lock().unwrap().is_empty());
    app.fake.assert_clean();
}

/// Issue 14, item 9: 500 ms apart alone allows 60 deletes in 30 s; Daily documents about 2 a
/// second *or 50 over 30 s* for DELETE /rooms/:name (docs.daily.co, REST API reference, "Rate
/// limits"). The fake answers the 51st delete within 30 s with 429.
#[tokio::test(start_paused = true)]
async fn deletes_keep_to_fifty_per_thirty_seconds() {
    let (app, p) = daily(json!({"timeout_secs": 300})).await;
    let p = Arc::new(p);
    let mut names = Vec::new();
    for i in 0..60 {
        names.push(
            p.create(&meeting_spec(), &format!("k{i}"))
                .await
                .unwrap()
                .meeting_id,
        );
    }
    let mut tasks = Vec::new();
    for name in names {
        let p = p.clone();
        tasks.push(tokio::spawn(async move { p.delete(&name, "d").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut at = deletes(&app.fake.requests());
    at.sort();
    assert_eq!(at.len(), 60);
    for (i, t) in at.iter().enumerate().skip(50) {
        assert!(*t - at[i - 50] >= Duration::from_secs(30), "delete {i}");
    }
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(500));
    }
    assert!(app.rooms.lock().unwrap().is_empty());
    app.fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_429_on_delete_holds_later_deletes_back() {
    let (app, p) = daily(json!({"timeout_secs": 300})).await;
    let a = p.create(&meeting_spec(), "a").await.unwrap().meeting_id;
    let b = p.create(&meeting_spec(), "b").await.unwrap().meeting_id;
    app.fake.fail_next([
        Canned::json(429, json!({"error": "rate-limit-error"})).header("retry-after", "3")
    ]);
    let e = p.delete(&a, "d").await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    let first = deletes(&app.fake.requests())[0];
    p.delete(&b, "d").await.unwrap();
    let second = deletes(&app.fake.requests())[1];
    assert!(
        second - first >= Duration::from_secs(3),
        "{:?}",
        second - first
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn the_doctor_check_lists_one_room_and_tells_a_refused_key() {
    let (app, p) = daily(json!({})).await;
    p.create(&meeting_spec(), "conf-1/create").await.unwrap();
    let what = p.check().await.unwrap();
    assert!(what.contains("API key accepted"), "{what}");
    let listings: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.line() == "GET /v1/rooms")
        .collect();
    assert_eq!(listings.len(), 1, "{:?}", app.fake.lines());
    assert_eq!(listings[0].query.as_deref(), Some("limit=1"));
    let (_, wrong) = daily(json!({"api_key": "not-the-key"})).await;
    let err = wrong.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-key"), "{err}");
    no_secret(&err);
    app.fake.assert_clean();
}
