//! confsync as a service: the API the Apps Script add-on calls, the sync scheduler, and the
//! join links of the built-in local provider.
//!
//! - `POST /v1/conferences` creates a meeting for an event (which may not exist yet), links it,
//!   starts syncing the calendar, and answers in Calendar's conferenceData shape;
//! - `POST /v1/calendars/{calendarId}/sync` is what the add-on's EventUpdated trigger calls;
//! - `GET /v1/conferences/{id}`, `GET /v1/status`; `GET /v1/openapi.json`: the API's contract
//!   (see [`openapi`]);
//! - `GET /join/{meetingId}`: the local provider's join page;
//! - `GET /`: the status page; `POST /webhooks/google`: push notifications;
//! - `/metrics`, `/healthz`, `/readyz`; `/healthz/identity` (see [`health`]).
//!
//! The /v1 API needs `Authorization: Bearer <api key>`; keys are stored as SHA-256 hashes. A
//! wrong or missing key is the operator's mistake: 401 with conferenceErrorType PERMANENT (the
//! user can do nothing about it) and a log line. With identities configured
//! ([`Service::identity`]), the conference and sync endpoints also need
//! `X-Confsync-Identity: <ID token>` (see [`identity`]) and act on a calendar only for its owner
//! or a user who can edit it:
//!
//! - its owner: with per-user OAuth the calendar's recorded owner (the first user to connect
//!   it), else the user its id names (a primary calendar's id is its owner's email); with a
//!   service account or a static token the user its id names. A calendar nobody owns yet is
//!   answered (per-user OAuth) AUTHENTICATION with a start link bound to the caller;
//! - an editor: a user the calendar's ACL gives the writer, writerWithoutPrivateAccess or owner
//!   role, directly (`user:{email}`) or through their domain (`domain:{domain}`), read with
//!   `acl.get` as the calendar's owner (see `may_edit`; group rules are not resolved). A grant
//!   is remembered for five minutes; a refusal is not;
//! - `GET /v1/conferences/{id}` answers `hostUrl` and `meeting` only to the calendar's owner
//!   (the organizer), never to editors.
//!
//! Anything else is 403 PERMANENT, before anything is stored or any outbound call. AUTHENTICATION
//! is answered only when the user can act (connect their Google account), always with an absolute
//! `authenticationUrl` (`{public_url}oauth/google/start?...`, a signed, expiring link).

pub mod admin;
pub mod budget;
pub mod channels;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod scheduler;
pub mod server;
pub mod status_page;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use confsync_core::model::MeetingSpec;
use confsync_engine::{AccessRole, CalendarError};
use confsync_providers::{ConferenceProvider, ProviderError};
use confsync_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

pub use channels::{ChannelConfig, ChannelKey, ChannelOptions, Channels};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use server::{ServerLimits, serve};
pub use validate::{IdKind, validate_id};

/// What the service needs.
pub struct Service {
    pub store: Store,
    pub provider: Arc<dyn ConferenceProvider>,
    pub scheduler: Scheduler,
    /// Push channels; None when the service has no public URL (the sweep and the add-on's
    /// trigger still keep calendars in sync).
    pub channels: Option<Arc<Channels>>,
    /// Per-user OAuth (`/oauth/google/...`); None with a service account or a static token.
    pub oauth: Option<Arc<oauth::UserCalendars>>,
    /// Where users reach this service (ends with '/'): for authentication URLs.
    pub public_url: Option<String>,
    /// The Calendar API rate budgets, when the calendar is wrapped in them (for metrics).
    pub budgets: Option<Arc<budget::Budgets>>,
    /// How long the add-on's create may take before it is answered TEMPORARY (the add-on
    /// waits about 30 s; a retry resumes the create with the same provider key).
    pub create_deadline: std::time::Duration,
    /// Signs organizer links to join pages confsync serves (`/join/{id}?host=...`, moderator
    /// rights at Jitsi and BigBlueButton). None: no host links, everyone joins as a guest.
    pub host_key: Option<Vec<u8>>,
    /// Verifies the add-on users' ID tokens (`X-Confsync-Identity`). None: the API key alone
    /// speaks for every user, who cannot be told apart.
    pub identity: Option<Arc<identity::IdentityVerifier>>,
}

/// The organizer's signature for a meeting's join link (HMAC-SHA256, base64url, 128 bits).
pub fn host_signature(key: &[u8], meeting_id: &str) -> String {
    use base64::Engine;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("host:{meeting_id}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
}

fn host_signature_ok(key: &[u8], meeting_id: &str, given: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(
        host_signature(key, meeting_id).as_bytes(),
        given.as_bytes(),
    )
    .is_ok()
}

type Shared = State<Arc<Service>>;

/// Hashes an API key for storage and lookup.
pub fn hash_api_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random API key (`cs_` + 43 characters).
pub fn new_api_key() -> String {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator is available");
    format!(
        "cs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    // The user's endpoints need the user's identity (when configured); the status is the
    // operator's and needs the key only.
    let users = Router::new()
        .route("/conferences", post(create_conference))
        .route("/conferences/{id}", get(get_conference))
        .route("/calendars/{calendarId}/sync", post(sync_calendar))
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            require_identity,
        ));
    let v1 = Router::new()
        .merge(users)
        .nest("/admin", admin::routes())
        .route("/status", get(status))
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            require_api_key,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/join/{meetingId}", get(join))
        .route("/oauth/google/start", get(oauth_start))
        .route("/oauth/google/callback", get(oauth_callback))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/webhooks/google", post(google_webhook))
        .route("/", get(status_page::page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/healthz/identity", get(health::identity))
        .route("/readyz", get(ready))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(request_context))
        .layer(axum::middleware::from_fn(json_error_bodies))
        .with_state(service)
}

/// Unknown routes.
async fn not_found(request: Request) -> Response {
    let message = "no such endpoint";
    if is_v1(request.uri().path()) {
        conference_error(StatusCode::NOT_FOUND, "PERMANENT", message)
    } else {
        json_error(StatusCode::NOT_FOUND, message)
    }
}

fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The body of every JSON error answer outside `/v1`: `{"error": {"code": N, "message": "..."}}`.
pub fn json_error_body(status: StatusCode, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message}})
}

