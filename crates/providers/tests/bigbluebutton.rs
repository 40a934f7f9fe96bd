//! The `bigbluebutton` adapter against a fake BigBlueButton API written from its reference:
//! `GET /bigbluebutton/api/{call}?{query}&checksum=hex(sha(call + query + secret))`, XML answers
//! with `returncode` and `messageKey`; `create` idempotent per meetingID (`duplicateWarning`),
//! `end` answering `notFound` when the meeting is not running.

mod common_rooms;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use common_rooms::{Canned, Fake, at, spec};
use confsync_providers::bigbluebutton::{BigBlueButtonConfig, BigBlueButtonProvider};
use confsync_providers::{ConferenceProvider, JoinAnswer, JoinRequest, ProviderError};
use confsync_store::Store;
use serde_json::{Value, json};

const SECRET: &str = "bbb-shared-secret-8f3a";

#[derive(Clone, Copy)]
enum Sha {
    One,
    Two56,
    Three84,
    Five12,
}

impl Sha {
    fn name(self) -> &'static str {
        match self {
            Sha::One => "sha1",
            Sha::Two56 => "sha256",
            Sha::Three84 => "sha384",
            Sha::Five12 => "sha512",
        }
    }

    /// The reference checksum, computed independently of the adapter.
    fn checksum(self, call: &str, query: &str, secret: &str) -> String {
        use aws_lc_rs::digest;
        let algorithm = match self {
            Sha::One => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Sha::Two56 => &digest::SHA256,
            Sha::Three84 => &digest::SHA384,
            Sha::Five12 => &digest::SHA512,
        };
        let d = digest::digest(algorithm, format!("{call}{query}{secret}").as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A running meeting: its createTime and the create call's parameters.
type Running = (String, BTreeMap<String, String>);

#[derive(Clone)]
struct App {
    fake: Fake,
    sha: Sha,
    /// meetingID -> (createTime, create parameters)
    running: Arc<Mutex<BTreeMap<String, Running>>>,
    clock: Arc<AtomicU64>,
    /// Answer a repeated create FAILED `idNotUnique` (older releases) instead of SUCCESS with
    /// `duplicateWarning`.
    old_release: Arc<std::sync::atomic::AtomicBool>,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Checks a call's checksum; answers its parameters.
fn verify(sha: Sha, call: &str, query: &str) -> Result<BTreeMap<String, String>, String> {
    let (signed, sum) = match query.rsplit_once("&checksum=") {
        Some(parts) => parts,
        None => ("", query.strip_prefix("checksum=").ok_or("no checksum")?),
    };
    if sha.checksum(call, signed, SECRET) != sum {
        return Err("checksum mismatch".into());
    }
    Ok(signed
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), decode(v))
        })
        .collect())
}

fn xml(body: &str) -> Response {
    Canned::new(200, &format!("<response>{body}</response>"))
        .header("content-type", "text/xml")
        .into_response()
}

