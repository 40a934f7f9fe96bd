//! The Zoom adapter against a fake Zoom written from the Meetings API v2 reference.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use common::{Fake, Reply, Request, bad_request, only_keys};
use confsync_providers::http::Secret;
use confsync_providers::zoom::{ZoomConfig, ZoomProvider, marker_for};
use confsync_providers::{ConferenceProvider, MeetingSpec, ProviderError, When};
use serde_json::{Value, json};

const ACCOUNT: &str = "acc-1";
const CLIENT_ID: &str = "cid-1";
const CLIENT_SECRET: &str = "zoom-client-secret-XYZ";
const HOST_SECRET: &str = "HOST-SECRET-ZAK";

#[derive(Default)]
struct Zoom {
    /// Lifetime of the tokens handed out.
    token_lifetime: u64,
    tokens_issued: u32,
    valid_tokens: Vec<String>,
    meetings: BTreeMap<u64, ZoomMeeting>,
    next_id: u64,
    /// Meetings per page of the listing (Zoom caps page_size at 300).
    page_size: usize,
    moved_occurrences: Vec<(u64, String, Value)>,
    deleted_occurrences: Vec<(u64, String)>,
}

struct ZoomMeeting {
    body: Value,
    deleted: bool,
    occurrences: Vec<Value>,
}

fn zoom_error(status: u16, code: u32, message: &str) -> Reply {
    Reply::json(status, json!({ "code": code, "message": message }))
}

fn handle(zoom: &mut Zoom, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.path == "/oauth/token" {
        return token(zoom, r, v);
    }
    let Some(path) = r.path.strip_prefix("/v2") else {
        return bad_request(v, format!("{} {}: not a Zoom path", r.method, r.path));
    };
    if !r
        .bearer()
        .is_some_and(|t| zoom.valid_tokens.iter().any(|v| v == t))
    {
        return zoom_error(401, 124, "Invalid access token.");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), segments.as_slice()) {
        ("POST", ["users", "me", "meetings"]) => create(zoom, r, v),
        ("GET", ["users", "me", "meetings"]) => list(zoom, r, v),
        // Any other user: Zoom's "User does not exist" (code 1001).
        ("GET", ["users", user, "meetings"]) => {
            zoom_error(404, 1001, &format!("User does not exist: {user}."))
        }
        (method, ["meetings", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return zoom_error(404, 3001, "Meeting does not exist.");
            };
            match zoom.meetings.get_mut(&id) {
                Some(m) if !m.deleted => {}
                _ => return zoom_error(404, 3001, &format!("Meeting does not exist: {id}.")),
            }
            match method {
                "GET" => get(zoom, id),
                "PATCH" => patch(zoom, id, r, v),
                "DELETE" => delete(zoom, id, r, v),
                _ => bad_request(v, format!("{method} {path}: no such endpoint")),
            }
        }
        _ => bad_request(v, format!("{} {path}: no such endpoint", r.method)),
    }
}

fn token(zoom: &mut Zoom, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.method != "POST" {
        return bad_request(v, format!("token: method {}", r.method));
    }
    if r.query("grant_type") != Some("account_credentials")
        || r.query("account_id") != Some(ACCOUNT)
    {
        return bad_request(v, format!("token: query {:?}", r.query));
    }
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    if r.header("authorization") != Some(format!("Basic {basic}").as_str()) {
        return Reply::json(
            400,
            json!({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}),
        );
    }
    zoom.tokens_issued += 1;
    let token = format!("zt-{}", zoom.tokens_issued);
    zoom.valid_tokens.push(token.clone());
    Reply::json(
        200,
        json!({"access_token": token, "token_type": "bearer",
               "expires_in": zoom.token_lifetime, "scope": "meeting:write:admin"}),
    )
}

fn is_local_time(s: &str) -> bool {
    NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S").is_ok()
}

