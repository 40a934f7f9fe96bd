//! The HTTP surface: Calendar v3 routes, the OAuth endpoints and the admin API.
//!
//! Every v3 handler starts with [`begin`], which counts the call, applies injected faults,
//! authenticates the bearer token and charges the user's quota, in that order (a fault can hit
//! any request, as Google's backend errors do). Handlers then take the world lock for one
//! operation and release it before answering.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::acl::AclQuery;
use crate::calendar_list::CalendarListQuery;
use crate::error::{ApiError, ApiResult, json_body};
use crate::faults::FaultSpec;
use crate::list::{ListQuery, bool_param};
use crate::push::PushHub;
use crate::store::{WriteKind, WriteOptions};
use crate::{Shared, schema};

type Ctx = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    let v3 = Router::new()
        .route("/users/me/calendarList", get(calendar_list))
        .route(
            "/users/me/calendarList/{calendarId}",
            get(calendar_list_get),
        )
        .route("/calendars", post(calendars_insert))
        .route("/calendars/{calendarId}", get(calendars_get))
        .route(
            "/calendars/{calendarId}/acl",
            get(acl_list).post(acl_insert),
        )
        .route(
            "/calendars/{calendarId}/acl/{ruleId}",
            get(acl_get)
                .put(acl_update)
                .patch(acl_patch)
                .delete(acl_delete),
        )
        .route(
            "/calendars/{calendarId}/events",
            get(events_list).post(events_insert),
        )
        .route("/calendars/{calendarId}/events/import", post(events_import))
        .route("/calendars/{calendarId}/events/watch", post(events_watch))
        .route(
            "/calendars/{calendarId}/events/{eventId}",
            get(events_get)
                .put(events_update)
                .patch(events_patch)
                .delete(events_delete),
        )
        .route(
            "/calendars/{calendarId}/events/{eventId}/instances",
            get(events_instances),
        )
        .route(
            "/calendars/{calendarId}/events/{eventId}/move",
            post(events_move),
        )
        .route("/channels/stop", post(channels_stop))
        // `fields` partial responses and gzip, on every v3 answer (see `response.rs`).
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::response::partial_and_gzip,
        ));
    let admin = Router::new()
        .route("/reset", post(admin_reset))
        .route("/users", post(admin_create_user))
        .route("/users/{email}/calendars", post(admin_create_calendar))
        .route(
            "/users/{email}/calendarList/{calendarId}",
            post(admin_calendar_list_entry),
        )
        .route("/users/{email}/revoke", post(admin_revoke))
        .route("/tokens", post(admin_tokens))
        .route("/identityTokens", post(admin_identity_token))
        .route("/identityKeys/rotate", post(admin_rotate_identity_keys))
        .route("/service-accounts", post(admin_service_account))
        .route("/faults", post(admin_add_fault).delete(admin_clear_faults))
        .route(
            "/calendars/{calendarId}/expire-sync-tokens",
            post(admin_expire_tokens),
        )
        .route("/config", axum::routing::put(admin_config))
        .route("/conferences/resolve", post(admin_resolve_conferences))
        .route("/clock", post(admin_clock))
        .route("/channels", get(admin_channels))
        .route("/notifications", get(admin_notifications))
        .route("/stats", get(admin_stats));
    Router::new()
        .nest("/calendar/v3", v3)
        .nest("/emulator", admin)
        .route("/token", post(token))
        .route("/o/oauth2/v2/auth", get(authorize))
        .route("/o/oauth2/auth", get(authorize))
        .route("/oauth2/v3/certs", get(certs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            date_header,
        ))
        .with_state(shared)
}

/// Every answer carries `Date` (RFC 7231's IMF-fixdate) as Google's do, from the emulator's
/// clock: moving the clock moves it, so clients' skew checks can be tested.
async fn date_header(State(shared): Ctx, req: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let date = shared
        .clock
        .now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "global",
        "httpMethodNotAllowed",
        "The HTTP method is not allowed for this resource.",
    )
}

