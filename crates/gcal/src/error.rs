//! Calendar API failures: Google's error envelope and [`GcalError`], the one error type of this
//! crate.
//!
//! This module owns the classification: what a failure *means* for the caller (full sync
//! needed, re-read and re-apply, back off, give up). It is computed only from the HTTP status and
//! Google's machine-readable `reason`, never from message text, which Google may reword. Messages
//! (Google's, or a short snippet of a non-JSON error body) are kept for people reading logs; no
//! access token ever reaches an error, and transport errors are stripped of their URL because
//! the query string carries sync and page tokens.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// What failed, where, and what Google said: carried by every [`GcalError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorContext {
    /// The API method id (`calendar.events.list`), or the component for local failures.
    pub method: &'static str,
    /// What the call was about (`calendar alice@example.com, event abc123`); may be empty.
    pub target: String,
    /// HTTP status; None when no response arrived (timeout, connection error).
    pub status: Option<u16>,
    /// Google's `errors[0].reason` (`fullSyncRequired`, `conditionNotMet`, ...), if any.
    pub reason: Option<String>,
    /// Google's message, a snippet of a non-envelope body, or the transport failure.
    pub message: String,
}

impl ErrorContext {
    /// A context for `method` about `target`, with no response details yet.
    pub fn new(method: &'static str, target: impl Into<String>) -> Self {
        ErrorContext {
            method,
            target: target.into(),
            status: None,
            reason: None,
            message: String::new(),
        }
    }
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method)?;
        if !self.target.is_empty() {
            write!(f, " ({})", self.target)?;
        }
        f.write_str(" failed")?;
        if let Some(status) = self.status {
            write!(f, ": HTTP {status}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, " {reason}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A failed Calendar API call, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcalError {
    /// 410 (`fullSyncRequired`, `updatedMinTooLongAgo`, or any reason but `deleted`): drop the
    /// sync token and run a full sync. Never a reason to delete conferences.
    #[error("{context}; the sync token is no longer valid: drop it and run a full sync")]
    FullSyncRequired {
        /// What failed.
        context: ErrorContext,
    },
    /// 410 `deleted`: the event was already deleted; nothing left to do.
    #[error("{context}; the event was already deleted, nothing to do")]
    AlreadyDeleted {
        /// What failed.
        context: ErrorContext,
    },
    /// 404: the calendar or event does not exist, or this account cannot see it.
    #[error("{context}; not found: it was removed or this account has no access")]
    NotFound {
        /// What failed.
        context: ErrorContext,
    },
    /// 412 `conditionNotMet`: the event changed since its etag was read.
    #[error("{context}; the event changed since it was read: re-read it, re-plan and re-apply")]
    PreconditionFailed {
        /// What failed.
        context: ErrorContext,
    },
    /// 429, or 403 `rateLimitExceeded` / `userRateLimitExceeded`: back off and retry.
    #[error("{context}; rate limited by Google: retry later with backoff")]
    RateLimited {
        /// What failed.
        context: ErrorContext,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// 500, 502, 503, 504, a timeout or a connection failure: retry with backoff.
    #[error("{context}; transient failure: retry later with backoff")]
    Transient {
        /// What failed.
        context: ErrorContext,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// 401: the access token was refused (after one refresh): the account needs re-authorization.
    #[error("{context}; the access token was refused: refresh it, or re-authorize the account")]
    Unauthorized {
        /// What failed.
        context: ErrorContext,
    },
    /// Any other 403 (`quotaExceeded`, `forbiddenForNonOrganizer`, `forbidden`, ...): not
    /// transient; see the reason.
    #[error("{context}; forbidden: a permission or quota problem, retrying will not help")]
    Forbidden {
        /// What failed.
        context: ErrorContext,
    },
    /// 400: the request is wrong; fix it, never retry.
    #[error("{context}; bad request: the request must be fixed, retrying will not help")]
    BadRequest {
        /// What failed.
        context: ErrorContext,
    },
    /// 409 (`duplicate`): an insert with an id that exists.
    #[error("{context}; conflict: the identifier already exists")]
    Conflict {
        /// What failed.
        context: ErrorContext,
    },
    /// A response that could not be read as the expected JSON (malformed, truncated, HTML).
    #[error("{context}; the response could not be decoded")]
    Decode {
        /// What failed.
        context: ErrorContext,
    },
    /// Any other HTTP status (405, 413, ...), or a request the client refused to build.
    #[error("{context}; unexpected failure")]
    Unexpected {
        /// What failed.
        context: ErrorContext,
    },
    /// The client was configured wrongly (for example a base URL that is not http(s)).
    #[error("invalid Calendar client configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
}

/// Reasons Google gives a 403 that means "slow down", not "no".
const RATE_LIMIT_REASONS: [&str; 2] = ["rateLimitExceeded", "userRateLimitExceeded"];

impl GcalError {
    /// Classifies a failure from `context.status` and `context.reason` alone.
    ///
    /// `retry_after` is kept for the retryable kinds. A context without a status (no response
    /// arrived) is [`GcalError::Transient`].
    pub fn classify(context: ErrorContext, retry_after: Option<Duration>) -> GcalError {
        let rate_limit_reason = context
            .reason
            .as_deref()
            .is_some_and(|r| RATE_LIMIT_REASONS.contains(&r));
        Self::classify_with(context, retry_after, rate_limit_reason)
    }

    fn classify_with(
        context: ErrorContext,
        retry_after: Option<Duration>,
        rate_limit_reason: bool,
    ) -> GcalError {
        match context.status {
            None | Some(500 | 502 | 503 | 504) => GcalError::Transient {
                context,
                retry_after,
            },
            Some(429) => GcalError::RateLimited {
                context,
                retry_after,
            },
            Some(403) if rate_limit_reason => GcalError::RateLimited {
                context,
                retry_after,
            },
            Some(403) => GcalError::Forbidden { context },
            Some(400) => GcalError::BadRequest { context },
            Some(401) => GcalError::Unauthorized { context },
            Some(404) => GcalError::NotFound { context },
            Some(409) => GcalError::Conflict { context },
            Some(410) if context.reason.as_deref() == Some("deleted") => {
                GcalError::AlreadyDeleted { context }
            }
            Some(410) => GcalError::FullSyncRequired { context },
            Some(412) => GcalError::PreconditionFailed { context },
            Some(_) => GcalError::Unexpected { context },
        }
    }

    /// Classifies an error response: parses Google's envelope from `body` when there is one,
    /// else keeps a short text snippet of the body as the message.
    pub fn from_response(
        method: &'static str,
        target: impl Into<String>,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> GcalError {
        let mut context = ErrorContext::new(method, target);
        context.status = Some(status);
        let mut rate_limit_reason = false;
        match GoogleError::parse(body) {
            Some(google) => {
                rate_limit_reason = google.errors.iter().any(|e| {
                    e.reason
                        .as_deref()
                        .is_some_and(|r| RATE_LIMIT_REASONS.contains(&r))
                });
                context.reason = google.reason().map(str::to_owned);
                context.message = google
                    .message
                    .clone()
                    .or_else(|| google.errors.iter().find_map(|e| e.message.clone()))
                    .unwrap_or_default();
            }
            None => context.message = body_snippet(body),
        }
        Self::classify_with(context, retry_after, rate_limit_reason)
    }

    /// A transport failure (no response, or a body that never fully arrived): timeouts,
    /// connection and body-read errors are [`GcalError::Transient`], since a retry may well
    /// succeed; only a request that could not be built is [`GcalError::Unexpected`]. The URL
    /// (whose query holds sync and page tokens) is dropped from the message.
    pub fn from_transport(
        method: &'static str,
        target: impl Into<String>,
        error: reqwest::Error,
    ) -> GcalError {
        let mut context = ErrorContext::new(method, target);
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else if error.is_body() || error.is_decode() {
            "the response body could not be read"
        } else if error.is_builder() {
            "the request could not be built"
        } else {
            "the request failed"
        };
        let builder = error.is_builder();
        context.message = format!("{kind}: {}", error_chain(&error.without_url()));
        if builder {
            GcalError::Unexpected { context }
        } else {
            GcalError::Transient {
                context,
                retry_after: None,
            }
        }
    }

    /// A success response whose body is not the JSON `what` should be.
    pub fn decode(
        method: &'static str,
        target: impl Into<String>,
        status: u16,
        what: &str,
        error: &serde_json::Error,
        body_len: usize,
    ) -> GcalError {
        let mut context = ErrorContext::new(method, target);
        context.status = Some(status);
        // The body itself is not quoted: a success body may hold sync tokens and event data.
        context.message = format!("response is not a valid {what} ({body_len} bytes): {error}");
        GcalError::Decode { context }
    }

    /// The failure's context (None only for [`GcalError::InvalidConfig`]).
    pub fn context(&self) -> Option<&ErrorContext> {
        match self {
            GcalError::FullSyncRequired { context }
            | GcalError::AlreadyDeleted { context }
            | GcalError::NotFound { context }
            | GcalError::PreconditionFailed { context }
            | GcalError::RateLimited { context, .. }
            | GcalError::Transient { context, .. }
            | GcalError::Unauthorized { context }
            | GcalError::Forbidden { context }
            | GcalError::BadRequest { context }
            | GcalError::Conflict { context }
            | GcalError::Decode { context }
            | GcalError::Unexpected { context } => Some(context),
            GcalError::InvalidConfig { .. } => None,
        }
    }

    /// A stable snake_case name of the kind (`full_sync_required`, `rate_limited`, ...), for
    /// logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            GcalError::FullSyncRequired { .. } => "full_sync_required",
            GcalError::AlreadyDeleted { .. } => "already_deleted",
            GcalError::NotFound { .. } => "not_found",
            GcalError::PreconditionFailed { .. } => "precondition_failed",
            GcalError::RateLimited { .. } => "rate_limited",
            GcalError::Transient { .. } => "transient",
            GcalError::Unauthorized { .. } => "unauthorized",
            GcalError::Forbidden { .. } => "forbidden",
            GcalError::BadRequest { .. } => "bad_request",
            GcalError::Conflict { .. } => "conflict",
            GcalError::Decode { .. } => "decode",
            GcalError::Unexpected { .. } => "unexpected",
            GcalError::InvalidConfig { .. } => "invalid_config",
        }
    }

    /// HTTP status of the failed response (None without a response).
    pub fn status(&self) -> Option<u16> {
        self.context()?.status
    }

    /// Google's `reason`, if the response had an envelope.
    pub fn reason(&self) -> Option<&str> {
        self.context()?.reason.as_deref()
    }

    /// The API method id (`calendar.events.patch`).
    pub fn method(&self) -> Option<&'static str> {
        Some(self.context()?.method)
    }

    /// The server's `Retry-After`, for rate limits and transient failures.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GcalError::RateLimited { retry_after, .. }
            | GcalError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True for the kinds a retry with backoff may cure: rate limits and transient failures.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GcalError::RateLimited { .. } | GcalError::Transient { .. }
        )
    }
}

