//! The `daily` adapter: Daily rooms (`https://api.daily.co/v1`, Bearer API key).
//!
//! A Daily room is a place, not a scheduled meeting: the only time it knows is a join window.
//! confsync makes one room per conference:
//! - name: `room_prefix` + 32 hex digits of HMAC-SHA256(API key, key), so a retried create
//!   finds the same room and nobody can guess the room from the event (public rooms admit anyone
//!   who knows the name). Rotating the API key changes names only for creates made afterwards.
//! - `POST /rooms {name, privacy, properties{nbf, exp, eject_at_room_exp}}` with
//!   `nbf` = start - early join and `exp` = end + grace (all-day events: the day in every zone,
//!   see [`http::join_window`]). If `exp` would already be past (an event in the past), the room
//!   gets `exp` = now + 10 minutes so Daily accepts it, and expires soon after.
//! - A 400 on create (Daily answers `invalid-request-error` "... already exists" for a taken
//!   name): the name is ours, so `GET /rooms/{name}`; if the room is there it is adopted and its
//!   window set (`POST /rooms/{name}`); if not, the 400 is a permanent error.
//! - Update = `POST /rooms/{name}` with the new privacy and window, before the old `exp`
//!   passes. Daily deletes expired rooms (they answer 404), so a 404 there recreates the room with
//!   the same name; `update` always answers the room's URL, and when Daily gives a different one
//!   the engine writes it back into the event.
//! - Delete = `DELETE /rooms/{name}`; 404 (gone or expired) counts as done. Daily allows only
//!   about 2 deletes a second: deletes go through a client-side [`RateLimiter`] shared by the
//!   provider instance (`delete_interval_ms`, default 500), and a 429 on delete also pushes the
//!   limiter back by its `Retry-After`. Every 429 is `RateLimited` with `Retry-After` honoured.
//!
//! Capabilities: only time (and recurrence, which changes the window) updates in place; a room
//! has no title, description or attendees. Occurrences are not supported: a series has one room
//! (moved or cancelled instances keep the series' room; `update_occurrence` and
//! `cancel_occurrence` are no-ops if called).
//!
//! Recurring series: the series' end is not computed from the rules, so a series' room gets
//! `nbf` only and no `exp` (permanent until the series is deleted); an update of a series sends
//! `"exp": null` to clear an `exp` a single event had.
//!
//! Unsure, noted: the exact wording of the "already exists" error (any 400 on create is checked
//! with a GET, so the wording does not matter); whether `"exp": null` clears an expiry (Daily's
//! reference does not say; covered by a test that names the doubt); older Daily docs limit
//! domain + room name to 41 characters, newer ones the name to 128: the default prefix keeps
//! names at 35 characters.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Answer, Secret};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

const PROVIDER: &str = "daily";
/// Hex digits of the HMAC in a room name.
const NAME_HASH: usize = 32;
const MAX_NAME: usize = 128;

/// Who may enter a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DailyPrivacy {
    /// Anyone with the (unguessable) URL.
    #[default]
    Public,
    /// Only with a meeting token or by knocking (guests from the event cannot join unless the
    /// room lets them knock).
    Private,
}

impl DailyPrivacy {
    fn as_str(self) -> &'static str {
        match self {
            DailyPrivacy::Public => "public",
            DailyPrivacy::Private => "private",
        }
    }
}

/// `[provider]` settings of the `daily` kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyConfig {
    /// The domain's API key (Developers page of the Daily dashboard).
    pub api_key: Secret,
    /// The REST API's base URL.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub privacy: DailyPrivacy,
    /// Minutes before the start the room opens (`nbf`).
    #[serde(default = "default_early_join")]
    pub early_join_minutes: u64,
    /// Minutes after the end the room closes (`exp`).
    #[serde(default = "default_grace")]
    pub grace_minutes: u64,
    /// Put in front of every room name (letters, digits, '-' and '_'; at most 64).
    #[serde(default = "default_prefix")]
    pub room_prefix: String,
    /// Send `eject_at_room_exp`: participants are removed when the room expires.
    #[serde(default = "default_true")]
    pub eject_at_room_exp: bool,
    /// Least time between two deletes (Daily allows about 2 a second).
    #[serde(default = "default_delete_interval")]
    pub delete_interval_ms: u64,
    /// Seconds before a call is abandoned.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_base_url() -> String {
    "https://api.daily.co/v1".into()
}
fn default_early_join() -> u64 {
    15
}
fn default_grace() -> u64 {
    60
}
fn default_prefix() -> String {
    "cs-".into()
}
fn default_true() -> bool {
    true
}
fn default_delete_interval() -> u64 {
    500
}
fn default_timeout() -> u64 {
    30
}