fn params_of(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Counts, faults, authentication and quota for one v3 call; returns the acting user.
fn begin<'a>(
    shared: &'a Shared,
    method_id: &'a str,
    req: &Request,
    params: &[(String, String)],
) -> impl std::future::Future<Output = ApiResult<String>> + Send + 'a {
    // Only owned data may cross the awaits below (a request body is not Sync).
    let http_method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| param(params, "access_token"))
        .or_else(|| param(params, "oauth_token"))
        .map(str::to_owned);
    async move { authenticate(shared, method_id, &http_method, &path, bearer).await }
}

async fn authenticate(
    shared: &Shared,
    method_id: &str,
    http_method: &str,
    path: &str,
    bearer: Option<String>,
) -> ApiResult<String> {
    *shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(method_id.to_owned())
        .or_default() += 1;
    let verdict = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .judge(method_id, http_method, path);
    if verdict.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(verdict.latency_ms)).await;
    }
    if let Some(error) = verdict.error {
        return Err(error);
    }
    let Some(token) = bearer else {
        return Err(ApiError::new(401, "global", "required", "Login Required.")
            .at("header", "Authorization"));
    };
    let token = token.as_str();
    let config = shared.config();
    let now = shared.clock.now();
    let user = shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .user_for(token, now, config.dev_mode)
        .ok_or_else(ApiError::unauthorized)?;
    shared
        .world()
        .ensure_user(&user, None)
        .map_err(|_| ApiError::unauthorized())?;
    if let Some(limit) = config.quota_per_user_per_minute
        && !shared
            .quota
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&user, now, limit)
    {
        return Err(ApiError::rate_limited(config.quota_status));
    }
    Ok(user)
}

async fn read_body(shared: &Shared, body: Body) -> ApiResult<Bytes> {
    let limit = shared.config().max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

async fn read_json(shared: &Shared, body: Body) -> ApiResult<Value> {
    let bytes = read_body(shared, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::required("resource"));
    }
    serde_json::from_slice(&bytes).map_err(ApiError::parse_error)
}

fn ok_json(body: String) -> Response {
    json_body(body).into_response()
}

fn if_match(req: &Request) -> Option<String> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn write_options(req: &Request, params: &[(String, String)]) -> ApiResult<WriteOptions> {
    let version = match param(params, "conferenceDataVersion") {
        None => 0,
        Some("0") => 0,
        Some("1") => 1,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid value for conferenceDataVersion: \"{other}\" (expected 0 or 1)"
            ))
            .at("parameter", "conferenceDataVersion"));
        }
    };
    Ok(WriteOptions {
        conference_data_version: version,
        if_match: if_match(req),
    })
}

// --- calendars ---------------------------------------------------------------------------

async fn calendar_list(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.calendarList.list", &req, &params).await?;
    let query = CalendarListQuery::parse(&user, &params)?;
    let max_age = shared.config().sync_token_max_age;
    let now = shared.clock.now();
    let body = shared
        .world()
        .list_calendar_list(&user, &query, now, max_age)?;
    Ok(ok_json(body))
}

async fn calendar_list_get(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.calendarList.get", &req, &params).await?;
    let entry = shared.world().calendar_list_get(&user, &calendar_id)?;
    Ok(ok_json(entry.to_string()))
}

async fn calendars_get(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.calendars.get", &req, &params).await?;
    let world = shared.world();
    let id = world.calendar_visible(&user, &calendar_id)?;
    Ok(ok_json(world.calendar_json(&id)?.to_string()))
}

async fn calendars_insert(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.calendars.insert", &req, &params).await?;
    let body = read_json(&shared, req.into_body()).await?;
    schema::validate("Calendar", &body)?;
    let summary = body.get("summary").and_then(Value::as_str).unwrap_or("");
    let mut world = shared.world();
    let id = world.create_calendar(&user, summary, body.get("timeZone").and_then(Value::as_str))?;
    Ok(ok_json(world.calendar_json(&id)?.to_string()))
}

