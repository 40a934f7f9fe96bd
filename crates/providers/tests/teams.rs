//! The Teams adapter against a fake Microsoft Graph (onlineMeetings) and a fake Microsoft
//! identity platform token endpoint, written from their public references.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Fake, Reply, Request, bad_request, only_keys};
use confsync_providers::http::Secret;
use confsync_providers::teams::{TeamsConfig, TeamsProvider, external_id_for};
use confsync_providers::{ConferenceProvider, MeetingSpec, ProviderError, When};
use serde_json::{Value, json};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "app-1";
const CLIENT_SECRET: &str = "graph-client-secret-XYZ";
const ORGANIZER: &str = "alice@contoso.com";

#[derive(Default)]
struct Graph {
    token_lifetime: u64,
    tokens_issued: u32,
    valid_tokens: Vec<String>,
    /// id -> meeting as Graph returns it.
    meetings: BTreeMap<String, Value>,
    next_id: u32,
}

fn graph_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
        .header("request-id", "req-42")
}

fn handle(graph: &mut Graph, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.path == format!("/login/{TENANT}/oauth2/v2.0/token") {
        return token(graph, r, v);
    }
    let prefix = format!("/v1.0/users/{ORGANIZER}/onlineMeetings");
    let Some(rest) = r.path.strip_prefix(&prefix) else {
        return bad_request(
            v,
            format!("{} {}: not an onlineMeetings path", r.method, r.path),
        );
    };
    if !r
        .bearer()
        .is_some_and(|t| graph.valid_tokens.iter().any(|v| v == t))
    {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        );
    }
    match (r.method.as_str(), rest) {
        ("POST", "/createOrGet") => create_or_get(graph, r, v),
        ("PATCH", id) if id.len() > 1 => patch(graph, &id[1..], r, v),
        ("DELETE", id) if id.len() > 1 => {
            if graph.meetings.remove(&id[1..]).is_some() {
                Reply::empty(204)
            } else {
                graph_error(404, "NotFound", "The meeting was not found.")
            }
        }
        _ => bad_request(v, format!("{} {}: no such endpoint", r.method, r.path)),
    }
}

fn token(graph: &mut Graph, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.method != "POST"
        || !r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return bad_request(
            v,
            format!("token: {} {:?}", r.method, r.header("content-type")),
        );
    }
    let form = r.form();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("https://graph.microsoft.com/.default")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return bad_request(
            v,
            format!("token: form {:?}", form.keys().collect::<Vec<_>>()),
        );
    }
    if form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return Reply::json(
            401,
            json!({"error": "invalid_client",
                   "error_description": "AADSTS7000215: Invalid client secret provided."}),
        );
    }
    graph.tokens_issued += 1;
    let token = format!("gt-{}", graph.tokens_issued);
    graph.valid_tokens.push(token.clone());
    Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": graph.token_lifetime,
               "ext_expires_in": graph.token_lifetime, "access_token": token}),
    )
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(|s| s.parse().ok())
}

/// subject, startDateTime + endDateTime (both or neither, end after start), participants.
fn check_fields(body: &Value, v: &mut Vec<String>, what: &str) {
    if let Some(subject) = body.get("subject")
        && !subject.is_string()
    {
        v.push(format!("{what}: subject {subject}"));
    }
    match (
        body.get("startDateTime").map(time),
        body.get("endDateTime").map(time),
    ) {
        (Some(Some(start)), Some(Some(end))) if end >= start => {}
        (None, None) => {}
        other => v.push(format!(
            "{what}: startDateTime and endDateTime go together, end after start: {other:?}"
        )),
    }
    if let Some(p) = body.get("participants") {
        only_keys(
            p,
            &["attendees", "organizer"],
            &format!("{what}.participants"),
            v,
        );
        for a in p["attendees"].as_array().into_iter().flatten() {
            only_keys(
                a,
                &["upn", "role", "identity"],
                &format!("{what}.attendees[]"),
                v,
            );
            if !a["upn"].as_str().is_some_and(|u| u.contains('@')) {
                v.push(format!("{what}: attendee without upn: {a}"));
            }
            if !matches!(
                a["role"].as_str(),
                None | Some("attendee" | "presenter" | "producer" | "coorganizer")
            ) {
                v.push(format!("{what}: attendee role {}", a["role"]));
            }
        }
    }
}

