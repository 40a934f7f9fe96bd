//! The `webhook` adapter: for a customer's own conferencing system. confsync POSTs each
//! operation as signed JSON to one configured URL; the receiver makes the meeting and answers
//! with it.
//!
//! # Requests
//!
//! `POST {url}` with `Content-Type: application/json`, `Idempotency-Key: <key>` (when the key is
//! printable ASCII; the body always has it) and the two signature headers below. The body is one
//! JSON object:
//!
//! | `type` | other fields |
//! |---|---|
//! | `create` | `idempotencyKey`, `spec` |
//! | `update` | `idempotencyKey`, `meetingId`, `spec` (the whole series) |
//! | `update_occurrence` | `idempotencyKey`, `meetingId`, `occurrence`, `start`, `end`, `title` |
//! | `cancel_occurrence` | `idempotencyKey`, `meetingId`, `occurrence` |
//! | `delete` | `idempotencyKey`, `meetingId` |
//!
//! `spec` is confsync's meeting spec: `{"title", "description", "start", "end", "timeZone"
//! (IANA or null), "recurrence" (RRULE/RDATE/EXDATE lines), "attendees" (lowercase emails),
//! "organizer"}`. Times (`start`, `end`, `occurrence`) are `{"at": "2026-12-01T10:00:00Z"}` (UTC)
//! or `{"day": "2026-12-01"}` (all-day; end dates exclusive, as in Calendar). An occurrence is
//! named by its original start.
//!
//! The same `idempotencyKey` may arrive more than once (confsync retries after timeouts and
//! crashes): a receiver must answer a repeated `create` with the meeting it already made (200,
//! or 409 carrying that meeting) and treat the other types as idempotent.
//!
//! # Answers
//!
//! - `create`: 200/201 `{"meetingId": "...", "joinUrl": "https://..."}`. A 409 whose body has
//!   the same two fields is adopted (the meeting exists for this key); a 409 without them is a
//!   conflict.
//! - `update`: 2xx with an empty body, `{}` or `{"joinUrl": "..."}`; a join URL different from
//!   the event's is written back into the event.
//! - other types: any 2xx.
//! - 410 on `update`, `update_occurrence` or `cancel_occurrence`: the change cannot be made in
//!   place; confsync creates a new meeting, points the event at it and deletes this one (the
//!   recreate path).
//! - 404: the meeting is gone (a `delete` counts as done). 429: rate limited, `Retry-After`
//!   honoured. 408 and 5xx: retried later. 401 and 403: a permanent configuration error (the
//!   receiver rejected our signature). Other 4xx: permanent. A 2xx `create` answer that is not
//!   that JSON (an HTML page, truncated JSON, a missing field) is retried: the receiver may have
//!   acted, and the retry carries the same key. A `joinUrl` that is not http(s) is permanent.
//!
//! # Signature
//!
//! ```text
//! Confsync-Timestamp: <unix seconds when sent>
//! Confsync-Signature: v1=<lowercase hex HMAC-SHA256(secret, "<Confsync-Timestamp>.<body>")>
//! ```
//!
//! The signed message is the timestamp header's exact text, a '.', and the raw body bytes. A
//! receiver recomputes it, compares in constant time, and rejects timestamps more than 5 minutes
//! from its clock (replay window). [`verify_signature`] does exactly that for Rust receivers.
//! The header may carry several comma-separated `v1=` values (any match is enough; unknown
//! schemes are ignored) so the scheme can evolve.
//!
//! Secret rotation: confsync signs with `secret` only. To rotate, the receiver first accepts
//! both the old and the new secret (calls [`verify_signature`] with each), then confsync's
//! `secret` is switched to the new one, then the receiver drops the old one.
//!
//! Capabilities: everything (the receiver decides what it can do), occurrences included.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Answer, Secret};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

const PROVIDER: &str = "webhook";

/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "Confsync-Timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "Confsync-Signature";
/// The replay window receivers should use.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a request's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Confsync-Timestamp header is not unix seconds")]
    BadTimestamp,
    #[error("the Confsync-Timestamp is outside the replay window")]
    Stale,
    #[error("the Confsync-Signature header carries no v1 signature")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

