//! The `jitsi` adapter: local state in the store, and join links answered with tokens minted at
//! click time (checked here against Jitsi's JWT claims: aud, iss, sub, room, nbf, exp,
//! context.user).

mod common_rooms;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use common_rooms::{at, series, spec, unix};
use confsync_providers::jitsi::{JitsiConfig, JitsiProvider};
use confsync_providers::local::LocalProvider;
use confsync_providers::{ConferenceProvider, JoinAnswer, JoinRequest, ProviderError};
use confsync_store::Store;
use serde_json::{Value, json};

const APP_SECRET: &str = "jitsi-app-secret-0123456789";
const ROOM_SECRET: &str = "room-secret-0123456789abcdef";

fn config(jwt: Option<Value>) -> JitsiConfig {
    let mut c = json!({
        "base_url": "https://meet.example.com/",
        "public_url": "https://confsync.example.com/",
        "room_secret": ROOM_SECRET,
    });
    if let Some(jwt) = jwt {
        c["jwt"] = jwt;
    }
    serde_json::from_value(c).unwrap()
}

fn hs256() -> Option<Value> {
    Some(json!({"app_id": "confsync-app", "app_secret": APP_SECRET}))
}

async fn jitsi(jwt: Option<Value>) -> (Store, JitsiProvider) {
    let store = Store::memory().await.unwrap();
    let p = JitsiProvider::new(config(jwt), store.clone()).unwrap();
    (store, p)
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

fn guest(name: Option<&str>) -> JoinRequest {
    JoinRequest {
        host: false,
        name: name.map(str::to_owned),
    }
}

fn host() -> JoinRequest {
    JoinRequest {
        host: true,
        name: Some("Olga Organizer".into()),
    }
}

fn redirect(answer: JoinAnswer) -> String {
    match answer {
        JoinAnswer::Redirect(url) => url,
        JoinAnswer::Refused(why) => panic!("refused: {why}"),
    }
}

/// Splits a redirect into (room URL, header, claims, signing input, signature).
fn token(url: &str) -> (String, Value, Value, String, Vec<u8>) {
    let (room_url, jwt) = url.split_once("?jwt=").expect("a jwt parameter");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let decode =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    (
        room_url.to_owned(),
        decode(parts[0]),
        decode(parts[1]),
        format!("{}.{}", parts[0], parts[1]),
        URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    )
}

#[tokio::test]
async fn create_is_idempotent_and_the_room_is_neither_title_nor_id() {
    let (store, p) = jitsi(hs256()).await;
    let m = p.create(&meeting_spec(), "conf-1/create").await.unwrap();
    assert_eq!(p.create(&meeting_spec(), "conf-1/create").await.unwrap(), m);
    assert!(m.meeting_id.starts_with("jitsi-"), "{m:?}");
    assert_eq!(
        m.join_url,
        format!("https://confsync.example.com/join/{}", m.meeting_id)
    );
    let other = p.create(&meeting_spec(), "conf-2/create").await.unwrap();
    assert_ne!(other.meeting_id, m.meeting_id);
    let row = store.meeting(&m.meeting_id).await.unwrap().unwrap();
    let state: Value = serde_json::from_str(&row.spec_json).unwrap();
    let room = state["room"].as_str().unwrap().to_owned();
    assert_eq!(room.len(), 32);
    assert!(
        room.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(!m.meeting_id.contains(&room) && !room.contains("board"));
    assert_eq!(state["provider"], "jitsi");
    // The local join page can still read the row as a spec.
    let as_spec: confsync_providers::MeetingSpec = serde_json::from_str(&row.spec_json).unwrap();
    assert_eq!(as_spec, meeting_spec());
    // The same key with a different title: the same room (never derived from the title).
    let (_, p2) = jitsi(hs256()).await;
    let renamed = spec(
        "Other",
        at("2030-06-01T10:00:00Z"),
        at("2030-06-01T11:00:00Z"),
    );
    let m2 = p2.create(&renamed, "conf-1/create").await.unwrap();
    assert_eq!(
        m2.meeting_id, m.meeting_id,
        "deterministic from the key and secret"
    );
}

#[tokio::test]
async fn a_guest_gets_a_fresh_hs256_token_for_the_meeting_window() {
    let (_, p) = jitsi(hs256()).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let url = redirect(
        p.join_at(
            &m.meeting_id,
            &guest(Some("Gina")),
            now("2030-06-01T10:05:00Z"),
        )
        .await
        .unwrap(),
    );
    let (room_url, header, claims, input, signature) = token(&url);
    assert!(
        room_url.starts_with("https://meet.example.com/"),
        "{room_url}"
    );
    let room = room_url.rsplit('/').next().unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, APP_SECRET.as_bytes());
    aws_lc_rs::hmac::verify(&key, input.as_bytes(), &signature)
        .expect("signed with the app secret");
    assert_eq!(
        claims,
        json!({
            "aud": "jitsi",
            "iss": "confsync-app",
            "sub": "*",
            "room": room,
            "nbf": unix(at("2030-06-01T09:45:00Z")),
            "exp": unix(at("2030-06-01T12:00:00Z")),
            // lib-jitsi-meet doc/tokens.md: context.user fields must be strings.
            "context": {"user": {"name": "Gina", "moderator": "false"}},
        })
    );
    // The host is moderator; a guest without a name lets Jitsi ask for one.
    let url = redirect(
        p.join_at(&m.meeting_id, &host(), now("2030-06-01T10:05:00Z"))
            .await
            .unwrap(),
    );
    assert_eq!(token(&url).2["context"]["user"]["moderator"], "true");
    let url = redirect(
        p.join_at(&m.meeting_id, &guest(None), now("2030-06-01T10:05:00Z"))
            .await
            .unwrap(),
    );
    assert_eq!(
        token(&url).2["context"]["user"],
        json!({"moderator": "false"})
    );
}

/// Issue 14, item 10: the moderator flag is a string by default (lib-jitsi-meet's doc/tokens.md,
/// "Token Identifiers": numeric or other non-string types in context.user raise an exception);
/// `moderator_as_string = false` is the escape hatch for a Prosody plugin that reads a boolean.
#[tokio::test]
async fn the_moderator_flag_is_a_string_unless_configured_otherwise() {
    let (_, p) = jitsi(hs256()).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let at10 = now("2030-06-01T10:05:00Z");
    let url = redirect(p.join_at(&m.meeting_id, &host(), at10).await.unwrap());
    let user = token(&url).2["context"]["user"].clone();
    assert_eq!(user["moderator"], "true");
    assert!(
        user.as_object().unwrap().values().all(Value::is_string),
        "{user}"
    );

    let (_, p) = jitsi(Some(
        json!({"app_id": "confsync-app", "app_secret": APP_SECRET,
                                    "moderator_as_string": false}),
    ))
    .await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let url = redirect(p.join_at(&m.meeting_id, &host(), at10).await.unwrap());
    assert_eq!(token(&url).2["context"]["user"]["moderator"], true);
}

fn rsa_pem() -> (RsaKeyPair, String) {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der = key.as_der().unwrap();
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    (key, pem)
}

/// Issue 14, item 10: JaaS mode mints exactly what 8x8 documents
/// (developer.8x8.com/jaas/docs/api-keys-jwt and its backend samples): header alg RS256, kid
/// "<tenant>/<key id>", typ JWT; claims aud "jitsi", iss "chat", sub = the tenant
/// (vpaas-magic-cookie-...), room, nbf, exp, context.user with moderator "true"/"false". The
/// adapter used to send iss = app_id.
#[tokio::test]
async fn jaas_mode_mints_the_documented_header_and_claims() {
    const TENANT: &str = "vpaas-magic-cookie-1fc542a3e4414a44b2611668195e2bfe";
    let (key, pem) = rsa_pem();
    let mut c = json!({
        "base_url": format!("https://8x8.vc/{TENANT}"),
        "public_url": "https://confsync.example.com/",
        "room_secret": ROOM_SECRET,
        "jwt": {"mode": "jaas", "app_id": TENANT, "private_key": pem, "key_id": "4f4910"},
    });
    let store = Store::memory().await.unwrap();
    let p = JitsiProvider::new(serde_json::from_value(c.clone()).unwrap(), store).unwrap();
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let url = redirect(
        p.join_at(
            &m.meeting_id,
            &guest(Some("Gina")),
            now("2030-06-01T10:05:00Z"),
        )
        .await
        .unwrap(),
    );
    let (room_url, header, claims, input, signature) = token(&url);
    assert!(
        room_url.starts_with(&format!("https://8x8.vc/{TENANT}/")),
        "{room_url}"
    );
    let room = room_url.rsplit('/').next().unwrap();
    assert_eq!(
        header,
        json!({"alg": "RS256", "kid": format!("{TENANT}/4f4910"), "typ": "JWT"})
    );
    assert_eq!(
        claims,
        json!({
            "aud": "jitsi",
            "iss": "chat",
            "sub": TENANT,
            "room": room,
            "nbf": unix(at("2030-06-01T09:45:00Z")),
            "exp": unix(at("2030-06-01T12:00:00Z")),
            "context": {"user": {"name": "Gina", "moderator": "false"}},
        })
    );
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        key.public_key().as_ref(),
    )
    .verify(input.as_bytes(), &signature)
    .expect("RS256 signature verifies");

    // A key id given whole is the same; HS256, a foreign tenant or a base URL off the tenant
    // are refused with a message naming the setting.
    c["jwt"]["key_id"] = json!(format!("{TENANT}/4f4910"));
    let store = Store::memory().await.unwrap();
    assert!(JitsiProvider::new(serde_json::from_value(c.clone()).unwrap(), store).is_ok());
    for (field, value, needle) in [
        ("base_url", json!("https://8x8.vc/"), "base_url"),
        ("app_id", json!("my-app"), "app_id"),
        ("key_id", json!("vpaas-magic-cookie-other/4f4910"), "key_id"),
    ] {
        let mut bad = c.clone();
        if field == "base_url" {
            bad[field] = value;
        } else {
            bad["jwt"][field] = value;
        }
        let store = Store::memory().await.unwrap();
        let e = JitsiProvider::new(serde_json::from_value(bad).unwrap(), store)
            .err()
            .unwrap();
        assert!(e.contains(needle), "{field}: {e}");
    }
    let mut hs = c.clone();
    hs["jwt"] = json!({"mode": "jaas", "app_id": TENANT, "app_secret": APP_SECRET, "key_id": "k"});
    let store = Store::memory().await.unwrap();
    let e = JitsiProvider::new(serde_json::from_value(hs).unwrap(), store)
        .err()
        .unwrap();
    assert!(e.contains("RS256"), "{e}");
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_and_carry_the_key_id() {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der: Pkcs8V1Der = key.as_der().unwrap();
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let (_, p) = jitsi(Some(json!({
        "app_id": "vpaas-magic-cookie-abc",
        "private_key": pem,
        "key_id": "vpaas-magic-cookie-abc/4f4910",
        "audience": "jitsi",
        "subject": "vpaas-magic-cookie-abc",
        "moderator_as_string": true,
    })))
    .await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let url = redirect(
        p.join_at(&m.meeting_id, &host(), now("2030-06-01T10:00:00Z"))
            .await
            .unwrap(),
    );
    let (_, header, claims, input, signature) = token(&url);
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": "vpaas-magic-cookie-abc/4f4910"})
    );
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        key.public_key().as_ref(),
    )
    .verify(input.as_bytes(), &signature)
    .expect("RS256 signature verifies");
    assert_eq!(claims["sub"], "vpaas-magic-cookie-abc");
    // Unsure in providers.md: JaaS documents the moderator flag as a string.
    assert_eq!(claims["context"]["user"]["moderator"], "true");
    assert_eq!(claims["context"]["user"]["name"], "Olga Organizer");
}

