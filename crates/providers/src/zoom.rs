//! The `zoom` adapter: Zoom Meetings API v2 (`https://api.zoom.us/v2`) with Server-to-Server
//! OAuth.
//!
//! What it maps:
//! - auth: `POST {oauth_url}?grant_type=account_credentials&account_id=..` with HTTP Basic
//!   client_id:client_secret; the token (about an hour) is cached in a [`TokenCache`] and replaced
//!   five minutes before it expires. A 401 from the API invalidates it and the call is repeated
//!   once with a new token; a second 401 is [`ProviderError::Reauth`].
//! - create `POST /users/{user_id}/meetings`, update `PATCH /meetings/{id}` (every field sent,
//!   so the meeting follows the spec whatever changed), delete `DELETE /meetings/{id}` (404 or
//!   Zoom code 3001 = done), occurrences `PATCH|DELETE /meetings/{id}?occurrence_id=..` after
//!   `GET /meetings/{id}` (only start and duration move: Zoom cannot retitle one occurrence,
//!   so `update_occurrence`'s title is not sent). Cancellation mails are turned off (`schedule_for_reminder=false`,
//!   `cancel_meeting_reminder=false`): Google already tells the guests.
//! - fields: topic <- title (200 chars), agenda <- description (2000 chars), `start_time` as the
//!   local wall-clock time plus `timezone` (the event's zone, else `default_time_zone`), duration
//!   in whole minutes (rounded up, at least 1), `settings.meeting_invitees[{email}]` <- attendees.
//!   All-day events run from midnight to midnight in that zone.
//! - the join URL is `join_url`. `start_url` carries the host's secret (zak): it is never read,
//!   never returned, and answers that may contain it are never quoted in errors.
//!
//! Recurrence: one RRULE becomes a type 8 meeting (recurring, fixed time) where Zoom can say the
//! same thing: FREQ=DAILY (`type` 1, interval <= 90), WEEKLY (2, interval <= 12, `weekly_days`
//! from BYDAY or the start's local weekday; DAILY with BYDAY and interval 1 is weekly too),
//! MONTHLY (3, interval <= 3, one BYMONTHDAY 1..31 as `monthly_day`, or one BYDAY with ordinal
//! 1..4 or -1 as `monthly_week` + `monthly_week_day`, else the start's day), ended by COUNT <=
//! `max_occurrences` (`end_times`) or UNTIL (`end_date_time`). EXDATEs are applied after create
//! and update by deleting those occurrences (future ones only). WKST is ignored.
//!
//! Documented fallback: everything else (YEARLY, HOURLY and finer, BYSETPOS, BYMONTH, several
//! BYMONTHDAYs, a fifth-week BYDAY, intervals past Zoom's maximum, COUNT above
//! `max_occurrences`, a series with no end, RDATE, EXRULE, several RRULEs, unreadable EXDATEs)
//! becomes a type 3 meeting, "recurring with no fixed time": one join link that works for every
//! occurrence, whenever it happens. Zoom then knows no occurrences, so `update_occurrence` and
//! `cancel_occurrence` are no-ops for such a meeting (the link is the same for every day).
//!
//! Idempotency: Zoom has no idempotency key. Every create first looks for a meeting it already
//! made for the same key: `GET /users/{user_id}/meetings?type={reconcile_list_type}` paged with
//! `next_page_token`, looking for the marker `[confsync:<24 hex>]` (SHA-256 of the action's key)
//! at the end of the agenda. The marker lives in the agenda because that is a free-text field Zoom
//! returns in the listing and that the host owns; it is safe for guests to see: a one-way hash of
//! the key, it grants nothing and reveals nothing (no secret ever goes there). The next update
//! rewrites the agenda from the event's description without the marker: the marker is only needed
//! to adopt a create whose answer was lost, and an update only follows a create that succeeded.
//!
//! Errors: 429 is [`ProviderError::RateLimited`] with `Retry-After` when given; without it, a
//! body naming the daily limit (100 create/update calls per user per day, resuming at 00:00 UTC)
//! gives the time to the next UTC midnight. Zoom code 3001 (meeting does not exist) is
//! [`ProviderError::NotFound`]. The rest follows [`http::classify`].
//!
//! Unsure (kept configurable, or noted): whether `type=upcoming` lists type 3 meetings and
//! meetings whose start has passed (`reconcile_list_type = "scheduled"` lists every unexpired
//! meeting); whether the listing's agenda is ever cut short (the marker is at its end; the whole
//! agenda stays within 2000 characters); whether PATCH can turn a type 8 meeting into type 3 and
//! back (the adapter sends `type` with every update); `end_times` is capped at 50 by current docs
//! (older docs say 60): `max_occurrences`.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{self, Answer, Secret, TokenCache};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

