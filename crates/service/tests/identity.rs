//! Issue 14: the add-on API with identities configured, against ID tokens the emulator issues
//! the way Google does (RS256, JWKS at /oauth2/v3/certs). Calendars are reached here as with a
//! service account or a static token (as Alice, who owns her primary calendar): a user may act
//! on their own primary calendar, and on a calendar whose ACL lets them edit it; the organizer
//! alone gets the host link. Refused tokens and other users' calendars change
//! nothing, and forged key ids cost no fetches.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsync_core::plan::Recognizer;
use confsync_engine::EngineConfig;
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::local::LocalProvider;
use confsync_service::identity::{IdentitySettings, IdentityVerifier};
use confsync_service::{Scheduler, SchedulerConfig, Service, hash_api_key, router};
use confsync_store::Store;
use serde_json::{Value, json};

const KEY: &str = "cs_identity-test-key";
const AUD: &str = "1234-addon.apps.googleusercontent.com";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

struct Harness {
    http: reqwest::Client,
    emulator: String,
    service: String,
    store: Store,
    verifier: Arc<IdentityVerifier>,
}

async fn start(refetch_floor: Duration) -> Harness {
    let emulator = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let base = emulator.base_url().to_owned();
    std::mem::forget(emulator);
    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(KEY), 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/", listener.local_addr().unwrap());
    let provider = Arc::new(LocalProvider::new(store.clone(), &service_url));
    let client = Client::new(
        &base,
        Arc::new(StaticToken(format!("dev:{ALICE}"))),
        RetryPolicy::default(),
    )
    .unwrap();
    let engine = Arc::new(confsync_engine::Engine::new(
        store.clone(),
        Arc::new(GoogleCalendar { client }),
        provider.clone(),
        EngineConfig {
            recognizer: Recognizer {
                solution_names: vec!["confsync".into()],
                parameter_key: Some(confsync_engine::conference::DEFAULT_PARAMETER_KEY.into()),
            },
            ..EngineConfig::default()
        },
    ));
    let scheduler = Scheduler::start(
        engine,
        SchedulerConfig {
            debounce: Duration::ZERO,
            workers: 2,
            ..SchedulerConfig::default()
        },
    );
    let verifier = Arc::new(IdentityVerifier::new(IdentitySettings {
        certs_url: format!("{base}oauth2/v3/certs"),
        refetch_floor,
        ..IdentitySettings::google(vec![AUD.into(), "another-addon".into()])
    }));
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler,
        create_deadline: Duration::from_secs(10),
        channels: None,
        oauth: None,
        public_url: Some(service_url.clone()),
        budgets: None,
        host_key: Some(b"the identity tests' host key, 32+ chars".to_vec()),
        identity: Some(verifier.clone()),
    });
    tokio::spawn(confsync_service::serve(
        listener,
        router(service),
        confsync_service::ServerLimits::default(),
        std::future::pending(),
    ));
    Harness {
        http: reqwest::Client::new(),
        emulator: base,
        service: service_url,
        store,
        verifier,
    }
}

impl Harness {
    async fn token_with(&self, body: Value) -> String {
        let answer: Value = self
            .http
            .post(format!("{}emulator/identityTokens", self.emulator))
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["idToken"].as_str().unwrap().to_owned()
    }

    async fn token(&self, email: &str) -> String {
        self.token_with(json!({"email": email, "audience": AUD}))
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.service))
            .bearer_auth(key);
        if let Some(token) = token {
            request = request.header("X-Confsync-Identity", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, token: Option<&str>, calendar: &str, event: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": calendar, "eventId": event})),
            KEY,
            token,
        )
        .await
    }

    async fn sync(&self, token: &str, calendar: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("v1/calendars/{calendar}/sync"),
            None,
            KEY,
            Some(token),
        )
        .await
    }

    async fn get(&self, token: &str, id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("v1/conferences/{id}"),
            None,
            KEY,
            Some(token),
        )
        .await
    }

    async fn certs_served(&self) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}emulator/stats", self.emulator))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["requests"]["oauth2.certs"].as_u64().unwrap_or(0)
    }
}

fn refused(status: u16, answer: &Value, what: &str) {
    assert_eq!(status, 401, "{what}: {answer}");
    assert_eq!(
        answer["error"]["conferenceErrorType"], "PERMANENT",
        "{what}: {answer}"
    );
    assert!(answer["error"].get("authenticationUrl").is_none(), "{what}");
}

