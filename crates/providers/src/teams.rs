//! The `teams` adapter: Microsoft Teams meetings through Microsoft Graph `onlineMeetings`
//! (`https://graph.microsoft.com/v1.0`), app-only.
//!
//! What it maps:
//! - auth: client credentials, `POST {login_url}/{tenant_id}/oauth2/v2.0/token` with
//!   `grant_type=client_credentials` and `scope=https://graph.microsoft.com/.default`; the token
//!   is cached in a [`TokenCache`] (replaced five minutes before it expires), and a 401 from Graph
//!   gets one more try with a new token before it becomes [`ProviderError::Reauth`]. The app needs
//!   `OnlineMeetings.ReadWrite.All` and an application access policy granted to `user_id` (an
//!   admin step; without it Graph answers 403). Policy changes "can take up to 30 minutes to take
//!   effect" (Graph docs, "Configure application access policy"), so a 403 is retried for
//!   `access_policy_grace_secs` (an hour) from the first one since the last success, then
//!   permanent with what to grant.
//! - the organizer: onlineMeetings routes take the user's **object id** ("userId is the object
//!   ID of a user", onlinemeeting-createorget.md and onlinemeeting-update.md); a UPN there
//!   answers 404. `user_id` may be either: a UPN is resolved once (`GET /users/{upn}?$select=id`,
//!   needs `User.Read.All`) and cached; anything else is refused at startup.
//! - 404: on `createOrGet` it can only mean the organizer is missing (permanent); on PATCH and
//!   DELETE the adapter asks the directory (`GET /users/{id}?$select=id`) whether the organizer
//!   exists: a missing meeting is [`ProviderError::NotFound`] (a delete is done), a missing
//!   organizer a permanent error (a delete is not done).
//! - delete: first `PATCH lobbyBypassSettings {scope: organizer, isDialInBypassEnabled: false}`
//!   (`lock_lobby_on_delete`), because a deleted meeting's joinWebUrl keeps working (Graph docs
//!   issues #7802, #17590); then `DELETE`.
//! - create `POST /users/{user_id}/onlineMeetings/createOrGet` with `externalId`, `subject`,
//!   `startDateTime`, `endDateTime` (UTC) and `participants.attendees[{upn, role}]`; update
//!   `PATCH /users/{user_id}/onlineMeetings/{id}` with the subject, `startDateTime` and
//!   `endDateTime` always together, and the full attendee list; delete `DELETE` (204; 404 = done).
//!   The join URL is `joinWebUrl`.
//! - a series is one online meeting at the time of its first occurrence: Teams meeting links can be
//!   joined whenever, so the one link serves every occurrence. All-day events run from midnight to
//!   midnight in the event's zone, else `default_time_zone`.
//!
//! What it cannot do (so [`Capabilities`] say no, and the planner never calls for it): a Graph
//! online meeting has no description, time zone or recurrence, and no occurrences; so a changed
//! description costs no call, and moving or cancelling one occurrence leaves the meeting as it is
//! (its link stays valid for the others). The organizer is fixed at creation (`user_id`).
//!
//! Idempotency: `createOrGet` is Graph's own: the `externalId` (tenant + user + externalId
//! identify the meeting) is derived from the action's key, SHA-256 shaped as a GUID (36
//! characters, the shape Graph's documentation uses; Graph documents no maximum length).
//!
//! Errors: 429 and 503 honour `Retry-After` (shared classification); Graph's `request-id` header is
//! quoted in every error.
//!
//! Open doubts and what would settle them: the error code Graph gives on an onlineMeetings route
//! for a missing user versus a missing meeting (undocumented; observed as 404 `NotFound` for
//! both, so the directory is asked; without User.Read.All a 404 is taken as "meeting gone", with
//! a warning: granting User.Read.All settles it); whether the lobby lock keeps a cancelled link's
//! guests out in practice (someone with organizer rights can still admit them; a join through a
//! cancelled meeting's link would tell); whether Graph will ever invalidate joinWebUrl on delete
//! (the open docs issue #17590).
//!
//! Unsure (configurable or noted): whether Graph accepts attendees outside the tenant identified
//! by `upn` alone (`send_attendees = false` leaves them out: anyone with the link can still ask to
//! join through the lobby); the subject's maximum length is not documented (cut at 255
//! characters, Outlook's limit); whether `createOrGet` with an existing externalId also applies
//! changed fields (it is only used to create; changes go through PATCH).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Answer, Secret, TokenCache};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

