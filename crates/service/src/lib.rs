//! confsync as a service: the API the Apps Script add-on calls, the sync scheduler, and the
//! join links of the built-in local provider.
//!
//! - `POST /v1/conferences` creates a meeting for an event (which may not exist yet), links it,
//!   starts syncing the calendar, and answers in Calendar's conferenceData shape;
//! - `POST /v1/calendars/{calendarId}/sync` is what the add-on's EventUpdated trigger calls;
//! - `GET /v1/conferences/{id}`, `GET /v1/status`;
//! - `GET /join/{meetingId}`: the local provider's join page;
//! - `GET /`: the status page; `POST /webhooks/google`: push notifications;
//! - `/metrics`, `/healthz`, `/readyz`.
//!
//! The /v1 API needs `Authorization: Bearer <api key>`; keys are stored as SHA-256 hashes.

pub mod channels;
pub mod metrics;
pub mod scheduler;
pub mod status_page;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::Link;
use confsync_providers::{ConferenceProvider, ProviderError};
use confsync_store::{PlannedChange, Store};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

pub use channels::{ChannelConfig, Channels};
pub use scheduler::{Scheduler, SchedulerConfig};

/// What the service needs.
pub struct Service {
    pub store: Store,
    pub provider: Arc<dyn ConferenceProvider>,
    pub scheduler: Scheduler,
    /// `conferenceSolution.name` answered to the add-on (one of the recognised names).
    pub solution_name: String,
    /// The add-on parameter that carries our conference id (the recogniser's key).
    pub parameter_key: String,
    /// Push channels; None when the service has no public URL (the sweep and the add-on's
    /// trigger still keep calendars in sync).
    pub channels: Option<Arc<Channels>>,
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
    let v1 = Router::new()
        .route("/conferences", post(create_conference))
        .route("/conferences/{id}", get(get_conference))
        .route("/calendars/{calendarId}/sync", post(sync_calendar))
        .route("/status", get(status))
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            require_api_key,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/join/{meetingId}", get(join))
        .route("/webhooks/google", post(google_webhook))
        .route("/", get(status_page::page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(service)
}

fn conference_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"conferenceErrorType": kind, "message": message.into()}})),
    )
        .into_response()
}

async fn require_api_key(State(service): Shared, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return conference_error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION",
            "missing API key: send Authorization: Bearer <key>",
        );
    };
    match service.store.api_key_by_hash(&hash_api_key(key)).await {
        Ok(Some(_name)) => next.run(request).await,
        Ok(None) => conference_error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION",
            "unknown or revoked API key",
        ),
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateConference {
    calendar_id: String,
    event_id: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    solution_id: Option<String>,
}

/// The conference in Calendar's conferenceData shape (what ConferenceDataBuilder takes).
fn conference_data(service: &Service, conference_id: &str, join_url: &str) -> Value {
    let label = join_url.split("://").nth(1).unwrap_or(join_url);
    json!({
        "conferenceId": conference_id,
        "conferenceSolution": {"key": {"type": "addOn"}, "name": service.solution_name},
        "entryPoints": [{"entryPointType": "video", "uri": join_url, "label": label}],
        "parameters": {"addOnParameters": {"parameters": {service.parameter_key.clone(): conference_id}}},
        "notes": "Join with the link above.",
    })
}

