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
    ChannelConfig, Channels, Scheduler, SchedulerConfig, Service, hash_api_key, router,
};
use confsync_store::Store;

pub const ALICE: &str = "alice@example.com";

/// Push channel settings for [`start`].
pub struct Push {
    pub ttl_seconds: Option<u64>,
    pub renew_check: Duration,
}

/// A running service and the emulator behind it.
pub struct Running {
    pub http: reqwest::Client,
    /// The emulator's base URL.
    pub calendar: String,
    /// The service's base URL.
    pub service: String,
    pub store: Store,
}

/// Starts everything; `api_key` is accepted by the /v1 API.
pub async fn start(api_key: &str, push: Option<Push>) -> Running {
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
            parameter_key: Some("confsyncConferenceId".into()),
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
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/", listener.local_addr().unwrap());
    let channels = push.map(|push| {
        let channels = Channels::new(
            google,
            store.clone(),
            scheduler.clone(),
            ChannelConfig {
                public_url: service_url.clone(),
                ttl_seconds: push.ttl_seconds,
                renew_check: push.renew_check,
                ..ChannelConfig::new(service_url.clone())
            },
        );
        channels.start_renewal();
        channels
    });
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler,
        solution_name: "confsync".into(),
        parameter_key: "confsyncConferenceId".into(),
        channels,
        oauth: None,
        public_url: None,
        budgets: None,
        host_key: None,
    });
    tokio::spawn(async move { axum::serve(listener, router(service)).await.ok() });
    Running {
        http: reqwest::Client::new(),
        calendar,
        service: service_url,
        store,
    }
}
