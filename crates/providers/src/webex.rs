//! The `webex` adapter: Webex Meetings REST API (`https://webexapis.com/v1`).
//!
//! What it maps:
//! - auth: a bearer token, either static (`access_token`: a personal or service-app token; a 401
//!   is [`ProviderError::Reauth`]) or an OAuth integration (`client_id`, `client_secret`,
//!   `refresh_token`): `POST {base_url}/access_token` with `grant_type=refresh_token`, the token
//!   cached in a [`TokenCache`] (replaced five minutes before it expires); a 401 refreshes once
//!   and retries, a second 401 is Reauth. A refresh token Webex rotates is kept in memory only
//!   (Webex keeps the old one valid until it expires; update the config when it is renewed).
//!   `host_email` schedules on behalf of that user (admin scopes), sent as `hostEmail`.
//! - create `POST /meetings` {title (128 chars; "Meeting" when empty), agenda (1300 chars),
//!   start, end, timezone, recurrence, invitees[{email}], sendEmail=false, integrationTags};
//!   update `PATCH /meetings/{id}` (sendEmail=false) then the invitees through
//!   `/meetingInvitees` (PATCH /meetings has no invitees: the adapter lists them, adds the new
//!   guests and removes the gone ones, all with sendEmail=false); delete
//!   `DELETE /meetings/{id}?sendEmail=false` (204; 404 = done). The join URL is `webLink`.
//!   Google already mails the guests, so Webex never does.
//! - occurrences: the series' scheduled meeting starting at the occurrence is found with
//!   `GET /meetings?meetingSeriesId=..&meetingType=scheduledMeeting&from=..&to=..`, then patched
//!   (title, start, end) or deleted; an occurrence that is past or already gone is done.
//!   Changing a series' start, end or recurrence at Webex drops its exceptional occurrences.
//! - times: start and end in the event's zone (else `default_time_zone`) with `timezone`; all-day
//!   events from midnight in that zone.
//!
//! Start and end must not be in the past and the duration must be 10 min to 23 h 59 min. The
//! adapter clamps (and never fails for it): a start in the past becomes the next whole minute
//! (a meeting already under way keeps its end; one that is wholly over is not created, a
//! permanent failure, and an update of it is a no-op); a duration under 10 minutes is lengthened
//! to 10, one over 23 h 59 min (all-day events) is cut to 23 h 59 min. The calendar keeps the
//! true times; the Webex meeting is the room guests join. A series whose first occurrence is past
//! is created from its next occurrence (the rule's COUNT reduced by the occurrences skipped), so
//! Webex holds exactly the remaining ones. An update of such a series sends title, agenda and
//! invitees but not start, end or recurrence: Webex cannot move a series into the past, and
//! re-anchoring it at each edit would drop its exceptions (Google's "this and following"
//! arrives as a new series anyway).
//!
//! Recurrence: Webex takes an RRULE subset: FREQ=DAILY/WEEKLY/MONTHLY/YEARLY with INTERVAL,
//! COUNT or UNTIL, BYDAY and BYMONTHDAY (one day or date for monthly; weekly days without
//! ordinals; yearly anchored on the start). DAILY with BYDAY (every weekday) is sent as WEEKLY.
//! WKST is dropped. EXDATEs are not sent: the Webex series keeps those occurrences (nobody is
//! invited to them in the calendar). Documented fallback for everything else (BYSETPOS, BYMONTH,
//! several monthly days, HOURLY and finer, RDATE, EXRULE, several RRULEs): a daily series at the
//! same time of day until the original rule's last occurrence, a superset of the calendar's
//! occurrences, so the one link works on every day one happens.
//!
//! Idempotency: the integration tag `confsync-<32 hex>` (SHA-256 of the action's key) goes with
//! the create; every create first lists `GET /meetings?integrationTag=..` around the start and
//! adopts what it finds. Updates do not send integrationTags (Webex documents that an empty or
//! null list deletes them; an absent one is taken to keep them).
//!
//! Fitting the real platform (issue 14), each against Webex's published references:
//! - `PATCH /meetings/{id}` is sent as `application/json-patch+json`, the request body content
//!   type of "Patch a Meeting" in webex/webex-openapi-specs public-spec/webex-meeting.json (an
//!   object of the fields to change, as that operation's example).
//! - 423 Locked is transient, honouring `Retry-After` ("The requested resource is temporarily
//!   unavailable. A Retry-After header may be present", the same file's 423 responses).
//! - Invitee listings (and every listing) follow the `Link: <...>; rel="next"` pages instead of
//!   reading one page of at most 100.
//! - Occurrences are matched by their original start (the scheduled meeting id
//!   `{series}_{YYYYMMDDTHHMMSSZ}`), so an occurrence moved once can be moved or cancelled again.
//! - Failed creates count against Webex's 100-per-24-hours scheduling limit: a create Webex
//!   refused with a 4xx is permanent (not retried), and the adapter itself allows at most
//!   `create_limit_per_day` create attempts in any 24 hours (RateLimited until a slot frees).
//!
//! Errors: Webex refuses to update an in-progress meeting: [`ProviderError::Transient`] with
//! `retry_after = in_progress_retry_secs`; a meeting created by a calendar connector (Hybrid
//! Calendar, the Outlook or Google integrations) cannot be changed through the API:
//! [`ProviderError::Permanent`]. 429 honours `Retry-After`. `trackingid` is quoted as request id.
//!
//! Unsure (configurable), and what would settle it: the exact wording of those two refusals
//! (matched on `in_progress_markers` and `connector_markers` in a 4xx body; a PATCH of a running
//! and of a connector-made meeting would show it); that `integrationTag` combines with
//! `from`/`to` in the listing; that a PATCH without integrationTags keeps them (a GET after such
//! a PATCH); that a scheduled meeting keeps its `{series}_{original start}` id after it is moved
//! (the spec's examples show the id format, not its stability: moving one and listing the series
//! would tell); whether Webex accepts plain `application/json` on PATCH too (the spec names only
//! json-patch+json); the 24-hour create count is per process and per adapter instance, not per
//! host, and starts empty at each restart (Webex's own count decides; its 429 is honoured).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{self, Answer, Secret, TokenCache};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