const NAME: &str = "zoom";
const TOPIC_MAX: usize = 200;
const AGENDA_MAX: usize = 2000;
/// Zoom's documented maximum `repeat_interval` per recurrence type (daily, weekly, monthly).
const MAX_INTERVAL: [u32; 3] = [90, 12, 3];
/// How long before expiry a cached token is replaced.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// `[provider]` settings for `kind = "zoom"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoomConfig {
    /// The Server-to-Server OAuth app's account id.
    pub account_id: String,
    pub client_id: String,
    /// The app's client secret (the value, `env:NAME` or `file:/path`).
    pub client_secret: Secret,
    /// The host: a user id, an email, or `me` (the app's own user).
    #[serde(default = "default_user_id")]
    pub user_id: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_oauth_url")]
    pub oauth_url: String,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The zone for events that name none (all-day events).
    #[serde(default = "default_zone")]
    pub default_time_zone: String,
    /// The largest `end_times` Zoom accepts; a COUNT above it falls back to a type 3 meeting.
    #[serde(default = "default_max_occurrences")]
    pub max_occurrences: u32,
    /// Which listing a create searches for its marker: `upcoming` (default), `scheduled`
    /// (every unexpired meeting) or `upcoming_meetings`.
    #[serde(default = "default_list_type")]
    pub reconcile_list_type: String,
    /// At most this many pages (300 meetings each) are read when looking for the marker.
    #[serde(default = "default_max_pages")]
    pub reconcile_max_pages: u32,
}

/// The keys of `[provider.zoom]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.zoom",
    doc: "Zoom (kind = \"zoom\"): the Meetings API with a Server-to-Server OAuth app.",
    optional: true,
    keys: &[
        Key::required(
            "account_id",
            Type::String,
            "\"...\"",
            "The Server-to-Server OAuth app's account id.",
        ),
        Key::required("client_id", Type::String, "\"...\"", "The app's client id."),
        Key::required(
            "client_secret",
            Type::Secret,
            "\"env:ZOOM_CLIENT_SECRET\"",
            "The app's client secret.",
        ),
        Key::defaulted(
            "user_id",
            Type::String,
            "\"me\"",
            "The meetings' host: a user id, an email, or `me` (the app's own user).",
        ),
        Key::defaulted(
            "base_url",
            Type::Url,
            "\"https://api.zoom.us/v2\"",
            "The API's base URL.",
        ),
        Key::defaulted(
            "oauth_url",
            Type::Url,
            "\"https://zoom.us/oauth/token\"",
            "The OAuth token endpoint.",
        ),
        Key::defaulted(
            "timeout_secs",
            Type::Integer,
            "30",
            "Seconds before a call is abandoned (at least 1).",
        ),
        Key::defaulted(
            "default_time_zone",
            Type::String,
            "\"UTC\"",
            "The IANA time zone for events that name none (all-day events).",
        ),
        Key::bounded(
            "max_occurrences",
            "50",
            1,
            365,
            "The largest `end_times` Zoom accepts: a series with a larger COUNT becomes a \"no fixed time\" (type 3) meeting.",
        ),
        Key::defaulted(
            "reconcile_list_type",
            Type::OneOf(&["upcoming", "scheduled", "upcoming_meetings"]),
            "\"upcoming\"",
            "Which listing a create searches for the marker of a meeting an earlier attempt made: `scheduled` also lists meetings whose start has passed.",
        ),
        Key::defaulted(
            "reconcile_max_pages",
            Type::Integer,
            "20",
            "At most this many pages (300 meetings each) are read when looking for the marker (at least 1).",
        ),
    ],
};

