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
//!   about 2 deletes a second or 50 per 30 s: deletes go through a client-side [`RateLimiter`]
//!   shared by the provider instance, and a 429 on delete also pushes the limiter back by its
//!   `Retry-After`. Every 429 is `RateLimited` with `Retry-After` honoured.
//!
//! Capabilities: only time (and recurrence, which changes the window) updates in place; a room
//! has no title, description or attendees. Occurrences are not supported: a series has one room
//! (moved or cancelled instances keep the series' room; `update_occurrence` and
//! `cancel_occurrence` are no-ops if called).
//!
//! Recurring series: every room expires, so rooms never pile up against the plan's room limit
//! (Daily counts unexpired rooms). A series' `exp` is its last occurrence's end + grace, computed
//! from the rules (COUNT or UNTIL, RDATE and EXDATE applied); an endless series, or one whose
//! rules cannot be expanded, gets `exp` = now + `series_horizon_days` (90), renewed by every
//! update. Reference: Daily's room `exp` property (docs.daily.co, REST API reference, rooms,
//! "config": a room past `exp` is treated as deleted and collected).
//!
//! Deletes are paced to Daily's documented limit for `DELETE /rooms/:name`: "about 2 requests
//! per second, or 50 requests over a 30 second window" (docs.daily.co, REST API reference, "Rate
//! limits"): 500 ms apart and at most 50 in any 30 s (`delete_interval_ms`, `delete_burst`,
//! `delete_window_secs`).
//!
//! Unsure, noted, and what would settle it: the exact wording of the "already exists" error (any
//! 400 on create is checked with a GET, so the wording does not matter); older Daily docs limit
//! domain + room name to 41 characters, newer ones the name to 128 (the default prefix keeps
//! names at 35 characters; a create with a 128-character name against a live domain would
//! tell); an endless series whose events see no update for `series_horizon_days` loses its room
//! (the next update recreates it under the same name and URL): a periodic renewal by the engine
//! would close that gap, and a series longer than Daily's maximum `exp` (if any: the reference
//! names none) would be refused at create, which a create with a far `exp` would show.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Answer, Secret};
use crate::keys::{Key, Section, Type};
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
    /// At most this many deletes in any `delete_window_secs` (Daily: about 50 per 30 s).
    #[serde(default = "default_delete_burst")]
    pub delete_burst: u32,
    #[serde(default = "default_delete_window")]
    pub delete_window_secs: u64,
    /// A series without an end (no COUNT or UNTIL), or one whose rule cannot be expanded, gets
    /// `exp` this many days after the create or update, renewed by every update.
    #[serde(default = "default_series_horizon")]
    pub series_horizon_days: u64,
    /// Seconds before a call is abandoned.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// The keys of `[provider.daily]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.daily",
    doc: "Daily (kind = \"daily\"): one room per meeting; every room expires.",
    optional: true,
    keys: &[
        Key::required(
            "api_key",
            Type::Secret,
            "\"env:DAILY_API_KEY\"",
            "The domain's API key (Developers page of the Daily dashboard).",
        ),
        Key::defaulted(
            "base_url",
            Type::Url,
            "\"https://api.daily.co/v1\"",
            "The REST API's base URL.",
        ),
        Key::defaulted(
            "privacy",
            Type::OneOf(&["public", "private"]),
            "\"public\"",
            "`public`: anyone with the (unguessable) URL joins; `private`: only with a meeting token or by knocking.",
        ),
        Key::bounded(
            "early_join_minutes",
            "15",
            0,
            10080,
            "Minutes before the start the room opens (`nbf`).",
        ),
        Key::bounded(
            "grace_minutes",
            "60",
            0,
            10080,
            "Minutes after the end the room closes (`exp`).",
        ),
        Key::defaulted(
            "room_prefix",
            Type::String,
            "\"cs-\"",
            "Put in front of every room name: at most 64 letters, digits, '-' and '_'.",
        ),
        Key::defaulted(
            "eject_at_room_exp",
            Type::Bool,
            "true",
            "Participants are removed when the room expires.",
        ),
        Key::bounded(
            "delete_interval_ms",
            "500",
            0,
            60000,
            "Least time between two deletes (Daily allows about 2 a second).",
        ),
        Key::bounded(
            "delete_burst",
            "50",
            0,
            10000,
            "At most this many deletes in any delete_window_secs (Daily: about 50 per 30 s); 0: no such limit.",
        ),
        Key::bounded(
            "delete_window_secs",
            "30",
            0,
            3600,
            "The window of delete_burst.",
        ),
        Key::bounded(
            "series_horizon_days",
            "90",
            1,
            3650,
            "A series without an end (or whose rule cannot be expanded) gets a room expiring this many days after the create or update, renewed by every update.",
        ),
        Key::bounded(
            "timeout_secs",
            "30",
            1,
            300,
            "Seconds before a call is abandoned.",
        ),
    ],
};

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
fn default_delete_burst() -> u32 {
    50
}
fn default_delete_window() -> u64 {
    30
}
fn default_series_horizon() -> u64 {
    90
}

