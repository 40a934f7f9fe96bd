//! The add-on API over HTTP, with the engine syncing against the emulator behind it.

mod common;

use std::time::Duration;

use confsync_core::model::MeetingSpec;
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

struct Harness {
    http: reqwest::Client,
    calendar: String,
    service: String,
    key: String,
    store: Store,
}

async fn start() -> Harness {
    let key = "cs_test-key-0123456789";
    let r = common::start(key, None).await;
    Harness {
        http: r.http,
        calendar: r.calendar,
        service: r.service,
        key: key.into(),
        store: r.store,
    }
}

impl Harness {
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.service));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn calendar_api(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}calendar/v3/{path}", self.calendar))
            .bearer_auth(format!("dev:{ALICE}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }

    /// Polls the local meeting until `done` holds (the scheduler runs in the background).
    async fn meeting_until(
        &self,
        id: &str,
        done: impl Fn(&MeetingSpec, bool) -> bool,
    ) -> (MeetingSpec, bool) {
        for _ in 0..200 {
            let m = self.store.meeting(id).await.unwrap().unwrap();
            let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
            if done(&spec, m.deleted) {
                return (spec, m.deleted);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("meeting {id} never reached the expected state");
    }
}

fn event(summary: &str, start: &str, end: &str, conference: Value) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}, "conferenceData": conference})
}

/// A wrong or missing key is the operator's mistake, which no user can fix: 401 with
/// conferenceErrorType PERMANENT (AUTHENTICATION would send the user to a sign-in that cannot
/// help, and has no URL).
#[tokio::test]
async fn the_add_on_api_needs_a_valid_key() {
    let h = start().await;
    let body = json!({"calendarId": ALICE, "eventId": "e1"});
    let (status, answer) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"]["conferenceErrorType"].as_str()),
        (401, Some("PERMANENT"))
    );
    let (status, answer) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(body),
            Some("cs_wrong"),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["conferenceErrorType"].as_str()),
        (401, Some("PERMANENT"))
    );
    assert!(answer["error"].get("authenticationUrl").is_none());
    let (status, _) = h
        .api(reqwest::Method::GET, "v1/status", None, Some("cs_wrong"))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn malformed_requests_get_a_permanent_conference_error() {
    let h = start().await;
    for body in [
        json!({"calendarId": ALICE}),
        json!({"calendarId": "", "eventId": "e"}),
        json!({"calendarId": ALICE, "eventId": "e", "colour": 1}),
        json!([1]),
    ] {
        let (status, answer) = h
            .api(
                reqwest::Method::POST,
                "v1/conferences",
                Some(body.clone()),
                Some(&h.key),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            answer["error"]["conferenceErrorType"], "PERMANENT",
            "{body}"
        );
    }
    let (status, answer) = h
        .api(
            reqwest::Method::POST,
            "v1/calendars/unknown@example.com/sync",
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!(status, 404, "an unknown calendar has nothing to sync");
    // The add-on removes its trigger when the 404 names the calendar.
    assert_eq!(
        answer["error"]["calendarId"], "unknown@example.com",
        "{answer}"
    );
}

#[tokio::test]
async fn a_conference_is_created_once_per_event_and_follows_the_event() {
    let h = start().await;
    let request = json!({"calendarId": ALICE, "eventId": "abcdefgh01", "requestId": "r-1"});
    let (status, conference) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(request.clone()),
            Some(&h.key),
        )
        .await;
    assert_eq!(status, 200, "{conference}");
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    assert_eq!(conference["conferenceSolution"]["key"]["type"], "addOn");
    assert_eq!(conference["entryPoints"][0]["entryPointType"], "video");
    assert_eq!(
        conference["parameters"]["addOnParameters"]["parameters"]["confsyncConferenceId"],
        json!(id)
    );
    // The add-on retries, or the user opens the event again: same conference.
    let (_, again) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": ALICE, "eventId": "abcdefgh01", "requestId": "r-2"})),
            Some(&h.key),
        )
        .await;
    assert_eq!(again["conferenceId"], json!(id));

    // Calendar saves the event with the conference data the add-on returned.
    let mut e = event(
        "Planning",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
        conference.clone(),
    );
    e["id"] = json!("abcdefgh01");
    h.calendar_api(
        reqwest::Method::POST,
        "calendars/primary/events?conferenceDataVersion=1",
        e,
    )
    .await;
    let (status, _) = h
        .api(
            reqwest::Method::POST,
            &format!("v1/calendars/{ALICE}/sync"),
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!(status, 202);
    let (spec, _) = h.meeting_until(&id, |s, _| s.title == "Planning").await;
    assert_eq!(spec.start.key(), "2026-12-01T10:00:00Z");

    h.calendar_api(reqwest::Method::PATCH, "calendars/primary/events/abcdefgh01", json!({"start": {"dateTime": "2026-12-01T14:00:00Z"}, "end": {"dateTime": "2026-12-01T15:00:00Z"}})).await;
    h.api(
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        None,
        Some(&h.key),
    )
    .await;
    h.meeting_until(&id, |s, _| s.start.key() == "2026-12-01T14:00:00Z")
        .await;

    let join = h
        .http
        .get(format!("{}join/{id}", h.service))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 200);
    assert!(join.text().await.unwrap().contains("Planning"));

    let (status, status_body) = h
        .api(reqwest::Method::GET, "v1/status", None, Some(&h.key))
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_body["calendars"][0]["calendarId"], ALICE);
    assert_eq!(status_body["calendars"][0]["synced"], true);
    let (status, got) = h
        .api(
            reqwest::Method::GET,
            &format!("v1/conferences/{id}"),
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!((status, got["eventId"].as_str()), (200, Some("abcdefgh01")));

    // Cancelled: the meeting is deleted and its join page says so.
    let response = h
        .http
        .delete(format!(
            "{}calendar/v3/calendars/primary/events/abcdefgh01",
            h.calendar
        ))
        .bearer_auth(format!("dev:{ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    h.api(
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        None,
        Some(&h.key),
    )
    .await;
    h.meeting_until(&id, |_, deleted| deleted).await;
    let join = h
        .http
        .get(format!("{}join/{id}", h.service))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 410);
}

