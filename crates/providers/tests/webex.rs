//! The Webex adapter against a fake Webex Meetings API written from its public reference
//! (Meetings, Meeting Invitees, the OAuth access_token endpoint).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Fake, Reply, Request, bad_request, only_keys};
use confsync_providers::http::Secret;
use confsync_providers::webex::{WebexConfig, WebexProvider, integration_tag_for};
use confsync_providers::{ConferenceProvider, MeetingSpec, ProviderError, When};
use serde_json::{Value, json};

const STATIC_TOKEN: &str = "webex-static-token-ABC";
const CLIENT_ID: &str = "C0ffee";
const CLIENT_SECRET: &str = "webex-client-secret-XYZ";
const REFRESH: &str = "refresh-1-SECRET";
const PASSWORD: &str = "P4ss-SECRET";

#[derive(Default)]
struct Webex {
    token_lifetime: u64,
    tokens_issued: u32,
    valid_tokens: Vec<String>,
    refresh_token: String,
    /// Rotate the refresh token on each use.
    rotate: bool,
    /// Every call must carry this hostEmail.
    host_email: Option<String>,
    meetings: BTreeMap<String, Value>,
    /// Scheduled meetings (occurrences) of series: (series id, id, start).
    scheduled: Vec<(String, String, DateTime<Utc>)>,
    invitees: BTreeMap<String, (String, String)>,
    next_id: u32,
    in_progress: BTreeSet<String>,
    from_connector: BTreeSet<String>,
}

fn webex_error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "errors": [{"description": message}], "trackingId": "ROUTER_T1"}),
    )
    .header("trackingid", "ROUTER_T1")
}

fn handle(w: &mut Webex, r: &Request, v: &mut Vec<String>) -> Reply {
    if r.is("POST", "/v1/access_token") {
        return access_token(w, r, v);
    }
    if !r
        .bearer()
        .is_some_and(|t| t == STATIC_TOKEN || w.valid_tokens.iter().any(|v| v == t))
    {
        return webex_error(
            401,
            "The request requires a valid access token set in the Authorization request header.",
        );
    }
    // "Get My Own Details" (people API): the token's person; takes no hostEmail.
    if r.is("GET", "/v1/people/me") {
        return Reply::json(
            200,
            json!({"id": "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9hbGljZQ", "emails": ["alice@example.com"],
                   "displayName": "Alice", "type": "person"}),
        );
    }
    if let Some(host) = w.host_email.clone() {
        let sent = r
            .query("hostEmail")
            .map(str::to_owned)
            .or_else(|| r.json()["hostEmail"].as_str().map(str::to_owned));
        if sent.as_deref() != Some(host.as_str()) {
            v.push(format!("{} {}: hostEmail {sent:?}", r.method, r.path));
        }
    }
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "meetings"]) => create(w, r, v),
        ("GET", ["v1", "meetings"]) => list(w, r, v),
        ("PATCH", ["v1", "meetings", id]) => {
            // "Patch a Meeting" (webex-openapi-specs public-spec/webex-meeting.json,
            // paths./meetings/{meetingId}.patch.requestBody.content) takes
            // application/json-patch+json; anything else is 415 Unsupported Media Type.
            if r.header("content-type") != Some("application/json-patch+json") {
                v.push(format!(
                    "PATCH with content type {:?}",
                    r.header("content-type")
                ));
                return webex_error(415, "Unsupported Media Type");
            }
            patch(w, id, r, v)
        }
        ("GET", ["v1", "meetings", id]) => {
            if let Some((s, occ, at)) = w.scheduled.iter().find(|(_, occ, _)| occ == id) {
                return Reply::json(
                    200,
                    json!({"id": occ, "meetingSeriesId": s, "meetingType": "scheduledMeeting",
                           "start": at.format("%Y-%m-%dT%H:%M:%SZ").to_string()}),
                );
            }
            match w.meetings.get(*id) {
                Some(m) => Reply::json(200, m.clone()),
                None => webex_error(404, "Meeting not found."),
            }
        }
        ("DELETE", ["v1", "meetings", id]) => {
            if r.query("sendEmail") != Some("false") {
                v.push(format!(
                    "DELETE meeting without sendEmail=false: {:?}",
                    r.query
                ));
            }
            let removed = w.meetings.remove(*id).is_some();
            let before = w.scheduled.len();
            w.scheduled.retain(|(_, occ, _)| occ != id);
            if removed || w.scheduled.len() < before {
                Reply::empty(204)
            } else {
                webex_error(404, "Meeting not found.")
            }
        }
        ("GET", ["v1", "meetingInvitees"]) => {
            let Some(meeting) = r.query("meetingId") else {
                return bad_request(v, "meetingInvitees: meetingId is required".into());
            };
            // Pages of at most `max` (Webex: up to 100, default 10), the next one named by a
            // `Link: <...>; rel="next"` header (Webex REST API basics, "Pagination").
            let max: usize = r
                .query("max")
                .and_then(|m| m.parse().ok())
                .unwrap_or(10)
                .min(100);
            let cursor: usize = r.query("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
            let all: Vec<Value> = w
                .invitees
                .iter()
                .filter(|(_, (m, _))| m == meeting)
                .map(|(id, (m, e))| json!({"id": id, "email": e, "displayName": e, "coHost": false, "meetingId": m}))
                .collect();
            let page: Vec<Value> = all.iter().skip(cursor).take(max).cloned().collect();
            let reply = Reply::json(200, json!({"items": page}));
            if cursor + max < all.len() {
                let host = r.header("host").unwrap_or("127.0.0.1");
                let mut next = format!(
                    "http://{host}/v1/meetingInvitees?meetingId={meeting}&max={max}&cursor={}",
                    cursor + max
                );
                if let Some(h) = r.query("hostEmail") {
                    next.push_str(&format!("&hostEmail={h}"));
                }
                return reply.header("link", &format!("<{next}>; rel=\"next\""));
            }
            reply
        }
        ("POST", ["v1", "meetingInvitees"]) => {
            let body = r.json();
            only_keys(
                &body,
                &[
                    "meetingId",
                    "email",
                    "displayName",
                    "coHost",
                    "sendEmail",
                    "hostEmail",
                    "panelist",
                ],
                "invitee",
                v,
            );
            if body["sendEmail"] != false {
                v.push(format!("invitee without sendEmail=false: {body}"));
            }
            let (Some(meeting), Some(email)) = (body["meetingId"].as_str(), body["email"].as_str())
            else {
                return bad_request(v, format!("invitee: {body}"));
            };
            if w.invitees.values().any(|(m, e)| m == meeting && e == email) {
                return webex_error(409, "The invitee already exists.");
            }
            w.next_id += 1;
            let id = format!("inv-{}", w.next_id);
            w.invitees
                .insert(id.clone(), (meeting.into(), email.into()));
            Reply::json(200, json!({"id": id, "email": email, "meetingId": meeting}))
        }
        ("DELETE", ["v1", "meetingInvitees", id]) => {
            if r.query("sendEmail") != Some("false") {
                v.push("DELETE invitee without sendEmail=false".into());
            }
            match w.invitees.remove(*id) {
                Some(_) => Reply::empty(204),
                None => webex_error(404, "Invitee not found."),
            }
        }
        _ => bad_request(v, format!("{} {}: no such endpoint", r.method, r.path)),
    }
}

