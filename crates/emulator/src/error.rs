//! Google's error envelope, and the errors the emulator answers with.
//!
//! Every failure the v3 API can produce is an [`ApiError`]; it renders as
//! `{"error":{"errors":[{domain,reason,message,locationType?,location?}],"code","message"}}`,
//! exactly the shape Google's client libraries parse (they look at `code` and `errors[].reason`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One API failure: HTTP status plus Google's `domain` / `reason` / `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub domain: &'static str,
    pub reason: String,
    pub message: String,
    pub location: Option<(&'static str, String)>,
    /// Seconds for a `Retry-After` header (fault injection of 429/503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: u16,
        domain: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            domain,
            reason: reason.to_owned(),
            message: message.into(),
            location: None,
            retry_after: None,
        }
    }

    /// Attaches `locationType` / `location` (e.g. `("parameter", "syncToken")`).
    pub fn at(mut self, location_type: &'static str, location: impl Into<String>) -> Self {
        self.location = Some((location_type, location.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "global", "badRequest", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "global", "invalid", message)
    }

    pub fn required(field: &str) -> Self {
        Self::new(
            400,
            "global",
            "required",
            format!("Missing required field: {field}"),
        )
        .at("parameter", field)
    }

    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "global",
            "parseError",
            format!("Parse Error: {detail}"),
        )
    }

    pub fn not_found() -> Self {
        Self::new(404, "global", "notFound", "Not Found")
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "global", "authError", "Invalid Credentials").at("header", "Authorization")
    }

    pub fn full_sync_required() -> Self {
        Self::new(
            410,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
        .at("parameter", "syncToken")
    }

    pub fn deleted() -> Self {
        Self::new(410, "global", "deleted", "Resource has been deleted")
    }

    pub fn duplicate() -> Self {
        Self::new(
            409,
            "global",
            "duplicate",
            "The requested identifier already exists.",
        )
    }

    pub fn condition_not_met() -> Self {
        Self::new(412, "global", "conditionNotMet", "Precondition Failed").at("header", "If-Match")
    }

    pub fn forbidden_for_non_organizer() -> Self {
        Self::new(
            403,
            "calendar",
            "forbiddenForNonOrganizer",
            "The operation can only be performed by the organizer of the event.",
        )
    }

    /// A user who can see the calendar but lacks the role an operation needs (`level` is
    /// "reader", "writer" or "owner"). Google's own answer, as observed in several public
    /// reports (e.g. googleapis/google-api-javascript-client#521 for `acl.insert` by a
    /// non-owner; inovex/CalendarSync#251 and spatie/laravel-google-calendar#95 for an event
    /// write to a read-only calendar): 403, domain `calendar`, reason `requiredAccessLevel`,
    /// "You need to have writer access to this calendar." Clients treat it as any 403 that is
    /// not a rate limit: a permission problem, not transient.
    pub fn required_access_level(level: &str) -> Self {
        Self::new(
            403,
            "calendar",
            "requiredAccessLevel",
            format!("You need to have {level} access to this calendar."),
        )
    }

    /// Changing or deleting the caller's own access rule. The reason and message are the ones
    /// Google gives (GAM handles `cannotChangeOwnAcl` and shows "Cannot change your own access
    /// level"); the status is unsure: 403 (a permission refusal) is the safe reading.
    pub fn cannot_change_own_acl() -> Self {
        Self::new(
            403,
            "calendar",
            "cannotChangeOwnAcl",
            "Cannot change your own access level.",
        )
    }

    /// Another owner changing or deleting the data owner's rule. GAM handles the reason
    /// `cannotChangeOwnerAcl`; the message and the 403 status are the emulator's choice.
    pub fn cannot_change_owner_acl() -> Self {
        Self::new(
            403,
            "calendar",
            "cannotChangeOwnerAcl",
            "Cannot change the access level of the calendar's owner.",
        )
    }

    pub fn rate_limited(status: u16) -> Self {
        Self::new(
            status,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "global",
            "requestTooLarge",
            format!("Request body exceeds the limit of {limit} bytes."),
        )
    }

    /// The `Retry-After` header value this error is answered with, if any.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after.map(|secs| secs.to_string())
    }

    /// The envelope as JSON.
    pub fn body(&self) -> serde_json::Value {
        let mut detail = json!({
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        });
        if let Some((kind, location)) = &self.location {
            detail["locationType"] = json!(kind);
            detail["location"] = json!(location);
        }
        json!({"error": {"errors": [detail], "code": self.status, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, json_body(self.body().to_string())).into_response();
        if let Some(secs) = self.retry_after_header()
            && let Ok(value) = HeaderValue::from_str(&secs)
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == 401 {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
        }
        response
    }
}

/// A JSON body with Google's content type.
pub fn json_body(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )],
        body,
    )
}

pub type ApiResult<T> = Result<T, ApiError>;