fn create_or_get(graph: &mut Graph, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    only_keys(
        &body,
        &[
            "externalId",
            "startDateTime",
            "endDateTime",
            "subject",
            "participants",
        ],
        "createOrGet",
        v,
    );
    check_fields(&body, v, "createOrGet");
    let Some(external) = body["externalId"].as_str().filter(|e| !e.is_empty()) else {
        return bad_request(v, "createOrGet: externalId is required".into());
    };
    if let Some(existing) = graph
        .meetings
        .values()
        .find(|m| m["externalId"] == external)
    {
        return Reply::json(200, existing.clone());
    }
    graph.next_id += 1;
    let id = format!(
        "MSo1N2Y5ZGFjYy03MWJmLTQ3NDMtYjQxMy01M2EdFGkdRWHJlQ_{}",
        graph.next_id
    );
    let meeting = json!({
        "id": id, "externalId": external, "subject": body["subject"],
        "startDateTime": body["startDateTime"], "endDateTime": body["endDateTime"],
        "joinWebUrl": format!("https://teams.microsoft.test/l/meetup-join/19%3ameeting_{}%40thread.v2/0", graph.next_id),
        "participants": {"organizer": {"upn": ORGANIZER, "role": "presenter"},
                         "attendees": body["participants"]["attendees"]},
        "audioConferencing": {"conferenceId": "123", "tollNumber": "+1 555"},
    });
    graph.meetings.insert(id, meeting.clone());
    Reply::json(201, meeting)
}

fn patch(graph: &mut Graph, id: &str, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    only_keys(
        &body,
        &["subject", "startDateTime", "endDateTime", "participants"],
        "PATCH",
        v,
    );
    check_fields(&body, v, "PATCH");
    let Some(meeting) = graph.meetings.get_mut(id) else {
        return graph_error(404, "NotFound", "The meeting was not found.");
    };
    for (k, value) in body.as_object().unwrap() {
        if k == "participants" {
            meeting["participants"]["attendees"] = value["attendees"].clone();
        } else {
            meeting[k] = value.clone();
        }
    }
    Reply::json(200, meeting.clone())
}

async fn fake() -> Fake<Graph> {
    Fake::start(
        Graph {
            token_lifetime: 3599,
            ..Graph::default()
        },
        handle,
    )
    .await
}

fn config(fake: &Fake<Graph>) -> TeamsConfig {
    let mut config = TeamsConfig::new(TENANT, CLIENT_ID, Secret::new(CLIENT_SECRET), ORGANIZER);
    config.base_url = format!("{}/v1.0", fake.url);
    config.login_url = format!("{}/login/", fake.url);
    config.timeout_secs = 5;
    config
}

fn provider(fake: &Fake<Graph>) -> TeamsProvider {
    TeamsProvider::new(config(fake)).unwrap()
}

fn at(s: &str) -> When {
    When::At(s.parse().unwrap())
}

fn spec() -> MeetingSpec {
    MeetingSpec {
        title: "Quarterly review".into(),
        description: "Not sent: Graph has no description".into(),
        start: at("2030-12-03T09:00:00Z"),
        end: at("2030-12-03T10:00:00Z"),
        time_zone: Some("Europe/Berlin".into()),
        recurrence: vec!["RRULE:FREQ=WEEKLY;COUNT=4".into()],
        attendees: vec!["bob@fabrikam.com".into(), "carol@contoso.com".into()],
        organizer: Some(ORGANIZER.into()),
    }
}