// --- events ------------------------------------------------------------------------------

async fn events_list(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.list", &req, &params).await?;
    let query = ListQuery::parse(&calendar_id, &params)?;
    let max_age = shared.config().sync_token_max_age;
    let now = shared.clock.now();
    let world = shared.world();
    let id = world.calendar_for_read(&user, &calendar_id)?;
    let body = world.list_events(&id, &query, now, max_age)?;
    drop(world);
    Ok(ok_json(body))
}

async fn events_instances(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.instances", &req, &params).await?;
    let query = ListQuery::parse(&format!("{calendar_id}/{event_id}"), &params)?;
    let now = shared.clock.now();
    let world = shared.world();
    let id = world.calendar_for_read(&user, &calendar_id)?;
    let body = world.list_instances(&id, &event_id, &query, now)?;
    Ok(ok_json(body))
}

async fn events_get(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.get", &req, &params).await?;
    let (body, etag) = {
        let world = shared.world();
        let id = world.calendar_for_read(&user, &calendar_id)?;
        world.get_event(&id, &event_id)?
    };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag || v == "*");
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let mut response = ok_json(body);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

async fn insert_like(
    shared: Arc<Shared>,
    calendar_id: String,
    req: Request,
    kind: WriteKind,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let method = if kind == WriteKind::Import {
        "calendar.events.import"
    } else {
        "calendar.events.insert"
    };
    let user = begin(&shared, method, &req, &params).await?;
    let opts = write_options(&req, &params)?;
    let body = read_json(&shared, req.into_body()).await?;
    let now = shared.clock.now();
    let mut world = shared.world();
    let id = world.calendar_for_write(&user, &calendar_id)?;
    let result = world.insert_event(now, &id, body, kind, &opts);
    shared.flush_notifications(&mut world);
    Ok(ok_json(result?))
}

async fn events_insert(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    insert_like(shared, calendar_id, req, WriteKind::Insert).await
}

async fn events_import(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    insert_like(shared, calendar_id, req, WriteKind::Import).await
}

async fn write_like(
    shared: Arc<Shared>,
    calendar_id: String,
    event_id: String,
    req: Request,
    kind: WriteKind,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let method = if kind == WriteKind::Patch {
        "calendar.events.patch"
    } else {
        "calendar.events.update"
    };
    let user = begin(&shared, method, &req, &params).await?;
    let opts = write_options(&req, &params)?;
    let body = read_json(&shared, req.into_body()).await?;
    let now = shared.clock.now();
    let mut world = shared.world();
    let id = world.calendar_for_write(&user, &calendar_id)?;
    let result = world.write_event(now, &id, &event_id, body, kind, &opts);
    shared.flush_notifications(&mut world);
    Ok(ok_json(result?))
}

async fn events_update(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    write_like(shared, calendar_id, event_id, req, WriteKind::Update).await
}

async fn events_patch(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    write_like(shared, calendar_id, event_id, req, WriteKind::Patch).await
}

