//! Google push channels: one `events.watch` channel per synced calendar, each with its own id
//! and random secret token, replaced at about 80% of its lifetime (with overlap: the new channel
//! exists before the old one is stopped), and the webhook that receives their notifications.
//!
//! A notification is trusted only if its channel id is ours, its token matches (compared in
//! constant time against the stored hash) and its resource id is the channel's. `sync` messages
//! are acknowledged; `exists` marks the calendar dirty. Unknown or superseded channels are
//! acknowledged and stopped, at most once per channel per ten minutes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use confsync_engine::CalendarApi;
use confsync_store::{Channel, Store};
use tracing::{info, warn};

use crate::Scheduler;

/// Push channel settings.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The service's public base URL (ends with '/'); notifications go to `{it}webhooks/google`.
    pub public_url: String,
    /// Requested channel lifetime (None: Google's default, 7 days).
    pub ttl_seconds: Option<u64>,
    /// How often channels are checked for renewal.
    pub renew_check: Duration,
}

/// Outcome counters of the webhook, for status and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCounts {
    pub received: u64,
    pub rejected: u64,
    pub orphans: u64,
}

/// The channel manager.
pub struct Channels {
    calendar: Arc<dyn CalendarApi>,
    store: Store,
    scheduler: Scheduler,
    config: ChannelConfig,
    opening: Mutex<HashSet<String>>,
    recent_stops: Mutex<HashMap<String, i64>>,
    counts: Mutex<WebhookCounts>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_token(bytes: usize) -> String {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

impl Channels {
    pub fn new(
        calendar: Arc<dyn CalendarApi>,
        store: Store,
        scheduler: Scheduler,
        config: ChannelConfig,
    ) -> Arc<Channels> {
        Arc::new(Channels {
            calendar,
            store,
            scheduler,
            config,
            opening: Mutex::new(HashSet::new()),
            recent_stops: Mutex::new(HashMap::new()),
            counts: Mutex::new(WebhookCounts::default()),
        })
    }

    pub fn counts(&self) -> WebhookCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes sure the calendar has a live channel; concurrent calls open at most one.
    pub async fn ensure(&self, calendar_id: &str) -> Result<(), String> {
        let live = self
            .store
            .live_channels(now_ms())
            .await
            .map_err(|e| e.to_string())?;
        if live.iter().any(|c| c.calendar_id == calendar_id) {
            return Ok(());
        }
        if !self
            .opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(calendar_id.to_owned())
        {
            return Ok(()); // another request is opening it
        }
        let result = self.open(calendar_id).await.map(|_| ());
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(calendar_id);
        result
    }

    async fn open(&self, calendar_id: &str) -> Result<Channel, String> {
        let channel_id = format!("cs-{}", random_token(18));
        let token = random_token(32);
        let address = format!("{}webhooks/google", self.config.public_url);
        // Recorded before the watch call: Google's `sync` message may arrive before the watch
        // answer, and must not be mistaken for an orphan. The resource id comes with the answer.
        let pending_ttl_ms = self
            .config
            .ttl_seconds
            .unwrap_or(604_800)
            .saturating_mul(1000) as i64;
        let mut channel = Channel {
            channel_id,
            calendar_id: calendar_id.to_owned(),
            resource_id: String::new(),
            token_hash: crate::hash_api_key(&token),
            expiration_ms: now_ms() + pending_ttl_ms,
            created_at: now_ms(),
            stopped: false,
        };
        self.store
            .channel_create(&channel)
            .await
            .map_err(|e| e.to_string())?;
        let watched = match self
            .calendar
            .watch(
                calendar_id,
                &channel.channel_id,
                &address,
                &token,
                self.config.ttl_seconds,
            )
            .await
        {
            Ok(w) => w,
            Err(e) => {
                let _ = self.store.channel_stop(&channel.channel_id).await;
                return Err(format!("watching calendar {calendar_id}: {e}"));
            }
        };
        channel.resource_id = watched.resource_id;
        channel.expiration_ms = watched.expiration_ms;
        if let Err(e) = self
            .store
            .channel_activate(
                &channel.channel_id,
                &channel.resource_id,
                channel.expiration_ms,
            )
            .await
        {
            // Not recorded: stop it, or Google would keep notifying a channel we cannot check.
            let _ = self
                .calendar
                .stop_channel(
                    Some(&channel.calendar_id),
                    &channel.channel_id,
                    &channel.resource_id,
                )
                .await;
            let _ = self.store.channel_stop(&channel.channel_id).await;
            return Err(e.to_string());
        }
        info!(calendar_id, channel_id = %channel.channel_id, expires_ms = channel.expiration_ms, "push channel opened");
        Ok(channel)
    }

    /// Replaces channels that reached about 80% of their lifetime (+-5% per channel, so they
    /// do not all renew at once): the new one first, then the old one is stopped.
    pub fn start_renewal(self: &Arc<Self>) {
        let channels = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(channels.config.renew_check);
            loop {
                tick.tick().await;
                if let Err(e) = channels.renew_due().await {
                    warn!(error = %e, "channel renewal failed; retried at the next check");
                }
            }
        });
    }