const NAME: &str = "webex";
const TITLE_MAX: usize = 128;
const AGENDA_MAX: usize = 1300;
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
const MIN_DURATION: TimeDelta = TimeDelta::minutes(10);
const MAX_DURATION: TimeDelta = TimeDelta::minutes(23 * 60 + 59);

/// `[provider]` settings for `kind = "webex"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebexConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// A static bearer token. Either this, or client_id + client_secret + refresh_token.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// The OAuth integration's client id.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// Schedule on behalf of this user (admin on-behalf-of scopes); `hostEmail` in every call.
    #[serde(default)]
    pub host_email: Option<String>,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The zone for events that name none (all-day events).
    #[serde(default = "default_zone")]
    pub default_time_zone: String,
    /// When an in-progress meeting refuses a change, retry after this long.
    #[serde(default = "default_in_progress_retry")]
    pub in_progress_retry_secs: u64,
    /// Lowercase phrases of a 4xx body meaning "the meeting is in progress".
    #[serde(default = "default_in_progress_markers")]
    pub in_progress_markers: Vec<String>,
    /// Lowercase phrases of a 4xx body meaning "created by a calendar connector".
    #[serde(default = "default_connector_markers")]
    pub connector_markers: Vec<String>,
    /// Create attempts (`POST /meetings`, failed ones included) allowed in any 24 hours before
    /// the adapter answers RateLimited without calling (Webex: 100 per host per 24 h); 0: off.
    #[serde(default = "default_create_limit")]
    pub create_limit_per_day: u32,
}

/// The keys of `[provider.webex]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.webex",
    doc: "Webex (kind = \"webex\"): a static access_token, or an OAuth integration's client_id, client_secret and refresh_token.",
    optional: true,
    keys: &[
        Key::defaulted(
            "base_url",
            Type::Url,
            "\"https://webexapis.com/v1\"",
            "The API's base URL.",
        ),
        Key::optional(
            "access_token",
            Type::Secret,
            "\"env:WEBEX_TOKEN\"",
            "A static bearer token (not with client_id, client_secret and refresh_token).",
        ),
        Key::optional(
            "client_id",
            Type::String,
            "\"...\"",
            "The OAuth integration's client id: with client_secret and refresh_token, access tokens are refreshed.",
        ),
        Key::optional(
            "client_secret",
            Type::Secret,
            "\"env:WEBEX_CLIENT_SECRET\"",
            "The OAuth integration's client secret.",
        ),
        Key::optional(
            "refresh_token",
            Type::Secret,
            "\"env:WEBEX_REFRESH_TOKEN\"",
            "The OAuth refresh token.",
        ),
        Key::optional(
            "host_email",
            Type::String,
            "\"host@example.com\"",
            "Schedule on behalf of this user (admin on-behalf-of scopes): `hostEmail` in every call.",
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
        Key::defaulted(
            "in_progress_retry_secs",
            Type::Integer,
            "300",
            "When an in-progress meeting refuses a change, it is retried after this long.",
        ),
        Key::defaulted(
            "in_progress_markers",
            Type::Strings,
            "[\"in progress\", \"in-progress\", \"inprogress\"]",
            "Lowercase phrases of a 4xx answer meaning \"the meeting is in progress\".",
        ),
        Key::defaulted(
            "connector_markers",
            Type::Strings,
            "[\"connector\", \"calendar integration\"]",
            "Lowercase phrases of a 4xx answer meaning \"created by a calendar connector\" (permanent).",
        ),
        Key::defaulted(
            "create_limit_per_day",
            Type::Integer,
            "100",
            "Create attempts (failed ones included) allowed in any 24 hours before the adapter answers rate-limited without calling (Webex allows 100 per host); 0: no limit.",
        ),
    ],
};

fn default_base_url() -> String {
    "https://webexapis.com/v1".into()
}
fn default_timeout() -> u64 {
    30
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_in_progress_retry() -> u64 {
    300
}
fn default_in_progress_markers() -> Vec<String> {
    vec![
        "in progress".into(),
        "in-progress".into(),
        "inprogress".into(),
    ]
}
fn default_create_limit() -> u32 {
    100
}
fn default_connector_markers() -> Vec<String> {
    vec!["connector".into(), "calendar integration".into()]
}

impl WebexConfig {
    /// A config with a static token and every optional field at its default.
    pub fn with_token(access_token: Secret) -> WebexConfig {
        WebexConfig {
            base_url: default_base_url(),
            access_token: Some(access_token),
            client_id: None,
            client_secret: None,
            refresh_token: None,
            host_email: None,
            timeout_secs: default_timeout(),
            default_time_zone: default_zone(),
            in_progress_retry_secs: default_in_progress_retry(),
            in_progress_markers: default_in_progress_markers(),
            connector_markers: default_connector_markers(),
            create_limit_per_day: default_create_limit(),
        }
    }

    /// A config with an OAuth integration's refresh token.
    pub fn with_refresh(client_id: &str, client_secret: Secret, refresh_token: Secret) -> Self {
        WebexConfig {
            access_token: None,
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret),
            refresh_token: Some(refresh_token),
            ..WebexConfig::with_token(Secret::new("unused"))
        }
    }
}

enum Auth {
    Static(Secret),
    Refresh {
        client_id: String,
        client_secret: Secret,
        refresh_token: tokio::sync::Mutex<Secret>,
        tokens: TokenCache,
    },
}

/// The Webex provider.
pub struct WebexProvider {
    config: WebexConfig,
    base_url: String,
    client: reqwest::Client,
    auth: Auth,
    zone: Tz,
    /// When each create attempt of the last 24 hours was sent.
    creates: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
}

/// Webex's "Patch a Meeting" takes `application/json-patch+json` (webex/webex-openapi-specs,
/// public-spec/webex-meeting.json, `paths./meetings/{meetingId}.patch.requestBody.content`),
/// with the same object body as the example there (a merge of the fields sent, `null` clearing
/// `agenda`, `recurrence` and `trackingCodes`), not an RFC 6902 operation list.
const PATCH_CONTENT_TYPE: &str = "application/json-patch+json";
const DAY: Duration = Duration::from_secs(24 * 3600);