fn access_token(w: &mut Webex, r: &Request, v: &mut Vec<String>) -> Reply {
    let form = r.form();
    let field = |k: &str| form.get(k).map(String::as_str);
    if field("grant_type") != Some("refresh_token") || field("client_id") != Some(CLIENT_ID) {
        return bad_request(
            v,
            format!("access_token: form {:?}", form.keys().collect::<Vec<_>>()),
        );
    }
    if field("client_secret") != Some(CLIENT_SECRET)
        || field("refresh_token") != Some(w.refresh_token.as_str())
    {
        return Reply::json(
            400,
            json!({"error": "invalid_grant", "error_description": "The refresh token provided is expired, revoked, malformed, or invalid."}),
        );
    }
    w.tokens_issued += 1;
    let token = format!("wt-{}", w.tokens_issued);
    w.valid_tokens.push(token.clone());
    if w.rotate {
        w.refresh_token = format!("refresh-{}-SECRET", w.tokens_issued + 1);
    }
    Reply::json(
        200,
        json!({"access_token": token, "expires_in": w.token_lifetime,
               "refresh_token": w.refresh_token, "refresh_token_expires_in": 7_776_000}),
    )
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// start/end rules: ISO 8601, not in the past, 10 min to 23 h 59 min.
fn check_times(body: &Value, v: &mut Vec<String>, what: &str) {
    match (body.get("start"), body.get("end")) {
        (None, None) => {}
        (Some(s), Some(e)) => match (time(s), time(e)) {
            (Some(start), Some(end)) => {
                if start < Utc::now() {
                    v.push(format!("{what}: start {s} is in the past"));
                }
                let length = end - start;
                if length < TimeDelta::minutes(10) || length > TimeDelta::minutes(23 * 60 + 59) {
                    v.push(format!(
                        "{what}: duration {length} outside 10 min..23 h 59 min"
                    ));
                }
            }
            _ => v.push(format!("{what}: start/end not ISO 8601: {s} {e}")),
        },
        other => v.push(format!("{what}: start and end go together here: {other:?}")),
    }
    if let Some(tz) = body.get("timezone")
        && tz
            .as_str()
            .is_none_or(|z| z.parse::<chrono_tz::Tz>().is_err())
    {
        v.push(format!("{what}: timezone {tz}"));
    }
}

/// Webex's RRULE subset.
fn check_recurrence(rule: &str, v: &mut Vec<String>) {
    for part in rule.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            v.push(format!("recurrence part {part:?}"));
            continue;
        };
        match key {
            "FREQ" if ["DAILY", "WEEKLY", "MONTHLY", "YEARLY"].contains(&value) => {}
            "INTERVAL" | "COUNT" if value.parse::<u32>().is_ok() => {}
            "UNTIL" if value.ends_with('Z') => {}
            "BYDAY" | "BYMONTHDAY" => {
                if rule.contains("FREQ=MONTHLY") && value.contains(',') {
                    v.push(format!(
                        "recurrence {rule}: Webex takes only the first monthly day"
                    ));
                }
            }
            _ => v.push(format!(
                "recurrence {rule}: {part} is not in Webex's subset"
            )),
        }
    }
}

