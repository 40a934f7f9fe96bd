//! The Calendar v3 REST client: one method per API call the sync engine makes.
//!
//! This module owns the HTTP side: URLs (percent-encoded path segments, query parameters), the
//! bearer token, `If-Match`, timeouts, retries (through [`RetryPolicy`] and a [`Sleeper`]), the
//! one token refresh after a 401, and per-method request counters. It knows nothing about links,
//! plans or paging strategy: [`Client::list_events`] returns one page and the engine pages.
//!
//! Less from Google (its "Performance tips" page for the Calendar API): every request asks for
//! gzip, which takes two things, `Accept-Encoding: gzip` (reqwest's `gzip` feature sends it and
//! decodes the answer) and the string `gzip` in the `User-Agent` (the default is
//! `confsync/<version> (gzip)`; a custom agent without it gets ` (gzip)` appended). And a listing
//! can ask for a partial response with [`ListParams::fields`] (Google's `fields` parameter).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{self, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ErrorContext, GcalError, parse_retry_after};
use crate::model::RawEvents;
use crate::model::{Channel, Event, Events, WatchRequest};
use crate::retry::{JitterSource, RetryPolicy, Sleeper, TokioSleeper};
use crate::token::TokenSource;

/// The Calendar API calls this client makes, named by their discovery method ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiMethod {
    /// `calendar.events.list`
    EventsList,
    /// `calendar.events.get`
    EventsGet,
    /// `calendar.events.insert`
    EventsInsert,
    /// `calendar.events.patch`
    EventsPatch,
    /// `calendar.events.delete`
    EventsDelete,
    /// `calendar.events.watch`
    EventsWatch,
    /// `calendar.channels.stop`
    ChannelsStop,
    /// `calendar.calendars.get`
    CalendarsGet,
    /// `calendar.acl.get`
    AclGet,
}

impl ApiMethod {
    /// Every method, in counter order.
    pub const ALL: [ApiMethod; 9] = [
        ApiMethod::EventsList,
        ApiMethod::EventsGet,
        ApiMethod::EventsInsert,
        ApiMethod::EventsPatch,
        ApiMethod::EventsDelete,
        ApiMethod::EventsWatch,
        ApiMethod::ChannelsStop,
        ApiMethod::CalendarsGet,
        ApiMethod::AclGet,
    ];

    /// The discovery method id (`calendar.events.list`), as Google and the emulator name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiMethod::EventsList => "calendar.events.list",
            ApiMethod::EventsGet => "calendar.events.get",
            ApiMethod::EventsInsert => "calendar.events.insert",
            ApiMethod::EventsPatch => "calendar.events.patch",
            ApiMethod::EventsDelete => "calendar.events.delete",
            ApiMethod::EventsWatch => "calendar.events.watch",
            ApiMethod::ChannelsStop => "calendar.channels.stop",
            ApiMethod::CalendarsGet => "calendar.calendars.get",
            ApiMethod::AclGet => "calendar.acl.get",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ApiMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Query parameters of one `events.list` page.
///
/// With `sync_token`, Google refuses `time_min`, `time_max` and `updated_min`, and
/// `show_deleted = Some(false)`; keep `single_events` and `max_results` as in the full sync that
/// produced the token. Later pages repeat the same parameters plus `page_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Incremental listing: the `nextSyncToken` of the previous listing's last page.
    pub sync_token: Option<String>,
    /// The `nextPageToken` of the previous page of this listing.
    pub page_token: Option<String>,
    /// Page size (Google: default 250, at most 2500).
    pub max_results: Option<u32>,
    /// Expand series into instances.
    pub single_events: Option<bool>,
    /// Include cancelled events in a full listing (incremental listings always do).
    pub show_deleted: Option<bool>,
    /// Lower bound (exclusive) on an event's end.
    pub time_min: Option<DateTime<Utc>>,
    /// Upper bound (exclusive) on an event's start.
    pub time_max: Option<DateTime<Utc>>,
    /// Only events changed since (deletions included).
    pub updated_min: Option<DateTime<Utc>>,
    /// A partial-response mask (Google's `fields` system parameter, e.g.
    /// `nextPageToken,nextSyncToken,items(id,etag,status)`): the page then carries only the
    /// named fields. Name the page tokens too, or paging stops. Not part of what a sync or page
    /// token is bound to. None: whole events.
    pub fields: Option<String>,
}

