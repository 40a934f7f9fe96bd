//! Google push channels: one `events.watch` channel per synced calendar, each with its own id
//! and random secret token, replaced at about 80% of its lifetime (with overlap: the new channel
//! exists before the old one is stopped), and the webhook that receives their notifications.
//!
//! A notification is trusted only if its channel id is ours, its token matches (compared in
//! constant time against the stored hash) and its resource id is the channel's. `sync` messages
//! are acknowledged; `exists` marks the calendar dirty. A replayed notification (a message number
//! not above the highest one the store has accepted on its channel) is acknowledged and ignored.
//!
//! The webhook is public, so what a stranger sends must cost nothing: headers are checked for
//! presence, length (Google's limits) and shape before any work; the message number must be a
//! decimal integer of at least 1. Channel ids carry their own proof of origin ([`ChannelKey`]:
//! a random part and a truncated HMAC of it), so a made-up id is refused without a store write,
//! an outbound call or any memory kept for it. Our own channels that we no longer want (a valid
//! id the store does not know, or one we stopped) are stopped through a small budget of their
//! own (a few stops a minute, each id at most once per ten minutes, bounded memory), in the
//! background, never through the rate budget syncs use.
//!
//! Push can fail silently (a channel Google dropped, a proxy eating requests), so silence is
//! watched too: a channel whose `sync` handshake never arrives, or a channel that usually hears
//! from Google every few minutes and has been quiet for three of its usual gaps (at least
//! [`ChannelConfig::silence_floor`]), is polled at once instead of waiting for the sweep. What
//! each channel heard is kept in the store with the message mark (no extra write), and the
//! worker holding the channel duty watches it, so it does not matter which worker behind the
//! load balancer received each notification.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use confsync_engine::CalendarApi;
use confsync_store::{Channel, Quiet, Store};
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

/// Longest header values Google sends: channel ids are at most 64 characters and tokens at most
/// 256 (events.watch refuses longer ones); resource ids are opaque and short (about 30
/// characters; 256 is generous); resource states are `sync`, `exists`, `not_exists`.
pub const MAX_CHANNEL_ID: usize = 64;
pub const MAX_CHANNEL_TOKEN: usize = 256;
pub const MAX_RESOURCE_ID: usize = 256;
pub const MAX_RESOURCE_STATE: usize = 16;

/// The key that makes our channel ids verifiable without the store: an id is `cs1-`, 16 random
/// bytes and the first 12 bytes of HMAC-SHA256(key, random part), base64url (42 characters,
/// within Google's 64). Only someone holding the key can make an id that verifies, so an id
/// that does not is not ours and costs nothing; one that does is a channel we opened (perhaps
/// before a crash lost its row), worth stopping.
#[derive(Clone)]
pub struct ChannelKey([u8; 32]);

const ID_PREFIX: &str = "cs1-";
const ID_RANDOM_LEN: usize = 22; // 16 bytes, base64url without padding
const ID_TAG_LEN: usize = 16; // 12 bytes

impl ChannelKey {
    /// A key derived from a configured secret (domain-separated: the same secret used for
    /// another purpose gives an unrelated key).
    pub fn derive(secret: &[u8]) -> ChannelKey {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, b"confsync push channel ids v1");
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        ChannelKey(bytes)
    }

    /// A random key, for this process only: channels opened before a restart are then still
    /// recognised through the store (see [`Channels::on_notification`]) until they are renewed.
    pub fn random() -> ChannelKey {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random generator is available");
        ChannelKey(bytes)
    }

    fn tag(&self, random: &str) -> String {
        use base64::Engine;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&key, random.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12])
    }

    /// A new channel id.
    pub fn new_id(&self) -> String {
        let random = random_token(16);
        format!("{ID_PREFIX}{random}{}", self.tag(&random))
    }

    /// Whether `id` was made with this key (constant time in the tag).
    pub fn verify(&self, id: &str) -> bool {
        let Some(rest) = id.strip_prefix(ID_PREFIX) else {
            return false;
        };
        if rest.len() != ID_RANDOM_LEN + ID_TAG_LEN || !rest.is_ascii() {
            return false;
        }
        let (random, tag) = rest.split_at(ID_RANDOM_LEN);
        aws_lc_rs::constant_time::verify_slices_are_equal(
            self.tag(random).as_bytes(),
            tag.as_bytes(),
        )
        .is_ok()
    }
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelKey(***)")
    }
}

