//! What the process-level guarantee tests (`chaos.rs`) share: a provider fake that behaves like
//! a real conferencing system behind the signed `webhook` adapter, the `confsync serve` process
//! (started, killed, restarted on the same port), a Calendar emulator client, the SQLite file
//! seen through the `sqlite3` CLI, a small seeded random generator and a collector of violated
//! guarantees (so one run names every property that does not hold, not only the first).
//!
//! All traffic stays on 127.0.0.1; every loop is bounded in count and time; every child process
//! is killed by a `Drop` guard.

#![allow(dead_code)] // each test uses a different part

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use confsync_providers::webhook::{DEFAULT_TOLERANCE, verify_signature};
use serde_json::{Value, json};

pub const ALICE: &str = "alice@example.com";
/// The webhook provider's shared secret (given to serve through `ACME_WEBHOOK_SECRET`).
pub const SECRET: &str = "webhook-secret-0123456789";

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tests of this binary measure latencies on a small machine: they run one at a time.
/// (An async lock: it is held across the whole test; each test has its own runtime.)
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// `name` from the environment as a number, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(default)
}

// --- random ------------------------------------------------------------------------------

/// splitmix64: small, seeded, good enough to pick kill points and edits.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `env` (decimal or 0x-hex), else one from the clock.
    pub fn seed_from_env(env: &str) -> u64 {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        env_u64(env, clock ^ u64::from(std::process::id()).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A duration uniform in `lo..=hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo as i64, hi as i64) as u64)
    }

    /// An independent generator (for a task).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }

    /// `len` characters of [a-z0-9A-Z_-].
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

// --- verdict -----------------------------------------------------------------------------

/// Collects violated guarantees; [`Verdict::finish`] fails the test with all of them.
pub struct Verdict {
    test: &'static str,
    failures: Vec<String>,
}

impl Verdict {
    pub fn new(test: &'static str) -> Verdict {
        Verdict {
            test,
            failures: Vec::new(),
        }
    }

    /// Records `what()` as violated unless `ok`; answers `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            self.fail(what());
        }
        ok
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[{}] VIOLATED: {what}", self.test);
        self.failures.push(what);
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Panics with every violation, if any.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            let mut text = format!(
                "{}: {} guarantee(s) violated:\n",
                self.test,
                self.failures.len()
            );
            for f in &self.failures {
                text.push_str("  - ");
                text.push_str(f);
                text.push('\n');
            }
            panic!("{text}");
        }
    }
}

// --- temporary directory ------------------------------------------------------------------

#[path = "../common_tmp/mod.rs"]
mod common_tmp;
pub use common_tmp::TempDir;

/// A port nobody listens on right now (serve keeps it across restarts: push channels point
/// at it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// --- the meeting shape both sides are compared on ----------------------------------------