fn default_user_id() -> String {
    "me".into()
}
fn default_base_url() -> String {
    "https://api.zoom.us/v2".into()
}
fn default_oauth_url() -> String {
    "https://zoom.us/oauth/token".into()
}
fn default_timeout() -> u64 {
    30
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_max_occurrences() -> u32 {
    50
}
fn default_list_type() -> String {
    "upcoming".into()
}
fn default_max_pages() -> u32 {
    20
}

impl ZoomConfig {
    /// A config with every optional field at its default.
    pub fn new(account_id: &str, client_id: &str, client_secret: Secret) -> ZoomConfig {
        ZoomConfig {
            account_id: account_id.into(),
            client_id: client_id.into(),
            client_secret,
            user_id: default_user_id(),
            base_url: default_base_url(),
            oauth_url: default_oauth_url(),
            timeout_secs: default_timeout(),
            default_time_zone: default_zone(),
            max_occurrences: default_max_occurrences(),
            reconcile_list_type: default_list_type(),
            reconcile_max_pages: default_max_pages(),
        }
    }
}

/// The Zoom provider.
pub struct ZoomProvider {
    config: ZoomConfig,
    base_url: String,
    client: reqwest::Client,
    tokens: TokenCache,
    zone: Tz,
}

impl ZoomProvider {
    pub fn new(config: ZoomConfig) -> Result<Self, String> {
        for (field, value) in [
            ("account_id", &config.account_id),
            ("client_id", &config.client_id),
            ("user_id", &config.user_id),
        ] {
            if value.trim().is_empty() {
                return Err(format!("zoom: {field} is empty"));
            }
        }
        check_url("base_url", &config.base_url)?;
        check_url("oauth_url", &config.oauth_url)?;
        if config.timeout_secs == 0 {
            return Err("zoom: timeout_secs must be at least 1".into());
        }
        let zone: Tz = config.default_time_zone.parse().map_err(|_| {
            format!(
                "zoom: default_time_zone {:?} is not an IANA time zone",
                config.default_time_zone
            )
        })?;
        if !(1..=365).contains(&config.max_occurrences) {
            return Err("zoom: max_occurrences must be between 1 and 365".into());
        }
        if !["upcoming", "scheduled", "upcoming_meetings"]
            .contains(&config.reconcile_list_type.as_str())
        {
            return Err(format!(
                "zoom: reconcile_list_type {:?} is not upcoming, scheduled or upcoming_meetings",
                config.reconcile_list_type
            ));
        }
        if config.reconcile_max_pages == 0 {
            return Err("zoom: reconcile_max_pages must be at least 1".into());
        }
        let client = http::client(Duration::from_secs(config.timeout_secs))?;
        Ok(ZoomProvider {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            config,
            client,
            tokens: TokenCache::new(TOKEN_MARGIN),
            zone,
        })
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), ProviderError> {
        let request = self
            .client
            .post(&self.config.oauth_url)
            .query(&[
                ("grant_type", "account_credentials"),
                ("account_id", self.config.account_id.as_str()),
            ])
            .basic_auth(
                &self.config.client_id,
                Some(self.config.client_secret.expose()),
            );
        let answer = http::send(NAME, request).await?;
        http::oauth_token(&answer)
    }

    /// Sends an authorised request; a 401 gets one more try with a new token.
    async fn call(
        &self,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let token = self.tokens.get(|| self.fetch_token()).await?;
        let answer = http::send(NAME, make(token.expose())).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        tracing::debug!("zoom: access token refused, fetching a new one");
        self.tokens.invalidate().await;
        let token = self.tokens.get(|| self.fetch_token()).await?;
        http::send(NAME, make(token.expose())).await
    }

    fn meeting_url(&self, meeting_id: &str) -> String {
        format!("{}/meetings/{}", self.base_url, path_segment(meeting_id))
    }

    /// What Zoom is told about a spec (create and update send the same fields).
    fn meeting_body(
        &self,
        spec: &MeetingSpec,
        marker: Option<&str>,
    ) -> (Value, Vec<DateTime<Utc>>) {
        let zone = http::zone_of(spec.time_zone.as_deref(), self.zone);
        let start = http::instant_in(spec.start, zone);
        let end = http::instant_in(spec.end, zone);
        let agenda = match marker {
            Some(marker) => {
                let room = AGENDA_MAX - marker.chars().count() - 2;
                let text = http::truncate(&spec.description, room).trim_end();
                if text.is_empty() {
                    marker.to_owned()
                } else {
                    format!("{text}\n\n{marker}")
                }
            }
            None => http::truncate(&spec.description, AGENDA_MAX).to_owned(),
        };
        let invitees: Vec<Value> = spec
            .attendees
            .iter()
            .map(|email| json!({ "email": email }))
            .collect();
        let mut body = Map::new();
        body.insert(
            "topic".into(),
            http::truncate(&spec.title, TOPIC_MAX).into(),
        );
        body.insert("agenda".into(), agenda.into());
        body.insert("timezone".into(), zone.name().into());
        body.insert("settings".into(), json!({ "meeting_invitees": invitees }));
        let local_start = start.with_timezone(&zone);
        let plan = plan_recurrence(
            &spec.recurrence,
            local_start.naive_local(),
            zone,
            self.config.max_occurrences,
        );
        let mut exdates = Vec::new();
        let fixed = |body: &mut Map<String, Value>, kind: u8| {
            body.insert("type".into(), kind.into());
            body.insert("start_time".into(), zoom_local(start, zone).into());
            body.insert("duration".into(), minutes(start, end).into());
        };
        match plan {
            Recurrence::Single => fixed(&mut body, 2),
            Recurrence::Fixed { rule, exdates: ex } => {
                fixed(&mut body, 8);
                body.insert("recurrence".into(), rule);
                exdates = ex;
            }
            Recurrence::NoFixedTime(why) => {
                tracing::info!(
                    "zoom: {why}: scheduling a meeting with no fixed time (one link for every occurrence)"
                );
                body.insert("type".into(), 3.into());
            }
        }
        (Value::Object(body), exdates)
    }

    /// Looks for the meeting a create with this marker already made.
    async fn find_by_marker(&self, marker: &str) -> Result<Option<Meeting>, ProviderError> {
        let url = format!(
            "{}/users/{}/meetings",
            self.base_url,
            path_segment(&self.config.user_id)
        );
        let mut page_token: Option<String> = None;
        for _ in 0..self.config.reconcile_max_pages {
            let answer = self
                .call(|token| {
                    let mut query = vec![
                        ("type", self.config.reconcile_list_type.as_str()),
                        ("page_size", "300"),
                    ];
                    if let Some(t) = &page_token {
                        query.push(("next_page_token", t.as_str()));
                    }
                    self.client.get(&url).query(&query).bearer_auth(token)
                })
                .await?;
            if !answer.is_success() {
                return Err(zoom_error(&answer));
            }
            let page: ListPage = answer.json_redacted()?;
            for listed in page.meetings {
                if listed.agenda.as_deref().is_some_and(|a| a.contains(marker)) {
                    let meeting_id = id_text(listed.id.as_ref()).ok_or_else(|| {
                        transient(&answer, "a listed meeting carrying our marker has no id")
                    })?;
                    let join_url = listed.join_url.filter(|u| !u.is_empty()).ok_or_else(|| {
                        transient(
                            &answer,
                            "a listed meeting carrying our marker has no join_url",
                        )
                    })?;
                    return Ok(Some(Meeting {
                        meeting_id,
                        join_url,
                    }));
                }
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if page_token.as_ref() != Some(&next) => page_token = Some(next),
                _ => return Ok(None),
            }
        }
        tracing::warn!(
            "zoom: no meeting with marker {marker} in the first {} pages; creating one",
            self.config.reconcile_max_pages
        );
        Ok(None)
    }

    /// Deletes the occurrences an EXDATE removes (only future ones: Zoom keeps the past).
    async fn apply_exdates(
        &self,
        meeting_id: &str,
        exdates: &[DateTime<Utc>],
    ) -> Result<(), ProviderError> {
        let now = Utc::now();
        for at in exdates.iter().filter(|at| **at > now) {
            self.delete_occurrence(meeting_id, &at.timestamp_millis().to_string())
                .await?;
        }
        Ok(())
    }

    async fn delete_occurrence(
        &self,
        meeting_id: &str,
        occurrence_id: &str,
    ) -> Result<(), ProviderError> {
        let url = self.meeting_url(meeting_id);
        let answer = self
            .call(|token| {
                self.client
                    .delete(&url)
                    .query(&[
                        ("occurrence_id", occurrence_id),
                        ("schedule_for_reminder", "false"),
                        ("cancel_meeting_reminder", "false"),
                    ])
                    .bearer_auth(token)
            })
            .await?;
        if answer.is_success() {
            return Ok(());
        }
        match zoom_error(&answer) {
            ProviderError::NotFound { .. } => Ok(()), // already gone
            e => Err(e),
        }
    }

    async fn details(&self, meeting_id: &str) -> Result<Details, ProviderError> {
        let url = self.meeting_url(meeting_id);
        let answer = self
            .call(|token| self.client.get(&url).bearer_auth(token))
            .await?;
        if !answer.is_success() {
            return Err(zoom_error(&answer));
        }
        answer.json_redacted()
    }

    /// The occurrence of a fixed-time series starting at `occurrence`: its id and status, or
    /// None when the meeting has no fixed occurrences (type 2 or 3).
    async fn find_occurrence(
        &self,
        meeting_id: &str,
        occurrence: When,
    ) -> Result<Option<(Details, String, Option<String>)>, ProviderError> {
        let details = self.details(meeting_id).await?;
        if details.kind != Some(8) {
            tracing::debug!(
                "zoom: meeting {meeting_id} is not a fixed-time series: nothing to do for one occurrence"
            );
            return Ok(None);
        }
        let zone = http::zone_of(details.timezone.as_deref(), self.zone);
        let at = http::instant_in(occurrence, zone);
        let listed = details.occurrences.iter().find(|o| {
            o.start_time
                .as_deref()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t == at)
        });
        // Zoom's occurrence id is the occurrence's start in epoch milliseconds; the listed id
        // wins when there is one.
        let (id, status) = match listed {
            Some(o) => (
                id_text(o.occurrence_id.as_ref())
                    .unwrap_or_else(|| at.timestamp_millis().to_string()),
                o.status.clone(),
            ),
            None => (at.timestamp_millis().to_string(), None),
        };
        Ok(Some((details, id, status)))
    }
}