impl WebexProvider {
    pub fn new(config: WebexConfig) -> Result<Self, String> {
        if !(config.base_url.starts_with("https://") || config.base_url.starts_with("http://")) {
            return Err(format!(
                "webex: base_url {:?} is not an http(s) URL",
                config.base_url
            ));
        }
        let oauth = [
            ("client_id", config.client_id.is_some()),
            ("client_secret", config.client_secret.is_some()),
            ("refresh_token", config.refresh_token.is_some()),
        ];
        let auth = match (
            &config.access_token,
            &config.client_id,
            &config.client_secret,
            &config.refresh_token,
        ) {
            (Some(_), _, _, _) if oauth.iter().any(|(_, set)| *set) => {
                return Err(
                    "webex: set either access_token or client_id + client_secret + refresh_token, not both"
                        .into(),
                );
            }
            (Some(token), ..) => Auth::Static(token.clone()),
            (None, Some(id), Some(secret), Some(refresh)) if !id.trim().is_empty() => {
                Auth::Refresh {
                    client_id: id.clone(),
                    client_secret: secret.clone(),
                    refresh_token: tokio::sync::Mutex::new(refresh.clone()),
                    tokens: TokenCache::new(TOKEN_MARGIN),
                }
            }
            _ => {
                let missing: Vec<&str> = oauth
                    .iter()
                    .filter(|(_, set)| !set)
                    .map(|(name, _)| *name)
                    .collect();
                return Err(if missing.len() == 3 {
                    "webex: no credentials: set access_token, or client_id + client_secret + refresh_token".into()
                } else if missing.is_empty() {
                    "webex: client_id is empty".into()
                } else {
                    format!("webex: OAuth refresh needs {} too", missing.join(" and "))
                });
            }
        };
        if config
            .host_email
            .as_deref()
            .is_some_and(|e| !e.contains('@'))
        {
            return Err("webex: host_email is not an email address".into());
        }
        if config.timeout_secs == 0 {
            return Err("webex: timeout_secs must be at least 1".into());
        }
        let zone: Tz = config.default_time_zone.parse().map_err(|_| {
            format!(
                "webex: default_time_zone {:?} is not an IANA time zone",
                config.default_time_zone
            )
        })?;
        let client = http::client(Duration::from_secs(config.timeout_secs))?;
        Ok(WebexProvider {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            config,
            client,
            auth,
            zone,
            creates: std::sync::Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// A PATCH of a meeting with the content type Webex's OpenAPI specification names.
    fn patch_request(&self, url: &str, body: &Value, token: &str) -> reqwest::RequestBuilder {
        self.client
            .patch(url)
            .header(reqwest::header::CONTENT_TYPE, PATCH_CONTENT_TYPE)
            .body(body.to_string())
            .bearer_auth(token)
    }

    /// Takes a create slot in the 24-hour window, or says when the next one frees up. Webex
    /// counts failed creates against its scheduling limit too, so every attempt takes a slot.
    fn take_create_slot(&self) -> Result<(), ProviderError> {
        let limit = self.config.create_limit_per_day as usize;
        if limit == 0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut sent = self.creates.lock().unwrap_or_else(|p| p.into_inner());
        while sent.front().is_some_and(|t| now.duration_since(*t) >= DAY) {
            sent.pop_front();
        }
        if sent.len() >= limit {
            let wait = DAY.saturating_sub(now.duration_since(sent[sent.len() - limit]));
            return Err(ProviderError::RateLimited {
                provider: NAME.into(),
                detail: format!(
                    "{limit} create attempts in the last 24 hours (create_limit_per_day): Webex's scheduling limit"
                ),
                retry_after: Some(wait.max(Duration::from_secs(1))),
            });
        }
        sent.push_back(now);
        Ok(())
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), ProviderError> {
        let Auth::Refresh {
            client_id,
            client_secret,
            refresh_token,
            ..
        } = &self.auth
        else {
            // Only the refresh mode fetches tokens; a static token is never renewed.
            return Err(ProviderError::Reauth {
                provider: NAME.into(),
                detail: "the static access_token cannot be renewed".into(),
            });
        };
        let mut refresh = refresh_token.lock().await;
        let request = self
            .client
            .post(format!("{}/access_token", self.base_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh.expose()),
            ]);
        let answer = http::send(NAME, request).await?;
        let token = http::oauth_token(&answer)?;
        #[derive(Deserialize)]
        struct Rotated {
            refresh_token: Option<String>,
        }
        if let Ok(Rotated {
            refresh_token: Some(new),
        }) = answer.json_redacted::<Rotated>()
            && !new.is_empty()
        {
            *refresh = Secret::new(new);
        }
        Ok(token)
    }

    /// Sends an authorised request; with a refresh token, a 401 gets one more try.
    async fn call(
        &self,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        match &self.auth {
            Auth::Static(token) => http::send(NAME, make(token.expose())).await,
            Auth::Refresh { tokens, .. } => {
                let token = tokens.get(|| self.fetch_token()).await?;
                let answer = http::send(NAME, make(token.expose())).await?;
                if answer.status != 401 {
                    return Ok(answer);
                }
                tracing::debug!("webex: access token refused, refreshing");
                tokens.invalidate().await;
                let token = tokens.get(|| self.fetch_token()).await?;
                http::send(NAME, make(token.expose())).await
            }
        }
    }

    /// Webex's refusals, then the shared classification.
    fn error(&self, answer: &Answer) -> ProviderError {
        // "423 Locked: The requested resource is temporarily unavailable. A Retry-After header
        // may be present that specifies how many seconds you need to wait before attempting the
        // request again." (webex-openapi-specs public-spec/webex-meeting.json, every operation's
        // 423 response; the shared classification took it as permanent).
        if answer.status == 423 {
            return ProviderError::Transient {
                provider: NAME.into(),
                detail: format!("temporarily unavailable: {}", answer.describe()),
                retry_after: answer.retry_after,
            };
        }
        if (400..500).contains(&answer.status) && ![401, 404, 429].contains(&answer.status) {
            let text = String::from_utf8_lossy(&answer.body).to_lowercase();
            if self
                .config
                .in_progress_markers
                .iter()
                .any(|m| text.contains(m.as_str()))
            {
                return ProviderError::Transient {
                    provider: NAME.into(),
                    detail: format!("the meeting is in progress: {}", answer.describe()),
                    retry_after: Some(Duration::from_secs(self.config.in_progress_retry_secs)),
                };
            }
            if self
                .config
                .connector_markers
                .iter()
                .any(|m| text.contains(m.as_str()))
            {
                return ProviderError::Permanent {
                    provider: NAME.into(),
                    detail: format!(
                        "the meeting was created by a calendar connector and cannot be changed through the API: {}",
                        answer.describe()
                    ),
                };
            }
        }
        http::classify(answer)
    }

    fn host_query(&self) -> Vec<(&'static str, String)> {
        self.config
            .host_email
            .iter()
            .map(|e| ("hostEmail", e.clone()))
            .collect()
    }

    fn meeting_url(&self, meeting_id: &str) -> String {
        format!("{}/meetings/{}", self.base_url, path_segment(meeting_id))
    }

    /// GET a listing and decode its items, following its pages: Webex paginates with a `Link`
    /// header whose `rel="next"` URL carries the cursor ("Pagination", developer.webex.com
    /// REST API basics: "the Link header ... rel=next"); the next URL is used as given (it
    /// already holds the query). Only links on `base_url` are followed (the bearer token goes
    /// with them), at most 100 pages.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: Vec<(&'static str, String)>,
    ) -> Result<Vec<T>, ProviderError> {
        #[derive(Deserialize)]
        struct Items<T> {
            #[serde(default = "Vec::new")]
            items: Vec<T>,
        }
        let first = format!("{}{path}", self.base_url);
        let answer = self
            .call(|token| self.client.get(&first).query(&query).bearer_auth(token))
            .await?;
        if !answer.is_success() {
            return Err(self.error(&answer));
        }
        let mut next = answer.next_link.clone();
        let mut items = answer.json_redacted::<Items<T>>()?.items;
        for _ in 0..100 {
            let Some(url) = next.take() else { break };
            if !url.starts_with(&format!("{}/", self.base_url)) {
                tracing::warn!("webex: not following a next page off base_url");
                break;
            }
            let answer = self
                .call(|token| self.client.get(&url).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(self.error(&answer));
            }
            next = answer.next_link.clone();
            items.extend(answer.json_redacted::<Items<T>>()?.items);
        }
        Ok(items)
    }

    /// Brings the meeting's invitees in line with the spec's attendees.
    async fn sync_invitees(
        &self,
        meeting_id: &str,
        spec: &MeetingSpec,
    ) -> Result<(), ProviderError> {
        #[derive(Deserialize)]
        struct Invitee {
            id: Option<String>,
            email: Option<String>,
        }
        let mut query = vec![
            ("meetingId", meeting_id.to_owned()),
            ("max", "100".to_owned()),
        ];
        query.extend(self.host_query());
        let existing: Vec<Invitee> = self.list("/meetingInvitees", query).await?;
        let keep = |email: &str| {
            spec.attendees.iter().any(|a| a.eq_ignore_ascii_case(email))
                || spec
                    .organizer
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(email))
                || self
                    .config
                    .host_email
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(email))
        };
        for invitee in &existing {
            let (Some(id), Some(email)) = (&invitee.id, &invitee.email) else {
                continue;
            };
            if keep(email) {
                continue;
            }
            let url = format!("{}/meetingInvitees/{}", self.base_url, path_segment(id));
            let mut query = vec![("sendEmail", "false".to_owned())];
            query.extend(self.host_query());
            let answer = self
                .call(|token| self.client.delete(&url).query(&query).bearer_auth(token))
                .await?;
            if !answer.is_success() && answer.status != 404 {
                return Err(self.error(&answer));
            }
        }
        for email in &spec.attendees {
            let known = existing.iter().any(|i| {
                i.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            });
            if known {
                continue;
            }
            let mut body = json!({"meetingId": meeting_id, "email": email, "sendEmail": false});
            if let Some(host) = &self.config.host_email {
                body["hostEmail"] = host.clone().into();
            }
            let url = format!("{}/meetingInvitees", self.base_url);
            let answer = self
                .call(|token| self.client.post(&url).json(&body).bearer_auth(token))
                .await?;
            // 409: invited meanwhile (a retried update).
            if !answer.is_success() && answer.status != 409 {
                return Err(self.error(&answer));
            }
        }
        Ok(())
    }

    /// The scheduled meeting of a series whose *original* start is `occurrence` (the calendar
    /// names an occurrence by its original start, also after it moved). Webex names a series'
    /// scheduled meetings `{series id}_{original start, UTC, YYYYMMDDTHHMMSSZ}` (the scheduled
    /// meeting id in webex-meeting.json's examples, e.g.
    /// `1d824a4a205042eba9574e00b711b226_20200127T120000Z`). The series is listed around the
    /// original start and a scheduled meeting matches by that id, or (unmoved) by its start; a
    /// moved one is not in that window, so its id is then read directly (`GET /meetings/{id}`).
    /// Matching by the current start alone lost an occurrence after its first move.
    async fn find_occurrence(
        &self,
        meeting_id: &str,
        occurrence: DateTime<Utc>,
    ) -> Result<Option<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Scheduled {
            id: Option<String>,
            start: Option<String>,
        }
        let derived = occurrence_id(meeting_id, occurrence);
        let mut query = vec![
            ("meetingSeriesId", meeting_id.to_owned()),
            ("meetingType", "scheduledMeeting".to_owned()),
            ("from", utc(occurrence - TimeDelta::minutes(1))),
            ("to", utc(occurrence + TimeDelta::minutes(1))),
        ];
        query.extend(self.host_query());
        let items: Vec<Scheduled> = self.list("/meetings", query).await?;
        if let Some(id) = items.iter().find_map(|s| {
            let id = s.id.as_deref()?;
            let moved_here = id.rsplit_once('_').is_some_and(|(_, o)| o.contains('T'));
            let start = s
                .start
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            // By the original-start id; by the start only when the id says nothing else
            // (another occurrence moved onto this time has another id).
            (id == derived || (!moved_here && start == Some(occurrence.into()))).then_some(id)
        }) {
            return Ok(Some(id.to_owned()));
        }
        let url = self.meeting_url(&derived);
        let query = self.host_query();
        let answer = self
            .call(|token| self.client.get(&url).query(&query).bearer_auth(token))
            .await?;
        match answer.status {
            200..=299 => Ok(Some(derived)),
            404 => Ok(None),
            _ => Err(self.error(&answer)),
        }
    }

    fn times(&self, start: DateTime<Utc>, end: DateTime<Utc>, zone: Tz) -> (String, String) {
        (local(start, zone), local(end, zone))
    }
}

