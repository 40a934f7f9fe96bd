//! Per-user OAuth end to end against the emulator with dev mode off (only tokens it issued are
//! accepted): the add-on is told to authenticate, the user connects through /oauth/google/start
//! and /callback, the calendar syncs with the stored grant; a revoked grant marks the calendar
//! as needing re-authorisation without a retry storm, and connecting again resumes syncing.
//! Starting needs a signed, expiring link the API minted; the callback never replaces a
//! calendar's owner with another user.

use std::sync::Arc;
use std::time::Duration;

use confsync_core::model::MeetingSpec;
use confsync_core::plan::Recognizer;
use confsync_emulator::{Emulator, EmulatorConfig};
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::RetryPolicy;
use confsync_gcal::auth::{AuthCodeFlow, CALENDAR_SCOPE, TokenCipher};
use confsync_providers::local::LocalProvider;
use confsync_service::oauth::{GoogleOAuth, UserCalendars};
use confsync_service::{Scheduler, SchedulerConfig, Service, hash_api_key, router};
use confsync_store::Store;
use serde_json::{Value, json};

const CAROL: &str = "carol@example.com";
const KEY: &str = "cs_oauth-test-key";
const DAVE: &str = "dave@example.com";
/// The secret the test service derives its start-link key from.
const LINK_SECRET: &[u8] = b"the oauth tests' start link secret";
/// Sign-ins waiting at once in these tests.
const MAX_PENDING: u32 = 30;

struct Harness {
    http: reqwest::Client,
    /// Does not follow redirects, like a test of each hop.
    browser: reqwest::Client,
    emulator: String,
    service: String,
    store: Store,
    /// Mints start links as the API does (same key).
    links: UserCalendars,
}

async fn start() -> Harness {
    start_with(false).await
}

/// The add-on's OAuth client id in the tests with identities.
const AUD: &str = "addon-client.apps.googleusercontent.com";

/// `identity`: the API verifies the emulator's ID tokens for [`AUD`].
async fn start_with(identity: bool) -> Harness {
    let emulator = Emulator::new(EmulatorConfig {
        dev_mode: false,
        ..Default::default()
    })
    .spawn("127.0.0.1:0")
    .await
    .unwrap();
    let base = emulator.base_url().to_owned();
    std::mem::forget(emulator);
    let http = reqwest::Client::new();
    http.post(format!("{base}emulator/users"))
        .json(&json!({"email": CAROL}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(KEY), 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/", listener.local_addr().unwrap());
    let oauth = Arc::new(GoogleOAuth {
        flow: AuthCodeFlow {
            auth_uri: format!("{base}o/oauth2/v2/auth"),
            token_uri: format!("{base}token"),
            client_id: "confsync-test.apps.googleusercontent.com".into(),
            client_secret: Some("client-secret".into()),
            redirect_uri: format!("{service_url}oauth/google/callback"),
            scopes: vec![CALENDAR_SCOPE.into()],
            http: reqwest::Client::new(),
        },
        cipher: TokenCipher::from_base64(&TokenCipher::generate_key().unwrap()).unwrap(),
        calendar_base_url: base.clone(),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
    });
    let links = UserCalendars::new(oauth.clone(), store.clone()).with_link_key(LINK_SECRET);
    let users = Arc::new(
        UserCalendars::new(oauth, store.clone())
            .with_max_pending(MAX_PENDING)
            .with_link_key(LINK_SECRET),
    );
    let provider = Arc::new(LocalProvider::new(store.clone(), &service_url));
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(confsync_engine::calendar::Routed(users.clone())),
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
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler,
        create_deadline: std::time::Duration::from_secs(10),
        channels: None,
        oauth: Some(users),
        public_url: Some(service_url.clone()),
        budgets: None,
        host_key: None,
        identity: identity.then(|| {
            Arc::new(confsync_service::identity::IdentityVerifier::new(
                confsync_service::identity::IdentitySettings {
                    certs_url: format!("{base}oauth2/v3/certs"),
                    ..confsync_service::identity::IdentitySettings::google(vec![AUD.into()])
                },
            ))
        }),
    });
    tokio::spawn(confsync_service::serve(
        listener,
        router(service),
        confsync_service::ServerLimits::default(),
        std::future::pending(),
    ));
    Harness {
        http,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        emulator: base,
        service: service_url,
        store,
        links,
    }
}

