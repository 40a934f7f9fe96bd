//! `/v1/admin` over HTTP: key scopes decide who may list and who may change; failed actions
//! are listed, retried and dropped; a calendar is resynced; keys are listed and revoked.

mod common;

use std::collections::BTreeMap;

use confsync_service::hash_api_key;
use confsync_store::OutboxState;
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

#[tokio::test]
async fn admin_routes_follow_key_scopes_and_change_what_they_say() {
    let r = common::start(ADDON, None).await;
    for (name, key, scope) in [("ops", ADMIN, "admin"), ("viewer", READER, "read-only")] {
        r.store
            .api_key_create_scoped(name, &hash_api_key(key), scope, 0)
            .await
            .unwrap();
    }
    let first = common::failed_action(&r, "mtgfirst").await;
    let second = common::failed_action(&r, "mtgsecond").await;

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

/// `POST /v1/admin/calendars/{id}/forget`: refused (409) while one of the calendar's actions
/// runs at the provider under a worker's claim; then the calendar's push channel is stopped at
/// Google, its state removed, its meetings kept; the add-on's sync call gets a 404 (the add-on
/// removes its trigger), and the add-on's next create registers it afresh. The provider-move
/// routes answer their counts and follow key scopes.
#[tokio::test]
async fn a_forgotten_calendar_is_no_longer_synced_and_comes_back_with_a_create() {
    let r = common::start(
        ADDON,
        Some(common::Push::new(None, std::time::Duration::from_secs(60))),
    )
    .await;
    for (name, key, scope) in [("ops", ADMIN, "admin"), ("viewer", READER, "read-only")] {
        r.store
            .api_key_create_scoped(name, &hash_api_key(key), scope, 0)
            .await
            .unwrap();
    }
    let create = async |event_id: &str| -> Value {
        r.http
            .post(format!("{}v1/conferences", r.service))
            .bearer_auth(ADDON)
            .json(&serde_json::json!({"calendarId": ALICE, "eventId": event_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let emulator_channels = async || -> Vec<Value> {
        let v: Value = r
            .http
            .get(format!("{}emulator/channels", r.calendar))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    };
    let conference = create("forget0001").await;
    let meeting_id = conference["conferenceId"].as_str().unwrap().to_owned();
    let mut active = 0;
    for _ in 0..200 {
        active = emulator_channels()
            .await
            .iter()
            .filter(|c| c["active"] == true)
            .count();
        if active == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(active, 1, "the calendar is watched");

    // An action of the calendar runs at the provider right now (another worker's claim).
    common::failed_action(&r, "mtgbusy").await;
    let busy = r.store.outbox_of("mtgbusy").await.unwrap()[0].id;
    assert!(r.store.retry_action(busy, i64::MAX / 2).await.unwrap());
    let claimed = r
        .store
        .claim_due("elsewhere", 100, i64::MAX / 2, 60_000)
        .await
        .unwrap();
    let claimed = claimed.into_iter().find(|i| i.id == busy).expect("claimed");
    let forget = format!("v1/admin/calendars/{ALICE}/forget");
    let (status, _) = call(&r, reqwest::Method::POST, &forget, READER).await;
    assert_eq!(status, 403, "an admin change");
    let (status, refused) = call(&r, reqwest::Method::POST, &forget, ADMIN).await;
    assert_eq!(status, 409, "{refused}");
    assert!(r.store.calendar(ALICE).await.unwrap().is_some());
    // The worker reports; nothing runs any more.
    assert!(
        r.store
            .retry_later(&claimed, i64::MAX / 2, "later", 3_000)
            .await
            .unwrap()
    );

    // The service's own drainer may be running one of the calendar's actions (the new
    // conference's first sync queued some) at this moment: that is a 409 too, to be tried
    // again, as the answer says.
    let (mut status, mut forgotten) = call(&r, reqwest::Method::POST, &forget, ADMIN).await;
    for _ in 0..100 {
        if status != 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (status, forgotten) = call(&r, reqwest::Method::POST, &forget, ADMIN).await;
    }
    assert_eq!(status, 200, "{forgotten}");
    assert_eq!(forgotten["forgotten"], true);
    assert_eq!(forgotten["meetingsKept"], 2, "{forgotten}");
    // The busy row, and whatever the conference's first sync queued meanwhile.
    assert!(
        forgotten["pendingActionsDropped"].as_u64() >= Some(1),
        "{forgotten}"
    );
    assert_eq!(forgotten["channelsStopped"], 1, "{forgotten}");
    assert!(
        emulator_channels()
            .await
            .iter()
            .all(|c| c["active"] != true),
        "the channel is stopped at Google"
    );
    assert!(r.store.calendar(ALICE).await.unwrap().is_none());
    assert!(r.store.link(&meeting_id).await.unwrap().is_none());
    let meeting = r.store.meeting(&meeting_id).await.unwrap().expect("kept");
    assert!(!meeting.deleted, "forgetting is not cancelling");
    // The add-on's trigger hears 404 for this calendar.
    let (status, answer) = call(
        &r,
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        ADDON,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["calendarId"], ALICE);
    let (status, _) = call(&r, reqwest::Method::POST, &forget, ADMIN).await;
    assert_eq!(status, 404, "forgotten already");

    // A new conference on it registers it afresh.
    let again = create("forget0002").await;
    assert!(again["conferenceId"].is_string(), "{again}");
    assert!(r.store.calendar(ALICE).await.unwrap().is_some());
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        ADDON,
    )
    .await;
    assert_eq!(status, 202);

    // The provider-move routes: counts for readers, queueing for admins.
    let (status, moves) = call(
        &r,
        reqwest::Method::GET,
        "v1/admin/provider/migration",
        READER,
    )
    .await;
    assert_eq!(status, 200, "{moves}");
    assert_eq!(moves["provider"], "local");
    assert_eq!(moves["toMove"], 0, "one provider: nothing to move");
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        "v1/admin/provider/migrate",
        READER,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        "v1/admin/provider/migrate?limit=0",
        ADMIN,
    )
    .await;
    assert_eq!(status, 400);
    let (status, dry) = call(
        &r,
        reqwest::Method::POST,
        "v1/admin/provider/migrate?dryRun=true",
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["dryRun"].clone(), dry["queuedNow"].clone()),
        (Value::Bool(true), 0.into())
    );
}