fn check_url(field: &str, url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("zoom: {field} {url:?} is not an http(s) URL"))
    }
}

/// A path segment, percent-encoded (user ids may be emails; meeting ids come from storage).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn transient(answer: &Answer, why: &str) -> ProviderError {
    ProviderError::Transient {
        provider: NAME.into(),
        detail: format!("{}: {why}", answer.status_line()),
        retry_after: None,
    }
}

fn id_text(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The marker a create leaves in the agenda (see the module doc).
pub fn marker_for(key: &str) -> String {
    format!("[confsync:{}]", &http::sha256_hex(key.as_bytes())[..24])
}

/// How long until Zoom's daily limits reset (00:00 UTC).
pub fn until_next_utc_midnight(now: DateTime<Utc>) -> Duration {
    let next = (now.date_naive() + chrono::Days::new(1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    (next - now).to_std().unwrap_or(Duration::ZERO)
}

/// Zoom's error classification: the daily limit, code 3001, then the shared rules.
fn zoom_error(answer: &Answer) -> ProviderError {
    #[derive(Deserialize)]
    struct ZoomErr {
        code: Option<i64>,
    }
    if answer.status == 429 {
        let daily = String::from_utf8_lossy(&answer.body)
            .to_ascii_lowercase()
            .contains("daily");
        let retry_after = answer
            .retry_after
            .or_else(|| daily.then(|| until_next_utc_midnight(Utc::now())));
        return ProviderError::RateLimited {
            provider: NAME.into(),
            detail: answer.describe(),
            retry_after,
        };
    }
    let code = serde_json::from_slice::<ZoomErr>(&answer.body)
        .ok()
        .and_then(|e| e.code);
    if code == Some(3001) {
        return ProviderError::NotFound {
            provider: NAME.into(),
        };
    }
    http::classify(answer)
}

/// `yyyy-MM-ddTHH:mm:ss` in `zone` (Zoom reads it with the `timezone` field).
fn zoom_local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn minutes(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let seconds = (end - start).num_seconds().max(0);
    ((seconds + 59) / 60).max(1)
}

/// How a series is scheduled at Zoom.
#[derive(Debug, Clone, PartialEq)]
pub enum Recurrence {
    /// No recurrence: a type 2 meeting.
    Single,
    /// A type 8 meeting with this `recurrence` object; these occurrences are deleted after.
    Fixed {
        rule: Value,
        exdates: Vec<DateTime<Utc>>,
    },
    /// The documented fallback, a type 3 meeting; the reason is logged.
    NoFixedTime(String),
}

/// Maps the event's recurrence lines to Zoom's (see the module doc). `start` is the series'
/// first start as wall-clock time in `zone`.
pub fn plan_recurrence(
    lines: &[String],
    start: NaiveDateTime,
    zone: Tz,
    max_occurrences: u32,
) -> Recurrence {
    if lines.is_empty() {
        return Recurrence::Single;
    }
    let mut rules = Vec::new();
    let mut exdates = Vec::new();
    for line in lines {
        let upper = line.to_ascii_uppercase();
        if let Some(rule) = line.get(6..).filter(|_| upper.starts_with("RRULE:")) {
            rules.push(rule);
        } else if upper.starts_with("EXDATE") {
            match parse_exdate(line, zone, start.time()) {
                Some(mut at) => exdates.append(&mut at),
                None => return Recurrence::NoFixedTime(format!("unreadable {line:?}")),
            }
        } else {
            let kind = upper
                .split([':', ';'])
                .next()
                .unwrap_or_default()
                .to_owned();
            return Recurrence::NoFixedTime(format!("{kind} has no Zoom equivalent"));
        }
    }
    let rule = match rules.as_slice() {
        [] => return Recurrence::Single,
        [one] => *one,
        _ => return Recurrence::NoFixedTime("several RRULEs".into()),
    };
    match fixed_rule(rule, start, zone, max_occurrences) {
        Ok(rule) => Recurrence::Fixed { rule, exdates },
        Err(why) => Recurrence::NoFixedTime(why),
    }
}

fn fixed_rule(
    rule: &str,
    start: NaiveDateTime,
    zone: Tz,
    max_occurrences: u32,
) -> Result<Value, String> {
    let mut freq = None;
    let mut interval = 1u32;
    let mut count = None;
    let mut until = None;
    let mut by_day = None;
    let mut by_month_day = None;
    for part in rule.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("unreadable RRULE part {part:?}"))?;
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(value.to_ascii_uppercase()),
            "INTERVAL" => {
                interval = value
                    .parse()
                    .ok()
                    .filter(|i| *i >= 1)
                    .ok_or_else(|| format!("unreadable INTERVAL {value:?}"))?
            }
            "COUNT" => {
                count = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|c| *c >= 1)
                        .ok_or_else(|| format!("unreadable COUNT {value:?}"))?,
                )
            }
            "UNTIL" => {
                until = Some(
                    parse_until(value, zone)
                        .ok_or_else(|| format!("unreadable UNTIL {value:?}"))?,
                )
            }
            "BYDAY" => by_day = Some(value.to_ascii_uppercase()),
            "BYMONTHDAY" => by_month_day = Some(value.to_owned()),
            "WKST" => {}
            other => return Err(format!("RRULE {other} has no Zoom equivalent")),
        }
    }
    let mut out = Map::new();
    let freq = freq.ok_or("an RRULE without FREQ")?;
    let kind: u8 = match (freq.as_str(), &by_day) {
        ("DAILY", Some(_)) if interval == 1 => 2, // every weekday and the like
        ("DAILY", Some(_)) => return Err("DAILY with BYDAY and an interval".into()),
        ("DAILY", None) => 1,
        ("WEEKLY", _) => 2,
        ("MONTHLY", _) => 3,
        (other, _) => return Err(format!("FREQ={other} has no Zoom equivalent")),
    };
    let max_interval = MAX_INTERVAL[usize::from(kind - 1)];
    if interval > max_interval {
        return Err(format!(
            "INTERVAL={interval} is more than Zoom's {max_interval} for FREQ={freq}"
        ));
    }
    out.insert("type".into(), kind.into());
    out.insert("repeat_interval".into(), interval.into());
    match kind {
        1 => {
            if by_month_day.is_some() {
                return Err("DAILY with BYMONTHDAY".into());
            }
        }
        2 => {
            if by_month_day.is_some() {
                return Err("WEEKLY with BYMONTHDAY".into());
            }
            let days = match &by_day {
                Some(list) => {
                    let mut days = Vec::new();
                    for item in list.split(',') {
                        days.push(zoom_weekday(item).ok_or_else(|| {
                            format!("BYDAY {item:?} in a weekly rule has no Zoom equivalent")
                        })?);
                    }
                    days.sort_unstable();
                    days.dedup();
                    days
                }
                None => vec![weekday_number(start.weekday())],
            };
            let days: Vec<String> = days.iter().map(u8::to_string).collect();
            out.insert("weekly_days".into(), days.join(",").into());
        }
        _ => match (&by_day, &by_month_day) {
            (Some(_), Some(_)) => return Err("MONTHLY with BYDAY and BYMONTHDAY".into()),
            (None, Some(day)) => {
                let day: u32 = day
                    .parse()
                    .ok()
                    .filter(|d| (1..=31).contains(d))
                    .ok_or_else(|| format!("BYMONTHDAY={day} has no Zoom equivalent"))?;
                out.insert("monthly_day".into(), day.into());
            }
            (Some(item), None) => {
                let (week, day) = ordinal_weekday(item)
                    .ok_or_else(|| format!("BYDAY={item} has no Zoom equivalent"))?;
                out.insert("monthly_week".into(), week.into());
                out.insert("monthly_week_day".into(), day.into());
            }
            (None, None) => {
                out.insert("monthly_day".into(), start.day().into());
            }
        },
    }
    match (count, until) {
        (Some(_), Some(_)) => return Err("COUNT and UNTIL together".into()),
        (Some(count), None) if count > max_occurrences => {
            return Err(format!(
                "COUNT={count} is more than the {max_occurrences} occurrences Zoom allows"
            ));
        }
        (Some(count), None) => {
            out.insert("end_times".into(), count.into());
        }
        (None, Some(until)) => {
            out.insert(
                "end_date_time".into(),
                until.format("%Y-%m-%dT%H:%M:%SZ").to_string().into(),
            );
        }
        (None, None) => return Err("the series has no end".into()),
    }
    Ok(Value::Object(out))
}

