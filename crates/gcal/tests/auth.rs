//! Google OAuth against the emulator's `/token` (outside dev mode, so keys must be registered and
//! tokens must be real): the service account's JWT-bearer grant with domain-wide delegation,
//! caching and single-flight refreshes, the authorization code with PKCE, refresh tokens,
//! revocation (`invalid_grant`, once, without a retry storm), transient failures of the token
//! endpoint, and refresh tokens encrypted at rest.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{event_json, fast_retry};
use confsync_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use confsync_gcal::auth::CALENDAR_SCOPE;
use confsync_gcal::{
    AuthCodeFlow, AuthError, CipherError, Client, Event, GcalError, ListParams, RefreshTokenTokens,
    ServiceAccountKey, ServiceAccountTokens, TokenCipher, TokenSource, is_invalid_grant,
};
use serde_json::{Value, json};

const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const SERVICE_ACCOUNT: &str = "confsync@project.iam.gserviceaccount.com";
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/google/callback";
const CLIENT_ID: &str = "confsync-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "client-secret-value";

/// An emulator that accepts only registered keys and issued tokens.
async fn emulator() -> RunningEmulator {
    Emulator::new(EmulatorConfig {
        dev_mode: false,
        ..Default::default()
    })
    .spawn("127.0.0.1:0")
    .await
    .expect("emulator starts")
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A new RSA key: the key file Google would issue for `client_email` (token_uri = `token_uri`)
/// and the public key as SPKI PEM.
fn service_account(client_email: &str, token_uri: &str) -> (String, String) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("key generated");
    let pkcs8 = pair.as_der().expect("PKCS#8");
    let spki = pair.public_key().as_der().expect("SPKI");
    let key_file = json!({
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
        "client_email": client_email,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    });
    (key_file.to_string(), pem("PUBLIC KEY", spki.as_ref()))
}

async fn admin(base: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}emulator/{path}"))
        .json(&body)
        .send()
        .await
        .expect("admin request sent");
    assert!(
        response.status().is_success(),
        "admin {path}: {}",
        response.status()
    );
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn register(base: &str, client_email: &str, public_key_pem: &str) {
    admin(
        base,
        "service-accounts",
        json!({"clientEmail": client_email, "publicKeyPem": public_key_pem}),
    )
    .await;
}

/// Calendar requests the emulator served for one method.
async fn served(base: &str, method: &str) -> u64 {
    let stats: Value = reqwest::get(format!("{base}emulator/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"][method].as_u64().unwrap_or(0)
}

fn client(base: &str, tokens: Arc<dyn TokenSource>) -> Client {
    Client::new(base, tokens, fast_retry()).expect("client builds")
}

async fn insert(client: &Client, calendar_id: &str, summary: &str) -> Event {
    let event: Event = serde_json::from_value(event_json(summary, 3)).unwrap();
    client
        .insert_event(calendar_id, &event, 0)
        .await
        .expect("insert succeeds")
}

/// A proxy in front of the emulator's `/token` that counts requests and can answer 503 (an
/// HTML page, like a front end would) to the next `fail_next` of them.
struct TokenProxy {
    url: String,
    requests: Arc<AtomicU64>,
    fail_next: Arc<AtomicU64>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    requests: Arc<AtomicU64>,
    fail_next: Arc<AtomicU64>,
}

async fn forward(State(state): State<ProxyState>, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>503 Service Unavailable</body></html>",
        )
            .into_response();
    }
    let answer = state
        .http
        .post(&state.upstream)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("emulator answers");
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let bytes = answer.bytes().await.unwrap();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

impl TokenProxy {
    async fn start(emulator_base: &str) -> TokenProxy {
        let requests = Arc::new(AtomicU64::new(0));
        let fail_next = Arc::new(AtomicU64::new(0));
        let state = ProxyState {
            upstream: format!("{emulator_base}token"),
            http: reqwest::Client::new(),
            requests: requests.clone(),
            fail_next: fail_next.clone(),
        };
        let router = Router::new()
            .route("/token", post(forward))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TokenProxy {
            url,
            requests,
            fail_next,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn flow(base: &str, token_uri: &str) -> AuthCodeFlow {
    AuthCodeFlow {
        auth_uri: format!("{base}o/oauth2/v2/auth"),
        token_uri: token_uri.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        redirect_uri: REDIRECT_URI.into(),
        scopes: vec![CALENDAR_SCOPE.into()],
        http: reqwest::Client::new(),
    }
}

/// Follows the authorization URL as a browser would (the emulator signs `login_hint` in at
/// once) and returns the callback's `code` and `state`.
async fn authorize(url: &str) -> (String, String) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(url).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        302,
        "{:?}",
        response.text().await
    );
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let callback = reqwest::Url::parse(&location).unwrap();
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    };
    (param("code"), param("state"))
}

