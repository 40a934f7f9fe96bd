//! What the HTTP adapters share: secrets from config, sending a request and classifying the
//! answer, cached OAuth tokens, and cutting text to a provider's length limits.
//!
//! Every adapter classifies failures the same way ([`classify`]), so the outbox treats a Zoom 503
//! and a Webex 503 alike; an adapter only overrides the cases its provider documents (Zoom's
//! 3001 on delete, Webex's in-progress meetings, ...). A provider's answer never panics us:
//! truncated JSON, an HTML error page or a missing id become a classified error that names the
//! provider's status and request id.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::ProviderError;

/// A credential from config. The config value is either the secret itself, `env:NAME` (read
/// from the environment) or `file:/path` (read from a file, trailing newline dropped). It never
/// prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Resolves a config value; the error names the variable or file, never the secret.
    pub fn resolve(value: &str) -> Result<Secret, String> {
        if let Some(name) = value.strip_prefix("env:") {
            return std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set"));
        }
        if let Some(path) = value.strip_prefix("file:") {
            return std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| format!("cannot read secret file {path}: {e}"));
        }
        if value.is_empty() {
            return Err("is empty".into());
        }
        Ok(Secret(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let raw = String::deserialize(d)?;
        Secret::resolve(&raw).map_err(serde::de::Error::custom)
    }
}

/// The one HTTP client adapters use (rustls, timeouts set). Building it only fails when the TLS
/// backend cannot initialise, which is a startup error, not a request error.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("confsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A provider's answer, read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    pub provider: &'static str,
    pub status: u16,
    /// The provider's request id header when it sent one (for support tickets).
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
    /// The `Link` header's `rel="next"` target, when the answer is one page of several (RFC 8288
    /// web linking, as Webex paginates its listings).
    pub next_link: Option<String>,
    pub body: Vec<u8>,
}

/// The target of a `Link` header's `rel="next"` entry: `<https://...>; rel="next"`, entries
/// separated by commas (RFC 8288 section 3).
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|entry| {
        let (target, params) = entry.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
            .then(|| target.to_owned())
    })
}

/// Request-id headers the providers use, in the order looked up.
const REQUEST_ID_HEADERS: [&str; 5] = [
    "x-zm-trackingid",
    "trackingid",
    "request-id",
    "x-request-id",
    "client-request-id",
];

