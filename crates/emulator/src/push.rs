//! Push notifications: `events.watch` channels and their delivery.
//!
//! Each channel has a delivery task that POSTs Google's headers (no body) to the channel's
//! address, in order, retrying 5xx answers and connection failures with exponential backoff.
//! Changes that arrive while an `exists` message is still waiting are coalesced into it (the
//! message number still advances, so numbers are increasing but not contiguous, as Google's).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Deliveries kept for inspection through the admin API.
const LOG_LIMIT: usize = 10_000;

/// One notification as it was delivered (or not).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub channel_id: String,
    pub calendar_id: String,
    pub message_number: u64,
    pub resource_state: String,
    pub address: String,
    /// The receiver's HTTP status of the last attempt (None: no answer).
    pub status: Option<u16>,
    pub attempts: u32,
    pub delivered: bool,
    pub at: String,
}

#[derive(Debug)]
struct Message {
    number: u64,
    state: &'static str,
}

struct Channel {
    id: String,
    token: Option<String>,
    address: String,
    calendar_id: String,
    resource_id: String,
    resource_uri: String,
    expiration_ms: i64,
    message_number: u64,
    stopped: bool,
    owner: String,
    /// True while an `exists` message waits in the queue (later changes fold into it).
    queued: Arc<AtomicBool>,
    tx: Option<mpsc::UnboundedSender<Message>>,
}

impl Channel {
    fn json(&self) -> Value {
        let mut v = json!({
            "kind": "api#channel",
            "id": self.id,
            "resourceId": self.resource_id,
            "resourceUri": self.resource_uri,
            "expiration": self.expiration_ms.to_string(),
        });
        if let Some(token) = &self.token {
            v["token"] = json!(token);
        }
        v
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub max_attempts: u32,
    pub retry_base: StdDuration,
    pub default_ttl_seconds: i64,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            max_attempts: 5,
            retry_base: StdDuration::from_millis(250),
            default_ttl_seconds: 604_800,
        }
    }
}

/// What a watch request asks for.
pub struct WatchRequest {
    pub id: String,
    pub token: Option<String>,
    pub address: String,
    pub ttl_seconds: Option<i64>,
}