#[tokio::test]
async fn a_service_account_impersonating_bob_reads_and_writes_bobs_calendar() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let (key_file, public_pem) = service_account(SERVICE_ACCOUNT, &format!("{base}token"));
    register(base, SERVICE_ACCOUNT, &public_pem).await;
    let key = ServiceAccountKey::from_json(&key_file).unwrap();
    assert_eq!(key.client_email(), SERVICE_ACCOUNT);
    assert_eq!(key.private_key_id(), Some("0123456789abcdef"));
    let tokens = Arc::new(ServiceAccountTokens::new(
        key,
        Some(BOB.into()),
        vec![CALENDAR_SCOPE.into()],
        reqwest::Client::new(),
    ));
    let client = client(base, tokens.clone());

    let page = client
        .list_events(BOB, &ListParams::default())
        .await
        .expect("bob's primary calendar lists");
    assert!(page.items.is_empty());
    let event = insert(&client, BOB, "Delegated").await;
    assert_eq!(
        event.creator.and_then(|c| c.email).as_deref(),
        Some(BOB),
        "the token acts as bob"
    );
    let page = client
        .list_events(BOB, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(tokens.token_requests(), 1, "one token for three calls");

    // Cached: the same token without a request, until invalidated.
    let first = tokens.token().await.unwrap();
    assert_eq!(tokens.token().await.unwrap(), first);
    assert_eq!(tokens.token_requests(), 1);
    tokens.invalidate();
    let second = tokens.token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(tokens.token_requests(), 2);
    assert!(!tokens.needs_reauthorization());
    let debug = format!("{tokens:?}");
    assert!(
        !debug.contains(&second) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let (key_file, public_pem) = service_account(SERVICE_ACCOUNT, &format!("{base}token"));
    register(base, SERVICE_ACCOUNT, &public_pem).await;
    let tokens = Arc::new(ServiceAccountTokens::new(
        ServiceAccountKey::from_json(&key_file).unwrap(),
        Some(BOB.into()),
        vec![CALENDAR_SCOPE.into()],
        reqwest::Client::new(),
    ));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let tokens = tokens.clone();
            tokio::spawn(async move { tokens.token().await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for handle in handles {
        seen.push(handle.await.unwrap());
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "every caller got the same token");
    assert_eq!(tokens.token_requests(), 1);
}

#[tokio::test]
async fn an_unregistered_or_foreign_key_is_refused() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let token_uri = format!("{base}token");

    // Never registered: 401 invalid_client, classified, not a revoked grant.
    let (key_file, _) = service_account("stranger@project.iam.gserviceaccount.com", &token_uri);
    let tokens = ServiceAccountTokens::new(
        ServiceAccountKey::from_json(&key_file).unwrap(),
        Some(BOB.into()),
        vec![CALENDAR_SCOPE.into()],
        reqwest::Client::new(),
    );
    let error = tokens.token().await.unwrap_err();
    assert!(matches!(error, GcalError::Unauthorized { .. }), "{error:?}");
    assert_eq!(error.reason(), Some("invalid_client"));
    assert_eq!(error.status(), Some(401));
    assert!(!is_invalid_grant(&error));
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(text.contains("oauth2.token"), "{text}");
    assert!(!text.contains("eyJ"), "no assertion in the message: {text}");
    assert!(!tokens.needs_reauthorization());
    assert_eq!(tokens.token_requests(), 1, "not retried");

    // Registered, but the assertion is signed by another key: invalid_grant, remembered for the
    // cooldown (no request), asked again after it.
    let (_, registered_pem) = service_account(SERVICE_ACCOUNT, &token_uri);
    register(base, SERVICE_ACCOUNT, &registered_pem).await;
    let (other_key_file, _) = service_account(SERVICE_ACCOUNT, &token_uri);
    let tokens = ServiceAccountTokens::new(
        ServiceAccountKey::from_json(&other_key_file).unwrap(),
        Some(BOB.into()),
        vec![CALENDAR_SCOPE.into()],
        reqwest::Client::new(),
    );
    let error = tokens.access_token().await.unwrap_err();
    let AuthError::InvalidGrant { context } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(context.status, Some(400));
    assert!(
        context.message.contains("Invalid JWT Signature"),
        "{context}"
    );
    assert!(tokens.needs_reauthorization());
    assert!(tokens.access_token().await.unwrap_err().is_invalid_grant());
    assert_eq!(tokens.token_requests(), 1, "remembered, not asked again");
    let tokens = tokens.with_invalid_grant_cooldown(Duration::ZERO);
    assert!(tokens.access_token().await.unwrap_err().is_invalid_grant());
    assert_eq!(tokens.token_requests(), 2, "asked again after the cooldown");
}

#[tokio::test]
async fn the_authorization_code_flow_yields_a_refresh_token_until_the_user_revokes_it() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let proxy = TokenProxy::start(base).await;
    let flow = flow(base, &proxy.url);

    // /oauth/google/start: the browser goes to Google, comes back with code and state.
    let (url, verifier) = flow.start("state-123", Some(CAROL)).unwrap();
    let (code, state) = authorize(&url).await;
    assert_eq!(state, "state-123");

    // /oauth/google/callback: exchange the code, keep the refresh token encrypted.
    let grant = flow
        .exchange(&code, &verifier)
        .await
        .expect("code exchanged");
    assert_eq!(proxy.requests(), 1);
    let refresh_token = grant.refresh_token.clone().expect("a refresh token");
    assert_eq!(grant.scope.as_deref(), Some(CALENDAR_SCOPE));
    assert!(grant.has_scopes(&[CALENDAR_SCOPE.to_owned()]));
    assert!(grant.expires_in > Duration::from_secs(3000));
    let debug = format!("{grant:?}");
    assert!(!debug.contains(&refresh_token) && !debug.contains(&grant.access_token));
    let cipher = TokenCipher::from_base64(&TokenCipher::generate_key().unwrap()).unwrap();
    let stored = cipher.encrypt(&refresh_token, CAROL).unwrap();
    assert!(!stored.contains(&refresh_token));

    // Later: a token source from the stored refresh token.
    let tokens = Arc::new(
        flow.token_source(cipher.decrypt(&stored, CAROL).unwrap())
            .with_account(CAROL),
    );
    let client = client(base, tokens.clone());
    insert(&client, CAROL, "Mine").await;
    let page = client
        .list_events(CAROL, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(proxy.requests(), 2, "one refresh for both calls");
    assert_eq!(tokens.token_requests(), 1);

    // The user revokes access: the API answers 401, the client asks for a new token once, the
    // token endpoint answers invalid_grant, and that is the end of it.
    admin(base, &format!("users/{CAROL}/revoke"), json!({})).await;
    let lists_before = served(base, "calendar.events.list").await;
    let error = client
        .list_events(CAROL, &ListParams::default())
        .await
        .unwrap_err();
    assert!(is_invalid_grant(&error), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(error.reason(), Some("invalid_grant"));
    assert!(
        error.to_string().contains(CAROL),
        "the account is named: {error}"
    );
    assert!(!error.to_string().contains(&refresh_token));
    assert_eq!(proxy.requests(), 3, "exactly one token request for it");
    assert!(tokens.needs_reauthorization());
    assert_eq!(served(base, "calendar.events.list").await, lists_before + 1);

    // No retry storm: later calls fail at once, without a token request or an API call.
    for _ in 0..3 {
        let again = client
            .list_events(CAROL, &ListParams::default())
            .await
            .unwrap_err();
        assert!(is_invalid_grant(&again));
    }
    assert_eq!(proxy.requests(), 3);
    assert_eq!(served(base, "calendar.events.list").await, lists_before + 1);

    // Re-authorisation gives a new refresh token that works.
    let (url, verifier) = flow.start("state-456", Some(CAROL)).unwrap();
    let (code, _) = authorize(&url).await;
    let grant = flow.exchange(&code, &verifier).await.unwrap();
    let fresh = flow
        .token_source(grant.refresh_token.unwrap())
        .with_access_token(grant.access_token, grant.expires_in);
    let client = Client::new(base, Arc::new(fresh), fast_retry()).unwrap();
    assert_eq!(
        client
            .list_events(CAROL, &ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        proxy.requests(),
        4,
        "the exchange; the seeded token needs no refresh"
    );
}

#[tokio::test]
async fn a_wrong_verifier_or_a_used_code_is_invalid_grant() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let flow = flow(base, &format!("{base}token"));
    let (url, _) = flow.start("s", Some(CAROL)).unwrap();
    let (code, _) = authorize(&url).await;
    let (_, other_verifier) = flow.start("t", Some(CAROL)).unwrap();
    let error = flow.exchange(&code, &other_verifier).await.unwrap_err();
    assert!(error.is_invalid_grant(), "{error:?}");
    assert!(!error.to_string().contains(other_verifier.secret()));

    let (url, verifier) = flow.start("s", Some(CAROL)).unwrap();
    let (code, _) = authorize(&url).await;
    flow.exchange(&code, &verifier).await.unwrap();
    let reused = flow.exchange(&code, &verifier).await.unwrap_err();
    assert!(reused.is_invalid_grant(), "{reused:?}");
}

#[tokio::test]
async fn a_transient_token_endpoint_failure_is_retried_once() {
    let emulator = emulator().await;
    let base = emulator.base_url();
    let proxy = TokenProxy::start(base).await;
    let issued = admin(base, "tokens", json!({"email": BOB})).await;
    let refresh_token = issued["refresh_token"].as_str().unwrap().to_owned();
    let tokens = RefreshTokenTokens::new(
        proxy.url.clone(),
        CLIENT_ID,
        None,
        refresh_token,
        reqwest::Client::new(),
    )
    .with_retry_backoff(Duration::from_millis(5));

    proxy.fail_next.store(1, Ordering::SeqCst);
    let token = tokens.token().await.expect("the retry succeeds");
    assert!(token.starts_with("ya29."));
    assert_eq!(proxy.requests(), 2);

    tokens.invalidate();
    proxy.fail_next.store(2, Ordering::SeqCst);
    let error = tokens.token().await.unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!(error.status(), Some(503));
    assert_eq!(proxy.requests(), 4, "one retry, no more");
    assert!(
        !tokens.needs_reauthorization(),
        "a transient failure is not remembered"
    );
    assert!(tokens.token().await.is_ok());
    assert_eq!(proxy.requests(), 5);
}

#[test]
fn refresh_tokens_at_rest_are_sealed_to_their_account_and_key() {
    let key = TokenCipher::generate_key().unwrap();
    let cipher = TokenCipher::from_base64(&key).unwrap();
    let refresh_token = "1//emu-refresh-token-value";
    let sealed = cipher.encrypt(refresh_token, CAROL).unwrap();
    assert!(!sealed.contains("refresh"));
    assert_eq!(cipher.decrypt(&sealed, CAROL).unwrap(), refresh_token);

    // Any changed character is detected.
    for position in [0, sealed.len() / 2, sealed.len() - 2] {
        let mut tampered: Vec<char> = sealed.chars().collect();
        tampered[position] = if tampered[position] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(
            cipher.decrypt(&tampered, CAROL),
            Err(CipherError::Rejected),
            "position {position}"
        );
    }
    // Another account's row, another key, a truncated value.
    assert_eq!(cipher.decrypt(&sealed, BOB), Err(CipherError::Rejected));
    let other = TokenCipher::from_base64(&TokenCipher::generate_key().unwrap()).unwrap();
    assert_eq!(other.decrypt(&sealed, CAROL), Err(CipherError::Rejected));
    assert!(cipher.decrypt(&sealed[..sealed.len() - 4], CAROL).is_err());
    assert_eq!(cipher.decrypt("", CAROL), Err(CipherError::Malformed));
    assert_eq!(
        cipher.decrypt("not/base64url+", CAROL),
        Err(CipherError::Malformed)
    );
    // Keys must be 32 bytes of base64.
    assert!(matches!(
        TokenCipher::from_base64(&STANDARD.encode([7u8; 16])),
        Err(CipherError::InvalidKey { .. })
    ));
    assert!(!format!("{cipher:?}").contains(&key));
}