/// How the channel manager tells and stops channels that are not (or no longer) wanted.
#[derive(Clone)]
pub struct ChannelOptions {
    /// Signs and verifies channel ids.
    pub key: ChannelKey,
    /// The calendar orphan stops go through: one *without* the rate budgets syncs use (None:
    /// the manager's own calendar).
    pub orphan_calendar: Option<Arc<dyn CalendarApi>>,
    /// Orphan stops per minute (a token bucket holding at most this many); 0: orphans are left
    /// to expire by themselves.
    pub orphan_stops_per_minute: u32,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            key: ChannelKey::random(),
            orphan_calendar: None,
            orphan_stops_per_minute: 5,
        }
    }
}

/// At most this many orphan ids are remembered (as stopped within ten minutes).
const ORPHAN_MEMORY: usize = 256;
const ORPHAN_REPEAT_MS: i64 = 600_000;

/// The orphan stops' own budget: a token bucket and the ids stopped lately (bounded).
struct OrphanBudget {
    per_minute: u32,
    tokens: f64,
    at_ms: i64,
    recent: VecDeque<(String, i64)>,
}

impl OrphanBudget {
    fn new(per_minute: u32, now: i64) -> OrphanBudget {
        OrphanBudget {
            per_minute,
            tokens: f64::from(per_minute),
            at_ms: now,
            recent: VecDeque::new(),
        }
    }

    /// Whether `id` may be stopped now (and if so, it is remembered and a token is spent).
    fn take(&mut self, id: &str, now: i64) -> bool {
        if self.per_minute == 0 {
            return false;
        }
        while self
            .recent
            .front()
            .is_some_and(|(_, at)| now - at >= ORPHAN_REPEAT_MS)
        {
            self.recent.pop_front();
        }
        if self.recent.iter().any(|(known, _)| known == id) {
            return false;
        }
        let rate = f64::from(self.per_minute) / 60_000.0;
        self.tokens =
            (self.tokens + (now - self.at_ms).max(0) as f64 * rate).min(f64::from(self.per_minute));
        self.at_ms = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        if self.recent.len() >= ORPHAN_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back((id.to_owned(), now));
        true
    }
}

/// A strict `X-Goog-Message-Number`: decimal digits only, 1 to 2^63-1 (Google numbers messages
/// from 1 upward; the store keeps the highest as a signed 64-bit integer).
pub fn parse_message_number(value: &str) -> Option<i64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .and_then(|n| i64::try_from(n).ok())
        .filter(|n| *n >= 1)
}

/// Characters Google allows in a channel id.
fn channel_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_+/=".contains(&b)
}