/// The `Confsync-Signature` value for a body sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1={}", http::hmac_sha256_hex(secret, &message))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies a request confsync signed: the timestamp within `tolerance` of `now` (either way),
/// and a `v1=` signature of `"{timestamp_header}.{body}"` under `secret`, compared in constant
/// time. During a secret rotation call it once per accepted secret.
pub fn verify_signature(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let timestamp_header = timestamp_header.trim();
    let timestamp: i64 = timestamp_header
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.timestamp().abs_diff(timestamp);
    if skew > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let mut message = format!("{timestamp_header}.").into_bytes();
    message.extend_from_slice(body);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut seen = false;
    for part in signature_header.split(',') {
        let Some(hex) = part.trim().strip_prefix("v1=") else {
            continue;
        };
        seen = true;
        if let Some(tag) = unhex(hex)
            && aws_lc_rs::hmac::verify(&key, &message, &tag).is_ok()
        {
            return Ok(());
        }
    }
    if seen {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::Malformed)
    }
}

/// `[provider]` settings of the `webhook` kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where confsync POSTs (https, or http for a receiver on the same host).
    pub url: String,
    /// The HMAC secret shared with the receiver (at least 16 characters).
    pub secret: Secret,
    /// Seconds before a call is abandoned (and retried later).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The conferencing system's name, shown with join links (default "Video call").
    #[serde(default)]
    pub name: Option<String>,
}

/// The keys of `[provider.webhook]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.webhook",
    doc: "Your own system (kind = \"webhook\"): signed JSON POSTs, see README.",
    optional: true,
    keys: &[
        Key::required(
            "url",
            Type::Url,
            "\"https://meetings.example.com/confsync\"",
            "Where confsync POSTs (https, or http for a receiver on the same host).",
        ),
        Key::required(
            "secret",
            Type::Secret,
            "\"env:CONFSYNC_WEBHOOK_SECRET\"",
            "The HMAC secret shared with the receiver (at least 16 characters).",
        ),
        Key::bounded(
            "timeout_secs",
            "10",
            1,
            120,
            "Seconds before a call is abandoned (and retried later).",
        ),
        Key::optional(
            "name",
            Type::String,
            "\"Acme Meet\"",
            "The conferencing system's name shown with join links (unset: \"Video call\").",
        ),
    ],
};

fn default_timeout() -> u64 {
    10
}

/// The webhook provider.
pub struct WebhookProvider {
    client: reqwest::Client,
    url: String,
    secret: Secret,
    display_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeetingAnswer {
    meeting_id: Option<String>,
    join_url: Option<String>,
}

impl WebhookProvider {
    /// Validates `config`.
    pub fn new(config: WebhookConfig) -> Result<Self, String> {
        let url = config.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('#') {
            return Err(format!(
                "url must be an http(s) URL without fragment (got {url:?})"
            ));
        }
        if config.secret.expose().len() < 16 {
            return Err("secret must be at least 16 characters".into());
        }
        if !(1..=120).contains(&config.timeout_secs) {
            return Err(format!(
                "timeout_secs = {} must be between 1 and 120",
                config.timeout_secs
            ));
        }
        let display_name = match config.name.as_deref().map(str::trim) {
            Some("") => return Err("name must not be empty when set".into()),
            Some(n) => http::truncate(n, 64).to_owned(),
            None => "Video call".to_owned(),
        };
        Ok(WebhookProvider {
            client: http::client(Duration::from_secs(config.timeout_secs))?,
            url: url.to_owned(),
            secret: config.secret,
            display_name,
        })
    }

    /// The name to show with this provider's join links.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    async fn post(&self, key: &str, body: &Value) -> Result<Answer, ProviderError> {
        let body = serde_json::to_vec(body).map_err(|e| ProviderError::Permanent {
            provider: PROVIDER.into(),
            detail: e.to_string(),
        })?;
        let timestamp = Utc::now().timestamp();
        let signature = sign(self.secret.expose().as_bytes(), timestamp, &body);
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        // The body always carries the key; the header only when it is a valid header value.
        if key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            request = request.header("idempotency-key", key);
        }
        let request = request
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body);
        http::send(PROVIDER, request).await
    }

    fn error(answer: &Answer) -> ProviderError {
        match answer.status {
            401 | 403 => ProviderError::Permanent {
                provider: PROVIDER.into(),
                detail: format!(
                    "{}: the receiver rejected our signature (configuration error: check that \
                     the receiver's secret matches webhook.secret and that clocks agree within 5 \
                     minutes)",
                    answer.describe()
                ),
            },
            _ => http::classify(answer),
        }
    }

    fn join_url(answer: &Answer, url: String) -> Result<String, ProviderError> {
        if url.starts_with("https://") || url.starts_with("http://") {
            Ok(url)
        } else {
            Err(ProviderError::Permanent {
                provider: PROVIDER.into(),
                detail: format!(
                    "HTTP {}: the receiver's joinUrl is not an http(s) URL",
                    answer.status
                ),
            })
        }
    }

    /// A meeting from a create answer (2xx, or a 409 that carries it).
    fn meeting(answer: &Answer) -> Result<Meeting, ProviderError> {
        let parsed: MeetingAnswer = answer.json()?;
        match (parsed.meeting_id, parsed.join_url) {
            (Some(id), Some(url)) if !id.trim().is_empty() => Ok(Meeting {
                meeting_id: id,
                join_url: Self::join_url(answer, url)?,
            }),
            _ => Err(ProviderError::Transient {
                provider: PROVIDER.into(),
                detail: format!(
                    "{}: the answer has no meetingId or joinUrl",
                    answer.describe()
                ),
                retry_after: None,
            }),
        }
    }

    /// Sends a change (update, occurrence): like [`Self::simple`], and 410 means the receiver
    /// cannot make it in place, so confsync replaces the meeting (the recreate path).
    async fn change(&self, key: &str, body: Value) -> Result<Answer, ProviderError> {
        let answer = self.post(key, &body).await?;
        if answer.status == 410 {
            return Err(ProviderError::Recreate {
                provider: PROVIDER.into(),
                detail: answer.describe(),
            });
        }
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(Self::error(&answer))
        }
    }

    /// Sends an operation that answers nothing; 404 is NotFound.
    async fn simple(&self, key: &str, body: Value) -> Result<Answer, ProviderError> {
        let answer = self.post(key, &body).await?;
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(Self::error(&answer))
        }
    }
}

