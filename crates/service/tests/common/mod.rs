//! The service as the tests run it: an emulator on loopback, the engine over HTTP with the
//! Google client, an in-memory store with one API key, the local provider, the scheduler
//! (debounce 0) and, when asked, push channels to the service's own loopback URL.

#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;
use std::time::Duration;

use confsync_core::plan::Recognizer;
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::local::LocalProvider;
use confsync_service::{
    ChannelConfig, ChannelKey, ChannelOptions, Channels, Scheduler, SchedulerConfig, ServerLimits,
    Service, hash_api_key, router,
};
use confsync_store::Store;

pub const ALICE: &str = "alice@example.com";

/// The secret the test services sign their push channel ids with (tests mint ids with it).
pub const CHANNEL_SECRET: &[u8] = b"the test services' channel key secret";

pub fn channel_key() -> ChannelKey {
    ChannelKey::derive(CHANNEL_SECRET)
}

/// Push channel settings for [`start`].
pub struct Push {
    pub ttl_seconds: Option<u64>,
    pub renew_check: Duration,
}

impl Push {
    pub fn new(ttl_seconds: Option<u64>, renew_check: Duration) -> Push {
        Push {
            ttl_seconds,
            renew_check,
        }
    }
}

/// A running service and the emulator behind it.
pub struct Running {
    pub http: reqwest::Client,
    /// The emulator's base URL.
    pub calendar: String,
    /// The service's base URL.
    pub service: String,
    pub store: Store,
    pub channels: Option<Arc<Channels>>,
    /// The scrape's counters and options (per-calendar series).
    pub metrics: Arc<confsync_service::metrics::Metrics>,
}

/// Starts everything; `api_key` is accepted by the /v1 API. Served as `confsync serve` does
/// ([`confsync_service::serve`]) with the default limits.
pub async fn start(api_key: &str, push: Option<Push>) -> Running {
    start_with(api_key, push, ServerLimits::default()).await
}

/// [`start`] with the server's limits given.
pub async fn start_with(api_key: &str, push: Option<Push>, limits: ServerLimits) -> Running {
    let emulator = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let calendar = emulator.base_url().to_owned();
    std::mem::forget(emulator); // serves until the test process ends
    let store = Store::memory().await.unwrap();
    store
        .api_key_create("addon", &hash_api_key(api_key), 0)
        .await
        .unwrap();
    let provider = Arc::new(LocalProvider::new(store.clone(), "http://127.0.0.1:9/"));
    let client = Client::new(
        &calendar,
        Arc::new(StaticToken(format!("dev:{ALICE}"))),
        RetryPolicy::default(),
    )
    .unwrap();
    let google = Arc::new(GoogleCalendar { client });
    let config = EngineConfig {
        recognizer: Recognizer {
            solution_names: vec!["confsync".into()],
            parameter_key: Some(confsync_engine::conference::DEFAULT_PARAMETER_KEY.into()),
        },
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(
        store.clone(),
        google.clone(),
        provider.clone(),
        config,
    ));
    let scheduler = Scheduler::start(
        engine,
        SchedulerConfig {
            debounce: Duration::ZERO,
            workers: 2,
            ..SchedulerConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/", listener.local_addr().unwrap());
    let channels = push.map(|push| {
        let channels = Channels::with_options(
            google,
            store.clone(),
            scheduler.clone(),
            ChannelConfig {
                public_url: service_url.clone(),
                ttl_seconds: push.ttl_seconds,
                renew_check: push.renew_check,
                ..ChannelConfig::new(service_url.clone())
            },
            ChannelOptions {
                key: channel_key(),
                orphan_calendar: None,
                orphan_stops_per_minute: 5,
            },
        );
        channels.start_renewal();
        channels
    });
    let metrics = scheduler.metrics().clone();
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler,
        create_deadline: std::time::Duration::from_secs(10),
        channels: channels.clone(),
        oauth: None,
        public_url: None,
        budgets: None,
        host_key: None,
        identity: None,
    });
    tokio::spawn(confsync_service::serve(
        listener,
        router(service),
        limits,
        std::future::pending(),
    ));
    Running {
        http: reqwest::Client::new(),
        calendar,
        service: service_url,
        store,
        channels,
        metrics,
    }
}

/// A failed update for a conference of Alice's calendar, queued far in the future (so the
/// service's drainer leaves it alone) and failed: its outbox id. For the admin and contract
/// tests.
pub async fn failed_action(r: &Running, conference_id: &str) -> i64 {
    use confsync_core::model::{MeetingSpec, When};
    use confsync_core::plan::{Action, Change};
    use confsync_store::{LinkBase, PlannedChange};
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
    let link = confsync_core::plan::Link {
        conference_id: conference_id.into(),
        provider: "local".into(),
        calendar_id: ALICE.into(),
        event_id: format!("ev{conference_id}"),
        spec: spec.clone(),
        last_etag_seen: None,
        last_etag_written: None,
        occurrences: std::collections::BTreeMap::new(),
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
        // Far off, so the service's drainer leaves it alone.
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