#[tokio::test]
async fn joins_are_refused_when_cancelled_ended_or_not_open_yet() {
    let (_, p) = jitsi(hs256()).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let refused = |a: JoinAnswer| match a {
        JoinAnswer::Refused(why) => why,
        JoinAnswer::Redirect(_) => panic!("must be refused"),
    };
    assert_eq!(
        refused(
            p.join_at(&m.meeting_id, &guest(None), now("2030-06-01T12:00:01Z"))
                .await
                .unwrap()
        ),
        "this meeting has ended"
    );
    assert_eq!(
        refused(
            p.join_at(&m.meeting_id, &host(), now("2030-06-01T09:00:00Z"))
                .await
                .unwrap()
        ),
        "this meeting opens at 2030-06-01 09:45 UTC"
    );
    // A reschedule moves the window, same link.
    let moved = spec(
        "Board meeting",
        at("2030-06-01T13:00:00Z"),
        at("2030-06-01T14:00:00Z"),
    );
    assert_eq!(
        p.update(&m.meeting_id, &moved, "u")
            .await
            .unwrap()
            .as_deref(),
        Some(m.join_url.as_str())
    );
    let url = redirect(
        p.join_at(&m.meeting_id, &guest(None), now("2030-06-01T12:50:00Z"))
            .await
            .unwrap(),
    );
    assert_eq!(token(&url).2["exp"], unix(at("2030-06-01T15:00:00Z")));
    p.delete(&m.meeting_id, "d").await.unwrap();
    p.delete(&m.meeting_id, "d").await.unwrap(); // already deleted: done
    assert_eq!(
        refused(
            p.join_at(&m.meeting_id, &host(), now("2030-06-01T13:10:00Z"))
                .await
                .unwrap()
        ),
        "this meeting was cancelled"
    );
    assert!(matches!(
        p.update(&m.meeting_id, &moved, "u2").await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(matches!(
        p.join_at("jitsi-unknown", &host(), now("2030-06-01T13:10:00Z"))
            .await,
        Err(ProviderError::NotFound { .. })
    ));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let path = std::env::temp_dir().join(format!(
        "confsync-jitsi-test-{}-{}.db",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let location = path.to_str().unwrap().to_owned();
    let meeting = {
        let store = Store::open(&location).await.unwrap();
        let p = JitsiProvider::new(config(hs256()), store.clone()).unwrap();
        let m = p.create(&meeting_spec(), "k").await.unwrap();
        let later = spec(
            "Renamed",
            at("2030-07-01T10:00:00Z"),
            at("2030-07-01T11:00:00Z"),
        );
        p.update(&m.meeting_id, &later, "u").await.unwrap();
        store.close().await;
        m
    };
    let store = Store::open(&location).await.unwrap();
    let p = JitsiProvider::new(config(hs256()), store.clone()).unwrap();
    let url = redirect(
        p.join_at(
            &meeting.meeting_id,
            &guest(None),
            now("2030-07-01T10:30:00Z"),
        )
        .await
        .unwrap(),
    );
    assert_eq!(token(&url).2["exp"], unix(at("2030-07-01T12:00:00Z")));
    p.delete(&meeting.meeting_id, "d").await.unwrap();
    store.close().await;
    let store = Store::open(&location).await.unwrap();
    let p = JitsiProvider::new(config(hs256()), store.clone()).unwrap();
    assert_eq!(
        p.join_at(
            &meeting.meeting_id,
            &guest(None),
            now("2030-07-01T10:30:00Z")
        )
        .await
        .unwrap(),
        JoinAnswer::Refused("this meeting was cancelled".into())
    );
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{location}{suffix}"));
    }
}

#[tokio::test]
async fn a_series_mints_for_any_later_time_but_not_in_a_cancelled_occurrence() {
    let (_, p) = jitsi(hs256()).await;
    let weekly = series(
        "Weekly",
        at("2030-06-03T09:00:00Z"),
        at("2030-06-03T09:30:00Z"),
    );
    let m = p.create(&weekly, "s").await.unwrap();
    assert!(p.capabilities().occurrences);
    p.cancel_occurrence(&m.meeting_id, at("2030-06-10T09:00:00Z"), "c")
        .await
        .unwrap();
    p.update_occurrence(
        &m.meeting_id,
        at("2030-06-17T09:00:00Z"),
        at("2030-06-17T15:00:00Z"),
        at("2030-06-17T15:30:00Z"),
        "Weekly (moved)",
        "o",
    )
    .await
    .unwrap();
    let url = redirect(
        p.join_at(&m.meeting_id, &guest(None), now("2030-07-01T09:05:00Z"))
            .await
            .unwrap(),
    );
    let claims = token(&url).2;
    assert_eq!(claims["nbf"], unix(at("2030-06-03T08:45:00Z")));
    // One occurrence's window (15 min + 30 min + 60 min) from the click.
    assert_eq!(claims["exp"], unix(at("2030-07-01T10:50:00Z")));
    assert_eq!(
        p.join_at(&m.meeting_id, &guest(None), now("2030-06-10T09:10:00Z"))
            .await
            .unwrap(),
        JoinAnswer::Refused("this occurrence was cancelled".into())
    );
    redirect(
        p.join_at(&m.meeting_id, &guest(None), now("2030-06-17T15:10:00Z"))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn public_jitsi_redirects_to_the_plain_room() {
    let (_, p) = jitsi(None).await;
    let m = p.create(&meeting_spec(), "k").await.unwrap();
    let url = redirect(
        p.join_at(
            &m.meeting_id,
            &guest(Some("Zoë Q")),
            now("2030-06-01T10:00:00Z"),
        )
        .await
        .unwrap(),
    );
    assert!(url.starts_with("https://meet.example.com/"), "{url}");
    assert!(!url.contains("jwt"));
    assert!(
        url.ends_with("#userInfo.displayName=%22Zo%C3%AB%20Q%22"),
        "{url}"
    );
    // Through the trait, at the current time.
    let soon = Utc::now();
    let live = spec(
        "Now",
        confsync_providers::When::At(soon - chrono::TimeDelta::minutes(5)),
        confsync_providers::When::At(soon + chrono::TimeDelta::minutes(30)),
    );
    let n = p.create(&live, "live").await.unwrap();
    assert!(matches!(
        p.join(&n.meeting_id, &guest(None)).await.unwrap(),
        Some(JoinAnswer::Redirect(_))
    ));
}

#[tokio::test]
async fn another_providers_meetings_are_not_found() {
    let (store, p) = jitsi(hs256()).await;
    let local = LocalProvider::new(store.clone(), "https://confsync.example.com/");
    let m = local.create(&meeting_spec(), "k").await.unwrap();
    assert!(matches!(
        p.join_at(&m.meeting_id, &host(), now("2030-06-01T10:00:00Z"))
            .await,
        Err(ProviderError::NotFound { .. })
    ));
    // The same action key does not collide with the local provider's row.
    let j = p.create(&meeting_spec(), "k").await.unwrap();
    assert_ne!(j.meeting_id, m.meeting_id);
}

#[tokio::test]
async fn config_is_validated_without_quoting_secrets() {
    let store = Store::memory().await.unwrap();
    let make = |jwt: Option<Value>, extra: Value| {
        let mut c = json!({
            "public_url": "https://confsync.example.com/",
            "room_secret": ROOM_SECRET,
        });
        if let Some(j) = jwt {
            c["jwt"] = j;
        }
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::from_value::<JitsiConfig>(c)
    };
    let c = make(None, json!({})).unwrap();
    assert_eq!(c.base_url, "https://meet.jit.si");
    assert!(
        make(None, json!({"room": "x"})).is_err(),
        "unknown fields are errors"
    );
    let err = |c: JitsiConfig| JitsiProvider::new(c, store.clone()).err().unwrap();
    let e = err(make(None, json!({"public_url": "https://confsync.example.com"})).unwrap());
    assert!(e.contains("public_url"), "{e}");
    let e = err(make(
        Some(json!({"app_id": "a", "app_secret": APP_SECRET, "private_key": "x"})),
        json!({}),
    )
    .unwrap());
    assert!(e.contains("not both"), "{e}");
    let e = err(make(Some(json!({"app_id": "a"})), json!({})).unwrap());
    assert!(e.contains("app_secret"), "{e}");
    let bad_pem =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----";
    let e = err(make(
        Some(json!({"app_id": "a", "private_key": bad_pem})),
        json!({}),
    )
    .unwrap());
    assert!(e.contains("private_key") && !e.contains("c2VjcmV0"), "{e}");
    let e = err(make(None, json!({"room_prefix": "Has Space"})).unwrap());
    assert!(e.contains("room_prefix"), "{e}");
    let e = err(make(None, json!({"room_secret": "short"})).unwrap());
    assert!(e.contains("room_secret") && !e.contains("short\""), "{e}");
    let p = JitsiProvider::new(make(None, json!({})).unwrap(), store.clone()).unwrap();
    assert_eq!(p.name(), "jitsi");
}

#[tokio::test]
async fn the_doctor_check_signs_a_token_locally_and_reads_the_store() {
    let (_, open) = jitsi(None).await;
    let what = open.check().await.unwrap();
    assert!(what.contains("no JWT"), "{what}");
    let (store, p) = jitsi(hs256()).await;
    let what = p.check().await.unwrap();
    assert!(what.contains("HS256"), "{what}");
    assert!(!what.contains(APP_SECRET), "{what}");
    // A key that does not parse never gets this far: the adapter refuses it at start (tested
    // above); a store that does not answer fails the check.
    store.close().await;
    let err = p.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
}