#[tokio::test]
async fn concurrent_first_conferences_on_a_calendar_start_one_sync_stream() {
    let h = start().await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let http = h.http.clone();
        let url = format!("{}v1/conferences", h.service);
        let key = h.key.clone();
        handles.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"calendarId": ALICE, "eventId": format!("evt{i:05}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap(), 200);
    }
    // Every request landed; the calendar is known once and gets synced.
    for _ in 0..200 {
        let calendars = h.store.calendars().await.unwrap();
        if calendars.len() == 1 && calendars[0].sync_token.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the calendar was never synced");
}

#[tokio::test]
async fn a_conference_whose_event_is_saved_after_the_first_sync_keeps_its_meeting() {
    let h = start().await;
    let (_, conference) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": ALICE, "eventId": "later00001"})),
            Some(&h.key),
        )
        .await;
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    // The first sync runs before Calendar saved the event (the add-on dialog is still open).
    for _ in 0..200 {
        if h.store
            .calendar(ALICE)
            .await
            .unwrap()
            .is_some_and(|c| c.sync_token.is_some())
            && h.store.outbox_depth().await.unwrap() == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, deleted) = h.meeting_until(&id, |_, _| true).await;
    assert!(
        !deleted,
        "a conference whose event is not saved yet is not deleted"
    );
    let mut e = event(
        "Saved later",
        "2026-12-02T10:00:00Z",
        "2026-12-02T11:00:00Z",
        conference,
    );
    e["id"] = json!("later00001");
    h.calendar_api(
        reqwest::Method::POST,
        "calendars/primary/events?conferenceDataVersion=1",
        e,
    )
    .await;
    h.api(
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        None,
        Some(&h.key),
    )
    .await;
    let (spec, deleted) = h.meeting_until(&id, |s, _| s.title == "Saved later").await;
    assert!(!deleted);
    assert_eq!(spec.end.key(), "2026-12-02T11:00:00Z");
}