/// The full-meeting body rules of POST /users/{userId}/meetings and PATCH /meetings/{id}.
fn check_meeting_body(body: &Value, v: &mut Vec<String>) {
    only_keys(
        body,
        &[
            "topic",
            "agenda",
            "type",
            "start_time",
            "duration",
            "timezone",
            "recurrence",
            "settings",
        ],
        "meeting",
        v,
    );
    if body["topic"]
        .as_str()
        .is_none_or(|t| t.chars().count() > 200)
    {
        v.push(format!(
            "topic missing or over 200 characters: {}",
            body["topic"]
        ));
    }
    if body["agenda"]
        .as_str()
        .is_none_or(|t| t.chars().count() > 2000)
    {
        v.push("agenda missing or over 2000 characters".into());
    }
    let kind = body["type"].as_u64();
    if !matches!(kind, Some(2 | 3 | 8)) {
        v.push(format!("type {} is not 2, 3 or 8", body["type"]));
    }
    if body["timezone"].as_str().is_none_or(str::is_empty) {
        v.push("timezone missing".into());
    }
    if matches!(kind, Some(2 | 8)) {
        if !body["start_time"].as_str().is_some_and(is_local_time) {
            v.push(format!(
                "start_time {} is not yyyy-MM-ddTHH:mm:ss",
                body["start_time"]
            ));
        }
        if body["duration"].as_u64().is_none_or(|d| d == 0) {
            v.push(format!(
                "duration {} is not a positive number of minutes",
                body["duration"]
            ));
        }
    }
    match (kind, body.get("recurrence")) {
        (Some(8), Some(rec)) => check_recurrence(rec, v),
        (Some(8), None) => v.push("type 8 without recurrence".into()),
        (_, Some(_)) => v.push("recurrence on a meeting that is not type 8".into()),
        _ => {}
    }
    if kind == Some(3) && body.get("start_time").is_some() {
        v.push("a type 3 meeting has no start_time".into());
    }
    let invitees = &body["settings"]["meeting_invitees"];
    match invitees.as_array() {
        Some(list) => {
            for i in list {
                only_keys(i, &["email"], "meeting_invitees[]", v);
                if !i["email"].as_str().is_some_and(|e| e.contains('@')) {
                    v.push(format!("invitee without email: {i}"));
                }
            }
        }
        None => v.push("settings.meeting_invitees missing".into()),
    }
}

fn check_recurrence(rec: &Value, v: &mut Vec<String>) {
    only_keys(
        rec,
        &[
            "type",
            "repeat_interval",
            "weekly_days",
            "monthly_day",
            "monthly_week",
            "monthly_week_day",
            "end_times",
            "end_date_time",
        ],
        "recurrence",
        v,
    );
    let max = match rec["type"].as_u64() {
        Some(1) => 90,
        Some(2) => 12,
        Some(3) => 3,
        _ => {
            v.push(format!("recurrence.type {}", rec["type"]));
            return;
        }
    };
    if rec["repeat_interval"]
        .as_u64()
        .is_none_or(|i| i == 0 || i > max)
    {
        v.push(format!("repeat_interval {}", rec["repeat_interval"]));
    }
    if rec["type"] == 2
        && !rec["weekly_days"].as_str().is_some_and(|d| {
            d.split(',')
                .all(|x| x.parse::<u8>().is_ok_and(|n| (1..=7).contains(&n)))
        })
    {
        v.push(format!("weekly_days {}", rec["weekly_days"]));
    }
    if rec["type"] == 3 {
        let by_day = rec["monthly_day"]
            .as_u64()
            .is_some_and(|d| (1..=31).contains(&d));
        let by_week = rec["monthly_week"]
            .as_i64()
            .is_some_and(|w| w == -1 || (1..=4).contains(&w))
            && rec["monthly_week_day"]
                .as_u64()
                .is_some_and(|d| (1..=7).contains(&d));
        if by_day == by_week {
            v.push(format!(
                "monthly rule needs monthly_day or monthly_week+day: {rec}"
            ));
        }
    }
    match (rec.get("end_times"), rec.get("end_date_time")) {
        (Some(n), None) if n.as_u64().is_some_and(|n| (1..=50).contains(&n)) => {}
        (None, Some(t))
            if t.as_str()
                .is_some_and(|t| t.ends_with('Z') && is_local_time(t)) => {}
        other => v.push(format!("end_times xor end_date_time: {other:?}")),
    }
}