fn failed(key: &str, message: &str) -> Response {
    xml(&format!(
        "<returncode>FAILED</returncode><messageKey>{key}</messageKey><message>{message}</message>"
    ))
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
    if seen.method != Method::GET {
        return app.fake.problem(format!("{} instead of GET", seen.method));
    }
    let Some(call) = seen.path.strip_prefix("/bigbluebutton/api/") else {
        return app.fake.problem(format!("unexpected path {}", seen.path));
    };
    let params = match verify(app.sha, call, seen.query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(_) => {
            return failed(
                "checksumError",
                "You did not pass the checksum security check",
            );
        }
    };
    // `getMeetings` (API reference): no parameters; SUCCESS with the running meetings, or an
    // empty list with messageKey noMeetings.
    if call == "getMeetings" {
        if !params.is_empty() {
            return app
                .fake
                .problem(format!("getMeetings with parameters {params:?}"));
        }
        let running = app.running.lock().unwrap().len();
        return if running == 0 {
            xml(
                "<returncode>SUCCESS</returncode><meetings/><messageKey>noMeetings</messageKey><message>no meetings were found on this server</message>",
            )
        } else {
            xml("<returncode>SUCCESS</returncode><meetings><meeting/></meetings>")
        };
    }
    let Some(meeting_id) = params.get("meetingID").cloned() else {
        return app.fake.problem(format!("{call} without meetingID"));
    };
    match call {
        "create" => {
            // The API reference (`create`, https://docs.bigbluebutton.org/development/api#create):
            // `name` is required and must be 2 to 256 characters, else FAILED validationError
            // (the server is Java: UTF-16 code units).
            let name_len = params.get("name").map_or(0, |n| n.encode_utf16().count());
            if !(2..=256).contains(&name_len) {
                return failed(
                    "validationError",
                    "Meeting name must be between 2 and 256 characters",
                );
            }
            if params.get("record").map(String::as_str) != Some("false") {
                return app.fake.problem("create must say record=false".into());
            }
            let mut running = app.running.lock().unwrap();
            if let Some((time, _)) = running.get(&meeting_id) {
                // Older releases refuse a second create whose passwords differ from the first
                // (role mode sends none, so the server's random ones never match).
                if app.old_release.load(Ordering::SeqCst) {
                    return failed(
                        "idNotUnique",
                        "A meeting already exists with that meeting ID. Please use a different meeting ID.",
                    );
                }
                return xml(&format!(
                    "<returncode>SUCCESS</returncode><meetingID>{meeting_id}</meetingID><createTime>{time}</createTime><messageKey>duplicateWarning</messageKey><message>This conference was already in existence and may currently be in progress.</message>"
                ));
            }
            let time = (1_900_000_000_000 + app.clock.fetch_add(1, Ordering::SeqCst)).to_string();
            running.insert(meeting_id.clone(), (time.clone(), params));
            xml(&format!(
                "<returncode>SUCCESS</returncode><meetingID>{meeting_id}</meetingID><internalMeetingID>int-1</internalMeetingID><createTime>{time}</createTime><hasBeenForciblyEnded>false</hasBeenForciblyEnded><messageKey></messageKey><message></message>"
            ))
        }
        "getMeetingInfo" => match app.running.lock().unwrap().get(&meeting_id) {
            Some((time, _)) => xml(&format!(
                "<returncode>SUCCESS</returncode><meetingID>{meeting_id}</meetingID><createTime>{time}</createTime><running>true</running>"
            )),
            None => failed("notFound", "A meeting with that ID does not exist"),
        },
        "end" => {
            let mut running = app.running.lock().unwrap();
            let Some((_, created)) = running.get(&meeting_id) else {
                return failed(
                    "notFound",
                    "We could not find a meeting with that meeting ID - perhaps the meeting is not yet running?",
                );
            };
            if let Some(pw) = created.get("moderatorPW")
                && params.get("password") != Some(pw)
            {
                return failed("invalidPassword", "wrong password");
            }
            running.remove(&meeting_id);
            xml(
                "<returncode>SUCCESS</returncode><messageKey>sentEndMeetingRequest</messageKey><message>A request to end the meeting was sent.</message>",
            )
        }
        other => app.fake.problem(format!("unexpected call {other}")),
    }
}