/// Outcome counters of the webhook, for status and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCounts {
    pub received: u64,
    pub rejected: u64,
    pub orphans: u64,
    /// Orphan stops sent (through their own budget).
    pub orphan_stops: u64,
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
    key: ChannelKey,
    orphan_calendar: Arc<dyn CalendarApi>,
    orphan_budget: Mutex<OrphanBudget>,
    /// Whether a live channel in the store has an id the key does not verify (opened before an
    /// upgrade or under another key): until none has, ids that fail verification are looked up
    /// (a read, nothing more). Updated at each renewal check.
    unverified_live: AtomicBool,
    counts: Mutex<WebhookCounts>,
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
        Self::with_options(
            calendar,
            store,
            scheduler,
            config,
            ChannelOptions::default(),
        )
    }

    /// A channel manager with its id key and orphan budget.
    pub fn with_options(
        calendar: Arc<dyn CalendarApi>,
        store: Store,
        scheduler: Scheduler,
        config: ChannelConfig,
        options: ChannelOptions,
    ) -> Arc<Channels> {
        Arc::new(Channels {
            orphan_calendar: options.orphan_calendar.unwrap_or_else(|| calendar.clone()),
            calendar,
            store,
            scheduler,
            config,
            opening: Mutex::new(HashSet::new()),
            key: options.key,
            orphan_budget: Mutex::new(OrphanBudget::new(options.orphan_stops_per_minute, now_ms())),
            unverified_live: AtomicBool::new(true),
            counts: Mutex::new(WebhookCounts::default()),
        })
    }

    /// How many channel ids the manager keeps in memory (orphans stopped lately; what channels
    /// heard is in the store): bounded, and never grown by a made-up id.
    pub fn remembered_ids(&self) -> usize {
        lock(&self.orphan_budget).recent.len()
    }

    pub fn counts(&self) -> WebhookCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes sure the calendar has a live channel; concurrent calls open at most one.
    pub async fn ensure(&self, calendar_id: &str) -> Result<(), String> {
        if self
            .store
            .has_live_channel(calendar_id, now_ms())
            .await
            .map_err(|e| e.to_string())?
        {
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
        let channel_id = self.key.new_id();
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
                // One worker renews and watches for silence at a time (the duty passes on
                // when its holder dies); what each channel heard is in the store, whichever
                // worker heard it.
                let engine = channels.scheduler.engine();
                let ttl = (channels.config.renew_check * 3).as_millis() as i64;
                match engine
                    .store
                    .take_duty(
                        "channels",
                        &engine.config.worker,
                        engine.store.clock_ms(),
                        ttl,
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        warn!(error = %e, "cannot take the channel renewal duty; retried at the next check");
                        continue;
                    }
                }
                channels.poll_quiet(now_ms()).await;
                if let Err(e) = channels.renew_due().await {
                    warn!(error = %e, "channel renewal failed; retried at the next check");
                }
            }
        });
    }

    /// Polls calendars whose push has gone quiet (see the module doc): a channel that never
    /// confirmed (no `sync` message), or one silent much longer than usual. Each silence is
    /// answered once, by a trigger recorded in the store (any worker syncs it).
    async fn poll_quiet(&self, now: i64) {
        let quiet = match self
            .store
            .channels_gone_quiet(
                now,
                self.config.handshake_grace.as_millis() as i64,
                self.config.silence_floor.as_millis() as i64,
            )
            .await
        {
            Ok(quiet) => quiet,
            Err(e) => {
                warn!(error = %e, "cannot look for quiet push channels; retried at the next check");
                return;
            }
        };
        for (channel, why) in quiet {
            let (channel_id, calendar_id) = (&channel.channel_id, &channel.calendar_id);
            match why {
                Quiet::NoHandshake => warn!(
                    channel_id,
                    calendar_id,
                    "push channel never confirmed (no sync message): polling its calendar"
                ),
                Quiet::Silent => {
                    info!(
                        channel_id,
                        calendar_id, "push silent longer than expected: polling"
                    )
                }
            }
            lock(&self.counts).silent_polls += 1;
            if let Err(e) = self.scheduler.request_sync(calendar_id).await {
                warn!(calendar_id, error = %e, "cannot record the poll of a quiet calendar; the sweep covers it");
            }
        }
    }

    async fn renew_due(&self) -> Result<(), String> {
        let now = now_ms();
        let live = self
            .store
            .live_channels(now)
            .await
            .map_err(|e| e.to_string())?;
        self.unverified_live.store(
            live.iter().any(|c| !self.key.verify(&c.channel_id)),
            Ordering::Relaxed,
        );
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

    /// Stops a forgotten calendar's channels at Google (`channels.stop`), best effort, and
    /// forgets what this worker watched of them; answers how many were stopped. Their records
    /// are gone already, so one whose stop failed is stopped as an orphan when it next
    /// notifies, or expires by itself.
    pub async fn stop_forgotten(&self, channels: &[Channel]) -> usize {
        let mut stopped = 0;
        for channel in channels {
            match self
                .calendar
                .stop_channel(
                    Some(&channel.calendar_id),
                    &channel.channel_id,
                    &channel.resource_id,
                )
                .await
            {
                Ok(()) => stopped += 1,
                Err(e) => {
                    warn!(channel_id = %channel.channel_id, error = %e, "stopping a forgotten calendar's channel failed; it is stopped when it next notifies, or expires")
                }
            }
        }
        stopped
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

    /// Stops one of our channels we no longer want (its id verified), through the orphan
    /// budget, in the background: the webhook answers at once. Without a token left, or if the
    /// id was stopped in the last ten minutes, nothing is sent (Google notifies again; the
    /// channel expires by itself anyway).
    fn stop_orphan(&self, calendar_id: Option<&str>, channel_id: &str, resource_id: &str) {
        if !lock(&self.orphan_budget).take(channel_id, now_ms()) {
            return;
        }
        lock(&self.counts).orphan_stops += 1;
        let calendar = self.orphan_calendar.clone();
        let (calendar_id, channel_id, resource_id) = (
            calendar_id.map(str::to_owned),
            channel_id.to_owned(),
            resource_id.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = calendar
                .stop_channel(calendar_id.as_deref(), &channel_id, &resource_id)
                .await
            {
                warn!(channel_id, error = %e, "stopping an orphan channel failed");
            }
        });
    }

    /// Handles one notification; answers the status to send back.
    ///
    /// What a stranger can send costs nothing: headers are checked before any work, and an id
    /// the key does not verify is refused without a store write, an outbound call or memory.
    /// It is answered 400: Google's push documentation counts any status other than
    /// 200/201/202/204/102 as a failed delivery and retries only 500/502/503/504, so a 4xx
    /// draws no retries, and Google never sends an id we did not make.
    pub async fn on_notification(&self, headers: &HeaderMap) -> (StatusCode, &'static str) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let reject = |why: &'static str| {
            lock(&self.counts).rejected += 1;
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
        let token = header("x-goog-channel-token");
        if channel_id.is_empty()
            || channel_id.len() > MAX_CHANNEL_ID
            || !channel_id.bytes().all(channel_id_char)
            || resource_id.len() > MAX_RESOURCE_ID
            || state.len() > MAX_RESOURCE_STATE
            || token.is_some_and(|t| t.len() > MAX_CHANNEL_TOKEN)
        {
            return reject("a push header is longer than Google's or malformed");
        }
        let Some(number) = header("x-goog-message-number").and_then(parse_message_number) else {
            return reject("X-Goog-Message-Number must be a decimal integer of at least 1");
        };
        let verified = self.key.verify(channel_id);
        if !verified && !self.unverified_live.load(Ordering::Relaxed) {
            return reject("unknown channel");
        }
        // A live channel's next message with the right token and resource: accepted, and its
        // trigger recorded, in one store step. Anything else goes the long way below, which
        // tells a stopped, unknown, forged or repeated message apart.
        let record_trigger = state != "sync";
        let token_hash = token.map(crate::hash_api_key);
        let push = token_hash
            .as_deref()
            .map(|token_hash| confsync_store::PushMessage {
                channel_id,
                resource_id,
                token_hash,
                number,
                now_ms: now_ms(),
                record_trigger,
            });
        if let Some(push) = &push {
            match self.store.accept_push(push).await {
                Ok(Some((calendar_id, recorded))) => {
                    lock(&self.counts).received += 1;
                    return self.accepted(&calendar_id, record_trigger, recorded);
                }
                Ok(None) => {}
                Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry"),
            }
        }
        let channel = match self.store.channel(channel_id).await {
            Ok(c) => c,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry"),
        };
        let channel = match channel {
            Some(c) if verified || !c.stopped => c,
            None if verified => {
                // Ours, but not known (any more): acknowledge, and ask Google to stop sending.
                lock(&self.counts).orphans += 1;
                self.stop_orphan(None, channel_id, resource_id);
                return (StatusCode::OK, "unknown channel: stopped");
            }
            _ => return reject("unknown channel"),
        };
        let token_ok = token.is_some_and(|t| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                crate::hash_api_key(t).as_bytes(),
                channel.token_hash.as_bytes(),
            )
            .is_ok()
        });
        // A channel whose watch answer is still on its way has no resource id yet.
        let resource_ok = channel.resource_id.is_empty() || channel.resource_id == resource_id;
        if !token_ok || !resource_ok {
            lock(&self.counts).rejected += 1;
            warn!(
                channel_id,
                "notification with a wrong token or resource id rejected"
            );
            return (
                StatusCode::UNAUTHORIZED,
                "channel token or resource id does not match",
            );
        }
        lock(&self.counts).received += 1;
        if channel.stopped {
            self.stop_orphan(Some(&channel.calendar_id), channel_id, resource_id);
            return (StatusCode::OK, "superseded channel: stopped");
        }
        // Google numbers each channel's messages in increasing order; a number not above the
        // highest one accepted is a replay (or a redelivery): acknowledged, not acted on twice.
        // (Checked and accepted again in the store, with the trigger: the channel may have
        // changed since it was read.)
        let Some(push) = &push else {
            return (
                StatusCode::UNAUTHORIZED,
                "channel token or resource id does not match",
            );
        };
        match self.store.accept_push(push).await {
            Ok(Some((calendar_id, recorded))) => {
                self.accepted(&calendar_id, record_trigger, recorded)
            }
            Ok(None) => {
                lock(&self.counts).duplicates += 1;
                (StatusCode::OK, "duplicate message: ignored")
            }
            // If the store cannot record it, Google retries later.
            Err(e) => {
                warn!(calendar_id = %channel.calendar_id, error = %e, "could not record a notification; asking Google to retry");
                (StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry")
            }
        }
    }

    /// The answer to a message the store accepted (and, for an `exists` message, whose trigger
    /// it recorded before the 200: a notification acknowledged to Google is never lost to a
    /// restart): the calendar is scheduled.
    fn accepted(
        &self,
        calendar_id: &str,
        record_trigger: bool,
        recorded: bool,
    ) -> (StatusCode, &'static str) {
        if !record_trigger {
            return (StatusCode::OK, "sync acknowledged");
        }
        if recorded {
            self.scheduler.mark_dirty(calendar_id);
        }
        (StatusCode::OK, "calendar scheduled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_verify_only_under_their_key() {
        let key = ChannelKey::derive(b"a configured secret of some length");
        let id = key.new_id();
        assert!(
            id.len() <= MAX_CHANNEL_ID && id.bytes().all(channel_id_char),
            "{id}"
        );
        assert!(key.verify(&id));
        assert_ne!(key.new_id(), id);
        assert!(!ChannelKey::derive(b"another secret").verify(&id));
        assert!(!ChannelKey::random().verify(&id));
        let mut forged = id.clone();
        forged.pop();
        forged.push(if id.ends_with('A') { 'B' } else { 'A' });
        assert!(!key.verify(&forged));
        for bad in [
            "",
            "cs1-",
            "cs-not-ours",
            &id[..id.len() - 1],
            &format!("{id}x"),
        ] {
            assert!(!key.verify(bad), "{bad}");
        }
        assert_eq!(format!("{key:?}"), "ChannelKey(***)");
    }

    #[test]
    fn message_numbers_are_parsed_strictly() {
        assert_eq!(parse_message_number("1"), Some(1));
        assert_eq!(parse_message_number("0042"), Some(42));
        assert_eq!(parse_message_number("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1 ",
            "abc",
            "1e3",
            "0x10",
            "1.0",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_message_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_orphan_budget_is_small_bounded_and_stops_an_id_once() {
        let mut budget = OrphanBudget::new(3, 0);
        assert!(budget.take("a", 0));
        assert!(!budget.take("a", 1), "once per ten minutes");
        assert!(budget.take("b", 2));
        assert!(budget.take("c", 3));
        assert!(!budget.take("d", 4), "three a minute");
        assert!(budget.take("d", 20_010), "a token back after 20 s");
        assert!(budget.take("a", ORPHAN_REPEAT_MS + 100_000));
        let mut budget = OrphanBudget::new(60, 0);
        for i in 0..100_000i64 {
            budget.take(&format!("id{i}"), i * 1_000);
        }
        assert!(budget.recent.len() <= ORPHAN_MEMORY);
        assert!(!OrphanBudget::new(0, 0).take("a", 0), "0: never");
    }
}