/// Re-encodes a token's header or claims (the signature no longer matches).
fn tampered(token: &str, header: impl Fn(&mut Value), claims: impl Fn(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    header(&mut h);
    claims(&mut c);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(h.to_string()),
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn a_verified_user_acts_on_their_own_calendar_only() {
    let h = start(Duration::from_secs(60)).await;
    let alice = h.token(ALICE).await;
    let bob = h.token(BOB).await;

    // Alice, on her calendar: the conference is made and the organizer gets the host link.
    let (status, conference) = h.create(Some(&alice), ALICE, "idevent001").await;
    assert_eq!(status, 200, "{conference}");
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    let (status, answer) = h.sync(&alice, ALICE).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = h.get(&alice, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["hostUrl"].as_str().unwrap().contains("host="),
        "{answer}"
    );
    assert!(answer.get("meeting").is_some());
    // A token for the add-on's other client id is as good.
    let other_client = h
        .token_with(json!({"email": ALICE, "audience": "another-addon"}))
        .await;
    assert_eq!(h.sync(&other_client, ALICE).await.0, 202);

    // Bob may not act on Alice's calendar, nor see her host link.
    let (status, answer) = h.create(Some(&bob), ALICE, "idevent002").await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "PERMANENT");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shared with for editing"),
        "{answer}"
    );
    let (status, answer) = h.sync(&bob, ALICE).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "PERMANENT");
    let (status, answer) = h.get(&bob, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("hostUrl").is_none(), "{answer}");
    assert!(answer.get("meeting").is_none(), "{answer}");
    assert_eq!(answer["conferenceId"], id.as_str());
    // Group calendars belong to no one user here: refused too.
    let (status, _) = h
        .create(Some(&alice), "team@group.calendar.google.com", "idevent003")
        .await;
    assert_eq!(status, 403);
    // Nothing was stored for the refusals.
    let calendars: Vec<String> = h
        .store
        .calendars()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.calendar_id)
        .collect();
    assert_eq!(calendars, [ALICE]);

    // Bob's own calendar, which has nothing of ours: 404 naming it (the add-on drops its trigger).
    let (status, answer) = h.sync(&bob, BOB).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["calendarId"], BOB);
    // The operator's status needs the key only.
    let (status, _) = h
        .call(reqwest::Method::GET, "v1/status", None, KEY, None)
        .await;
    assert_eq!(status, 200);
}

impl Harness {
    /// Alice shares her calendar (acl.insert, as its owner).
    async fn share(&self, rule: Value) {
        let answer = self
            .http
            .post(format!(
                "{}calendar/v3/calendars/{ALICE}/acl",
                self.emulator
            ))
            .bearer_auth(format!("dev:{ALICE}"))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }

    async fn metric(&self, line: &str) -> u64 {
        let body = self
            .http
            .get(format!("{}metrics", self.service))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn users_the_calendar_is_shared_with_for_editing_may_act_on_it() {
    const CAROL: &str = "carol@example.com";
    const DAN: &str = "dan@corp.example";
    const ERIN: &str = "erin@corp.example";
    let h = start(Duration::from_secs(60)).await;
    h.share(json!({"role": "writer", "scope": {"type": "user", "value": BOB}}))
        .await;
    h.share(json!({"role": "reader", "scope": {"type": "user", "value": CAROL}}))
        .await;
    h.share(json!({"role": "writer", "scope": {"type": "domain", "value": "corp.example"}}))
        .await;
    h.share(json!({"role": "freeBusyReader", "scope": {"type": "user", "value": ERIN}}))
        .await;
    let bob = h.token(BOB).await;

    // Bob can edit Alice's calendar: he creates a conference on it and triggers its sync, but
    // the host link and the meeting's details stay the organizer's.
    let (status, conference) = h.create(Some(&bob), ALICE, "sharedevent01").await;
    assert_eq!(status, 200, "{conference}");
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    let (status, answer) = h.sync(&bob, ALICE).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = h.get(&bob, &id).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("hostUrl").is_none(), "{answer}");
    assert!(answer.get("meeting").is_none(), "{answer}");
    let alice = h.token(ALICE).await;
    let (_, answer) = h.get(&alice, &id).await;
    assert!(answer["hostUrl"].is_string(), "{answer}");
    assert_eq!(h.sync(&alice, ALICE).await.0, 202);

    // Carol may only read it: refused, and nothing is stored for her.
    let carol = h.token(CAROL).await;
    let (status, answer) = h.create(Some(&carol), ALICE, "sharedevent02").await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "PERMANENT");
    assert_eq!(h.sync(&carol, ALICE).await.0, 403);
    assert!(
        !h.store
            .link_event_ids(ALICE)
            .await
            .unwrap()
            .contains(&"sharedevent02".to_owned())
    );

    // Dan edits through his domain's rule; Erin's own weaker rule does not stop the domain's
    // from applying, as in Calendar (the strongest rule wins).
    let dan = h.token(DAN).await;
    assert_eq!(h.sync(&dan, ALICE).await.0, 202);
    let erin = h.token(ERIN).await;
    assert_eq!(h.sync(&erin, ALICE).await.0, 202);

    // Bob's grant is remembered: a second call reads no ACL.
    let before = acl_reads(&h).await;
    assert_eq!(h.sync(&bob, ALICE).await.0, 202);
    assert_eq!(acl_reads(&h).await, before);