/// What the webhook provider's `spec` carries and an event decides: title, start, end, guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub title: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub attendees: Vec<String>,
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Shape {
    /// From a Calendar event (timed events; resources are not guests).
    pub fn of_event(event: &Value) -> Shape {
        let mut attendees: Vec<String> = event["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["resource"] != json!(true))
            .filter_map(|a| a["email"].as_str())
            .map(str::to_ascii_lowercase)
            .collect();
        attendees.sort();
        attendees.dedup();
        Shape {
            title: event["summary"].as_str().unwrap_or_default().to_owned(),
            start: instant(&event["start"]["dateTime"]),
            end: instant(&event["end"]["dateTime"]),
            attendees,
        }
    }

    /// From the webhook provider's `spec` (`{"title", "start": {"at"}, "end": {"at"}, ...}`).
    pub fn of_spec(spec: &Value) -> Shape {
        let mut attendees: Vec<String> = spec["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect();
        attendees.sort();
        attendees.dedup();
        Shape {
            title: spec["title"].as_str().unwrap_or_default().to_owned(),
            start: instant(&spec["start"]["at"]),
            end: instant(&spec["end"]["at"]),
            attendees,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.format("%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "?".into())
        };
        write!(
            f,
            "{:?} {}..{} guests {:?}",
            self.title,
            t(&self.start),
            t(&self.end),
            self.attendees
        )
    }
}

// --- the provider fake -------------------------------------------------------------------

/// One meeting at the fake provider.
#[derive(Debug, Clone)]
pub struct FakeMeeting {
    pub id: String,
    /// The idempotency key of the create that made it.
    pub create_key: String,
    /// The spec it was created with.
    pub created_spec: Value,
    /// The spec it has now.
    pub spec: Value,
    pub deleted: bool,
    pub updates: u64,
}

/// A side effect the provider performed (replays answered from a key are not side effects).
#[derive(Debug, Clone)]
pub struct Effect {
    pub kind: String,
    pub meeting_id: String,
    pub key: String,
    pub title: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct ProviderState {
    pub meetings: BTreeMap<String, FakeMeeting>,
    /// Create idempotency key -> the meeting it made.
    pub creates_by_key: HashMap<String, String>,
    pub effects: Vec<Effect>,
    /// Calls by operation type (every verified call, side effect or not).
    pub calls: BTreeMap<String, u64>,
    /// Creates answered with the meeting their key already made.
    pub replayed_creates: u64,
    /// Calls whose idempotency key had been seen before (retries after timeouts and kills).
    pub repeated_keys: u64,
    pub seen_keys: HashSet<String>,
    pub bad_signatures: u64,
    /// Calls for a meeting that does not exist (answered 404).
    pub not_found: u64,
    next: u64,
}

/// A conferencing system behind confsync's `webhook` adapter, modelled on a real one: meetings
/// kept by id, creates deduplicated by idempotency key (a repeated key answers the meeting it
/// made), other operations applied idempotently, every side effect recorded. It can be slow: a
/// call waits a random 0..`max_delay` before acting and answers after a second random wait
/// (together at most `max_delay`), and the work runs in its own task, so a caller killed
/// mid-call leaves the side effect done and the answer unheard, as with a real provider.
pub struct ProviderFake {
    pub state: Mutex<ProviderState>,
    in_flight: AtomicUsize,
    max_delay_ms: u64,
    rng: Mutex<Rng>,
}

struct InFlight(Arc<ProviderFake>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProviderFake {
    /// Serves the fake on loopback; answers it and the URL to configure as `webhook.url`.
    pub async fn spawn(max_delay_ms: u64, seed: u64) -> (Arc<ProviderFake>, String) {
        let fake = Arc::new(ProviderFake {
            state: Mutex::new(ProviderState::default()),
            in_flight: AtomicUsize::new(0),
            max_delay_ms,
            rng: Mutex::new(Rng::new(seed)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (fake, url)
    }

    /// Calls being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn meeting(&self, id: &str) -> Option<FakeMeeting> {
        lock(&self.state).meetings.get(id).cloned()
    }

    pub fn meetings(&self) -> Vec<FakeMeeting> {
        lock(&self.state).meetings.values().cloned().collect()
    }

    pub fn effects(&self) -> Vec<Effect> {
        lock(&self.state).effects.clone()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let s = lock(&self.state);
        let live = s.meetings.values().filter(|m| !m.deleted).count();
        let calls: Vec<String> = s.calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "{} meetings ({live} live); calls: {}; creates answered from their key: {}; calls repeating a key: {}; 404s: {}; bad signatures: {}",
            s.meetings.len(),
            if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.join(", ")
            },
            s.replayed_creates,
            s.repeated_keys,
            s.not_found,
            s.bad_signatures
        )
    }

    fn delays(&self) -> (Duration, Duration) {
        if self.max_delay_ms == 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        let mut rng = lock(&self.rng);
        let before = rng.below(self.max_delay_ms + 1);
        let after = rng.below(self.max_delay_ms - before + 1);
        (Duration::from_millis(before), Duration::from_millis(after))
    }

    /// Performs one operation (atomically: a key is checked and recorded under one lock).
    fn apply(&self, op: &Value) -> (StatusCode, String) {
        let mut s = lock(&self.state);
        let kind = op["type"].as_str().unwrap_or_default().to_owned();
        let key = op["idempotencyKey"].as_str().unwrap_or_default().to_owned();
        *s.calls.entry(kind.clone()).or_default() += 1;
        if key.is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":"no idempotencyKey"}"#.into(),
            );
        }
        if !s.seen_keys.insert(key.clone()) {
            s.repeated_keys += 1;
        }
        let meeting_answer = |m: &FakeMeeting| {
            json!({"meetingId": m.id, "joinUrl": format!("https://meet.acme.example/{}", m.id)})
                .to_string()
        };
        let title = |spec: &Value| spec["title"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "create" => {
                if let Some(id) = s.creates_by_key.get(&key).cloned() {
                    s.replayed_creates += 1;
                    let m = s.meetings[&id].clone();
                    return (StatusCode::OK, meeting_answer(&m));
                }
                s.next += 1;
                let id = format!("acme-{:05}", s.next);
                let spec = op["spec"].clone();
                let m = FakeMeeting {
                    id: id.clone(),
                    create_key: key.clone(),
                    created_spec: spec.clone(),
                    spec: spec.clone(),
                    deleted: false,
                    updates: 0,
                };
                s.creates_by_key.insert(key.clone(), id.clone());
                s.meetings.insert(id.clone(), m.clone());
                s.effects.push(Effect {
                    kind,
                    meeting_id: id,
                    key,
                    title: title(&spec),
                    at: Instant::now(),
                });
                (StatusCode::CREATED, meeting_answer(&m))
            }
            "update" | "update_occurrence" | "cancel_occurrence" | "delete" => {
                let id = op["meetingId"].as_str().unwrap_or_default().to_owned();
                let live = s.meetings.get(&id).is_some_and(|m| !m.deleted);
                if !live {
                    s.not_found += 1;
                    return (
                        StatusCode::NOT_FOUND,
                        r#"{"error":"no such meeting"}"#.into(),
                    );
                }
                let m = s.meetings.get_mut(&id).unwrap();
                match kind.as_str() {
                    "update" => {
                        m.spec = op["spec"].clone();
                        m.updates += 1;
                    }
                    "delete" => m.deleted = true,
                    _ => {} // occurrences: recorded, the series is left as it is
                }
                let t = title(&m.spec);
                s.effects.push(Effect {
                    kind,
                    meeting_id: id,
                    key,
                    title: t,
                    at: Instant::now(),
                });
                (StatusCode::OK, "{}".into())
            }
            _ => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"unknown type"}"#.into(),
            ),
        }
    }
}

async fn receive(
    State(fake): State<Arc<ProviderFake>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if verify_signature(
        SECRET.as_bytes(),
        &header("confsync-timestamp"),
        &header("confsync-signature"),
        &body,
        Utc::now(),
        DEFAULT_TOLERANCE,
    )
    .is_err()
    {
        lock(&fake.state).bad_signatures += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let Ok(op) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".into());
    };
    fake.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(fake.clone());
    let (before, after) = fake.delays();
    let worker = fake.clone();
    // Its own task: the side effect happens even if the caller is killed and this handler is
    // dropped with its connection.
    let work = tokio::spawn(async move {
        tokio::time::sleep(before).await;
        let answer = worker.apply(&op);
        tokio::time::sleep(after).await;
        answer
    });
    work.await.unwrap_or((
        StatusCode::INTERNAL_SERVER_ERROR,
        "receiver task failed".into(),
    ))
}

/// Meetings attributed to events: by the add-on create key
/// (`create:{calendar}:{event}:{request}`), else by the event number in the created title.
pub fn event_of_meeting(
    m: &FakeMeeting,
    title_to_event: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if let Some(rest) = m.create_key.strip_prefix("create:") {
        let mut parts = rest.splitn(3, ':');
        if let (Some(_calendar), Some(event)) = (parts.next(), parts.next()) {
            return Some(event.to_owned());
        }
    }
    title_to_event(m.created_spec["title"].as_str().unwrap_or_default())
}

/// Duplicates (events with two or more live meetings) and orphans (live meetings no event
/// shows), given what each event shows (`event id -> conferenceId`).
pub fn duplicates_and_orphans(
    meetings: &[FakeMeeting],
    shown: &BTreeMap<String, String>,
    title_to_event: &dyn Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<String>) {
    let shown_ids: HashSet<&String> = shown.values().collect();
    let mut per_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for m in meetings.iter().filter(|m| !m.deleted) {
        if let Some(event) = event_of_meeting(m, title_to_event) {
            per_event.entry(event).or_default().push(m.id.clone());
        }
        if !shown_ids.contains(&m.id) {
            orphans.push(format!(
                "{} (created with key {:?}, title now {:?})",
                m.id,
                m.create_key,
                m.spec["title"].as_str().unwrap_or_default()
            ));
        }
    }
    let duplicates = per_event
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(event, ids)| format!("event {event}: live meetings {ids:?}"))
        .collect();
    (duplicates, orphans)
}