impl Harness {
    /// A start link for `calendar` (bound to `user`), as the API mints them.
    fn link(&self, calendar: &str, user: Option<&str>) -> String {
        format!(
            "{}oauth/google/start?{}",
            self.service,
            self.links
                .start_link(calendar, user, chrono::Utc::now().timestamp_millis())
        )
    }

    async fn create_conference(&self, event_id: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}v1/conferences", self.service))
            .bearer_auth(KEY)
            .json(&json!({"calendarId": CAROL, "eventId": event_id}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Follows an authentication URL as Carol's browser: service -> Google -> callback.
    /// Answers the callback's status and page.
    async fn connect(&self, authentication_url: &str) -> (u16, String) {
        self.connect_via(authentication_url).await.0
    }

    async fn connect_via(&self, authentication_url: &str) -> ((u16, String), String) {
        self.connect_as(authentication_url, None).await
    }

    /// Follows a start link, signing in at Google as `who` (default: the link's login hint).
    async fn connect_as(
        &self,
        authentication_url: &str,
        who: Option<&str>,
    ) -> ((u16, String), String) {
        let to_google = self.browser.get(authentication_url).send().await.unwrap();
        assert_eq!(to_google.status(), 302);
        assert_eq!(to_google.headers()["cache-control"], "no-store");
        let mut google = to_google.headers()["location"].to_str().unwrap().to_owned();
        if let Some(who) = who {
            let mut url = reqwest::Url::parse(&google).unwrap();
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "login_hint")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(pairs)
                .append_pair("login_hint", who);
            google = url.to_string();
        }
        assert!(google.starts_with(&self.emulator), "{google}");
        assert!(google.contains("code_challenge_method=S256"));
        let back = self.browser.get(&google).send().await.unwrap();
        assert_eq!(back.status(), 302);
        let callback = back.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            callback.starts_with(&format!("{}oauth/google/callback?", self.service)),
            "{callback}"
        );
        let done = self.browser.get(&callback).send().await.unwrap();
        (
            (done.status().as_u16(), done.text().await.unwrap()),
            callback,
        )
    }