const NAME: &str = "teams";
const SUBJECT_MAX: usize = 255;
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
const SCOPE: &str = "https://graph.microsoft.com/.default";

/// `[provider]` settings for `kind = "teams"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The Entra ID (Azure AD) tenant: its id or a verified domain.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// Its client secret (the value, `env:NAME` or `file:/path`).
    pub client_secret: Secret,
    /// The organizer: a user's object id or UPN, covered by the application access policy.
    pub user_id: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The zone for events that name none (all-day events).
    #[serde(default = "default_zone")]
    pub default_time_zone: String,
    /// Send the event's guests as `participants.attendees` (see "Unsure" in the module doc).
    #[serde(default = "default_true")]
    pub send_attendees: bool,
    /// How long a 403 (no application access policy, or one not applied yet: Graph takes up to
    /// 30 minutes) is retried, counted from the first one, before it becomes permanent.
    #[serde(default = "default_policy_grace")]
    pub access_policy_grace_secs: u64,
    /// Before deleting, PATCH the meeting's lobby so only the organizer bypasses it (a deleted
    /// meeting's joinWebUrl keeps working; see the module doc).
    #[serde(default = "default_true")]
    pub lock_lobby_on_delete: bool,
}

/// The keys of `[provider.teams]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.teams",
    doc: "Microsoft Teams (kind = \"teams\"): Graph onlineMeetings with client credentials; needs an application access policy for the organizer.",
    optional: true,
    keys: &[
        Key::required(
            "tenant_id",
            Type::String,
            "\"contoso.onmicrosoft.com\"",
            "The Entra ID (Azure AD) tenant: its id or a verified domain.",
        ),
        Key::required(
            "client_id",
            Type::String,
            "\"...\"",
            "The app registration's client id.",
        ),
        Key::required(
            "client_secret",
            Type::Secret,
            "\"env:GRAPH_CLIENT_SECRET\"",
            "The app registration's client secret.",
        ),
        Key::required(
            "user_id",
            Type::String,
            "\"organizer@example.com\"",
            "The organizer: a user's object id, or a UPN (resolved once; needs User.Read.All).",
        ),
        Key::defaulted(
            "base_url",
            Type::Url,
            "\"https://graph.microsoft.com/v1.0\"",
            "Microsoft Graph's base URL.",
        ),
        Key::defaulted(
            "login_url",
            Type::Url,
            "\"https://login.microsoftonline.com\"",
            "The identity platform that issues tokens.",
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
            "send_attendees",
            Type::Bool,
            "true",
            "Send the event's guests as the meeting's attendees.",
        ),
        Key::defaulted(
            "access_policy_grace_secs",
            Type::Integer,
            "3600",
            "A 403 (no application access policy, or one not applied yet: Graph takes up to 30 minutes) is retried this long, counted from the first one, before it becomes permanent.",
        ),
        Key::defaulted(
            "lock_lobby_on_delete",
            Type::Bool,
            "true",
            "Before a delete, let only the organizer bypass the lobby (a deleted meeting's joinWebUrl keeps working).",
        ),
    ],
};