fn instant(body: &Value) -> DateTime<Utc> {
    let zone: chrono_tz::Tz = body["timezone"].as_str().unwrap().parse().unwrap();
    let local =
        NaiveDateTime::parse_from_str(body["start_time"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
            .unwrap();
    zone.from_local_datetime(&local)
        .unwrap()
        .with_timezone(&Utc)
}

fn create(zoom: &mut Zoom, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    let before = v.len();
    check_meeting_body(&body, v);
    if v.len() > before {
        return zoom_error(400, 300, "Validation Failed.");
    }
    zoom.next_id += 1;
    let id = 85_000_000_000 + zoom.next_id;
    let mut occurrences = Vec::new();
    // Occurrences for daily series with a count: enough to exercise the occurrence lookup.
    if body["type"] == 8 && body["recurrence"]["type"] == 1 {
        let first = instant(&body);
        let every = body["recurrence"]["repeat_interval"].as_i64().unwrap();
        for i in 0..body["recurrence"]["end_times"].as_i64().unwrap_or(0) {
            let at = first + chrono::TimeDelta::days(i * every);
            occurrences.push(json!({
                "occurrence_id": at.timestamp_millis().to_string(),
                "start_time": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "duration": body["duration"], "status": "available"
            }));
        }
    }
    zoom.meetings.insert(
        id,
        ZoomMeeting {
            body: body.clone(),
            deleted: false,
            occurrences: occurrences.clone(),
        },
    );
    Reply::json(
        201,
        json!({
            "id": id, "uuid": format!("uuid{id}=="), "host_id": "h1",
            "topic": body["topic"], "type": body["type"], "start_time": body["start_time"],
            "duration": body["duration"], "timezone": body["timezone"], "agenda": body["agenda"],
            "join_url": format!("https://zoom.test/j/{id}?pwd=abc"),
            "start_url": format!("https://zoom.test/s/{id}?zak={HOST_SECRET}"),
            "password": "abc", "occurrences": occurrences,
        }),
    )
}

fn list(zoom: &mut Zoom, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.query("type") != Some("upcoming") {
        return bad_request(v, format!("list: type {:?}", r.query("type")));
    }
    let requested: usize = r
        .query("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    if requested > 300 {
        return bad_request(v, format!("list: page_size {requested} over 300"));
    }
    let size = requested.min(zoom.page_size.max(1));
    let offset: usize = match r.query("next_page_token") {
        None => 0,
        Some(t) => match t.strip_prefix("tok").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return bad_request(v, format!("list: unknown next_page_token {t:?}")),
        },
    };
    let live: Vec<(&u64, &ZoomMeeting)> =
        zoom.meetings.iter().filter(|(_, m)| !m.deleted).collect();
    let page: Vec<Value> = live
        .iter()
        .skip(offset)
        .take(size)
        .map(|(id, m)| {
            json!({"id": id, "topic": m.body["topic"], "type": m.body["type"],
                   "start_time": m.body["start_time"], "agenda": m.body["agenda"],
                   "join_url": format!("https://zoom.test/j/{id}?pwd=abc"),
                   "timezone": m.body["timezone"], "created_at": "2026-11-01T00:00:00Z"})
        })
        .collect();
    let next = if offset + size < live.len() {
        format!("tok{}", offset + size)
    } else {
        String::new()
    };
    Reply::json(
        200,
        json!({"page_size": size, "total_records": live.len(), "next_page_token": next,
               "meetings": page}),
    )
}

fn get(zoom: &mut Zoom, id: u64) -> Reply {
    let m = &zoom.meetings[&id];
    Reply::json(
        200,
        json!({"id": id, "type": m.body["type"], "timezone": m.body["timezone"],
               "topic": m.body["topic"], "occurrences": m.occurrences,
               "join_url": format!("https://zoom.test/j/{id}?pwd=abc"),
               "start_url": format!("https://zoom.test/s/{id}?zak={HOST_SECRET}")}),
    )
}

fn patch(zoom: &mut Zoom, id: u64, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    if let Some(occurrence) = r.query("occurrence_id") {
        // With occurrence_id only agenda, start_time, duration and some settings change.
        only_keys(
            &body,
            &["agenda", "start_time", "duration", "timezone", "settings"],
            "occurrence",
            v,
        );
        if !body["start_time"].as_str().is_some_and(is_local_time)
            || body["duration"].as_u64().is_none()
        {
            return bad_request(v, format!("occurrence patch {body}"));
        }
        zoom.moved_occurrences
            .push((id, occurrence.to_owned(), body));
        return Reply::empty(204);
    }
    let before = v.len();
    check_meeting_body(&body, v);
    if v.len() > before {
        return zoom_error(400, 300, "Validation Failed.");
    }
    zoom.meetings.get_mut(&id).unwrap().body = body;
    Reply::empty(204)
}

fn delete(zoom: &mut Zoom, id: u64, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.query("schedule_for_reminder") != Some("false")
        || r.query("cancel_meeting_reminder") != Some("false")
    {
        v.push(format!(
            "delete without turning off the cancellation mails: {:?}",
            r.query
        ));
    }
    if let Some(occurrence) = r.query("occurrence_id") {
        if occurrence.parse::<i64>().is_err() {
            return bad_request(v, format!("occurrence_id {occurrence:?} is not epoch ms"));
        }
        zoom.deleted_occurrences.push((id, occurrence.to_owned()));
        return Reply::empty(204);
    }
    zoom.meetings.get_mut(&id).unwrap().deleted = true;
    Reply::empty(204)
}

async fn fake() -> Fake<Zoom> {
    Fake::start(
        Zoom {
            token_lifetime: 3599,
            page_size: 300,
            ..Zoom::default()
        },
        handle,
    )
    .await
}

fn provider(fake: &Fake<Zoom>) -> ZoomProvider {
    let mut config = ZoomConfig::new(ACCOUNT, CLIENT_ID, Secret::new(CLIENT_SECRET));
    config.base_url = format!("{}/v2/", fake.url);
    config.oauth_url = format!("{}/oauth/token", fake.url);
    config.timeout_secs = 5;
    ZoomProvider::new(config).unwrap()
}

fn at(s: &str) -> When {
    When::At(s.parse().unwrap())
}

fn spec() -> MeetingSpec {
    MeetingSpec {
        title: "Planning".into(),
        description: "Agenda: budget".into(),
        start: at("2030-12-03T09:00:00Z"),
        end: at("2030-12-03T09:45:00Z"),
        time_zone: Some("Europe/Berlin".into()),
        recurrence: vec![],
        attendees: vec!["bob@example.com".into(), "carol@example.com".into()],
        organizer: Some("alice@example.com".into()),
    }
}

fn series(rule: &[&str]) -> MeetingSpec {
    MeetingSpec {
        recurrence: rule.iter().map(|s| s.to_string()).collect(),
        ..spec()
    }
}

#[tokio::test]
async fn creates_a_meeting_with_the_documented_fields_and_returns_the_join_url() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let mut long = spec();
    long.title = "é".repeat(250);
    let meeting = zoom.create(&long, "create-1").await.unwrap();
    assert!(
        meeting.join_url.starts_with("https://zoom.test/j/"),
        "{meeting:?}"
    );
    assert!(
        !meeting.join_url.contains(HOST_SECRET),
        "never the start_url"
    );
    let posted = &fake.requests_to("POST", "/v2/users/me/meetings")[0];
    assert_eq!(posted.bearer(), Some("zt-1"));
    let body = posted.json();
    assert_eq!(
        body["topic"].as_str().unwrap().chars().count(),
        200,
        "cut on characters"
    );
    assert_eq!(body["type"], 2);
    assert_eq!(
        body["start_time"], "2030-12-03T10:00:00",
        "wall-clock time in the event's zone"
    );
    assert_eq!(body["timezone"], "Europe/Berlin");
    assert_eq!(body["duration"], 45);
    assert_eq!(
        body["settings"]["meeting_invitees"],
        json!([{"email": "bob@example.com"}, {"email": "carol@example.com"}])
    );
    assert_eq!(
        body["agenda"],
        format!("Agenda: budget\n\n{}", marker_for("create-1")),
        "the marker ends the agenda"
    );
    assert_eq!(
        meeting.meeting_id,
        fake.with(|z| z.meetings.keys().next().unwrap().to_string())
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn all_day_events_run_midnight_to_midnight_in_the_default_zone() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let mut day = spec();
    day.start = When::Day("2030-12-03".parse().unwrap());
    day.end = When::Day("2030-12-05".parse().unwrap());
    day.time_zone = None;
    zoom.create(&day, "k").await.unwrap();
    let body = fake.requests_to("POST", "/v2/users/me/meetings")[0].json();
    assert_eq!(
        (
            body["start_time"].as_str(),
            body["timezone"].as_str(),
            body["duration"].as_u64()
        ),
        (Some("2030-12-03T00:00:00"), Some("UTC"), Some(2 * 24 * 60))
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn caches_the_token_and_replaces_it_before_it_expires() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let m = zoom.create(&spec(), "k1").await.unwrap();
    zoom.update(&m.meeting_id, &spec(), "k2").await.unwrap();
    zoom.delete(&m.meeting_id, "k3").await.unwrap();
    assert_eq!(
        fake.count("POST", "/oauth/token"),
        1,
        "one token for every call within its life"
    );

    // A token that lives less than the refresh margin is replaced before each use.
    let fake = fake_with_lifetime(60).await;
    let zoom = provider(&fake);
    let m = zoom.create(&spec(), "k1").await.unwrap();
    zoom.update(&m.meeting_id, &spec(), "k2").await.unwrap();
    assert_eq!(
        fake.count("POST", "/oauth/token"),
        3,
        "list, create, update"
    );
    let tokens: Vec<_> = fake
        .requests()
        .iter()
        .filter_map(|r| r.bearer().map(str::to_owned))
        .collect();
    assert_eq!(tokens, ["zt-1", "zt-2", "zt-3"]);
    fake.assert_no_violations();
}

async fn fake_with_lifetime(seconds: u64) -> Fake<Zoom> {
    let fake = fake().await;
    fake.with(|z| z.token_lifetime = seconds);
    fake
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_then_it_is_reauth() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let m = zoom.create(&spec(), "k1").await.unwrap();
    fake.with(|z| z.valid_tokens.clear()); // revoked or expired early at Zoom
    zoom.update(&m.meeting_id, &spec(), "k2").await.unwrap();
    assert_eq!(fake.count("POST", "/oauth/token"), 2);
    let patches = fake.requests_to("PATCH", "/v2/meetings/");
    assert_eq!(
        patches
            .iter()
            .map(|r| r.bearer().unwrap())
            .collect::<Vec<_>>(),
        ["zt-1", "zt-2"]
    );

    for _ in 0..2 {
        fake.fail_next(
            "DELETE",
            "/v2/meetings/",
            Reply::json(
                401,
                json!({"code": 124, "message": "Invalid access token."}),
            ),
        );
    }
    let err = zoom.delete(&m.meeting_id, "k3").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert_eq!(
        fake.count("DELETE", "/v2/meetings/"),
        2,
        "one retry, not a loop"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_not_repeated() {
    let fake = fake().await;
    fake.with(|z| z.page_size = 2);
    let zoom = provider(&fake);
    for i in 0..3 {
        zoom.create(&spec(), &format!("other-{i}")).await.unwrap();
    }
    fake.lose_answer_next(
        "POST",
        "/v2/users/me/meetings",
        Reply::raw(502, "text/html", "<html><body>Bad Gateway</body></html>"),
    );
    let err = zoom.create(&spec(), "the-key").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(fake.with(|z| z.meetings.len()), 4, "Zoom made it anyway");

    fake.clear_requests();
    let again = zoom.create(&spec(), "the-key").await.unwrap();
    assert_eq!(fake.with(|z| z.meetings.len()), 4, "no second meeting");
    assert_eq!(fake.count("POST", "/v2/users/me/meetings"), 0);
    let id = fake.with(|z| {
        let (id, made) = z.meetings.iter().next_back().unwrap();
        assert!(
            made.body["agenda"]
                .as_str()
                .unwrap()
                .ends_with(&marker_for("the-key"))
        );
        *id
    });
    assert_eq!(again.meeting_id, id.to_string());
    assert_eq!(again.join_url, format!("https://zoom.test/j/{id}?pwd=abc"));
    let pages = fake.requests_to("GET", "/v2/users/me/meetings");
    assert_eq!(pages.len(), 2, "the marker was on the second page");
    assert_eq!(pages[0].query("next_page_token"), None);
    assert_eq!(pages[1].query("next_page_token"), Some("tok2"));

    // And a different key is a different meeting.
    zoom.create(&spec(), "another-key").await.unwrap();
    assert_eq!(fake.with(|z| z.meetings.len()), 5);
    fake.assert_no_violations();
}

#[tokio::test]
async fn expressible_series_are_fixed_time_with_excluded_occurrences_deleted() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let weekly = series(&[
        "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10",
        "EXDATE;TZID=Europe/Berlin:20301210T100000",
        "EXDATE:20201210T090000Z", // past: Zoom keeps the past
    ]);
    let m = zoom.create(&weekly, "k").await.unwrap();
    let body = fake.requests_to("POST", "/v2/users/me/meetings")[0].json();
    assert_eq!(body["type"], 8);
    assert_eq!(
        body["recurrence"],
        json!({"type": 2, "repeat_interval": 1, "weekly_days": "3,5", "end_times": 10})
    );
    let expected_ms = "2030-12-10T09:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis();
    assert_eq!(
        fake.with(|z| z.deleted_occurrences.clone()),
        [(m.meeting_id.parse().unwrap(), expected_ms.to_string())]
    );
    // An update sends the rule again and re-applies the exclusion (Zoom may have restored it).
    zoom.update(&m.meeting_id, &weekly, "k2").await.unwrap();
    assert_eq!(fake.with(|z| z.deleted_occurrences.len()), 2);
    let patched = fake.requests_to("PATCH", "/v2/meetings/")[0].json();
    assert_eq!(patched["recurrence"]["weekly_days"], "3,5");
    assert_eq!(
        patched["agenda"], "Agenda: budget",
        "updates carry no marker"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn inexpressible_series_get_one_link_for_every_occurrence() {
    let fake = fake().await;
    let zoom = provider(&fake);
    for (i, rule) in [
        "RRULE:FREQ=YEARLY;COUNT=3",
        "RRULE:FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2;COUNT=3",
        "RRULE:FREQ=WEEKLY;BYDAY=MO",
    ]
    .iter()
    .enumerate()
    {
        zoom.create(&series(&[rule]), &format!("k{i}"))
            .await
            .unwrap();
    }
    for r in fake.requests_to("POST", "/v2/users/me/meetings") {
        let body = r.json();
        assert_eq!(body["type"], 3, "{body}");
        assert!(body.get("recurrence").is_none() && body.get("start_time").is_none());
    }
    // Zoom knows no occurrences of a type 3 meeting: nothing to move or cancel there.
    let id = fake.with(|z| z.meetings.keys().next().unwrap().to_string());
    let occurrence = at("2031-12-03T09:00:00Z");
    zoom.update_occurrence(
        &id,
        occurrence,
        at("2031-12-03T10:00:00Z"),
        at("2031-12-03T11:00:00Z"),
        "t",
        "k",
    )
    .await
    .unwrap();
    zoom.cancel_occurrence(&id, occurrence, "k").await.unwrap();
    assert_eq!(fake.count("PATCH", "/v2/meetings/"), 0);
    assert_eq!(fake.count("DELETE", "/v2/meetings/"), 0);
    fake.assert_no_violations();
}

#[tokio::test]
async fn occurrences_are_addressed_by_their_start_in_epoch_ms() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let m = zoom
        .create(&series(&["RRULE:FREQ=DAILY;COUNT=5"]), "k")
        .await
        .unwrap();
    let second = at("2030-12-04T09:00:00Z");
    let ms = "2030-12-04T09:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis()
        .to_string();
    zoom.update_occurrence(
        &m.meeting_id,
        second,
        at("2030-12-04T13:00:00Z"),
        at("2030-12-04T14:30:00Z"),
        "ignored",
        "k2",
    )
    .await
    .unwrap();
    let (_, occurrence, body) = fake.with(|z| z.moved_occurrences[0].clone());
    assert_eq!(occurrence, ms);
    assert_eq!(
        body,
        json!({"start_time": "2030-12-04T14:00:00", "timezone": "Europe/Berlin", "duration": 90})
    );

    zoom.cancel_occurrence(&m.meeting_id, second, "k3")
        .await
        .unwrap();
    assert_eq!(fake.with(|z| z.deleted_occurrences[0].1.clone()), ms);

    // An occurrence of a meeting that is gone is gone too.
    zoom.delete(&m.meeting_id, "k4").await.unwrap();
    zoom.cancel_occurrence(&m.meeting_id, second, "k5")
        .await
        .unwrap();
    let err = zoom
        .update_occurrence(&m.meeting_id, second, second, second, "t", "k6")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn deleting_a_deleted_meeting_is_done_and_updating_it_is_not_found() {
    let fake = fake().await;
    let zoom = provider(&fake);
    let m = zoom.create(&spec(), "k").await.unwrap();
    zoom.delete(&m.meeting_id, "d1").await.unwrap();
    zoom.delete(&m.meeting_id, "d2").await.unwrap(); // 404 code 3001
    assert_eq!(fake.count("DELETE", "/v2/meetings/"), 2);
    let err = zoom.update(&m.meeting_id, &spec(), "u").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    // Zoom sometimes answers 400 with code 3001 for a deleted meeting.
    fake.fail_next(
        "DELETE",
        "/v2/meetings/",
        zoom_error(400, 3001, "Meeting does not exist."),
    );
    zoom.delete("12345", "d3").await.unwrap();
    fake.assert_no_violations();
}

#[tokio::test]
async fn rate_limits_honour_retry_after_or_wait_for_the_utc_midnight_reset() {
    let fake = fake().await;
    let zoom = provider(&fake);
    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        zoom_error(
            429,
            429,
            "You have reached the maximum per-second rate limit for this API.",
        )
        .header("retry-after", "7"),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        zoom_error(429, 429, "You have exceeded the daily rate limit (100) of Create a meeting API requests permitted for this particular user. You may resume these user-level requests at GMT 00:00:00."),
    );
    let before = Utc::now();
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    let after = Utc::now();
    let wait = err.retry_after().expect("a computed reset");
    let midnight = |t: DateTime<Utc>| {
        (t.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    };
    assert!(
        wait <= (midnight(before) - before).to_std().unwrap()
            && wait >= (midnight(after) - after).to_std().unwrap(),
        "{wait:?}"
    );

    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        zoom_error(429, 429, "Too many requests."),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn faults_are_classified_with_status_and_request_id_and_never_leak_secrets() {
    let fake = fake().await;
    let zoom = provider(&fake);
    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        Reply::json(503, json!({"message": "down"})).header("x-zm-trackingid", "WEB_abc"),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("HTTP 503, request id WEB_abc"),
        "{err}"
    );

    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        Reply::raw(
            502,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head></html>",
        ),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("502 Bad Gateway"),
        "{err}"
    );

    // A truncated answer still carrying the host's start_url: retried, and never quoted.
    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        Reply::raw(
            201,
            "application/json",
            &format!("{{\"start_url\":\"https://zoom.test/s/1?zak={HOST_SECRET}\",\"id\":8"),
        ),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        !err.to_string().contains(HOST_SECRET) && err.to_string().contains("HTTP 201"),
        "{err}"
    );

    fake.fail_next("POST", "/v2/users/me/meetings", Reply::json(201, json!({"join_url": "https://zoom.test/j/1", "start_url": format!("https://zoom.test/s/1?zak={HOST_SECRET}")})));
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("no id"),
        "{err}"
    );
    assert!(!err.to_string().contains(HOST_SECRET));

    fake.fail_next(
        "POST",
        "/v2/users/me/meetings",
        zoom_error(400, 300, "Invalid field."),
    );
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_refused_client_secret_is_reauth_and_never_printed() {
    let fake = fake().await;
    let mut config = ZoomConfig::new(ACCOUNT, CLIENT_ID, Secret::new("wrong-secret-123"));
    config.base_url = format!("{}/v2", fake.url);
    config.oauth_url = format!("{}/oauth/token", fake.url);
    let zoom = ZoomProvider::new(config).unwrap();
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("wrong-secret-123"));
    assert!(!format!("{err:?}").contains("wrong-secret-123"));

    fake.fail_next(
        "POST",
        "/oauth/token",
        Reply::raw(200, "application/json", "{\"access_token\":\"zt-partial"),
    );
    let zoom = provider(&fake);
    let err = zoom.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && !err.to_string().contains("zt-partial"),
        "{err}"
    );
    fake.assert_no_violations();
}

#[test]
fn config_is_validated_with_precise_messages() {
    let parse = |v: Value| serde_json::from_value::<ZoomConfig>(v).map_err(|e| e.to_string());
    let base = json!({"account_id": "a", "client_id": "c", "client_secret": "s"});
    let config = parse(base.clone()).unwrap();
    assert_eq!(
        (
            config.base_url.as_str(),
            config.oauth_url.as_str(),
            config.user_id.as_str()
        ),
        (
            "https://api.zoom.us/v2",
            "https://zoom.us/oauth/token",
            "me"
        )
    );
    assert!(format!("{config:?}").contains("client_secret: ***"));
    assert!(ZoomProvider::new(config).is_ok());

    let mut typo = base.clone();
    typo["acount_id"] = json!("x");
    assert!(parse(typo).unwrap_err().contains("acount_id"));

    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        ZoomProvider::new(parse(v).unwrap())
            .err()
            .unwrap_or_default()
    };
    assert!(with("account_id", json!(" ")).contains("account_id is empty"));
    assert!(with("default_time_zone", json!("Mars/Base")).contains("Mars/Base"));
    assert!(with("base_url", json!("api.zoom.us")).contains("base_url"));
    assert!(with("reconcile_list_type", json!("live")).contains("reconcile_list_type"));
}

