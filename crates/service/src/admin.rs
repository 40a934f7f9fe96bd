//! `/v1/admin`: the operator's tools, behind API keys with a scope (`confsync apikey create
//! --scope`). `read-only` and `admin` keys may list; only `admin` keys may change anything, and
//! every change is logged with the key's name.
//!
//! - `GET /v1/admin/actions?state=failed|pending&calendarId=...&limit=N` (N up to 500);
//! - `POST /v1/admin/actions/{id}/retry`: a failed (or put-off) action runs again now;
//! - `POST /v1/admin/actions/{id}/drop`: a failed or pending action is given up;
//! - `POST /v1/admin/calendars/{calendarId}/resync`: a full sync of the calendar, now;
//! - `POST /v1/admin/calendars/{calendarId}/forget`: confsync stops syncing the calendar (its
//!   push channels stopped at Google, its sync state, links, outbox rows and dead letters
//!   removed, its create intents retired; see `confsync_store::Store::forget_calendar`). The
//!   meetings stay at the provider: forgetting is not cancelling. 409 while one of its
//!   actions runs at the provider under a worker's claim, or a worker syncs it;
//! - `GET /v1/admin/provider/migration?calendarId=...`: where a move of every meeting to the
//!   current provider stands (counts);
//! - `POST /v1/admin/provider/migrate?dryRun=true&calendarId=...&limit=N` (N up to 10000, 1000
//!   by default): queues moves of meetings made by a previous provider to the current one (the
//!   recreate path), and answers the counts;
//! - `GET /v1/admin/keys`, `DELETE /v1/admin/keys/{name}`: the API keys, revoked by name.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use confsync_store::{OutboxState, StoreError};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::{ApiCaller, Service, conference_error};

type Shared = State<Arc<Service>>;

/// The admin routes (mounted under `/v1/admin`, behind the API key check).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/actions", get(list_actions))
        .route("/actions/{id}/retry", post(retry_action))
        .route("/actions/{id}/drop", post(drop_action))
        .route("/calendars/{calendarId}/resync", post(resync))
        .route("/calendars/{calendarId}/forget", post(forget))
        .route("/provider/migration", get(migration))
        .route("/provider/migrate", post(migrate))
        .route("/keys", get(list_keys))
        .route("/keys/{name}", delete(revoke_key))
}

/// An admin change to `calendar_id`: the caller's key may change things, and the id is one.
fn calendar_change(caller: &ApiCaller, calendar_id: &str) -> Result<(), Box<Response>> {
    allowed(caller, true)?;
    match crate::invalid_ids(&[(crate::IdKind::Calendar, calendar_id)]) {
        Some(invalid) => Err(Box::new(invalid)),
        None => Ok(()),
    }
}

/// Refuses a key whose scope does not allow the call: reads need `read-only` or `admin`,
/// changes need `admin`. (Boxed: the refusal is the rare path, and a bare `Response` makes the
/// `Result` large.)
fn allowed(caller: &ApiCaller, change: bool) -> Result<(), Box<Response>> {
    let ok = match caller.scope.as_str() {
        "admin" => true,
        "read-only" => !change,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Box::new(conference_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "API key {} has scope {}: {} needs an {} key",
                caller.name,
                caller.scope,
                if change {
                    "an admin change"
                } else {
                    "this listing"
                },
                if change {
                    "admin"
                } else {
                    "admin or read-only"
                }
            ),
        )))
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound { what } => conference_error(
            StatusCode::NOT_FOUND,
            "PERMANENT",
            format!("not found: {what}"),
        ),
        e => conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string()),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActionsQuery {
    state: Option<String>,
    calendar_id: Option<String>,
    limit: Option<i64>,
}