/// A JSON error answer.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json_error_body(status, &message.into()))).into_response()
}

/// Gives error answers that have no JSON body one: the framework's own (405, 413, 415, JSON,
/// query and path rejections: empty or plain text) get `{"error": {"code", "message"}}`, or the
/// conferenceError shape under `/v1` (what the add-on reads). The message is the framework's
/// text, shortened and without control characters, else the status's reason. HTML pages (join
/// and OAuth pages, for browsers) are left as they are.
pub async fn json_error_bodies(request: Request, next: Next) -> Response {
    let v1 = is_v1(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(300)
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .filter(|t| !t.is_empty());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    });
    let body = if v1 {
        conference_error_body(status, conference_error_kind(status), &message)
    } else {
        json_error_body(status, &message)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// The add-on's ConferenceErrorType for a status.
fn conference_error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        // AUTHENTICATION needs a URL where the user can sign in; a bare 401 has none.
        401 => "PERMANENT",
        403 => "PERMISSION_DENIED",
        408 | 429 | 500.. => "TEMPORARY",
        _ => "PERMANENT",
    }
}

/// Longest a request may take before it is answered 503 (provider calls have their own
/// timeouts, shorter than this).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Every request gets an id (the caller's `x-request-id` if it is short and printable, else a
/// new one), logged on its span and echoed in the answer, and a deadline.
async fn request_context(request: Request, next: Next) -> Response {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "cs-{:x}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        });
    let v1 = is_v1(request.uri().path());
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        tracing::Instrument::instrument(next.run(request), span),
    )
    .await
    {
        Ok(response) => response,
        // Under /v1 in the add-on's error shape, like every other /v1 error.
        Err(_) if v1 => conference_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARY",
            "the request timed out",
        ),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "the request timed out"),
    };
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn conference_error_body(status: StatusCode, kind: &str, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "conferenceErrorType": kind, "message": message}})
}

fn conference_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(conference_error_body(status, kind, &message.into())),
    )
        .into_response()
}

/// Checks the ids a /v1 request names (see [`validate`]): the 400 answer if one is not an id
/// Google could have made. Called first thing by the handlers that take ids.
fn invalid_ids(ids: &[(IdKind, &str)]) -> Option<Response> {
    ids.iter().find_map(|(kind, value)| {
        validate_id(*kind, value)
            .err()
            .map(|e| conference_error(StatusCode::BAD_REQUEST, "PERMANENT", e))
    })
}

/// The API key a `/v1` call came with: its name (for the logs of admin changes) and scope.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub name: String,
    pub scope: String,
}

async fn require_api_key(State(service): Shared, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // The user cannot fix the deployment's key: PERMANENT, and the operator learns it from
    // the log (at most once a minute, with how many were refused).
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        operator_warning("a /v1 call without an API key (Authorization: Bearer <key>)");
        return conference_error(
            StatusCode::UNAUTHORIZED,
            "PERMANENT",
            "missing API key: send Authorization: Bearer <key>",
        );
    };
    match service.store.api_key_lookup(&hash_api_key(key)).await {
        Ok(Some((name, scope))) => {
            // The add-on's routes need an add-on (or admin) key; /v1/admin checks its own.
            // Inside the nested /v1 router the path has lost its /v1 prefix.
            let path = request
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
            let addon_route = !path.starts_with("/v1/admin") && path != "/v1/status";
            if addon_route && scope == "read-only" {
                return conference_error(
                    StatusCode::FORBIDDEN,
                    "PERMANENT",
                    format!("API key {name} is read-only: the add-on needs an addon key"),
                );
            }
            let mut request = request;
            request.extensions_mut().insert(ApiCaller { name, scope });
            next.run(request).await
        }
        Ok(None) => {
            operator_warning(
                "a /v1 call with an unknown or revoked API key: check the add-on's CONFSYNC_API_KEY script property (`confsync apikey create` makes one)",
            );
            conference_error(
                StatusCode::UNAUTHORIZED,
                "PERMANENT",
                "unknown or revoked API key",
            )
        }
        Err(e) => {
            warn!(error = %e, "API key lookup failed");
            conference_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARY",
                "the store is unavailable, try again",
            )
        }
    }
}

/// A warning for the operator, at most once a minute per message (with the count since).
fn operator_warning(message: &'static str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Seen = HashMap<&'static str, (Option<std::time::Instant>, u64)>;
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let entry = seen
        .get_or_insert_with(HashMap::new)
        .entry(message)
        .or_insert((None, 0));
    entry.1 += 1;
    if entry
        .0
        .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60))
    {
        warn!(refused = entry.1, "{message}");
        *entry = (Some(std::time::Instant::now()), 0);
    }
}

/// With identities configured: the caller's verified identity, put in the request's extensions
/// for the handlers; a missing or refused token is 401 PERMANENT (the add-on sends a fresh one
/// with every call: the user has nothing to do), keys that cannot be fetched 503 TEMPORARY.
async fn require_identity(State(service): Shared, mut request: Request, next: Next) -> Response {
    let Some(verifier) = &service.identity else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(identity::IDENTITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    match verifier.verify(token, chrono::Utc::now().timestamp()).await {
        Ok(caller) => {
            identity::IdentityCounts::bump(&verifier.counts.verified);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e @ identity::IdentityError::Refused(_)) => {
            identity::IdentityCounts::bump(&verifier.counts.refused);
            tracing::info!(error = %e, "a /v1 call with a refused identity token");
            conference_error(StatusCode::UNAUTHORIZED, "PERMANENT", e.to_string())
        }
        Err(e @ identity::IdentityError::Unavailable(_)) => {
            identity::IdentityCounts::bump(&verifier.counts.unavailable);
            warn!(error = %e, "identity tokens cannot be verified");
            let mut answer =
                conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string());
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
            answer
        }
    }
}