/// Google's error envelope: `{"error":{"errors":[...],"code":N,"message":"..."}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoogleError {
    /// `error.code` (the HTTP status).
    pub code: Option<u16>,
    /// `error.message`.
    pub message: Option<String>,
    /// `error.status` (`NOT_FOUND`, ...), sent by newer Google front ends.
    pub status: Option<String>,
    /// `error.errors[]`.
    pub errors: Vec<ErrorDetail>,
}

/// One entry of `error.errors[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// `global`, `calendar`, `usageLimits`, ...
    #[serde(default)]
    pub domain: Option<String>,
    /// The machine-readable reason (`fullSyncRequired`, `conditionNotMet`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// `parameter`, `header`, ...
    #[serde(default)]
    pub location_type: Option<String>,
    /// Which parameter or header (`syncToken`, `If-Match`).
    #[serde(default)]
    pub location: Option<String>,
}

impl GoogleError {
    /// Parses an envelope; None when `body` is not one (HTML pages, OAuth errors, garbage).
    pub fn parse(body: &[u8]) -> Option<GoogleError> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let error = value.get("error")?.as_object()?;
        let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
        let errors = error
            .get("errors")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| serde_json::from_value(e.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Some(GoogleError {
            code: error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            message: text("message"),
            status: text("status"),
            errors,
        })
    }