impl ConferenceProvider for WebhookProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// The contract (module documentation) has no read operation, and every operation it has
    /// acts: nothing harmless can be asked. Said so rather than pretending.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            Ok("webhook: not checked: the receiver's contract has no read operation, so the URL and the signing secret are first tried by the first change (a 401 or 403 then is a configuration error)".to_owned())
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
            let body = json!({"type": "create", "idempotencyKey": key, "spec": spec});
            let answer = self.post(key, &body).await?;
            if answer.is_success() {
                return Self::meeting(&answer);
            }
            if answer.status == 409 {
                // The meeting exists for this key: adopt it if the receiver says which it is.
                return Self::meeting(&answer).map_err(|_| ProviderError::Conflict {
                    provider: PROVIDER.into(),
                    detail: answer.describe(),
                });
            }
            Err(Self::error(&answer))
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let body = json!({
                "type": "update", "idempotencyKey": key, "meetingId": meeting_id, "spec": spec,
            });
            let answer = self.change(key, body).await?;
            if answer.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            let parsed: MeetingAnswer = answer.json()?;
            parsed
                .join_url
                .map(|url| Self::join_url(&answer, url))
                .transpose()
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let body = json!({
                "type": "update_occurrence", "idempotencyKey": key, "meetingId": meeting_id,
                "occurrence": occurrence, "start": start, "end": end, "title": title,
            });
            self.change(key, body).await.map(|_| ())
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let body = json!({
                "type": "cancel_occurrence", "idempotencyKey": key, "meetingId": meeting_id,
                "occurrence": occurrence,
            });
            self.change(key, body).await.map(|_| ())
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let body = json!({"type": "delete", "idempotencyKey": key, "meetingId": meeting_id});
            match self.simple(key, body).await {
                Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_within_the_window_only() {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let ts = now.timestamp();
        let body = br#"{"type":"delete"}"#;
        let header = sign(b"0123456789abcdef", ts, body);
        assert!(header.starts_with("v1=") && header.len() == 3 + 64);
        let ok = |secret: &[u8], t: &str, s: &str, b: &[u8], at| {
            verify_signature(secret, t, s, b, at, DEFAULT_TOLERANCE)
        };
        let t = ts.to_string();
        assert_eq!(ok(b"0123456789abcdef", &t, &header, body, now), Ok(()));
        assert_eq!(
            ok(b"0123456789abcdeX", &t, &header, body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(b"0123456789abcdef", &t, &header, b"{}", now),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::TimeDelta::seconds(301);
        assert_eq!(
            ok(b"0123456789abcdef", &t, &header, body, later),
            Err(SignatureError::Stale)
        );
        let earlier = now - chrono::TimeDelta::seconds(300);
        assert_eq!(ok(b"0123456789abcdef", &t, &header, body, earlier), Ok(()));
        assert_eq!(
            ok(b"0123456789abcdef", "soon", &header, body, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            ok(b"0123456789abcdef", &t, "v0=abc", body, now),
            Err(SignatureError::Malformed)
        );
        let several = format!("v0=zz, v1=00ff, {header}");
        assert_eq!(ok(b"0123456789abcdef", &t, &several, body, now), Ok(()));
        assert_eq!(
            ok(b"0123456789abcdef", &t, "v1=xyz", body, now),
            Err(SignatureError::Mismatch)
        );
    }
}