/// Zoom's weekday numbers: 1 Sunday .. 7 Saturday.
fn weekday_number(day: Weekday) -> u8 {
    (day.num_days_from_sunday() + 1) as u8
}

fn zoom_weekday(code: &str) -> Option<u8> {
    let day = match code.trim() {
        "SU" => Weekday::Sun,
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        _ => return None,
    };
    Some(weekday_number(day))
}

/// `2TU` -> (2, 3), `-1FR` -> (-1, 6); only what Zoom's monthly_week can say (1..4, -1).
fn ordinal_weekday(item: &str) -> Option<(i8, u8)> {
    let item = item.trim();
    let split = item.len().checked_sub(2)?;
    let (ordinal, day) = item.split_at(split);
    let ordinal: i8 = ordinal.trim_start_matches('+').parse().ok()?;
    if !(ordinal == -1 || (1..=4).contains(&ordinal)) {
        return None;
    }
    Some((ordinal, zoom_weekday(day)?))
}

/// An RRULE UNTIL: UTC, floating (in `zone`) or a date (the end of that day in `zone`).
fn parse_until(value: &str, zone: Tz) -> Option<DateTime<Utc>> {
    if let Some(utc) = value.strip_suffix('Z') {
        return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
            .ok()
            .map(|t| t.and_utc());
    }
    if let Ok(local) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
        return Some(http::local_instant(local, zone));
    }
    let day = NaiveDate::parse_from_str(value, "%Y%m%d").ok()?;
    let last = day.and_hms_opt(23, 59, 59)?;
    Some(http::local_instant(last, zone))
}