async fn list_actions(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    query: Result<Query<ActionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = allowed(&caller, false) {
        return *refused;
    }
    let Ok(Query(query)) = query else {
        return conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "query parameters: state (failed or pending), calendarId, limit (1 to 500)",
        );
    };
    let state = match query.state.as_deref().unwrap_or("failed") {
        "failed" => OutboxState::Failed,
        "pending" => OutboxState::Pending,
        _ => {
            return conference_error(
                StatusCode::BAD_REQUEST,
                "PERMANENT",
                "state must be failed or pending",
            );
        }
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "limit must be 1 to 500",
        );
    }
    match service
        .store
        .actions(state, query.calendar_id.as_deref(), limit)
        .await
    {
        Ok(rows) => {
            let items: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "conferenceId": r.conference_id,
                        "calendarId": r.calendar_id,
                        "eventId": r.event_id,
                        "kind": r.action.kind(),
                        "state": r.state.as_str(),
                        "attempts": r.attempts,
                        "notBefore": r.not_before,
                        "lastError": r.last_error,
                        "updatedAt": r.updated_at,
                    })
                })
                .collect();
            axum::Json(json!({"items": items})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn retry_action(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    Path(id): Path<i64>,
) -> Response {
    change_action(&service, &caller, id, true).await
}

async fn drop_action(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    Path(id): Path<i64>,
) -> Response {
    change_action(&service, &caller, id, false).await
}

/// Retries (`retry`) or drops a failed or pending action, as an admin key; 409 when it is done
/// or dropped already, 404 when there is no such action.
async fn change_action(service: &Service, caller: &ApiCaller, id: i64, retry: bool) -> Response {
    if let Err(refused) = allowed(caller, true) {
        return *refused;
    }
    let changed = if retry {
        service.store.retry_action(id, now_ms()).await
    } else {
        let reason = format!("dropped by admin key {}", caller.name);
        service.store.drop_action(id, &reason, now_ms()).await
    };
    let (verb, state) = if retry {
        ("retried", "pending")
    } else {
        ("dropped", "superseded")
    };
    match changed {
        Ok(true) => {
            info!(key = %caller.name, outbox_id = id, "admin: action {verb}");
            service.scheduler.drain_soon();
            axum::Json(json!({"id": id, "state": state})).into_response()
        }
        Ok(false) => conference_error(
            StatusCode::CONFLICT,
            "PERMANENT",
            format!("action {id} is done or dropped already: not {verb}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn resync(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    Path(calendar_id): Path<String>,
) -> Response {
    if let Err(refused) = calendar_change(&caller, &calendar_id) {
        return *refused;
    }
    match service.store.calendar(&calendar_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return conference_error(
                StatusCode::NOT_FOUND,
                "PERMANENT",
                "confsync does not sync this calendar",
            );
        }
        Err(e) => return store_error(e),
    }
    if let Err(e) = service.store.mark_full_sync_needed(&calendar_id).await {
        return store_error(e);
    }
    match service.scheduler.request_sync(&calendar_id).await {
        Ok(_) => {
            info!(key = %caller.name, calendar_id, "admin: full sync requested");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"calendarId": calendar_id, "fullSync": true})),
            )
                .into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn list_keys(State(service): Shared, caller: axum::Extension<ApiCaller>) -> Response {
    if let Err(refused) = allowed(&caller, false) {
        return *refused;
    }
    match service.store.api_keys().await {
        Ok(keys) => {
            let items: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({"name": k.name, "scope": k.scope, "createdAt": k.created_at, "revoked": k.revoked})
                })
                .collect();
            axum::Json(json!({"items": items})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn revoke_key(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(refused) = allowed(&caller, true) {
        return *refused;
    }
    match service.store.api_key_revoke(&name).await {
        Ok(()) => {
            info!(key = %caller.name, revoked = %name, "admin: API key revoked");
            axum::Json(json!({"name": name, "revoked": true})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn forget(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    Path(calendar_id): Path<String>,
) -> Response {
    if let Err(refused) = calendar_change(&caller, &calendar_id) {
        return *refused;
    }
    let forgotten = match service.store.forget_calendar(&calendar_id, now_ms()).await {
        Ok(forgotten) => forgotten,
        Err(StoreError::NotFound { .. }) => {
            return conference_error(
                StatusCode::NOT_FOUND,
                "PERMANENT",
                "confsync does not sync this calendar",
            );
        }
        Err(StoreError::Conflict { detail, .. }) => {
            return conference_error(
                StatusCode::CONFLICT,
                "TEMPORARY",
                format!("calendar {calendar_id} not forgotten: {detail}"),
            );
        }
        Err(e) => return store_error(e),
    };
    // Stopped at Google now; one that fails is stopped as an orphan when it next notifies
    // (its record is gone), or expires by itself.
    let stopped = match &service.channels {
        Some(channels) => channels.stop_forgotten(&forgotten.live_channels).await,
        None => 0,
    };
    info!(
        key = %caller.name,
        calendar_id,
        links = forgotten.links,
        pending = forgotten.pending_rows,
        channels_stopped = stopped,
        "admin: calendar forgotten (its meetings stay at the provider)"
    );
    axum::Json(json!({
        "calendarId": calendar_id,
        "forgotten": true,
        "links": forgotten.links,
        "meetingsKept": forgotten.live_links,
        "outboxRows": forgotten.outbox_rows,
        "pendingActionsDropped": forgotten.pending_rows,
        "createIntentsRetired": forgotten.intents,
        "deadLetters": forgotten.dead_letters,
        "channelsStopped": stopped,
        "channelsLeftToExpire": forgotten.live_channels.len() - stopped,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MigrateQuery {
    dry_run: Option<bool>,
    calendar_id: Option<String>,
    limit: Option<i64>,
}

fn moves_json(
    service: &Service,
    moves: &confsync_store::ProviderMoves,
    calendar_id: Option<&str>,
) -> serde_json::Value {
    let engine = service.scheduler.engine();
    json!({
        "provider": engine.provider.name(),
        "previousProviders": engine.previous_providers(),
        "calendarId": calendar_id,
        "toMove": moves.to_move,
        "notInCalendarYet": moves.not_in_calendar_yet,
        "queued": moves.queued,
        "moved": moves.moved,
        "failed": moves.failed,
        "ended": moves.ended,
        "unreachable": moves.unreachable,
    })
}

#[allow(clippy::result_large_err)] // as `allowed`: the refusal is the answer
fn migrate_query(
    query: Result<Query<MigrateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<MigrateQuery, Response> {
    let Ok(Query(query)) = query else {
        return Err(conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "query parameters: dryRun (true or false), calendarId, limit (1 to 10000)",
        ));
    };
    if let Some(calendar_id) = &query.calendar_id
        && let Some(invalid) = crate::invalid_ids(&[(crate::IdKind::Calendar, calendar_id)])
    {
        return Err(invalid);
    }
    if !(1..=10_000).contains(&query.limit.unwrap_or(1_000)) {
        return Err(conference_error(
            StatusCode::BAD_REQUEST,
            "PERMANENT",
            "limit must be 1 to 10000",
        ));
    }
    Ok(query)
}

async fn migration(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    query: Result<Query<MigrateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = allowed(&caller, false) {
        return *refused;
    }
    let query = match migrate_query(query) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let calendar_id = query.calendar_id.as_deref();
    match service
        .scheduler
        .engine()
        .provider_moves(calendar_id, now_ms())
        .await
    {
        Ok(moves) => axum::Json(moves_json(&service, &moves, calendar_id)).into_response(),
        Err(confsync_engine::EngineError::Store(e)) => store_error(e),
        Err(e) => conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string()),
    }
}

/// Queues moves of meetings made by a previous provider to the current one (none with
/// `dryRun=true`), and answers where the move stands.
async fn migrate(
    State(service): Shared,
    caller: axum::Extension<ApiCaller>,
    query: Result<Query<MigrateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = allowed(&caller, true) {
        return *refused;
    }
    let query = match migrate_query(query) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let calendar_id = query.calendar_id.as_deref();
    let dry_run = query.dry_run.unwrap_or(false);
    let engine = service.scheduler.engine();
    let queued = if dry_run {
        0
    } else {
        match engine
            .queue_provider_moves(calendar_id, query.limit.unwrap_or(1_000), now_ms())
            .await
        {
            Ok(queued) => queued.len(),
            Err(confsync_engine::EngineError::Store(e)) => return store_error(e),
            Err(e) => {
                return conference_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TEMPORARY",
                    e.to_string(),
                );
            }
        }
    };
    if queued > 0 {
        info!(key = %caller.name, queued, provider = engine.provider.name(), "admin: meetings queued to move to the current provider");
        service.scheduler.drain_soon();
    }
    match engine.provider_moves(calendar_id, now_ms()).await {
        Ok(moves) => {
            let mut answer = moves_json(&service, &moves, calendar_id);
            answer["dryRun"] = json!(dry_run);
            answer["queuedNow"] = json!(queued);
            axum::Json(answer).into_response()
        }
        Err(confsync_engine::EngineError::Store(e)) => store_error(e),
        Err(e) => conference_error(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARY", e.to_string()),
    }
}