fn default_base_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_login_url() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_timeout() -> u64 {
    30
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_true() -> bool {
    true
}
fn default_policy_grace() -> u64 {
    3600
}

impl TeamsConfig {
    /// A config with every optional field at its default.
    pub fn new(tenant_id: &str, client_id: &str, client_secret: Secret, user_id: &str) -> Self {
        TeamsConfig {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret,
            user_id: user_id.into(),
            base_url: default_base_url(),
            login_url: default_login_url(),
            timeout_secs: default_timeout(),
            default_time_zone: default_zone(),
            send_attendees: true,
            access_policy_grace_secs: default_policy_grace(),
            lock_lobby_on_delete: true,
        }
    }
}

/// The Teams provider.
pub struct TeamsProvider {
    config: TeamsConfig,
    base_url: String,
    token_url: String,
    client: reqwest::Client,
    tokens: TokenCache,
    zone: Tz,
    /// The organizer's object id: the configured one, or the UPN's, looked up once.
    object_id: tokio::sync::OnceCell<String>,
    /// When Graph first refused us with 403 since the last success (the access-policy window).
    refused_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A Microsoft Entra object id: a GUID.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl TeamsProvider {
    pub fn new(config: TeamsConfig) -> Result<Self, String> {
        for (field, value) in [
            ("tenant_id", &config.tenant_id),
            ("client_id", &config.client_id),
            ("user_id", &config.user_id),
        ] {
            if value.trim().is_empty() {
                return Err(format!("teams: {field} is empty"));
            }
        }
        for (field, url) in [
            ("base_url", &config.base_url),
            ("login_url", &config.login_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("teams: {field} {url:?} is not an http(s) URL"));
            }
        }
        if config.timeout_secs == 0 {
            return Err("teams: timeout_secs must be at least 1".into());
        }
        let user = config.user_id.trim();
        if !is_guid(user) && !user.contains('@') {
            return Err(format!(
                "teams: user_id {user:?} is neither an object id (a GUID) nor a UPN (user@domain)"
            ));
        }
        let zone: Tz = config.default_time_zone.parse().map_err(|_| {
            format!(
                "teams: default_time_zone {:?} is not an IANA time zone",
                config.default_time_zone
            )
        })?;
        let client = http::client(Duration::from_secs(config.timeout_secs))?;
        let object_id = tokio::sync::OnceCell::new();
        if is_guid(user) {
            let _ = object_id.set(user.to_ascii_lowercase());
        }
        Ok(TeamsProvider {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            object_id,
            refused_since: std::sync::Mutex::new(None),
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                config.login_url.trim_end_matches('/'),
                path_segment(&config.tenant_id)
            ),
            config,
            client,
            tokens: TokenCache::new(TOKEN_MARGIN),
            zone,
        })
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), ProviderError> {
        let request = self.client.post(&self.token_url).form(&[
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose()),
            ("grant_type", "client_credentials"),
            ("scope", SCOPE),
        ]);
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
        tracing::debug!("teams: access token refused, fetching a new one");
        self.tokens.invalidate().await;
        let token = self.tokens.get(|| self.fetch_token()).await?;
        http::send(NAME, make(token.expose())).await
    }

    /// The organizer's object id. Graph's onlineMeetings routes take the user's object id, not
    /// a UPN ("userId is the object ID of a user", microsoft-graph-docs-contrib
    /// api-reference/v1.0/api/onlinemeeting-createorget.md and onlinemeeting-update.md, "HTTP
    /// request" notes; with a UPN every call 404s). A configured UPN is resolved once with
    /// `GET /users/{upn}?$select=id` (user-get; needs User.Read.All) and cached.
    async fn object_id(&self) -> Result<&str, ProviderError> {
        self.object_id
            .get_or_try_init(|| async {
                let upn = self.config.user_id.trim();
                let url = format!("{}/users/{}", self.base_url, path_segment(upn));
                let answer = self
                    .call(|token| {
                        self.client
                            .get(&url)
                            .query(&[("$select", "id")])
                            .bearer_auth(token)
                    })
                    .await?;
                match answer.status {
                    200..=299 => {}
                    404 => {
                        return Err(ProviderError::Permanent {
                            provider: NAME.into(),
                            detail: format!(
                                "the organizer {upn:?} (user_id) does not exist in the tenant: {}",
                                answer.describe()
                            ),
                        });
                    }
                    403 => {
                        return Err(ProviderError::Permanent {
                            provider: NAME.into(),
                            detail: format!(
                                "cannot resolve the UPN {upn:?} to an object id: the app needs User.Read.All, or set user_id to the object id: {}",
                                answer.describe()
                            ),
                        });
                    }
                    _ => return Err(answer.error()),
                }
                #[derive(Deserialize)]
                struct User {
                    id: Option<String>,
                }
                let user: User = answer.json()?;
                user.id
                    .filter(|id| is_guid(id))
                    .map(|id| {
                        tracing::info!("teams: organizer {upn} has object id {id}");
                        id
                    })
                    .ok_or_else(|| transient(&answer, "the user has no object id"))
            })
            .await
            .map(String::as_str)
    }

    async fn meetings_url(&self) -> Result<String, ProviderError> {
        Ok(format!(
            "{}/users/{}/onlineMeetings",
            self.base_url,
            path_segment(self.object_id().await?)
        ))
    }

    /// Whether the organizer exists (`GET /users/{id}?$select=id`): settles what a 404 from an
    /// onlineMeetings route means. Graph documents no error code that tells a missing user from
    /// a missing meeting on these routes (both are observed as 404 `NotFound`), so the adapter
    /// asks the directory. `None`: the directory could not say (no User.Read.All: 403).
    async fn user_exists(&self) -> Result<Option<bool>, ProviderError> {
        let url = format!(
            "{}/users/{}",
            self.base_url,
            path_segment(self.object_id().await?)
        );
        let answer = self
            .call(|token| {
                self.client
                    .get(&url)
                    .query(&[("$select", "id")])
                    .bearer_auth(token)
            })
            .await?;
        match answer.status {
            200..=299 => Ok(Some(true)),
            404 => Ok(Some(false)),
            403 => Ok(None),
            _ => Err(answer.error()),
        }
    }

    /// A 404 from an onlineMeetings route: the meeting is gone ([`ProviderError::NotFound`]),
    /// unless the organizer is: then a permanent configuration error. Graph's directory answers
    /// a missing user with `Request_ResourceNotFound` (api-reference/v1.0/api/user-get.md);
    /// that code on the route itself is taken at its word.
    async fn not_found(&self, answer: &Answer) -> ProviderError {
        let user_gone = if graph_code(answer).as_deref() == Some("Request_ResourceNotFound") {
            Some(false)
        } else {
            match self.user_exists().await {
                Ok(exists) => exists,
                Err(e) => return e,
            }
        };
        match user_gone {
            Some(false) => ProviderError::Permanent {
                provider: NAME.into(),
                detail: format!(
                    "the organizer (user_id {}) does not exist: {}",
                    self.config.user_id,
                    answer.describe()
                ),
            },
            Some(true) => ProviderError::NotFound {
                provider: NAME.into(),
            },
            None => {
                tracing::warn!(
                    "teams: a 404 from Graph and no directory access to tell a missing meeting from a missing organizer: taking the meeting as gone"
                );
                ProviderError::NotFound {
                    provider: NAME.into(),
                }
            }
        }
    }

    /// Classifies a failed onlineMeetings answer. A 403 is what Graph answers while the
    /// application access policy is missing or not applied yet: "Changes to application access
    /// policies can take up to 30 minutes to take effect in Microsoft Graph REST API calls"
    /// (microsoft-graph-docs-contrib concepts/cloud-communication-online-meeting-application-access-policy.md,
    /// note under "Configure application access policy"). So it is retried (every 5 minutes)
    /// for `access_policy_grace_secs` from the first 403 since the last success, then permanent.
    async fn failure(&self, answer: &Answer) -> ProviderError {
        match answer.status {
            404 => self.not_found(answer).await,
            403 => {
                let now = std::time::Instant::now();
                let first = *self
                    .refused_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(now);
                let grace = Duration::from_secs(self.config.access_policy_grace_secs);
                if now.duration_since(first) < grace {
                    ProviderError::Transient {
                        provider: NAME.into(),
                        detail: format!(
                            "refused (no application access policy for user_id yet? policy changes take up to 30 minutes to apply; retried until {} s after the first refusal): {}",
                            grace.as_secs(),
                            answer.describe()
                        ),
                        retry_after: Some(Duration::from_secs(300).min(grace)),
                    }
                } else {
                    ProviderError::Permanent {
                        provider: NAME.into(),
                        detail: format!(
                            "refused for more than {} s: grant the app an application access policy for user_id (Grant-CsApplicationAccessPolicy) and OnlineMeetings.ReadWrite.All: {}",
                            grace.as_secs(),
                            answer.describe()
                        ),
                    }
                }
            }
            _ => answer.error(),
        }
    }

    fn succeeded(&self) {
        *self.refused_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// subject, startDateTime, endDateTime (always together) and the full attendee list.
    fn fields(&self, spec: &MeetingSpec) -> serde_json::Map<String, Value> {
        let zone = http::zone_of(spec.time_zone.as_deref(), self.zone);
        let start = http::instant_in(spec.start, zone);
        let end = http::instant_in(spec.end, zone).max(start);
        let mut fields = serde_json::Map::new();
        fields.insert(
            "subject".into(),
            http::truncate(&spec.title, SUBJECT_MAX).into(),
        );
        fields.insert("startDateTime".into(), utc(start).into());
        fields.insert("endDateTime".into(), utc(end).into());
        if self.config.send_attendees {
            let attendees: Vec<Value> = spec
                .attendees
                .iter()
                .map(|email| json!({ "upn": email, "role": "attendee" }))
                .collect();
            fields.insert("participants".into(), json!({ "attendees": attendees }));
        }
        fields
    }
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A path segment, percent-encoded (UPNs carry '@', tenant ids may be domains).
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

/// Graph's error code (`error.code`), if the body has one.
fn graph_code(answer: &Answer) -> Option<String> {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()?
        .get("error")?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// The `externalId` for an action's key: SHA-256, shaped as a GUID.
pub fn external_id_for(key: &str) -> String {
    let h = http::sha256_hex(key.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnlineMeeting {
    id: Option<String>,
    join_web_url: Option<String>,
}

fn transient(answer: &Answer, why: &str) -> ProviderError {
    ProviderError::Transient {
        provider: NAME.into(),
        detail: format!("{}: {why}", answer.status_line()),
        retry_after: None,
    }
}

fn no_occurrences() -> ProviderError {
    ProviderError::Permanent {
        provider: NAME.into(),
        detail: "a Teams online meeting has no occurrences (capabilities say so)".into(),
    }
}

impl TeamsProvider {
    /// A deleted online meeting's joinWebUrl keeps working (microsoftgraph/microsoft-graph-docs
    /// issues #7802 "Deleted but joinWebUrl still working" and #17590, open since 2020/2022; the
    /// delete page documents nothing about it). Graph documents no way to disable a link; the
    /// closest it documents is the lobby: `PATCH` `lobbyBypassSettings` (applies to in-progress
    /// meetings too; onlinemeeting-update.md, "Request body") with scope `organizer`: "Only the
    /// organizer is admitted into the meeting and bypassing the lobby. All other participants
    /// are placed in the meeting lobby" (resources/lobbybypasssettings.md), and dial-in callers
    /// no longer bypass it. So after a cancel, anyone using the old link waits in the lobby
    /// until someone with organizer rights admits them. A 404 here goes on to the DELETE (which
    /// decides what it means); 429 and 5xx are retried; any other refusal is logged and the
    /// delete goes ahead (the link is then as open as before: the documented limit).
    async fn lock_lobby(&self, url: &str) -> Result<(), ProviderError> {
        let body =
            json!({"lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": false}});
        let answer = self
            .call(|token| self.client.patch(url).json(&body).bearer_auth(token))
            .await?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            429 | 408 | 500..=599 => Err(answer.error()),
            _ => {
                tracing::warn!(
                    "teams: could not lock the lobby before deleting (the old link stays open): {}",
                    answer.describe()
                );
                Ok(())
            }
        }
    }
}

impl ConferenceProvider for TeamsProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// The client-credentials token, the organizer's object id (a UPN resolved as for every
    /// call), then the organizer read from the directory (`GET /users/{id}?$select=id`). Without
    /// `User.Read.All` the directory answers 403: the token is then all that was checked, and
    /// the answer says so. The application access policy cannot be checked without making a
    /// meeting.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let id = self.object_id().await?.to_owned();
            match self.user_exists().await? {
                Some(true) => Ok(format!(
                    "teams: token for tenant {} accepted; organizer {id} found in the directory (the application access policy is not checked: that needs a meeting)",
                    self.config.tenant_id
                )),
                Some(false) => Err(ProviderError::Permanent {
                    provider: NAME.into(),
                    detail: format!(
                        "the organizer {:?} (user_id) does not exist in the tenant",
                        self.config.user_id
                    ),
                }),
                None => Ok(format!(
                    "teams: token for tenant {} accepted; the organizer was not checked (the directory needs User.Read.All)",
                    self.config.tenant_id
                )),
            }
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            title: true,
            description: false,
            time: true,
            attendees: self.config.send_attendees,
            recurrence: false,
            occurrences: false,
        }
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            let mut body = self.fields(spec);
            body.insert("externalId".into(), external_id_for(key).into());
            let url = format!("{}/createOrGet", self.meetings_url().await?);
            let answer = self
                .call(|token| self.client.post(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(match self.failure(&answer).await {
                    // createOrGet names no meeting: a 404 can only be about the organizer.
                    ProviderError::NotFound { .. } => ProviderError::Permanent {
                        provider: NAME.into(),
                        detail: format!(
                            "the organizer (user_id) was not found: {}",
                            answer.describe()
                        ),
                    },
                    e => e,
                });
            }
            self.succeeded();
            let made: OnlineMeeting = answer.json_redacted()?;
            let meeting_id = made
                .id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| transient(&answer, "the online meeting has no id"))?;
            let join_url = made
                .join_web_url
                .filter(|u| !u.is_empty())
                .ok_or_else(|| transient(&answer, "the online meeting has no joinWebUrl"))?;
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
            let body = self.fields(spec);
            let url = format!(
                "{}/{}",
                self.meetings_url().await?,
                path_segment(meeting_id)
            );
            let answer = self
                .call(|token| self.client.patch(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(self.failure(&answer).await);
            }
            self.succeeded();
            // Graph answers the updated meeting; an empty or unreadable answer still means the
            // update was applied, and the link did not change.
            let updated = serde_json::from_slice::<OnlineMeeting>(&answer.body).ok();
            Ok(updated
                .and_then(|m| m.join_web_url)
                .filter(|u| !u.is_empty()))
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
        Box::pin(async { Err(no_occurrences()) })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        _meeting_id: &'a str,
        _occurrence: When,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Err(no_occurrences()) })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let url = format!(
                "{}/{}",
                self.meetings_url().await?,
                path_segment(meeting_id)
            );
            if self.config.lock_lobby_on_delete {
                self.lock_lobby(&url).await?;
            }
            let answer = self
                .call(|token| self.client.delete(&url).bearer_auth(token))
                .await?;
            if answer.is_success() {
                self.succeeded();
                return Ok(());
            }
            // A missing meeting is done; a missing organizer is not (the meeting may live on).
            match self.failure(&answer).await {
                ProviderError::NotFound { .. } => Ok(()),
                e => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_guid_shaped_and_stable() {
        let id = external_id_for("create:cal:event-1");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(id, external_id_for("create:cal:event-1"));
        assert_ne!(id, external_id_for("create:cal:event-2"));
    }
}