/// Sends a request and reads the whole answer. Network failures and timeouts are transient:
/// whether the provider acted is unknown, and every adapter's operations are safe to repeat.
pub async fn send(
    provider: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Answer, ProviderError> {
    let response = request.send().await.map_err(|e| ProviderError::Transient {
        provider: provider.into(),
        detail: format!("request failed: {}", without_url(&e)),
        retry_after: None,
    })?;
    let status = response.status().as_u16();
    let headers = response.headers();
    let request_id = REQUEST_ID_HEADERS.iter().find_map(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let next_link = headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(link_next);
    let body = response
        .bytes()
        .await
        .map_err(|e| ProviderError::Transient {
            provider: provider.into(),
            detail: format!(
                "HTTP {status}: reading the answer failed: {}",
                without_url(&e)
            ),
            retry_after: None,
        })?
        .to_vec();
    Ok(Answer {
        provider,
        status,
        request_id,
        retry_after,
        next_link,
        body,
    })
}

/// reqwest's errors print the URL, which may carry a host or a query secret: keep only the kind.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "bad body"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    match root {
        Some(r) if !r.contains("://") => format!("{kind} ({r})"),
        _ => kind.to_owned(),
    }
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP 503, request id abc: <short body>`: what goes into an error's detail.
    pub fn describe(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if let Some(id) = &self.request_id {
            out.push_str(&format!(", request id {id}"));
        }
        let snippet = body_snippet(&self.body);
        if !snippet.is_empty() {
            out.push_str(": ");
            out.push_str(&snippet);
        }
        out
    }

    /// Decodes a success body. A body that does not decode (truncated, HTML, wrong shape) is a
    /// transient error: the provider may have acted, and the adapter's retry finds the meeting
    /// by its key.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Transient {
            provider: self.provider.into(),
            detail: format!("{}: unreadable answer ({e})", self.describe()),
            retry_after: None,
        })
    }

    /// The answer as an error, classified by status alone (see [`classify`]).
    pub fn error(&self) -> ProviderError {
        classify(self)
    }
}

/// The default classification of a failed answer:
/// 401 re-auth; 403 permanent; 404 and 410 not found; 409 conflict; 429 rate limited; 408 and
/// 5xx transient; any other status permanent (and a 2xx never reaches here).
pub fn classify(answer: &Answer) -> ProviderError {
    let provider = answer.provider.to_owned();
    let detail = answer.describe();
    match answer.status {
        401 => ProviderError::Reauth { provider, detail },
        404 | 410 => ProviderError::NotFound { provider },
        409 => ProviderError::Conflict { provider, detail },
        429 => ProviderError::RateLimited {
            provider,
            detail,
            retry_after: answer.retry_after,
        },
        408 | 500..=599 => ProviderError::Transient {
            provider,
            detail,
            retry_after: answer.retry_after,
        },
        _ => ProviderError::Permanent { provider, detail },
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// A short single-line rendering of a body for error messages: tags dropped, whitespace
/// collapsed, at most 200 characters.
pub fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut in_tag = false;
    let mut space = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                space = true;
            }
            _ if in_tag => {}
            c if c.is_whitespace() => space = true,
            c => {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
        if out.chars().count() >= 200 {
            out = truncate(&out, 199).to_owned();
            out.push('…');
            break;
        }
    }
    out
}

/// `s` cut to at most `max_chars` characters, always on a character boundary.
pub fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// `s` cut to at most `max_bytes` bytes of UTF-8, never splitting a character.
pub fn truncate_bytes(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut at = max_bytes;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

/// An access token fetched on demand and reused until shortly before it expires. Concurrent
/// callers wait for one fetch; [`TokenCache::invalidate`] after a 401 forces the next one.
pub struct TokenCache {
    slot: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    /// How long before expiry the token is replaced.
    margin: Duration,
}

impl TokenCache {
    pub fn new(margin: Duration) -> TokenCache {
        TokenCache {
            slot: tokio::sync::Mutex::new(None),
            margin,
        }
    }

    /// The cached token, or a new one from `fetch` (which answers the token and its lifetime).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), ProviderError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((token, expires)) = slot.as_ref()
            && Instant::now() + self.margin < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = fetch().await?;
        *slot = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    pub async fn invalidate(&self) {
        *self.slot.lock().await = None;
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Hex HMAC-SHA256 of `message` under `key`. The room adapters derive their deterministic names
/// from it (stable for retries of the same key, not guessable without the secret); the webhook
/// adapter signs with it.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex(aws_lc_rs::hmac::sign(&key, message).as_ref())
}

/// When a room may be joined: from `start - early_join` to `end + grace`.
///
/// All-day events (`When::Day`, end date exclusive) carry no zone confsync can trust, so their
/// days are taken wide enough for every zone: from the start date's midnight at UTC+14 to the
/// end date's midnight at UTC-12.
pub fn join_window(
    start: crate::When,
    end: crate::When,
    early_join: Duration,
    grace: Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    use chrono::TimeDelta;
    let delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    let midnight = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
    let opens = match start {
        crate::When::At(t) => t,
        crate::When::Day(d) => midnight(d) - TimeDelta::hours(14),
    };
    let closes = match end {
        crate::When::At(t) => t,
        crate::When::Day(d) => midnight(d) + TimeDelta::hours(12),
    };
    (
        opens
            .checked_sub_signed(delta(early_join))
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        closes
            .checked_add_signed(delta(grace))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// Lowercase hex SHA-256 of `data`. The scheduled-meeting adapters derive what they leave at the
/// provider to find a meeting again (Zoom's agenda marker, Graph's externalId, Webex's integration
/// tag) from the action's key with it: stable for retries, and it says nothing about the key.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

impl Answer {
    /// `HTTP 201, request id abc`: the status line of [`Answer::describe`], without the body.
    pub fn status_line(&self) -> String {
        match &self.request_id {
            Some(id) => format!("HTTP {}, request id {id}", self.status),
            None => format!("HTTP {}", self.status),
        }
    }

    /// Like [`Answer::json`], for answers that carry secrets (host start links, tokens,
    /// passwords): a body that does not decode is a transient error naming the status, the
    /// request id and where decoding stopped, never quoting the body.
    pub fn json_redacted<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Transient {
            provider: self.provider.into(),
            detail: format!(
                "{}: unreadable answer ({:?} error at line {} column {})",
                self.status_line(),
                e.classify(),
                e.line(),
                e.column()
            ),
            retry_after: None,
        })
    }
}

/// An OAuth 2 token endpoint's answer (client credentials, refresh token, account credentials)
/// as a token and its lifetime. The token endpoint refusing our credentials (400, 401, 403:
/// `invalid_client`, `invalid_grant`) needs re-authorisation; 429 and 5xx are retried. The
/// answer's body is never quoted on success paths (it holds the token).
pub fn oauth_token(answer: &Answer) -> Result<(Secret, Duration), ProviderError> {
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    if !answer.is_success() {
        return Err(match answer.status {
            400 | 401 | 403 => ProviderError::Reauth {
                provider: answer.provider.into(),
                detail: format!("the token endpoint refused: {}", answer.describe()),
            },
            _ => classify(answer),
        });
    }
    let token: Token = answer.json_redacted()?;
    let access = token
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::Transient {
            provider: answer.provider.into(),
            detail: format!(
                "{}: the token answer has no access_token",
                answer.status_line()
            ),
            retry_after: None,
        })?;
    // Some endpoints send expires_in as a string; a missing one means the usual hour.
    let seconds = match token.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(3600),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(3600),
        _ => 3600,
    };
    Ok((Secret::new(access), Duration::from_secs(seconds)))
}

/// The zone a meeting is scheduled in: the event's IANA zone when it names one, else `fallback`
/// (all-day events carry none).
pub fn zone_of(time_zone: Option<&str>, fallback: chrono_tz::Tz) -> chrono_tz::Tz {
    time_zone
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(fallback)
}

/// `when` as an instant; an all-day date starts at its midnight in `zone`.
pub fn instant_in(when: crate::When, zone: chrono_tz::Tz) -> DateTime<Utc> {
    match when {
        crate::When::At(t) => t,
        crate::When::Day(d) => local_instant(d.and_time(chrono::NaiveTime::MIN), zone),
    }
}

/// A wall-clock time in `zone` as an instant: the earlier one in a DST fold, the time an hour
/// later in a DST gap (02:30 on a spring-forward night is 03:30).
pub fn local_instant(local: chrono::NaiveDateTime, zone: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::TimeZone;
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("👍👍", 5), "👍");
    }

    #[test]
    fn secrets_resolve_and_never_print() {
        unsafe { std::env::set_var("CONFSYNC_TEST_SECRET_X", "s3cret") };
        let s = Secret::resolve("env:CONFSYNC_TEST_SECRET_X").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let err = Secret::resolve("env:CONFSYNC_TEST_SECRET_MISSING").unwrap_err();
        assert!(err.contains("CONFSYNC_TEST_SECRET_MISSING"));
        assert!(Secret::resolve("").is_err());
    }

    #[test]
    fn html_error_pages_become_short_text() {
        let page =
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>";
        assert_eq!(body_snippet(page), "502 Bad Gateway 502");
        let answer = Answer {
            provider: "zoom",
            status: 502,
            request_id: Some("r1".into()),
            retry_after: None,
            next_link: None,
            body: page.to_vec(),
        };
        let e = answer.error();
        assert!(e.is_retryable());
        assert!(e.to_string().contains("HTTP 502, request id r1"), "{e}");
        let long = "x".repeat(1000);
        assert_eq!(body_snippet(long.as_bytes()).chars().count(), 200);
    }

    #[test]
    fn room_helpers() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let at = |s: &str| crate::When::At(s.parse().unwrap());
        let (open, close) = join_window(
            at("2026-12-01T10:00:00Z"),
            at("2026-12-01T11:00:00Z"),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        assert_eq!(open.to_rfc3339(), "2026-12-01T09:50:00+00:00");
        assert_eq!(close.to_rfc3339(), "2026-12-01T12:00:00+00:00");
        let day = |s: &str| crate::When::Day(s.parse().unwrap());
        let (open, close) = join_window(
            day("2026-12-01"),
            day("2026-12-02"),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(open.to_rfc3339(), "2026-11-30T10:00:00+00:00");
        assert_eq!(close.to_rfc3339(), "2026-12-02T12:00:00+00:00");
    }

    #[test]
    fn link_headers_name_the_next_page() {
        assert_eq!(
            link_next(
                r#"<https://webexapis.com/v1/meetingInvitees?cursor=abc&max=100>; rel="next""#
            )
            .as_deref(),
            Some("https://webexapis.com/v1/meetingInvitees?cursor=abc&max=100")
        );
        assert_eq!(
            link_next(r#"<https://a/1>; rel="prev", <https://a/3>; rel=next"#).as_deref(),
            Some("https://a/3")
        );
        assert_eq!(link_next(r#"<https://a/1>; rel="prev""#), None);
        assert_eq!(link_next("garbage"), None);
    }

    #[test]
    fn statuses_classify() {
        let at = |status| Answer {
            provider: "p",
            status,
            request_id: None,
            retry_after: Some(Duration::from_secs(3)),
            next_link: None,
            body: vec![],
        };
        assert!(matches!(at(401).error(), ProviderError::Reauth { .. }));
        assert!(matches!(at(404).error(), ProviderError::NotFound { .. }));
        assert!(matches!(at(409).error(), ProviderError::Conflict { .. }));
        assert_eq!(at(429).error().retry_after(), Some(Duration::from_secs(3)));
        assert!(at(503).error().is_retryable());
        assert!(!at(400).error().is_retryable());
        assert!(matches!(at(403).error(), ProviderError::Permanent { .. }));
    }
}