    assert_eq!(
        h.metric("confsync_calendar_access_total{decision=\"editor\"}")
            .await,
        5
    );
    assert_eq!(
        h.metric("confsync_calendar_access_total{decision=\"refused\"}")
            .await,
        2
    );
    assert!(
        h.metric("confsync_calendar_access_total{decision=\"owner\"}")
            .await
            == 1
    );
    assert!(
        h.metric("confsync_identity_tokens_total{outcome=\"verified\"}")
            .await
            >= 9
    );
}

async fn acl_reads(h: &Harness) -> u64 {
    let stats: Value = h
        .http
        .get(format!("{}emulator/stats", h.emulator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"]["calendar.acl.get"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn tokens_that_do_not_verify_are_refused_and_store_nothing() {
    let h = start(Duration::from_secs(60)).await;
    let alice = h.token(ALICE).await;
    let now = chrono::Utc::now().timestamp();
    let cases = [
        ("no token", None),
        ("not a JWT", Some("not-a-token".to_owned())),
        (
            "wrong audience",
            Some(
                h.token_with(json!({"email": ALICE, "audience": "someone-elses-client"}))
                    .await,
            ),
        ),
        (
            "expired",
            Some(
                h.token_with(json!({"email": ALICE, "audience": AUD, "issuedAt": now - 7200}))
                    .await,
            ),
        ),
        (
            "issued in the future",
            Some(
                h.token_with(json!({"email": ALICE, "audience": AUD, "issuedAt": now + 3600}))
                    .await,
            ),
        ),
        (
            "email not verified",
            Some(
                h.token_with(json!({"email": ALICE, "audience": AUD, "emailVerified": false}))
                    .await,
            ),
        ),
        (
            "another issuer",
            Some(
                h.token_with(json!({"email": ALICE, "audience": AUD, "issuer": "https://issuer.example.com"}))
                    .await,
            ),
        ),
        (
            "bad signature (claims changed)",
            Some(tampered(
                &h.token(BOB).await,
                |_| {},
                |c| c["email"] = json!(ALICE),
            )),
        ),
        (
            "alg none",
            Some(tampered(&alice, |hd| hd["alg"] = json!("none"), |_| {})),
        ),
        (
            "unknown kid",
            Some(tampered(&alice, |hd| hd["kid"] = json!("forged-kid"), |_| {})),
        ),
    ];
    for (what, token) in &cases {
        let (status, answer) = h.create(token.as_deref(), ALICE, "idevent010").await;
        refused(status, &answer, what);
        let (status, answer) = h
            .call(
                reqwest::Method::POST,
                &format!("v1/calendars/{ALICE}/sync"),
                None,
                KEY,
                token.as_deref(),
            )
            .await;
        refused(status, &answer, what);
    }
    // A good token with a wrong API key: the operator's mistake, PERMANENT.
    let (status, answer) = h
        .call(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": ALICE, "eventId": "idevent010"})),
            "cs_wrong",
            Some(&alice),
        )
        .await;
    refused(status, &answer, "wrong API key");
    assert!(
        h.store.calendars().await.unwrap().is_empty(),
        "nothing stored"
    );

    // Forged key ids make no fetches beyond the first (the refetch floor).
    let fetched = h.verifier.fetches();
    assert_eq!(fetched, 1, "one fetch so far");
    for i in 0..20 {
        let forged = tampered(&alice, |hd| hd["kid"] = json!(format!("kid-{i}")), |_| {});
        let (status, answer) = h.create(Some(&forged), ALICE, "idevent011").await;
        refused(status, &answer, "forged kid");
    }
    assert_eq!(h.verifier.fetches(), fetched);
    assert_eq!(h.certs_served().await, 1);
    // The good token still works, from the cache.
    let (status, answer) = h.create(Some(&alice), ALICE, "idevent012").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(h.certs_served().await, 1);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_the_floor_allows() {
    // A floor long enough that the steps below fit in it on a loaded machine.
    let h = start(Duration::from_secs(3)).await;
    let (status, answer) = h.sync(&h.token(ALICE).await, ALICE).await;
    assert_eq!(status, 404, "verified (the calendar is unknown): {answer}");
    assert_eq!(h.verifier.fetches(), 1);
    let old = h.token(ALICE).await;
    let rotated: Value = h
        .http
        .post(format!("{}emulator/identityKeys/rotate", h.emulator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(rotated["kid"].is_string());
    let fresh = h.token(ALICE).await;
    // Just fetched: the new kid waits for the floor.
    let (status, answer) = h.sync(&fresh, ALICE).await;
    refused(status, &answer, "kid unknown within the floor");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let (status, answer) = h.sync(&fresh, ALICE).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(h.verifier.fetches(), 2);
    // Tokens signed with the previous key still verify (it stays published).
    let (status, _) = h.sync(&old, ALICE).await;
    assert_eq!(status, 404);
    assert_eq!(h.verifier.fetches(), 2);
}
