//! Google push channels: one `events.watch` channel per synced calendar, each with its own id
//! and random secret token, replaced at about 80% of its lifetime (with overlap: the new channel
//! exists before the old one is stopped), and the webhook that receives their notifications.
//!
//! A notification is trusted only if its channel id is ours, its token matches (compared in
//! constant time against the stored hash) and its resource id is the channel's. `sync` messages
//! are acknowledged; `exists` marks the calendar dirty. Unknown or superseded channels are
//! acknowledged and stopped, at most once per channel per ten minutes. A replayed notification
//! (a message number already seen on its channel) is acknowledged and ignored.
//!
//! Push can fail silently (a channel Google dropped, a proxy eating requests), so silence is
//! watched too: a channel whose `sync` handshake never arrives, or a calendar that usually hears
//! from Google every few minutes and has been quiet for three of its usual gaps (at least
//! [`ChannelConfig::silence_floor`]), is polled at once instead of waiting for the sweep.

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
    /// How often channels are checked for renewal (and for silence).
    pub renew_check: Duration,
    /// A calendar is polled when quiet for three of its usual notification gaps, but never
    /// sooner than this after its last notification.
    pub silence_floor: Duration,
    /// A new channel whose `sync` handshake has not arrived after this long is suspect: its
    /// calendar is polled.
    pub handshake_grace: Duration,
}

impl ChannelConfig {
    /// Defaults for a public URL: Google's default lifetime, checks every minute.
    pub fn new(public_url: String) -> ChannelConfig {
        ChannelConfig {
            public_url,
            ttl_seconds: None,
            renew_check: Duration::from_secs(60),
            silence_floor: Duration::from_secs(600),
            handshake_grace: Duration::from_secs(120),
        }
    }
}

/// What the webhook has heard from one calendar: when, how often, and whether its silence was
/// already acted on.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    last_ms: Option<i64>,
    /// Moving average of the gaps between notifications (ms).
    gap_ms: Option<f64>,
    polled: bool,
}

impl Heard {
    /// A notification arrived.
    pub fn observe(&mut self, now_ms: i64) {
        if let Some(last) = self.last_ms {
            let gap = (now_ms - last).max(0) as f64;
            self.gap_ms = Some(match self.gap_ms {
                Some(avg) => avg * 0.8 + gap * 0.2,
                None => gap,
            });
        }
        self.last_ms = Some(now_ms);
        self.polled = false;
    }

    /// Whether the silence since the last notification is longer than expected; true once per
    /// silence.
    pub fn silent_too_long(&mut self, now_ms: i64, floor: Duration) -> bool {
        let (Some(last), Some(gap)) = (self.last_ms, self.gap_ms) else {
            return false; // no history: the sweep covers it
        };
        let expected = (gap * 3.0).max(floor.as_millis() as f64);
        if !self.polled && (now_ms - last) as f64 > expected {
            self.polled = true;
            return true;
        }
        false
    }
}

/// Outcome counters of the webhook, for status and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCounts {
    pub received: u64,
    pub rejected: u64,
    pub orphans: u64,
    /// Replays (a message number already seen), acknowledged and ignored.
    pub duplicates: u64,
    /// Calendars polled because their channel was silent longer than expected.
    pub silent_polls: u64,
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
    /// Per calendar: what the webhook heard.
    heard: Mutex<HashMap<String, Heard>>,
    /// Per channel: the highest message number seen.
    message_numbers: Mutex<HashMap<String, u64>>,
    /// Channels opened and not yet confirmed by their `sync` message: id -> (calendar, opened).
    handshakes: Mutex<HashMap<String, (String, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            heard: Mutex::new(HashMap::new()),
            message_numbers: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
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
        lock(&self.handshakes).insert(
            channel.channel_id.clone(),
            (calendar_id.to_owned(), channel.created_at),
        );
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

    /// Polls calendars whose push has gone quiet (see the module doc).
    fn poll_silent(&self, now: i64) {
        let grace = self.config.handshake_grace.as_millis() as i64;
        let unconfirmed: Vec<(String, String)> = {
            let mut handshakes = lock(&self.handshakes);
            let late: Vec<(String, String)> = handshakes
                .iter()
                .filter(|(_, (_, opened))| now - opened > grace)
                .map(|(id, (calendar, _))| (id.clone(), calendar.clone()))
                .collect();
            for (id, _) in &late {
                handshakes.remove(id);
            }
            late
        };
        let mut silent: Vec<String> = lock(&self.heard)
            .iter_mut()
            .filter_map(|(calendar, heard)| {
                heard
                    .silent_too_long(now, self.config.silence_floor)
                    .then(|| calendar.clone())
            })
            .collect();
        for (channel_id, calendar_id) in unconfirmed {
            warn!(
                channel_id,
                calendar_id, "push channel never confirmed (no sync message): polling its calendar"
            );
            silent.push(calendar_id);
        }
        for calendar_id in silent {
            info!(calendar_id, "push silent longer than expected: polling");
            lock(&self.counts).silent_polls += 1;
            self.scheduler.mark_dirty(&calendar_id);
        }
    }

    async fn renew_due(&self) -> Result<(), String> {
        let now = now_ms();
        self.poll_silent(now);
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
        // Google numbers each channel's messages in increasing order; a number already seen is
        // a replay (or a redelivery): acknowledged, not acted on twice.
        if let Some(number) = header("x-goog-message-number").and_then(|n| n.parse::<u64>().ok()) {
            let mut numbers = lock(&self.message_numbers);
            let seen = numbers.entry(channel_id.clone()).or_insert(0);
            if number != 0 && number <= *seen {
                drop(numbers);
                lock(&self.counts).duplicates += 1;
                return (StatusCode::OK, "duplicate message: ignored");
            }
            *seen = number;
        }
        lock(&self.heard)
            .entry(channel.calendar_id.clone())
            .or_default()
            .observe(now_ms());
        match state.as_str() {
            "sync" => {
                lock(&self.handshakes).remove(&channel_id);
                (StatusCode::OK, "sync acknowledged")
            }
            _ => {
                self.scheduler.mark_dirty(&channel.calendar_id);
                (StatusCode::OK, "calendar scheduled")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_calendar_gone_quiet_is_polled_once_per_silence() {
        let floor = Duration::from_secs(60);
        let mut heard = Heard::default();
        assert!(
            !heard.silent_too_long(1_000_000, floor),
            "no history, no guess"
        );
        // Notified every 30 s.
        for i in 0..10 {
            heard.observe(i * 30_000);
        }
        let last = 9 * 30_000;
        // 3 gaps = 90 s > the 60 s floor.
        assert!(!heard.silent_too_long(last + 80_000, floor));
        assert!(heard.silent_too_long(last + 100_000, floor));
        assert!(
            !heard.silent_too_long(last + 200_000, floor),
            "once per silence"
        );
        heard.observe(last + 210_000);
        assert!(!heard.silent_too_long(last + 220_000, floor));
    }

    #[test]
    fn a_quiet_calendar_is_not_polled_before_the_floor() {
        let floor = Duration::from_secs(600);
        let mut heard = Heard::default();
        heard.observe(0);
        heard.observe(1_000); // two notifications a second apart
        assert!(!heard.silent_too_long(300_000, floor));
        assert!(heard.silent_too_long(602_000, floor));
    }
}
