//! Shared fixtures for the integration tests: an emulator with helpers for its admin API, client
//! constructors, token sources and a sleeper that records delays instead of waiting.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_emulator::{Emulator, RunningEmulator};
use confsync_gcal::{
    BoxFuture, Client, GcalError, Jitter, RetryPolicy, Sleeper, StaticToken, TokenSource,
    encode_segment,
};
use serde_json::{Value, json};

pub const ALICE: &str = "alice@example.com";

/// A fast, deterministic policy: 1 ms base, 10 ms cap, seeded jitter.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(10),
        jitter: Jitter::Seeded(1),
        ..Default::default()
    }
}

/// Records every delay the client asks for and returns at once.
#[derive(Default)]
pub struct RecordingSleeper {
    pub delays: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    pub fn delays(&self) -> Vec<Duration> {
        self.delays.lock().unwrap().clone()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()> {
        self.delays.lock().unwrap().push(delay);
        Box::pin(async {})
    }
}

/// Hands out `first` until invalidated, then `after`; counts invalidations.
pub struct RotatingToken {
    pub first: String,
    pub after: String,
    pub invalidations: AtomicU64,
}

impl RotatingToken {
    pub fn new(first: &str, after: &str) -> Self {
        RotatingToken {
            first: first.into(),
            after: after.into(),
            invalidations: AtomicU64::new(0),
        }
    }
}

impl TokenSource for RotatingToken {
    fn token(&self) -> BoxFuture<'_, Result<String, GcalError>> {
        let token = if self.invalidations.load(Ordering::SeqCst) == 0 {
            self.first.clone()
        } else {
            self.after.clone()
        };
        Box::pin(async move { Ok(token) })
    }

    fn invalidate(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running emulator plus a plain HTTP client for its admin API and raw v3 reads.
pub struct Harness {
    pub emulator: RunningEmulator,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Harness {
        let emulator = Emulator::new(Default::default())
            .spawn("127.0.0.1:0")
            .await
            .expect("emulator starts");
        Harness {
            emulator,
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        self.emulator.base_url()
    }

    /// A client acting as `dev:alice@example.com` with [`fast_retry`].
    pub fn client(&self) -> Client {
        self.client_with(fast_retry())
    }

    pub fn client_with(&self, retry: RetryPolicy) -> Client {
        Client::new(
            self.base(),
            Arc::new(StaticToken(format!("dev:{ALICE}"))),
            retry,
        )
        .expect("client builds")
    }

    /// POST to the admin API; panics unless it succeeds.
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}emulator/{path}", self.base()))
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

    /// Injects a fault (see the README's admin API).
    pub async fn fault(&self, spec: Value) {
        self.admin("faults", spec).await;
    }

    /// Requests the emulator served for one API method.
    pub async fn served(&self, method: &str) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}emulator/stats", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["requests"][method].as_u64().unwrap_or(0)
    }

    pub async fn expire_sync_tokens(&self, calendar_id: &str) {
        self.admin(
            &format!(
                "calendars/{}/expire-sync-tokens",
                encode_segment(calendar_id)
            ),
            json!({}),
        )
        .await;
    }

    /// The event exactly as the emulator serves it (raw JSON).
    pub async fn raw_event(&self, calendar_id: &str, event_id: &str) -> Value {
        self.http
            .get(format!(
                "{}calendar/v3/calendars/{}/events/{}",
                self.base(),
                encode_segment(calendar_id),
                encode_segment(event_id)
            ))
            .bearer_auth(format!("dev:{ALICE}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Inserts a raw JSON event (fields the model does not type included).
    pub async fn raw_insert(&self, calendar_id: &str, event: Value) -> Value {
        let response = self
            .http
            .post(format!(
                "{}calendar/v3/calendars/{}/events?conferenceDataVersion=1",
                self.base(),
                encode_segment(calendar_id)
            ))
            .bearer_auth(format!("dev:{ALICE}"))
            .json(&event)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "insert failed: {status} {body}");
        body
    }
}

/// A timed event body for day `day` of December 2026.
pub fn event_json(summary: &str, day: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": format!("2026-12-{day:02}T10:00:00Z")},
        "end": {"dateTime": format!("2026-12-{day:02}T10:30:00Z")},
    })
}