impl ListParams {
    /// The query string (`syncToken=...&maxResults=...`), empty without parameters.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        if let Some(token) = &self.sync_token {
            query.append_pair("syncToken", token);
        }
        if let Some(token) = &self.page_token {
            query.append_pair("pageToken", token);
        }
        if let Some(n) = self.max_results {
            query.append_pair("maxResults", &n.to_string());
        }
        if let Some(b) = self.single_events {
            query.append_pair("singleEvents", bool_str(b));
        }
        if let Some(b) = self.show_deleted {
            query.append_pair("showDeleted", bool_str(b));
        }
        if let Some(t) = &self.time_min {
            query.append_pair("timeMin", &time(t));
        }
        if let Some(t) = &self.time_max {
            query.append_pair("timeMax", &time(t));
        }
        if let Some(t) = &self.updated_min {
            query.append_pair("updatedMin", &time(t));
        }
        if let Some(fields) = &self.fields {
            query.append_pair("fields", fields);
        }
        query.finish()
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters, so calendar
/// ids with `@`, `#`, `/` or `+` stay one segment and mean themselves.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The default `User-Agent`: the string `gzip` in it is one of Google's two conditions for a
/// gzip-encoded answer (the other is `Accept-Encoding: gzip`).
pub const USER_AGENT: &str = concat!("confsync/", env!("CARGO_PKG_VERSION"), " (gzip)");

/// The partial-response mask of a conference sync's `events.list` ([`ListParams::fields`]):
/// the page tokens and the event fields confsync's sync engine reads
/// (`confsync_core::model::WireEvent` decodes listed items and nothing else reads them), so
/// Google sends only these. Why each is there:
///
/// - `nextPageToken`, `nextSyncToken`: paging, and the next incremental sync's token.
/// - `id`, `status`: which event, and whether it was deleted (tombstones carry `id`, `status`
///   and, for instances, `recurringEventId` and `originalStartTime`).
/// - `etag`: recognising the echo of the engine's own write-back.
/// - `summary`, `description`, `start`, `end`, `recurrence`: the meeting spec a provider gets
///   (`start` whole: `date` or `dateTime`, and the `timeZone` the spec keeps; `end` and
///   `originalStartTime` whole too, `EventDateTime` has nothing more).
/// - `recurringEventId`, `originalStartTime`: instances, and their occurrence keys.
/// - `organizer(email,self)`: the spec's organizer, and whether this calendar's copy is the
///   organizer's (only that copy is acted on).
/// - `attendees(email,resource)`: the spec's guests, rooms left out (no names, no RSVPs).
/// - `conferenceData(...)`: recognising the conference and reading its ids: `conferenceId`,
///   `conferenceSolution(key/type,name)`, `createRequest/conferenceSolutionKey/type` (a Meet
///   request still pending), `parameters/addOnParameters/parameters` (the add-on's own ids) and
///   `entryPoints(entryPointType,uri)` (the join link).
///
/// Not for `events.get` before a write: a write-back sends the event's `conferenceData` back
/// with one link changed, so it reads the whole event (entry points, notes, signature). A field
/// the engine starts reading must be added here; the engine's test
/// `the_listing_mask_keeps_everything_a_snapshot_reads` fails until it is.
pub const EVENTS_SYNC_FIELDS: &str = concat!(
    "nextPageToken,nextSyncToken,",
    "items(id,etag,status,summary,description,start,end,recurrence,",
    "recurringEventId,originalStartTime,organizer(email,self),attendees(email,resource),",
    "conferenceData(conferenceId,conferenceSolution(key/type,name),",
    "createRequest/conferenceSolutionKey/type,parameters/addOnParameters/parameters,",
    "entryPoints(entryPointType,uri)))",
);

/// Settings for [`Client`] beyond the required ones; start from [`Client::builder`].
pub struct ClientBuilder {
    base_url: String,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
    timeout: Duration,
    sleeper: Arc<dyn Sleeper>,
    user_agent: String,
    gzip: bool,
}