type Caller = Option<axum::Extension<identity::Identity>>;

/// The user a calendar belongs to, as far as confsync acts on it: with per-user OAuth its
/// recorded owner, else the user its id names; otherwise the user its id names (a primary
/// calendar).
async fn calendar_owner(service: &Service, calendar_id: &str) -> Result<Option<String>, Response> {
    match &service.oauth {
        Some(oauth) => oauth.owner(calendar_id).await.map_err(|e| {
            warn!(calendar_id, error = %e, "cannot read a calendar's owner");
            conference_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARY",
                "the store is unavailable, try again",
            )
        }),
        None => Ok(oauth::implied_owner(calendar_id)),
    }
}

/// Whether the caller may act on the calendar. Ok(true): yes (its owner, or a user its ACL lets
/// edit it); Ok(false): nobody owns it yet (per-user OAuth: the caller may connect it). Without
/// identities, everyone may.
async fn authorize_calendar(
    service: &Service,
    caller: Option<&identity::Identity>,
    calendar_id: &str,
) -> Result<bool, Response> {
    let (Some(caller), Some(verifier)) = (caller, service.identity.as_deref()) else {
        return Ok(true);
    };
    let counts = &verifier.counts;
    let owner = calendar_owner(service, calendar_id).await?;
    match &owner {
        Some(owner) if *owner == caller.email => {
            identity::IdentityCounts::bump(&counts.access_owner);
            return Ok(true);
        }
        None if service.oauth.is_some() => return Ok(false),
        _ => {}
    }
    // Not its owner: a user the calendar is shared with for editing may act on it too.
    let refusal = match may_edit(service, verifier, calendar_id, &caller.email).await {
        Ok(true) => {
            identity::IdentityCounts::bump(&counts.access_editor);
            return Ok(true);
        }
        Ok(false) => format!(
            "{} may not use confsync on calendar {calendar_id}: only its owner{} and users it is shared with for editing can",
            caller.email,
            if service.oauth.is_some() {
                " (the account that connected it)"
            } else {
                ""
            }
        ),
        Err(CalendarError::Retryable { detail, .. }) => {
            warn!(calendar_id, error = %detail, "cannot read a calendar's access rules");
            return Err(conference_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARY",
                "cannot check access to this calendar now, try again",
            ));
        }
        Err(e) => {
            // The owner's grant is gone, or the credential cannot read ACLs: the caller cannot
            // fix that; the operator (or the owner, reconnecting) can.
            warn!(calendar_id, error = %e, "cannot read a calendar's access rules; refusing its non-owners");
            format!(
                "{} is not the owner of calendar {calendar_id}, and confsync cannot read who else may edit it{}",
                caller.email,
                if service.oauth.is_some() {
                    ": its owner must connect it to confsync first"
                } else {
                    ""
                }
            )
        }
    };
    identity::IdentityCounts::bump(&counts.access_refused);
    tracing::info!(calendar_id, caller = %caller.email, "refused: neither the calendar's owner nor an editor");
    Err(conference_error(
        StatusCode::FORBIDDEN,
        "PERMANENT",
        refusal,
    ))
}