#[tokio::test]
async fn the_doctor_check_lists_one_meeting_and_tells_refused_credentials_and_a_missing_host() {
    let fake = fake().await;
    let what = provider(&fake).check().await.unwrap();
    assert!(what.contains("account acc-1"), "{what}");
    let listed = fake.requests_to("GET", "/v2/users/me/meetings");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].query("page_size"), Some("1"));
    assert_eq!(listed[0].query("type"), Some("upcoming"));
    assert!(!what.contains(CLIENT_SECRET));

    let mut config = ZoomConfig::new(ACCOUNT, CLIENT_ID, Secret::new("wrong-secret"));
    config.base_url = format!("{}/v2/", fake.url);
    config.oauth_url = format!("{}/oauth/token", fake.url);
    let err = ZoomProvider::new(config)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid_client"), "{err}");

    let mut config = ZoomConfig::new(ACCOUNT, CLIENT_ID, Secret::new(CLIENT_SECRET));
    config.base_url = format!("{}/v2/", fake.url);
    config.oauth_url = format!("{}/oauth/token", fake.url);
    config.user_id = "nobody@example.com".into();
    let err = ZoomProvider::new(config)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { detail, .. } if detail.contains("nobody@example.com")),
        "{err:?}"
    );
    fake.assert_no_violations();
}