/// Spaces calls at least `interval` apart, in call order, across every task sharing it. Waits
/// on tokio's clock (so tests can pause it). A waiter that is dropped gives up its slot's wait,
/// not the slot.
pub struct RateLimiter {
    interval: Duration,
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next: std::sync::Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.slot();
            let now = tokio::time::Instant::now();
            let at = next.filter(|n| *n > now).unwrap_or(now);
            *next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// No turn before `pause` from now (the server said so).
    pub fn hold_off(&self, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        let mut next = self.slot();
        if next.is_none_or(|n| n < until) {
            *next = Some(until);
        }
    }
}

/// The Daily provider.
pub struct DailyProvider {
    client: reqwest::Client,
    api_key: Secret,
    base_url: String,
    privacy: DailyPrivacy,
    early_join: Duration,
    grace: Duration,
    room_prefix: String,
    eject_at_room_exp: bool,
    deletes: RateLimiter,
}

#[derive(Deserialize)]
struct Room {
    name: Option<String>,
    url: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl DailyProvider {
    /// Validates `config`.
    pub fn new(config: DailyConfig) -> Result<Self, String> {
        let base_url = crate::jitsi::check_base_url("base_url", &config.base_url)?;
        if config.room_prefix.len() > 64
            || !config
                .room_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "room_prefix {:?}: at most 64 of letters, digits, '-' and '_' (Daily room names are [A-Za-z0-9_-], at most {MAX_NAME})",
                config.room_prefix
            ));
        }
        let early_join =
            crate::jitsi::check_minutes("early_join_minutes", config.early_join_minutes)?;
        let grace = crate::jitsi::check_minutes("grace_minutes", config.grace_minutes)?;
        if config.delete_interval_ms > 60_000 {
            return Err(format!(
                "delete_interval_ms = {} is more than a minute",
                config.delete_interval_ms
            ));
        }
        if !(1..=300).contains(&config.timeout_secs) {
            return Err(format!(
                "timeout_secs = {} must be between 1 and 300",
                config.timeout_secs
            ));
        }
        Ok(DailyProvider {
            client: http::client(Duration::from_secs(config.timeout_secs))?,
            api_key: config.api_key,
            base_url,
            privacy: config.privacy,
            early_join,
            grace,
            room_prefix: config.room_prefix,
            eject_at_room_exp: config.eject_at_room_exp,
            deletes: RateLimiter::new(Duration::from_millis(config.delete_interval_ms)),
        })
    }

    /// The room name for an idempotency key.
    pub fn room_name(&self, key: &str) -> String {
        let mac = http::hmac_sha256_hex(
            self.api_key.expose().as_bytes(),
            format!("confsync daily room\n{key}").as_bytes(),
        );
        format!("{}{}", self.room_prefix, &mac[..NAME_HASH])
    }

    /// The limiter deletes go through (shared by every call on this provider).
    pub fn delete_limiter(&self) -> &RateLimiter {
        &self.deletes
    }

    /// `nbf`, `exp` and `eject_at_room_exp` for `spec`. `clearing`: an update, which must
    /// remove an `exp` when the meeting became a series.
    fn properties(&self, spec: &MeetingSpec, clearing: bool) -> Value {
        let (nbf, exp) = http::join_window(spec.start, spec.end, self.early_join, self.grace);
        let mut properties = json!({ "nbf": nbf.timestamp() });
        if spec.recurrence.is_empty() {
            let soonest = Utc::now() + TimeDelta::minutes(10);
            properties["exp"] = json!(exp.max(soonest).timestamp());
            properties["eject_at_room_exp"] = json!(self.eject_at_room_exp);
        } else if clearing {
            properties["exp"] = Value::Null;
            properties["eject_at_room_exp"] = json!(false);
        }
        properties
    }

    fn room_path(&self, name: &str) -> Result<String, ProviderError> {
        if !valid_name(name) {
            return Err(ProviderError::Permanent {
                provider: PROVIDER.into(),
                detail: format!("{name:?} is not a Daily room name"),
            });
        }
        Ok(format!("{}/rooms/{name}", self.base_url))
    }

    fn room_url(answer: &Answer) -> Result<String, ProviderError> {
        let room: Room = answer.json()?;
        match (room.name, room.url) {
            (Some(_), Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                Ok(url)
            }
            _ => Err(ProviderError::Transient {
                provider: PROVIDER.into(),
                detail: format!("{}: the room has no name or url", answer.describe()),
                retry_after: None,
            }),
        }
    }

    /// Sets a room's privacy and window; None when the room does not exist (any more).
    async fn configure(
        &self,
        name: &str,
        spec: &MeetingSpec,
    ) -> Result<Option<String>, ProviderError> {
        let body = json!({
            "privacy": self.privacy.as_str(),
            "properties": self.properties(spec, true),
        });
        let request = self
            .client
            .post(self.room_path(name)?)
            .bearer_auth(self.api_key.expose())
            .json(&body);
        let answer = http::send(PROVIDER, request).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !answer.is_success() {
            return Err(answer.error());
        }
        Self::room_url(&answer).map(Some)
    }

    /// Creates the room `name`, or adopts it when it exists; answers its URL.
    async fn make(&self, name: &str, spec: &MeetingSpec) -> Result<String, ProviderError> {
        let body = json!({
            "name": name,
            "privacy": self.privacy.as_str(),
            "properties": self.properties(spec, false),
        });
        let request = self
            .client
            .post(format!("{}/rooms", self.base_url))
            .bearer_auth(self.api_key.expose())
            .json(&body);
        let answer = http::send(PROVIDER, request).await?;
        if answer.is_success() {
            return Self::room_url(&answer);
        }
        if answer.status != 400 {
            return Err(answer.error());
        }
        // Most likely "already exists": an earlier attempt with this key made it.
        let request = self
            .client
            .get(self.room_path(name)?)
            .bearer_auth(self.api_key.expose());
        let found = http::send(PROVIDER, request).await?;
        match found.status {
            200..=299 => {}
            404 => {
                return Err(ProviderError::Permanent {
                    provider: PROVIDER.into(),
                    detail: answer.describe(),
                });
            }
            _ => return Err(found.error()),
        }
        tracing::debug!(
            room = name,
            "daily: adopting the room an earlier attempt made"
        );
        match self.configure(name, spec).await? {
            Some(url) => Ok(url),
            None => Err(ProviderError::Transient {
                provider: PROVIDER.into(),
                detail: "the room vanished while being adopted".into(),
                retry_after: None,
            }),
        }
    }
}

