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
/// Alice's object id: what Graph's onlineMeetings routes take.
const ORGANIZER_ID: &str = "9f2c7e1a-3b4d-4c5e-8f60-718293a4b5c6";

#[derive(Default)]
struct Graph {
    token_lifetime: u64,
    tokens_issued: u32,
    valid_tokens: Vec<String>,
    /// id -> meeting as Graph returns it.
    meetings: BTreeMap<String, Value>,
    next_id: u32,
    /// The organizer was removed from the tenant.
    user_deleted: bool,
    /// The app has no User.Read.All: the directory answers 403 (user-get.md, "Permissions").
    no_user_read: bool,
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn graph_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
        .header("request-id", "req-42")
}

fn handle(graph: &mut Graph, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.path == format!("/login/{TENANT}/oauth2/v2.0/token") {
        return token(graph, r, v);
    }
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
    let Some(rest) = r.path.strip_prefix("/v1.0/users/") else {
        return bad_request(v, format!("{} {}: not a users path", r.method, r.path));
    };
    let (user, rest) = rest.split_once('/').unwrap_or((rest, ""));
    // user-get (api-reference/v1.0/api/user-get.md): GET /users/{id | userPrincipalName},
    // $select; a missing user is 404 Request_ResourceNotFound.
    if rest.is_empty() {
        if r.method != "GET" || r.query("$select") != Some("id") {
            return bad_request(
                v,
                format!("{} {}: expected GET $select=id", r.method, r.path),
            );
        }
        if graph.no_user_read {
            return graph_error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            );
        }
        let known = !graph.user_deleted && (user == ORGANIZER || user == ORGANIZER_ID);
        return if known {
            Reply::json(200, json!({"id": ORGANIZER_ID}))
        } else {
            graph_error(
                404,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
                ),
            )
        };
    }
    let Some(rest) = rest.strip_prefix("onlineMeetings") else {
        return bad_request(
            v,
            format!("{} {}: not an onlineMeetings path", r.method, r.path),
        );
    };
    // onlinemeeting-createorget.md / onlinemeeting-update.md: "userId is the object ID of a
    // user"; Graph answers a UPN (or an unknown user) with 404 (observed as code NotFound, the
    // same code as a missing meeting: nothing in the answer tells the two apart).
    if !is_guid(user) || user != ORGANIZER_ID || graph.user_deleted {
        return graph_error(404, "NotFound", "The requested resource was not found.");
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
        &[
            "subject",
            "startDateTime",
            "endDateTime",
            "participants",
            "lobbyBypassSettings",
        ],
        "PATCH",
        v,
    );
    // onlinemeeting-update.md: lobbyBypassSettings is updatable (also in progress);
    // lobbybypasssettings.md: scope is one of these, isDialInBypassEnabled a boolean.
    if let Some(lobby) = body.get("lobbyBypassSettings") {
        only_keys(
            lobby,
            &["scope", "isDialInBypassEnabled"],
            "PATCH.lobbyBypassSettings",
            v,
        );
        if !matches!(
            lobby["scope"].as_str(),
            None | Some(
                "organizer"
                    | "organization"
                    | "organizationAndFederated"
                    | "everyone"
                    | "invited"
                    | "organizationExcludingGuests"
            )
        ) || lobby
            .get("isDialInBypassEnabled")
            .is_some_and(|b| !b.is_boolean())
        {
            v.push(format!("PATCH: lobbyBypassSettings {lobby}"));
        }
    }
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
    let mut config = TeamsConfig::new(TENANT, CLIENT_ID, Secret::new(CLIENT_SECRET), ORGANIZER_ID);
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
        "/v1.0/users/9f2c7e1a-3b4d-4c5e-8f60-718293a4b5c6/onlineMeetings/createOrGet",
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
    let create = "/v1.0/users/9f2c7e1a-3b4d-4c5e-8f60-718293a4b5c6/onlineMeetings/createOrGet";
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
        matches!(err, ProviderError::Transient { .. }) && err.to_string().contains("access policy"),
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

/// Issue 14, item 7: Graph's onlineMeetings routes take the organizer's object id; a UPN there
/// answers 404 (the fake refuses it as Graph does), so every create became NotFound. A UPN in
/// the config is resolved once with GET /users/{upn}?$select=id.
#[tokio::test]
async fn a_upn_is_resolved_to_the_object_id_once() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.user_id = ORGANIZER.into();
    let teams = TeamsProvider::new(config).unwrap();
    let m = teams.create(&spec(), "k").await.unwrap();
    teams.create(&spec(), "k2").await.unwrap();
    teams.update(&m.meeting_id, &spec(), "u").await.unwrap();
    teams.delete(&m.meeting_id, "d").await.unwrap();
    assert_eq!(fake.count("GET", "/v1.0/users/alice@contoso.com"), 1);
    for r in fake.requests() {
        if r.path.contains("/onlineMeetings") {
            assert!(
                r.path.starts_with(&format!("/v1.0/users/{ORGANIZER_ID}/")),
                "{}",
                r.path
            );
        }
    }
    assert_eq!(fake.with(|g| g.meetings.len()), 1);

    // An unknown UPN is a permanent configuration error, not a missing meeting.
    let mut config = self::config(&fake);
    config.user_id = "nobody@contoso.com".into();
    let err = TeamsProvider::new(config)
        .unwrap()
        .create(&spec(), "k")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    // Neither an object id nor a UPN: refused at startup.
    let mut config = self::config(&fake);
    config.user_id = "alice".into();
    assert!(
        TeamsProvider::new(config)
            .err()
            .unwrap()
            .contains("object id")
    );
    fake.assert_no_violations();
}