async fn bbb(sha: Sha, extra: Value) -> (App, String, BigBlueButtonProvider) {
    let app = App {
        fake: Fake::default(),
        sha,
        running: Arc::default(),
        clock: Arc::default(),
        old_release: Arc::default(),
    };
    let base = common_rooms::serve(Router::new().fallback(handle).with_state(app.clone())).await;
    let base_url = format!("{base}/bigbluebutton/api");
    let mut config = json!({
        "base_url": base_url,
        "shared_secret": SECRET,
        "checksum": sha.name(),
        "public_url": "https://confsync.example.com/",
        "timeout_secs": 5,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let config: BigBlueButtonConfig = serde_json::from_value(config).unwrap();
    let store = Store::memory().await.unwrap();
    (
        app,
        base_url,
        BigBlueButtonProvider::new(config, store).unwrap(),
    )
}

fn now(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn meeting_spec() -> confsync_providers::MeetingSpec {
    spec(
        "Board meeting",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    )
}

const DURING: &str = "2030-06-01T10:05:00Z";

fn guest() -> JoinRequest {
    JoinRequest::default()
}

fn host() -> JoinRequest {
    JoinRequest {
        host: true,
        name: Some("Olga Organizer".into()),
    }
}

/// Checks a redirect's `join` URL; answers its parameters.
fn join_params(app: &App, base_url: &str, answer: JoinAnswer) -> BTreeMap<String, String> {
    let JoinAnswer::Redirect(url) = answer else {
        panic!("refused: {answer:?}");
    };
    let query = url
        .strip_prefix(&format!("{base_url}/join?"))
        .unwrap_or_else(|| panic!("not a join URL: {url}"));
    assert!(query.ends_with(&format!(
        "&checksum={}",
        app.sha.checksum("join", query.rsplit_once("&checksum=").unwrap().0, SECRET)
    )));
    verify(app.sha, "join", query).unwrap()
}

#[tokio::test]
async fn a_click_creates_the_meeting_then_redirects_to_a_signed_join() {
    let (app, base_url, p) = bbb(Sha::Two56, json!({})).await;
    let m = p.create(&meeting_spec(), "conf-1/create").await.unwrap();
    assert!(app.fake.requests().is_empty(), "create is local");
    assert!(m.meeting_id.starts_with("bbb-"));
    assert_eq!(
        m.join_url,
        format!("https://confsync.example.com/join/{}", m.meeting_id)
    );
    assert_eq!(p.create(&meeting_spec(), "conf-1/create").await.unwrap(), m);

    let params = join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap(),
    );
    let sent = app.fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/bigbluebutton/api/create");
    let running = app.running.lock().unwrap().clone();
    let (bbb_id, (create_time, created)) = running.iter().next().unwrap();
    assert_eq!(bbb_id.len(), 32);
    assert!(
        !m.meeting_id.contains(bbb_id.as_str()),
        "public id and BBB id differ"
    );
    assert_eq!(created["name"], "Board meeting");
    assert!(!created.contains_key("attendeePW") && !created.contains_key("duration"));
    assert_eq!(
        params,
        BTreeMap::from([
            ("fullName".to_owned(), "Guest".to_owned()),
            ("meetingID".to_owned(), bbb_id.clone()),
            ("role".to_owned(), "VIEWER".to_owned()),
            ("createTime".to_owned(), create_time.clone()),
            ("redirect".to_owned(), "true".to_owned()),
        ])
    );
    // The host, again: the same meeting (duplicateWarning), as moderator with a name.
    let params = join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &host(), now(DURING))
            .await
            .unwrap(),
    );
    assert_eq!(params["role"], "MODERATOR");
    assert_eq!(params["fullName"], "Olga Organizer");
    assert_eq!(&params["createTime"], create_time);
    let create_query = app.fake.requests()[1].query.clone().unwrap();
    assert!(
        create_query.starts_with("name=Board+meeting&meetingID="),
        "{create_query}"
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn every_checksum_algorithm_is_accepted_by_the_server() {
    for sha in [Sha::One, Sha::Three84, Sha::Five12] {
        let (app, base_url, p) = bbb(sha, json!({})).await;
        let m = p.create(&meeting_spec(), "k").await.unwrap();
        let params = join_params(
            &app,
            &base_url,
            p.join_at(&m.meeting_id, &guest(), now(DURING))
                .await
                .unwrap(),
        );
        assert_eq!(params["role"], "VIEWER", "{}", sha.name());
        app.fake.assert_clean();
    }
}

#[tokio::test]
async fn password_mode_sends_derived_passwords_on_create_join_and_end() {
    let (app, base_url, p) = bbb(
        Sha::Two56,
        json!({"join_auth": "password", "duration_from_event": true, "end_when_no_moderator": true}),
    )
    .await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let guest_params = join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap(),
    );
    let created = app
        .running
        .lock()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .1
        .clone();
    let (attendee, moderator) = (&created["attendeePW"], &created["moderatorPW"]);
    assert_ne!(attendee, moderator);
    assert_eq!(&guest_params["password"], attendee);
    assert!(!guest_params.contains_key("role"));
    // Until 12:00 (end + 60 min grace) from 10:05: 115 minutes.
    assert_eq!(created["duration"], "115");
    assert_eq!(created["endWhenNoModerator"], "true");
    let host_params = join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &host(), now(DURING))
            .await
            .unwrap(),
    );
    assert_eq!(&host_params["password"], moderator);
    p.delete(&m.meeting_id, "d").await.unwrap();
    assert!(
        app.running.lock().unwrap().is_empty(),
        "ended with the moderator password"
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn cancel_ends_a_running_meeting_and_refuses_later_joins() {
    let (app, base_url, p) = bbb(Sha::Two56, json!({})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap(),
    );
    // `end` fails once: the delete is retried, but joins are refused already.
    app.fake.fail_next([Canned::html(503)]);
    let e = p.delete(&m.meeting_id, "d").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(
        p.join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap(),
        JoinAnswer::Refused("this meeting was cancelled".into())
    );
    p.delete(&m.meeting_id, "d").await.unwrap();
    assert!(app.running.lock().unwrap().is_empty());
    // Not running any more: `end` answers notFound, which is done.
    p.delete(&m.meeting_id, "d").await.unwrap();
    let lines = app.fake.lines();
    assert_eq!(
        lines,
        [
            "GET /bigbluebutton/api/create",
            "GET /bigbluebutton/api/end",
            "GET /bigbluebutton/api/end",
            "GET /bigbluebutton/api/end",
        ]
    );
    // Unknown meetings: nothing to end.
    p.delete("bbb-unknown", "d").await.unwrap();
    assert_eq!(app.fake.lines().len(), 4);
    app.fake.assert_clean();
}

#[tokio::test]
async fn reschedule_and_rename_are_local() {
    let (app, base_url, p) = bbb(Sha::Two56, json!({})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let long_title = "é".repeat(300);
    let moved = spec(
        &long_title,
        at("2030-06-02T10:00:00Z"),
        at("2030-06-02T11:00:00Z"),
    );
    assert_eq!(
        p.update(&m.meeting_id, &moved, "u")
            .await
            .unwrap()
            .as_deref(),
        Some(m.join_url.as_str())
    );
    assert!(app.fake.requests().is_empty());
    assert_eq!(
        p.join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap(),
        JoinAnswer::Refused("this meeting opens at 2030-06-02 09:45 UTC".into())
    );
    assert_eq!(
        p.join_at(&m.meeting_id, &guest(), now("2030-06-02T12:00:01Z"))
            .await
            .unwrap(),
        JoinAnswer::Refused("this meeting has ended".into())
    );
    join_params(
        &app,
        &base_url,
        p.join_at(&m.meeting_id, &guest(), now("2030-06-02T10:30:00Z"))
            .await
            .unwrap(),
    );
    let created = app
        .running
        .lock()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .1
        .clone();
    assert_eq!(
        created["name"].chars().count(),
        256,
        "title cut on a character boundary"
    );
    app.fake.assert_clean();
}

#[tokio::test]
async fn failures_are_classified() {
    let (app, _, p) = bbb(Sha::Two56, json!({})).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let g = guest();
    let join = || p.join_at(&m.meeting_id, &g, now(DURING));
    app.fake.fail_next([
        Canned::html(502).header("x-request-id", "bbb-req-1"),
        Canned::html(200),
        Canned::new(200, "<response><returncode>SUCCESS</returncode><meetingID>ab"),
        Canned::new(
            200,
            "<response><returncode>FAILED</returncode><messageKey>maxConcurrent</messageKey><message>Too many meetings</message></response>",
        ),
        Canned::new(429, "slow down").header("retry-after", "9"),
    ]);
    let e = join().await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient { .. }), "{e:?}");
    assert!(e.to_string().contains("request id bbb-req-1"), "{e}");
    let e = join().await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. })
            && e.to_string().contains("not a BigBlueButton XML answer"),
        "HTML with 200: {e:?}"
    );
    let e = join().await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Transient { .. }),
        "truncated: {e:?}"
    );
    let e = join().await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Permanent { .. }) && e.to_string().contains("maxConcurrent"),
        "{e:?}"
    );
    let e = join().await.unwrap_err();
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(9)));
    assert!(matches!(e, ProviderError::RateLimited { .. }));
    app.fake.assert_clean();
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error_that_never_shows_the_secret() {
    // The fake server knows SECRET; the provider is configured with another one.
    let (_app, _, wrong) = bbb(Sha::Two56, json!({"shared_secret": "another-secret-123"})).await;
    let m = wrong.create(&meeting_spec(), "k").await.unwrap();
    let e = wrong
        .join_at(&m.meeting_id, &guest(), now(DURING))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Permanent { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("checksumError") && text.contains("shared_secret"),
        "{text}"
    );
    assert!(
        !text.contains("another-secret-123") && !text.contains("checksum="),
        "{text}"
    );
    // A wrong algorithm is the same error.
    let (_, _, sha1) = bbb(Sha::Two56, json!({"checksum": "sha1"})).await;
    let m = sha1.create(&meeting_spec(), "k").await.unwrap();
    let e = sha1
        .join_at(&m.meeting_id, &guest(), now(DURING))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("checksumError"), "{e}");
}