/// All channels and the delivery log.
pub struct PushHub {
    channels: Mutex<HashMap<String, Channel>>,
    /// Calendar id -> the ids of the channels ever opened on it (a superset of its live ones:
    /// each is checked when used), so a change notifies without looking at every channel.
    /// Locked after `channels`, never alone.
    watching: Mutex<HashMap<String, Vec<String>>>,
    log: Arc<Mutex<VecDeque<Delivery>>>,
    client: reqwest::Client,
    settings: PushSettings,
    /// The runtime deliveries run on: the one the emulator serves on, once it does
    /// ([`crate::Emulator::spawn`]); until then, the caller's. A channel may be opened by a
    /// caller on another runtime (an in-process client), and Google's deliveries are Google's
    /// work, not that client's.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl PushHub {
    pub fn new(settings: PushSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(StdDuration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client can be built");
        PushHub {
            channels: Mutex::new(HashMap::new()),
            watching: Mutex::new(HashMap::new()),
            log: Arc::new(Mutex::new(VecDeque::new())),
            client,
            settings,
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// Deliveries run on `runtime` from now on (the first call wins).
    pub(crate) fn deliver_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// Validates a watch body (already checked against the Channel schema).
    pub fn parse_watch(body: &Value) -> Result<WatchRequest, ApiError> {
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::required("id"))?;
        if id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))
        {
            return Err(ApiError::invalid(format!(
                "Invalid channel id \"{id}\": up to 64 characters of [A-Za-z0-9-_+/=]"
            )));
        }
        match text("type").as_deref() {
            Some("web_hook" | "webhook") => {}
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid channel type \"{other}\": only web_hook is supported"
                )));
            }
            None => return Err(ApiError::required("type")),
        }
        let address = text("address").ok_or_else(|| ApiError::required("address"))?;
        let url = reqwest::Url::parse(&address)
            .map_err(|_| ApiError::invalid(format!("Invalid address \"{address}\": not a URL")))?;
        let loopback = matches!(
            url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        ) || url.host_str().is_some_and(|h| h.starts_with("127."));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "WebHook callback must be HTTPS: {address} (plain http is allowed only on loopback in the emulator)"
                ))
                .at("parameter", "address"));
            }
        }
        let token = text("token");
        if token.as_ref().is_some_and(|t| t.len() > 256) {
            return Err(ApiError::invalid(
                "Invalid channel token: longer than 256 characters",
            ));
        }
        let ttl_seconds = match body.get("params").and_then(|p| p.get("ttl")) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let ttl = v
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .or_else(|| v.as_i64());
                match ttl {
                    Some(t) if t > 0 => Some(t),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "Invalid params.ttl {v}: a positive number of seconds"
                        )));
                    }
                }
            }
        };
        Ok(WatchRequest {
            id,
            token,
            address,
            ttl_seconds,
        })
    }

    /// Creates a channel and sends its `sync` message. Returns the Channel resource.
    pub fn watch(
        &self,
        req: WatchRequest,
        owner: &str,
        calendar_id: &str,
        resource_id: &str,
        resource_uri: String,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels
            .get(&req.id)
            .is_some_and(|c| !c.stopped && c.expiration_ms > now.timestamp_millis())
        {
            return Err(
                ApiError::bad_request(format!("Channel id {} not unique", req.id))
                    .at("parameter", "id"),
            );
        }
        let ttl = req.ttl_seconds.unwrap_or(self.settings.default_ttl_seconds);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicBool::new(false));
        let channel = Channel {
            id: req.id.clone(),
            token: req.token,
            address: req.address,
            calendar_id: calendar_id.to_owned(),
            resource_id: resource_id.to_owned(),
            resource_uri,
            expiration_ms: now
                .timestamp_millis()
                .saturating_add(ttl.saturating_mul(1000)),
            message_number: 1,
            stopped: false,
            owner: owner.to_owned(),
            queued: queued.clone(),
            tx: Some(tx.clone()),
        };
        let body = channel.json();
        self.spawn_worker(&channel, rx, queued);
        let _ = tx.send(Message {
            number: 1,
            state: "sync",
        });
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let ids = watching.entry(calendar_id.to_owned()).or_default();
        if !ids.contains(&req.id) {
            ids.push(req.id.clone());
        }
        channels.insert(req.id, channel);
        Ok(body)
    }

    fn spawn_worker(
        &self,
        channel: &Channel,
        mut rx: mpsc::UnboundedReceiver<Message>,
        queued: Arc<AtomicBool>,
    ) {
        let client = self.client.clone();
        let log = self.log.clone();
        let settings = self.settings.clone();
        let (id, token, address, resource_id, resource_uri, calendar_id, expiration) = (
            channel.id.clone(),
            channel.token.clone(),
            channel.address.clone(),
            channel.resource_id.clone(),
            channel.resource_uri.clone(),
            channel.calendar_id.clone(),
            channel.expiration_ms,
        );
        let Some(runtime) = self
            .runtime
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            return;
        };
        runtime.spawn(async move {
            while let Some(message) = rx.recv().await {
                if message.state == "exists" {
                    queued.store(false, Ordering::SeqCst);
                }
                let mut attempts = 0;
                let mut status = None;
                let mut delivered = false;
                while attempts < settings.max_attempts {
                    attempts += 1;
                    let mut request = client
                        .post(&address)
                        .header("X-Goog-Channel-ID", &id)
                        .header("X-Goog-Channel-Expiration", expiration_header(expiration))
                        .header("X-Goog-Resource-ID", &resource_id)
                        .header("X-Goog-Resource-URI", &resource_uri)
                        .header("X-Goog-Resource-State", message.state)
                        .header("X-Goog-Message-Number", message.number.to_string())
                        .header("Content-Length", "0");
                    if let Some(token) = &token {
                        request = request.header("X-Goog-Channel-Token", token);
                    }
                    match request.send().await {
                        Ok(response) => {
                            let code = response.status().as_u16();
                            status = Some(code);
                            if matches!(code, 102 | 200 | 201 | 202 | 204) {
                                delivered = true;
                                break;
                            }
                            // Google retries only these; anything else counts as a failure.
                            if !matches!(code, 500 | 502 | 503 | 504) {
                                break;
                            }
                        }
                        Err(_) => status = None,
                    }
                    if attempts < settings.max_attempts {
                        let backoff = settings
                            .retry_base
                            .saturating_mul(2u32.saturating_pow(attempts - 1));
                        tokio::time::sleep(backoff).await;
                    }
                }
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() == LOG_LIMIT {
                    log.pop_front();
                }
                log.push_back(Delivery {
                    channel_id: id.clone(),
                    calendar_id: calendar_id.clone(),
                    message_number: message.number,
                    resource_state: message.state.to_owned(),
                    address: address.clone(),
                    status,
                    attempts,
                    delivered,
                    at: crate::time::rfc3339(Utc::now()),
                });
            }
        });
    }

    /// A calendar changed: every live channel on it gets an `exists` message.
    pub fn notify(&self, calendar_id: &str, now: DateTime<Utc>) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let ids = watching.get(calendar_id).map_or(&[][..], Vec::as_slice);
        for id in ids {
            let Some(channel) = channels
                .get_mut(id)
                .filter(|c| c.calendar_id == calendar_id && !c.stopped)
            else {
                continue;
            };
            if channel.expiration_ms <= now.timestamp_millis() {
                channel.stopped = true;
                channel.tx = None;
                continue;
            }
            channel.message_number += 1;
            if channel.queued.swap(true, Ordering::SeqCst) {
                continue; // folded into the message already waiting
            }
            if let Some(tx) = &channel.tx {
                let _ = tx.send(Message {
                    number: channel.message_number,
                    state: "exists",
                });
            }
        }
    }

    /// `channels.stop`: the caller must own the channel and name its resource id.
    pub fn stop(&self, id: &str, resource_id: &str, user: &str) -> Result<(), ApiError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.get_mut(id) {
            Some(c) if c.resource_id == resource_id && c.owner == user => {
                c.stopped = true;
                c.tx = None;
                Ok(())
            }
            _ => Err(ApiError::not_found().at("parameter", "id")),
        }
    }

    /// Every channel, for the admin API.
    pub fn list(&self, now: DateTime<Utc>) -> Vec<Value> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Value> = channels
            .values()
            .map(|c| {
                let mut v = c.json();
                v["calendarId"] = json!(c.calendar_id);
                v["address"] = json!(c.address);
                v["active"] = json!(!c.stopped && c.expiration_ms > now.timestamp_millis());
                v["lastMessageNumber"] = json!(c.message_number);
                v
            })
            .collect();
        out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        out
    }

    pub fn deliveries(&self, channel_id: Option<&str>) -> Vec<Delivery> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|d| channel_id.is_none_or(|c| d.channel_id == c))
            .cloned()
            .collect()
    }

    pub fn reset(&self) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.clear();
        self.watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        drop(channels);
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn expiration_header(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}
