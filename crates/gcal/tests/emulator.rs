//! The client against the Calendar v3 emulator over real HTTP: paging and sync tokens, error
//! classification, retries, conditional writes and lossless write-back.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ALICE, Harness, RecordingSleeper, RotatingToken, event_json, fast_retry};
use confsync_gcal::{ApiMethod, Client, Event, GcalError, ListParams, RetryPolicy, WatchRequest};
use serde_json::{Value, json};

async fn insert(client: &Client, calendar_id: &str, summary: &str, day: u32) -> Event {
    let event: Event = serde_json::from_value(event_json(summary, day)).unwrap();
    client
        .insert_event(calendar_id, &event, 0)
        .await
        .expect("insert succeeds")
}

#[tokio::test]
async fn a_full_listing_pages_then_an_incremental_listing_returns_only_changes() {
    let h = Harness::start().await;
    let client = h.client();
    let mut inserted = Vec::new();
    for day in 1..=5 {
        inserted.push(insert(&client, ALICE, &format!("E{day}"), day).await);
    }

    let mut params = ListParams {
        max_results: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    let sync_token = loop {
        let page = client.list_events(ALICE, &params).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().filter_map(|e| e.id.clone()));
        assert!(
            page.next_page_token.is_some() != page.next_sync_token.is_some(),
            "each page carries exactly one of the two tokens"
        );
        match page.next_page_token {
            Some(token) => params.page_token = Some(token),
            None => break page.next_sync_token.unwrap(),
        }
    };
    assert_eq!(pages, 3);
    seen.sort();
    let mut expected: Vec<String> = inserted.iter().map(|e| e.id.clone().unwrap()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let changed = &inserted[1];
    let deleted = &inserted[3];
    let changed_id = changed.id.as_deref().unwrap();
    let deleted_id = deleted.id.as_deref().unwrap();
    client
        .patch_event(ALICE, changed_id, &json!({"summary": "renamed"}), None, 0)
        .await
        .unwrap();
    client.delete_event(ALICE, deleted_id, None).await.unwrap();

    let incremental = ListParams {
        sync_token: Some(sync_token),
        max_results: Some(2),
        ..Default::default()
    };
    let page = client.list_events(ALICE, &incremental).await.unwrap();
    assert!(page.next_sync_token.is_some());
    let mut items = page.items;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(items.len(), 2);
    let renamed = items
        .iter()
        .find(|e| e.id.as_deref() == Some(changed_id))
        .unwrap();
    assert_eq!(renamed.summary.as_deref(), Some("renamed"));
    let tombstone = items
        .iter()
        .find(|e| e.id.as_deref() == Some(deleted_id))
        .unwrap();
    assert!(tombstone.is_cancelled());
    assert_eq!(client.request_count(ApiMethod::EventsList), 4);
}

#[tokio::test]
async fn an_expired_sync_token_is_full_sync_required() {
    let h = Harness::start().await;
    let client = h.client();
    insert(&client, ALICE, "E", 1).await;
    let first = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    let token = first.next_sync_token.expect("single page has a sync token");
    h.expire_sync_tokens(ALICE).await;

    let params = ListParams {
        sync_token: Some(token),
        ..Default::default()
    };
    let error = client.list_events(ALICE, &params).await.unwrap_err();
    assert!(
        matches!(error, GcalError::FullSyncRequired { .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), Some(410));
    assert_eq!(error.reason(), Some("fullSyncRequired"));
    assert_eq!(error.method(), Some("calendar.events.list"));
    assert_eq!(
        client.request_count(ApiMethod::EventsList),
        2,
        "410 is not retried"
    );
}

#[tokio::test]
async fn a_patch_with_a_stale_etag_is_precondition_failed() {
    let h = Harness::start().await;
    let client = h.client();
    let event = insert(&client, ALICE, "E", 1).await;
    let id = event.id.as_deref().unwrap();
    let stale = event.etag.clone().unwrap();
    let fresh = client
        .patch_event(ALICE, id, &json!({"summary": "v2"}), Some(&stale), 0)
        .await
        .unwrap();
    assert_ne!(fresh.etag.as_deref(), Some(stale.as_str()));

    let error = client
        .patch_event(ALICE, id, &json!({"summary": "v3"}), Some(&stale), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GcalError::PreconditionFailed { .. }),
        "{error:?}"
    );
    assert_eq!(
        (error.status(), error.reason()),
        (Some(412), Some("conditionNotMet"))
    );

    let current = client
        .patch_event(
            ALICE,
            id,
            &json!({"summary": "v3"}),
            fresh.etag.as_deref(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(current.summary.as_deref(), Some("v3"));
    assert_eq!(client.request_count(ApiMethod::EventsPatch), 3);
}

#[tokio::test]
async fn two_injected_503s_are_retried_and_the_third_attempt_succeeds() {
    let h = Harness::start().await;
    let client = h.client();
    h.fault(json!({"status": 503, "count": 2, "method": "calendar.events.list"}))
        .await;
    let page = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    assert!(page.next_sync_token.is_some());
    assert_eq!(client.request_count(ApiMethod::EventsList), 3);
    assert_eq!(h.served("calendar.events.list").await, 3);
}

#[tokio::test]
async fn retries_stop_at_max_attempts_with_the_last_error() {
    let h = Harness::start().await;
    let client = h.client_with(RetryPolicy {
        max_attempts: 3,
        ..fast_retry()
    });
    h.fault(json!({"status": 500, "count": 10, "method": "calendar.events.list"}))
        .await;
    let error = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!(
        (error.status(), error.reason()),
        (Some(500), Some("backendError"))
    );
    assert_eq!(h.served("calendar.events.list").await, 3);
}

#[tokio::test]
async fn a_403_rate_limit_is_retried() {
    let h = Harness::start().await;
    let client = h.client();
    let event = insert(&client, ALICE, "E", 1).await;
    h.fault(
        json!({"status": 403, "reason": "rateLimitExceeded", "count": 1,
                   "method": "calendar.events.get"}),
    )
    .await;
    let got = client
        .get_event(ALICE, event.id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(got.id, event.id);
    assert_eq!(client.request_count(ApiMethod::EventsGet), 2);
    assert_eq!(h.served("calendar.events.get").await, 2);
}

#[tokio::test]
async fn a_403_that_is_not_a_rate_limit_is_forbidden_and_not_retried() {
    let h = Harness::start().await;
    let client = h.client();
    h.fault(json!({"status": 403, "reason": "quotaExceeded", "count": 3,
                   "method": "calendar.events.list"}))
        .await;
    let error = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Forbidden { .. }), "{error:?}");
    assert_eq!(error.reason(), Some("quotaExceeded"));
    assert_eq!(h.served("calendar.events.list").await, 1);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let h = Harness::start().await;
    let client = h.client();
    h.fault(json!({"status": 400, "reason": "badRequest", "count": 3,
                   "method": "calendar.events.list"}))
        .await;
    let error = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::BadRequest { .. }), "{error:?}");
    assert_eq!(client.request_count(ApiMethod::EventsList), 1);
    assert_eq!(h.served("calendar.events.list").await, 1);

    // A real validation failure: the end before the start.
    let backwards: Event = serde_json::from_value(json!({
        "start": {"dateTime": "2026-12-01T11:00:00Z"},
        "end": {"dateTime": "2026-12-01T10:00:00Z"}
    }))
    .unwrap();
    let error = client.insert_event(ALICE, &backwards, 0).await.unwrap_err();
    assert!(matches!(error, GcalError::BadRequest { .. }), "{error:?}");
    assert_eq!(error.reason(), Some("timeRangeEmpty"));
    assert_eq!(client.request_count(ApiMethod::EventsInsert), 1);
}