    async fn renew_due(&self) -> Result<(), String> {
        let now = now_ms();
        let live = self
            .store
            .live_channels(now)
            .await
            .map_err(|e| e.to_string())?;
        let mut newest: HashMap<&str, &Channel> = HashMap::new();
        for c in &live {
            newest.entry(c.calendar_id.as_str()).or_insert(c);
        }
        for channel in &live {
            let is_newest = newest
                .get(channel.calendar_id.as_str())
                .is_some_and(|n| n.channel_id == channel.channel_id);
            if !is_newest {
                self.stop(channel).await; // superseded by a newer one
                continue;
            }
            let lifetime = (channel.expiration_ms - channel.created_at).max(1);
            let spread = 0.95
                + (channel.channel_id.bytes().map(u64::from).sum::<u64>() % 100) as f64 / 1000.0;
            let renew_at = channel.created_at + (lifetime as f64 * 0.8 * spread) as i64;
            if now >= renew_at {
                self.open(&channel.calendar_id).await?;
                self.stop(channel).await;
                info!(calendar_id = %channel.calendar_id, old = %channel.channel_id, "push channel replaced");
            }
        }
        Ok(())
    }

    async fn stop(&self, channel: &Channel) {
        if let Err(e) = self
            .calendar
            .stop_channel(
                Some(&channel.calendar_id),
                &channel.channel_id,
                &channel.resource_id,
            )
            .await
        {
            warn!(channel_id = %channel.channel_id, error = %e, "stopping a channel failed");
        }
        let _ = self.store.channel_stop(&channel.channel_id).await;
    }

    /// Stops a channel we do not want, at most once per ten minutes per channel id.
    async fn stop_orphan(&self, channel_id: &str, resource_id: &str) {
        let now = now_ms();
        {
            let mut recent = self.recent_stops.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|_, at| now - *at < 600_000);
            if recent.contains_key(channel_id) || recent.len() > 10_000 {
                return;
            }
            recent.insert(channel_id.to_owned(), now);
        }
        if let Err(e) = self
            .calendar
            .stop_channel(None, channel_id, resource_id)
            .await
        {
            warn!(channel_id, error = %e, "stopping an orphan channel failed");
        }
    }

    /// Handles one notification; answers the status to send back.
    pub async fn on_notification(&self, headers: &HeaderMap) -> (StatusCode, &'static str) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let reject = |why: &'static str| {
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected += 1;
            (StatusCode::BAD_REQUEST, why)
        };
        let (Some(channel_id), Some(resource_id), Some(state)) = (
            header("x-goog-channel-id"),
            header("x-goog-resource-id"),
            header("x-goog-resource-state"),
        ) else {
            return reject(
                "missing X-Goog-Channel-ID, X-Goog-Resource-ID or X-Goog-Resource-State",
            );
        };
        let channel = match self.store.channel(&channel_id).await {
            Ok(c) => c,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry"),
        };
        let Some(channel) = channel else {
            // Not ours (any more): acknowledge, and ask Google to stop sending.
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .orphans += 1;
            self.stop_orphan(&channel_id, &resource_id).await;
            return (StatusCode::OK, "unknown channel: stopped");
        };
        let token_ok = header("x-goog-channel-token").is_some_and(|t| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                crate::hash_api_key(&t).as_bytes(),
                channel.token_hash.as_bytes(),
            )
            .is_ok()
        });
        // A channel whose watch answer is still on its way has no resource id yet.
        let resource_ok = channel.resource_id.is_empty() || channel.resource_id == resource_id;
        if !token_ok || !resource_ok {
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected += 1;
            warn!(
                channel_id,
                "notification with a wrong token or resource id rejected"
            );
            return (
                StatusCode::UNAUTHORIZED,
                "channel token or resource id does not match",
            );
        }
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received += 1;
        if channel.stopped {
            self.stop_orphan(&channel_id, &resource_id).await;
            return (StatusCode::OK, "superseded channel: stopped");
        }
        match state.as_str() {
            "sync" => (StatusCode::OK, "sync acknowledged"),
            _ => {
                self.scheduler.mark_dirty(&channel.calendar_id);
                (StatusCode::OK, "calendar scheduled")
            }
        }
    }
}
