//! The `teams` adapter: Microsoft Teams meetings through Microsoft Graph `onlineMeetings`
//! (`https://graph.microsoft.com/v1.0`), app-only.
//!
//! What it maps:
//! - auth: client credentials, `POST {login_url}/{tenant_id}/oauth2/v2.0/token` with
//!   `grant_type=client_credentials` and `scope=https://graph.microsoft.com/.default`; the token
//!   is cached in a [`TokenCache`] (replaced five minutes before it expires), and a 401 from Graph
//!   gets one more try with a new token before it becomes [`ProviderError::Reauth`]. The app needs
//!   `OnlineMeetings.ReadWrite.All` and an application access policy granted to `user_id` (an
//!   admin step; without it Graph answers 403, a permanent failure that says so).
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
}

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
        }
    }
}

/// The Teams provider.
pub struct TeamsProvider {
    config: TeamsConfig,
    meetings_url: String,
    token_url: String,
    client: reqwest::Client,
    tokens: TokenCache,
    zone: Tz,
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
        let zone: Tz = config.default_time_zone.parse().map_err(|_| {
            format!(
                "teams: default_time_zone {:?} is not an IANA time zone",
                config.default_time_zone
            )
        })?;
        let client = http::client(Duration::from_secs(config.timeout_secs))?;
        Ok(TeamsProvider {
            meetings_url: format!(
                "{}/users/{}/onlineMeetings",
                config.base_url.trim_end_matches('/'),
                path_segment(&config.user_id)
            ),
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

impl ConferenceProvider for TeamsProvider {
    fn name(&self) -> &str {
        NAME
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
            let url = format!("{}/createOrGet", self.meetings_url);
            let answer = self
                .call(|token| self.client.post(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(answer.error());
            }
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
            let url = format!("{}/{}", self.meetings_url, path_segment(meeting_id));
            let answer = self
                .call(|token| self.client.patch(&url).json(&body).bearer_auth(token))
                .await?;
            if !answer.is_success() {
                return Err(answer.error());
            }
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
            let url = format!("{}/{}", self.meetings_url, path_segment(meeting_id));
            let answer = self
                .call(|token| self.client.delete(&url).bearer_auth(token))
                .await?;
            if answer.is_success() {
                return Ok(());
            }
            match answer.error() {
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