/// Spaces calls at least `interval` apart, in call order, across every task sharing it, and
/// (with [`RateLimiter::with_window`]) lets at most `burst` calls start in any `window`: Daily's
/// documented limit for `DELETE /rooms/:name` is "about 2 requests per second, or 50 requests
/// over a 30 second window" (docs.daily.co, REST API reference, "Rate limits"); 2 a second alone
/// would allow 60 in 30 s. Waits on tokio's clock (so tests can pause it). A waiter that is
/// dropped gives up its slot's wait, not the slot.
pub struct RateLimiter {
    interval: Duration,
    window: Option<(usize, Duration)>,
    state: std::sync::Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: Option<tokio::time::Instant>,
    /// The start times handed out within the last window, oldest first.
    granted: std::collections::VecDeque<tokio::time::Instant>,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            window: None,
            state: std::sync::Mutex::new(Slots::default()),
        }
    }

    /// `interval` apart and at most `burst` in any `window` (a sliding window: the
    /// `burst`-th previous start plus `window` is the earliest next one).
    pub fn with_window(interval: Duration, burst: usize, window: Duration) -> RateLimiter {
        RateLimiter {
            window: (burst > 0).then_some((burst, window)),
            ..RateLimiter::new(interval)
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let at = {
            let mut slots = self.slot();
            let now = tokio::time::Instant::now();
            let mut at = slots.next.filter(|n| *n > now).unwrap_or(now);
            if let Some((burst, window)) = self.window {
                while slots.granted.front().is_some_and(|t| *t + window <= at) {
                    slots.granted.pop_front();
                }
                if slots.granted.len() >= burst {
                    let nth = slots.granted[slots.granted.len() - burst];
                    at = at.max(nth + window);
                }
                slots.granted.push_back(at);
            }
            slots.next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// No turn before `pause` from now (the server said so).
    pub fn hold_off(&self, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        let mut slots = self.slot();
        if slots.next.is_none_or(|n| n < until) {
            slots.next = Some(until);
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
    series_horizon: TimeDelta,
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
        if !(1..=3650).contains(&config.series_horizon_days) {
            return Err(format!(
                "series_horizon_days = {} must be between 1 and 3650",
                config.series_horizon_days
            ));
        }
        if config.delete_burst > 10_000 || config.delete_window_secs > 3600 {
            return Err(format!(
                "delete_burst = {} / delete_window_secs = {}: at most 10000 per hour",
                config.delete_burst, config.delete_window_secs
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
            deletes: RateLimiter::with_window(
                Duration::from_millis(config.delete_interval_ms),
                config.delete_burst as usize,
                Duration::from_secs(config.delete_window_secs),
            ),
            series_horizon: TimeDelta::days(config.series_horizon_days as i64),
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

    /// `nbf`, `exp` and `eject_at_room_exp` for `spec`. Every room gets an `exp` (Daily's room
    /// `exp` property: "UTC timestamp for expiration of the room ... rooms past exp are treated
    /// as deleted", docs.daily.co, REST API reference, rooms, "config" properties), so no room
    /// outlives its meeting and piles up against the plan's room limit: a single meeting's
    /// closes at end + grace; a series' at its last occurrence's end + grace; an endless series
    /// (or one whose rule cannot be expanded) `series_horizon_days` after now, renewed by every
    /// update.
    fn properties(&self, spec: &MeetingSpec) -> Value {
        let (nbf, exp) = http::join_window(spec.start, spec.end, self.early_join, self.grace);
        let now = Utc::now();
        let exp = if spec.recurrence.is_empty() {
            exp
        } else {
            match series_last_start(spec) {
                Some(Some(last)) => exp + (last - http::instant_in(spec.start, zone_of(spec))),
                // Endless or unreadable: a bounded horizon.
                _ => now.max(nbf) + self.series_horizon,
            }
        };
        let soonest = now + TimeDelta::minutes(10);
        json!({
            "nbf": nbf.timestamp(),
            "exp": exp.max(soonest).timestamp(),
            "eject_at_room_exp": self.eject_at_room_exp,
        })
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
            "properties": self.properties(spec),
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
            "properties": self.properties(spec),
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

fn zone_of(spec: &MeetingSpec) -> chrono_tz::Tz {
    http::zone_of(spec.time_zone.as_deref(), chrono_tz::UTC)
}

/// The start of a series' last occurrence: `Some(Some(t))` when the rules end (COUNT or UNTIL
/// on every RRULE, RDATEs and EXDATEs applied), `Some(None)` when they never end, `None` when
/// they cannot be read.
fn series_last_start(spec: &MeetingSpec) -> Option<Option<chrono::DateTime<Utc>>> {
    let zone = zone_of(spec);
    let start = http::instant_in(spec.start, zone);
    let mut lines = vec![format!(
        "DTSTART;TZID={}:{}",
        zone.name(),
        start.with_timezone(&zone).format("%Y%m%dT%H%M%S")
    )];
    for line in &spec.recurrence {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("RRULE:") {
            if !upper.contains("COUNT=") && !upper.contains("UNTIL=") {
                return Some(None);
            }
            // The expander wants UNTIL in UTC when DTSTART has a zone; a date-only or floating
            // UNTIL is read as the end of that day (or that time) in the event's zone.
            let rule: Vec<String> = line[6..]
                .split(';')
                .map(|part| match part.split_once('=') {
                    Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") && !v.ends_with('Z') => {
                        let local = chrono::NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
                            .ok()
                            .or_else(|| {
                                chrono::NaiveDate::parse_from_str(v, "%Y%m%d")
                                    .ok()
                                    .and_then(|d| d.and_hms_opt(23, 59, 59))
                            });
                        match local {
                            Some(l) => format!(
                                "UNTIL={}",
                                http::local_instant(l, zone).format("%Y%m%dT%H%M%SZ")
                            ),
                            None => part.to_owned(),
                        }
                    }
                    _ => part.to_owned(),
                })
                .collect();
            lines.push(format!("RRULE:{}", rule.join(";")));
        } else if upper.starts_with("EXDATE") || upper.starts_with("RDATE") {
            lines.push(line.clone());
        }
    }
    let set: rrule::RRuleSet = match lines.join("\n").parse() {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!("daily: cannot expand the series' rules ({e}): using the horizon");
            return None;
        }
    };
    let result = set.all(10_000);
    if result.limited {
        return Some(None);
    }
    Some(result.dates.last().map(|d| d.with_timezone(&Utc)))
}

impl ConferenceProvider for DailyProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// `GET /rooms?limit=1` with the API key: the key is accepted by the domain it belongs to.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let request = self
                .client
                .get(format!("{}/rooms", self.base_url))
                .query(&[("limit", "1")])
                .bearer_auth(self.api_key.expose());
            let answer = http::send(PROVIDER, request).await?;
            if !answer.is_success() {
                return Err(answer.error());
            }
            #[derive(Deserialize)]
            struct Listing {
                data: Option<Vec<Value>>,
            }
            let listing: Listing = answer.json()?;
            if listing.data.is_none() {
                return Err(ProviderError::Transient {
                    provider: PROVIDER.into(),
                    detail: format!("{}: the room listing has no data", answer.describe()),
                    retry_after: None,
                });
            }
            Ok("daily: API key accepted (GET /rooms?limit=1)".to_owned())
        })
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