/// Whether the calendar's ACL lets `email` edit it: a rule for the user (`user:{email}`) or for
/// their domain (`domain:{domain}`) with a writer or owner role, read with `acl.get` as the
/// calendar's owner (the data owner may read its ACL; writers too). Rules for groups are not
/// resolved: that needs the group's membership (the Admin SDK's Directory API, or Cloud
/// Identity), which confsync has no grant for; a member of a group the calendar is shared with
/// is refused unless they also have their own rule.
async fn may_edit(
    service: &Service,
    verifier: &identity::IdentityVerifier,
    calendar_id: &str,
    email: &str,
) -> Result<bool, CalendarError> {
    if verifier.editors.holds(calendar_id, email) {
        return Ok(true);
    }
    let calendar = &service.scheduler.engine().calendar;
    let mut rules = vec![format!("user:{email}")];
    if let Some((_, domain)) = email.rsplit_once('@') {
        rules.push(format!("domain:{domain}"));
    }
    for rule in rules {
        if calendar
            .acl_role(calendar_id, &rule)
            .await?
            .is_some_and(AccessRole::can_edit)
        {
            verifier.editors.remember(calendar_id, email);
            return Ok(true);
        }
    }
    Ok(false)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateConference {
    calendar_id: String,
    event_id: String,
    /// Accepted for the add-on's logs; creates are idempotent per event, not per request id.
    #[serde(default)]
    #[allow(dead_code)]
    request_id: Option<String>,
    #[serde(default)]
    solution_id: Option<String>,
}

/// The conference in Calendar's conferenceData shape (what ConferenceDataBuilder takes), built
/// by the engine, which alone knows Calendar's wire format.
fn conference_data(service: &Service, conference_id: &str, join_url: &str) -> Value {
    confsync_engine::conference::fresh(
        &service.scheduler.engine().config.recognizer,
        conference_id,
        join_url,
    )
}

async fn create_conference(
    State(service): Shared,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let caller = caller.map(|c| c.0);
    let request: CreateConference = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return conference_error(
                StatusCode::BAD_REQUEST,
                "PERMANENT",
                format!("invalid request body: {e}"),
            );
        }
    };
    if let Some(invalid) = invalid_ids(&[
        (IdKind::Calendar, &request.calendar_id),
        (IdKind::Event, &request.event_id),
    ]) {
        return invalid;
    }
    if request.calendar_id.trim().is_empty() || request.event_id.trim().is_empty() {
        return conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "calendarId and eventId must not be empty",
        );
    }
    let _ = &request.solution_id; // one solution today; kept for the add-on's manifest ids
    let (calendar_id, event_id) = (request.calendar_id.as_str(), request.event_id.as_str());
    let owned = match authorize_calendar(&service, caller.as_ref(), calendar_id).await {
        Ok(owned) => owned,
        Err(refused) => return refused,
    };
    // With per-user OAuth the calendar's owner must have connected: otherwise the add-on shows
    // Google's sign-in prompt with our authentication URL.
    if let Some(oauth) = &service.oauth {
        if !owned {
            return authentication_needed(
                &service,
                calendar_id,
                caller.as_ref(),
                format!("calendar {calendar_id} is not connected yet: connect it to confsync"),
            );
        }
        match oauth.check(calendar_id).await {
            Ok(()) => {}
            Err(confsync_engine::calendar::CalendarError::Reauth { detail }) => {
                return authentication_needed(&service, calendar_id, caller.as_ref(), detail);
            }
            Err(e) => {
                return conference_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TEMPORARY",
                    e.to_string(),
                );
            }
        }
    }
    // Idempotent per event (whatever the request id): a live link for this event answers its
    // conference; a create whose answer was lost is resumed with the same provider key.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let engine = service.scheduler.engine();
    let started = tokio::time::Instant::now();
    let spec = first_spec(
        engine,
        calendar_id,
        event_id,
        service.create_deadline / 3,
        now_ms,
    )
    .await;
    let created = match tokio::time::timeout(
        service.create_deadline.saturating_sub(started.elapsed()),
        engine.create_conference(calendar_id, event_id, &spec, now_ms),
    )
    .await
    {
        Ok(Ok(created)) => created,
        Ok(Err(confsync_engine::create::CreateError::Provider(e))) => {
            warn!(calendar_id, event_id, error = %e, "create failed at the provider");
            return provider_error(e);
        }
        Ok(Err(confsync_engine::create::CreateError::Store(e))) => {
            warn!(calendar_id, event_id, error = %e, "create could not be recorded");
            return conference_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARY",
                "could not record the conference, try again",
            );
        }
        Err(_) => {
            // The create goes on in the background of nothing: it was dropped at an await.
            // The intent is stored, so the add-on's retry resumes it with the same key.
            warn!(
                calendar_id,
                event_id, "create took longer than its deadline; the retry resumes it"
            );
            return conference_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARY",
                "creating the meeting takes longer than expected, try again",
            );
        }
    };
    let link = created.link();
    // The first conference on a calendar starts its syncing (later ones coalesce into it) and
    // its push channel (opened once, in the background: the add-on is waiting).
    if let Err(e) = service.scheduler.request_sync(calendar_id).await {
        warn!(calendar_id, error = %e, "could not record a sync request; the sweep syncs the calendar");
    }
    if let Some(channels) = service.channels.clone() {
        let calendar_id = calendar_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = channels.ensure(&calendar_id).await {
                warn!(calendar_id, error = %e, "could not open a push channel; the sweep keeps the calendar in sync");
            }
        });
    }
    let join_url = link.join_url.as_deref().unwrap_or_default();
    (
        StatusCode::OK,
        axum::Json(conference_data(&service, &link.conference_id, join_url)),
    )
        .into_response()
}

/// What a new meeting is created with. When Calendar has the event already (a conference added
/// to an existing event), its real title, time, zone and guests: one provider call, and the
/// calendar's first sync finds nothing to change. When it has not saved it yet (a new event:
/// 404), or cannot be read within `wait`, a placeholder ("Meeting", now), which the first sync
/// brings in line. Never an empty title.
async fn first_spec(
    engine: &confsync_engine::Engine,
    calendar_id: &str,
    event_id: &str,
    wait: std::time::Duration,
    now_ms: i64,
) -> confsync_core::model::MeetingSpec {
    let placeholder = || confsync_engine::create::placeholder(now_ms);
    let read = tokio::time::timeout(wait, engine.calendar.get(calendar_id, event_id)).await;
    let event = match read {
        Ok(Ok(Some(event))) => event,
        Ok(Ok(None)) => return placeholder(), // not saved yet: the usual case for a new event
        Ok(Err(e)) => {
            warn!(calendar_id, event_id, error = %e, "could not read the event before the create; starting from a placeholder");
            return placeholder();
        }
        Err(_) => {
            warn!(
                calendar_id,
                event_id,
                "reading the event before the create took too long; starting from a placeholder"
            );
            return placeholder();
        }
    };
    match confsync_core::model::Snapshot::from_json(&event) {
        Ok(snapshot) if !snapshot.is_cancelled() => match snapshot.spec {
            Some(mut spec) => {
                if spec.title.trim().is_empty() {
                    spec.title = placeholder().title;
                }
                spec
            }
            None => placeholder(),
        },
        _ => placeholder(),
    }
}

/// AUTHENTICATION with the URL where the calendar's owner connects their Google account: an
/// absolute start link, signed and expiring, bound to the calendar and (with identities) to the
/// caller.
fn authentication_needed(
    service: &Service,
    calendar_id: &str,
    caller: Option<&identity::Identity>,
    message: String,
) -> Response {
    let (Some(public_url), Some(oauth)) = (service.public_url.as_deref(), &service.oauth) else {
        tracing::error!(
            calendar_id,
            "a user must connect their Google account, but serve.public_url is not set: there is no sign-in URL to give them"
        );
        return conference_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "PERMANENT",
            "the service has no public URL to sign in at; its operator must set one",
        );
    };
    let url = format!(
        "{public_url}oauth/google/start?{}",
        oauth.start_link(
            calendar_id,
            caller.map(|c| c.email.as_str()),
            chrono::Utc::now().timestamp_millis()
        )
    );
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"code": 401, "conferenceErrorType": "AUTHENTICATION", "message": message, "authenticationUrl": url}})),
    )
        .into_response()
}