/// Issue 14, item 7: a delete of a missing meeting is done, but when the organizer is gone
/// (Graph answers the same 404 NotFound on the route) it is not: the directory is asked.
#[tokio::test]
async fn a_missing_meeting_is_done_but_a_missing_organizer_is_not() {
    let fake = fake().await;
    let teams = provider(&fake);
    let m = teams.create(&spec(), "k").await.unwrap();
    teams.delete("never-existed", "d").await.unwrap();
    let err = teams
        .update("never-existed", &spec(), "u")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");

    fake.with(|g| g.user_deleted = true);
    let err = teams.delete(&m.meeting_id, "d").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { .. }) && err.to_string().contains("organizer"),
        "{err:?}"
    );
    let err = teams.update(&m.meeting_id, &spec(), "u").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    let err = teams.create(&spec(), "k9").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    assert_eq!(
        fake.with(|g| g.meetings.len()),
        1,
        "the meeting is still there"
    );
    fake.assert_no_violations();
}

/// Issue 14, item 7: "Changes to application access policies can take up to 30 minutes to take
/// effect" (Graph, "Configure application access policy"): a 403 is retried for a bounded time
/// from the first one, then permanent; a success in between starts the clock again.
#[tokio::test]
async fn an_access_policy_refusal_is_retried_for_a_bounded_time() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.access_policy_grace_secs = 1;
    let teams = TeamsProvider::new(config).unwrap();
    let create = format!("/v1.0/users/{ORGANIZER_ID}/onlineMeetings/createOrGet");
    let refused = || {
        graph_error(
            403,
            "Unauthorized",
            "App <app_ID_redacted> is not authorized to Create meeting on behalf of user <user_ID_redacted>",
        )
    };
    fake.fail_next("POST", &create, refused());
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.retry_after().is_some());
    teams.create(&spec(), "k").await.unwrap(); // the policy applied: the clock resets
    fake.fail_next("POST", &create, refused());
    assert!(teams.create(&spec(), "k").await.unwrap_err().is_retryable());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.fail_next("POST", &create, refused());
    let err = teams.create(&spec(), "k").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { .. })
            && err.to_string().contains("application access policy"),
        "{err:?}"
    );
    fake.assert_no_violations();
}

/// Issue 14, item 7: a deleted meeting's joinWebUrl keeps working (Graph docs issues #7802,
/// #17590), so the lobby is locked to the organizer before the DELETE (lobbyBypassSettings,
/// onlinemeeting-update.md and lobbybypasssettings.md).
#[tokio::test]
async fn a_cancelled_meetings_lobby_is_locked_before_the_delete() {
    let fake = fake().await;
    let teams = provider(&fake);
    let m = teams.create(&spec(), "k").await.unwrap();
    fake.clear_requests();
    teams.delete(&m.meeting_id, "d").await.unwrap();
    let calls: Vec<(String, Value)> = fake
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.json()))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, "PATCH");
    assert_eq!(
        calls[0].1,
        json!({"lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": false}})
    );
    assert_eq!(calls[1].0, "DELETE");

    let mut config = config(&fake);
    config.lock_lobby_on_delete = false;
    let plain = TeamsProvider::new(config).unwrap();
    let m = plain.create(&spec(), "k2").await.unwrap();
    fake.clear_requests();
    plain.delete(&m.meeting_id, "d").await.unwrap();
    assert_eq!(fake.count("PATCH", "/v1.0/"), 0);
    fake.assert_no_violations();
}

#[tokio::test]
async fn the_doctor_check_reads_the_organizer_and_tells_refused_credentials() {
    let fake = fake().await;
    let what = provider(&fake).check().await.unwrap();
    assert!(what.contains("found in the directory"), "{what}");
    assert_eq!(fake.count("GET", &format!("/v1.0/users/{ORGANIZER_ID}")), 1);
    // A UPN is resolved first, as for every call.
    let mut by_upn = config(&fake);
    by_upn.user_id = ORGANIZER.into();
    assert!(TeamsProvider::new(by_upn).unwrap().check().await.is_ok());

    let mut wrong = config(&fake);
    wrong.client_secret = Secret::new("not-the-secret");
    let err = TeamsProvider::new(wrong)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");

    fake.with(|g| g.user_deleted = true);
    let err = provider(&fake).check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");

    // Without User.Read.All only the token is checked, and the answer says so.
    fake.with(|g| {
        g.user_deleted = false;
        g.no_user_read = true;
    });
    let what = provider(&fake).check().await.unwrap();
    assert!(what.contains("User.Read.All"), "{what}");
    fake.assert_no_violations();
}