async fn create_conference(State(service): Shared, body: axum::body::Bytes) -> Response {
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
    if request.calendar_id.trim().is_empty() || request.event_id.trim().is_empty() {
        return conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "calendarId and eventId must not be empty",
        );
    }
    let _ = &request.solution_id; // one solution today; kept for the add-on's manifest ids
    let (calendar_id, event_id) = (request.calendar_id.as_str(), request.event_id.as_str());
    // Idempotent per event: a live link for this event answers the same conference.
    match existing(&service, calendar_id, event_id).await {
        Ok(Some(answer)) => return (StatusCode::OK, axum::Json(answer)).into_response(),
        Ok(None) => {}
        Err(e) => return conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e),
    }
    // The event may not exist yet: the meeting starts from a placeholder and the calendar's
    // first sync brings it in line with the saved event.
    let now = chrono::Utc::now();
    let placeholder = MeetingSpec {
        title: String::new(),
        description: String::new(),
        start: When::At(now),
        end: When::At(now),
        time_zone: None,
        recurrence: Vec::new(),
        attendees: Vec::new(),
        organizer: None,
    };
    let key = format!(
        "create:{calendar_id}:{event_id}:{}",
        request.request_id.as_deref().unwrap_or("-")
    );
    let meeting = match service.provider.create(&placeholder, &key).await {
        Ok(m) => m,
        Err(e) => return provider_error(e),
    };
    let link = Link {
        conference_id: meeting.meeting_id.clone(),
        provider: service.provider.name().to_owned(),
        calendar_id: calendar_id.to_owned(),
        event_id: event_id.to_owned(),
        spec: placeholder,
        last_etag_seen: None,
        last_etag_written: None,
        occurrences: Default::default(),
        deleted: false,
        join_url: Some(meeting.join_url.clone()),
    };
    let now_ms = now.timestamp_millis();
    let change = PlannedChange {
        link,
        actions: Vec::new(),
        supersede_deletes: false,
        not_before_ms: now_ms,
    };
    if let Err(e) = service
        .store
        .commit_page(calendar_id, &[change], &[], None, now_ms)
        .await
    {
        // Another request linked this event meanwhile: answer its conference.
        if e.is_conflict()
            && let Ok(Some(answer)) = existing(&service, calendar_id, event_id).await
        {
            return (StatusCode::OK, axum::Json(answer)).into_response();
        }
        return conference_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARY",
            format!("could not record the conference: {e}"),
        );
    }
    info!(calendar_id, event_id, conference_id = %meeting.meeting_id, "conference created");
    // The first conference on a calendar starts its syncing (later ones coalesce into it) and
    // its push channel (opened once, in the background: the add-on is waiting).
    service.scheduler.mark_dirty(calendar_id);
    if let Some(channels) = service.channels.clone() {
        let calendar_id = calendar_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = channels.ensure(&calendar_id).await {
                warn!(calendar_id, error = %e, "could not open a push channel; the sweep keeps the calendar in sync");
            }
        });
    }
    (
        StatusCode::OK,
        axum::Json(conference_data(
            &service,
            &meeting.meeting_id,
            &meeting.join_url,
        )),
    )
        .into_response()
}

async fn existing(
    service: &Service,
    calendar_id: &str,
    event_id: &str,
) -> Result<Option<Value>, String> {
    let links = service
        .store
        .links(calendar_id, &[event_id.to_owned()], &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .find(|l| l.calendar_id == calendar_id && l.event_id == event_id && !l.deleted)
        .and_then(|l| {
            l.join_url
                .clone()
                .map(|url| conference_data(service, &l.conference_id, &url))
        }))
}

fn provider_error(e: ProviderError) -> Response {
    let (status, kind) = match &e {
        ProviderError::Transient { .. } | ProviderError::RateLimited { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY")
        }
        ProviderError::Reauth { .. } => (StatusCode::UNAUTHORIZED, "AUTHENTICATION"),
        ProviderError::Permanent { .. } | ProviderError::Conflict { .. } => {
            (StatusCode::BAD_GATEWAY, "PERMANENT")
        }
        ProviderError::NotFound { .. } => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
    };
    conference_error(status, kind, e.to_string())
}