fn provider_error(e: ProviderError) -> Response {
    let (status, kind) = match &e {
        ProviderError::Transient { .. } | ProviderError::RateLimited { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY")
        }
        // The provider's credentials are the operator's: the user can do nothing.
        ProviderError::Reauth { .. } => {
            tracing::error!(error = %e, "the conferencing provider refused confsync's credentials: the operator must renew them");
            (StatusCode::BAD_GATEWAY, "PERMANENT")
        }
        ProviderError::Permanent { .. }
        | ProviderError::Conflict { .. }
        | ProviderError::Recreate { .. } => (StatusCode::BAD_GATEWAY, "PERMANENT"),
        ProviderError::NotFound { .. } => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
    };
    conference_error(status, kind, e.to_string())
}

async fn get_conference(
    State(service): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Some(invalid) = invalid_ids(&[(IdKind::Conference, &id)]) {
        return invalid;
    }
    match service.store.link(&id).await {
        Ok(Some(link)) => {
            // The organizer (the calendar's owner) gets the host link and the meeting's details;
            // anyone else the public conference data only.
            let organizer = match &caller {
                None => true,
                Some(caller) => match calendar_owner(&service, &link.calendar_id).await {
                    Ok(owner) => owner.as_deref() == Some(caller.email.as_str()),
                    Err(unavailable) => return unavailable,
                },
            };
            let mut answer = link
                .join_url
                .as_deref()
                .map(|url| conference_data(&service, &id, url))
                .unwrap_or_else(|| json!({"conferenceId": id}));
            answer["calendarId"] = json!(link.calendar_id);
            answer["eventId"] = json!(link.event_id);
            answer["deleted"] = json!(link.deleted);
            if !organizer {
                return (StatusCode::OK, axum::Json(answer)).into_response();
            }
            answer["meeting"] = json!(link.spec);
            // The organizer's link (moderator at providers whose joins confsync serves): only
            // through the API, never in conferenceData, which every guest sees.
            if let (Some(key), Some(url)) = (&service.host_key, &link.join_url)
                && service
                    .public_url
                    .as_deref()
                    .is_some_and(|p| url.starts_with(&format!("{p}join/")))
            {
                let sep = if url.contains('?') { '&' } else { '?' };
                answer["hostUrl"] = json!(format!("{url}{sep}host={}", host_signature(key, &id)));
            }
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Ok(None) => conference_error(
            StatusCode::NOT_FOUND,
            "UNKNOWN",
            format!("no conference {id}"),
        ),
        Err(e) => conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string()),
    }
}

async fn sync_calendar(
    State(service): Shared,
    caller: Caller,
    Path(calendar_id): Path<String>,
) -> Response {
    if let Some(invalid) = invalid_ids(&[(IdKind::Calendar, &calendar_id)]) {
        return invalid;
    }
    match authorize_calendar(&service, caller.as_ref().map(|c| &c.0), &calendar_id).await {
        Ok(true) => {}
        Ok(false) => {
            return conference_error(
                StatusCode::FORBIDDEN,
                "PERMANENT",
                format!("calendar {calendar_id} is not connected to confsync"),
            );
        }
        Err(refused) => return refused,
    }
    // Recorded in the store before the 202: an accepted request is synced even if the process
    // stops before it runs.
    match service.scheduler.request_sync(&calendar_id).await {
        Ok(true) => (StatusCode::ACCEPTED, axum::Json(json!({"calendarId": calendar_id, "scheduled": true}))).into_response(),
        // Calendars start syncing with their first conference; an unknown one has nothing of ours.
        // `calendarId` tells the add-on it is this calendar that is unknown (not the route), so
        // it removes its trigger.
        Ok(false) => (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": format!("calendar {calendar_id} has no conferences of ours"), "calendarId": calendar_id}}))).into_response(),
        Err(e) => {
            warn!(calendar_id, error = %e, "could not record a sync request");
            conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", "the store is unavailable, try again")
        }
    }
}

/// `GET /v1/status` query: a page of calendars (`limit` 1 to 1000, default 100; `after` the last
/// id of the previous page; `search` a part of the id).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    limit: Option<i64>,
    after: Option<String>,
    search: Option<String>,
}

/// A checked [`StatusQuery`] (the status page takes the same parameters).
pub(crate) struct CalendarPage {
    pub limit: i64,
    pub after: String,
    pub search: String,
}

impl StatusQuery {
    /// What `limit`, `after` and `search` may be, for error answers.
    pub(crate) const RULES: &str = "limit must be 1 to 1000 (default 100); after (a calendar id) and search at most 1024 and 256 bytes";

    /// The page asked for, or None when a value is out of bounds ([`StatusQuery::RULES`]).
    pub(crate) fn checked(self) -> Option<CalendarPage> {
        let limit = self.limit.unwrap_or(100);
        let after = self.after.unwrap_or_default();
        let search = self.search.unwrap_or_default();
        ((1..=1000).contains(&limit) && after.len() <= 1024 && search.len() <= 256).then_some(
            CalendarPage {
                limit,
                after,
                search,
            },
        )
    }
}