#[tokio::test]
async fn creates_through_create_or_get_with_an_external_id_from_the_key() {
    let fake = fake().await;
    let teams = provider(&fake);
    let meeting = teams.create(&spec(), "create-1").await.unwrap();
    assert!(
        meeting
            .join_url
            .starts_with("https://teams.microsoft.test/l/meetup-join/"),
        "{meeting:?}"
    );
    let sent = &fake.requests_to(
        "POST",
        "/v1.0/users/alice@contoso.com/onlineMeetings/createOrGet",
    )[0];
    assert_eq!(sent.bearer(), Some("gt-1"));
    assert_eq!(
        sent.json(),
        json!({
            "subject": "Quarterly review",
            "startDateTime": "2030-12-03T09:00:00Z",
            "endDateTime": "2030-12-03T10:00:00Z",
            "participants": {"attendees": [
                {"upn": "bob@fabrikam.com", "role": "attendee"},
                {"upn": "carol@contoso.com", "role": "attendee"}
            ]},
            "externalId": external_id_for("create-1"),
        })
    );

    // The same key again is the same meeting (Graph's createOrGet), a new key a new one.
    assert_eq!(teams.create(&spec(), "create-1").await.unwrap(), meeting);
    assert_ne!(teams.create(&spec(), "create-2").await.unwrap(), meeting);
    assert_eq!(fake.with(|g| g.meetings.len()), 2);
    assert_eq!(fake.count("POST", "/login/"), 1, "the token is cached");
    fake.assert_no_violations();
}