async fn get_conference(State(service): Shared, Path(id): Path<String>) -> Response {
    match service.store.link(&id).await {
        Ok(Some(link)) => {
            let mut answer = link
                .join_url
                .as_deref()
                .map(|url| conference_data(&service, &id, url))
                .unwrap_or_else(|| json!({"conferenceId": id}));
            answer["calendarId"] = json!(link.calendar_id);
            answer["eventId"] = json!(link.event_id);
            answer["deleted"] = json!(link.deleted);
            answer["meeting"] = json!(link.spec);
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

async fn sync_calendar(State(service): Shared, Path(calendar_id): Path<String>) -> Response {
    match service.store.calendar(&calendar_id).await {
        Ok(Some(_)) => {
            service.scheduler.mark_dirty(&calendar_id);
            (StatusCode::ACCEPTED, axum::Json(json!({"calendarId": calendar_id, "scheduled": true}))).into_response()
        }
        // Calendars start syncing with their first conference; an unknown one has nothing of ours.
        Ok(None) => (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": format!("calendar {calendar_id} has no conferences of ours")}}))).into_response(),
        Err(e) => conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string()),
    }
}

async fn status(State(service): Shared) -> Response {
    let calendars = match service.store.calendars().await {
        Ok(c) => c,
        Err(e) => {
            return conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string());
        }
    };
    let activity = service.scheduler.activity();
    let failures = service
        .store
        .failures(20)
        .await
        .map(|f| f.len())
        .unwrap_or(0);
    let depth = service.store.outbox_depth().await.unwrap_or(-1);
    let calendars: Vec<Value> = calendars
        .iter()
        .map(|c| {
            let a = activity.iter().find(|a| a.calendar_id == c.calendar_id);
            json!({
                "calendarId": c.calendar_id,
                "synced": c.sync_token.is_some(),
                "needsFullSync": c.needs_full_sync,
                "lastSyncAt": c.last_sync_at,
                "lastError": c.last_error,
                "syncs": a.map(|a| a.syncs).unwrap_or(0),
                "pending": a.is_some_and(|a| a.pending || a.running),
            })
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let channels: Vec<Value> = match service.store.live_channels(now).await {
        Ok(live) => live
            .iter()
            .map(|c| json!({"calendarId": c.calendar_id, "channelId": c.channel_id, "expiresAt": c.expiration_ms}))
            .collect(),
        Err(_) => Vec::new(),
    };
    let webhooks = service.channels.as_ref().map(|c| json!(c.counts()));
    let body = json!({"calendars": calendars, "channels": channels, "webhooks": webhooks, "outboxDepth": depth, "failedActions": failures});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn google_webhook(State(service): Shared, headers: axum::http::HeaderMap) -> Response {
    match &service.channels {
        Some(channels) => {
            let (status, message) = channels.on_notification(&headers).await;
            (status, message).into_response()
        }
        None => (StatusCode::NOT_FOUND, "push channels are not configured").into_response(),
    }
}

/// Prometheus metrics. No secrets: calendar ids only (the operator's own data).
async fn metrics(State(service): Shared) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    let depth = service.store.outbox_depth().await.unwrap_or(-1);
    let failed = service
        .store
        .failures(1000)
        .await
        .map(|f| f.len())
        .unwrap_or(0);
    let calendars = service.store.calendars().await.unwrap_or_default();
    let lag: Vec<(String, f64)> = calendars
        .iter()
        .filter_map(|c| {
            c.last_sync_at
                .map(|t| (c.calendar_id.clone(), (now - t) as f64 / 1000.0))
        })
        .collect();
    let channels = service.store.live_channels(now).await.unwrap_or_default();
    let expiry: Vec<(String, f64)> = channels
        .iter()
        .map(|c| {
            (
                c.calendar_id.clone(),
                (c.expiration_ms - now) as f64 / 1000.0,
            )
        })
        .collect();
    let counts = service
        .channels
        .as_ref()
        .map(|c| c.counts())
        .unwrap_or_default();
    let notifications = [
        ("received", counts.received),
        ("rejected", counts.rejected),
        ("orphan", counts.orphans),
    ];
    let gauges = metrics::Gauges {
        outbox_depth: depth,
        failed_actions: failed,
        sync_lag: &lag,
        channel_expiry: &expiry,
        notifications: &notifications,
    };
    let body = service.scheduler.metrics().render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ready(State(service): Shared) -> Response {
    match service.store.outbox_depth().await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The local provider's join page: the meeting's title and time, or that it was cancelled.
async fn join(State(service): Shared, Path(meeting_id): Path<String>) -> Response {
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