impl ClientBuilder {
    /// Retry policy (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Timeout of one HTTP attempt, connection to last body byte (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How to wait between attempts (default: [`TokioSleeper`]).
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// `User-Agent` header (default `confsync/<version> (gzip)`). With gzip on (the default),
    /// ` (gzip)` is appended when the agent does not contain `gzip`: Google compresses only for
    /// agents that say so.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Ask for gzip-encoded answers and decode them (default on). Off: plain bodies, no
    /// `Accept-Encoding`, the user agent as given.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Builds the client; fails on a base URL that is not `http(s)://host/...`.
    pub fn build(self) -> Result<Client, GcalError> {
        let invalid = |message: String| GcalError::InvalidConfig { message };
        let mut base = self.base_url.trim().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let url = reqwest::Url::parse(&base)
            .map_err(|e| invalid(format!("base URL {base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!(
                "base URL {base:?} must be http(s)://host/ (for example https://www.googleapis.com/)"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "base URL {base:?} must not have a query or fragment"
            )));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts must be at least 1".into()));
        }
        let mut user_agent = self.user_agent;
        if self.gzip && !user_agent.contains("gzip") {
            user_agent.push_str(" (gzip)");
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(user_agent)
            // `Accept-Encoding: gzip` on every request, and gzip answers decoded.
            .gzip(self.gzip)
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                api_root: format!("{base}calendar/v3/"),
                tokens: self.tokens,
                jitter: JitterSource::new(self.retry.jitter),
                retry: self.retry,
                sleeper: self.sleeper,
                counts: Default::default(),
            }),
        })
    }
}

/// A Google Calendar v3 client. Cheap to clone; clones share counters and the token source.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `<base>calendar/v3/`.
    api_root: String,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
    jitter: JitterSource,
    sleeper: Arc<dyn Sleeper>,
    counts: [AtomicU64; ApiMethod::ALL.len()],
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_root", &self.inner.api_root)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One API call, before retries.
struct Call<'a> {
    method: ApiMethod,
    http: reqwest::Method,
    url: String,
    body: Option<Vec<u8>>,
    if_match: Option<&'a str>,
    target: String,
}

impl Client {
    /// A client for the API under `base_url` (`https://www.googleapis.com/`, or an emulator's
    /// `http://127.0.0.1:PORT/`), with a 30 s timeout per attempt.
    pub fn new(
        base_url: &str,
        tokens: Arc<dyn TokenSource>,
        retry: RetryPolicy,
    ) -> Result<Client, GcalError> {
        Self::builder(base_url, tokens).retry(retry).build()
    }