fn create(w: &mut Webex, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    let before = v.len();
    only_keys(
        &body,
        &[
            "title",
            "agenda",
            "start",
            "end",
            "timezone",
            "recurrence",
            "invitees",
            "sendEmail",
            "integrationTags",
            "hostEmail",
        ],
        "create",
        v,
    );
    if body["title"]
        .as_str()
        .is_none_or(|t| t.is_empty() || t.chars().count() > 128)
    {
        v.push(format!("create: title {}", body["title"]));
    }
    if body
        .get("agenda")
        .is_some_and(|a| a.as_str().is_none_or(|a| a.chars().count() > 1300))
    {
        v.push("create: agenda over 1300 characters".into());
    }
    if body.get("start").is_none() {
        v.push("create: start and end are required".into());
    }
    check_times(&body, v, "create");
    if let Some(rule) = body.get("recurrence") {
        check_recurrence(rule.as_str().unwrap_or_default(), v);
    }
    if body["sendEmail"] != false {
        v.push("create: sendEmail must be false (Google mails the guests)".into());
    }
    for i in body["invitees"].as_array().into_iter().flatten() {
        only_keys(
            i,
            &["email", "displayName", "coHost", "panelist"],
            "create.invitees[]",
            v,
        );
    }
    let tags = body["integrationTags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if tags.len() > 3 || tags.iter().any(|t| t.as_str().is_none_or(|t| t.len() > 64)) {
        v.push(format!("create: integrationTags {tags:?}"));
    }
    if v.len() > before {
        return webex_error(400, "Invalid request.");
    }
    w.next_id += 1;
    let id = format!("a1b2c3d4e5f6{:04}", w.next_id);
    // Occurrences of daily series with a count, enough for the occurrence tests.
    let rule = body["recurrence"].as_str().unwrap_or_default();
    if let (Some(start), Some(count)) = (
        time(&body["start"]),
        rule.strip_prefix("FREQ=DAILY;COUNT=")
            .and_then(|c| c.parse::<i64>().ok()),
    ) {
        for i in 0..count {
            let at = start + TimeDelta::days(i);
            w.scheduled
                // Scheduled meeting ids as in webex-meeting.json's examples:
                // {series id}_{original start, UTC} (kept when the occurrence moves).
                .push((
                    id.clone(),
                    format!("{id}_{}", at.format("%Y%m%dT%H%M%SZ")),
                    at,
                ));
        }
    }
    for i in body["invitees"].as_array().into_iter().flatten() {
        w.next_id += 1;
        w.invitees.insert(
            format!("inv-{}", w.next_id),
            (id.clone(), i["email"].as_str().unwrap().into()),
        );
    }
    let meeting = json!({
        "id": id, "meetingNumber": "2551234567", "title": body["title"], "agenda": body["agenda"],
        "start": body["start"], "end": body["end"], "timezone": body["timezone"],
        "recurrence": body["recurrence"], "meetingType": "meetingSeries", "state": "active",
        "integrationTags": body["integrationTags"],
        "webLink": format!("https://site.webex.test/site/j.php?MTID=m{id}"),
        "sipAddress": "2551234567@site.webex.test", "password": PASSWORD, "hostKey": "123456",
    });
    w.meetings.insert(id, meeting.clone());
    Reply::json(200, meeting)
}