/// A series' scheduled meeting id for the occurrence originally at `original` (see
/// [`WebexProvider::find_occurrence`]).
pub fn occurrence_id(series_id: &str, original: DateTime<Utc>) -> String {
    format!("{series_id}_{}", original.format("%Y%m%dT%H%M%SZ"))
}

fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// ISO 8601 with the zone's offset (`2030-12-03T10:00:00+01:00`).
fn local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn transient(answer: &Answer, why: &str) -> ProviderError {
    ProviderError::Transient {
        provider: NAME.into(),
        detail: format!("{}: {why}", answer.status_line()),
        retry_after: None,
    }
}

/// The integration tag a create leaves (and looks for).
pub fn integration_tag_for(key: &str) -> String {
    format!("confsync-{}", &http::sha256_hex(key.as_bytes())[..32])
}

/// What Webex is asked to schedule for a spec at `now` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Meeting {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        /// The RRULE as sent (without `RRULE:`).
        recurrence: Option<String>,
        /// A series whose first occurrence is already past (its start was moved forward).
        began: bool,
    },
    /// Every occurrence is over: nothing to schedule.
    Over,
}

/// Plans start, end and recurrence within Webex's rules.
pub fn schedule(spec: &MeetingSpec, zone: Tz, now: DateTime<Utc>) -> Schedule {
    let min_start = next_minute(now + TimeDelta::seconds(60));
    let start = http::instant_in(spec.start, zone);
    let end = http::instant_in(spec.end, zone).max(start);
    let clamp = |start: DateTime<Utc>, end: DateTime<Utc>| {
        let length = (end - start).clamp(MIN_DURATION, MAX_DURATION);
        (start, start + length)
    };
    let Some(rule) = webex_rule(&spec.recurrence, start, zone) else {
        if start >= min_start {
            let (start, end) = clamp(start, end);
            return Schedule::Meeting {
                start,
                end,
                recurrence: None,
                began: false,
            };
        }
        if end <= min_start {
            return Schedule::Over;
        }
        let (start, end) = clamp(min_start, end);
        return Schedule::Meeting {
            start,
            end,
            recurrence: None,
            began: false,
        };
    };
    if start >= min_start {
        let (start, end) = clamp(start, end);
        return Schedule::Meeting {
            start,
            end,
            recurrence: Some(rule),
            began: false,
        };
    }
    match next_occurrence(&rule, start, zone, min_start) {
        Some((at, rule)) => {
            let (start, end) = clamp(at, at + (end - start));
            Schedule::Meeting {
                start,
                end,
                recurrence: Some(rule),
                began: true,
            }
        }
        None => Schedule::Over,
    }
}