/// `EXDATE[;TZID=..][;VALUE=DATE]:v1,v2`: the excluded starts. Dates take the series' time of
/// day.
fn parse_exdate(line: &str, zone: Tz, time_of_day: NaiveTime) -> Option<Vec<DateTime<Utc>>> {
    let (head, values) = line.split_once(':')?;
    let mut zone = zone;
    for param in head.split(';').skip(1) {
        let (key, value) = param.split_once('=')?;
        if key.eq_ignore_ascii_case("TZID") {
            zone = value.trim_matches('"').parse().ok()?;
        }
    }
    values
        .split(',')
        .map(|v| {
            let v = v.trim();
            if let Some(utc) = v.strip_suffix('Z') {
                return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
                    .ok()
                    .map(|t| t.and_utc());
            }
            if let Ok(local) = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S") {
                return Some(http::local_instant(local, zone));
            }
            let day = NaiveDate::parse_from_str(v, "%Y%m%d").ok()?;
            Some(http::local_instant(day.and_time(time_of_day), zone))
        })
        .collect()
}

#[derive(Deserialize)]
struct Created {
    id: Option<Value>,
    join_url: Option<String>,
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    meetings: Vec<Listed>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    id: Option<Value>,
    join_url: Option<String>,
    agenda: Option<String>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(rename = "type")]
    kind: Option<u8>,
    timezone: Option<String>,
    #[serde(default)]
    occurrences: Vec<Occurrence>,
}