fn list(w: &mut Webex, r: &Request, v: &mut Vec<String>) -> Reply {
    let (Some(from), Some(to)) = (
        r.query("from").and_then(|s| time(&json!(s))),
        r.query("to").and_then(|s| time(&json!(s))),
    ) else {
        return bad_request(
            v,
            format!("list: from/to missing or not ISO 8601: {:?}", r.query),
        );
    };
    if from > to {
        return bad_request(v, "list: from is after to".into());
    }
    if let Some(tag) = r.query("integrationTag") {
        let items: Vec<Value> = w
            .meetings
            .values()
            .filter(|m| {
                m["integrationTags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == tag))
            })
            .filter(|m| time(&m["start"]).is_some_and(|s| s >= from && s < to))
            .cloned()
            .collect();
        return Reply::json(200, json!({"items": items}));
    }
    if let Some(series) = r.query("meetingSeriesId") {
        if r.query("meetingType") != Some("scheduledMeeting") {
            v.push("list: occurrences are meetingType=scheduledMeeting".into());
        }
        let items: Vec<Value> = w
            .scheduled
            .iter()
            .filter(|(s, _, at)| s == series && *at >= from && *at < to)
            .map(|(s, id, at)| {
                json!({"id": id, "meetingSeriesId": s, "meetingType": "scheduledMeeting",
                                      "start": at.format("%Y-%m-%dT%H:%M:%SZ").to_string()})
            })
            .collect();
        return Reply::json(200, json!({"items": items}));
    }
    bad_request(v, format!("list: unexpected query {:?}", r.query))
}

fn patch(w: &mut Webex, id: &str, r: &Request, v: &mut Vec<String>) -> Reply {
    let body = r.json();
    let before = v.len();
    only_keys(
        &body,
        &[
            "title",
            "agenda",
            "start",
            "end",
            "timezone",
            "recurrence",
            "sendEmail",
            "hostEmail",
        ],
        "PATCH",
        v,
    );
    if body["sendEmail"] != false {
        v.push("PATCH: sendEmail must be false".into());
    }
    check_times(&body, v, "PATCH");
    if let Some(rule) = body.get("recurrence").and_then(Value::as_str) {
        check_recurrence(rule, v);
    }
    if v.len() > before {
        return webex_error(400, "Invalid request.");
    }
    if w.in_progress.contains(id) {
        return webex_error(400, "Meeting is in progress and cannot be updated.");
    }
    if w.from_connector.contains(id) {
        return webex_error(
            403,
            "This meeting was scheduled by the Webex Hybrid Calendar connector and cannot be modified.",
        );
    }
    if let Some(occurrence) = w.scheduled.iter_mut().find(|(_, occ, _)| occ == id) {
        occurrence.2 = time(&body["start"]).unwrap_or(occurrence.2);
        return Reply::json(
            200,
            json!({"id": id, "meetingType": "scheduledMeeting", "start": body["start"]}),
        );
    }
    let Some(meeting) = w.meetings.get_mut(id) else {
        return webex_error(404, "Meeting not found.");
    };
    for (k, value) in body.as_object().unwrap() {
        meeting[k] = value.clone();
    }
    Reply::json(200, meeting.clone())
}

async fn fake() -> Fake<Webex> {
    Fake::start(
        Webex {
            token_lifetime: 1_209_599,
            refresh_token: REFRESH.into(),
            ..Webex::default()
        },
        handle,
    )
    .await
}

fn static_config(fake: &Fake<Webex>) -> WebexConfig {
    let mut config = WebexConfig::with_token(Secret::new(STATIC_TOKEN));
    config.base_url = format!("{}/v1/", fake.url);
    config.timeout_secs = 5;
    config
}

fn provider(fake: &Fake<Webex>) -> WebexProvider {
    WebexProvider::new(static_config(fake)).unwrap()
}

fn oauth_provider(fake: &Fake<Webex>) -> WebexProvider {
    let mut config =
        WebexConfig::with_refresh(CLIENT_ID, Secret::new(CLIENT_SECRET), Secret::new(REFRESH));
    config.base_url = format!("{}/v1", fake.url);
    WebexProvider::new(config).unwrap()
}

fn at(s: &str) -> When {
    When::At(s.parse().unwrap())
}

fn spec() -> MeetingSpec {
    MeetingSpec {
        title: "Design review".into(),
        description: "Agenda".into(),
        start: at("2030-12-03T09:00:00Z"),
        end: at("2030-12-03T10:00:00Z"),
        time_zone: Some("Europe/Berlin".into()),
        recurrence: vec![],
        attendees: vec!["bob@example.com".into(), "carol@example.com".into()],
        organizer: Some("alice@example.com".into()),
    }
}

fn series(rule: &str) -> MeetingSpec {
    MeetingSpec {
        recurrence: vec![rule.into()],
        ..spec()
    }
}

#[tokio::test]
async fn creates_with_the_documented_fields_and_returns_the_web_link() {
    let fake = fake().await;
    let webex = provider(&fake);
    let mut long = series("RRULE:FREQ=WEEKLY;WKST=MO;BYDAY=TU;COUNT=6");
    long.title = "ü".repeat(200);
    long.description = "d".repeat(2000);
    let meeting = webex.create(&long, "create-1").await.unwrap();
    assert!(
        meeting
            .join_url
            .starts_with("https://site.webex.test/site/j.php?MTID="),
        "{meeting:?}"
    );
    let sent = &fake.requests_to("POST", "/v1/meetings")[0];
    assert_eq!(sent.bearer(), Some(STATIC_TOKEN));
    let body = sent.json();
    assert_eq!(body["title"].as_str().unwrap().chars().count(), 128);
    assert_eq!(body["agenda"].as_str().unwrap().chars().count(), 1300);
    assert_eq!(body["start"], "2030-12-03T10:00:00+01:00");
    assert_eq!(body["end"], "2030-12-03T11:00:00+01:00");
    assert_eq!(body["timezone"], "Europe/Berlin");
    assert_eq!(body["recurrence"], "FREQ=WEEKLY;BYDAY=TU;COUNT=6");
    assert_eq!(
        body["invitees"],
        json!([{"email": "bob@example.com"}, {"email": "carol@example.com"}])
    );
    assert_eq!(body["sendEmail"], false);
    assert_eq!(
        body["integrationTags"],
        json!([integration_tag_for("create-1")])
    );
    assert!(body.get("hostEmail").is_none());
    // The lookup by tag came first, around the start.
    let lookup = &fake.requests_to("GET", "/v1/meetings")[0];
    assert_eq!(
        lookup.query("integrationTag"),
        Some(integration_tag_for("create-1").as_str())
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_by_its_integration_tag() {
    let fake = fake().await;
    let webex = provider(&fake);
    webex.create(&spec(), "other").await.unwrap();
    fake.lose_answer_next(
        "POST",
        "/v1/meetings",
        Reply::raw(504, "text/html", "<html>Gateway Timeout</html>"),
    );
    let err = webex.create(&spec(), "the-key").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(fake.with(|w| w.meetings.len()), 2);
    let again = webex.create(&spec(), "the-key").await.unwrap();
    assert_eq!(
        fake.with(|w| w.meetings.len()),
        2,
        "adopted, not made twice"
    );
    assert_eq!(fake.count("POST", "/v1/meetings"), 2);
    let made = fake.with(|w| {
        w.meetings
            .values()
            .find(|m| m["integrationTags"][0] == integration_tag_for("the-key").as_str())
            .cloned()
            .unwrap()
    });
    assert_eq!(again.meeting_id, made["id"].as_str().unwrap());
    assert_eq!(again.join_url, made["webLink"].as_str().unwrap());
    fake.assert_no_violations();
}

#[tokio::test]
async fn updates_patch_the_meeting_then_bring_invitees_in_line() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex.create(&spec(), "k").await.unwrap();
    fake.with(|w| {
        w.invitees.insert(
            "inv-host".into(),
            (m.meeting_id.clone(), "alice@example.com".into()),
        )
    });
    let mut changed = spec();
    changed.title = "Moved review".into();
    changed.description = String::new();
    changed.start = at("2030-12-05T14:00:00Z");
    changed.end = at("2030-12-05T14:05:00Z"); // 5 minutes: lengthened to Webex's 10
    changed.attendees = vec!["carol@example.com".into(), "dave@example.com".into()];
    let link = webex.update(&m.meeting_id, &changed, "u").await.unwrap();
    assert_eq!(link.as_deref(), Some(m.join_url.as_str()));
    let body = fake.requests_to("PATCH", "/v1/meetings/")[0].json();
    assert_eq!(
        body,
        json!({"title": "Moved review", "agenda": null, "start": "2030-12-05T15:00:00+01:00",
               "end": "2030-12-05T15:10:00+01:00", "timezone": "Europe/Berlin",
               "recurrence": null, "sendEmail": false})
    );
    let mut emails: Vec<String> = fake.with(|w| {
        w.invitees
            .values()
            .filter(|(mid, _)| *mid == m.meeting_id)
            .map(|(_, e)| e.clone())
            .collect()
    });
    emails.sort();
    assert_eq!(
        emails,
        ["alice@example.com", "carol@example.com", "dave@example.com"],
        "bob out, dave in, the organizer kept"
    );

    // Retried: nothing left to change.
    fake.clear_requests();
    webex.update(&m.meeting_id, &changed, "u").await.unwrap();
    assert_eq!(fake.count("POST", "/v1/meetingInvitees"), 0);
    assert_eq!(fake.count("DELETE", "/v1/meetingInvitees"), 0);
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_series_that_began_is_created_from_its_next_occurrence_and_updated_without_times() {
    let fake = fake().await;
    let webex = provider(&fake);
    let mut old = series("RRULE:FREQ=DAILY;INTERVAL=1");
    old.start = at("2020-03-02T08:00:00Z");
    old.end = at("2020-03-02T08:30:00Z");
    old.time_zone = Some("UTC".into());
    let m = webex.create(&old, "k").await.unwrap();
    let body = fake.requests_to("POST", "/v1/meetings")[0].json();
    let start = DateTime::parse_from_rfc3339(body["start"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let now = Utc::now();
    assert!(
        start > now && start <= now + TimeDelta::days(1) + TimeDelta::minutes(2),
        "{start}"
    );
    assert_eq!(
        start.format("%H:%M").to_string(),
        "08:00",
        "same time of day"
    );
    assert_eq!(body["recurrence"], "FREQ=DAILY;INTERVAL=1");

    old.title = "Renamed".into();
    webex.update(&m.meeting_id, &old, "u").await.unwrap();
    let patch = fake.requests_to("PATCH", "/v1/meetings/")[0].json();
    assert_eq!(patch["title"], "Renamed");
    assert!(
        patch.get("start").is_none() && patch.get("recurrence").is_none(),
        "{patch}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn meetings_that_are_over_are_not_created_and_not_updated() {
    let fake = fake().await;
    let webex = provider(&fake);
    let mut past = spec();
    past.start = at("2020-01-01T09:00:00Z");
    past.end = at("2020-01-01T10:00:00Z");
    let err = webex.create(&past, "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    assert_eq!(webex.update("m1", &past, "u").await.unwrap(), None);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn in_progress_and_connector_refusals_are_classified() {
    let fake = fake().await;
    let mut config = static_config(&fake);
    config.in_progress_retry_secs = 120;
    let webex = WebexProvider::new(config).unwrap();
    let a = webex.create(&spec(), "a").await.unwrap();
    let b = webex.create(&spec(), "b").await.unwrap();
    fake.with(|w| {
        w.in_progress.insert(a.meeting_id.clone());
        w.from_connector.insert(b.meeting_id.clone());
    });
    let err = webex.update(&a.meeting_id, &spec(), "u").await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.to_string().contains("request id ROUTER_T1"), "{err}");
    let err = webex.update(&b.meeting_id, &spec(), "u").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { .. })
            && err.to_string().contains("calendar connector"),
        "{err:?}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn occurrences_are_found_in_the_series_then_patched_or_deleted() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex
        .create(&series("RRULE:FREQ=DAILY;COUNT=5"), "k")
        .await
        .unwrap();
    let third = at("2030-12-05T09:00:00Z");
    webex
        .update_occurrence(
            &m.meeting_id,
            third,
            at("2030-12-05T15:00:00Z"),
            at("2030-12-05T15:30:00Z"),
            "Moved",
            "k2",
        )
        .await
        .unwrap();
    let lookup = fake.requests_to("GET", "/v1/meetings").pop().unwrap();
    assert_eq!(lookup.query("meetingSeriesId"), Some(m.meeting_id.as_str()));
    let patch = fake.requests_to("PATCH", "/v1/meetings/").pop().unwrap();
    assert_eq!(
        patch.path,
        format!("/v1/meetings/{}_20301205T090000Z", m.meeting_id)
    );
    assert_eq!(
        patch.json(),
        json!({"title": "Moved", "start": "2030-12-05T15:00:00Z", "end": "2030-12-05T15:30:00Z", "sendEmail": false})
    );

    let fourth = at("2030-12-06T09:00:00Z");
    webex
        .cancel_occurrence(&m.meeting_id, fourth, "k3")
        .await
        .unwrap();
    assert!(fake.with(|w| {
        !w.scheduled
            .iter()
            .any(|(_, id, _)| id.ends_with("_20301206T090000Z"))
    }));
    assert_eq!(
        fake.requests_to("DELETE", "/v1/meetings/")
            .pop()
            .unwrap()
            .path,
        format!("/v1/meetings/{}_20301206T090000Z", m.meeting_id)
    );
    // Already gone: done; moving a gone one: not found.
    webex
        .cancel_occurrence(&m.meeting_id, fourth, "k4")
        .await
        .unwrap();
    let err = webex
        .update_occurrence(&m.meeting_id, fourth, fourth, fourth, "t", "k5")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    // The past is kept as it was.
    fake.clear_requests();
    webex
        .cancel_occurrence(&m.meeting_id, at("2020-01-01T09:00:00Z"), "k6")
        .await
        .unwrap();
    assert!(fake.requests().is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn deleting_twice_is_done() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex.create(&spec(), "k").await.unwrap();
    webex.delete(&m.meeting_id, "d").await.unwrap();
    webex.delete(&m.meeting_id, "d").await.unwrap();
    assert_eq!(fake.count("DELETE", "/v1/meetings/"), 2);
    fake.assert_no_violations();
}

#[tokio::test]
async fn host_email_goes_with_every_call() {
    let fake = fake().await;
    fake.with(|w| w.host_email = Some("host@example.com".into()));
    let mut config = static_config(&fake);
    config.host_email = Some("host@example.com".into());
    let webex = WebexProvider::new(config).unwrap();
    let m = webex
        .create(&series("RRULE:FREQ=DAILY;COUNT=5"), "k")
        .await
        .unwrap();
    let mut changed = series("RRULE:FREQ=DAILY;COUNT=5");
    changed.attendees = vec!["erin@example.com".into()];
    webex.update(&m.meeting_id, &changed, "u").await.unwrap();
    webex
        .cancel_occurrence(&m.meeting_id, at("2030-12-04T09:00:00Z"), "c")
        .await
        .unwrap();
    webex.delete(&m.meeting_id, "d").await.unwrap();
    assert!(fake.requests().len() >= 8);
    fake.assert_no_violations();
}

#[tokio::test]
async fn oauth_tokens_are_refreshed_cached_and_renewed_once_on_401() {
    let fake = fake().await;
    fake.with(|w| w.rotate = true);
    let webex = oauth_provider(&fake);
    let m = webex.create(&spec(), "k").await.unwrap();
    webex.delete(&m.meeting_id, "d").await.unwrap();
    assert_eq!(fake.count("POST", "/v1/access_token"), 1, "cached");
    let form = fake.requests_to("POST", "/v1/access_token")[0].form();
    assert_eq!(form["refresh_token"], REFRESH);

    fake.with(|w| w.valid_tokens.clear());
    webex.create(&spec(), "k2").await.unwrap();
    let refreshes = fake.requests_to("POST", "/v1/access_token");
    assert_eq!(refreshes.len(), 2);
    assert_eq!(
        refreshes[1].form()["refresh_token"],
        "refresh-2-SECRET",
        "the rotated refresh token"
    );

    for _ in 0..2 {
        fake.fail_next("DELETE", "/v1/meetings/", webex_error(401, "Unauthorized"));
    }
    let err = webex.delete("x", "d").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert_eq!(
        fake.count("DELETE", "/v1/meetings/"),
        3,
        "one retry, then re-auth"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_refused_refresh_token_or_static_token_is_reauth_without_secrets() {
    let fake = fake().await;
    fake.with(|w| w.refresh_token = "a-newer-one".into());
    let webex = oauth_provider(&fake);
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Reauth { .. }) && err.to_string().contains("invalid_grant"),
        "{err:?}"
    );
    for secret in [REFRESH, CLIENT_SECRET] {
        assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    }

    let mut config = static_config(&fake);
    config.access_token = Some(Secret::new("revoked-token-123"));
    let webex = WebexProvider::new(config).unwrap();
    fake.clear_requests();
    let err = webex.delete("m", "d").await.unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert_eq!(fake.requests().len(), 1, "a static token cannot be renewed");
    assert!(!err.to_string().contains("revoked-token-123"));
    fake.assert_no_violations();
}

#[tokio::test]
async fn rate_limits_and_faults_are_classified_and_never_leak_secrets() {
    let fake = fake().await;
    let webex = provider(&fake);
    fake.fail_next(
        "POST",
        "/v1/meetings",
        webex_error(429, "Too many requests").header("retry-after", "45"),
    );
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(45)));

    fake.fail_next("POST", "/v1/meetings", webex_error(500, "Internal error"));
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("HTTP 500, request id ROUTER_T1"),
        "{err}"
    );

    fake.fail_next(
        "GET",
        "/v1/meetings",
        Reply::raw(
            503,
            "text/html",
            "<html><title>Service Unavailable</title></html>",
        ),
    );
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("Service Unavailable"),
        "{err}"
    );

    fake.fail_next(
        "POST",
        "/v1/meetings",
        Reply::raw(
            200,
            "application/json",
            &format!("{{\"password\":\"{PASSWORD}\",\"id\":\"ab"),
        ),
    );
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable() && !err.to_string().contains(PASSWORD),
        "{err}"
    );

    fake.fail_next(
        "POST",
        "/v1/meetings",
        Reply::json(200, json!({"id": "abc", "password": PASSWORD})),
    );
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(
        err.is_retryable()
            && err.to_string().contains("webLink")
            && !err.to_string().contains(PASSWORD),
        "{err}"
    );

    fake.fail_next("POST", "/v1/meetings", webex_error(400, "Invalid title."));
    let err = webex.create(&spec(), "k").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    fake.assert_no_violations();
}

#[test]
fn config_is_validated_with_precise_messages() {
    let parse = |v: Value| serde_json::from_value::<WebexConfig>(v).map_err(|e| e.to_string());
    let make = |v: Value| {
        WebexProvider::new(parse(v).unwrap())
            .err()
            .unwrap_or_default()
    };
    let config = parse(json!({"access_token": "t"})).unwrap();
    assert_eq!(config.base_url, "https://webexapis.com/v1");
    assert_eq!(config.in_progress_retry_secs, 300);
    assert!(WebexProvider::new(config).is_ok());
    assert!(make(json!({})).contains("no credentials"));
    assert!(make(json!({"access_token": "t", "client_id": "c"})).contains("not both"));
    assert_eq!(
        make(json!({"client_id": "c", "client_secret": "s"})),
        "webex: OAuth refresh needs refresh_token too"
    );
    assert!(make(json!({"access_token": "t", "host_email": "nobody"})).contains("host_email"));
    assert!(
        parse(json!({"access_token": "t", "hostEmail": "a@b"}))
            .unwrap_err()
            .contains("hostEmail")
    );
    let oauth =
        parse(json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"})).unwrap();
    assert!(format!("{oauth:?}").contains("refresh_token: Some(***)"));
    assert!(WebexProvider::new(oauth).is_ok());
}

/// Issue 14, item 8: "423 Locked: The requested resource is temporarily unavailable. A
/// Retry-After header may be present" (webex-meeting.json, every operation): transient,
/// honouring Retry-After; it used to be permanent.
#[tokio::test]
async fn locked_is_transient_and_honours_retry_after() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex.create(&spec(), "k").await.unwrap();
    fake.fail_next(
        "PATCH",
        "/v1/meetings/",
        webex_error(423, "The requested resource is temporarily unavailable.")
            .header("retry-after", "17"),
    );
    let err = webex.update(&m.meeting_id, &spec(), "u").await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    fake.fail_next("DELETE", "/v1/meetings/", webex_error(423, "Locked"));
    let err = webex.delete(&m.meeting_id, "d").await.unwrap_err();
    assert!(err.is_retryable() && err.retry_after().is_none(), "{err:?}");
    fake.assert_no_violations();
}

/// Issue 14, item 8: invitee lists are paginated (at most 100 a page, the next page named by
/// `Link: <...>; rel="next"`); reading one page made the adapter invite the 101st guest again
/// and never remove the gone ones beyond the first page.
#[tokio::test]
async fn invitee_lists_are_read_page_by_page() {
    let fake = fake().await;
    let webex = provider(&fake);
    let mut big = spec();
    big.attendees = (0..230)
        .map(|i| format!("guest{i:03}@example.com"))
        .collect();
    let m = webex.create(&big, "k").await.unwrap();
    fake.clear_requests();
    // 229 stay, one goes, one comes.
    let mut changed = big.clone();
    changed.attendees.retain(|a| a != "guest150@example.com");
    changed.attendees.push("new@example.com".into());
    webex.update(&m.meeting_id, &changed, "u").await.unwrap();
    assert_eq!(fake.count("GET", "/v1/meetingInvitees"), 3, "three pages");
    assert_eq!(fake.count("POST", "/v1/meetingInvitees"), 1);
    assert_eq!(fake.count("DELETE", "/v1/meetingInvitees"), 1);
    let emails: BTreeSet<String> = fake.with(|w| {
        w.invitees
            .values()
            .filter(|(mid, _)| *mid == m.meeting_id)
            .map(|(_, e)| e.clone())
            .collect()
    });
    assert_eq!(emails.len(), 230);
    assert!(emails.contains("new@example.com") && !emails.contains("guest150@example.com"));
    fake.assert_no_violations();
}

/// Issue 14, item 8: the calendar names an occurrence by its original start; once moved, it
/// used to be looked for at the original time by its current start and never found again. It is
/// now found by Webex's scheduled meeting id ({series}_{original start}).
#[tokio::test]
async fn an_occurrence_moved_once_can_be_moved_and_cancelled_again() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex
        .create(&series("RRULE:FREQ=DAILY;COUNT=5"), "k")
        .await
        .unwrap();
    let third = at("2030-12-05T09:00:00Z");
    let id = format!("{}_20301205T090000Z", m.meeting_id);
    for (start, end) in [
        ("2030-12-05T15:00:00Z", "2030-12-05T15:30:00Z"),
        ("2030-12-05T17:00:00Z", "2030-12-05T17:30:00Z"),
    ] {
        webex
            .update_occurrence(&m.meeting_id, third, at(start), at(end), "Moved", "k2")
            .await
            .unwrap();
        let patch = fake.requests_to("PATCH", "/v1/meetings/").pop().unwrap();
        assert_eq!(patch.path, format!("/v1/meetings/{id}"));
        assert_eq!(patch.json()["start"], start);
    }
    // Another occurrence moved onto the third's original time is not taken for it.
    let fourth = at("2030-12-06T09:00:00Z");
    webex
        .update_occurrence(
            &m.meeting_id,
            fourth,
            third,
            at("2030-12-05T09:30:00Z"),
            "x",
            "k3",
        )
        .await
        .unwrap();
    webex
        .cancel_occurrence(&m.meeting_id, third, "k4")
        .await
        .unwrap();
    let scheduled: Vec<String> = fake.with(|w| w.scheduled.iter().map(|s| s.1.clone()).collect());
    assert!(!scheduled.contains(&id), "{scheduled:?}");
    assert!(scheduled.contains(&format!("{}_20301206T090000Z", m.meeting_id)));
    fake.assert_no_violations();
}

