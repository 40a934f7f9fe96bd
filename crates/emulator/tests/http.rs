//! Conformance tests over HTTP: each test starts an emulator on a free port and talks to it the
//! way a Calendar v3 client does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    _emulator: RunningEmulator,
    http: reqwest::Client,
    base: String,
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body
            .pointer("/error/errors/0/reason")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn ok(self) -> Value {
        assert!(
            self.status.is_success(),
            "expected success, got {} {}",
            self.status,
            self.body
        );
        self.body
    }
}

impl Api {
    async fn start() -> Api {
        Self::with(EmulatorConfig::default()).await
    }

    async fn with(config: EmulatorConfig) -> Api {
        let emulator = Emulator::new(config)
            .spawn("127.0.0.1:0")
            .await
            .expect("emulator starts");
        let base = emulator.base_url().to_owned();
        Api {
            _emulator: emulator,
            http: reqwest::Client::new(),
            base,
        }
    }

    async fn call(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}calendar/v3/{}", self.base, path);
        let mut request = self.http.request(method, url);
        if !user.is_empty() {
            request = request.bearer_auth(format!("dev:{user}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    async fn get(&self, user: &str, path: &str) -> Answer {
        self.call(user, Method::GET, path, None, &[]).await
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> Answer {
        self.call(user, Method::POST, path, Some(body), &[]).await
    }

    async fn patch(&self, user: &str, path: &str, body: Value) -> Answer {
        self.call(user, Method::PATCH, path, Some(body), &[]).await
    }

    async fn delete(&self, user: &str, path: &str) -> Answer {
        self.call(user, Method::DELETE, path, None, &[]).await
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}emulator/{}", self.base, path))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(
            response.status().is_success(),
            "admin {path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn insert(&self, user: &str, event: Value) -> Value {
        self.post(
            user,
            "calendars/primary/events?conferenceDataVersion=1",
            event,
        )
        .await
        .ok()
    }

    /// Lists every page; returns (items, final sync token, pages).
    async fn list_all(&self, user: &str, query: &str) -> (Vec<Value>, String, usize) {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("calendars/primary/events?{query}");
            if let Some(t) = &page_token {
                path.push_str(&format!("&pageToken={}", urlencode(t)));
            }
            let page = self.get(user, &path).await.ok();
            pages += 1;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            let next = page.get("nextPageToken").and_then(Value::as_str);
            let sync = page.get("nextSyncToken").and_then(Value::as_str);
            assert!(
                next.is_some() != sync.is_some(),
                "exactly one of nextPageToken/nextSyncToken: {page}"
            );
            match (next, sync) {
                (Some(n), _) => page_token = Some(n.to_owned()),
                (_, Some(s)) => return (items, s.to_owned(), pages),
                _ => unreachable!(),
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded_encode(s)
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn event(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

fn ids(items: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

const A: &str = "alice@example.com";
const B: &str = "bob@example.com";

#[tokio::test]
async fn paging_returns_every_event_once_and_ends_with_a_sync_token() {
    let api = Api::start().await;
    let mut inserted = Vec::new();
    for i in 0..7 {
        let e = api
            .insert(
                A,
                event(
                    &format!("e{i}"),
                    "2026-12-01T10:00:00Z",
                    "2026-12-01T11:00:00Z",
                ),
            )
            .await;
        inserted.push(e["id"].as_str().unwrap().to_owned());
    }
    inserted.sort();
    let (items, _, pages) = api.list_all(A, "maxResults=3").await;
    assert_eq!(pages, 3, "7 events in pages of 3");
    assert_eq!(ids(&items), inserted);
}

#[tokio::test]
async fn a_full_page_that_ends_the_listing_carries_the_sync_token() {
    let api = Api::start().await;
    for i in 0..4 {
        api.insert(
            A,
            event(
                &format!("e{i}"),
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .await;
    }
    let (items, _, pages) = api.list_all(A, "maxResults=2").await;
    assert_eq!((items.len(), pages), (4, 2), "no empty trailing page");
}

#[tokio::test]
async fn incremental_sync_returns_inserts_edits_and_tombstones() {
    let api = Api::start().await;
    let kept = api
        .insert(
            A,
            event("kept", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let edited = api
        .insert(
            A,
            event("edited", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let deleted = api
        .insert(
            A,
            event("deleted", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let (_, token, _) = api.list_all(A, "").await;

    let added = api
        .insert(
            A,
            event("added", "2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z"),
        )
        .await;
    let id = |e: &Value| e["id"].as_str().unwrap().to_owned();
    api.patch(
        A,
        &format!("calendars/primary/events/{}", id(&edited)),
        json!({"summary": "renamed"}),
    )
    .await
    .ok();
    assert_eq!(
        api.delete(A, &format!("calendars/primary/events/{}", id(&deleted)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let (changes, token2, _) = api
        .list_all(A, &format!("syncToken={}", urlencode(&token)))
        .await;
    let mut expected = vec![id(&added), id(&edited), id(&deleted)];
    expected.sort();
    assert_eq!(
        ids(&changes),
        expected,
        "the untouched event is not repeated"
    );
    assert!(!ids(&changes).contains(&id(&kept)));
    let tombstone = changes
        .iter()
        .find(|c| c["id"] == json!(id(&deleted)))
        .unwrap();
    let keys: Vec<&String> = tombstone.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["kind", "etag", "id", "status"],
        "Google's tombstone shape: {tombstone}"
    );
    assert_eq!(tombstone["status"], "cancelled");
    let renamed = changes
        .iter()
        .find(|c| c["id"] == json!(id(&edited)))
        .unwrap();
    assert_eq!(renamed["summary"], "renamed");

    let (nothing, _, _) = api
        .list_all(A, &format!("syncToken={}", urlencode(&token2)))
        .await;
    assert!(nothing.is_empty());
}

#[tokio::test]
async fn a_change_made_while_paging_is_not_lost() {
    let api = Api::start().await;
    for i in 0..4 {
        api.insert(
            A,
            event(
                &format!("e{i}"),
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .await;
    }
    let first = api
        .get(A, "calendars/primary/events?maxResults=2")
        .await
        .ok();
    let seen = first["items"][0]["id"].as_str().unwrap().to_owned();
    // The user edits an event the client has already been given.
    api.patch(
        A,
        &format!("calendars/primary/events/{seen}"),
        json!({"summary": "changed mid-listing"}),
    )
    .await
    .ok();
    let page_token = first["nextPageToken"].as_str().unwrap();
    let second = api
        .get(
            A,
            &format!(
                "calendars/primary/events?maxResults=2&pageToken={}",
                urlencode(page_token)
            ),
        )
        .await
        .ok();
    let token = second["nextSyncToken"].as_str().expect("last page");
    let (changes, _, _) = api
        .list_all(A, &format!("syncToken={}", urlencode(token)))
        .await;
    assert_eq!(ids(&changes), vec![seen]);
    assert_eq!(changes[0]["summary"], "changed mid-listing");
}

#[tokio::test]
async fn invalid_expired_and_aged_sync_tokens_require_a_full_sync() {
    let api = Api::start().await;
    api.insert(
        A,
        event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
    )
    .await;
    let (_, token, _) = api.list_all(A, "").await;

    let garbage = api
        .get(
            A,
            "calendars/primary/events?syncToken=CPDAlvWDx70CEPDAlvWDx70CGAU%3D",
        )
        .await;
    assert_eq!(
        (garbage.status, garbage.reason()),
        (StatusCode::GONE, "fullSyncRequired")
    );
    assert_eq!(
        garbage.body,
        json!({"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"Sync token is no longer valid, a full sync is required.","locationType":"parameter","location":"syncToken"}],"code":410,"message":"Sync token is no longer valid, a full sync is required."}}),
        "Google's exact body"
    );

    api.admin(
        Method::POST,
        &format!("calendars/{A}/expire-sync-tokens"),
        json!({}),
    )
    .await;
    let expired = api
        .get(
            A,
            &format!("calendars/primary/events?syncToken={}", urlencode(&token)),
        )
        .await;
    assert_eq!(expired.status, StatusCode::GONE);

    let (_, fresh, _) = api.list_all(A, "").await;
    assert_eq!(
        api.get(
            A,
            &format!("calendars/primary/events?syncToken={}", urlencode(&fresh))
        )
        .await
        .status,
        StatusCode::OK
    );
    api.admin(
        Method::PUT,
        "config",
        json!({"syncTokenMaxAgeSeconds": 3600}),
    )
    .await;
    api.admin(Method::POST, "clock", json!({"advanceSeconds": 7200}))
        .await;
    let aged = api
        .get(
            A,
            &format!("calendars/primary/events?syncToken={}", urlencode(&fresh)),
        )
        .await;
    assert_eq!(
        (aged.status, aged.reason()),
        (StatusCode::GONE, "fullSyncRequired")
    );

    // A token of another calendar is no good here either.
    let (_, bobs, _) = api.list_all(B, "").await;
    assert_eq!(
        api.get(
            A,
            &format!("calendars/primary/events?syncToken={}", urlencode(&bobs))
        )
        .await
        .status,
        StatusCode::GONE
    );
}

#[tokio::test]
async fn sync_tokens_refuse_incompatible_parameters() {
    let api = Api::start().await;
    let (_, token, _) = api.list_all(A, "").await;
    for extra in [
        "q=x",
        "timeMin=2026-01-01T00:00:00Z",
        "orderBy=updated",
        "updatedMin=2026-01-01T00:00:00Z",
        "showDeleted=false",
        "privateExtendedProperty=a%3Db",
        "iCalUID=x",
    ] {
        let answer = api
            .get(
                A,
                &format!(
                    "calendars/primary/events?syncToken={}&{extra}",
                    urlencode(&token)
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(
            answer.reason(),
            "syncTokenWithRequestRestrictions",
            "{extra}"
        );
    }
}

#[tokio::test]
async fn page_tokens_are_bound_to_their_query() {
    let api = Api::start().await;
    for i in 0..3 {
        api.insert(
            A,
            event(
                &format!("e{i}"),
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .await;
    }
    let first = api
        .get(A, "calendars/primary/events?maxResults=1")
        .await
        .ok();
    let token = urlencode(first["nextPageToken"].as_str().unwrap());
    let other = api
        .get(
            A,
            &format!("calendars/primary/events?maxResults=1&q=e1&pageToken={token}"),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    let corrupt = api.get(A, "calendars/primary/events?pageToken=abc").await;
    assert_eq!(corrupt.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conditional_requests_follow_etags() {
    let api = Api::start().await;
    let e = api
        .insert(
            A,
            event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let path = format!("calendars/primary/events/{}", e["id"].as_str().unwrap());
    let etag = e["etag"].as_str().unwrap().to_owned();

    let unchanged = api
        .call(A, Method::GET, &path, None, &[("If-None-Match", &etag)])
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);

    let updated = api
        .call(
            A,
            Method::PATCH,
            &path,
            Some(json!({"summary": "y"})),
            &[("If-Match", &etag)],
        )
        .await
        .ok();
    assert_ne!(updated["etag"], json!(etag), "every write changes the etag");
    assert!(updated["updated"].as_str() >= e["updated"].as_str());

    let stale = api
        .call(
            A,
            Method::PATCH,
            &path,
            Some(json!({"summary": "z"})),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(
        (stale.status, stale.reason()),
        (StatusCode::PRECONDITION_FAILED, "conditionNotMet")
    );
    let stale_put = api
        .call(
            A,
            Method::PUT,
            &path,
            Some(event("z", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z")),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(stale_put.status, StatusCode::PRECONDITION_FAILED);
    let stale_delete = api
        .call(A, Method::DELETE, &path, None, &[("If-Match", &etag)])
        .await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        api.get(A, &path).await.ok()["summary"],
        "y",
        "nothing was overwritten"
    );

    let changed = api
        .call(A, Method::GET, &path, None, &[("If-None-Match", &etag)])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(
        changed.headers.get("etag").and_then(|v| v.to_str().ok()),
        updated["etag"].as_str()
    );
}

#[tokio::test]
async fn duplicate_ids_and_double_deletes_are_refused() {
    let api = Api::start().await;
    let mut e = event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["id"] = json!("abcdef012345");
    api.insert(A, e.clone()).await;
    let again = api.post(A, "calendars/primary/events", e).await;
    assert_eq!(
        (again.status, again.reason()),
        (StatusCode::CONFLICT, "duplicate")
    );
    assert_eq!(
        api.delete(A, "calendars/primary/events/abcdef012345")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let twice = api.delete(A, "calendars/primary/events/abcdef012345").await;
    assert_eq!(
        (twice.status, twice.reason()),
        (StatusCode::GONE, "deleted")
    );
    let gone = api
        .get(A, "calendars/primary/events/abcdef012345")
        .await
        .ok();
    assert_eq!(
        gone["status"], "cancelled",
        "get still returns a deleted event"
    );
    assert_eq!(
        api.get(A, "calendars/primary/events/nosuchevent")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

fn add_on_conference() -> Value {
    json!({
        "conferenceId": "meeting-42",
        "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync Meet", "iconUri": "https://example.com/i.png"},
        "entryPoints": [
            {"entryPointType": "video", "uri": "https://meet.example.com/42", "label": "meet.example.com/42"},
            {"entryPointType": "phone", "uri": "tel:+1-555-0100", "pin": "1234"}
        ],
        "parameters": {"addOnParameters": {"parameters": {"meetingId": "42"}}},
        "notes": "Join with the link"
    })
}

#[tokio::test]
async fn conference_data_round_trips_only_with_conference_data_version_1() {
    let api = Api::start().await;
    let mut e = event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["conferenceData"] = add_on_conference();
    let without = api
        .post(A, "calendars/primary/events", e.clone())
        .await
        .ok();
    assert!(
        without.get("conferenceData").is_none(),
        "ignored without conferenceDataVersion=1"
    );

    let with = api.insert(A, e).await;
    let path = format!("calendars/primary/events/{}", with["id"].as_str().unwrap());
    let read = api.get(A, &path).await.ok();
    for key in [
        "conferenceId",
        "conferenceSolution",
        "entryPoints",
        "parameters",
        "notes",
    ] {
        assert_eq!(
            read["conferenceData"][key],
            add_on_conference()[key],
            "{key}"
        );
    }
    // A patch without the version keeps the conference whatever the body says.
    let patched = api
        .patch(A, &path, json!({"summary": "y", "conferenceData": null}))
        .await
        .ok();
    assert_eq!(patched["conferenceData"]["conferenceId"], "meeting-42");
    let removed = api
        .patch(
            A,
            &format!("{path}?conferenceDataVersion=1"),
            json!({"conferenceData": null}),
        )
        .await
        .ok();
    assert!(removed.get("conferenceData").is_none());
}

#[tokio::test]
async fn invalid_conference_data_is_refused_with_a_reason() {
    let api = Api::start().await;
    let cases = [
        (
            json!([{"entryPointType": "video", "uri": "https://a"}, {"entryPointType": "video", "uri": "https://b"}]),
            "at most one video",
        ),
        (
            json!([{"entryPointType": "video", "uri": "ftp://a"}]),
            "must start with",
        ),
        (
            json!([{"entryPointType": "phone", "uri": "https://a"}]),
            "tel:",
        ),
        (
            json!([{"entryPointType": "more", "uri": "https://a"}]),
            "only a \"more\"",
        ),
        (
            json!([{"entryPointType": "hologram", "uri": "https://a"}]),
            "hologram",
        ),
        (json!([]), "at least one entry point"),
    ];
    for (entry_points, why) in cases {
        let mut e = event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
        let mut cd = add_on_conference();
        cd["entryPoints"] = entry_points;
        e["conferenceData"] = cd;
        let answer = api
            .post(A, "calendars/primary/events?conferenceDataVersion=1", e)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(answer.reason(), "invalid");
        assert!(
            answer.message().contains(why),
            "{why}: {}",
            answer.message()
        );
    }
}

#[tokio::test]
async fn meet_create_requests_produce_a_meet_conference() {
    let api = Api::start().await;
    let mut e = event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["conferenceData"] = json!({"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
    let created = api.insert(A, e).await;
    assert_eq!(
        created["conferenceData"]["conferenceSolution"]["key"]["type"],
        "hangoutsMeet"
    );
    assert!(
        created["hangoutLink"]
            .as_str()
            .unwrap()
            .starts_with("https://meet.google.com/")
    );
}

/// The discovery document's ConferenceData.createRequest: "The data is generated asynchronously.
/// To see whether the data is present check the status field." and ConferenceRequestStatus:
/// "pending": the conference create request is still being processed; "success": the entry
/// points are populated; "failure": there are no entry points. CreateConferenceRequest.requestId:
/// "If an ID provided is the same as for the previous request, the request is ignored."
#[tokio::test]
async fn meet_create_requests_can_stay_pending_until_resolved() {
    let api = Api::start().await;
    let config = api
        .admin(
            Method::PUT,
            "config",
            json!({"conferenceCreatePending": true}),
        )
        .await;
    assert_eq!(config["conferenceCreatePending"], true);
    let request = json!({"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
    let mut e = event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["conferenceData"] = request.clone();
    let created = api.insert(A, e).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["conferenceData"],
        json!({"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "pending"}}})
    );
    assert!(created.get("hangoutLink").is_none());
    let (_, token, _) = api.list_all(A, "").await;

    // Sending the same request id back (what a GET returned) changes nothing.
    let patched = api
        .patch(
            A,
            &format!("calendars/primary/events/{id}?conferenceDataVersion=1"),
            json!({"conferenceData": created["conferenceData"]}),
        )
        .await
        .ok();
    assert_eq!(patched["conferenceData"], created["conferenceData"]);

    // Another pending request: a failure leaves no entry points.
    let mut other = event("y", "2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z");
    other["conferenceData"] = json!({"createRequest": {"requestId": "r2", "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
    let other = api.insert(A, other).await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let bad = api
        .http
        .post(format!("{}emulator/conferences/resolve", api.base))
        .json(&json!({"statusCode": "later"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Turning the switch off does not resolve requests already pending.
    api.admin(
        Method::PUT,
        "config",
        json!({"conferenceCreatePending": false}),
    )
    .await;
    let still = api
        .get(A, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    assert_eq!(
        still["conferenceData"]["createRequest"]["status"]["statusCode"],
        "pending"
    );

    let resolved = api
        .admin(Method::POST, "conferences/resolve", json!({}))
        .await;
    assert_eq!(resolved["resolved"].as_array().unwrap().len(), 2);
    let done = api
        .get(A, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    let cd = &done["conferenceData"];
    assert_eq!(cd["createRequest"]["requestId"], "r1");
    assert_eq!(cd["createRequest"]["status"]["statusCode"], "success");
    assert_eq!(cd["conferenceSolution"]["key"]["type"], "hangoutsMeet");
    assert_eq!(cd["entryPoints"][0]["entryPointType"], "video");
    assert!(
        done["hangoutLink"]
            .as_str()
            .unwrap()
            .starts_with("https://meet.google.com/")
    );
    assert_ne!(done["etag"], created["etag"]);
    // The resolution is a change an incremental sync sees.
    let changes = api
        .get(
            A,
            &format!("calendars/primary/events?syncToken={}", urlencode(&token)),
        )
        .await
        .ok();
    let changed = ids(changes["items"].as_array().unwrap());
    assert!(changed.contains(&id) && changed.contains(&other_id));
    // Nothing is pending any more.
    let again = api
        .admin(Method::POST, "conferences/resolve", json!({}))
        .await;
    assert_eq!(again["resolved"], json!([]));

    // A failure: status failure, no entry points.
    api.admin(
        Method::PUT,
        "config",
        json!({"conferenceCreatePending": true}),
    )
    .await;
    let mut third = event("z", "2026-12-03T10:00:00Z", "2026-12-03T11:00:00Z");
    third["conferenceData"] = json!({"createRequest": {"requestId": "r3", "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
    let third = api.insert(A, third).await;
    api.admin(
        Method::POST,
        "conferences/resolve",
        json!({"statusCode": "failure"}),
    )
    .await;
    let failed = api
        .get(
            A,
            &format!("calendars/primary/events/{}", third["id"].as_str().unwrap()),
        )
        .await
        .ok();
    assert_eq!(
        failed["conferenceData"],
        json!({"createRequest": {"requestId": "r3", "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "failure"}}})
    );
}

/// The discovery document's ConferenceProperties.allowedConferenceSolutionTypes: "The possible
/// values are: "eventHangout", "eventNamedHangout", "hangoutsMeet"".
#[tokio::test]
async fn calendars_get_lists_only_documented_conference_solution_types() {
    let api = Api::start().await;
    let cal = api.get(A, "calendars/primary").await.ok();
    let types = cal["conferenceProperties"]["allowedConferenceSolutionTypes"]
        .as_array()
        .unwrap();
    assert!(!types.is_empty());
    for t in types {
        assert!(
            ["eventHangout", "eventNamedHangout", "hangoutsMeet"].contains(&t.as_str().unwrap()),
            "undocumented solution type {t}"
        );
    }
}

fn weekly_series() -> Value {
    json!({
        "summary": "Weekly",
        "start": {"dateTime": "2026-12-07T10:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-07T10:30:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=5"],
    })
}

#[tokio::test]
async fn recurring_series_expand_into_instances_with_google_ids() {
    let api = Api::start().await;
    let series = api.insert(A, weekly_series()).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let instances = api
        .get(A, &format!("calendars/primary/events/{sid}/instances"))
        .await
        .ok();
    let items = instances["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["id"], json!(format!("{sid}_20261207T090000Z")));
    assert_eq!(items[0]["recurringEventId"], json!(sid));
    assert_eq!(
        items[0]["originalStartTime"]["dateTime"],
        "2026-12-07T10:00:00+01:00"
    );
    assert_eq!(items[4]["id"], json!(format!("{sid}_20270104T090000Z")));

    let (_, token, _) = api.list_all(A, "singleEvents=true").await;
    // Move the second instance by an hour, cancel the third.
    let second = format!("{sid}_20261214T090000Z");
    let third = format!("{sid}_20261221T090000Z");
    let moved = api
        .patch(A, &format!("calendars/primary/events/{second}"), json!({"start": {"dateTime": "2026-12-14T11:00:00+01:00"}, "end": {"dateTime": "2026-12-14T11:30:00+01:00"}}))
        .await
        .ok();
    assert_eq!(
        moved["originalStartTime"]["dateTime"], "2026-12-14T10:00:00+01:00",
        "originalStartTime never moves"
    );
    assert_eq!(
        api.delete(A, &format!("calendars/primary/events/{third}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let (single, _, _) = api.list_all(A, "singleEvents=true").await;
    assert_eq!(single.len(), 4);
    let shown = single.iter().find(|i| i["id"] == json!(second)).unwrap();
    assert_eq!(shown["start"]["dateTime"], "2026-12-14T11:00:00+01:00");
    assert!(single.iter().all(|i| i["id"] != json!(third)));

    let (changes, _, _) = api
        .list_all(
            A,
            &format!("singleEvents=true&syncToken={}", urlencode(&token)),
        )
        .await;
    assert_eq!(ids(&changes), {
        let mut v = vec![second.clone(), third.clone()];
        v.sort();
        v
    });
    let cancelled = changes.iter().find(|c| c["id"] == json!(third)).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["recurringEventId"], json!(sid));
    assert_eq!(
        cancelled["originalStartTime"]["dateTime"],
        "2026-12-21T10:00:00+01:00"
    );

    // The plain listing shows the series plus its modified instance, and (showDeleted and
    // singleEvents both false) its cancelled instance.
    let (plain, _, _) = api.list_all(A, "").await;
    assert_eq!(ids(&plain), {
        let mut v = vec![sid.clone(), second.clone(), third.clone()];
        v.sort();
        v
    });
}

#[tokio::test]
async fn series_edits_reach_exceptions_that_did_not_override_the_field() {
    let api = Api::start().await;
    let series = api.insert(A, weekly_series()).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let second = format!("{sid}_20261214T090000Z");
    api.patch(
        A,
        &format!("calendars/primary/events/{second}"),
        json!({"location": "Room 1"}),
    )
    .await
    .ok();
    api.patch(
        A,
        &format!("calendars/primary/events/{sid}"),
        json!({"summary": "Renamed series"}),
    )
    .await
    .ok();
    let exception = api
        .get(A, &format!("calendars/primary/events/{second}"))
        .await
        .ok();
    assert_eq!(
        (
            exception["summary"].as_str(),
            exception["location"].as_str()
        ),
        (Some("Renamed series"), Some("Room 1"))
    );
}

#[tokio::test]
async fn invitations_appear_on_attendee_calendars_and_follow_the_organizer() {
    let api = Api::start().await;
    api.admin(Method::POST, "users", json!({"email": B})).await;
    let mut e = event("Planning", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["attendees"] = json!([{"email": B}]);
    e["conferenceData"] = add_on_conference();
    let created = api.insert(A, e).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, bob_token, _) = api.list_all(B, "").await;

    let copy = api
        .get(B, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    assert_eq!(copy["iCalUID"], created["iCalUID"]);
    assert_eq!(copy["organizer"]["email"], A);
    assert!(
        copy["organizer"].get("self").is_none(),
        "organizer.self is not set on the attendee's copy"
    );
    assert_eq!(copy["attendees"][0]["self"], true);
    assert_eq!(copy["conferenceData"]["conferenceId"], "meeting-42");

    api.patch(A, &format!("calendars/primary/events/{id}"), json!({"summary": "Planning (moved)", "start": {"dateTime": "2026-12-01T12:00:00Z"}, "end": {"dateTime": "2026-12-01T13:00:00Z"}})).await.ok();
    let (changes, _, _) = api
        .list_all(B, &format!("syncToken={}", urlencode(&bob_token)))
        .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["summary"], "Planning (moved)");

    // The attendee may answer, but not rename.
    let forbidden = api
        .patch(
            B,
            &format!("calendars/primary/events/{id}"),
            json!({"summary": "mine"}),
        )
        .await;
    assert_eq!(
        (forbidden.status, forbidden.reason()),
        (StatusCode::FORBIDDEN, "forbiddenForNonOrganizer")
    );
    api.patch(
        B,
        &format!("calendars/primary/events/{id}"),
        json!({"attendees": [{"email": B, "responseStatus": "accepted"}]}),
    )
    .await
    .ok();
    let organizer = api
        .get(A, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    assert_eq!(organizer["attendees"][0]["responseStatus"], "accepted");

    // Uninvited: the copy is cancelled.
    api.patch(
        A,
        &format!("calendars/primary/events/{id}"),
        json!({"attendees": []}),
    )
    .await
    .ok();
    assert_eq!(
        api.get(B, &format!("calendars/primary/events/{id}"))
            .await
            .ok()["status"],
        "cancelled"
    );
}

#[tokio::test]
async fn move_leaves_a_tombstone_and_changes_the_organizer() {
    let api = Api::start().await;
    let team = api
        .admin(
            Method::POST,
            &format!("users/{A}/calendars"),
            json!({"summary": "Team"}),
        )
        .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let e = api
        .insert(
            A,
            event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let id = e["id"].as_str().unwrap();
    let (_, token, _) = api.list_all(A, "").await;
    let moved = api
        .post(
            A,
            &format!(
                "calendars/primary/events/{id}/move?destination={}",
                urlencode(&team_id)
            ),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(moved["organizer"]["email"], json!(team_id));
    let (changes, _, _) = api
        .list_all(A, &format!("syncToken={}", urlencode(&token)))
        .await;
    assert_eq!(changes[0]["id"], json!(id));
    assert_eq!(changes[0]["status"], "cancelled");
    let team_events = api
        .get(A, &format!("calendars/{}/events", urlencode(&team_id)))
        .await
        .ok();
    assert_eq!(team_events["items"][0]["id"], json!(id));
}

#[tokio::test]
async fn list_filters_work_as_documented() {
    let api = Api::start().await;
    let mut tagged = event(
        "Budget review",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
    );
    tagged["extendedProperties"] = json!({"private": {"confsync": "yes"}});
    api.insert(A, tagged).await;
    api.insert(
        A,
        event("Lunch", "2026-12-05T12:00:00Z", "2026-12-05T13:00:00Z"),
    )
    .await;
    let one = |q: &str| {
        let q = q.to_owned();
        let api = &api;
        async move {
            api.list_all(A, &q)
                .await
                .0
                .iter()
                .map(|i| i["summary"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(one("q=budget").await, ["Budget review"]);
    assert_eq!(
        one("privateExtendedProperty=confsync%3Dyes").await,
        ["Budget review"]
    );
    assert_eq!(one("timeMin=2026-12-02T00:00:00Z").await, ["Lunch"]);
    assert_eq!(one("timeMax=2026-12-02T00:00:00Z").await, ["Budget review"]);
    assert_eq!(
        one("timeMin=2026-12-01T11:00:00Z&timeMax=2026-12-05T12:00:00Z").await,
        Vec::<String>::new(),
        "timeMin bounds the end, timeMax the start, both exclusive"
    );
    assert_eq!(
        one("singleEvents=true&orderBy=startTime").await,
        ["Budget review", "Lunch"]
    );
    let bad_order = api
        .get(A, "calendars/primary/events?orderBy=startTime")
        .await;
    assert_eq!(bad_order.status, StatusCode::BAD_REQUEST);
    let empty = api
        .get(
            A,
            "calendars/primary/events?timeMin=2026-12-02T00:00:00Z&timeMax=2026-12-01T00:00:00Z",
        )
        .await;
    assert_eq!(empty.reason(), "timeRangeEmpty");
}

#[tokio::test]
async fn bad_input_gets_precise_400s() {
    let api = Api::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}, "colour": "1"}),
            "colour",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "yesterday"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
            "start.dateTime",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Mars/Base"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
            "Mars/Base",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T09:00:00Z"}}),
            "time range is empty",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}}),
            "end",
        ),
        (
            json!({"summary": "x", "status": "maybe", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
            "status",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "UTC"}, "recurrence": ["RRULE:FREQ=SOMETIMES"]}),
            "recurrence",
        ),
        (
            json!({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}, "recurrence": ["RRULE:FREQ=DAILY"]}),
            "time zone",
        ),
        (
            json!({"summary": "x", "id": "UPPER_case", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
            "resource id",
        ),
        (
            json!({"summary": "x", "attendees": "bob", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
            "event.attendees",
        ),
        (json!([1, 2]), "object"),
    ];
    for (body, why) in cases {
        let answer = api.post(A, "calendars/primary/events", body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{why}: {}",
            answer.body
        );
        assert!(
            answer
                .message()
                .to_lowercase()
                .contains(&why.to_lowercase()),
            "{why}: {}",
            answer.message()
        );
        assert_eq!(answer.body["error"]["code"], 400);
    }
    let raw = api
        .http
        .post(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth("dev:alice@example.com")
        .body("{\"summary\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "parseError");
    let huge = "x".repeat(2 << 20);
    let raw = api
        .http
        .post(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth("dev:alice@example.com")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bad_param = api.get(A, "calendars/primary/events?maxResults=lots").await;
    assert_eq!(bad_param.status, StatusCode::BAD_REQUEST);
    assert!(bad_param.message().contains("maxResults"));
    assert_eq!(
        api.get(A, "calendars/primary/events").await.status,
        StatusCode::OK,
        "the emulator is still serving"
    );
}

#[tokio::test]
async fn authentication_is_required_and_tokens_can_be_revoked() {
    let api = Api::start().await;
    let missing = api.get("", "calendars/primary/events").await;
    assert_eq!(
        (missing.status, missing.reason()),
        (StatusCode::UNAUTHORIZED, "required")
    );
    let bogus = api
        .http
        .get(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth("ya29.nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);

    let tokens = api
        .admin(
            Method::POST,
            "tokens",
            json!({"email": "carol@example.com"}),
        )
        .await;
    let access = tokens["access_token"].as_str().unwrap();
    let listed = api
        .http
        .get(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let body: Value = listed.json().await.unwrap();
    assert_eq!(body["summary"], "carol@example.com");

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let refreshed = api
        .http
        .post(format!("{}token", api.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    api.admin(Method::POST, "users/carol@example.com/revoke", json!({}))
        .await;
    let revoked = api
        .http
        .post(format!("{}token", api.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::BAD_REQUEST);
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    let after = api
        .http
        .get(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Outside dev mode, dev tokens are refused.
    let strict = Api::with(EmulatorConfig {
        dev_mode: false,
        ..Default::default()
    })
    .await;
    assert_eq!(
        strict.get(A, "calendars/primary/events").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn users_only_see_their_own_calendars() {
    let api = Api::start().await;
    api.insert(
        A,
        event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
    )
    .await;
    let answer = api.get(B, &format!("calendars/{A}/events")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let list = api.get(A, "users/me/calendarList").await.ok();
    assert_eq!(list["items"][0]["id"], A);
    assert_eq!(list["items"][0]["primary"], true);
    assert_eq!(api.get(A, "calendars/primary").await.ok()["id"], A);
}

#[tokio::test]
async fn injected_faults_and_quota_answer_like_google() {
    let api = Api::start().await;
    api.admin(
        Method::POST,
        "faults",
        json!({"status": 503, "count": 2, "method": "calendar.events.list", "retryAfter": 2}),
    )
    .await;
    let first = api.get(A, "calendars/primary/events").await;
    assert_eq!(
        (first.status, first.reason()),
        (StatusCode::SERVICE_UNAVAILABLE, "backendError")
    );
    assert_eq!(
        first
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(
        api.get(A, "calendars/primary/events").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        api.get(A, "calendars/primary/events").await.status,
        StatusCode::OK,
        "the fault was used up"
    );

    api.admin(
        Method::PUT,
        "config",
        json!({"quotaPerUserPerMinute": 3, "quotaStatus": 429}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            api.get(A, "calendars/primary/events").await.status,
            StatusCode::OK
        );
    }
    let limited = api.get(A, "calendars/primary/events").await;
    assert_eq!(
        (limited.status, limited.reason()),
        (StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded")
    );
    assert_eq!(limited.body["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(
        api.get(B, "calendars/primary/events").await.status,
        StatusCode::OK,
        "quota is per user"
    );

    let stats = api.admin(Method::GET, "stats", json!({})).await;
    assert!(stats["requests"]["calendar.events.list"].as_u64().unwrap() >= 7);
}

/// A webhook receiver recording the headers of each notification.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<reqwest::header::HeaderMap>>>) {
    use axum::http::HeaderMap;
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let failures = Arc::new(Mutex::new(fail_first));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            let failures = failures.clone();
            async move {
                assert!(body.is_empty(), "notifications have no body");
                let mut left = failures.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                record.lock().unwrap().push(headers);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}/hook"), seen)
}

async fn wait_for(
    seen: &Arc<Mutex<Vec<reqwest::header::HeaderMap>>>,
    n: usize,
) -> Vec<reqwest::header::HeaderMap> {
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn watch_sends_sync_then_exists_until_stopped() {
    let mut config = EmulatorConfig::default();
    config.push.retry_base = Duration::from_millis(10);
    let api = Api::with(config).await;
    let (address, seen) = receiver(1).await;
    let channel = api.post(A, "calendars/primary/events/watch", json!({"id": "chan-1", "type": "web_hook", "address": address, "token": "secret-token", "params": {"ttl": "3600"}})).await.ok();
    assert_eq!(channel["kind"], "api#channel");
    let expiration: i64 = channel["expiration"].as_str().unwrap().parse().unwrap();
    assert!(expiration > chrono::Utc::now().timestamp_millis() + 3_500_000);

    let sync = wait_for(&seen, 1).await;
    let header = |h: &reqwest::header::HeaderMap, k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        header(&sync[0], "x-goog-resource-state"),
        "sync",
        "the first answer was a 503: it was retried"
    );
    assert_eq!(header(&sync[0], "x-goog-message-number"), "1");
    assert_eq!(header(&sync[0], "x-goog-channel-id"), "chan-1");
    assert_eq!(header(&sync[0], "x-goog-channel-token"), "secret-token");
    assert_eq!(
        header(&sync[0], "x-goog-resource-id"),
        channel["resourceId"].as_str().unwrap()
    );
    assert_eq!(
        header(&sync[0], "x-goog-resource-uri"),
        channel["resourceUri"].as_str().unwrap()
    );
    assert!(!header(&sync[0], "x-goog-channel-expiration").is_empty());

    api.insert(
        A,
        event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
    )
    .await;
    let both = wait_for(&seen, 2).await;
    assert_eq!(header(&both[1], "x-goog-resource-state"), "exists");
    assert!(
        header(&both[1], "x-goog-message-number")
            .parse::<u64>()
            .unwrap()
            > 1
    );

    let duplicate = api
        .post(
            A,
            "calendars/primary/events/watch",
            json!({"id": "chan-1", "type": "web_hook", "address": address}),
        )
        .await;
    assert_eq!(
        duplicate.status,
        StatusCode::BAD_REQUEST,
        "channel ids are unique"
    );

    let stop = api
        .post(
            A,
            "channels/stop",
            json!({"id": "chan-1", "resourceId": channel["resourceId"]}),
        )
        .await;
    assert_eq!(stop.status, StatusCode::NO_CONTENT);
    api.insert(
        A,
        event("y", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "nothing after stop");
    let log = api
        .admin(Method::GET, "notifications?channelId=chan-1", json!({}))
        .await;
    assert_eq!(log["items"][0]["attempts"], 2);
    assert_eq!(log["items"][0]["delivered"], true);
}

#[tokio::test]
async fn channels_expire_at_their_ttl_and_refuse_plain_http_elsewhere() {
    let api = Api::start().await;
    let (address, seen) = receiver(0).await;
    api.post(
        A,
        "calendars/primary/events/watch",
        json!({"id": "short", "type": "web_hook", "address": address, "params": {"ttl": "60"}}),
    )
    .await
    .ok();
    wait_for(&seen, 1).await;
    api.admin(Method::POST, "clock", json!({"advanceSeconds": 120}))
        .await;
    api.insert(
        A,
        event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "an expired channel sends nothing"
    );
    let channels = api.admin(Method::GET, "channels", json!({})).await;
    assert_eq!(channels["items"][0]["active"], false);

    let remote = api
        .post(
            A,
            "calendars/primary/events/watch",
            json!({"id": "remote", "type": "web_hook", "address": "http://example.com/hook"}),
        )
        .await;
    assert_eq!(remote.status, StatusCode::BAD_REQUEST);
    assert!(remote.message().contains("HTTPS"));
}

#[tokio::test]
async fn import_creates_then_updates_by_ical_uid() {
    let api = Api::start().await;
    let mut e = event("Imported", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["iCalUID"] = json!("external-123@example.org");
    e["organizer"] = json!({"email": "someone@elsewhere.org"});
    let first = api
        .post(A, "calendars/primary/events/import", e.clone())
        .await
        .ok();
    assert_eq!(first["iCalUID"], "external-123@example.org");
    assert_eq!(
        first["organizer"]["email"], "someone@elsewhere.org",
        "import keeps the organizer"
    );
    e["summary"] = json!("Imported again");
    let second = api.post(A, "calendars/primary/events/import", e).await.ok();
    assert_eq!(second["id"], first["id"], "same iCalUID, same event");
    assert_eq!(second["summary"], "Imported again");
    let missing = api
        .post(
            A,
            "calendars/primary/events/import",
            event("x", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    assert_eq!(
        (missing.status, missing.reason()),
        (StatusCode::BAD_REQUEST, "required")
    );
}

#[tokio::test]
async fn updated_min_and_show_deleted_select_changes() {
    let api = Api::start().await;
    let old = api
        .insert(
            A,
            event("old", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let gone = api
        .insert(
            A,
            event("gone", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    api.admin(Method::POST, "clock", json!({"advanceSeconds": 60}))
        .await;
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(30);
    api.delete(
        A,
        &format!("calendars/primary/events/{}", gone["id"].as_str().unwrap()),
    )
    .await;
    let fresh = api
        .insert(
            A,
            event("fresh", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;

    let since = api
        .list_all(
            A,
            &format!("updatedMin={}", urlencode(&cutoff.to_rfc3339())),
        )
        .await
        .0;
    let mut expected = vec![
        gone["id"].as_str().unwrap().to_owned(),
        fresh["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(ids(&since), expected, "updatedMin includes deletions");
    assert!(!ids(&since).contains(&old["id"].as_str().unwrap().to_owned()));

    assert_eq!(
        api.list_all(A, "").await.0.len(),
        2,
        "a plain listing hides cancelled events"
    );
    assert_eq!(api.list_all(A, "showDeleted=true").await.0.len(), 3);
}

#[tokio::test]
async fn seed_files_create_users_calendars_and_events() {
    let emulator = Emulator::new(EmulatorConfig::default());
    let seed = json!({
        "users": [{"email": "dana@example.com", "displayName": "Dana", "calendars": [{"summary": "Team", "timeZone": "Europe/Berlin"}]}],
        "events": [{"calendarId": "dana@example.com", "conferenceDataVersion": 1, "event": {"summary": "Seeded", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}, "conferenceData": add_on_conference()}}]
    });
    let now = emulator.shared().clock.now();
    let seeded =
        confsync_emulator::seed::apply(&mut emulator.shared().world(), &seed.to_string(), now)
            .unwrap();
    assert_eq!((seeded.events, seeded.calendars.len()), (1, 1));
    let bad = confsync_emulator::seed::apply(
        &mut emulator.shared().world(),
        r#"{"events": [{"calendarId": "dana@example.com", "event": {"summary": "no times"}}]}"#,
        now,
    );
    assert!(bad.unwrap_err().contains("events[0]"));
    assert!(
        confsync_emulator::seed::apply(&mut emulator.shared().world(), r#"{"users": 5}"#, now)
            .is_err()
    );

    let running = emulator.spawn("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    let page: Value = http
        .get(format!(
            "{}calendar/v3/calendars/primary/events",
            running.base_url()
        ))
        .bearer_auth("dev:dana@example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["summary"], "Seeded");
    assert_eq!(
        page["items"][0]["conferenceData"]["conferenceId"],
        "meeting-42"
    );
}

#[tokio::test]
async fn authorization_code_flow_over_http_issues_working_tokens() {
    let api = Api::with(EmulatorConfig {
        dev_mode: false,
        ..Default::default()
    })
    .await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "0123456789abcdefghijklmnopqrstuvwxyz-0123456789";
    use base64::Engine;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
    );
    let auth = no_redirect
        .get(format!("{}o/oauth2/v2/auth", api.base))
        .query(&[
            ("client_id", "confsync"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("response_type", "code"),
            ("scope", "https://www.googleapis.com/auth/calendar"),
            ("state", "s1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", "erin@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), StatusCode::FOUND);
    let location = reqwest::Url::parse(auth.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "s1");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", pairs["code"].as_str()),
        ("redirect_uri", "http://127.0.0.1:9/callback"),
        ("client_id", "confsync"),
        ("code_verifier", verifier),
    ];
    let token: Value = api
        .http
        .post(format!("{}token", api.base))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().expect("access token");
    assert!(token["refresh_token"].as_str().is_some());
    let page = api
        .http
        .get(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

// --- the admin API never panics ---------------------------------------------------------------

impl Api {
    /// An admin call whose answer is returned as is (success or not).
    async fn admin_answer(&self, method: Method, path: &str, body: Value) -> Answer {
        let response = self
            .http
            .request(method, format!("{}emulator/{}", self.base, path))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {path} {body}: no answer ({e})"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        }
    }

    /// Asserts a 400 in Google's envelope naming `field`.
    async fn admin_refused(&self, method: Method, path: &str, body: Value, field: &str) {
        let answer = self.admin_answer(method, path, body.clone()).await;
        assert_eq!(
            (answer.status, answer.reason()),
            (StatusCode::BAD_REQUEST, "badRequest"),
            "{path} {body}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], 400, "{}", answer.body);
        assert!(
            answer.message().contains(field),
            "{path} {body}: the message should name {field}: {}",
            answer.message()
        );
    }

    /// The emulator still serves: a write, a listing and an incremental sync all work.
    async fn still_serves(&self, user: &str) {
        let inserted = self
            .insert(
                user,
                event("still here", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
            )
            .await;
        let (items, token, _) = self.list_all(user, "showDeleted=true").await;
        assert!(items.iter().any(|i| i["id"] == inserted["id"]));
        let page = self
            .get(
                user,
                &format!("calendars/primary/events?syncToken={}", urlencode(&token)),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    }
}

const C: &str = "carol@example.com";

#[tokio::test]
async fn clock_moves_out_of_range_answer_400_and_the_emulator_keeps_serving() {
    // Defect: POST /emulator/clock {"advanceSeconds": 1e16} overflowed the clock (the offset
    // saturated, then `now + offset` panicked); the request lost its connection and so did every
    // later request that read the clock, i.e. nearly all of them.
    let api = Api::start().await;
    api.still_serves(C).await;
    for seconds in [
        json!(10_000_000_000_000_000_i64),
        json!(-10_000_000_000_000_000_i64),
        json!(i64::MAX),
        json!(i64::MIN),
        // Past 9999-12-31 and before 1970: representable by chrono, but not by RFC 3339 / Unix
        // seconds as the emulator writes them.
        json!(300_000_000_000_i64),
        json!(-3_000_000_000_i64),
    ] {
        api.admin_refused(
            Method::POST,
            "clock",
            json!({ "advanceSeconds": seconds }),
            "advanceSeconds",
        )
        .await;
        api.still_serves(C).await;
    }
    // Numbers that are not an i64 at all are refused by parsing.
    for body in [
        json!({"advanceSeconds": 1e16}),
        json!({"advanceSeconds": 1e30}),
        json!({"advanceSeconds": "60"}),
        json!({}),
    ] {
        let answer = api.admin_answer(Method::POST, "clock", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.body["error"]["code"], 400, "{body}");
    }
    // The clock did not move; an ordinary move still works.
    let moved = api
        .admin(Method::POST, "clock", json!({"advanceSeconds": 60}))
        .await;
    let now: chrono::DateTime<chrono::Utc> = moved["now"].as_str().unwrap().parse().unwrap();
    let drift = now - chrono::Utc::now();
    assert!(
        drift > chrono::Duration::seconds(30) && drift < chrono::Duration::seconds(120),
        "{moved}"
    );
    api.still_serves(C).await;
}

#[tokio::test]
async fn the_clock_at_either_end_of_its_range_still_serves_every_request() {
    // Defect (same family): nothing bounded the clock: it could be moved past 9999-12-31 (where
    // RFC 3339's four-digit years end) or before 1970 (negative Unix seconds in sync tokens and
    // etags). Now it stays within 1970..=9999, and every request works at both ends.
    async fn serves_everything(api: &Api) {
        api.still_serves(C).await;
        // An endless series expands up to its horizon (730 days past "now", beyond year 9999
        // at the far end).
        let series = api
            .insert(
                C,
                json!({"summary": "weekly", "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"},
                       "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "UTC"},
                       "recurrence": ["RRULE:FREQ=WEEKLY"]}),
            )
            .await;
        let id = series["id"].as_str().unwrap();
        let instances = api
            .get(
                C,
                &format!("calendars/primary/events/{id}/instances?maxResults=5"),
            )
            .await;
        assert_eq!(instances.status, StatusCode::OK, "{}", instances.body);
        let single = api
            .get(C, "calendars/primary/events?singleEvents=true&maxResults=5")
            .await;
        assert_eq!(single.status, StatusCode::OK, "{}", single.body);
        let token = api.admin(Method::POST, "tokens", json!({"email": C})).await;
        assert!(token["access_token"].as_str().is_some());
        let channels = api.admin_answer(Method::GET, "channels", json!({})).await;
        assert_eq!(channels.status, StatusCode::OK);
    }

    let api = Api::start().await;
    let to_end = 253_402_300_799 - chrono::Utc::now().timestamp() - 3600;
    let at_end = api
        .admin(Method::POST, "clock", json!({ "advanceSeconds": to_end }))
        .await;
    assert!(
        at_end["now"].as_str().unwrap().starts_with("9999-12-31T"),
        "{at_end}"
    );
    serves_everything(&api).await;
    api.admin_refused(
        Method::POST,
        "clock",
        json!({"advanceSeconds": 86_400}),
        "advanceSeconds",
    )
    .await;

    let now: chrono::DateTime<chrono::Utc> = at_end["now"].as_str().unwrap().parse().unwrap();
    let at_start = api
        .admin(
            Method::POST,
            "clock",
            json!({ "advanceSeconds": 3600 - now.timestamp() }),
        )
        .await;
    assert!(
        at_start["now"].as_str().unwrap().starts_with("1970-01-01T"),
        "{at_start}"
    );
    serves_everything(&api).await;
    api.admin_refused(
        Method::POST,
        "clock",
        json!({"advanceSeconds": -86_400}),
        "advanceSeconds",
    )
    .await;
}

#[tokio::test]
async fn config_refuses_negative_and_absurd_values_and_changes_nothing() {
    // Defect: PUT /emulator/config accepted a negative syncTokenMaxAgeSeconds (every sync token
    // then answered 410 at once), and 1e16 panicked building the Duration (dropped connection).
    // A quota of 0 refused every request; absurd quotas were taken as given.
    let api = Api::start().await;
    let (_, token, _) = api.list_all(C, "").await;
    for age in [
        json!(-1),
        json!(-3600),
        json!(0),
        json!(10_000_000_000_000_000_i64),
        json!(i64::MAX),
        json!(i64::MIN),
    ] {
        api.admin_refused(
            Method::PUT,
            "config",
            json!({ "syncTokenMaxAgeSeconds": age }),
            "syncTokenMaxAgeSeconds",
        )
        .await;
    }
    for quota in [json!(0), json!(u32::MAX)] {
        api.admin_refused(
            Method::PUT,
            "config",
            json!({ "quotaPerUserPerMinute": quota }),
            "quotaPerUserPerMinute",
        )
        .await;
    }
    // A refused request changes nothing, not even its valid fields.
    api.admin_refused(
        Method::PUT,
        "config",
        json!({"quotaPerUserPerMinute": 1, "quotaStatus": 500}),
        "quotaStatus",
    )
    .await;
    api.admin_refused(
        Method::PUT,
        "config",
        json!({"quotaPerUserPerMinute": 1, "syncTokenMaxAgeSeconds": -5}),
        "syncTokenMaxAgeSeconds",
    )
    .await;
    for body in [
        json!({"quotaPerUserPerMinute": -1}),
        json!({"syncTokenMaxAgeSeconds": 1e30}),
        json!({"quotaStatus": 70000}),
        json!({"unknown": 1}),
    ] {
        let answer = api.admin_answer(Method::PUT, "config", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.body["error"]["code"], 400, "{body}");
    }
    let config = api.admin(Method::PUT, "config", json!({})).await;
    assert_eq!(
        (
            &config["syncTokenMaxAgeSeconds"],
            &config["quotaPerUserPerMinute"]
        ),
        (&json!(28 * 86_400), &Value::Null),
        "{config}"
    );
    // The token issued before is still good: nothing aged it.
    let page = api
        .get(
            C,
            &format!("calendars/primary/events?syncToken={}", urlencode(&token)),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    api.still_serves(C).await;
    // The largest accepted values work.
    let config = api
        .admin(
            Method::PUT,
            "config",
            json!({"syncTokenMaxAgeSeconds": 253_402_300_799_i64, "quotaPerUserPerMinute": 1_000_000}),
        )
        .await;
    assert_eq!(config["syncTokenMaxAgeSeconds"], 253_402_300_799_i64);
    api.still_serves(C).await;
}

#[tokio::test]
async fn issued_token_lifetimes_are_bounded() {
    // Defect: POST /emulator/tokens {"expiresIn": 1e16} panicked (Duration out of bounds, or
    // `now + lifetime` overflowing); a negative expiresIn issued an already-expired token.
    let api = Api::start().await;
    for lifetime in [
        json!(10_000_000_000_000_000_i64),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(-1),
        json!(0),
    ] {
        api.admin_refused(
            Method::POST,
            "tokens",
            json!({"email": C, "expiresIn": lifetime}),
            "expiresIn",
        )
        .await;
    }
    let issued = api
        .admin(Method::POST, "tokens", json!({"email": C, "expiresIn": 60}))
        .await;
    let page = api
        .http
        .get(format!("{}calendar/v3/calendars/primary/events", api.base))
        .bearer_auth(issued["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    api.still_serves(C).await;
}

#[tokio::test]
async fn faults_with_absurd_latency_or_retry_after_are_refused() {
    // Defect: latencyMs was unbounded (u64::MAX parked matching requests forever, and two such
    // faults overflowed their sum, a panic in debug builds); retryAfter was unbounded too.
    let api = Api::start().await;
    for (fault, field) in [
        (json!({"latencyMs": u64::MAX}), "latencyMs"),
        (json!({"latencyMs": 600_001}), "latencyMs"),
        (
            json!({"status": 503, "retryAfter": 10_000_000_000_u64}),
            "retryAfter",
        ),
        (json!({"status": 200}), "status"),
        (json!({"status": 503, "probability": 2.0}), "probability"),
        (json!({"status": 503, "count": 0}), "count"),
    ] {
        api.admin_refused(Method::POST, "faults", fault, field)
            .await;
    }
    let answer = api
        .admin_answer(Method::POST, "faults", json!({"status": -1}))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Nothing was added: requests are neither delayed nor failed.
    let started = std::time::Instant::now();
    api.still_serves(C).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn moving_the_clock_back_does_not_lock_users_out_of_their_quota() {
    // Defect: the quota window kept requests made before the clock was moved back; they were
    // "in the future", never aged out, and the user stayed over quota until the clock caught up.
    let api = Api::start().await;
    api.admin(Method::PUT, "config", json!({"quotaPerUserPerMinute": 2}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            api.get(C, "calendars/primary/events").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        api.get(C, "calendars/primary/events").await.status,
        StatusCode::FORBIDDEN
    );
    api.admin(Method::POST, "clock", json!({"advanceSeconds": -86_400}))
        .await;
    assert_eq!(
        api.get(C, "calendars/primary/events").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwt_assertions_with_extreme_iat_and_exp_are_refused_without_panicking() {
    // Defect: the token endpoint computed `exp - iat` on the client's numbers; iat = i64::MIN,
    // exp = i64::MAX overflowed (a panic in debug builds: the connection dropped).
    use base64::Engine;
    let api = Api::start().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    for (iat, exp) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, i64::MAX)] {
        let claims = json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": "s",
                            "aud": format!("{}token", api.base), "iat": iat, "exp": exp});
        let assertion = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes()),
            b64(&[7u8; 256])
        );
        let answer = api
            .http
            .post(format!("{}token", api.base))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("iat {iat}, exp {exp}: no answer ({e})"));
        assert_eq!(
            answer.status(),
            StatusCode::BAD_REQUEST,
            "iat {iat}, exp {exp}"
        );
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
    api.still_serves(C).await;
}

#[tokio::test]
async fn expiring_sync_tokens_never_wraps_the_epoch() {
    // Defect: the calendar's token epoch was incremented with `+= 1` (a panic in debug builds at
    // u32::MAX; in release it wrapped, and tokens of long-expired epochs became valid again).
    let api = Api::start().await;
    let (_, token, _) = api.list_all(C, "").await;
    api._emulator
        .shared()
        .world()
        .calendars
        .get_mut(C)
        .unwrap()
        .token_epoch = u32::MAX;
    let answer = api
        .admin_answer(
            Method::POST,
            &format!("calendars/{}/expire-sync-tokens", urlencode(C)),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], 400);
    // The old token (epoch 0) stays expired, and the emulator keeps serving.
    let page = api
        .get(
            C,
            &format!("calendars/primary/events?syncToken={}", urlencode(&token)),
        )
        .await;
    assert_eq!(page.status, StatusCode::GONE);
    api.still_serves(C).await;
}

#[tokio::test]
async fn seed_files_refuse_a_conference_data_version_other_than_0_or_1() {
    // Defect: a seed event's conferenceDataVersion was any u8, while events.insert accepts only
    // 0 or 1; 2..=255 was silently taken as 1.
    let emulator = Emulator::new(EmulatorConfig::default());
    let now = emulator.shared().clock.now();
    let seed = json!({"events": [{"calendarId": "dana@example.com", "conferenceDataVersion": 7,
        "event": {"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}}}]});
    emulator
        .shared()
        .world()
        .ensure_user("dana@example.com", None)
        .unwrap();
    let error =
        confsync_emulator::seed::apply(&mut emulator.shared().world(), &seed.to_string(), now)
            .unwrap_err();
    assert!(error.contains("conferenceDataVersion"), "{error}");
}

/// Issue 14: ID tokens as Google issues them (what ScriptApp.getIdentityToken() gives a script):
/// RS256 with the key's id in the header, Google's claims, and the keys as a JWKS at
/// /oauth2/v3/certs (cacheable); rotating keeps the previous key published.
#[tokio::test]
async fn identity_tokens_are_signed_with_the_published_keys() {
    use base64::Engine;
    let api = Api::start().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mint = async |body: Value| {
        let response = api
            .http
            .post(format!("{}emulator/identityTokens", api.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let certs = async || {
        let response = api
            .http
            .get(format!("{}oauth2/v3/certs", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cache = response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cache.contains("max-age=3600"), "{cache}");
        response.json::<Value>().await.unwrap()
    };
    let parts = |token: &str| -> (Value, Value, Vec<u8>, String) {
        let mut it = token.split('.');
        let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(it.next().is_none());
        (
            serde_json::from_slice(&b64.decode(h).unwrap()).unwrap(),
            serde_json::from_slice(&b64.decode(p).unwrap()).unwrap(),
            b64.decode(s).unwrap(),
            format!("{h}.{p}"),
        )
    };
    let verifies = |jwks: &Value, kid: &str, signed: &str, signature: &[u8]| {
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .expect("the token's kid is published");
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        let n = b64.decode(key["n"].as_str().unwrap()).unwrap();
        let e = b64.decode(key["e"].as_str().unwrap()).unwrap();
        aws_lc_rs::signature::RsaPublicKeyComponents { n, e }
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                signature,
            )
            .is_ok()
    };

    let (status, answer) = mint(
        json!({"email": "Ann@Example.com", "audience": "1234-abc.apps.googleusercontent.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let token = answer["idToken"].as_str().unwrap().to_owned();
    let (header, claims, signature, signed) = parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap().to_owned();
    assert_eq!(claims["iss"], "https://accounts.google.com");
    assert_eq!(claims["aud"], "1234-abc.apps.googleusercontent.com");
    assert_eq!(claims["azp"], "1234-abc.apps.googleusercontent.com");
    assert_eq!(claims["email"], "ann@example.com");
    assert_eq!(claims["email_verified"], true);
    let sub = claims["sub"].as_str().unwrap();
    assert!(
        sub.len() == 21 && sub.bytes().all(|b| b.is_ascii_digit()),
        "{sub}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);
    let jwks = certs().await;
    assert!(verifies(&jwks, &kid, &signed, &signature));
    // A changed claim set does not verify.
    let forged_claims = b64.encode(
        json!({"iss": "https://accounts.google.com", "aud": claims["aud"], "email": "eve@example.com"})
            .to_string(),
    );
    let forged = format!("{}.{forged_claims}", signed.split('.').next().unwrap());
    assert!(!verifies(&jwks, &kid, &forged, &signature));
    // The same account always has the same sub.
    let (_, again) = mint(json!({"email": "ann@example.com", "audience": "other"})).await;
    let (_, claims_again, _, _) = parts(again["idToken"].as_str().unwrap());
    assert_eq!(claims_again["sub"], claims["sub"]);
    assert_eq!(claims_again["aud"], "other");

    // Tokens from the past, unverified emails and other issuers, for tests of verifiers.
    let (_, old) = mint(json!({"email": "ann@example.com", "audience": "a", "issuedAt": 1_700_000_000, "expiresIn": 60, "emailVerified": false, "issuer": "accounts.google.com"})).await;
    let (_, old_claims, _, _) = parts(old["idToken"].as_str().unwrap());
    assert_eq!(old_claims["iat"], 1_700_000_000);
    assert_eq!(old_claims["exp"], 1_700_000_060);
    assert_eq!(old_claims["email_verified"], false);
    assert_eq!(old_claims["iss"], "accounts.google.com");

    // Rotation: the new key signs, both are published.
    let rotated = api
        .admin(Method::POST, "identityKeys/rotate", json!({}))
        .await;
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, kid);
    let (_, answer) = mint(json!({"email": "ann@example.com", "audience": "a"})).await;
    let (header, _, signature, signed) = parts(answer["idToken"].as_str().unwrap());
    assert_eq!(header["kid"], new_kid.as_str());
    let jwks = certs().await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(verifies(&jwks, &new_kid, &signed, &signature));
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
    );

    // Bad admin requests are refused with Google's envelope.
    for body in [
        json!({"email": "not-an-email", "audience": "a"}),
        json!({"email": "ann@example.com", "audience": ""}),
        json!({"email": "ann@example.com", "audience": "a", "expiresIn": 0}),
        json!({"email": "ann@example.com"}),
        json!({"email": "ann@example.com", "audience": "a", "extra": 1}),
    ] {
        let (status, answer) = mint(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
}

// The discovery document (calendar.v3.json), events.list `showDeleted`: "Cancelled instances of
// recurring events (but not the underlying recurring event) will still be included if
// showDeleted and singleEvents are both False." Google guarantees only id, recurringEventId and
// originalStartTime on them.
#[tokio::test]
async fn default_listing_includes_cancelled_instances_of_a_live_series() {
    let api = Api::start().await;
    let series = api.insert(A, weekly_series()).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let single = api
        .insert(
            A,
            event("single", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let third = format!("{sid}_20261221T090000Z");
    for id in [third.as_str(), single["id"].as_str().unwrap()] {
        let answer = api
            .delete(A, &format!("calendars/primary/events/{id}"))
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }

    for query in ["", "showDeleted=false&singleEvents=false"] {
        let (items, _, _) = api.list_all(A, query).await;
        assert_eq!(ids(&items), {
            let mut v = vec![sid.clone(), third.clone()];
            v.sort();
            v
        });
        let tombstone = items.iter().find(|i| i["id"] == json!(third)).unwrap();
        assert_eq!(tombstone["status"], "cancelled");
        assert_eq!(tombstone["recurringEventId"], json!(sid));
        assert_eq!(
            tombstone["originalStartTime"]["dateTime"],
            "2026-12-21T10:00:00+01:00"
        );
        assert!(
            tombstone.get("summary").is_none(),
            "tombstone shape: {tombstone}"
        );
    }
    // The listing's other filters still apply to it.
    let (windowed, _, _) = api
        .list_all(
            A,
            "timeMin=2026-12-22T00:00:00Z&timeMax=2027-02-01T00:00:00Z",
        )
        .await;
    assert_eq!(ids(&windowed), vec![sid.clone()]);
    let (by_text, _, _) = api.list_all(A, "q=weekly").await;
    assert_eq!(by_text.len(), 2);
    let (by_uid, _, _) = api
        .list_all(
            A,
            &format!("iCalUID={}", urlencode(single["iCalUID"].as_str().unwrap())),
        )
        .await;
    assert!(by_uid.is_empty(), "{by_uid:?}");
    // singleEvents=true without showDeleted leaves it out.
    let (expanded, _, _) = api.list_all(A, "singleEvents=true").await;
    assert_eq!(expanded.len(), 4);
    assert!(expanded.iter().all(|i| i["id"] != json!(third)));

    // Once the whole series is cancelled, neither it nor its instances are listed.
    api.delete(A, &format!("calendars/primary/events/{sid}"))
        .await;
    let (items, _, _) = api.list_all(A, "").await;
    assert!(items.is_empty(), "{items:?}");
}

// RFC 5545 3.8.7.4 (SEQUENCE): incremented "each time the Organizer makes a significant
// revision" of DTSTART, DTEND, DURATION, RRULE, RDATE, EXDATE, ...; Google increments
// `sequence` when start or end changes, whatever sequence the client sends back.
#[tokio::test]
async fn sequence_increments_when_start_or_end_changes() {
    let api = Api::start().await;
    let created = api
        .insert(
            A,
            event("seq", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("calendars/primary/events/{id}");
    assert_eq!(created["sequence"], 0);

    // PATCH of the time (the stored sequence is merged into the body).
    let moved = api
        .patch(
            A,
            &path,
            json!({"start": {"dateTime": "2026-12-01T12:00:00Z"}, "end": {"dateTime": "2026-12-01T13:00:00Z"}}),
        )
        .await
        .ok();
    assert_eq!(moved["sequence"], 1);
    // PATCH that also sends back the sequence it read.
    let moved = api
        .patch(
            A,
            &path,
            json!({"end": {"dateTime": "2026-12-01T13:30:00Z"}, "sequence": 1}),
        )
        .await
        .ok();
    assert_eq!(moved["sequence"], 2);
    // PUT of the resource as read, with a new start: the sequence it sends back is not kept.
    let mut body = moved.clone();
    body["start"] = json!({"dateTime": "2026-12-01T12:30:00Z"});
    let put = api.call(A, Method::PUT, &path, Some(body), &[]).await.ok();
    assert_eq!(put["sequence"], 3);
    // A PUT with a lower sequence still increments.
    let mut body = put.clone();
    body["start"] = json!({"dateTime": "2026-12-01T12:15:00Z"});
    body["sequence"] = json!(0);
    let put = api.call(A, Method::PUT, &path, Some(body), &[]).await.ok();
    assert_eq!(put["sequence"], 4);
    // A summary-only edit does not.
    let renamed = api
        .patch(A, &path, json!({"summary": "renamed"}))
        .await
        .ok();
    assert_eq!(renamed["sequence"], 4);
    // A client may still set a higher sequence explicitly.
    let raised = api.patch(A, &path, json!({"sequence": 10})).await.ok();
    assert_eq!(raised["sequence"], 10);
}

// The discovery document (calendar.v3.json), Event `updated`: "Last modification time of the
// main event data (as a RFC3339 timestamp). Updating event reminders will not cause this to
// change."
#[tokio::test]
async fn reminder_only_edits_keep_updated_but_change_the_etag() {
    let api = Api::start().await;
    let created = api
        .insert(
            A,
            event("rem", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("calendars/primary/events/{id}");
    api.admin(Method::POST, "clock", json!({"advanceSeconds": 60}))
        .await;
    let reminded = api
        .patch(
            A,
            &path,
            json!({"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]}}),
        )
        .await
        .ok();
    assert_eq!(reminded["updated"], created["updated"]);
    assert_ne!(reminded["etag"], created["etag"]);
    assert_eq!(api.get(A, &path).await.ok()["updated"], created["updated"]);
    // A PUT that changes only the reminders too.
    let mut body = reminded.clone();
    body["reminders"] = json!({"useDefault": true});
    let put = api.call(A, Method::PUT, &path, Some(body), &[]).await.ok();
    assert_eq!(put["updated"], created["updated"]);
    assert_ne!(put["etag"], reminded["etag"]);
    // A main-data edit does change it.
    let renamed = api
        .patch(A, &path, json!({"summary": "renamed"}))
        .await
        .ok();
    assert_ne!(renamed["updated"], created["updated"]);
}

impl Api {
    /// Every page of the calendar list; returns (items, final sync token, pages).
    async fn calendar_list_all(&self, user: &str, query: &str) -> (Vec<Value>, String, usize) {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("users/me/calendarList?{query}");
            if let Some(t) = &page_token {
                path.push_str(&format!("&pageToken={}", urlencode(t)));
            }
            let page = self.get(user, &path).await.ok();
            pages += 1;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            let next = page.get("nextPageToken").and_then(Value::as_str);
            let sync = page.get("nextSyncToken").and_then(Value::as_str);
            assert!(
                next.is_some() != sync.is_some(),
                "exactly one of nextPageToken/nextSyncToken: {page}"
            );
            match (next, sync) {
                (Some(n), _) => page_token = Some(n.to_owned()),
                (_, Some(s)) => return (items, s.to_owned(), pages),
                _ => unreachable!(),
            }
        }
    }

    async fn new_calendar(&self, owner: &str, summary: &str) -> String {
        self.admin(
            Method::POST,
            &format!("users/{owner}/calendars"),
            json!({"summary": summary}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

// The discovery document (calendar.v3.json), calendarList.list `maxResults`: "By default the
// value is 100 entries. The page size can never be larger than 250 entries."; CalendarList
// `nextPageToken`: "Omitted if no further results are available, in which case nextSyncToken is
// provided."
#[tokio::test]
async fn calendar_list_pages_by_max_results() {
    let api = Api::start().await;
    api.get(A, "users/me/calendarList").await.ok(); // creates alice's primary calendar
    for i in 0..260 {
        api.new_calendar(A, &format!("c{i}")).await;
    }
    // Default page: 100 entries, then a page token.
    let first = api.get(A, "users/me/calendarList").await.ok();
    assert_eq!(first["items"].as_array().unwrap().len(), 100);
    assert!(first.get("nextPageToken").is_some() && first.get("nextSyncToken").is_none());
    assert_eq!(first["items"][0]["id"], A, "primary first");
    // The page size is capped at 250.
    let big = api
        .get(A, "users/me/calendarList?maxResults=1000")
        .await
        .ok();
    assert_eq!(big["items"].as_array().unwrap().len(), 250);
    assert!(big.get("nextPageToken").is_some());
    // Every entry exactly once across pages, the last page with the sync token only.
    let (items, _, pages) = api.calendar_list_all(A, "maxResults=7").await;
    assert_eq!(pages, 261usize.div_ceil(7));
    let mut seen = ids(&items);
    seen.dedup();
    assert_eq!(seen.len(), 261);
    // A page token of another query or a garbage one is a 400; maxResults=0 too.
    let other = api.get(A, "users/me/calendarList?maxResults=7").await.ok()["nextPageToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = api
        .get(
            A,
            &format!(
                "users/me/calendarList?showHidden=true&pageToken={}",
                urlencode(&other)
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = api
        .get(
            B,
            &format!(
                "users/me/calendarList?maxResults=7&pageToken={}",
                urlencode(&other)
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "bound to the user");
    let answer = api.get(A, "users/me/calendarList?maxResults=0").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

// The discovery document (calendar.v3.json), calendarList.list `syncToken`: "It makes the result
// of this list request contain only entries that have changed since then. [...] All entries
// deleted and hidden since the previous list request will always be in the result set and it is
// not allowed to set showDeleted neither showHidden to False. [...] minAccessRole and
// showOwnOrganizationOnly query parameters cannot be specified together with nextSyncToken. If
// the syncToken expires, the server will respond with a 410 GONE response code"; `showDeleted` /
// `showHidden` default to False.
#[tokio::test]
async fn calendar_list_sync_tokens_return_only_changes_and_expire_with_410() {
    let api = Api::start().await;
    let work = api.new_calendar(A, "work").await;
    let home = api.new_calendar(A, "home").await;
    let (full, token, _) = api.calendar_list_all(A, "").await;
    assert_eq!(full.len(), 3);

    // Nothing changed: nothing returned, and a usable token again.
    let (none, token2, _) = api
        .calendar_list_all(A, &format!("syncToken={}", urlencode(&token)))
        .await;
    assert!(none.is_empty(), "{none:?}");

    // A new calendar, a hidden one and a removed one; bob's calendar is not alice's change.
    let trips = api.new_calendar(A, "trips").await;
    api.new_calendar(B, "bob's").await;
    api.admin(
        Method::POST,
        &format!("users/{A}/calendarList/{work}"),
        json!({"hidden": true}),
    )
    .await;
    api.admin(
        Method::POST,
        &format!("users/{A}/calendarList/{home}"),
        json!({"deleted": true}),
    )
    .await;
    let (changes, token3, _) = api
        .calendar_list_all(A, &format!("syncToken={}&maxResults=1", urlencode(&token2)))
        .await;
    assert_eq!(ids(&changes), {
        let mut v = vec![work.clone(), home.clone(), trips.clone()];
        v.sort();
        v
    });
    let by_id = |id: &str| {
        changes
            .iter()
            .find(|c| c["id"] == json!(id))
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(&work)["hidden"], true);
    assert_eq!(by_id(&home)["deleted"], true);
    assert!(by_id(&trips).get("hidden").is_none());
    let (none, _, _) = api
        .calendar_list_all(A, &format!("syncToken={}", urlencode(&token3)))
        .await;
    assert!(none.is_empty(), "{none:?}");

    // Full listings leave hidden and deleted entries out unless asked.
    let (plain, _, _) = api.calendar_list_all(A, "").await;
    assert_eq!(ids(&plain), {
        let mut v = vec![A.to_owned(), trips.clone()];
        v.sort();
        v
    });
    let (all, _, _) = api
        .calendar_list_all(A, "showHidden=true&showDeleted=true")
        .await;
    assert_eq!(all.len(), 4);
    assert_eq!(
        api.get(A, &format!("users/me/calendarList/{home}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Garbage, another user's and aged tokens: 410 fullSyncRequired.
    for (user, bad) in [(A, "garbage".to_owned()), (B, token.clone())] {
        let answer = api
            .get(
                user,
                &format!("users/me/calendarList?syncToken={}", urlencode(&bad)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
        assert_eq!(answer.reason(), "fullSyncRequired");
    }
    // Restrictions refused with a sync token.
    for extra in [
        "showDeleted=false",
        "showHidden=false",
        "minAccessRole=reader",
        "showOwnOrganizationOnly=true",
    ] {
        let answer = api
            .get(
                A,
                &format!(
                    "users/me/calendarList?syncToken={}&{extra}",
                    urlencode(&token3)
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{extra}");
    }
    api.admin(Method::POST, "clock", json!({"advanceSeconds": 29 * 86400}))
        .await;
    let answer = api
        .get(
            A,
            &format!("users/me/calendarList?syncToken={}", urlencode(&token3)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::GONE);
    // The sync token is not a constant.
    assert_ne!(token, token3);
}

// --- sharing (acl.*) -----------------------------------------------------------------------

impl Api {
    async fn share(&self, owner: &str, calendar: &str, scope: Value, role: &str) -> Value {
        self.post(
            owner,
            &format!("calendars/{}/acl", urlencode(calendar)),
            json!({"role": role, "scope": scope}),
        )
        .await
        .ok()
    }

    async fn share_with(&self, owner: &str, calendar: &str, user: &str, role: &str) -> Value {
        self.share(
            owner,
            calendar,
            json!({"type": "user", "value": user}),
            role,
        )
        .await
    }

    async fn put(&self, user: &str, path: &str, body: Value) -> Answer {
        self.call(user, Method::PUT, path, Some(body), &[]).await
    }

    /// Lists every page of `acl.list`; returns (items, final sync token, pages).
    async fn acl_all(
        &self,
        user: &str,
        calendar: &str,
        query: &str,
    ) -> (Vec<Value>, String, usize) {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("calendars/{}/acl?{query}", urlencode(calendar));
            if let Some(t) = &page_token {
                path.push_str(&format!("&pageToken={}", urlencode(t)));
            }
            let page = self.get(user, &path).await.ok();
            assert_eq!(page["kind"], "calendar#acl");
            pages += 1;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            let next = page.get("nextPageToken").and_then(Value::as_str);
            let sync = page.get("nextSyncToken").and_then(Value::as_str);
            assert!(
                next.is_some() != sync.is_some(),
                "exactly one of nextPageToken/nextSyncToken: {page}"
            );
            match (next, sync) {
                (Some(n), _) => page_token = Some(n.to_owned()),
                (_, Some(s)) => return (items, s.to_owned(), pages),
                _ => unreachable!(),
            }
        }
    }
}

fn assert_forbidden(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{what}: {}",
        answer.body
    );
    assert_eq!(
        answer.reason(),
        "requiredAccessLevel",
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.body["error"]["code"], 403, "{what}");
    assert_eq!(
        answer.body.pointer("/error/errors/0/domain"),
        Some(&json!("calendar")),
        "{what}"
    );
}

fn assert_not_found(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.reason(), "notFound", "{what}");
}

// The discovery document, AclRule: id "Identifier of the Access Control List (ACL) rule", scope
// {type, value}, role; writer "Provides read and write access to the calendar [...] Provides
// read access to the calendar's ACLs".
#[tokio::test]
async fn acl_insert_shares_a_calendar_with_a_writer() {
    let api = Api::start().await;
    let team = api.new_calendar(A, "team").await;
    let cal = urlencode(&team);
    let standup = api
        .post(
            A,
            &format!("calendars/{cal}/events"),
            event("standup", "2026-12-01T10:00:00Z", "2026-12-01T10:15:00Z"),
        )
        .await
        .ok();
    // Before the rule bob cannot see the calendar at all.
    assert_not_found(
        &api.get(B, &format!("calendars/{cal}/events")).await,
        "events.list before sharing",
    );

    // Emails are compared case-insensitively and stored lowercased.
    let rule = api.share_with(A, &team, "Bob@Example.COM", "writer").await;
    assert_eq!(rule["kind"], "calendar#aclRule");
    assert_eq!(rule["id"], "user:bob@example.com");
    assert_eq!(
        rule["scope"],
        json!({"type": "user", "value": "bob@example.com"})
    );
    assert_eq!(rule["role"], "writer");
    assert!(rule["etag"].as_str().is_some_and(|e| e.starts_with('"')));

    // The sharee lists, reads, patches and inserts events.
    let page = api.get(B, &format!("calendars/{cal}/events")).await.ok();
    let items = page["items"].as_array().cloned().unwrap();
    assert_eq!(
        ids(&items),
        vec![standup["id"].as_str().unwrap().to_owned()]
    );
    let path = format!("calendars/{cal}/events/{}", standup["id"].as_str().unwrap());
    let patched = api
        .patch(B, &path, json!({"summary": "standup (bob)"}))
        .await
        .ok();
    assert_eq!(patched["summary"], "standup (bob)");
    assert_eq!(api.get(A, &path).await.ok()["summary"], "standup (bob)");
    api.post(
        B,
        &format!("calendars/{cal}/events"),
        event("retro", "2026-12-02T10:00:00Z", "2026-12-02T11:00:00Z"),
    )
    .await
    .ok();
    assert_eq!(
        api.get(A, &format!("calendars/{cal}/events")).await.ok()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api.get(B, &format!("calendars/{cal}")).await.ok()["id"],
        team
    );
    // `primary` is still bob's own calendar.
    assert_eq!(api.get(B, "calendars/primary").await.ok()["id"], B);

    // acl.get answers the role, for the owner and for the writer, whatever the email's case.
    for (user, rule_id) in [
        (A, "user:bob@example.com"),
        (A, "user:BOB@example.com"),
        (B, "user:bob@example.com"),
    ] {
        let got = api
            .get(user, &format!("calendars/{cal}/acl/{}", urlencode(rule_id)))
            .await
            .ok();
        assert_eq!(got["id"], "user:bob@example.com");
        assert_eq!(got["role"], "writer");
        assert_eq!(got["etag"], rule["etag"]);
    }
    // Clients that do not percent-encode the rule id reach it too.
    let raw = api
        .get(A, &format!("calendars/{cal}/acl/user:bob@example.com"))
        .await
        .ok();
    assert_eq!(raw["role"], "writer");
    // The data owner's rule is there too.
    let owner = api
        .get(
            A,
            &format!("calendars/{cal}/acl/{}", urlencode(&format!("user:{A}"))),
        )
        .await
        .ok();
    assert_eq!(owner["role"], "owner");
    assert_eq!(owner["scope"], json!({"type": "user", "value": A}));
    // No such rule: 404.
    assert_not_found(
        &api.get(
            A,
            &format!(
                "calendars/{cal}/acl/{}",
                urlencode("user:carol@example.com")
            ),
        )
        .await,
        "acl.get of a missing rule",
    );
    assert_not_found(
        &api.get(
            A,
            &format!("calendars/{cal}/acl/{}", urlencode("domain:example.com")),
        )
        .await,
        "acl.get of a missing domain rule",
    );
    let (rules, _, _) = api.acl_all(A, &team, "").await;
    let mut found: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            assert_eq!(r["kind"], "calendar#aclRule");
            (
                r["id"].as_str().unwrap().to_owned(),
                r["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (format!("user:{A}"), "owner".to_owned()),
            ("user:bob@example.com".to_owned(), "writer".to_owned()),
        ]
    );
    // Updating the role with PUT (scope required) and PATCH.
    let downgraded = api
        .put(
            A,
            &format!("calendars/{cal}/acl/{}", urlencode("user:bob@example.com")),
            json!({"role": "reader", "scope": {"type": "user", "value": B}}),
        )
        .await
        .ok();
    assert_eq!(downgraded["role"], "reader");
    assert_ne!(downgraded["etag"], rule["etag"]);
    let answer = api.patch(B, &path, json!({"summary": "no"})).await;
    assert_forbidden(&answer, "patch by a downgraded writer");
    let upgraded = api
        .patch(
            A,
            &format!("calendars/{cal}/acl/{}", urlencode("user:bob@example.com")),
            json!({"role": "writerWithoutPrivateAccess"}),
        )
        .await
        .ok();
    assert_eq!(upgraded["role"], "writerWithoutPrivateAccess");
    api.patch(B, &path, json!({"summary": "yes"})).await.ok();
    // writerWithoutPrivateAccess writes events but does not read the ACL.
    assert_forbidden(
        &api.get(B, &format!("calendars/{cal}/acl")).await,
        "acl.list by writerWithoutPrivateAccess",
    );
}

// "reader - Provides read access to the calendar"; a write needs writer access (Google: 403
// requiredAccessLevel "You need to have writer access to this calendar.").
#[tokio::test]
async fn readers_read_but_cannot_write_and_strangers_get_404() {
    let api = Api::start().await;
    let ev = api
        .insert(
            A,
            json!({
                "summary": "weekly",
                "start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-01T11:00:00Z", "timeZone": "UTC"},
                "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"],
            }),
        )
        .await;
    let id = ev["id"].as_str().unwrap().to_owned();
    api.share_with(A, A, B, "reader").await;
    let events = format!("calendars/{A}/events");
    let one = format!("{events}/{id}");

    // Reads.
    let list = api.get(B, &events).await.ok();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.get(B, &one).await.ok()["summary"], "weekly");
    let instances = api.get(B, &format!("{one}/instances")).await.ok();
    assert_eq!(instances["items"].as_array().unwrap().len(), 3);
    assert_eq!(api.get(B, &format!("calendars/{A}")).await.ok()["id"], A);

    // Writes: 403 requiredAccessLevel.
    let body = event("x", "2026-12-05T10:00:00Z", "2026-12-05T11:00:00Z");
    assert_forbidden(&api.post(B, &events, body.clone()).await, "insert");
    let mut import = body.clone();
    import["iCalUID"] = json!("imported@example.com");
    assert_forbidden(
        &api.post(B, &format!("{events}/import"), import).await,
        "import",
    );
    assert_forbidden(&api.patch(B, &one, json!({"summary": "y"})).await, "patch");
    assert_forbidden(&api.put(B, &one, body.clone()).await, "update");
    assert_forbidden(&api.delete(B, &one).await, "delete");
    assert_forbidden(
        &api.post(B, &format!("{one}/move?destination={B}"), json!({}))
            .await,
        "move",
    );
    let answer = api.post(B, &events, body.clone()).await;
    assert_eq!(
        answer.message(),
        "You need to have writer access to this calendar."
    );
    // A reader does not read the ACL either (writer does).
    assert_forbidden(&api.get(B, &format!("calendars/{A}/acl")).await, "acl.list");
    assert_forbidden(
        &api.get(
            B,
            &format!("calendars/{A}/acl/{}", urlencode("user:bob@example.com")),
        )
        .await,
        "acl.get",
    );
    // Nothing changed.
    assert_eq!(api.get(A, &one).await.ok()["summary"], "weekly");

    // A stranger: 404 everywhere, as before sharing existed.
    for answer in [
        api.get(C, &events).await,
        api.get(C, &one).await,
        api.get(C, &format!("calendars/{A}")).await,
        api.post(C, &events, body.clone()).await,
        api.patch(C, &one, json!({"summary": "z"})).await,
        api.delete(C, &one).await,
        api.get(C, &format!("calendars/{A}/acl")).await,
        api.get(
            C,
            &format!("calendars/{A}/acl/{}", urlencode("user:bob@example.com")),
        )
        .await,
        api.post(
            C,
            &format!("calendars/{A}/acl"),
            json!({"role": "owner", "scope": {"type": "user", "value": C}}),
        )
        .await,
        api.get(C, &format!("users/me/calendarList/{A}")).await,
    ] {
        assert_not_found(&answer, "stranger");
    }

    // freeBusyReader sees the calendar, not its events.
    api.share_with(A, A, C, "freeBusyReader").await;
    assert_eq!(api.get(C, &format!("calendars/{A}")).await.ok()["id"], A);
    let answer = api.get(C, &events).await;
    assert_forbidden(&answer, "events.list by freeBusyReader");
    assert_eq!(
        answer.message(),
        "You need to have reader access to this calendar."
    );
    // Role none grants nothing.
    api.share_with(A, A, C, "none").await;
    assert_not_found(&api.get(C, &format!("calendars/{A}")).await, "role none");

    // A domain rule gives every user of the domain access by calendar id.
    api.share(
        A,
        A,
        json!({"type": "domain", "value": "Example.com"}),
        "reader",
    )
    .await;
    assert_eq!(
        api.get(C, &events).await.ok()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_not_found(
        &api.get("dave@other.example", &events).await,
        "another domain",
    );
    // The public scope: anyone.
    api.share(A, A, json!({"type": "default"}), "reader").await;
    api.get("dave@other.example", &events).await.ok();
}

#[tokio::test]
async fn acl_changes_need_owner_and_the_owner_rule_is_fixed() {
    let api = Api::start().await;
    let team = api.new_calendar(A, "team").await;
    let cal = urlencode(&team);
    let acl = format!("calendars/{cal}/acl");
    let rule_path = |id: &str| format!("calendars/{cal}/acl/{}", urlencode(id));
    api.share_with(A, &team, B, "writer").await;

    // A writer reads the ACL but cannot change it.
    api.get(B, &acl).await.ok();
    assert_forbidden(
        &api.post(
            B,
            &acl,
            json!({"role": "reader", "scope": {"type": "user", "value": C}}),
        )
        .await,
        "acl.insert by a writer",
    );
    assert_eq!(
        api.post(
            B,
            &acl,
            json!({"role": "reader", "scope": {"type": "user", "value": C}}),
        )
        .await
        .message(),
        "You need to have owner access to this calendar."
    );
    assert_forbidden(
        &api.patch(
            B,
            &rule_path("user:bob@example.com"),
            json!({"role": "owner"}),
        )
        .await,
        "acl.patch by a writer",
    );
    assert_forbidden(
        &api.delete(B, &rule_path(&format!("user:{A}"))).await,
        "acl.delete by a writer",
    );

    // The data owner's rule cannot be deleted or downgraded.
    let owner_rule = rule_path(&format!("user:{A}"));
    for answer in [
        api.delete(A, &owner_rule).await,
        api.patch(A, &owner_rule, json!({"role": "reader"})).await,
        api.put(
            A,
            &owner_rule,
            json!({"role": "writer", "scope": {"type": "user", "value": A}}),
        )
        .await,
        api.post(
            A,
            &acl,
            json!({"role": "none", "scope": {"type": "user", "value": A}}),
        )
        .await,
    ] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.reason(), "cannotChangeOwnAcl");
    }
    // Setting the role it already has changes nothing.
    let same = api
        .patch(A, &owner_rule, json!({"role": "owner"}))
        .await
        .ok();
    assert_eq!(same["role"], "owner");
    // Another owner can share, but not touch the data owner's rule, nor their own.
    api.share_with(A, &team, C, "owner").await;
    api.share_with(C, &team, "dave@example.com", "reader").await;
    let answer = api.delete(C, &owner_rule).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.reason(), "cannotChangeOwnerAcl");
    let answer = api
        .patch(
            C,
            &rule_path(&format!("user:{C}")),
            json!({"role": "reader"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.reason(), "cannotChangeOwnAcl");
    assert_eq!(api.get(A, &owner_rule).await.ok()["role"], "owner");

    // Bad bodies: 400 with Google's envelope.
    for (body, reason, location) in [
        (
            json!({"role": "admin", "scope": {"type": "user", "value": C}}),
            "invalid",
            "role",
        ),
        (
            json!({"scope": {"type": "user", "value": C}}),
            "required",
            "role",
        ),
        (json!({"role": "reader"}), "required", "scope"),
        (
            json!({"role": "reader", "scope": {}}),
            "required",
            "scope.type",
        ),
        (
            json!({"role": "reader", "scope": {"type": "team", "value": C}}),
            "invalid",
            "scope.type",
        ),
        (
            json!({"role": "reader", "scope": {"type": "user"}}),
            "required",
            "scope.value",
        ),
        (
            json!({"role": "reader", "scope": {"type": "user", "value": "not an email"}}),
            "invalidScopeValue",
            "scope.value",
        ),
        (
            json!({"role": "writer", "scope": {"type": "default"}}),
            "illegalAccessRoleForDefault",
            "role",
        ),
        (
            json!({"role": "reader", "scope": {"type": "user", "value": C}, "colour": 1}),
            "invalid",
            "aclrule.colour",
        ),
    ] {
        let answer = api.post(A, &acl, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        assert_eq!(answer.reason(), reason, "{body}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], 400);
        assert_eq!(
            answer.body.pointer("/error/errors/0/location"),
            Some(&json!(location)),
            "{body}: {}",
            answer.body
        );
    }
    let answer = api
        .patch(
            A,
            &rule_path("user:bob@example.com"),
            json!({"role": "boss"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // PUT needs the scope, and it must be the rule's own.
    let answer = api
        .put(
            A,
            &rule_path("user:bob@example.com"),
            json!({"role": "reader"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.reason(), "required");
    let answer = api
        .put(
            A,
            &rule_path("user:bob@example.com"),
            json!({"role": "reader", "scope": {"type": "user", "value": C}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Updating or deleting a rule that does not exist: 404.
    assert_not_found(
        &api.patch(
            A,
            &rule_path("user:eve@example.com"),
            json!({"role": "reader"}),
        )
        .await,
        "patch of a missing rule",
    );
    assert_not_found(
        &api.delete(A, &rule_path("user:eve@example.com")).await,
        "delete of a missing rule",
    );

    // Deleting bob's rule takes his access away.
    let answer = api.delete(A, &rule_path("user:Bob@example.com")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert_not_found(
        &api.get(A, &rule_path("user:bob@example.com")).await,
        "acl.get of a deleted rule",
    );
    assert_not_found(
        &api.get(B, &format!("calendars/{cal}/events")).await,
        "events.list after unsharing",
    );
    assert_not_found(
        &api.delete(A, &rule_path("user:bob@example.com")).await,
        "second delete",
    );
}

// CalendarListEntry.accessRole: "The effective access role that the authenticated user has on
// the calendar"; a calendar shared with a user joins their calendar list.
#[tokio::test]
async fn shared_calendars_join_the_sharees_calendar_list() {
    let api = Api::start().await;
    let team = api.new_calendar(A, "team").await;
    let notes = api.new_calendar(A, "notes").await;
    let (before, token, _) = api.calendar_list_all(B, "").await;
    assert_eq!(ids(&before), vec![B.to_owned()]);

    api.share_with(A, &team, B, "writer").await;
    api.share_with(A, A, B, "reader").await;
    api.share_with(A, &notes, B, "writerWithoutPrivateAccess")
        .await;
    // Domain and public rules give access but no list entry.
    api.share(
        A,
        &notes,
        json!({"type": "domain", "value": "example.com"}),
        "reader",
    )
    .await;

    let (list, _, _) = api.calendar_list_all(B, "").await;
    assert_eq!(list[0]["id"], B, "the sharee's own primary calendar first");
    assert_eq!(list[0]["primary"], true);
    assert_eq!(list[0]["accessRole"], "owner");
    let role_of = |items: &[Value], id: &str| {
        let entry = items
            .iter()
            .find(|e| e["id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} not listed: {items:?}"));
        assert!(entry.get("primary").is_none(), "{entry}");
        entry["accessRole"].as_str().unwrap().to_owned()
    };
    assert_eq!(list.len(), 4);
    assert_eq!(role_of(&list, &team), "writer");
    assert_eq!(role_of(&list, A), "reader");
    assert_eq!(role_of(&list, &notes), "writerWithoutPrivateAccess");
    assert_eq!(
        api.get(B, &format!("users/me/calendarList/{}", urlencode(&team)))
            .await
            .ok()["accessRole"],
        "writer"
    );
    // minAccessRole.
    let (writable, _, _) = api.calendar_list_all(B, "minAccessRole=writer").await;
    assert_eq!(ids(&writable), {
        let mut v = vec![B.to_owned(), team.clone()];
        v.sort();
        v
    });
    // The owner's list is unchanged: still the owner of each.
    let (own, _, _) = api.calendar_list_all(A, "").await;
    assert!(own.iter().all(|e| e["accessRole"] == "owner"), "{own:?}");
    assert_eq!(own.iter().filter(|e| e["primary"] == true).count(), 1);
    // A domain-only user has no entry.
    let (carol, _, _) = api.calendar_list_all(C, "").await;
    assert_eq!(ids(&carol), vec![C.to_owned()]);
    assert_not_found(
        &api.get(C, &format!("users/me/calendarList/{}", urlencode(&notes)))
            .await,
        "calendarList.get without an entry",
    );

    // Each share is a calendar list change for incremental sync.
    let (changes, token2, _) = api
        .calendar_list_all(B, &format!("syncToken={}", urlencode(&token)))
        .await;
    assert_eq!(ids(&changes), {
        let mut v = vec![A.to_owned(), team.clone(), notes.clone()];
        v.sort();
        v
    });
    // A role change and an unshare are changes too.
    api.patch(
        A,
        &format!(
            "calendars/{}/acl/{}",
            urlencode(&team),
            urlencode("user:bob@example.com")
        ),
        json!({"role": "reader"}),
    )
    .await
    .ok();
    let answer = api
        .delete(
            A,
            &format!("calendars/{A}/acl/{}", urlencode("user:bob@example.com")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let (changes, token3, _) = api
        .calendar_list_all(B, &format!("syncToken={}", urlencode(&token2)))
        .await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(role_of(&changes, &team), "reader");
    let removed = changes.iter().find(|e| e["id"] == json!(A)).unwrap();
    assert_eq!(removed["deleted"], true, "{removed}");
    let (list, _, _) = api.calendar_list_all(B, "").await;
    assert_eq!(list.len(), 3);
    assert_not_found(
        &api.get(B, &format!("users/me/calendarList/{A}")).await,
        "calendarList.get after unsharing",
    );
    // Nothing else changed.
    let (none, _, _) = api
        .calendar_list_all(B, &format!("syncToken={}", urlencode(&token3)))
        .await;
    assert!(none.is_empty(), "{none:?}");
    // Sharing again brings the entry back.
    api.share_with(A, A, B, "writer").await;
    let (changes, _, _) = api
        .calendar_list_all(B, &format!("syncToken={}", urlencode(&token3)))
        .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(role_of(&changes, A), "writer");
    assert!(changes[0].get("deleted").is_none());
    // The sharee can hide the entry (admin stand-in for calendarList writes).
    let hidden = api
        .admin(
            Method::POST,
            &format!("users/{B}/calendarList/{}", urlencode(&team)),
            json!({"hidden": true}),
        )
        .await;
    assert_eq!(hidden["hidden"], true);
    assert_eq!(hidden["accessRole"], "reader");
}

// resources.acl.list: maxResults ("By default the value is 100 entries. The page size can never
// be larger than 250 entries."), showDeleted ("Deleted ACLs are represented by role equal to
// \"none\"") and syncToken ("only entries that have changed since then [...] If the syncToken
// expires, the server will respond with a 410 GONE").
#[tokio::test]
async fn acl_list_pages_and_syncs() {
    let api = Api::start().await;
    for i in 0..5 {
        api.share_with(A, A, &format!("u{i}@example.com"), "reader")
            .await;
    }
    let (all, token, pages) = api.acl_all(A, "primary", "maxResults=2").await;
    assert_eq!(pages, 3);
    assert_eq!(all.len(), 6);
    let mut seen = ids(&all);
    seen.dedup();
    assert_eq!(seen.len(), 6);

    // Nothing changed: nothing returned.
    let (none, _, _) = api
        .acl_all(A, "primary", &format!("syncToken={}", urlencode(&token)))
        .await;
    assert!(none.is_empty(), "{none:?}");

    api.share_with(A, A, "u0@example.com", "writer").await;
    let answer = api
        .delete(
            A,
            &format!("calendars/primary/acl/{}", urlencode("user:u1@example.com")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let (changes, _, _) = api
        .acl_all(
            A,
            "primary",
            &format!("syncToken={}&maxResults=1", urlencode(&token)),
        )
        .await;
    let got: Vec<(String, String)> = changes
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("user:u0@example.com".to_owned(), "writer".to_owned()),
            ("user:u1@example.com".to_owned(), "none".to_owned()),
        ]
    );
    // Full listings leave deleted rules out unless showDeleted.
    let (plain, _, _) = api.acl_all(A, "primary", "").await;
    assert_eq!(plain.len(), 5);
    let (with_deleted, _, _) = api.acl_all(A, "primary", "showDeleted=true").await;
    assert_eq!(with_deleted.len(), 6);

    // Garbage and foreign tokens: 410; showDeleted=false with a token: 400.
    let answer = api.get(A, "calendars/primary/acl?syncToken=garbage").await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert_eq!(answer.reason(), "fullSyncRequired");
    let (_, bobs, _) = api.acl_all(B, "primary", "").await;
    let answer = api
        .get(
            A,
            &format!("calendars/primary/acl?syncToken={}", urlencode(&bobs)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::GONE);
    let answer = api
        .get(
            A,
            &format!(
                "calendars/primary/acl?showDeleted=false&syncToken={}",
                urlencode(&token)
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // Expiring the calendar's sync tokens expires ACL tokens too.
    api.admin(
        Method::POST,
        &format!("calendars/{A}/expire-sync-tokens"),
        json!({}),
    )
    .await;
    let answer = api
        .get(
            A,
            &format!("calendars/primary/acl?syncToken={}", urlencode(&token)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::GONE);
    // A page token of another query is a 400.
    let first = api.get(A, "calendars/primary/acl?maxResults=2").await.ok();
    let page = first["nextPageToken"].as_str().unwrap();
    let answer = api
        .get(
            A,
            &format!(
                "calendars/primary/acl?showDeleted=true&pageToken={}",
                urlencode(page)
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

// --- `fields` partial responses and gzip ------------------------------------------------------

/// An event with a bit of everything: description, attendees, add-on conference data.
fn rich_event(summary: &str) -> Value {
    let mut e = event(summary, "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z");
    e["description"] = json!("Agenda: <b>everything</b>");
    e["location"] = json!("Room 1");
    e["attendees"] = json!([
        {"email": "b@example.com", "displayName": "B", "responseStatus": "accepted"},
        {"email": "room@example.com", "resource": true}
    ]);
    e["conferenceData"] = add_on_conference();
    e
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn fields_masks_select_paths_groups_and_wildcards_on_every_json_answer() {
    let api = Api::start().await;
    let inserted = api.insert(A, rich_event("Rich")).await;
    let id = inserted["id"].as_str().unwrap().to_owned();
    let series = api.insert(A, weekly_series()).await;
    let sid = series["id"].as_str().unwrap().to_owned();
    let list = |mask: &str| format!("calendars/primary/events?fields={}", urlencode(mask));

    // events.list: top-level names, a group of items, nested paths inside it.
    let page = api
        .get(A, &list("nextSyncToken,items(id,summary,start/dateTime)"))
        .await
        .ok();
    assert_eq!(keys(&page), ["nextSyncToken", "items"], "{page}");
    let rich = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(id))
        .unwrap();
    assert_eq!(
        rich,
        &json!({"id": id, "summary": "Rich", "start": {"dateTime": "2026-12-01T10:00:00Z"}})
    );

    // Nested groups, through arrays: each attendee's email, the conference's id and entry URIs.
    let page = api
        .get(
            A,
            &list("items(id,attendees(email),conferenceData(conferenceId,entryPoints(uri)))"),
        )
        .await
        .ok();
    let rich = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(id))
        .unwrap();
    assert_eq!(
        rich,
        &json!({"id": id,
                "attendees": [{"email": "b@example.com"}, {"email": "room@example.com"}],
                "conferenceData": {"conferenceId": "meeting-42",
                                   "entryPoints": [{"uri": "https://meet.example.com/42"},
                                                   {"uri": "tel:+1-555-0100"}]}})
    );
    // The series has neither: only its id.
    let plain = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(sid))
        .unwrap();
    assert_eq!(plain, &json!({"id": sid}));

    // `a/b/c` deep paths, and `*` for every field of an object.
    let page = api
        .get(
            A,
            &list("items/conferenceData/conferenceSolution/key/type,items/start/*"),
        )
        .await
        .ok();
    let rich = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["start"]["dateTime"] == "2026-12-01T10:00:00Z")
        .unwrap();
    assert_eq!(
        rich["conferenceData"],
        json!({"conferenceSolution": {"key": {"type": "addOn"}}})
    );
    assert_eq!(rich["start"], inserted["start"]);
    assert_eq!(keys(rich), ["start", "conferenceData"]);
    let everything = api.get(A, &list("*")).await.ok();
    let unmasked = api.get(A, "calendars/primary/events").await.ok();
    assert_eq!(everything, unmasked);
    let items_star = api.get(A, &list("items(*)")).await.ok();
    assert_eq!(items_star["items"], unmasked["items"]);
    assert_eq!(keys(&items_star), ["items"]);

    // events.get, events.instances, a write's answer and calendarList.list take masks too.
    let got = api
        .get(
            A,
            &format!("calendars/primary/events/{id}?fields=id,etag,organizer/email"),
        )
        .await
        .ok();
    assert_eq!(
        got,
        json!({"etag": inserted["etag"], "id": id, "organizer": {"email": A}})
    );
    let instances = api
        .get(
            A,
            &format!(
                "calendars/primary/events/{sid}/instances?fields={}",
                urlencode("items(id,recurringEventId),nextSyncToken")
            ),
        )
        .await
        .ok();
    let first = &instances["items"][0];
    assert_eq!(keys(first), ["id", "recurringEventId"], "{first}");
    assert_eq!(first["recurringEventId"], json!(sid));
    let patched = api
        .patch(
            A,
            &format!("calendars/primary/events/{id}?fields=id,summary"),
            json!({"summary": "Renamed", "location": "Room 2"}),
        )
        .await
        .ok();
    assert_eq!(patched, json!({"id": id, "summary": "Renamed"}));
    let full = api
        .get(A, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    assert_eq!(
        full["location"], "Room 2",
        "the masked write happened whole"
    );
    let calendars = api
        .get(A, "users/me/calendarList?fields=items/id")
        .await
        .ok();
    assert_eq!(calendars, json!({"items": [{"id": A}]}));
    // An empty mask is no mask.
    assert_eq!(
        api.get(A, "calendars/primary/events?fields=").await.ok(),
        api.get(A, "calendars/primary/events").await.ok()
    );
    // Errors are never masked.
    let missing = api.get(A, "calendars/primary/events/nope?fields=id").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.reason(), "notFound");
}

#[tokio::test]
async fn bad_field_masks_are_400s_in_googles_envelope_and_run_nothing() {
    let api = Api::start().await;
    let inserted = api.insert(A, rich_event("Rich")).await;
    let id = inserted["id"].as_str().unwrap().to_owned();
    for (mask, named) in [
        // Unknown names, at the top, in a group, under a path, in a nested group.
        ("pagetoken,items(id)", "pagetoken"),
        ("items(id,nope)", "nope"),
        ("items/start/zone", "zone"),
        ("items(conferenceData(entryPoints(url)))", "url"),
        // A sub-selection of a string.
        ("items/summary/text", "text"),
        // Syntax: unbalanced parentheses, empty names, a wildcard inside a name.
        ("items(id", "items(id"),
        ("items(id))", ")"),
        ("items(,id)", ",id)"),
        ("items/", "items/"),
        ("it*ems", "it*ems"),
    ] {
        let answer = api
            .get(
                A,
                &format!("calendars/primary/events?fields={}", urlencode(mask)),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{mask}: {}",
            answer.body
        );
        let message = format!("Invalid field selection {named}");
        assert_eq!(
            answer.body,
            json!({"error": {
                "errors": [{"domain": "global", "reason": "invalidParameter", "message": message,
                            "locationType": "parameter", "location": "fields"}],
                "code": 400, "message": message}}),
            "{mask}"
        );
    }
    // events.get is checked against Event, not Events.
    let answer = api
        .get(A, &format!("calendars/primary/events/{id}?fields=items"))
        .await;
    assert_eq!(
        (answer.status, answer.reason(), answer.message()),
        (
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "Invalid field selection items"
        )
    );
    // A write with a bad mask is refused before it happens.
    let answer = api
        .patch(
            A,
            &format!("calendars/primary/events/{id}?fields=nope"),
            json!({"summary": "Changed"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let event = api
        .get(A, &format!("calendars/primary/events/{id}"))
        .await
        .ok();
    assert_eq!(event["summary"], "Rich");
    assert_eq!(event["etag"], inserted["etag"]);
}

/// One raw HTTP/1.1 exchange (no client library that could decode gzip on its own): the
/// status, the headers (lowercase names) and the body bytes as sent.
async fn raw_get(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut request = format!(
        "GET /calendar/v3/{path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer dev:{A}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = decoded;
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[tokio::test]
async fn gzip_needs_accept_encoding_and_gzip_in_the_user_agent() {
    let api = Api::start().await;
    for n in 0..20 {
        api.insert(A, rich_event(&format!("Event {n}"))).await;
    }
    let path = "calendars/primary/events";
    let gzip = [
        ("Accept-Encoding", "gzip"),
        ("User-Agent", "confsync-test/1 (gzip)"),
    ];
    let (status, plain_headers, plain) = raw_get(&api.base, path, &[]).await;
    assert_eq!(status, 200);
    assert!(header(&plain_headers, "content-encoding").is_empty());
    assert_eq!(header(&plain_headers, "vary"), ["Accept-Encoding"]);

    let (status, headers, body) = raw_get(&api.base, path, &gzip).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), ["gzip"]);
    assert_eq!(header(&headers, "vary"), ["Accept-Encoding"]);
    assert_eq!(
        header(&headers, "content-type"),
        ["application/json; charset=UTF-8"]
    );
    assert!(
        body.len() * 4 < plain.len(),
        "{} gzip bytes for {} plain",
        body.len(),
        plain.len()
    );
    // Two listings differ at most in their sync token, which carries the second it was issued.
    let listing = |bytes: &[u8]| {
        let mut value: Value = serde_json::from_slice(bytes).unwrap();
        value.as_object_mut().unwrap().remove("nextSyncToken");
        value
    };
    assert_eq!(listing(&gunzip(&body)), listing(&plain));
    if let Some(length) = header(&headers, "content-length").first() {
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }

    // Google's two conditions: one of them alone is not enough; q=0 refuses gzip.
    for headers in [
        vec![("Accept-Encoding", "gzip")],
        vec![
            ("Accept-Encoding", "gzip"),
            ("User-Agent", "confsync-test/1"),
        ],
        vec![("User-Agent", "confsync-test/1 (gzip)")],
        vec![("Accept-Encoding", "gzip;q=0"), ("User-Agent", "x (gzip)")],
        vec![("Accept-Encoding", "br"), ("User-Agent", "x (gzip)")],
    ] {
        let (status, answered, body) = raw_get(&api.base, path, &headers).await;
        assert_eq!(status, 200);
        assert!(
            header(&answered, "content-encoding").is_empty(),
            "{headers:?}"
        );
        assert_eq!(listing(&body), listing(&plain), "{headers:?}");
    }

    // With a mask: masked, then compressed.
    let masked = format!("{path}?fields={}", urlencode("items(id,summary)"));
    let (_, headers, body) = raw_get(&api.base, &masked, &gzip).await;
    assert_eq!(header(&headers, "content-encoding"), ["gzip"]);
    let decoded: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(decoded["items"].as_array().unwrap().len(), 20);
    assert!(
        decoded["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| keys(i) == ["id", "summary"])
    );

    // Errors are compressed too; a 304 has no body to compress.
    let (status, headers, body) = raw_get(&api.base, "calendars/primary/events/nope", &gzip).await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "content-encoding"), ["gzip"]);
    let error: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(error["error"]["errors"][0]["reason"], "notFound");
    let (status, headers, body) = raw_get(&api.base, &format!("{path}?fields=nope"), &gzip).await;
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "content-encoding"), ["gzip"]);
    let error: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert_eq!(error["error"]["errors"][0]["reason"], "invalidParameter");
    let event = api.insert(A, rich_event("Tagged")).await;
    let etag = event["etag"].as_str().unwrap();
    let (status, headers, body) = raw_get(
        &api.base,
        &format!("calendars/primary/events/{}", event["id"].as_str().unwrap()),
        &[gzip[0], gzip[1], ("If-None-Match", etag)],
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert!(header(&headers, "content-encoding").is_empty());
}