#[derive(Deserialize)]
struct Occurrence {
    occurrence_id: Option<Value>,
    start_time: Option<String>,
    status: Option<String>,
}

impl ConferenceProvider for ZoomProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// The Server-to-Server token, then one item of the host's meeting listing (`GET
    /// /users/{user_id}/meetings?type=..&page_size=1`): the very route and scope every create
    /// depends on (its reconciliation), where `GET /users/{id}` would need a `user:read` scope
    /// the adapter otherwise never uses.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let url = format!(
                "{}/users/{}/meetings",
                self.base_url,
                path_segment(&self.config.user_id)
            );
            let answer = self
                .call(|token| {
                    self.client
                        .get(&url)
                        .query(&[
                            ("type", self.config.reconcile_list_type.as_str()),
                            ("page_size", "1"),
                        ])
                        .bearer_auth(token)
                })
                .await?;
            if answer.status == 404 {
                return Err(ProviderError::Permanent {
                    provider: NAME.into(),
                    detail: format!(
                        "the host user {:?} (user_id) does not exist: {}",
                        self.config.user_id,
                        answer.describe()
                    ),
                });
            }
            if !answer.is_success() {
                return Err(zoom_error(&answer));
            }
            Ok(format!(
                "zoom: token for account {} accepted; meetings of user {} listed",
                self.config.account_id, self.config.user_id
            ))
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            let marker = marker_for(key);
            let (body, exdates) = self.meeting_body(spec, Some(&marker));
            let meeting = match self.find_by_marker(&marker).await? {
                Some(found) => {
                    tracing::info!(
                        "zoom: adopting meeting {} made by an earlier try of this create",
                        found.meeting_id
                    );
                    found
                }
                None => {
                    let url = format!(
                        "{}/users/{}/meetings",
                        self.base_url,
                        path_segment(&self.config.user_id)
                    );
                    let answer = self
                        .call(|token| self.client.post(&url).json(&body).bearer_auth(token))
                        .await?;
                    if !answer.is_success() {
                        return Err(zoom_error(&answer));
                    }
                    // The answer carries start_url (the host's secret): never quoted.
                    let created: Created = answer.json_redacted()?;
                    let meeting_id = id_text(created.id.as_ref())
                        .ok_or_else(|| transient(&answer, "the created meeting has no id"))?;
                    let join_url = created
                        .join_url
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| transient(&answer, "the created meeting has no join_url"))?;
                    Meeting {
                        meeting_id,
                        join_url,
                    }
                }
            };
            self.apply_exdates(&meeting.meeting_id, &exdates).await?;
            Ok(meeting)
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let (body, exdates) = self.meeting_body(spec, None);
            let url = self.meeting_url(meeting_id);
            let answer = self
                .call(|token| self.client.patch(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(zoom_error(&answer));
            }
            self.apply_exdates(meeting_id, &exdates).await?;
            Ok(None) // a Zoom meeting keeps its join URL
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        _title: &'a str, // Zoom cannot retitle one occurrence
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let Some((details, occurrence_id, status)) =
                self.find_occurrence(meeting_id, occurrence).await?
            else {
                return Ok(());
            };
            if status.as_deref() == Some("deleted") {
                return Err(ProviderError::NotFound {
                    provider: NAME.into(),
                });
            }
            let zone = http::zone_of(details.timezone.as_deref(), self.zone);
            let start = http::instant_in(start, zone);
            let end = http::instant_in(end, zone);
            let body = json!({
                "start_time": zoom_local(start, zone),
                "timezone": zone.name(),
                "duration": minutes(start, end),
            });
            let url = self.meeting_url(meeting_id);
            let answer = self
                .call(|token| {
                    self.client
                        .patch(&url)
                        .query(&[("occurrence_id", occurrence_id.as_str())])
                        .json(&body)
                        .bearer_auth(token)
                })
                .await?;
            if answer.is_success() {
                Ok(())
            } else {
                Err(zoom_error(&answer))
            }
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let found = match self.find_occurrence(meeting_id, occurrence).await {
                Ok(found) => found,
                // The whole meeting is gone, and its occurrences with it.
                Err(ProviderError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let Some((_, occurrence_id, status)) = found else {
                return Ok(());
            };
            if status.as_deref() == Some("deleted") {
                return Ok(());
            }
            self.delete_occurrence(meeting_id, &occurrence_id).await
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let url = self.meeting_url(meeting_id);
            let answer = self
                .call(|token| {
                    self.client
                        .delete(&url)
                        .query(&[
                            ("schedule_for_reminder", "false"),
                            ("cancel_meeting_reminder", "false"),
                        ])
                        .bearer_auth(token)
                })
                .await?;
            if answer.is_success() {
                return Ok(());
            }
            match zoom_error(&answer) {
                ProviderError::NotFound { .. } => Ok(()),
                e => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    fn plan(lines: &[&str]) -> Recurrence {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        // 2026-12-01 is a Tuesday.
        plan_recurrence(
            &lines,
            local("2026-12-01T10:00:00"),
            chrono_tz::Europe::Berlin,
            50,
        )
    }

    fn rule(lines: &[&str]) -> Value {
        match plan(lines) {
            Recurrence::Fixed { rule, .. } => rule,
            other => panic!("{lines:?}: {other:?}"),
        }
    }

    #[test]
    fn expressible_rules_map_to_zoom_recurrence() {
        assert_eq!(
            rule(&["RRULE:FREQ=DAILY;INTERVAL=2;COUNT=5"]),
            json!({"type": 1, "repeat_interval": 2, "end_times": 5})
        );
        assert_eq!(
            rule(&["RRULE:FREQ=WEEKLY;BYDAY=WE,MO;UNTIL=20270101T000000Z"]),
            json!({"type": 2, "repeat_interval": 1, "weekly_days": "2,4",
                   "end_date_time": "2027-01-01T00:00:00Z"})
        );
        assert_eq!(
            rule(&["RRULE:FREQ=WEEKLY;COUNT=3"])["weekly_days"],
            "3",
            "the start's local weekday (Tuesday)"
        );
        assert_eq!(
            rule(&["RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=10"])["weekly_days"],
            "2,3,4,5,6"
        );
        assert_eq!(
            rule(&["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=4"]),
            json!({"type": 3, "repeat_interval": 1, "monthly_week": -1,
                   "monthly_week_day": 6, "end_times": 4})
        );
        assert_eq!(rule(&["RRULE:FREQ=MONTHLY;COUNT=4"])["monthly_day"], 1);
        assert_eq!(
            rule(&["RRULE:FREQ=MONTHLY;BYMONTHDAY=15;UNTIL=20270601"])["end_date_time"],
            "2027-06-01T21:59:59Z",
            "a date UNTIL ends with that local day"
        );
    }

    #[test]
    fn inexpressible_rules_fall_back_to_no_fixed_time() {
        for lines in [
            &["RRULE:FREQ=YEARLY;COUNT=3"][..],
            &["RRULE:FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2;COUNT=3"],
            &["RRULE:FREQ=WEEKLY;BYDAY=MO"],
            &["RRULE:FREQ=DAILY;COUNT=51"],
            &["RRULE:FREQ=WEEKLY;INTERVAL=13;COUNT=3"],
            &["RRULE:FREQ=MONTHLY;BYDAY=5MO;COUNT=3"],
            &["RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=3"],
            &["RRULE:FREQ=HOURLY;COUNT=3"],
            &["RRULE:FREQ=DAILY;COUNT=3", "RDATE:20261224T100000Z"],
            &["RRULE:FREQ=DAILY;COUNT=3", "RRULE:FREQ=WEEKLY;COUNT=2"],
            &["RRULE:FREQ=DAILY;COUNT=3", "EXDATE:garbage"],
        ] {
            assert!(
                matches!(plan(lines), Recurrence::NoFixedTime(_)),
                "{lines:?}: {:?}",
                plan(lines)
            );
        }
        assert_eq!(plan(&[]), Recurrence::Single);
    }

    #[test]
    fn exdates_are_read_in_their_zone() {
        let Recurrence::Fixed { exdates, .. } = plan(&[
            "RRULE:FREQ=DAILY;COUNT=5",
            "EXDATE;TZID=Europe/Berlin:20261202T100000,20261203T100000",
            "EXDATE:20261204T090000Z",
            "EXDATE;VALUE=DATE:20261205",
        ]) else {
            panic!()
        };
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            exdates,
            [
                at("2026-12-02T09:00:00Z"),
                at("2026-12-03T09:00:00Z"),
                at("2026-12-04T09:00:00Z"),
                at("2026-12-05T09:00:00Z")
            ]
        );
    }

    #[test]
    fn the_daily_limit_resets_at_utc_midnight() {
        let now = "2026-12-01T22:30:00Z".parse().unwrap();
        assert_eq!(until_next_utc_midnight(now), Duration::from_secs(5400));
        let midnight = "2026-12-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            until_next_utc_midnight(midnight),
            Duration::from_secs(86400)
        );
    }

    #[test]
    fn markers_are_short_stable_and_opaque() {
        let m = marker_for("create:cal:event-1");
        assert_eq!(m, marker_for("create:cal:event-1"));
        assert_ne!(m, marker_for("create:cal:event-2"));
        assert_eq!(m.len(), "[confsync:]".len() + 24);
        assert!(!m.contains("event"));
    }
}