/// Issue 14, item 8: PATCH goes out as application/json-patch+json, the content type of "Patch a
/// Meeting" in Webex's OpenAPI specification (the fake answers anything else 415).
#[tokio::test]
async fn patches_use_the_content_type_of_webexs_openapi_specification() {
    let fake = fake().await;
    let webex = provider(&fake);
    let m = webex
        .create(&series("RRULE:FREQ=DAILY;COUNT=5"), "k")
        .await
        .unwrap();
    webex.update(&m.meeting_id, &spec(), "u").await.unwrap();
    webex
        .update_occurrence(
            &m.meeting_id,
            at("2030-12-05T09:00:00Z"),
            at("2030-12-05T15:00:00Z"),
            at("2030-12-05T15:30:00Z"),
            "Moved",
            "k2",
        )
        .await
        .unwrap();
    let patches = fake.requests_to("PATCH", "/v1/meetings/");
    assert_eq!(patches.len(), 2);
    for p in patches {
        assert_eq!(
            p.header("content-type"),
            Some("application/json-patch+json")
        );
        assert!(
            p.json().is_object(),
            "an object body, as the spec's example"
        );
    }
    fake.assert_no_violations();
}

/// Issue 14, item 8: failed creates count against Webex's 100-per-24-hours scheduling limit. A
/// create Webex refused (4xx) is permanent, not retried; and the adapter stops at
/// `create_limit_per_day` attempts without calling.
#[tokio::test]
async fn refused_creates_are_not_retried_and_attempts_are_capped() {
    let fake = fake().await;
    let mut config = static_config(&fake);
    config.create_limit_per_day = 3;
    let webex = WebexProvider::new(config).unwrap();
    fake.fail_next(
        "POST",
        "/v1/meetings",
        webex_error(400, "The title is invalid."),
    );
    let err = webex.create(&spec(), "a").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    fake.fail_next("POST", "/v1/meetings", webex_error(409, "Conflict."));
    let err = webex.create(&spec(), "b").await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    webex.create(&spec(), "c").await.unwrap();
    let posts = fake.count("POST", "/v1/meetings");
    let err = webex.create(&spec(), "d").await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
    assert!(err.retry_after().unwrap() > Duration::from_secs(23 * 3600));
    assert_eq!(
        fake.count("POST", "/v1/meetings"),
        posts,
        "no call past the cap"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn the_doctor_check_asks_who_the_token_is_and_tells_refused_credentials() {
    let fake = fake().await;
    let what = provider(&fake).check().await.unwrap();
    assert!(what.contains("/people/me"), "{what}");
    assert_eq!(fake.count("GET", "/v1/people/me"), 1);
    // The refresh-token mode refreshes first, then asks.
    oauth_provider(&fake).check().await.unwrap();
    assert_eq!(fake.count("POST", "/v1/access_token"), 1);

    let mut wrong = WebexConfig::with_token(Secret::new("expired-or-wrong"));
    wrong.base_url = format!("{}/v1/", fake.url);
    let err = WebexProvider::new(wrong)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    assert!(!err.to_string().contains("expired-or-wrong"), "{err}");

    let mut wrong =
        WebexConfig::with_refresh(CLIENT_ID, Secret::new("wrong"), Secret::new(REFRESH));
    wrong.base_url = format!("{}/v1", fake.url);
    let err = WebexProvider::new(wrong)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Reauth { .. }), "{err:?}");
    fake.assert_no_violations();
}