async fn events_delete(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.delete", &req, &params).await?;
    let wanted = if_match(&req);
    let now = shared.clock.now();
    let mut world = shared.world();
    let id = world.calendar_for_write(&user, &calendar_id)?;
    let result = world.delete_event(now, &id, &event_id, wanted.as_deref());
    shared.flush_notifications(&mut world);
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn events_move(
    State(shared): Ctx,
    Path((calendar_id, event_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.move", &req, &params).await?;
    let destination = param(&params, "destination")
        .ok_or_else(|| ApiError::required("destination"))?
        .to_owned();
    let now = shared.clock.now();
    let mut world = shared.world();
    // Moving changes both calendars: writer access to each.
    let source = world.calendar_for_write(&user, &calendar_id)?;
    let dest = world.calendar_for_write(&user, &destination)?;
    let result = world.move_event(now, &source, &event_id, &dest);
    shared.flush_notifications(&mut world);
    Ok(ok_json(result?))
}

async fn events_watch(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.events.watch", &req, &params).await?;
    let body = read_json(&shared, req.into_body()).await?;
    schema::validate("Channel", &body)?;
    let watch = PushHub::parse_watch(&body)?;
    let (id, resource_id) = {
        let world = shared.world();
        let id = world.calendar_for_read(&user, &calendar_id)?;
        let resource_id = world.calendar(&id)?.resource_id.clone();
        (id, resource_id)
    };
    let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let resource_uri = format!(
        "{}calendar/v3/calendars/{encoded}/events?alt=json",
        shared.base_url()
    );
    let channel = shared.push.watch(
        watch,
        &user,
        &id,
        &resource_id,
        resource_uri,
        shared.clock.now(),
    )?;
    Ok(ok_json(channel.to_string()))
}

async fn channels_stop(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.channels.stop", &req, &params).await?;
    let body = read_json(&shared, req.into_body()).await?;
    schema::validate("Channel", &body)?;
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::required("id"))?;
    let resource_id = body
        .get("resourceId")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::required("resourceId"))?;
    shared.push.stop(id, resource_id, &user)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- acl ---------------------------------------------------------------------------------
//
// Sharing (see `acl.rs`): reading the ACL needs role writer, changing it owner; a caller who
// cannot see the calendar gets 404, one whose role is too weak 403 `requiredAccessLevel`.

/// `sendNotifications` is accepted (and must be a boolean); the emulator sends no mail.
fn check_send_notifications(params: &[(String, String)]) -> ApiResult<()> {
    if let Some(value) = param(params, "sendNotifications") {
        bool_param("sendNotifications", value)?;
    }
    Ok(())
}

async fn acl_list(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.acl.list", &req, &params).await?;
    let query = AclQuery::parse(&user, &calendar_id, &params)?;
    let max_age = shared.config().sync_token_max_age;
    let now = shared.clock.now();
    let body = shared
        .world()
        .acl_list(&user, &calendar_id, &query, now, max_age)?;
    Ok(ok_json(body))
}

async fn acl_get(
    State(shared): Ctx,
    Path((calendar_id, rule_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.acl.get", &req, &params).await?;
    let body = shared.world().acl_get(&user, &calendar_id, &rule_id)?;
    Ok(ok_json(body))
}

async fn acl_insert(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.acl.insert", &req, &params).await?;
    check_send_notifications(&params)?;
    let body = read_json(&shared, req.into_body()).await?;
    let rule = shared.world().acl_insert(&user, &calendar_id, body)?;
    Ok(ok_json(rule))
}

async fn acl_write_like(
    shared: Arc<Shared>,
    calendar_id: String,
    rule_id: String,
    req: Request,
    patch: bool,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let method = if patch {
        "calendar.acl.patch"
    } else {
        "calendar.acl.update"
    };
    let user = begin(&shared, method, &req, &params).await?;
    check_send_notifications(&params)?;
    let body = read_json(&shared, req.into_body()).await?;
    let rule = shared
        .world()
        .acl_update(&user, &calendar_id, &rule_id, body, patch)?;
    Ok(ok_json(rule))
}

async fn acl_update(
    State(shared): Ctx,
    Path((calendar_id, rule_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    acl_write_like(shared, calendar_id, rule_id, req, false).await
}

async fn acl_patch(
    State(shared): Ctx,
    Path((calendar_id, rule_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    acl_write_like(shared, calendar_id, rule_id, req, true).await
}

async fn acl_delete(
    State(shared): Ctx,
    Path((calendar_id, rule_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let params = params_of(&req);
    let user = begin(&shared, "calendar.acl.delete", &req, &params).await?;
    shared.world().acl_delete(&user, &calendar_id, &rule_id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- OAuth -------------------------------------------------------------------------------

fn oauth_error(e: crate::auth::OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, json_body(e.body().to_string())).into_response()
}

async fn token(State(shared): Ctx, req: Request) -> Response {
    let bytes = match read_body(&shared, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let config = shared.config();
    let token_url = format!("{}token", shared.base_url());
    let now = shared.clock.now();
    let result = shared.auth.lock().unwrap_or_else(|p| p.into_inner()).token(
        &form,
        now,
        config.dev_mode,
        &token_url,
    );
    match result {
        Ok((email, issued)) => {
            if let Err(e) = shared.world().ensure_user(&email, None) {
                return e.into_response();
            }
            ok_json(issued.body().to_string())
        }
        Err(e) => oauth_error(e),
    }
}

async fn authorize(State(shared): Ctx, req: Request) -> Response {
    let params: HashMap<String, String> = params_of(&req).into_iter().collect();
    let now = shared.clock.now();
    let result = shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .authorize(&params, now);
    match result {
        Ok(code) => {
            let redirect = &params["redirect_uri"];
            let mut target = reqwest::Url::parse(redirect).ok();
            match target.as_mut() {
                Some(url) => {
                    url.query_pairs_mut().append_pair("code", &code);
                    if let Some(state) = params.get("state") {
                        url.query_pairs_mut().append_pair("state", state);
                    }
                    let mut response = StatusCode::FOUND.into_response();
                    if let Ok(value) = HeaderValue::from_str(url.as_str()) {
                        response.headers_mut().insert(header::LOCATION, value);
                    }
                    response
                }
                None => oauth_error(crate::auth::OAuthError {
                    status: 400,
                    error: "invalid_request",
                    description: "redirect_uri is not a URL".into(),
                }),
            }
        }
        Err(e) => oauth_error(e),
    }
}

/// `GET /oauth2/v3/certs`: the keys ID tokens are signed with, as a JWKS, cacheable like
/// Google's.
async fn certs(State(shared): Ctx) -> Response {
    *shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry("oauth2.certs".to_owned())
        .or_default() += 1;
    let jwks = shared
        .identity
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .jwks();
    match jwks {
        Ok(jwks) => {
            let mut response = ok_json(jwks.to_string());
            let cache = format!(
                "public, max-age={}, must-revalidate, no-transform",
                crate::identity::CERTS_MAX_AGE_SECONDS
            );
            if let Ok(value) = HeaderValue::from_str(&cache) {
                response.headers_mut().insert(header::CACHE_CONTROL, value);
            }
            response
        }
        Err(e) => ApiError::new(500, "global", "backendError", e).into_response(),
    }
}

// --- admin -------------------------------------------------------------------------------

fn admin_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ApiResult<T> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("Invalid admin request: {e}")))
}

async fn admin_body<T: for<'de> Deserialize<'de>>(shared: &Shared, req: Request) -> ApiResult<T> {
    let bytes = read_body(shared, req.into_body()).await?;
    admin_json(&bytes)
}

async fn admin_reset(State(shared): Ctx) -> Response {
    {
        let mut world = shared.world();
        let config = shared.config();
        let key = crate::ids::secret(32);
        *world = crate::store::World::new(config.seed, key.as_bytes());
        world.conference_create_pending = config.conference_create_pending;
    }
    *shared.auth.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    shared
        .quota
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    shared.push.reset();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUser {
    email: String,
    display_name: Option<String>,
}

async fn admin_create_user(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let body: NewUser = admin_body(&shared, req).await?;
    let mut world = shared.world();
    let email = world
        .ensure_user(&body.email, body.display_name.as_deref())?
        .email
        .clone();
    if let Some(name) = body.display_name
        && let Some(user) = world.users.get_mut(&email)
    {
        user.display_name = Some(name);
    }
    Ok(ok_json(
        json!({"email": email, "calendarId": email}).to_string(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewCalendar {
    summary: String,
    time_zone: Option<String>,
}

async fn admin_create_calendar(
    State(shared): Ctx,
    Path(email): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let body: NewCalendar = admin_body(&shared, req).await?;
    let mut world = shared.world();
    let owner = world.ensure_user(&email, None)?.email.clone();
    let id = world.create_calendar(&owner, &body.summary, body.time_zone.as_deref())?;
    Ok(ok_json(world.calendar_json(&id)?.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CalendarListEntryChange {
    hidden: Option<bool>,
    deleted: Option<bool>,
}

/// Hides/shows (`hidden`) or removes/re-adds (`deleted`) a calendar list entry.
async fn admin_calendar_list_entry(
    State(shared): Ctx,
    Path((email, calendar_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let body: CalendarListEntryChange = admin_body(&shared, req).await?;
    let mut world = shared.world();
    let user = email.trim().to_ascii_lowercase();
    let entry = world.set_calendar_list_entry(&user, &calendar_id, body.hidden, body.deleted)?;
    Ok(ok_json(entry.to_string()))
}

async fn admin_revoke(State(shared): Ctx, Path(email): Path<String>) -> Response {
    let revoked = shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .revoke_user(&email.to_ascii_lowercase());
    ok_json(json!({"revoked": revoked}).to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewTokens {
    email: String,
    expires_in: Option<i64>,
}

/// The longest access-token lifetime `POST /emulator/tokens` issues: ten years.
const MAX_TOKEN_LIFETIME_SECONDS: i64 = 10 * 366 * 86_400;

async fn admin_tokens(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let body: NewTokens = admin_body(&shared, req).await?;
    let lifetime = body.expires_in.unwrap_or(crate::auth::ACCESS_TOKEN_SECONDS);
    if !(1..=MAX_TOKEN_LIFETIME_SECONDS).contains(&lifetime) {
        return Err(admin_invalid(
            "expiresIn",
            format!(
                "expiresIn must be between 1 and {MAX_TOKEN_LIFETIME_SECONDS} seconds, not {lifetime}"
            ),
        ));
    }
    let duration = chrono::Duration::try_seconds(lifetime)
        .ok_or_else(|| admin_invalid("expiresIn", "expiresIn is out of range"))?;
    let email = shared.world().ensure_user(&body.email, None)?.email.clone();
    let now = shared.clock.now();
    let mut auth = shared.auth.lock().unwrap_or_else(|p| p.into_inner());
    let access = auth.issue_access(&email, now, duration);
    let refresh = auth.issue_refresh(&email, None, "https://www.googleapis.com/auth/calendar");
    Ok(ok_json(json!({"access_token": access, "refresh_token": refresh, "expires_in": lifetime, "token_type": "Bearer"}).to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewIdentityToken {
    email: String,
    audience: String,
    /// Seconds since the epoch (default: the emulator's now), for tokens issued in the past.
    issued_at: Option<i64>,
    /// Default an hour, like Google's.
    expires_in: Option<i64>,
    /// Default true.
    email_verified: Option<bool>,
    /// Default `https://accounts.google.com`.
    issuer: Option<String>,
}

/// `POST /emulator/identityTokens {"email", "audience"}`: an ID token for that user and
/// audience, as `ScriptApp.getIdentityToken()` gives a script (`{"idToken"}`).
async fn admin_identity_token(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let body: NewIdentityToken = admin_body(&shared, req).await?;
    if !body.email.contains('@') || body.email.len() > 254 {
        return Err(admin_invalid("email", "email must be an email address"));
    }
    if body.audience.trim().is_empty() || body.audience.len() > 255 {
        return Err(admin_invalid(
            "audience",
            "audience must be an OAuth client id (1 to 255 characters)",
        ));
    }
    let lifetime = body.expires_in.unwrap_or(crate::identity::ID_TOKEN_SECONDS);
    if !(1..=MAX_TOKEN_LIFETIME_SECONDS).contains(&lifetime) {
        return Err(admin_invalid(
            "expiresIn",
            format!("expiresIn must be between 1 and {MAX_TOKEN_LIFETIME_SECONDS} seconds"),
        ));
    }
    let issued_at = match body.issued_at {
        None => shared.clock.now(),
        Some(at) => chrono::DateTime::from_timestamp(at, 0)
            .ok_or_else(|| admin_invalid("issuedAt", "issuedAt is out of range"))?,
    };
    let email = shared.world().ensure_user(&body.email, None)?.email.clone();
    let token = shared
        .identity
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .mint(&crate::identity::IdTokenRequest {
            email: &email,
            audience: &body.audience,
            issued_at,
            lifetime_seconds: lifetime,
            email_verified: body.email_verified.unwrap_or(true),
            issuer: body.issuer.as_deref().unwrap_or(crate::identity::ISSUER),
        })
        .map_err(|e| ApiError::new(500, "global", "backendError", e))?;
    Ok(ok_json(json!({"idToken": token}).to_string()))
}

/// `POST /emulator/identityKeys/rotate`: a new signing key (the previous one stays published).
async fn admin_rotate_identity_keys(State(shared): Ctx) -> ApiResult<Response> {
    let kid = shared
        .identity
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rotate()
        .map_err(|e| ApiError::new(500, "global", "backendError", e))?;
    Ok(ok_json(json!({"kid": kid}).to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewServiceAccount {
    client_email: String,
    public_key_pem: String,
    /// Domain-wide delegation as the Admin console grants it: the scopes this client may ask
    /// for when it acts as a user (`sub`). Absent: every scope (the emulator's default).
    #[serde(default)]
    delegated_scopes: Option<Vec<String>>,
}

async fn admin_service_account(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let body: NewServiceAccount = admin_body(&shared, req).await?;
    shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register_service_account(&body.client_email, &body.public_key_pem)
        .map_err(ApiError::bad_request)?;
    shared
        .auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_delegation(&body.client_email, body.delegated_scopes);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_add_fault(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let spec: FaultSpec = admin_body(&shared, req).await?;
    spec.check().map_err(ApiError::bad_request)?;
    let id = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(spec)
        .map_err(ApiError::bad_request)?;
    Ok(ok_json(json!({"id": id}).to_string()))
}

async fn admin_clear_faults(State(shared): Ctx) -> Response {
    shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_expire_tokens(
    State(shared): Ctx,
    Path(calendar_id): Path<String>,
) -> ApiResult<Response> {
    shared.world().expire_sync_tokens(&calendar_id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigChange {
    #[serde(default, deserialize_with = "nullable")]
    sync_token_max_age_seconds: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    quota_per_user_per_minute: Option<Option<u32>>,
    quota_status: Option<u16>,
    dev_mode: Option<bool>,
    conference_create_pending: Option<bool>,
}

/// Tells "absent" (None) from "null" (Some(None)).
fn nullable<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The longest `syncTokenMaxAgeSeconds`: the whole range of the emulator's clock (1970 to
/// 9999), i.e. "never" in practice (`null` says so directly).
const MAX_SYNC_TOKEN_AGE_SECONDS: i64 = crate::time::CLOCK_MAX_MS / 1000;

/// The highest `quotaPerUserPerMinute` (Google's default is 600; `null` turns the quota off).
/// The quota remembers each admitted request of the last minute, so this also bounds its memory.
const MAX_QUOTA_PER_MINUTE: u32 = 1_000_000;

/// A 400 for an admin request field, in Google's envelope.
fn admin_invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).at("parameter", field)
}

async fn admin_config(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let change: ConfigChange = admin_body(&shared, req).await?;
    // Everything is checked before anything changes: a refused request changes nothing.
    if let Some(status) = change.quota_status
        && status != 403
        && status != 429
    {
        return Err(admin_invalid(
            "quotaStatus",
            "quotaStatus must be 403 or 429",
        ));
    }
    let max_age = match change.sync_token_max_age_seconds {
        None => None,
        Some(None) => Some(None),
        Some(Some(age)) => {
            let duration = (1..=MAX_SYNC_TOKEN_AGE_SECONDS)
                .contains(&age)
                .then(|| chrono::Duration::try_seconds(age))
                .flatten()
                .ok_or_else(|| {
                    admin_invalid(
                        "syncTokenMaxAgeSeconds",
                        format!(
                            "syncTokenMaxAgeSeconds must be between 1 and {MAX_SYNC_TOKEN_AGE_SECONDS}, not {age} (null: tokens never age out)"
                        ),
                    )
                })?;
            Some(Some(duration))
        }
    };
    if let Some(Some(quota)) = change.quota_per_user_per_minute
        && !(1..=MAX_QUOTA_PER_MINUTE).contains(&quota)
    {
        return Err(admin_invalid(
            "quotaPerUserPerMinute",
            format!(
                "quotaPerUserPerMinute must be between 1 and {MAX_QUOTA_PER_MINUTE}, not {quota} (null: no quota)"
            ),
        ));
    }
    // The world lock is taken (and released) before the config lock: `admin_reset` holds the
    // world while it reads the config.
    if let Some(pending) = change.conference_create_pending {
        shared.world().conference_create_pending = pending;
    }
    let mut config = shared.config.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(age) = max_age {
        config.sync_token_max_age = age;
    }
    if let Some(quota) = change.quota_per_user_per_minute {
        config.quota_per_user_per_minute = quota;
    }
    if let Some(status) = change.quota_status {
        config.quota_status = status;
    }
    if let Some(dev) = change.dev_mode {
        config.dev_mode = dev;
    }
    if let Some(pending) = change.conference_create_pending {
        config.conference_create_pending = pending;
    }
    Ok(ok_json(
        json!({
            "syncTokenMaxAgeSeconds": config.sync_token_max_age.map(|d| d.num_seconds()),
            "quotaPerUserPerMinute": config.quota_per_user_per_minute,
            "quotaStatus": config.quota_status,
            "devMode": config.dev_mode,
            "conferenceCreatePending": config.conference_create_pending,
        })
        .to_string(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConferenceResolution {
    status_code: Option<String>,
}

/// Ends every pending Meet `createRequest` with `statusCode` `success` (the default: entry
/// points and a conference id appear) or `failure` (no entry points).
async fn admin_resolve_conferences(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let body: ConferenceResolution = admin_body(&shared, req).await?;
    let success = match body.status_code.as_deref() {
        None | Some("success") => true,
        Some("failure") => false,
        Some(other) => {
            return Err(admin_invalid(
                "statusCode",
                format!("statusCode must be success or failure, not \"{other}\""),
            ));
        }
    };
    let now = shared.clock.now();
    let mut world = shared.world();
    let resolved = world.resolve_conference_requests(now, success);
    shared.flush_notifications(&mut world);
    let resolved: Vec<Value> = resolved?
        .into_iter()
        .map(|(calendar_id, event_id)| json!({"calendarId": calendar_id, "eventId": event_id}))
        .collect();
    Ok(ok_json(json!({ "resolved": resolved }).to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClockChange {
    advance_seconds: i64,
}

async fn admin_clock(State(shared): Ctx, req: Request) -> ApiResult<Response> {
    let change: ClockChange = admin_body(&shared, req).await?;
    let now = shared
        .clock
        .advance(change.advance_seconds)
        .map_err(|e| admin_invalid("advanceSeconds", e.0))?;
    Ok(ok_json(
        json!({"now": crate::time::rfc3339(now)}).to_string(),
    ))
}

async fn admin_channels(State(shared): Ctx) -> Response {
    ok_json(json!({"items": shared.push.list(shared.clock.now())}).to_string())
}

async fn admin_notifications(State(shared): Ctx, req: Request) -> Response {
    let params = params_of(&req);
    let items = shared.push.deliveries(param(&params, "channelId"));
    ok_json(json!({"items": items}).to_string())
}

async fn admin_stats(State(shared): Ctx) -> Response {
    let stats = shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    ok_json(json!({"requests": stats}).to_string())
}