    /// Carol's own access token (for editing her calendar as Calendar's UI would).
    async fn carol_token(&self) -> String {
        let answer: Value = self
            .http
            .post(format!("{}emulator/tokens", self.emulator))
            .json(&json!({"email": CAROL}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn edit(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = self
            .http
            .request(method, format!("{}calendar/v3/{path}", self.emulator))
            .bearer_auth(self.carol_token().await)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    async fn sync(&self) {
        let response = self
            .http
            .post(format!("{}v1/calendars/{CAROL}/sync", self.service))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    async fn status(&self) -> Value {
        self.http
            .get(format!("{}v1/status", self.service))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}metrics", self.service))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn served(&self, method: &str) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}emulator/stats", self.emulator))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["requests"][method].as_u64().unwrap_or(0)
    }

    async fn meeting_until(&self, id: &str, done: impl Fn(&MeetingSpec) -> bool) {
        for _ in 0..200 {
            let m = self.store.meeting(id).await.unwrap().unwrap();
            let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
            if done(&spec) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("meeting {id} never reached the expected state");
    }

    async fn until(&self, what: &str, check: impl AsyncFn() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("never: {what}");
    }
}

#[tokio::test]
async fn a_user_connects_syncs_loses_the_grant_and_connects_again() {
    let h = start().await;

    // Carol has not connected: the add-on is told to authenticate, with our URL.
    let (status, answer) = h.create_conference("oauthevent01").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "AUTHENTICATION");
    let url = answer["error"]["authenticationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with(&format!(
            "{}oauth/google/start?calendar=carol%40example.com",
            h.service
        )),
        "{url}"
    );
    // A signed, expiring link (Calendar takes only absolute URLs).
    assert!(url.contains("&expires=") && url.contains("&sig="), "{url}");
    let to_google = h.browser.get(&url).send().await.unwrap();
    let google = to_google.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        google.contains("login_hint=carol%40example.com"),
        "{google}"
    );

    let (status, page) = h.connect(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("carol@example.com is connected"), "{page}");
    let users = h.store.users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].user_id, CAROL);
    assert!(!users[0].needs_reauth);
    assert!(!users[0].refresh_token_sealed.is_empty());

    // Now the conference is made, and the calendar syncs with Carol's grant.
    let (status, conference) = h.create_conference("oauthevent01").await;
    assert_eq!(status, 200, "{conference}");
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    h.edit(
        reqwest::Method::POST,
        "calendars/primary/events?conferenceDataVersion=1",
        json!({"id": "oauthevent01", "summary": "Review", "start": {"dateTime": "2026-12-02T10:00:00Z"}, "end": {"dateTime": "2026-12-02T11:00:00Z"}, "conferenceData": conference}),
    )
    .await;
    h.sync().await;
    h.meeting_until(&id, |s| s.title == "Review").await;

    // Carol revokes confsync's access in her Google account, then edits the event.
    h.http
        .post(format!("{}emulator/users/{CAROL}/revoke", h.emulator))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    h.edit(
        reqwest::Method::PATCH,
        "calendars/primary/events/oauthevent01",
        json!({"summary": "Review (moved)"}),
    )
    .await;
    h.sync().await;
    h.until(
        "the calendar is marked as needing re-authorisation",
        async || h.status().await["calendarsNeedingReauth"] == json!([CAROL]),
    )
    .await;
    let status = h.status().await;
    assert_eq!(status["calendars"][0]["needsReauth"], true);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("confsync_calendars_needing_reauth 1"),
        "{metrics}"
    );
    assert!(metrics.contains("confsync_sync_runs_total{outcome=\"reauth\"} 1"));

    // No retry storm: more triggers make no Calendar call and no token request.
    let lists = h.served("calendar.events.list").await;
    let gets = h.served("calendar.events.get").await;
    // (One trigger at a time: triggers during a pass coalesce into one more pass.)
    for passes in 2..=4 {
        h.sync().await;
        let line = format!("confsync_sync_runs_total{{outcome=\"reauth\"}} {passes}");
        h.until("one more pass", async || h.metrics().await.contains(&line))
            .await;
    }
    assert_eq!(h.served("calendar.events.list").await, lists);
    assert_eq!(h.served("calendar.events.get").await, gets);
    // Meanwhile the add-on asks Carol to connect again.
    let (status, answer) = h.create_conference("oauthevent02").await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect their Google account again"),
        "{answer}"
    );

    // She connects again: the mark is cleared and the waiting change reaches the meeting.
    let (status, page) = h.connect(&url).await;
    assert_eq!(status, 200, "{page}");
    h.meeting_until(&id, |s| s.title == "Review (moved)").await;
    assert_eq!(h.status().await["calendarsNeedingReauth"], json!([]));
    assert!(!h.store.users().await.unwrap()[0].needs_reauth);
}