fn next_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    let up = seconds + (60 - seconds.rem_euclid(60)) % 60;
    DateTime::from_timestamp(up, 0).unwrap_or(at)
}

/// The series' rule as Webex takes it, or the documented daily fallback; None for no recurrence.
pub fn webex_rule(lines: &[String], start: DateTime<Utc>, zone: Tz) -> Option<String> {
    let mut rules = Vec::new();
    let mut other = None;
    for line in lines {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("RRULE:") {
            rules.push(&line[6..]);
        } else if !upper.starts_with("EXDATE") {
            other = Some(
                upper
                    .split([':', ';'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    if rules.is_empty() && other.is_none() {
        return None;
    }
    let why = match (rules.as_slice(), other) {
        (_, Some(kind)) => format!("{kind} has no Webex equivalent"),
        ([one], None) => match subset_rule(one, zone) {
            Ok(rule) => return Some(rule),
            Err(why) => why,
        },
        _ => "several RRULEs".into(),
    };
    tracing::info!("webex: {why}: scheduling a daily series covering every occurrence");
    // The daily fallback ends with the original rule's last occurrence when it has one.
    let last = rules
        .first()
        .and_then(|rule| last_occurrence(rule, start, zone));
    Some(match last {
        Some(last) => format!(
            "FREQ=DAILY;INTERVAL=1;UNTIL={}",
            last.format("%Y%m%dT%H%M%SZ")
        ),
        None => "FREQ=DAILY;INTERVAL=1".into(),
    })
}

fn subset_rule(rule: &str, zone: Tz) -> Result<String, String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for part in rule.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("unreadable RRULE part {part:?}"))?;
        let key = key.to_ascii_uppercase();
        let value = value.to_ascii_uppercase();
        match key.as_str() {
            "FREQ" | "INTERVAL" | "COUNT" | "BYDAY" | "BYMONTHDAY" => parts.push((key, value)),
            "UNTIL" => {
                let until = parse_until(&value, zone)
                    .ok_or_else(|| format!("unreadable UNTIL {value:?}"))?;
                parts.push((key, until.format("%Y%m%dT%H%M%SZ").to_string()));
            }
            "WKST" => {}
            other => return Err(format!("RRULE {other}")),
        }
    }
    let get = |k: &str| {
        parts
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let freq = get("FREQ").ok_or("an RRULE without FREQ")?;
    let by_day = get("BYDAY");
    let by_month_day = get("BYMONTHDAY");
    let ordinal = |d: &str| d.len() > 2;
    let interval_one = get("INTERVAL").is_none_or(|i| i == "1");
    let mut weekly = false;
    match freq.as_str() {
        "DAILY" => match (&by_day, &by_month_day) {
            (None, None) => {}
            // Every weekday and the like: the same occurrences as a weekly rule.
            (Some(days), None) if interval_one && !days.split(',').any(ordinal) => weekly = true,
            _ => return Err("DAILY with BYDAY or BYMONTHDAY".into()),
        },
        "WEEKLY" => {
            if by_month_day.is_some()
                || by_day.as_deref().is_some_and(|d| d.split(',').any(ordinal))
            {
                return Err("WEEKLY with BYMONTHDAY or ordinal days".into());
            }
        }
        "MONTHLY" => {
            let one = |v: &Option<String>| v.as_deref().is_none_or(|v| !v.contains(','));
            if (by_day.is_some() && by_month_day.is_some()) || !one(&by_day) || !one(&by_month_day)
            {
                return Err(
                    "MONTHLY with several days or dates (Webex takes only the first)".into(),
                );
            }
        }
        "YEARLY" => {
            if by_day.is_some() || by_month_day.is_some() {
                return Err("YEARLY with BYDAY or BYMONTHDAY".into());
            }
        }
        other => return Err(format!("FREQ={other}")),
    }
    if get("COUNT").is_some() && get("UNTIL").is_some() {
        return Err("COUNT and UNTIL together".into());
    }
    if weekly {
        for part in parts.iter_mut().filter(|(k, _)| k == "FREQ") {
            part.1 = "WEEKLY".into();
        }
    }
    Ok(parts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";"))
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
    Some(http::local_instant(day.and_hms_opt(23, 59, 59)?, zone))
}

fn rrule_set(rule: &str, start: DateTime<Utc>, zone: Tz) -> Option<rrule::RRuleSet> {
    // UNTIL must be UTC for the parser when DTSTART has a zone.
    let normalised: Vec<String> = rule
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") => match parse_until(v, zone) {
                Some(u) => format!("UNTIL={}", u.format("%Y%m%dT%H%M%SZ")),
                None => part.to_owned(),
            },
            _ => part.to_owned(),
        })
        .collect();
    let text = format!(
        "DTSTART;TZID={}:{}\nRRULE:{}",
        zone.name(),
        start.with_timezone(&zone).format("%Y%m%dT%H%M%S"),
        normalised.join(";")
    );
    match text.parse::<rrule::RRuleSet>() {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::warn!("webex: cannot expand {rule:?}: {e}");
            None
        }
    }
}