#[tokio::test]
async fn says_what_it_cannot_update_and_refuses_occurrence_calls() {
    let fake = fake().await;
    let teams = provider(&fake);
    let c = teams.capabilities();
    assert!(c.title && c.time && c.attendees);
    assert!(!c.description && !c.recurrence && !c.occurrences);
    let when = at("2030-12-10T09:00:00Z");
    let err = teams.cancel_occurrence("m", when, "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    let err = teams
        .update_occurrence("m", when, when, when, "t", "k")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    assert!(
        fake.requests().is_empty(),
        "no call for what Graph cannot do"
    );

    let mut config = config(&fake);
    config.send_attendees = false;
    let quiet = TeamsProvider::new(config).unwrap();
    assert!(!quiet.capabilities().attendees);
    quiet.create(&spec(), "k").await.unwrap();
    assert!(
        fake.requests_to("POST", "/v1.0/")
            .last()
            .unwrap()
            .json()
            .get("participants")
            .is_none()
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn updates_send_start_and_end_together_with_every_attendee() {
    let fake = fake().await;
    let teams = provider(&fake);
    let m = teams.create(&spec(), "k").await.unwrap();
    let mut moved = spec();
    moved.start = at("2030-12-04T15:00:00Z");
    moved.end = at("2030-12-04T15:30:00Z");
    moved.attendees = vec!["dave@contoso.com".into()];
    moved.title = "x".repeat(300);
    let link = teams.update(&m.meeting_id, &moved, "u").await.unwrap();
    assert_eq!(link.as_deref(), Some(m.join_url.as_str()));
    let body = fake.requests_to("PATCH", "/v1.0/").remove(0).json();
    assert_eq!(body["startDateTime"], "2030-12-04T15:00:00Z");
    assert_eq!(body["endDateTime"], "2030-12-04T15:30:00Z");
    assert_eq!(
        body["participants"],
        json!({"attendees": [{"upn": "dave@contoso.com", "role": "attendee"}]})
    );
    assert_eq!(body["subject"].as_str().unwrap().len(), 255);
    assert_eq!(
        fake.with(|g| g.meetings[&m.meeting_id]["participants"]["attendees"].clone()),
        body["participants"]["attendees"]
    );

    let err = teams.update("gone", &moved, "u").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn all_day_events_take_their_days_in_the_default_zone() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.default_time_zone = "America/New_York".into();
    let teams = TeamsProvider::new(config).unwrap();
    let mut day = spec();
    day.start = When::Day("2030-12-03".parse().unwrap());
    day.end = When::Day("2030-12-04".parse().unwrap());
    day.time_zone = None;
    teams.create(&day, "k").await.unwrap();
    let body = fake.requests_to("POST", "/v1.0/").remove(0).json();
    assert_eq!(
        (body["startDateTime"].as_str(), body["endDateTime"].as_str()),
        (Some("2030-12-03T05:00:00Z"), Some("2030-12-04T05:00:00Z"))
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn deleting_twice_is_done() {
    let fake = fake().await;
    let teams = provider(&fake);
    let m = teams.create(&spec(), "k").await.unwrap();
    teams.delete(&m.meeting_id, "d").await.unwrap();
    teams.delete(&m.meeting_id, "d").await.unwrap();
    assert_eq!(fake.count("DELETE", "/v1.0/"), 2);
    assert!(fake.with(|g| g.meetings.is_empty()));
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_expired_token_is_replaced_once_then_it_is_reauth() {
    let fake = fake().await;
    let teams = provider(&fake);
    let m = teams.create(&spec(), "k").await.unwrap();
    fake.with(|g| g.valid_tokens.clear());
    teams.update(&m.meeting_id, &spec(), "u").await.unwrap();
    assert_eq!(fake.count("POST", "/login/"), 2);

    for _ in 0..2 {
        fake.fail_next(
            "DELETE",
            "/v1.0/",
            graph_error(401, "InvalidAuthenticationToken", "expired"),
        );
    }
    let err = teams.delete(&m.meeting_id, "d").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert_eq!(fake.count("DELETE", "/v1.0/"), 2);

    // A short-lived token is not reused past the refresh margin.
    let fake2 = Fake::start(
        Graph {
            token_lifetime: 120,
            ..Graph::default()
        },
        handle,
    )
    .await;
    let teams = provider(&fake2);
    teams.create(&spec(), "a").await.unwrap();
    teams.create(&spec(), "b").await.unwrap();
    assert_eq!(fake2.count("POST", "/login/"), 2);
    fake.assert_no_violations();
    fake2.assert_no_violations();
}

#[tokio::test]
async fn a_refused_client_secret_is_reauth_and_never_printed() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.client_secret = Secret::new("not-the-secret-777");
    let teams = TeamsProvider::new(config).unwrap();
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(!err.to_string().contains("not-the-secret-777"));
    fake.assert_no_violations();
}

#[tokio::test]
async fn throttling_and_faults_are_classified() {
    let fake = fake().await;
    let teams = provider(&fake);
    let create = "/v1.0/users/alice@contoso.com/onlineMeetings/createOrGet";
    fake.fail_next(
        "POST",
        create,
        graph_error(429, "TooManyRequests", "Too many requests").header("retry-after", "12"),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));

    fake.fail_next(
        "POST",
        create,
        graph_error(503, "ServiceUnavailable", "busy").header("retry-after", "30"),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.to_string().contains("request id req-42"), "{err}");

    fake.fail_next(
        "POST",
        create,
        Reply::raw(
            502,
            "text/html",
            "<html><body><h1>Bad Gateway</h1></body></html>",
        ),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("Bad Gateway"),
        "{err}"
    );

    fake.fail_next(
        "POST",
        create,
        Reply::raw(201, "application/json", "{\"id\": \"MSo1\", \"joinWebUr"),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("unreadable"),
        "{err}"
    );

    fake.fail_next("POST", create, Reply::json(201, json!({"id": "MSo1"})));
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("joinWebUrl"),
        "{err}"
    );

    fake.fail_next(
        "POST",
        create,
        Reply::json(
            200,
            json!({"joinWebUrl": "https://teams.microsoft.test/l/x"}),
        ),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("no id"),
        "{err}"
    );

    fake.fail_next(
        "POST",
        create,
        graph_error(
            403,
            "Forbidden",
            "No application access policy found for this app.",
        ),
    );
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { .. }) && err.to_string().contains("access policy"),
        "{err:?}"
    );

    // After all that, a retry of the same key still makes exactly one meeting.
    teams.create(&spec(), "k").await.unwrap();
    teams.create(&spec(), "k").await.unwrap();
    assert_eq!(fake.with(|g| g.meetings.len()), 1);
    fake.assert_no_violations();
}

#[test]
fn config_is_validated_with_precise_messages() {
    let parse = |v: Value| serde_json::from_value::<TeamsConfig>(v).map_err(|e| e.to_string());
    let base = json!({"tenant_id": "t", "client_id": "c", "client_secret": "s", "user_id": "u@t"});
    let config = parse(base.clone()).unwrap();
    assert_eq!(config.base_url, "https://graph.microsoft.com/v1.0");
    assert_eq!(config.login_url, "https://login.microsoftonline.com");
    assert!(TeamsProvider::new(config).is_ok());
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("user_id");
    assert!(parse(missing).unwrap_err().contains("user_id"));
    let mut typo = base.clone();
    typo["tennant_id"] = json!("x");
    assert!(parse(typo).unwrap_err().contains("tennant_id"));
    let mut empty = base.clone();
    empty["client_id"] = json!("");
    assert!(
        TeamsProvider::new(parse(empty).unwrap())
            .err()
            .unwrap()
            .contains("client_id is empty")
    );
}