    /// A builder for the less common settings (timeout, sleeper, user agent).
    pub fn builder(base_url: &str, tokens: Arc<dyn TokenSource>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            tokens,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            sleeper: Arc::new(TokioSleeper),
            user_agent: USER_AGENT.to_owned(),
            gzip: true,
        }
    }

    /// The REST root, `<base>calendar/v3/`.
    pub fn api_root(&self) -> &str {
        &self.inner.api_root
    }

    /// HTTP requests sent so far per method id (every attempt counts, retries included).
    pub fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        ApiMethod::ALL
            .iter()
            .map(|m| (m.as_str(), self.request_count(*m)))
            .collect()
    }

    /// HTTP requests sent so far for one method.
    pub fn request_count(&self, method: ApiMethod) -> u64 {
        self.inner.counts[method.index()].load(Ordering::Relaxed)
    }

    /// `events.list`: one page. Pass `next_page_token` back as `page_token` for the next one.
    pub async fn list_events(
        &self,
        calendar_id: &str,
        params: &ListParams,
    ) -> Result<Events, GcalError> {
        let mut url = self.events_url(calendar_id);
        let query = params.query();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let call = Call {
            method: ApiMethod::EventsList,
            http: reqwest::Method::GET,
            url,
            body: None,
            if_match: None,
            target: format!("calendar {calendar_id}"),
        };
        self.json(call, "calendar#events page").await
    }

    /// `events.list` like [`Client::list_events`], with each event kept as its JSON text: for
    /// callers that read a few fields of many events (the sync engine) and should not pay for
    /// decoding the rest.
    pub async fn list_events_raw(
        &self,
        calendar_id: &str,
        params: &ListParams,
    ) -> Result<RawEvents, GcalError> {
        let mut url = self.events_url(calendar_id);
        let query = params.query();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let call = Call {
            method: ApiMethod::EventsList,
            http: reqwest::Method::GET,
            url,
            body: None,
            if_match: None,
            target: format!("calendar {calendar_id}"),
        };
        self.json(call, "calendar#events page").await
    }

    /// `calendars.get` as JSON (`primary` names the authorised user's own calendar, whose id is
    /// the user's email).
    pub async fn get_calendar(&self, calendar_id: &str) -> Result<serde_json::Value, GcalError> {
        let call = Call {
            method: ApiMethod::CalendarsGet,
            http: reqwest::Method::GET,
            url: format!(
                "{}calendars/{}",
                self.inner.api_root,
                encode_segment(calendar_id)
            ),
            body: None,
            if_match: None,
            target: format!("calendar {calendar_id}"),
        };
        self.json(call, "calendar#calendar").await
    }

    /// `acl.get`: one access rule of a calendar as JSON (`rule_id` is `user:{email}`,
    /// `domain:{domain}`, `group:{email}` or `default`). Reading a calendar's ACL needs the
    /// writer or owner role on it ("writer ... Provides read access to the calendar's ACLs",
    /// AclRule.role in the discovery document) and one of the `calendar`, `calendar.acls`,
    /// `calendar.acls.readonly` or `calendar.readonly` scopes. A missing rule is
    /// [`GcalError::NotFound`].
    pub async fn get_acl_rule(
        &self,
        calendar_id: &str,
        rule_id: &str,
    ) -> Result<serde_json::Value, GcalError> {
        let call = Call {
            method: ApiMethod::AclGet,
            http: reqwest::Method::GET,
            url: format!(
                "{}calendars/{}/acl/{}",
                self.inner.api_root,
                encode_segment(calendar_id),
                encode_segment(rule_id)
            ),
            body: None,
            if_match: None,
            target: format!("calendar {calendar_id} acl rule {rule_id}"),
        };
        self.json(call, "calendar#aclRule").await
    }

    /// `events.get`: one event, cancelled ones included, whole (no `fields` mask: a write-back
    /// reads the event it patches and must see every field it keeps).
    pub async fn get_event(&self, calendar_id: &str, event_id: &str) -> Result<Event, GcalError> {
        let call = Call {
            method: ApiMethod::EventsGet,
            http: reqwest::Method::GET,
            url: self.event_url(calendar_id, event_id),
            body: None,
            if_match: None,
            target: event_target(calendar_id, event_id),
        };
        self.json(call, "calendar#event").await
    }

    /// `events.patch`: merges `body` into the event (a `null` clears a field). With `if_match`,
    /// a changed event answers [`GcalError::PreconditionFailed`]. `conference_data_version` 1
    /// makes Google read `conferenceData` in the body (0 ignores it).
    pub async fn patch_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        body: &Value,
        if_match: Option<&str>,
        conference_data_version: u8,
    ) -> Result<Event, GcalError> {
        let call = Call {
            method: ApiMethod::EventsPatch,
            http: reqwest::Method::PATCH,
            url: format!(
                "{}?conferenceDataVersion={conference_data_version}",
                self.event_url(calendar_id, event_id)
            ),
            body: Some(to_body(ApiMethod::EventsPatch, body)?),
            if_match,
            target: event_target(calendar_id, event_id),
        };
        self.json(call, "calendar#event").await
    }

    /// `events.insert`. Retries after a lost response may insert twice unless `event.id` is set
    /// by the caller (then the second insert answers [`GcalError::Conflict`]).
    pub async fn insert_event(
        &self,
        calendar_id: &str,
        event: &Event,
        conference_data_version: u8,
    ) -> Result<Event, GcalError> {
        let call = Call {
            method: ApiMethod::EventsInsert,
            http: reqwest::Method::POST,
            url: format!(
                "{}?conferenceDataVersion={conference_data_version}",
                self.events_url(calendar_id)
            ),
            body: Some(to_body(ApiMethod::EventsInsert, event)?),
            if_match: None,
            target: format!("calendar {calendar_id}"),
        };
        self.json(call, "calendar#event").await
    }

    /// `events.delete`. Deleting a deleted event answers [`GcalError::AlreadyDeleted`] (also
    /// when a retried attempt follows one whose response was lost).
    pub async fn delete_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), GcalError> {
        let call = Call {
            method: ApiMethod::EventsDelete,
            http: reqwest::Method::DELETE,
            url: self.event_url(calendar_id, event_id),
            body: None,
            if_match,
            target: event_target(calendar_id, event_id),
        };
        self.send(&call).await.map(|_| ())
    }

    /// `events.watch`: opens a push channel for the calendar's events.
    pub async fn watch(
        &self,
        calendar_id: &str,
        request: &WatchRequest,
    ) -> Result<Channel, GcalError> {
        let call = Call {
            method: ApiMethod::EventsWatch,
            http: reqwest::Method::POST,
            url: format!("{}/watch", self.events_url(calendar_id)),
            body: Some(to_body(ApiMethod::EventsWatch, &request.body())?),
            if_match: None,
            target: format!("calendar {calendar_id}, channel {}", request.id),
        };
        self.json(call, "api#channel").await
    }

    /// `channels.stop`: stops a push channel (`id` and `resource_id` from [`Channel`]).
    pub async fn stop_channel(&self, id: &str, resource_id: &str) -> Result<(), GcalError> {
        let body = serde_json::json!({"id": id, "resourceId": resource_id});
        let call = Call {
            method: ApiMethod::ChannelsStop,
            http: reqwest::Method::POST,
            url: format!("{}channels/stop", self.inner.api_root),
            body: Some(to_body(ApiMethod::ChannelsStop, &body)?),
            if_match: None,
            target: format!("channel {id}"),
        };
        self.send(&call).await.map(|_| ())
    }

    fn events_url(&self, calendar_id: &str) -> String {
        format!(
            "{}calendars/{}/events",
            self.inner.api_root,
            encode_segment(calendar_id)
        )
    }

    fn event_url(&self, calendar_id: &str, event_id: &str) -> String {
        format!(
            "{}/{}",
            self.events_url(calendar_id),
            encode_segment(event_id)
        )
    }

    async fn json<T: DeserializeOwned>(&self, call: Call<'_>, what: &str) -> Result<T, GcalError> {
        let (status, body) = self.send(&call).await?;
        serde_json::from_slice(&body).map_err(|e| {
            GcalError::decode(
                call.method.as_str(),
                call.target.clone(),
                status,
                what,
                &e,
                body.len(),
            )
        })
    }

    /// Sends `call` until it succeeds, fails for good, or the policy gives up.
    async fn send(&self, call: &Call<'_>) -> Result<(u16, Vec<u8>), GcalError> {
        let inner = &self.inner;
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            attempts += 1;
            let error = match self.attempt(call).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if matches!(error, GcalError::Unauthorized { .. }) && !refreshed {
                // The token may have expired between issue and use: refresh once, right away.
                refreshed = true;
                inner.tokens.invalidate();
                tracing::info!(method = %call.method, target = %call.target, "access token refused; retrying once with a fresh one");
                continue;
            }
            let Some(delay) = inner
                .retry
                .next_delay(attempts, &error, inner.jitter.next())
            else {
                return Err(error);
            };
            tracing::warn!(
                method = %call.method,
                target = %call.target,
                attempt = attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying Calendar API call"
            );
            inner.sleeper.sleep(delay).await;
        }
    }

    /// One HTTP attempt: the status and body of a success, or the classified failure.
    async fn attempt(&self, call: &Call<'_>) -> Result<(u16, Vec<u8>), GcalError> {
        let inner = &self.inner;
        let method = call.method.as_str();
        let token = inner.tokens.token().await?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| local_error(call, "the access token is not a valid header value"))?;
        authorization.set_sensitive(true);
        let mut request = inner
            .http
            .request(call.http.clone(), &call.url)
            .header(header::AUTHORIZATION, authorization)
            .header(header::ACCEPT, "application/json");
        if let Some(etag) = call.if_match {
            let value = HeaderValue::from_str(etag)
                .map_err(|_| local_error(call, "the If-Match etag is not a valid header value"))?;
            request = request.header(header::IF_MATCH, value);
        }
        if let Some(body) = &call.body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        inner.counts[call.method.index()].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(method, target = %call.target, "Calendar API request");
        let response = request
            .send()
            .await
            .map_err(|e| GcalError::from_transport(method, call.target.clone(), e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = response
            .bytes()
            .await
            .map_err(|e| GcalError::from_transport(method, call.target.clone(), e))?;
        if (200..300).contains(&status) {
            Ok((status, body.to_vec()))
        } else {
            Err(GcalError::from_response(
                method,
                call.target.clone(),
                status,
                retry_after,
                &body,
            ))
        }
    }
}