impl ConferenceProvider for DailyProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            title: false,
            description: false,
            time: true,
            attendees: false,
            recurrence: true,
            occurrences: false,
        }
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            let name = self.room_name(key);
            let join_url = self.make(&name, spec).await?;
            Ok(Meeting {
                meeting_id: name,
                join_url,
            })
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            match self.configure(meeting_id, spec).await? {
                Some(url) => Ok(Some(url)),
                None => {
                    // Expired (Daily deletes expired rooms) or deleted: same name again.
                    tracing::info!(room = meeting_id, "daily: room gone, recreating it");
                    self.make(meeting_id, spec).await.map(Some)
                }
            }
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        _meeting_id: &'a str,
        _occurrence: When,
        _start: When,
        _end: When,
        _title: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        // One room serves the whole series (capabilities say no occurrences).
        Box::pin(async { Ok(()) })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        _meeting_id: &'a str,
        _occurrence: When,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = self.room_path(meeting_id)?;
            self.deletes.acquire().await;
            let request = self.client.delete(path).bearer_auth(self.api_key.expose());
            let answer = http::send(PROVIDER, request).await?;
            match answer.status {
                200..=299 | 404 => Ok(()),
                429 => {
                    self.deletes
                        .hold_off(answer.retry_after.unwrap_or(self.deletes.interval));
                    Err(answer.error())
                }
                _ => Err(answer.error()),
            }
        })
    }
}