#[tokio::test]
async fn forged_replayed_and_refused_callbacks_change_nothing() {
    let h = start().await;
    let callback = |query: &str| format!("{}oauth/google/callback?{query}", h.service);

    // A state we never issued.
    let forged = h
        .browser
        .get(callback("code=abc&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(forged.text().await.unwrap().contains("start again"));
    // Missing parameters.
    let missing = h.browser.get(callback("code=abc")).send().await.unwrap();
    assert_eq!(missing.status(), 400);

    // A real request, then the user declines at Google.
    let start = h.browser.get(h.link(CAROL, None)).send().await.unwrap();
    let google = reqwest::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    let state = google
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let declined = h
        .browser
        .get(callback(&format!("error=access_denied&state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 400);
    assert!(declined.text().await.unwrap().contains("access_denied"));
    // That state is spent: a code arriving with it later is refused.
    let late = h
        .browser
        .get(callback(&format!("code=whatever&state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);

    // A completed connect cannot be replayed either.
    let ((status, _), used) = h.connect_via(&h.link(CAROL, None)).await;
    assert_eq!(status, 200);
    let replayed = h.browser.get(&used).send().await.unwrap();
    assert_eq!(replayed.status(), 400);
    assert!(h.store.users().await.unwrap().len() == 1);
    assert_eq!(
        h.store.calendar_owner(CAROL).await.unwrap().as_deref(),
        Some(CAROL)
    );
}

/// (b) Starting a sign-in needs a link the API minted; even so its parameters are bounded and so
/// are the rows it leaves (at most MAX_PENDING wait; more are refused with 503 until some expire
/// or complete).
#[tokio::test]
async fn starting_sign_ins_is_bounded_in_size_and_in_rows() {
    let h = start().await;
    let start_url = |query: &str| format!("{}oauth/google/start?{query}", h.service);
    let long_calendar = format!("{}@example.com", "c".repeat(2000));
    let long_hint = format!("{}@example.com", "h".repeat(300));
    for query in [
        format!("calendar={long_calendar}"),
        "calendar=alice%0D%0Aforged@example.com".to_owned(),
        "calendar=..".to_owned(),
        "calendar=a%00b@example.com".to_owned(),
        format!("login_hint={long_hint}"),
        "login_hint=carol%0A@example.com".to_owned(),
    ] {
        let response = h.browser.get(start_url(&query)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    assert_eq!(
        h.store.oauth_requests_pending().await.unwrap(),
        0,
        "refused starts store nothing"
    );
    let mut statuses = Vec::new();
    for i in 0..(MAX_PENDING + 10) {
        let response = h
            .browser
            .get(h.link(CAROL, Some(&format!("user{i}@example.com"))))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "60");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        MAX_PENDING as usize
    );
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 10);
    assert_eq!(
        h.store.oauth_requests_pending().await.unwrap(),
        i64::from(MAX_PENDING)
    );
}

/// Issue 14: /oauth/google/start needs a link the API minted (signed, bound to the calendar and
/// user, expiring); anything else is refused before any store write.
#[tokio::test]
async fn starting_needs_a_valid_link() {
    let h = start().await;
    let good = h.link(CAROL, Some(CAROL));
    let query = good.split_once('?').unwrap().1.to_owned();
    let start_url = |query: &str| format!("{}oauth/google/start?{query}", h.service);
    let expired = h.links.start_link(
        CAROL,
        Some(CAROL),
        chrono::Utc::now().timestamp_millis() - 11 * 60 * 1000,
    );
    let other_key = UserCalendars::new(
        Arc::new(GoogleOAuth {
            flow: AuthCodeFlow {
                auth_uri: "http://127.0.0.1:9/".into(),
                token_uri: "http://127.0.0.1:9/".into(),
                client_id: "c".into(),
                client_secret: None,
                redirect_uri: "http://127.0.0.1:9/".into(),
                scopes: vec![],
                http: reqwest::Client::new(),
            },
            cipher: TokenCipher::from_base64(&TokenCipher::generate_key().unwrap()).unwrap(),
            calendar_base_url: "http://127.0.0.1:9/".into(),
            retry: RetryPolicy::default(),
        }),
        h.store.clone(),
    )
    .with_link_key(b"someone else's key")
    .start_link(CAROL, Some(CAROL), chrono::Utc::now().timestamp_millis());
    for (what, query) in [
        ("no link", format!("calendar={CAROL}")),
        (
            "the old login_hint form",
            format!("calendar={CAROL}&login_hint={CAROL}"),
        ),
        (
            "another calendar",
            query.replace("calendar=carol", "calendar=dave"),
        ),
        ("another user", query.replace("user=carol", "user=dave")),
        (
            "user dropped",
            query.replace("&user=carol%40example.com", ""),
        ),
        ("later expiry", {
            let expires: i64 = query
                .split('&')
                .find_map(|p| p.strip_prefix("expires="))
                .unwrap()
                .parse()
                .unwrap();
            query.replace(
                &format!("expires={expires}"),
                &format!("expires={}", expires + 3600),
            )
        }),
        ("bad signature", format!("{}x", query)),
        ("expired", expired),
        ("signed with another key", other_key),
    ] {
        let response = h.browser.get(start_url(&query)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let page = response.text().await.unwrap();
        assert!(page.contains("Google Calendar"), "{what}: {page}");
    }
    assert_eq!(
        h.store.oauth_requests_pending().await.unwrap(),
        0,
        "refused starts store nothing"
    );
    // The good link works.
    let ((status, page), _) = h.connect_via(&good).await;
    assert_eq!(status, 200, "{page}");
}

/// Issue 14: the callback never replaces a calendar's owner: signing in as another account than
/// the link was for, or connecting a calendar another user owns, is refused and changes nothing.
#[tokio::test]
async fn the_callback_never_takes_a_calendar_from_its_owner() {
    let h = start().await;
    // A link for Carol (bound to her), followed by Dave.
    let ((status, page), _) = h.connect_as(&h.link(CAROL, Some(CAROL)), Some(DAVE)).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("made for carol@example.com"), "{page}");
    assert!(h.store.users().await.unwrap().is_empty(), "nothing stored");
    // An unbound link for Carol's primary calendar, followed by Dave: it is Carol's.
    let ((status, page), _) = h.connect_as(&h.link(CAROL, None), Some(DAVE)).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("another account"), "{page}");
    assert!(h.store.users().await.unwrap().is_empty());
    assert_eq!(h.store.calendar_owner(CAROL).await.unwrap(), None);

    // Dave connects his own calendar; then a calendar recorded as Dave's is not re-pointed to
    // Carol, even though she can read it.
    let ((status, page), _) = h.connect_via(&h.link(DAVE, Some(DAVE))).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        h.store.calendar_owner(DAVE).await.unwrap().as_deref(),
        Some(DAVE)
    );
    h.store.calendar_set_owner(CAROL, DAVE, 0).await.unwrap();
    let ((status, page), _) = h.connect_via(&h.link(CAROL, Some(CAROL))).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Nothing was changed"), "{page}");
    assert_eq!(
        h.store.calendar_owner(CAROL).await.unwrap().as_deref(),
        Some(DAVE),
        "the recorded owner stays"
    );
    // The same user connecting again is fine.
    let ((status, page), _) = h.connect_via(&h.link(DAVE, Some(DAVE))).await;
    assert_eq!(status, 200, "{page}");
}

/// Issue 14, with identities: the AUTHENTICATION link is absolute and bound to the caller; a user
/// may not act on (or be offered a link for) a calendar that is someone else's.
#[tokio::test]
async fn with_identities_links_are_bound_to_the_caller() {
    let h = start_with(true).await;
    let token = async |email: &str| -> String {
        let answer: Value = h
            .http
            .post(format!("{}emulator/identityTokens", h.emulator))
            .json(&json!({"email": email, "audience": AUD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["idToken"].as_str().unwrap().to_owned()
    };
    let create = async |token: &str, calendar: &str, event: &str| -> (u16, Value) {
        let response = h
            .http
            .post(format!("{}v1/conferences", h.service))
            .bearer_auth(KEY)
            .header("X-Confsync-Identity", token)
            .json(&json!({"calendarId": calendar, "eventId": event}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    };
    let (carol, dave) = (token(CAROL).await, token(DAVE).await);

    // Dave may not act on Carol's calendar: 403, and no link to claim it.
    let (status, answer) = create(&dave, CAROL, "bound00001").await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "PERMANENT");
    assert!(answer["error"].get("authenticationUrl").is_none());

    // Carol is asked to connect, with a link bound to her.
    let (status, answer) = create(&carol, CAROL, "bound00001").await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["conferenceErrorType"], "AUTHENTICATION");
    let url = answer["error"]["authenticationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&h.service), "absolute: {url}");
    assert!(url.contains("user=carol%40example.com"), "{url}");
    // Dave cannot use it.
    let ((status, page), _) = h.connect_as(&url, Some(DAVE)).await;
    assert_eq!(status, 403, "{page}");
    // Carol can.
    let (status, page) = h.connect(&url).await;
    assert_eq!(status, 200, "{page}");
    let (status, answer) = create(&carol, CAROL, "bound00001").await;
    assert_eq!(status, 200, "{answer}");

    // A calendar nobody owns yet: the caller is offered to connect it, bound to them.
    let (status, answer) = create(&dave, "team@group.calendar.google.com", "bound00002").await;
    assert_eq!(status, 401, "{answer}");
    let url = answer["error"]["authenticationUrl"].as_str().unwrap();
    assert!(url.contains("user=dave%40example.com"), "{url}");
    assert!(
        h.store
            .calendar_owner("team@group.calendar.google.com")
            .await
            .unwrap()
            .is_none(),
        "nothing recorded before the callback"
    );
}