#[tokio::test]
async fn retry_after_is_the_minimum_delay_between_attempts() {
    let h = Harness::start().await;
    let sleeper = Arc::new(RecordingSleeper::default());
    let client = Client::builder(
        h.base(),
        Arc::new(confsync_gcal::StaticToken(format!("dev:{ALICE}"))),
    )
    .retry(fast_retry())
    .sleeper(sleeper.clone())
    .build()
    .unwrap();
    h.fault(
        json!({"status": 429, "count": 1, "method": "calendar.events.list",
                   "retryAfter": 2}),
    )
    .await;
    client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    // Without Retry-After the delay is the policy's own (at most its 10 ms cap).
    h.fault(json!({"status": 503, "count": 1, "method": "calendar.events.list"}))
        .await;
    client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    let delays = sleeper.delays();
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert!(delays[0] >= Duration::from_secs(2), "{delays:?}");
    assert!(delays[1] <= Duration::from_millis(10), "{delays:?}");
    assert_eq!(client.request_count(ApiMethod::EventsList), 4);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once() {
    let h = Harness::start().await;
    let tokens = Arc::new(RotatingToken::new("expired", &format!("dev:{ALICE}")));
    let client = Client::new(h.base(), tokens.clone(), fast_retry()).unwrap();
    client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(tokens.invalidations.load(Ordering::SeqCst), 1);
    assert_eq!(client.request_count(ApiMethod::EventsList), 2);

    let revoked = Arc::new(RotatingToken::new("bad", "still-bad"));
    let client = Client::new(h.base(), revoked.clone(), fast_retry()).unwrap();
    let error = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Unauthorized { .. }), "{error:?}");
    assert_eq!(error.status(), Some(401));
    assert_eq!(revoked.invalidations.load(Ordering::SeqCst), 1);
    assert_eq!(client.request_count(ApiMethod::EventsList), 2);
    let text = error.to_string();
    assert!(
        !text.contains("still-bad") && !text.contains("Bearer"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_response_times_out_as_transient_and_is_retried() {
    let h = Harness::start().await;
    let client = Client::builder(
        h.base(),
        Arc::new(confsync_gcal::StaticToken(format!("dev:{ALICE}"))),
    )
    .retry(RetryPolicy {
        max_attempts: 1,
        ..fast_retry()
    })
    .timeout(Duration::from_millis(1000))
    .build()
    .unwrap();
    h.fault(json!({"latencyMs": 5000, "count": 1, "method": "calendar.events.list"}))
        .await;
    let error = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!(error.status(), None);
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(!error.to_string().contains("127.0.0.1"), "no URL: {error}");

    h.fault(json!({"latencyMs": 5000, "count": 1, "method": "calendar.events.list"}))
        .await;
    let retrying = Client::builder(
        h.base(),
        Arc::new(confsync_gcal::StaticToken(format!("dev:{ALICE}"))),
    )
    .retry(fast_retry())
    .timeout(Duration::from_millis(1000))
    .build()
    .unwrap();
    retrying
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(retrying.request_count(ApiMethod::EventsList), 2);
}

#[tokio::test]
async fn missing_and_already_deleted_events_are_told_apart() {
    let h = Harness::start().await;
    let client = h.client();
    let error = client.get_event(ALICE, "nosuchevent1").await.unwrap_err();
    assert!(matches!(error, GcalError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains("event nosuchevent1"), "{error}");

    let event = insert(&client, ALICE, "E", 1).await;
    let id = event.id.as_deref().unwrap();
    client.delete_event(ALICE, id, None).await.unwrap();
    let error = client.delete_event(ALICE, id, None).await.unwrap_err();
    assert!(
        matches!(error, GcalError::AlreadyDeleted { .. }),
        "{error:?}"
    );
    assert_eq!(
        (error.status(), error.reason()),
        (Some(410), Some("deleted"))
    );
    // A cancelled event is still readable with events.get.
    assert!(client.get_event(ALICE, id).await.unwrap().is_cancelled());
}

#[tokio::test]
async fn an_insert_with_an_existing_id_is_a_conflict() {
    let h = Harness::start().await;
    let client = h.client();
    let mut event: Event = serde_json::from_value(event_json("E", 1)).unwrap();
    event.id = Some("abcdef0123456789".into());
    client.insert_event(ALICE, &event, 0).await.unwrap();
    let error = client.insert_event(ALICE, &event, 0).await.unwrap_err();
    assert!(matches!(error, GcalError::Conflict { .. }), "{error:?}");
    assert_eq!(error.reason(), Some("duplicate"));
}

#[tokio::test]
async fn fields_the_model_does_not_type_survive_a_read_and_a_patch_back() {
    let h = Harness::start().await;
    let client = h.client();
    let mut body = event_json("Planning", 3);
    body["attachments"] = json!([{"fileUrl": "https://drive.google.com/file/d/abc/view",
                                  "title": "Agenda", "mimeType": "application/pdf"}]);
    body["source"] = json!({"title": "Ticket", "url": "https://tracker.example/T-1"});
    body["transparency"] = json!("transparent");
    body["guestsCanModify"] = json!(true);
    body["visibility"] = json!("private");
    body["extendedProperties"] = json!({"private": {"confsync.link": "L-1"},
                                        "shared": {"ticket": "T-1"}});
    body["attendees"] = json!([{"email": "bob@example.com", "displayName": "Bob",
                                "comment": "maybe", "additionalGuests": 1}]);
    body["conferenceData"] = json!({
        "conferenceId": "room-42",
        "conferenceSolution": {"key": {"type": "addOn"}, "name": "Example Meet",
                               "iconUri": "https://meet.example/icon.png"},
        "entryPoints": [{"entryPointType": "video", "uri": "https://meet.example/room-42",
                         "label": "meet.example/room-42", "passcode": "1234"},
                        {"entryPointType": "phone", "uri": "tel:+1-555-0100", "pin": "99",
                         "regionCode": "US", "entryPointFeatures": ["toll"]}],
        "parameters": {"addOnParameters": {"parameters": {"meetingId": "room-42"}}},
        "notes": "Join early"
    });
    let inserted = h.raw_insert(ALICE, body).await;
    let id = inserted["id"].as_str().unwrap().to_owned();

    // Reading loses nothing.
    let raw = h.raw_event(ALICE, &id).await;
    let mut event = client.get_event(ALICE, &id).await.unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), raw);
    assert!(event.extra.contains_key("attachments"));
    assert!(event.extra.contains_key("source"));
    let conference = event.conference_data.as_ref().unwrap();
    assert_eq!(conference.conference_id.as_deref(), Some("room-42"));
    assert_eq!(conference.video_uri(), Some("https://meet.example/room-42"));
    assert_eq!(
        conference.add_on_parameters().unwrap()["meetingId"],
        "room-42"
    );

    // Writing the whole event back (one typed change) keeps every other field.
    event.summary = Some("Planning (moved)".into());
    let etag = event.etag.clone();
    let patched = client
        .patch_event(
            ALICE,
            &id,
            &serde_json::to_value(&event).unwrap(),
            etag.as_deref(),
            1,
        )
        .await
        .unwrap();
    assert_eq!(patched.summary.as_deref(), Some("Planning (moved)"));
    let after = h.raw_event(ALICE, &id).await;
    for field in [
        "attachments",
        "source",
        "transparency",
        "guestsCanModify",
        "visibility",
        "extendedProperties",
        "attendees",
        "conferenceData",
        "start",
        "end",
    ] {
        assert_eq!(after[field], raw[field], "{field} survived the write-back");
    }
    assert_eq!(serde_json::to_value(&patched).unwrap(), after);
}

#[tokio::test]
async fn calendar_ids_are_percent_encoded_in_paths() {
    let h = Harness::start().await;
    let client = h.client();
    let calendar = h
        .admin(
            &format!("users/{ALICE}/calendars"),
            json!({"summary": "Team #1"}),
        )
        .await;
    let calendar_id = calendar["id"].as_str().unwrap().to_owned();
    assert!(calendar_id.contains('@'));
    let event = insert(&client, &calendar_id, "In team", 2).await;
    let page = client
        .list_events(&calendar_id, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, event.id);
    let primary = client
        .list_events(ALICE, &ListParams::default())
        .await
        .unwrap();
    assert!(primary.items.is_empty());
    let error = client
        .list_events(
            "en.usa#holiday@group.v.calendar.google.com",
            &ListParams::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn a_watch_channel_opens_and_stops() {
    let h = Harness::start().await;
    let client = h.client();
    let mut request = WatchRequest::new("confsync-ch-1", "http://127.0.0.1:9/hook");
    request.token = Some("calendar=alice".into());
    request.ttl_seconds = Some(3600);
    let channel = client.watch(ALICE, &request).await.unwrap();
    assert_eq!(channel.id.as_deref(), Some("confsync-ch-1"));
    assert_eq!(channel.token.as_deref(), Some("calendar=alice"));
    let resource_id = channel.resource_id.clone().expect("resourceId");
    assert!(channel.expires_at().is_some());

    client
        .stop_channel("confsync-ch-1", &resource_id)
        .await
        .unwrap();
    let channels: Value = h
        .http
        .get(format!("{}emulator/channels", h.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(channels["items"][0]["active"], json!(false));
    assert_eq!(client.request_count(ApiMethod::EventsWatch), 1);
    assert_eq!(client.request_count(ApiMethod::ChannelsStop), 1);
}

/// A masked listing from the emulator (gzip-encoded, since the client asks the way Google wants)
/// pages with its tokens and carries only the named fields.
#[tokio::test]
async fn a_masked_listing_pages_and_carries_only_the_named_fields() {
    let h = Harness::start().await;
    let client = h.client();
    for day in 1..=5 {
        insert(&client, ALICE, &format!("E{day}"), day).await;
    }
    let mut params = ListParams {
        max_results: Some(2),
        fields: Some("nextPageToken,nextSyncToken,items(id,etag,start/dateTime)".into()),
        ..Default::default()
    };
    let mut items = Vec::new();
    let sync_token = loop {
        let page = client.list_events_raw(ALICE, &params).await.unwrap();
        items.extend(page.items);
        match (page.next_page_token, page.next_sync_token) {
            (Some(next), None) => params.page_token = Some(next),
            (None, Some(sync)) => break sync,
            other => panic!("exactly one token per page: {other:?}"),
        }
    };
    assert_eq!(items.len(), 5);
    for item in &items {
        let value: Value = serde_json::from_str(item.get()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["etag", "id", "start"], "{value}");
        assert_eq!(value["start"].as_object().unwrap().len(), 1, "{value}");
    }
    // The mask does not bind the tokens: an unmasked incremental listing takes the token.
    let page = client
        .list_events(
            ALICE,
            &ListParams {
                sync_token: Some(sync_token),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty());
    // A bad mask is Google's 400, not retried.
    let error = client
        .list_events_raw(
            ALICE,
            &ListParams {
                fields: Some("items(id,nope)".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert_eq!(error.reason(), Some("invalidParameter"));
    assert!(
        error.to_string().contains("Invalid field selection nope"),
        "{error}"
    );
}