/// Status at any scale: counts over everything, the worst calendars (lagging, failing, needing
/// re-authorisation), the channels expiring first, and one page of calendars; every list
/// bounded, whatever the number of calendars.
async fn status(
    State(service): Shared,
    query: Result<axum::extract::Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(query)) = query else {
        return conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "query parameters: limit (1 to 1000), after (a calendar id), search",
        );
    };
    let Some(CalendarPage {
        limit,
        after,
        search,
    }) = query.checked()
    else {
        return conference_error(StatusCode::BAD_REQUEST, "PERMANENT", StatusQuery::RULES);
    };
    let store = &service.store;
    let unavailable = |e: confsync_store::StoreError| {
        conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string())
    };
    let now = chrono::Utc::now().timestamp_millis();
    // Every query at once (each its own read connection); the ones the answer can do without
    // fall back to -1 or empty.
    let (essential, failures, depth, channels, workers) = tokio::join!(
        async {
            tokio::try_join!(
                store.calendar_summary(),
                store.calendars_page(&after, &search, limit + 1),
                store.calendars_ranked(confsync_store::Worst::Lagging, 10),
                store.calendars_ranked(confsync_store::Worst::Failing, 10),
                store.calendars_ranked(confsync_store::Worst::NeedingReauth, 100),
            )
        },
        store.failed_count(),
        store.outbox_depth(),
        store.channels_expiring_first(now, 20),
        store.live_workers(),
    );
    let (summary, mut page, lagging, failing, needing_reauth) = match essential {
        Ok(all) => all,
        Err(e) => return unavailable(e),
    };
    let failures = failures.unwrap_or(-1);
    let depth = depth.unwrap_or(-1);
    let next_after = (page.len() as i64 > limit).then(|| {
        page.truncate(limit as usize);
        page.last().map(|c| c.calendar_id.clone())
    });
    let shown: Vec<&str> = page
        .iter()
        .chain(&lagging)
        .chain(&failing)
        .chain(needing_reauth.iter().take(10))
        .map(|c| c.calendar_id.as_str())
        .collect();
    let activity = service.scheduler.activity_of(shown.iter().copied());
    // Only the calendars shown are checked (one query for all of them).
    let reauth = store
        .calendars_needing_reauth_among(&shown)
        .await
        .unwrap_or_default();
    let row = |c: &confsync_store::CalendarState| {
        let a = activity.iter().find(|a| a.calendar_id == c.calendar_id);
        json!({
            "calendarId": c.calendar_id,
            "needsReauth": reauth.binary_search(&c.calendar_id).is_ok(),
            "synced": c.sync_token.is_some(),
            "needsFullSync": c.needs_full_sync,
            "lastSyncAt": c.last_sync_at,
            "lastError": c.last_error,
            "syncFailures": c.sync_failures,
            "retryAt": c.retry_at,
            "dirtySince": c.dirty_at,
            "syncs": a.map(|a| a.syncs).unwrap_or(0),
            "pending": a.is_some_and(|a| a.pending || a.running),
        })
    };
    let calendars: Vec<Value> = page.iter().map(row).collect();
    let (expiring, live_channels) = channels.unwrap_or_default();
    let channels: Vec<Value> = expiring
        .iter()
        .map(|c| json!({"calendarId": c.calendar_id, "channelId": c.channel_id, "expiresAt": c.expiration_ms}))
        .collect();
    let webhooks = service.channels.as_ref().map(|c| json!(c.counts()));
    // Postgres: the workers sharing the store (a handful); `pending` above is this worker's.
    let workers: Vec<Value> = workers
        .unwrap_or_default()
        .into_iter()
        .map(|(name, started)| json!({"name": name, "startedAt": started}))
        .collect();
    let body = json!({
        "worker": service.scheduler.engine().config.worker,
        "workers": workers,
        "summary": {
            "calendars": summary.calendars,
            "synced": summary.synced,
            "failing": summary.failing,
            "dirty": summary.dirty,
            "needingReauth": summary.needing_reauth,
            "liveChannels": live_channels,
            "outboxDepth": depth,
            "failedActions": failures,
        },
        "worst": {
            "lagging": lagging.iter().map(row).collect::<Vec<_>>(),
            "failing": failing.iter().map(row).collect::<Vec<_>>(),
            "needingReauth": needing_reauth.iter().take(10).map(row).collect::<Vec<_>>(),
        },
        "calendars": calendars,
        "nextAfter": next_after.flatten(),
        "channels": channels,
        "webhooks": webhooks,
        "outboxDepth": depth,
        "failedActions": failures,
        "calendarsNeedingReauth": needing_reauth.iter().map(|c| &c.calendar_id).collect::<Vec<_>>(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Push notifications. What a stranger sends here costs nothing (see [`channels`]); refusals
/// are JSON errors.
async fn google_webhook(State(service): Shared, headers: axum::http::HeaderMap) -> Response {
    match &service.channels {
        Some(channels) => {
            let (status, message) = channels.on_notification(&headers).await;
            if status.is_success() {
                (status, message).into_response()
            } else {
                json_error(status, message)
            }
        }
        None => json_error(StatusCode::NOT_FOUND, "push channels are not configured"),
    }
}

/// Prometheus metrics. No secrets: calendar ids only (the operator's own data). Bounded
/// whatever the number of calendars: the calendar gauges are aggregates the store computes
/// (COUNT, MIN, counts over lag thresholds), and the per-calendar series are opt-in and capped
/// ([`metrics::Metrics::set_per_calendar`]).
async fn metrics(State(service): Shared) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    let store = &service.store;
    let cut_offs: Vec<i64> = metrics::LAG_THRESHOLDS
        .iter()
        .map(|s| now - s * 1000)
        .collect();
    let per_calendar = service.scheduler.metrics().per_calendar() as i64;
    let (summary, coverage, depth, failed, worst_lag, first_expiry) = tokio::join!(
        store.calendar_summary_and_lag(&cut_offs),
        store.channel_coverage(now),
        store.outbox_depth(),
        store.failed_count(),
        async {
            if per_calendar == 0 {
                return Ok(Vec::new());
            }
            store
                .calendars_ranked(confsync_store::Worst::SyncedLongestAgo, per_calendar)
                .await
        },
        async {
            if per_calendar == 0 {
                return Ok(Vec::new());
            }
            store.calendars_by_channel_expiry(now, per_calendar).await
        },
    );
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let (summary, lag) = match summary {
        Ok((summary, lag)) => (Some(summary), lag),
        Err(e) => {
            warn!(error = %e, "metrics: cannot count calendars");
            (None, confsync_store::CalendarLag::default())
        }
    };
    let count = |f: fn(&confsync_store::CalendarSummary) -> i64| summary.as_ref().map_or(-1, f);
    let lagging: Vec<(i64, i64)> = metrics::LAG_THRESHOLDS
        .iter()
        .copied()
        .zip(lag.synced_before.iter().copied())
        .collect();
    let (with_channel, first_channel_expiry) = coverage.unwrap_or((-1, None));
    let lag_rows: Vec<(String, f64)> = worst_lag
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| Some((c.calendar_id, seconds(now - c.last_sync_at?))))
        .collect();
    let expiry: Vec<(String, f64)> = first_expiry
        .unwrap_or_default()
        .into_iter()
        .map(|(calendar_id, expires)| (calendar_id, seconds(expires - now)))
        .collect();
    let depth = depth.unwrap_or(-1);
    let failed = failed.unwrap_or(-1);
    let counts = service
        .channels
        .as_ref()
        .map(|c| c.counts())
        .unwrap_or_default();
    let notifications = [
        ("received", counts.received),
        ("rejected", counts.rejected),
        ("orphan", counts.orphans),
        ("duplicate", counts.duplicates),
    ];
    let waits = service.budgets.as_ref().map_or([0, 0], |b| {
        [
            b.waited_user.load(std::sync::atomic::Ordering::Relaxed),
            b.waited_project.load(std::sync::atomic::Ordering::Relaxed),
        ]
    });
    let budget_waits = [("user", waits[0]), ("project", waits[1])];
    let (identity_tokens, calendar_access) = match service.identity.as_deref() {
        Some(verifier) => {
            use identity::IdentityCounts as C;
            let c = &verifier.counts;
            (
                vec![
                    ("verified", C::get(&c.verified)),
                    ("refused", C::get(&c.refused)),
                    ("unavailable", C::get(&c.unavailable)),
                ],
                vec![
                    ("owner", C::get(&c.access_owner)),
                    ("editor", C::get(&c.access_editor)),
                    ("refused", C::get(&c.access_refused)),
                ],
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    let gauges = metrics::Gauges {
        identity_tokens: &identity_tokens,
        calendar_access: &calendar_access,
        budget_waits: &budget_waits,
        calendars: count(|s| s.calendars),
        calendars_never_synced: count(|s| s.calendars - s.synced),
        calendars_needing_reauth: count(|s| s.needing_reauth),
        outbox_depth: depth,
        failed_actions: failed,
        sync_lag_max: lag.oldest_sync_at.map(|t| seconds(now - t)),
        calendars_lagging: &lagging,
        calendars_with_channel: with_channel,
        channel_expiry_min: first_channel_expiry.map(|t| seconds(t - now)),
        sync_lag: &lag_rows,
        channel_expiry: &expiry,
        notifications: &notifications,
        silent_polls: counts.silent_polls,
        calendars_sync_failing: count(|s| s.failing),
        calendars_dirty: count(|s| s.dirty),
        store_writable: service.store.writable().await.is_none(),
    };
    let body = service.scheduler.metrics().render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ready(State(service): Shared) -> Response {
    // Not ready while the store refuses writes: a trigger acknowledged now could not be
    // recorded (it would be answered 503 anyway), and the balancer should send work elsewhere.
    match service.store.writable().await {
        None => (StatusCode::OK, "ready").into_response(),
        Some(since) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"code": 503, "message": "the store does not take writes", "failingSinceMs": since}})),
        )
            .into_response(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
struct JoinQuery {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `GET /join/{meetingId}[?host=&name=]`: providers whose links point at confsync (Jitsi,
/// BigBlueButton) decide: a redirect to a freshly signed URL (never cached), or a refusal
/// (cancelled, ended). The local provider's meetings get their page.
async fn join(
    State(service): Shared,
    Path(meeting_id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<JoinQuery>,
) -> Response {
    let host = match (&service.host_key, &query.host) {
        (Some(key), Some(given)) => host_signature_ok(key, &meeting_id, given),
        _ => false,
    };
    let request = confsync_providers::JoinRequest {
        host,
        name: query
            .name
            .as_deref()
            .map(escape_short)
            .filter(|n| !n.trim().is_empty()),
    };
    match service.provider.join(&meeting_id, &request).await {
        Ok(Some(confsync_providers::JoinAnswer::Redirect(url))) => {
            return (
                StatusCode::FOUND,
                [
                    (header::LOCATION, url.as_str()),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::REFERRER_POLICY, "no-referrer"),
                ],
            )
                .into_response();
        }
        Ok(Some(confsync_providers::JoinAnswer::Refused(reason))) => {
            return (
                StatusCode::GONE,
                [(header::CACHE_CONTROL, "no-store")],
                Html(format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Meeting unavailable</title></head><body><h1>{}</h1></body></html>",
                    escape(&reason)
                )),
            )
                .into_response();
        }
        Ok(None) => {}
        Err(ProviderError::NotFound { .. }) => {
            return (
                StatusCode::NOT_FOUND,
                Html("<h1>No such meeting</h1>".to_owned()),
            )
                .into_response();
        }
        Err(e) => {
            warn!(meeting_id, error = %e, "join failed at the provider");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                Html(
                    "<h1>The meeting cannot be opened right now; try again in a moment</h1>"
                        .to_owned(),
                ),
            )
                .into_response();
        }
    }
    local_join_page(&service, &meeting_id).await
}

/// The local provider's join page: the meeting's title and time, or that it was cancelled.
async fn local_join_page(service: &Service, meeting_id: &str) -> Response {
    let meeting_id = meeting_id.to_owned();
    let meeting = match service.store.meeting(&meeting_id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Html("<h1>No such meeting</h1>".to_owned()),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html("<h1>Try again shortly</h1>".to_owned()),
            )
                .into_response();
        }
    };
    if meeting.deleted {
        return (
            StatusCode::GONE,
            Html("<h1>This meeting was cancelled</h1>".to_owned()),
        )
            .into_response();
    }
    let spec: Option<MeetingSpec> = serde_json::from_str(&meeting.spec_json).ok();
    let (title, when) = match &spec {
        Some(s) => (
            s.title.clone(),
            format!("{} to {} (UTC)", s.start.key(), s.end.key()),
        ),
        None => (String::new(), String::new()),
    };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{w}</p><p>confsync local meeting {id}</p></body></html>",
        t = escape(if title.is_empty() { "Meeting" } else { &title }),
        w = escape(&when),
        id = escape(&meeting_id)
    );
    (StatusCode::OK, Html(page)).into_response()
}