// --- the Calendar emulator, through its REST and admin API --------------------------------

/// A client of the in-process emulator (as alice, with a `dev:` token).
#[derive(Clone)]
pub struct Calendar {
    pub http: reqwest::Client,
    pub base: String,
}

impl Calendar {
    pub fn new(base: &str) -> Calendar {
        Calendar {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    fn events_url(&self) -> String {
        format!("{}calendar/v3/calendars/{ALICE}/events", self.base)
    }

    /// events.insert; answers the event.
    pub async fn insert(&self, body: &Value) -> Value {
        let r = self
            .http
            .post(self.events_url())
            .bearer_auth(format!("dev:{ALICE}"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "events.insert answered {status}: {v}");
        v
    }

    /// events.patch with conferenceDataVersion=1 (as Calendar saves the add-on's answer).
    pub async fn patch(&self, event_id: &str, body: &Value) -> Value {
        let r = self
            .http
            .patch(format!("{}/{event_id}", self.events_url()))
            .query(&[("conferenceDataVersion", "1")])
            .bearer_auth(format!("dev:{ALICE}"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "events.patch answered {status}: {v}");
        v
    }

    pub async fn get(&self, event_id: &str) -> Value {
        self.http
            .get(format!("{}/{event_id}", self.events_url()))
            .bearer_auth(format!("dev:{ALICE}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every live event of alice's calendar.
    pub async fn list(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(self.events_url())
            .query(&[("maxResults", "2500")])
            .bearer_auth(format!("dev:{ALICE}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The emulator's push channels (admin API).
    pub async fn channels(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}emulator/channels", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The active channel on alice's calendar: (id, resource id, last message number).
    pub async fn active_channel(&self) -> Option<(String, String, u64)> {
        self.channels()
            .await
            .into_iter()
            .filter(|c| c["active"] == json!(true) && c["calendarId"] == json!(ALICE))
            .max_by_key(|c| c["lastMessageNumber"].as_u64().unwrap_or(0))
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_owned(),
                    c["resourceId"].as_str().unwrap_or_default().to_owned(),
                    c["lastMessageNumber"].as_u64().unwrap_or(0),
                )
            })
    }

    /// The last message number given out on a channel.
    pub async fn message_number(&self, channel_id: &str) -> u64 {
        self.channels()
            .await
            .iter()
            .find(|c| c["id"] == json!(channel_id))
            .and_then(|c| c["lastMessageNumber"].as_u64())
            .unwrap_or(0)
    }

    /// The delivery log of one channel.
    pub async fn deliveries(&self, channel_id: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}emulator/notifications", self.base))
            .query(&[("channelId", channel_id)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The highest message number of the channel that confsync answered 2xx (0: none).
    pub async fn highest_acknowledged(&self, channel_id: &str) -> u64 {
        self.deliveries(channel_id)
            .await
            .iter()
            .filter(|d| d["delivered"] == json!(true))
            .filter_map(|d| d["messageNumber"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Whether the channel's `sync` handshake was answered 2xx.
    pub async fn handshake_acknowledged(&self, channel_id: &str) -> bool {
        self.deliveries(channel_id)
            .await
            .iter()
            .any(|d| d["delivered"] == json!(true) && d["resourceState"] == json!("sync"))
    }

    /// Calls per API method (`calendar.channels.stop`, ...).
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let v: Value = self
            .http
            .get(format!("{}emulator/stats", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["requests"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect()
    }
}

// --- the `confsync serve` process ---------------------------------------------------------

/// Settings of one serve configuration.
pub struct ServeSettings<'a> {
    pub emulator: &'a str,
    pub hook: &'a str,
    pub store: &'a Path,
    pub port: u16,
    pub debounce_ms: u64,
    pub sweep_minutes: u64,
}

/// Writes the config file: the signed webhook provider, push channels to our own port, the
/// sweep as long as asked (so it cannot stand in for a lost trigger).
pub fn write_config(dir: &Path, s: &ServeSettings<'_>) -> PathBuf {
    let path = dir.join("confsync.toml");
    let text = format!(
        "[google]\nbase_url = \"{emulator}\"\n\
         [store]\npath = \"{store}\"\n\
         [serve]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}/\"\n\
         debounce_ms = {debounce}\nsweep_minutes = {sweep}\n\
         [provider]\nkind = \"webhook\"\n\
         [provider.webhook]\nurl = \"{hook}\"\nsecret = \"env:ACME_WEBHOOK_SECRET\"\n",
        emulator = s.emulator,
        store = s.store.display(),
        port = s.port,
        debounce = s.debounce_ms,
        sweep = s.sweep_minutes,
        hook = s.hook,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn confsync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confsync"));
    command
        .env("ACME_WEBHOOK_SECRET", SECRET)
        .env("CONFSYNC_GOOGLE_TOKEN", format!("dev:{ALICE}"))
        .env("NO_COLOR", "1")
        .env_remove("CONFSYNC_LOG");
    for name in [
        "CONFSYNC_GOOGLE_BASE_URL",
        "CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE",
        "CONFSYNC_GOOGLE_OAUTH_CLIENT_ID",
        "CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET",
        "CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY",
        "CONFSYNC_STORE_PATH",
        "CONFSYNC_PROVIDER_JOIN_BASE_URL",
        "CONFSYNC_SERVE_LISTEN",
        "CONFSYNC_SERVE_PUBLIC_URL",
        "CONFSYNC_SERVE_HOST_KEY",
        "CONFSYNC_SERVE_CHANNEL_KEY",
    ] {
        command.env_remove(name);
    }
    command
}

/// A `confsync` command with the environment the tests use (the webhook secret, alice's dev
/// token, no stray `CONFSYNC_*` settings), for tests that drive processes their own way.
pub fn confsync_command() -> Command {
    let mut command = confsync();
    command.env_remove("CONFSYNC_STORE_URL");
    command
}

/// `confsync apikey create`: the key it prints once.
pub fn create_api_key(config: &Path) -> String {
    let out = confsync()
        .args(["apikey", "create", "--name", "addon", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "apikey create: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// How a SIGTERM ended.
#[derive(Debug, Clone, Copy)]
pub struct TermOutcome {
    /// Exited by itself within the grace period.
    pub exited: bool,
    /// Exit status 0.
    pub success: bool,
    pub waited: Duration,
}

/// Log text kept per process (the tail, bounded).
const LOG_LIMIT: usize = 4 << 20;

/// A running `confsync serve`; killed (SIGKILL) and reaped on drop.
pub struct Serve {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT/`.
    pub base: String,
    logs: Arc<Mutex<String>>,
    pub pid: u32,
}

impl Serve {
    /// Starts serve and waits for its "serving on" line (the listener is bound then). Retries
    /// a few times if the port is still held (a previous incarnation's socket).
    pub async fn start(config: &Path) -> Serve {
        let mut last_logs = String::new();
        for attempt in 0..10 {
            let mut child = confsync()
                .args(["serve", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let stdout = child.stdout.take().unwrap();
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let first = lines.next().and_then(Result::ok).unwrap_or_default();
                let _ = tx.send(first);
                for _ in lines {}
            });
            let logs = Arc::new(Mutex::new(String::new()));
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut all = lock(&sink);
                    if all.len() > LOG_LIMIT {
                        let cut = all.len() - LOG_LIMIT / 2;
                        let cut = (cut..all.len())
                            .find(|i| all.is_char_boundary(*i))
                            .unwrap_or(all.len());
                        all.drain(..cut);
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
            });
            let started = Instant::now();
            let first = loop {
                match rx.try_recv() {
                    Ok(line) => break Some(line),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break None,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
                if started.elapsed() > Duration::from_secs(30) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            if let Some(base) = first
                .as_deref()
                .and_then(|l| l.trim().strip_prefix("confsync serving on "))
            {
                return Serve {
                    child: Some(child),
                    base: base.to_owned(),
                    logs,
                    pid,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            tokio::time::sleep(Duration::from_millis(100)).await;
            last_logs = lock(&logs).clone();
            eprintln!(
                "serve did not start (attempt {}), first line {first:?}; retrying",
                attempt + 1
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("confsync serve did not start; its log:\n{last_logs}");
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn logs(&self) -> String {
        lock(&self.logs).clone()
    }

    /// Whether the log shows a panic.
    pub fn panicked(&self) -> bool {
        lock(&self.logs).contains("panicked")
    }

    /// SIGKILL, then reap.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (through `kill -TERM`), then up to `grace` for it to exit; SIGKILL after that.
    pub async fn sigterm(&mut self, grace: Duration) -> TermOutcome {
        let Some(mut child) = self.child.take() else {
            return TermOutcome {
                exited: true,
                success: false,
                waited: Duration::ZERO,
            };
        };
        let sent = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return TermOutcome {
                    exited: true,
                    success: status.success(),
                    waited: sent.elapsed(),
                };
            }
            if sent.elapsed() > grace {
                let _ = child.kill();
                let _ = child.wait();
                return TermOutcome {
                    exited: false,
                    success: false,
                    waited: sent.elapsed(),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The add-on's side of confsync: `/v1` calls with the API key, a client without pooled
/// connections (serve restarts under it).
#[derive(Clone)]
pub struct Addon {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Addon {
    pub fn new(base: &str, key: &str) -> Addon {
        Addon {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: base.to_owned(),
            key: key.to_owned(),
        }
    }

    /// `POST /v1/conferences`: (status, body), or the transport error.
    pub async fn create_conference(
        &self,
        event_id: &str,
        request_id: &str,
    ) -> Result<(u16, Value), String> {
        let r = self
            .http
            .post(format!("{}v1/conferences", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"calendarId": ALICE, "eventId": event_id, "requestId": request_id}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `POST /v1/calendars/{alice}/sync` (the add-on's EventUpdated trigger).
    pub async fn sync(&self) -> Result<u16, String> {
        self.http
            .post(format!("{}v1/calendars/{ALICE}/sync", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// `GET /readyz`'s status (0: no answer).
    pub async fn readyz(&self) -> u16 {
        self.http
            .get(format!("{}readyz", self.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Value {
        match self
            .http
            .get(format!("{}v1/status", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

// --- the SQLite file, through the sqlite3 CLI ---------------------------------------------

/// Runs `sql` on the database with the `sqlite3` CLI (Err when it is not installed or fails).
pub fn sqlite3(db: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new("sqlite3")
        .arg("-batch")
        .arg("-cmd")
        .arg(".timeout 5000")
        .arg(db)
        .arg(sql)
        .output()
        .map_err(|e| format!("sqlite3 CLI not usable: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn sqlite3_installed() -> bool {
    Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `PRAGMA integrity_check`'s answer ("ok" when sound).
pub fn integrity_check(db: &Path) -> Result<String, String> {
    sqlite3(db, "PRAGMA integrity_check;")
}

/// Rows per table.
pub fn row_counts(db: &Path) -> Result<BTreeMap<String, i64>, String> {
    let tables = sqlite3(
        db,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name;",
    )?;
    let tables: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = tables
        .iter()
        .map(|t| format!("SELECT '{t}', COUNT(*) FROM \"{t}\""))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + ";";
    let out = sqlite3(db, &sql)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once('|')?;
            Some((t.to_owned(), n.trim().parse().ok()?))
        })
        .collect())
}

// --- waiting ------------------------------------------------------------------------------

/// Polls `check` every `every` until it answers Some or `limit` passes.
pub async fn until<T>(
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Median and max of durations (seconds), for the figures.
pub fn median_max(values: &[Duration]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut v: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, *v.last().unwrap())
}

/// Prints to stdout at once (figures survive a later panic in the output).
pub fn say(text: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.as_ref());
    let _ = out.flush();
}