#[tokio::test]
async fn config_is_validated() {
    let store = Store::memory().await.unwrap();
    let parse = |v: Value| serde_json::from_value::<BigBlueButtonConfig>(v);
    let ok = json!({
        "base_url": "https://bbb.example.com/bigbluebutton/api/",
        "shared_secret": SECRET,
        "public_url": "https://confsync.example.com/",
    });
    let c = parse(ok.clone()).unwrap();
    assert_eq!(c.grace_minutes, 60);
    let p = BigBlueButtonProvider::new(c, store.clone()).unwrap();
    assert_eq!(p.name(), "bigbluebutton");
    assert!(p.capabilities().time && p.capabilities().occurrences);
    assert!(parse(json!({"shared_secret": SECRET, "public_url": "https://c/"})).is_err());
    let mut bad = ok.clone();
    bad["checksum"] = json!("md5");
    assert!(parse(bad).is_err());
    let mut bad = ok.clone();
    bad["moderator_pw"] = json!("x");
    assert!(parse(bad).is_err(), "unknown fields are errors");
    let mut bad = ok.clone();
    bad["public_url"] = json!("confsync.example.com/");
    let e = BigBlueButtonProvider::new(parse(bad).unwrap(), store.clone())
        .err()
        .unwrap();
    assert!(e.contains("public_url"), "{e}");
}