#[derive(Deserialize)]
struct OAuthStart {
    #[serde(default)]
    calendar: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    sig: Option<String>,
}

#[derive(Deserialize)]
struct OAuthCallback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn oauth_page(status: StatusCode, title: &str, text: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>confsync: {t}</title></head><body><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape(title),
        x = escape(text)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// `GET /oauth/google/start?calendar=&user=&expires=&sig=`: a start link the API minted (see
/// [`oauth::UserCalendars::start_link`]); sends the browser to Google's consent screen
/// (authorization code with PKCE, offline access). Without a valid link: 400, nothing stored.
async fn oauth_start(
    State(service): Shared,
    axum::extract::Query(query): axum::extract::Query<OAuthStart>,
) -> Response {
    let Some(oauth) = &service.oauth else {
        return oauth_page(
            StatusCode::NOT_FOUND,
            "Not available",
            "This confsync does not use per-user Google authorisation.",
        );
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let user = query.user.as_deref().filter(|u| !u.is_empty());
    let checked = match (&query.calendar, &query.expires, &query.sig) {
        (Some(calendar), Some(expires), Some(sig)) => oauth
            .check_link(calendar, user, expires, sig, now_ms)
            .map(|()| calendar.as_str()),
        _ => Err(oauth::ConnectError {
            status: 400,
            message: "sign-in starts from Google Calendar: create a confsync conference there and follow the sign-in it offers".into(),
        }),
    };
    let calendar = match checked {
        Ok(calendar) => calendar,
        Err(e) => return oauth_page(StatusCode::BAD_REQUEST, "Cannot start", &e.message),
    };
    match oauth.start(calendar, user, now_ms).await {
        Ok(url) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, url.as_str()),
                (header::CACHE_CONTROL, "no-store"),
            ],
        )
            .into_response(),
        Err(e) => {
            let mut page = oauth_page(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
                "Cannot start",
                &e.message,
            );
            if e.status == 503 {
                page.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
            }
            page
        }
    }
}

