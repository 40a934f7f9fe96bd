//! `/v1/admin` over HTTP: key scopes decide who may list and who may change; failed actions
//! are listed, retried and dropped; a calendar is resynced; keys are listed and revoked.

mod common;

use std::collections::BTreeMap;

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Change, Link};
use confsync_service::hash_api_key;
use confsync_store::{LinkBase, OutboxState, PlannedChange};
use serde_json::Value;

const ALICE: &str = "alice@example.com";
const ADDON: &str = "cs_admin-test-addon-key";
const ADMIN: &str = "cs_admin-test-admin-key";
const READER: &str = "cs_admin-test-read-key";

async fn call(r: &common::Running, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let response = r
        .http
        .request(method, format!("{}{path}", r.service))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A failed update for a conference of Alice's calendar (its id).
async fn failed_action(r: &common::Running, conference_id: &str) -> i64 {
    let spec = MeetingSpec {
        title: "Planning".into(),
        description: String::new(),
        start: When::from_key("2026-12-01T10:00:00Z").unwrap(),
        end: When::from_key("2026-12-01T11:00:00Z").unwrap(),
        time_zone: None,
        recurrence: Vec::new(),
        attendees: Vec::new(),
        organizer: Some(ALICE.into()),
    };
    let link = Link {
        conference_id: conference_id.into(),
        provider: "local".into(),
        calendar_id: ALICE.into(),
        event_id: format!("ev{conference_id}"),
        spec: spec.clone(),
        last_etag_seen: None,
        last_etag_written: None,
        occurrences: BTreeMap::new(),
        deleted: false,
        join_url: None,
    };
    let change = PlannedChange {
        link,
        base: LinkBase::New,
        actions: vec![Action::Update {
            spec,
            changes: vec![Change::Retitled],
        }],
        supersede_deletes: false,
        // Far off, so the service's drainer leaves it alone until the test fails it.
        not_before_ms: i64::MAX / 2,
    };
    r.store
        .commit_page(ALICE, &[change], &[], None, 1_000)
        .await
        .unwrap();
    let id = r.store.outbox_of(conference_id).await.unwrap()[0].id;
    r.store.fail(id, "provider said no", 2_000).await.unwrap();
    id
}

#[tokio::test]
async fn admin_routes_follow_key_scopes_and_change_what_they_say() {
    let r = common::start(ADDON, None).await;
    for (name, key, scope) in [("ops", ADMIN, "admin"), ("viewer", READER, "read-only")] {
        r.store
            .api_key_create_scoped(name, &hash_api_key(key), scope, 0)
            .await
            .unwrap();
    }
    let first = failed_action(&r, "mtgfirst").await;
    let second = failed_action(&r, "mtgsecond").await;

    // Listing: admin and read-only keys; not the add-on's key.
    let (status, listed) = call(
        &r,
        reqwest::Method::GET,
        "v1/admin/actions?state=failed",
        READER,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<i64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&first) && ids.contains(&second));
    assert_eq!(listed["items"][0]["lastError"], "provider said no");
    let (status, refused) = call(&r, reqwest::Method::GET, "v1/admin/actions", ADDON).await;
    assert_eq!(status, 403, "{refused}");
    // Bad input: a clear 400, nothing else.
    let (status, _) = call(
        &r,
        reqwest::Method::GET,
        "v1/admin/actions?state=bogus",
        ADMIN,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &r,
        reqwest::Method::GET,
        "v1/admin/actions?limit=100000",
        ADMIN,
    )
    .await;
    assert_eq!(status, 400);

    // Changes: only the admin key.
    let retry = format!("v1/admin/actions/{first}/retry");
    let (status, _) = call(&r, reqwest::Method::POST, &retry, READER).await;
    assert_eq!(status, 403);
    assert_eq!(
        r.store.outbox_of("mtgfirst").await.unwrap()[0].state,
        OutboxState::Failed
    );
    let (status, retried) = call(&r, reqwest::Method::POST, &retry, ADMIN).await;
    assert_eq!(status, 200, "{retried}");
    // The drainer runs it again now (the local provider has no meeting for it: whatever the
    // outcome, it was attempted afresh).
    let row = r.store.outbox_of("mtgfirst").await.unwrap().remove(0);
    assert!(row.attempts <= 1, "attempts counted afresh: {row:?}");

    let drop = format!("v1/admin/actions/{second}/drop");
    let (status, dropped) = call(&r, reqwest::Method::POST, &drop, ADMIN).await;
    assert_eq!(status, 200, "{dropped}");
    let row = r.store.outbox_of("mtgsecond").await.unwrap().remove(0);
    assert_eq!(row.state, OutboxState::Superseded);
    assert_eq!(row.last_error.as_deref(), Some("dropped by admin key ops"));
    let (status, _) = call(&r, reqwest::Method::POST, &drop, ADMIN).await;
    assert_eq!(status, 409, "dropped already");
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        "v1/admin/actions/999999/drop",
        ADMIN,
    )
    .await;
    assert_eq!(status, 404);

    // Resync: a known calendar gets a full sync; an unknown one is a 404.
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        &format!("v1/admin/calendars/{ALICE}/resync"),
        ADMIN,
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        "v1/admin/calendars/nobody@example.com/resync",
        ADMIN,
    )
    .await;
    assert_eq!(status, 404);

    // Keys: listed without secrets; revoked by name, after which the key no longer works.
    let (status, keys) = call(&r, reqwest::Method::GET, "v1/admin/keys", READER).await;
    assert_eq!(status, 200);
    let scopes: BTreeMap<String, String> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(scopes["addon"], "addon");
    assert_eq!(scopes["ops"], "admin");
    assert!(
        !keys.to_string().contains(ADMIN),
        "no secret in the listing"
    );
    let (status, _) = call(&r, reqwest::Method::DELETE, "v1/admin/keys/viewer", ADMIN).await;
    assert_eq!(status, 200);
    let (status, _) = call(&r, reqwest::Method::GET, "v1/admin/keys", READER).await;
    assert_eq!(status, 401, "a revoked key no longer authenticates");

    // A read-only key cannot act as the add-on.
    r.store
        .api_key_create_scoped(
            "viewer2",
            &hash_api_key("cs_admin-test-read-key-2"),
            "read-only",
            0,
        )
        .await
        .unwrap();
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        "cs_admin-test-read-key-2",
    )
    .await;
    assert_eq!(status, 403);
    // Unknown scopes are refused by the store.
    assert!(
        r.store
            .api_key_create_scoped("odd", &hash_api_key("cs_odd"), "root", 0)
            .await
            .is_err()
    );
}
