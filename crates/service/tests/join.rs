//! `GET /join/{id}` for providers whose join links point at confsync (Jitsi, BigBlueButton):
//! the provider's redirect (never cached), its refusal, and the organizer's signed host link,
//! which only the API hands out and which a guest cannot forge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_engine::calendar::emulated::EmulatorCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_providers::local::LocalProvider;
use confsync_providers::{
    BoxFuture, Capabilities, ConferenceProvider, JoinAnswer, JoinRequest, Meeting, MeetingSpec,
    ProviderError, When,
};
use confsync_service::{Scheduler, SchedulerConfig, Service, hash_api_key, router};
use confsync_store::Store;
use serde_json::{Value, json};

const KEY: &str = "cs_join-test-key";
const HOST_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A room provider: meetings are local state (the local provider's), joins are redirects to
/// `https://rooms.example/{id}?moderator=..&name=..`, refused once the meeting is deleted.
struct Rooms {
    local: LocalProvider,
    store: Store,
    joins: Mutex<Vec<JoinRequest>>,
}

impl ConferenceProvider for Rooms {
    fn name(&self) -> &str {
        "rooms"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        self.local.create(spec, key)
    }
    fn update<'a>(
        &'a self,
        id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        self.local.update(id, spec, key)
    }
    fn update_occurrence<'a>(
        &'a self,
        id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.local
            .update_occurrence(id, occurrence, start, end, title, key)
    }
    fn cancel_occurrence<'a>(
        &'a self,
        id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.local.cancel_occurrence(id, occurrence, key)
    }
    fn delete<'a>(&'a self, id: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.local.delete(id, key)
    }
    fn join<'a>(
        &'a self,
        id: &'a str,
        request: &'a JoinRequest,
    ) -> BoxFuture<'a, Result<Option<JoinAnswer>, ProviderError>> {
        Box::pin(async move {
            self.joins.lock().unwrap().push(request.clone());
            match self.store.meeting(id).await {
                Ok(Some(m)) if m.deleted => Ok(Some(JoinAnswer::Refused(
                    "this meeting was cancelled".into(),
                ))),
                Ok(Some(_)) => Ok(Some(JoinAnswer::Redirect(format!(
                    "https://rooms.example/{id}?moderator={}&name={}",
                    request.host,
                    request.name.as_deref().unwrap_or("Guest")
                )))),
                _ => Err(ProviderError::NotFound {
                    provider: "rooms".into(),
                }),
            }
        })
    }
}

struct Harness {
    http: reqwest::Client,
    service: String,
    rooms: Arc<Rooms>,
}

async fn start() -> Harness {
    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(KEY), 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/", listener.local_addr().unwrap());
    let rooms = Arc::new(Rooms {
        local: LocalProvider::new(store.clone(), &service_url),
        store: store.clone(),
        joins: Mutex::new(Vec::new()),
    });
    let emulator = confsync_emulator::Emulator::new(Default::default());
    let calendar = Arc::new(EmulatorCalendar::new(emulator.shared().clone(), None));
    let engine = Arc::new(Engine::new(
        store.clone(),
        calendar,
        rooms.clone(),
        EngineConfig::default(),
    ));
    let scheduler = Scheduler::start(
        engine,
        SchedulerConfig {
            debounce: Duration::ZERO,
            workers: 1,
            ..SchedulerConfig::default()
        },
    );
    let service = Arc::new(Service {
        store,
        provider: rooms.clone(),
        scheduler,
        create_deadline: std::time::Duration::from_secs(10),
        channels: None,
        oauth: None,
        public_url: Some(service_url.clone()),
        budgets: None,
        host_key: Some(HOST_KEY.to_vec()),
        identity: None,
    });
    tokio::spawn(async move { axum::serve(listener, router(service)).await.ok() });
    Harness {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        service: service_url,
        rooms,
    }
}

impl Harness {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.service))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }
}

#[tokio::test]
async fn guests_and_the_organizer_are_redirected_and_a_cancelled_meeting_refuses() {
    let h = start().await;
    let conference = h
        .api(
            reqwest::Method::POST,
            "v1/conferences",
            Some(json!({"calendarId": "alice@example.com", "eventId": "joinevent01"})),
        )
        .await;
    let id = conference["conferenceId"].as_str().unwrap().to_owned();
    let join_url = conference["entryPoints"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(join_url, format!("{}join/{id}", h.service));
    assert!(
        !conference.to_string().contains("host="),
        "conferenceData carries no host link: {conference}"
    );

    // A guest: a redirect that is never cached.
    let guest = h
        .http
        .get(format!("{join_url}?name=Bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(guest.status(), 302);
    assert_eq!(guest.headers()["cache-control"], "no-store");
    assert_eq!(guest.headers()["referrer-policy"], "no-referrer");
    assert_eq!(
        guest.headers()["location"],
        format!("https://rooms.example/{id}?moderator=false&name=Bob").as_str()
    );

    // The organizer's link comes only from the API, and makes a moderator.
    let got = h
        .api(reqwest::Method::GET, &format!("v1/conferences/{id}"), None)
        .await;
    let host_url = got["hostUrl"].as_str().unwrap().to_owned();
    assert!(
        host_url.starts_with(&format!("{join_url}?host=")),
        "{host_url}"
    );
    let host = h.http.get(&host_url).send().await.unwrap();
    assert_eq!(host.status(), 302);
    assert!(
        host.headers()["location"]
            .to_str()
            .unwrap()
            .contains("moderator=true")
    );

    // A forged or another meeting's signature is a guest join.
    let forged = h
        .http
        .get(format!("{join_url}?host=AAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert!(
        forged.headers()["location"]
            .to_str()
            .unwrap()
            .contains("moderator=false")
    );
    let other = confsync_service::host_signature(HOST_KEY, "another-meeting");
    let borrowed = h
        .http
        .get(format!("{join_url}?host={other}"))
        .send()
        .await
        .unwrap();
    assert!(
        borrowed.headers()["location"]
            .to_str()
            .unwrap()
            .contains("moderator=false")
    );
    let requests = h.rooms.joins.lock().unwrap().clone();
    assert_eq!(
        requests.iter().map(|r| r.host).collect::<Vec<_>>(),
        vec![false, true, false, false]
    );
    assert_eq!(requests[0].name.as_deref(), Some("Bob"));

    // Unknown meetings are 404; cancelled ones refuse with the provider's reason.
    let unknown = h
        .http
        .get(format!("{}join/nosuchmeeting", h.service))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    h.rooms.local.delete(&id, "cancel").await.unwrap();
    let refused = h.http.get(&join_url).send().await.unwrap();
    assert_eq!(refused.status(), 410);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("this meeting was cancelled")
    );
}