    /// The first `reason` of `errors[]`.
    pub fn reason(&self) -> Option<&str> {
        self.errors.iter().find_map(|e| e.reason.as_deref())
    }
}

/// Parses a `Retry-After` header: delta seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// At most this many characters of a non-envelope error body go into a message.
const SNIPPET_CHARS: usize = 200;

/// A short, single-line rendering of an error body that is not Google's envelope: HTML tags are
/// dropped, whitespace collapsed, the text cut at [`SNIPPET_CHARS`] characters.
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let html = text.trim_start().starts_with('<');
    let mut out = String::new();
    let mut in_tag = false;
    let mut pending_space = false;
    let mut count = 0;
    for c in text.chars() {
        if html && c == '<' {
            in_tag = true;
            pending_space = true;
            continue;
        }
        if in_tag {
            in_tag = c != '>';
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        if count == SNIPPET_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    if out.is_empty() {
        format!("non-JSON error body ({} bytes)", body.len())
    } else {
        format!("non-JSON error body: {out}")
    }
}

/// `error: source: source...` for a transport error (the URL already removed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(code: u16, domain: &str, reason: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"error": {"errors": [{"domain": domain, "reason": reason, "message": message}],
                                     "code": code, "message": message}})
        .to_string()
        .into_bytes()
    }

    fn classify(status: u16, reason: &str) -> GcalError {
        GcalError::from_response(
            "calendar.events.list",
            "calendar a@example.com",
            status,
            None,
            &envelope(status, "global", reason, "Some message"),
        )
    }

    #[test]
    fn status_and_reason_decide_the_kind() {
        let cases = [
            (410, "fullSyncRequired", "full_sync_required"),
            (410, "updatedMinTooLongAgo", "full_sync_required"),
            (410, "somethingNew", "full_sync_required"),
            (410, "deleted", "already_deleted"),
            (404, "notFound", "not_found"),
            (412, "conditionNotMet", "precondition_failed"),
            (403, "rateLimitExceeded", "rate_limited"),
            (403, "userRateLimitExceeded", "rate_limited"),
            (429, "anything", "rate_limited"),
            (403, "quotaExceeded", "forbidden"),
            (403, "forbiddenForNonOrganizer", "forbidden"),
            (401, "authError", "unauthorized"),
            (400, "timeRangeEmpty", "bad_request"),
            (409, "duplicate", "conflict"),
            (500, "backendError", "transient"),
            (502, "", "transient"),
            (503, "backendError", "transient"),
            (504, "", "transient"),
            (413, "requestTooLarge", "unexpected"),
        ];
        for (status, reason, kind) in cases {
            let error = classify(status, reason);
            assert_eq!(error.kind(), kind, "{status} {reason}");
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.method(), Some("calendar.events.list"));
        }
    }

    #[test]
    fn message_text_never_changes_the_kind() {
        let error = GcalError::from_response(
            "calendar.events.list",
            "",
            403,
            None,
            &envelope(403, "global", "forbidden", "Rate Limit Exceeded"),
        );
        assert!(matches!(error, GcalError::Forbidden { .. }));
    }

    #[test]
    fn envelope_fields_reach_the_context() {
        let error = classify(412, "conditionNotMet");
        let context = error.context().unwrap();
        assert_eq!(context.reason.as_deref(), Some("conditionNotMet"));
        assert_eq!(context.message, "Some message");
        let text = error.to_string();
        assert!(text.contains("calendar.events.list (calendar a@example.com) failed: HTTP 412 conditionNotMet: Some message"), "{text}");
    }

    #[test]
    fn a_rate_limit_reason_after_the_first_error_still_counts() {
        let body = serde_json::json!({"error": {"code": 403, "message": "m", "errors": [
            {"reason": "somethingElse"}, {"domain": "usageLimits", "reason": "userRateLimitExceeded"}]}});
        let error = GcalError::from_response("m", "", 403, None, body.to_string().as_bytes());
        assert!(matches!(error, GcalError::RateLimited { .. }));
        assert_eq!(error.reason(), Some("somethingElse"));
    }

    #[test]
    fn html_and_garbage_bodies_are_classified_by_status_without_panicking() {
        let html = b"<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad   Gateway</h1></body></html>";
        let error = GcalError::from_response("calendar.events.get", "", 502, None, html);
        assert!(matches!(error, GcalError::Transient { .. }));
        assert_eq!(error.reason(), None);
        assert_eq!(
            error.context().unwrap().message,
            "non-JSON error body: 502 Bad Gateway Bad Gateway"
        );
        for body in [
            &b"{\"error\": {"[..],
            b"",
            b"\xff\xfe\x00garbage",
            b"{\"error\": \"invalid_grant\"}",
            b"[1,2]",
            b"{\"error\": {\"code\": \"x\", \"errors\": 5}}",
        ] {
            let error = GcalError::from_response("m", "", 400, None, body);
            assert!(matches!(error, GcalError::BadRequest { .. }), "{error:?}");
        }
        let long = "x".repeat(10_000);
        let error = GcalError::from_response("m", "", 500, None, long.as_bytes());
        assert!(error.context().unwrap().message.chars().count() < 250);
    }

    #[test]
    fn no_status_means_transient() {
        let error = GcalError::classify(ErrorContext::new("m", ""), None);
        assert!(error.is_retryable());
        assert!(matches!(error, GcalError::Transient { .. }));
    }

    #[test]
    fn retry_after_is_kept_for_retryable_kinds_only() {
        let wait = Some(Duration::from_secs(3));
        let limited = GcalError::from_response("m", "", 429, wait, b"");
        assert_eq!(limited.retry_after(), wait);
        let bad = GcalError::from_response("m", "", 400, wait, b"");
        assert_eq!(bad.retry_after(), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