/// `GET /oauth/google/callback?code&state` (or `?error`): completes the connect, then syncs the
/// user's calendars (those that were waiting for re-authorisation included).
async fn oauth_callback(
    State(service): Shared,
    axum::extract::Query(query): axum::extract::Query<OAuthCallback>,
) -> Response {
    let Some(oauth) = &service.oauth else {
        return oauth_page(
            StatusCode::NOT_FOUND,
            "Not available",
            "This confsync does not use per-user Google authorisation.",
        );
    };
    if let Some(error) = &query.error {
        // The user declined (access_denied) or Google refused; the request is dropped.
        if let Some(state) = &query.state {
            let _ = service
                .store
                .oauth_request_take(&oauth::state_hash(state))
                .await;
        }
        return oauth_page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!(
                "Google answered: {}. Nothing was changed.",
                crate::escape_short(error)
            ),
        );
    }
    let (Some(code), Some(state)) = (query.code.as_deref(), query.state.as_deref()) else {
        return oauth_page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The callback needs `code` and `state`.",
        );
    };
    let connected = match oauth
        .callback(code, state, chrono::Utc::now().timestamp_millis())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return oauth_page(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
                "Not connected",
                &e.message,
            );
        }
    };
    // Sync what this user reaches: calendars they own, waiting ones included.
    let calendars = service.store.calendars().await.unwrap_or_default();
    for calendar in calendars {
        let owner = oauth.owner(&calendar.calendar_id).await.ok().flatten();
        if owner.as_deref() == Some(connected.user_id.as_str()) {
            if let Err(e) = service.scheduler.request_sync(&calendar.calendar_id).await {
                warn!(calendar_id = %calendar.calendar_id, error = %e, "could not record a sync request after connect; the sweep syncs it");
            }
            if let Some(channels) = service.channels.clone() {
                let calendar_id = calendar.calendar_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = channels.ensure(&calendar_id).await {
                        warn!(calendar_id, error = %e, "could not open a push channel after connect");
                    }
                });
            }
        }
    }
    oauth_page(
        StatusCode::OK,
        "Connected",
        &format!(
            "{} is connected: confsync keeps your meetings in line with your calendar. You can close this window.",
            connected.user_id
        ),
    )
}

/// A value from a request, safe to echo: printable, at most 100 characters.
fn escape_short(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}