/// The last occurrence of a finite rule (COUNT or UNTIL), None when endless or unreadable.
fn last_occurrence(rule: &str, start: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
    let upper = rule.to_ascii_uppercase();
    if !upper.contains("COUNT=") && !upper.contains("UNTIL=") {
        return None;
    }
    let set = rrule_set(rule, start, zone)?;
    let result = set.all(u16::MAX);
    if result.limited {
        return None;
    }
    result.dates.last().map(|d| d.with_timezone(&Utc))
}

/// The first occurrence at or after `not_before`, and the rule with COUNT reduced by the
/// occurrences skipped; None when the series has no occurrence left.
fn next_occurrence(
    rule: &str,
    start: DateTime<Utc>,
    zone: Tz,
    not_before: DateTime<Utc>,
) -> Option<(DateTime<Utc>, String)> {
    let Some(set) = rrule_set(rule, start, zone) else {
        // Unreadable for the expander: the next day at the same time, rule unchanged.
        let mut at = start;
        while at < not_before {
            at += TimeDelta::days(1);
        }
        return Some((at, rule.to_owned()));
    };
    let mut skipped = 0u32;
    let mut next = None;
    for occurrence in set.into_iter().take(500_000) {
        let occurrence = occurrence.with_timezone(&Utc);
        if occurrence >= not_before {
            next = Some(occurrence);
            break;
        }
        skipped += 1;
    }
    let next = next?;
    let rule = rule
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("COUNT") => {
                let count: u32 = v.parse().unwrap_or(1);
                format!("COUNT={}", count.saturating_sub(skipped).max(1))
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";");
    Some((next, rule))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebexMeeting {
    id: Option<String>,
    web_link: Option<String>,
}

impl ConferenceProvider for WebexProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// `GET /people/me` with the configured token (refreshed first in the refresh-token mode,
    /// as at every start of the service): the token is accepted and names a person.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let url = format!("{}/people/me", self.base_url);
            let answer = self
                .call(|token| self.client.get(&url).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(self.error(&answer));
            }
            #[derive(Deserialize)]
            struct Person {
                id: Option<String>,
            }
            let person: Person = answer.json_redacted()?;
            if person.id.as_deref().is_none_or(str::is_empty) {
                return Err(ProviderError::Transient {
                    provider: NAME.into(),
                    detail: format!("{}: /people/me has no id", answer.status_line()),
                    retry_after: None,
                });
            }
            let on_behalf = match &self.config.host_email {
                Some(host) => format!(", scheduling on behalf of {host}"),
                None => String::new(),
            };
            Ok(format!("webex: token accepted (GET /people/me){on_behalf}"))
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
            let zone = http::zone_of(spec.time_zone.as_deref(), self.zone);
            let Schedule::Meeting {
                start,
                end,
                recurrence,
                ..
            } = schedule(spec, zone, Utc::now())
            else {
                return Err(ProviderError::Permanent {
                    provider: NAME.into(),
                    detail: "the meeting is over: Webex schedules no meeting in the past".into(),
                });
            };
            let tag = integration_tag_for(key);

            let original = http::instant_in(spec.start, zone).min(start);
            let mut query = vec![
                ("integrationTag", tag.clone()),
                ("from", utc(original - TimeDelta::days(1))),
                ("to", utc(start + TimeDelta::days(1))),
            ];
            query.extend(self.host_query());
            let found: Vec<WebexMeeting> = self.list("/meetings", query).await?;
            if let Some(m) = found
                .into_iter()
                .find(|m| m.id.is_some() && m.web_link.is_some())
            {
                let meeting_id = m.id.unwrap_or_default();
                tracing::info!(
                    "webex: adopting meeting {meeting_id} made by an earlier try of this create"
                );
                return Ok(Meeting {
                    meeting_id,
                    join_url: m.web_link.unwrap_or_default(),
                });
            }

            let (start_text, end_text) = self.times(start, end, zone);
            let title = http::truncate(spec.title.trim(), TITLE_MAX);
            let mut body = Map::new();
            body.insert(
                "title".into(),
                if title.is_empty() { "Meeting" } else { title }.into(),
            );
            if !spec.description.is_empty() {
                body.insert(
                    "agenda".into(),
                    http::truncate(&spec.description, AGENDA_MAX).into(),
                );
            }
            body.insert("start".into(), start_text.into());
            body.insert("end".into(), end_text.into());
            body.insert("timezone".into(), zone.name().into());
            if let Some(rule) = recurrence {
                body.insert("recurrence".into(), rule.into());
            }
            let invitees: Vec<Value> = spec.attendees.iter().map(|e| json!({"email": e})).collect();
            body.insert("invitees".into(), invitees.into());
            body.insert("sendEmail".into(), false.into());
            body.insert("integrationTags".into(), json!([tag]));
            if let Some(host) = &self.config.host_email {
                body.insert("hostEmail".into(), host.clone().into());
            }
            let url = format!("{}/meetings", self.base_url);
            self.take_create_slot()?;
            let answer = self
                .call(|token| self.client.post(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                // Webex counts failed creates against the host's 100-per-24-hours scheduling
                // limit, so a refused create (4xx) is not retried: retrying what Webex refused
                // would burn the day's allowance. 423 (temporarily locked) and 429 stay
                // retryable, as do 5xx (the list-by-tag before each create finds a meeting a
                // failed-looking attempt made).
                return Err(match self.error(&answer) {
                    e if e.is_retryable() => e,
                    ProviderError::Reauth { provider, detail } => {
                        ProviderError::Reauth { provider, detail }
                    }
                    _ if (400..500).contains(&answer.status) => ProviderError::Permanent {
                        provider: NAME.into(),
                        detail: format!("Webex refused the create: {}", answer.describe()),
                    },
                    e => e,
                });
            }
            // The answer carries the meeting password and host key: never quoted.
            let made: WebexMeeting = answer.json_redacted()?;
            let meeting_id = made
                .id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| transient(&answer, "the created meeting has no id"))?;
            let join_url = made
                .web_link
                .filter(|u| !u.is_empty())
                .ok_or_else(|| transient(&answer, "the created meeting has no webLink"))?;
            Ok(Meeting {
                meeting_id,
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
            let zone = http::zone_of(spec.time_zone.as_deref(), self.zone);
            let Schedule::Meeting {
                start,
                end,
                recurrence,
                began,
            } = schedule(spec, zone, Utc::now())
            else {
                tracing::info!("webex: meeting {meeting_id} is over: nothing to update");
                return Ok(None);
            };
            let title = http::truncate(spec.title.trim(), TITLE_MAX);
            let mut body = Map::new();
            body.insert(
                "title".into(),
                if title.is_empty() { "Meeting" } else { title }.into(),
            );
            body.insert(
                "agenda".into(),
                if spec.description.is_empty() {
                    Value::Null
                } else {
                    http::truncate(&spec.description, AGENDA_MAX).into()
                },
            );
            if !began {
                let (start_text, end_text) = self.times(start, end, zone);
                body.insert("start".into(), start_text.into());
                body.insert("end".into(), end_text.into());
                body.insert("timezone".into(), zone.name().into());
                body.insert(
                    "recurrence".into(),
                    recurrence.map_or(Value::Null, Value::from),
                );
            }
            body.insert("sendEmail".into(), false.into());
            if let Some(host) = &self.config.host_email {
                body.insert("hostEmail".into(), host.clone().into());
            }
            let url = self.meeting_url(meeting_id);
            let body = Value::Object(body);
            let answer = self
                .call(|token| self.patch_request(&url, &body, token))
                .await?;
            if !answer.is_success() {
                return Err(self.error(&answer));
            }
            let link = answer
                .json_redacted::<WebexMeeting>()
                .ok()
                .and_then(|m| m.web_link)
                .filter(|u| !u.is_empty());
            self.sync_invitees(meeting_id, spec).await?;
            Ok(link)
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let zone = self.zone;
            let single = MeetingSpec {
                title: title.to_owned(),
                description: String::new(),
                start,
                end,
                time_zone: None,
                recurrence: vec![],
                attendees: vec![],
                organizer: None,
            };
            let now = Utc::now();
            let Schedule::Meeting { start, end, .. } = schedule(&single, zone, now) else {
                return Ok(()); // moved into the past: nothing Webex can hold
            };
            let at = http::instant_in(occurrence, zone);
            let Some(scheduled) = self.find_occurrence(meeting_id, at).await? else {
                return Err(ProviderError::NotFound {
                    provider: NAME.into(),
                });
            };
            let title = http::truncate(title.trim(), TITLE_MAX);
            let (start_text, end_text) = self.times(start, end, zone);
            let mut body = json!({
                "title": if title.is_empty() { "Meeting" } else { title },
                "start": start_text,
                "end": end_text,
                "sendEmail": false,
            });
            if let Some(host) = &self.config.host_email {
                body["hostEmail"] = host.clone().into();
            }
            let url = self.meeting_url(&scheduled);
            let answer = self
                .call(|token| self.patch_request(&url, &body, token))
                .await?;
            if answer.is_success() {
                Ok(())
            } else {
                Err(self.error(&answer))
            }
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let at = http::instant_in(occurrence, self.zone);
            if at <= Utc::now() {
                return Ok(()); // Webex keeps the past
            }
            let scheduled = match self.find_occurrence(meeting_id, at).await {
                Ok(Some(id)) => id,
                Ok(None) | Err(ProviderError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            self.delete(&scheduled, key).await
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let url = self.meeting_url(meeting_id);
            let mut query = vec![("sendEmail", "false".to_owned())];
            query.extend(self.host_query());
            let answer = self
                .call(|token| self.client.delete(&url).query(&query).bearer_auth(token))
                .await?;
            if answer.is_success() {
                return Ok(());
            }
            match self.error(&answer) {
                ProviderError::NotFound { .. } => Ok(()),
                e => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn spec(start: &str, end: &str, recurrence: &[&str]) -> MeetingSpec {
        MeetingSpec {
            title: "t".into(),
            description: String::new(),
            start: When::At(at(start)),
            end: When::At(at(end)),
            time_zone: Some("Europe/Berlin".into()),
            recurrence: recurrence.iter().map(|s| s.to_string()).collect(),
            attendees: vec![],
            organizer: None,
        }
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    fn rule(lines: &[&str]) -> Option<String> {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        webex_rule(&lines, at("2030-12-03T09:00:00Z"), BERLIN)
    }

    #[test]
    fn the_supported_subset_passes_through() {
        assert_eq!(rule(&[]), None);
        assert_eq!(
            rule(&[
                "RRULE:FREQ=WEEKLY;WKST=SU;BYDAY=TU,TH;COUNT=10",
                "EXDATE:20301210T090000Z"
            ])
            .as_deref(),
            Some("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10")
        );
        assert_eq!(
            rule(&["RRULE:FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR;UNTIL=20310601"]).as_deref(),
            Some("FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR;UNTIL=20310601T215959Z")
        );
        assert_eq!(
            rule(&["RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR"]).as_deref(),
            Some("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
        );
        assert_eq!(
            rule(&["RRULE:FREQ=YEARLY;COUNT=3"]).as_deref(),
            Some("FREQ=YEARLY;COUNT=3")
        );
    }

    #[test]
    fn the_rest_falls_back_to_a_daily_superset() {
        // Second Tuesday of the month, three times: Dec 10, Jan 14, Feb 11.
        assert_eq!(
            rule(&["RRULE:FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2;COUNT=3"]).as_deref(),
            Some("FREQ=DAILY;INTERVAL=1;UNTIL=20310211T090000Z")
        );
        assert_eq!(
            rule(&["RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15"]).as_deref(),
            Some("FREQ=DAILY;INTERVAL=1"),
            "endless stays endless"
        );
        for lines in [
            &["RRULE:FREQ=HOURLY;COUNT=3"][..],
            &["RRULE:FREQ=YEARLY;BYMONTH=6;COUNT=3"],
            &["RRULE:FREQ=DAILY;COUNT=3", "RDATE:20301225T090000Z"],
        ] {
            assert!(
                rule(lines).unwrap().starts_with("FREQ=DAILY;INTERVAL=1"),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn past_starts_and_durations_are_clamped() {
        let now = at("2030-12-03T09:30:20Z");
        // Under way: starts at the next whole minute after a minute's margin, keeps its end.
        assert_eq!(
            schedule(
                &spec("2030-12-03T09:00:00Z", "2030-12-03T10:00:00Z", &[]),
                BERLIN,
                now
            ),
            Schedule::Meeting {
                start: at("2030-12-03T09:32:00Z"),
                end: at("2030-12-03T10:00:00Z"),
                recurrence: None,
                began: false
            }
        );
        assert_eq!(
            schedule(
                &spec("2030-12-03T08:00:00Z", "2030-12-03T09:00:00Z", &[]),
                BERLIN,
                now
            ),
            Schedule::Over
        );
        let Schedule::Meeting { start, end, .. } = schedule(
            &spec("2030-12-04T09:00:00Z", "2030-12-04T09:05:00Z", &[]),
            BERLIN,
            now,
        ) else {
            panic!()
        };
        assert_eq!(end - start, MIN_DURATION);
        let mut all_day = spec("2030-12-04T09:00:00Z", "2030-12-04T09:05:00Z", &[]);
        all_day.start = When::Day("2030-12-04".parse().unwrap());
        all_day.end = When::Day("2030-12-05".parse().unwrap());
        let Schedule::Meeting { start, end, .. } = schedule(&all_day, BERLIN, now) else {
            panic!()
        };
        assert_eq!(
            (start, end - start),
            (at("2030-12-03T23:00:00Z"), MAX_DURATION)
        );
    }

    #[test]
    fn a_series_that_began_starts_at_its_next_occurrence_with_the_rest_of_its_count() {
        let now = at("2030-12-17T12:00:00Z"); // a Tuesday, after that day's occurrence
        let weekly = spec(
            "2030-12-03T09:00:00Z",
            "2030-12-03T10:00:00Z",
            &["RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10"],
        );
        assert_eq!(
            schedule(&weekly, BERLIN, now),
            Schedule::Meeting {
                start: at("2030-12-19T09:00:00Z"),
                end: at("2030-12-19T10:00:00Z"),
                recurrence: Some("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=5".into()),
                began: true
            }
        );
        let done = spec(
            "2030-12-03T09:00:00Z",
            "2030-12-03T10:00:00Z",
            &["RRULE:FREQ=DAILY;COUNT=3"],
        );
        assert_eq!(schedule(&done, BERLIN, now), Schedule::Over);
        let endless = spec(
            "2030-12-03T09:00:00Z",
            "2030-12-03T10:00:00Z",
            &["RRULE:FREQ=DAILY;INTERVAL=2"],
        );
        let Schedule::Meeting {
            start, recurrence, ..
        } = schedule(&endless, BERLIN, now)
        else {
            panic!()
        };
        assert_eq!(
            (start, recurrence.as_deref()),
            (at("2030-12-19T09:00:00Z"), Some("FREQ=DAILY;INTERVAL=2"))
        );
    }

    #[test]
    fn tags_fit_webex_limits() {
        let tag = integration_tag_for("create:cal:event");
        assert!(tag.len() <= 64);
        assert_eq!(tag, integration_tag_for("create:cal:event"));
        assert_ne!(tag, integration_tag_for("create:cal:other"));
    }
}