fn event_target(calendar_id: &str, event_id: &str) -> String {
    format!("calendar {calendar_id}, event {event_id}")
}

fn to_body<T: serde::Serialize + ?Sized>(
    method: ApiMethod,
    value: &T,
) -> Result<Vec<u8>, GcalError> {
    serde_json::to_vec(value).map_err(|e| {
        let mut context = ErrorContext::new(method.as_str(), "");
        context.message = format!("the request body could not be serialized: {e}");
        GcalError::Unexpected { context }
    })
}

/// A request refused before sending (never retried).
fn local_error(call: &Call<'_>, message: &str) -> GcalError {
    let mut context = ErrorContext::new(call.method.as_str(), call.target.clone());
    context.message = message.to_owned();
    GcalError::Unexpected { context }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::StaticToken;

    fn client(base: &str) -> Result<Client, GcalError> {
        Client::new(
            base,
            Arc::new(StaticToken("t".into())),
            RetryPolicy::default(),
        )
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            encode_segment("en.usa#holiday@group.v.calendar.google.com"),
            "en.usa%23holiday%40group.v.calendar.google.com"
        );
        assert_eq!(encode_segment("a b/c+d?e%f"), "a%20b%2Fc%2Bd%3Fe%25f");
        assert_eq!(encode_segment("ü"), "%C3%BC");
        let client = client("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            client.event_url("a@b.c", "x_20261201T090000Z"),
            "http://127.0.0.1:9/calendar/v3/calendars/a%40b.c/events/x_20261201T090000Z"
        );
    }

    #[test]
    fn list_params_become_google_query_parameters() {
        assert_eq!(ListParams::default().query(), "");
        let params = ListParams {
            sync_token: Some("a+b/c=".into()),
            page_token: Some("p 1".into()),
            max_results: Some(2500),
            single_events: Some(true),
            show_deleted: Some(false),
            time_min: DateTime::from_timestamp(1_800_000_000, 0),
            time_max: DateTime::from_timestamp(1_800_000_000, 5_000_000),
            updated_min: None,
            fields: Some("nextPageToken,items(id,start/dateTime)".into()),
        };
        assert_eq!(
            params.query(),
            "syncToken=a%2Bb%2Fc%3D&pageToken=p+1&maxResults=2500&singleEvents=true&showDeleted=false&timeMin=2027-01-15T08%3A00%3A00Z&timeMax=2027-01-15T08%3A00%3A00.005Z&fields=nextPageToken%2Citems%28id%2Cstart%2FdateTime%29"
        );
    }

    #[test]
    fn the_base_url_is_checked_and_gets_the_v3_root() {
        assert_eq!(
            client("https://www.googleapis.com").unwrap().api_root(),
            "https://www.googleapis.com/calendar/v3/"
        );
        assert_eq!(
            client("http://127.0.0.1:8085/").unwrap().api_root(),
            "http://127.0.0.1:8085/calendar/v3/"
        );
        for bad in ["", "ftp://x/", "not a url", "http://x/?a=1"] {
            assert!(
                matches!(client(bad), Err(GcalError::InvalidConfig { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn counters_start_at_zero_for_every_method() {
        let counts = client("http://127.0.0.1:9/").unwrap().request_counts();
        assert_eq!(counts.len(), ApiMethod::ALL.len());
        assert!(counts.values().all(|n| *n == 0));
        assert!(counts.contains_key("calendar.channels.stop"));
    }

    #[test]
    fn debug_output_has_no_token() {
        let client = Client::new(
            "http://127.0.0.1:9/",
            Arc::new(StaticToken("secret-token".into())),
            RetryPolicy::default(),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("secret"));
    }
}