/// Issue 14, item 11: a one-character title made every join fail with validationError (the
/// fake refuses names outside 2..=256 characters, as the API reference's `create` says); long
/// titles are cut to 256 UTF-16 units on a character boundary.
#[tokio::test]
async fn meeting_names_are_fitted_to_two_to_256_characters() {
    let (app, _, p) = bbb(Sha::Two56, json!({})).await;
    for (i, title) in ["X", "", "👍", &"é".repeat(300), &"😀".repeat(200)]
        .into_iter()
        .enumerate()
    {
        let mut spec = meeting_spec();
        spec.title = title.to_owned();
        let m = p.create(&spec, &format!("k{i}")).await.unwrap();
        let answer = p
            .join_at(&m.meeting_id, &guest(), now(DURING))
            .await
            .unwrap();
        assert!(
            matches!(answer, JoinAnswer::Redirect(_)),
            "{title:?}: {answer:?}"
        );
    }
    let names: Vec<String> = app
        .running
        .lock()
        .unwrap()
        .values()
        .map(|(_, params)| params["name"].clone())
        .collect();
    assert!(names.contains(&"X meeting".to_owned()), "{names:?}");
    assert!(names.contains(&"Meeting".to_owned()), "{names:?}");
    assert!(names.contains(&"é".repeat(256)), "{names:?}");
    assert!(names.contains(&"😀".repeat(128)), "{names:?}");
    app.fake.assert_clean();
}

/// Issue 14, item 11: a repeated create in role mode answers `duplicateWarning` on current
/// releases and `idNotUnique` on older ones; both mean the meeting is running, so the second
/// click still gets a join (with the running meeting's createTime from getMeetingInfo).
#[tokio::test]
async fn a_repeated_create_answered_id_not_unique_still_joins() {
    let (app, base_url, p) = bbb(Sha::Two56, json!({})).await;
    app.old_release.store(true, Ordering::SeqCst);
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let first = p
        .join_at(&m.meeting_id, &guest(), now(DURING))
        .await
        .unwrap();
    let second = p
        .join_at(&m.meeting_id, &host(), now(DURING))
        .await
        .unwrap();
    let (a, b) = (
        join_params(&app, &base_url, first),
        join_params(&app, &base_url, second),
    );
    assert_eq!(a["createTime"], b["createTime"]);
    assert_eq!(b["role"], "MODERATOR");
    let infos = app
        .fake
        .lines()
        .iter()
        .filter(|l| l.ends_with("/getMeetingInfo"))
        .count();
    assert_eq!(infos, 1);
    app.fake.assert_clean();
}

#[tokio::test]
async fn the_doctor_check_is_a_signed_get_meetings_and_tells_a_wrong_secret() {
    for sha in [Sha::One, Sha::Two56, Sha::Five12] {
        let (app, _, p) = bbb(sha, json!({})).await;
        let what = p.check().await.unwrap();
        assert!(what.contains("getMeetings"), "{what}");
        assert_eq!(
            app.fake
                .lines()
                .iter()
                .filter(|l| l.as_str() == "GET /bigbluebutton/api/getMeetings")
                .count(),
            1
        );
        app.fake.assert_clean();
    }
    let (app, _, wrong) = bbb(
        Sha::Two56,
        json!({"shared_secret": "not-the-secret-at-all"}),
    )
    .await;
    let err = wrong.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!err.to_string().contains("not-the-secret-at-all"), "{err}");
    // A server that expects another algorithm refuses the same way.
    let (_, _, other) = bbb(Sha::Two56, json!({"checksum": "sha1"})).await;
    assert!(other.check().await.is_err());
    app.fake.assert_clean();
}