/// A conference added to an event Calendar has already saved is created with the event's real
/// title, time, zone and guests in one provider call: the calendar's first sync then has
/// nothing to update. A new event (not saved yet) starts from a titled placeholder.
#[tokio::test]
async fn a_conference_on_a_saved_event_is_created_with_its_real_spec() {
    let h = start().await;
    let mut saved = json!({
        "summary": "Quarterly review",
        "start": {"dateTime": "2026-12-02T09:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-02T10:30:00+01:00", "timeZone": "Europe/Berlin"},
        "attendees": [{"email": "bob@example.com"}],
    });
    saved["id"] = json!("savedevent01");
    h.calendar_api(reqwest::Method::POST, "calendars/primary/events", saved)
        .await;
    let (status, conference) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": ALICE, "eventId": "savedevent01"})),
            Some(&h.key),
        )
        .await;
    assert_eq!(status, 200, "{conference}");
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    let m = h.store.meeting(&id).await.unwrap().unwrap();
    let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
    assert_eq!(
        (
            spec.title.as_str(),
            spec.start.key(),
            spec.end.key(),
            spec.time_zone.as_deref(),
            spec.attendees.clone()
        ),
        (
            "Quarterly review",
            "2026-12-02T08:00:00Z".to_owned(),
            "2026-12-02T09:30:00Z".to_owned(),
            Some("Europe/Berlin"),
            vec!["bob@example.com".to_owned()]
        ),
        "created with the event's spec, not a placeholder"
    );
    // Before the user saves the event with the conference, a sync runs (the create asks for
    // one; any change on the calendar would too): the event has no conference yet, which is
    // not a removal. The meeting stays.
    h.api(
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        None,
        Some(&h.key),
    )
    .await;
    for _ in 0..200 {
        if h.store
            .calendar(ALICE)
            .await
            .unwrap()
            .is_some_and(|c| c.sync_token.is_some() && c.dirty_at.is_none())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !h.store.meeting(&id).await.unwrap().unwrap().deleted,
        "the new meeting was deleted before its event was saved"
    );
    assert!(
        h.store
            .outbox_of(&id)
            .await
            .unwrap()
            .iter()
            .all(|row| row.action.kind() != "delete"),
        "no delete queued"
    );
    // Calendar saves the conference into the event; the first sync finds nothing to change.
    h.calendar_api(
        reqwest::Method::PATCH,
        "calendars/primary/events/savedevent01?conferenceDataVersion=1",
        json!({"conferenceData": conference}),
    )
    .await;
    h.api(
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        None,
        Some(&h.key),
    )
    .await;
    for _ in 0..200 {
        if h.store
            .calendar(ALICE)
            .await
            .unwrap()
            .is_some_and(|c| c.sync_token.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued: Vec<_> = h.store.outbox_of(&id).await.unwrap();
    assert!(
        queued.iter().all(|row| row.action.kind() != "update"),
        "no follow-up update: {queued:?}"
    );

    // A new event Calendar has not saved yet: a placeholder, titled.
    let (_, fresh) = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": ALICE, "eventId": "unsavedevent01"})),
            Some(&h.key),
        )
        .await;
    let fresh_id = fresh["conferenceId"].as_str().unwrap();
    let m = h.store.meeting(fresh_id).await.unwrap().unwrap();
    let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
    assert_eq!(spec.title, "Meeting");
}

/// `/v1/status` stays bounded whatever the number of calendars: counts over all of them, the
/// ten worst, a page at a time (with a cursor), and a search by calendar id.
#[tokio::test]
async fn status_pages_calendars_and_counts_them_all() {
    let h = start().await;
    for i in 0..250 {
        h.store
            .ensure_calendar(&format!("cal{i:03}@example.com"))
            .await
            .unwrap();
    }
    h.store
        .sync_failed("cal007@example.com", "500", Some(1), 1)
        .await
        .unwrap();
    // cal010's owner (the user its id names) lost their grant.
    h.store
        .user_connect("cal010@example.com", "sealed", None, 1)
        .await
        .unwrap();
    h.store
        .user_needs_reauth("cal010@example.com", "revoked", 2)
        .await
        .unwrap();
    let (status, first) = h
        .api(
            reqwest::Method::GET,
            "v1/status?limit=100",
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["summary"]["calendars"], 250);
    assert_eq!(first["summary"]["failing"], 1);
    assert_eq!(first["calendars"].as_array().unwrap().len(), 100);
    assert_eq!(
        first["worst"]["failing"][0]["calendarId"],
        "cal007@example.com"
    );
    assert!(first["worst"]["lagging"].as_array().unwrap().len() <= 10);
    // Re-authorisation: counted over all, listed among the worst, flagged on its row only.
    assert_eq!(first["summary"]["needingReauth"], 1);
    assert_eq!(
        first["worst"]["needingReauth"][0]["calendarId"],
        "cal010@example.com"
    );
    assert_eq!(
        first["calendarsNeedingReauth"],
        json!(["cal010@example.com"])
    );
    for row in first["calendars"].as_array().unwrap() {
        assert_eq!(
            row["needsReauth"],
            row["calendarId"] == "cal010@example.com",
            "{row}"
        );
    }
    // Following the cursor visits every calendar once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("v1/status?limit=100&after={a}"),
            None => "v1/status?limit=100".to_owned(),
        };
        let (_, page) = h.api(reqwest::Method::GET, &path, None, Some(&h.key)).await;
        seen.extend(
            page["calendars"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["calendarId"].as_str().unwrap().to_owned()),
        );
        match page["nextAfter"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 250, "no calendar twice");
    // Search: a part of the id, matched literally (a `_` is not a wildcard).
    let (_, found) = h
        .api(
            reqwest::Method::GET,
            "v1/status?search=cal12",
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!(found["calendars"].as_array().unwrap().len(), 10);
    let (_, none) = h
        .api(
            reqwest::Method::GET,
            "v1/status?search=cal_2",
            None,
            Some(&h.key),
        )
        .await;
    assert_eq!(none["calendars"].as_array().unwrap().len(), 0);
    // Bad input: a clear 400.
    for bad in [
        "v1/status?limit=0",
        "v1/status?limit=5000",
        "v1/status?bogus=1",
    ] {
        let (status, _) = h.api(reqwest::Method::GET, bad, None, Some(&h.key)).await;
        assert_eq!(status, 400, "{bad}");
    }
}
