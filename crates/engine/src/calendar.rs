//! How the engine reaches a calendar: [`CalendarApi`], with the Google client in production and
//! the in-process emulator (`emulated::EmulatorCalendar`, behind the `emulated` feature) in the
//! simulation and benchmarks. Both classify failures with one table: [`google::classify`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use confsync_core::session::{ListRequest, Page};
use serde_json::Value;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A calendar failure, classified by HTTP status and reason (never by message text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// 410 fullSyncRequired / updatedMinTooLongAgo: drop the token, full sync this calendar.
    #[error("the sync token is no longer valid (410)")]
    FullSyncRequired,
    #[error("precondition failed (412)")]
    PreconditionFailed,
    #[error("retryable calendar failure: {detail}")]
    Retryable {
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("calendar failure: {detail}")]
    Fatal { detail: String },
    /// The account's grant is gone (revoked, expired, never given): nothing works until the user
    /// connects again. Not retried; the caller marks the account.
    #[error("re-authorisation needed: {detail}")]
    Reauth { detail: String },
}

/// A push channel as Google answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedChannel {
    pub resource_id: String,
    pub expiration_ms: i64,
}

/// The calendar operations the engine needs.
pub trait CalendarApi: Send + Sync {
    /// `events.watch`: a push channel for the calendar's events. Calendars that cannot push
    /// (test fakes) keep the default, and are synced by the sweep and the add-on trigger.
    fn watch<'a>(
        &'a self,
        _calendar_id: &'a str,
        _channel_id: &'a str,
        _address: &'a str,
        _token: &'a str,
        _ttl_seconds: Option<u64>,
    ) -> BoxFuture<'a, Result<WatchedChannel, CalendarError>> {
        Box::pin(async {
            Err(CalendarError::Fatal {
                detail: "this calendar has no push channels".into(),
            })
        })
    }

    /// `channels.stop`. `calendar_id` is the watched calendar when known (orphans: None).
    fn stop_channel<'a>(
        &'a self,
        _calendar_id: Option<&'a str>,
        _channel_id: &'a str,
        _resource_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CalendarError>> {
        Box::pin(async {
            Err(CalendarError::Fatal {
                detail: "this calendar has no push channels".into(),
            })
        })
    }

    /// One `events.list` page, items as raw JSON.
    fn list<'a>(
        &'a self,
        calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<Page, CalendarError>>;

    /// `events.patch` with `If-Match: if_match` and conferenceDataVersion=1; answers the event.
    fn patch<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        body: &'a Value,
        if_match: &'a str,
    ) -> BoxFuture<'a, Result<Value, CalendarError>>;

    /// `events.get`; None when the event does not exist (404).
    fn get<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>>;

    /// `acl.get`: the role an access rule of the calendar grants (`rule_id` is `user:{email}`,
    /// `domain:{domain}`, ...), None when the calendar has no such rule (404). Calendars that
    /// cannot read ACLs (test fakes, the in-process emulator) keep the default, a failure, so
    /// a caller that relies on the answer refuses rather than guesses.
    fn acl_role<'a>(
        &'a self,
        _calendar_id: &'a str,
        _rule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessRole>, CalendarError>> {
        Box::pin(async {
            Err(CalendarError::Fatal {
                detail: "this calendar cannot read access rules".into(),
            })
        })
    }
}

/// The role an access rule grants (AclRule.role in the discovery document), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessRole {
    None,
    FreeBusyReader,
    Reader,
    /// "Provides read and write access to the calendar. Private events will appear ... but
    /// event details will be hidden."
    WriterWithoutPrivateAccess,
    Writer,
    Owner,
}

impl AccessRole {
    /// Parses AclRule.role; an unknown value is None (a role confsync does not understand grants
    /// nothing, so a new, weaker role Google adds is never mistaken for write access).
    pub fn parse(role: &str) -> Option<AccessRole> {
        Some(match role {
            "none" => AccessRole::None,
            "freeBusyReader" => AccessRole::FreeBusyReader,
            "reader" => AccessRole::Reader,
            "writerWithoutPrivateAccess" => AccessRole::WriterWithoutPrivateAccess,
            "writer" => AccessRole::Writer,
            "owner" => AccessRole::Owner,
            _ => return None,
        })
    }

    /// The role lets its holder change the calendar's events (and so its conferences).
    pub fn can_edit(self) -> bool {
        self >= AccessRole::WriterWithoutPrivateAccess
    }
}

/// Where a call for a calendar goes. Calendar access that differs per calendar (each owner's
/// credentials) or that must wait first (rate budgets) implements this once, and [`Routed`]
/// forwards every [`CalendarApi`] method through it.
pub trait Route: Send + Sync {
    /// The API to call for `calendar_id` (None: a channel whose calendar is unknown).
    fn route<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<std::sync::Arc<dyn CalendarApi>, CalendarError>>;

    /// Sees every call that [`Route::route`] let through and that failed (to mark a revoked
    /// grant, say). Does nothing by default.
    fn failed<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
        error: &'a CalendarError,
    ) -> BoxFuture<'a, ()> {
        let _ = (calendar_id, error);
        Box::pin(async {})
    }
}

impl<R: Route + ?Sized> Route for std::sync::Arc<R> {
    fn route<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<std::sync::Arc<dyn CalendarApi>, CalendarError>> {
        (**self).route(calendar_id)
    }

    fn failed<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
        error: &'a CalendarError,
    ) -> BoxFuture<'a, ()> {
        (**self).failed(calendar_id, error)
    }
}

/// A [`Route`] as a calendar.
pub struct Routed<R>(pub R);

impl<R: Route> Routed<R> {
    async fn call<'a, T>(
        &'a self,
        calendar_id: Option<&'a str>,
        call: impl FnOnce(std::sync::Arc<dyn CalendarApi>) -> BoxFuture<'a, Result<T, CalendarError>>,
    ) -> Result<T, CalendarError> {
        // The route's own refusals are its business; only calls it let through are reported.
        let api = self.0.route(calendar_id).await?;
        let result = call(api).await;
        if let Err(e) = &result {
            self.0.failed(calendar_id, e).await;
        }
        result
    }
}

impl<R: Route> CalendarApi for Routed<R> {
    fn watch<'a>(
        &'a self,
        calendar_id: &'a str,
        channel_id: &'a str,
        address: &'a str,
        token: &'a str,
        ttl_seconds: Option<u64>,
    ) -> BoxFuture<'a, Result<WatchedChannel, CalendarError>> {
        Box::pin(self.call(Some(calendar_id), move |api| {
            Box::pin(async move {
                api.watch(calendar_id, channel_id, address, token, ttl_seconds)
                    .await
            })
        }))
    }

    fn stop_channel<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
        channel_id: &'a str,
        resource_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CalendarError>> {
        Box::pin(self.call(calendar_id, move |api| {
            Box::pin(async move { api.stop_channel(calendar_id, channel_id, resource_id).await })
        }))
    }

    fn list<'a>(
        &'a self,
        calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<Page, CalendarError>> {
        Box::pin(self.call(Some(calendar_id), move |api| {
            Box::pin(async move { api.list(calendar_id, request).await })
        }))
    }

    fn patch<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        body: &'a Value,
        if_match: &'a str,
    ) -> BoxFuture<'a, Result<Value, CalendarError>> {
        Box::pin(self.call(Some(calendar_id), move |api| {
            Box::pin(async move { api.patch(calendar_id, event_id, body, if_match).await })
        }))
    }

    fn get<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
        Box::pin(self.call(Some(calendar_id), move |api| {
            Box::pin(async move { api.get(calendar_id, event_id).await })
        }))
    }

    fn acl_role<'a>(
        &'a self,
        calendar_id: &'a str,
        rule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessRole>, CalendarError>> {
        Box::pin(self.call(Some(calendar_id), move |api| {
            Box::pin(async move { api.acl_role(calendar_id, rule_id).await })
        }))
    }
}

/// The emulator, called in process (no HTTP): deterministic and fast. Only with the `emulated`
/// feature: production builds do not compile the emulator in.
#[cfg(feature = "emulated")]
pub mod emulated {
    use std::sync::Arc;

    use confsync_emulator::list::ListQuery;
    use confsync_emulator::push::PushHub;
    use confsync_emulator::{ApiError, Shared};
    use confsync_gcal::GcalError;
    use confsync_gcal::error::parse_retry_after;

    use super::*;

    // The method ids and targets the gcal client names its calls with, so that an error reads
    // (and classifies) the same on both paths.
    const LIST: &str = "calendar.events.list";
    const GET: &str = "calendar.events.get";
    const PATCH: &str = "calendar.events.patch";
    const WATCH: &str = "calendar.events.watch";
    const STOP: &str = "calendar.channels.stop";

    fn calendar_target(calendar_id: &str) -> String {
        format!("calendar {calendar_id}")
    }

    fn event_target(calendar_id: &str, event_id: &str) -> String {
        format!("calendar {calendar_id}, event {event_id}")
    }

    /// Classifies an emulator error the way production classifies the same answer from Google:
    /// the [`GcalError`] the gcal client builds from that status, `Retry-After` header and body
    /// (the emulator's envelope), then [`google::classify`](super::google::classify). One table
    /// for both paths, so the simulation exercises production's error mapping.
    pub fn classify(method: &'static str, target: &str, e: ApiError) -> CalendarError {
        let retry_after = e
            .retry_after_header()
            .and_then(|v| parse_retry_after(&v, chrono::Utc::now()));
        let body = e.body().to_string();
        super::google::classify(GcalError::from_response(
            method,
            target,
            e.status,
            retry_after,
            body.as_bytes(),
        ))
    }

    /// A calendar user's view of an in-process emulator.
    pub struct EmulatorCalendar {
        pub shared: Arc<Shared>,
        /// The user the engine acts as (calendars are checked against it like a bearer token);
        /// None acts as each calendar's owner, like a service account with domain-wide delegation.
        pub user: Option<String>,
        /// Counts `events.list` and `events.get` calls, like the Google client does.
        pub calls: std::sync::atomic::AtomicU64,
    }

    impl EmulatorCalendar {
        pub fn new(shared: Arc<Shared>, user: Option<&str>) -> Self {
            EmulatorCalendar {
                shared,
                user: user.map(str::to_owned),
                calls: Default::default(),
            }
        }

        /// The calendar's id as the acting user may use it (as a bearer token would be checked).
        // The emulator's errors carry Google's whole envelope; they are the cold path.
        #[allow(clippy::result_large_err)]
        fn resolve(
            &self,
            world: &confsync_emulator::World,
            calendar_id: &str,
        ) -> Result<String, ApiError> {
            let owner = match &self.user {
                Some(user) => user.clone(),
                None => world.calendar(calendar_id)?.owner.clone(),
            };
            world.calendar_id(&owner, calendar_id)
        }
    }

    impl CalendarApi for EmulatorCalendar {
        /// `events.watch` on the emulator's push hub, in process: the emulator then POSTs real
        /// notifications to `address` over HTTP, as Google would. The channel belongs to the
        /// user the engine acts as (the calendar's owner when `user` is None).
        fn watch<'a>(
            &'a self,
            calendar_id: &'a str,
            channel_id: &'a str,
            address: &'a str,
            token: &'a str,
            ttl_seconds: Option<u64>,
        ) -> BoxFuture<'a, Result<WatchedChannel, CalendarError>> {
            Box::pin(async move {
                let target = format!("calendar {calendar_id}, channel {channel_id}");
                let fail = |e| classify(WATCH, &target, e);
                let mut body = serde_json::json!({
                    "id": channel_id, "type": "web_hook", "address": address, "token": token,
                });
                if let Some(ttl) = ttl_seconds {
                    body["params"] = serde_json::json!({"ttl": ttl.to_string()});
                }
                let request = PushHub::parse_watch(&body).map_err(fail)?;
                let (owner, id, resource_id) = {
                    let world = self.shared.world();
                    let id = self.resolve(&world, calendar_id).map_err(fail)?;
                    let calendar = world.calendar(&id).map_err(fail)?;
                    let owner = self.user.clone().unwrap_or_else(|| calendar.owner.clone());
                    (owner, id, calendar.resource_id.clone())
                };
                let encoded: String = id
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                            char::from(b).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                let uri = format!(
                    "{}calendar/v3/calendars/{encoded}/events?alt=json",
                    self.shared.base_url()
                );
                let now = self.shared.clock.now();
                let channel = self
                    .shared
                    .push
                    .watch(request, &owner, &id, &resource_id, uri, now)
                    .map_err(fail)?;
                let expiration_ms = channel["expiration"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| CalendarError::Fatal {
                        detail: "the watch answer has no expiration".into(),
                    })?;
                Ok(WatchedChannel {
                    resource_id,
                    expiration_ms,
                })
            })
        }

        /// `channels.stop` on the emulator's push hub, as the channel's maker (the calendar's
        /// owner when `user` is None; for orphans the hub's channel list names the calendar).
        /// An unknown channel is already stopped.
        fn stop_channel<'a>(
            &'a self,
            calendar_id: Option<&'a str>,
            channel_id: &'a str,
            resource_id: &'a str,
        ) -> BoxFuture<'a, Result<(), CalendarError>> {
            Box::pin(async move {
                let calendar = calendar_id.map(str::to_owned).or_else(|| {
                    self.shared
                        .push
                        .list(self.shared.clock.now())
                        .into_iter()
                        .find(|c| c["id"] == channel_id)
                        .and_then(|c| c["calendarId"].as_str().map(str::to_owned))
                });
                let Some(calendar) = calendar else {
                    return Ok(());
                };
                let owner = match &self.user {
                    Some(user) => user.clone(),
                    None => match self.shared.world().calendar(&calendar) {
                        Ok(c) => c.owner.clone(),
                        Err(_) => return Ok(()),
                    },
                };
                match self.shared.push.stop(channel_id, resource_id, &owner) {
                    Ok(()) => Ok(()),
                    Err(e) if e.status == 404 => Ok(()),
                    Err(e) => Err(classify(STOP, &format!("channel {channel_id}"), e)),
                }
            })
        }

        fn list<'a>(
            &'a self,
            calendar_id: &'a str,
            request: &'a ListRequest,
        ) -> BoxFuture<'a, Result<Page, CalendarError>> {
            Box::pin(async move {
                self.calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut params = vec![("maxResults".to_owned(), request.max_results.to_string())];
                if let Some(t) = &request.sync_token {
                    params.push(("syncToken".into(), t.clone()));
                }
                if let Some(t) = &request.page_token {
                    params.push(("pageToken".into(), t.clone()));
                }
                if let Some(t) = request.time_min {
                    params.push(("timeMin".into(), t.to_rfc3339()));
                }
                if request.show_deleted {
                    params.push(("showDeleted".into(), "true".into()));
                }
                let target = calendar_target(calendar_id);
                let fail = |e| classify(LIST, &target, e);
                let query = ListQuery::parse(calendar_id, &params).map_err(fail)?;
                let now = self.shared.clock.now();
                let max_age = self.shared.config().sync_token_max_age;
                let body = {
                    let world = self.shared.world();
                    let id = self.resolve(&world, calendar_id).map_err(fail)?;
                    world.list_events(&id, &query, now, max_age).map_err(fail)?
                };
                let page: confsync_gcal::RawEvents =
                    serde_json::from_str(&body).map_err(|e| CalendarError::Fatal {
                        detail: e.to_string(),
                    })?;
                Ok(Page {
                    items: page.items,
                    next_page_token: page.next_page_token,
                    next_sync_token: page.next_sync_token,
                })
            })
        }

        fn get<'a>(
            &'a self,
            calendar_id: &'a str,
            event_id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
            Box::pin(async move {
                self.calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let fail = |e| classify(GET, &event_target(calendar_id, event_id), e);
                let world = self.shared.world();
                let id = match self.resolve(&world, calendar_id) {
                    Ok(id) => id,
                    Err(e) if e.status == 404 => return Ok(None),
                    Err(e) => return Err(fail(e)),
                };
                match world.get_event(&id, event_id) {
                    Ok((json, _)) => {
                        serde_json::from_str(&json)
                            .map(Some)
                            .map_err(|e| CalendarError::Fatal {
                                detail: e.to_string(),
                            })
                    }
                    Err(e) if e.status == 404 => Ok(None),
                    Err(e) => Err(fail(e)),
                }
            })
        }

        fn patch<'a>(
            &'a self,
            calendar_id: &'a str,
            event_id: &'a str,
            body: &'a Value,
            if_match: &'a str,
        ) -> BoxFuture<'a, Result<Value, CalendarError>> {
            Box::pin(async move {
                let fail = |e| classify(PATCH, &event_target(calendar_id, event_id), e);
                let now = self.shared.clock.now();
                let mut world = self.shared.world();
                let id = self.resolve(&world, calendar_id).map_err(fail)?;
                let opts = confsync_emulator::store::WriteOptions {
                    conference_data_version: 1,
                    if_match: Some(if_match.to_owned()),
                };
                let kind = confsync_emulator::store::WriteKind::Patch;
                let written = world.write_event(now, &id, event_id, body.clone(), kind, &opts);
                self.shared.flush_notifications(&mut world);
                let json = written.map_err(fail)?;
                serde_json::from_str(&json).map_err(|e| CalendarError::Fatal {
                    detail: e.to_string(),
                })
            })
        }
    }
}

/// Google Calendar through the REST client.
pub mod google {
    use confsync_gcal::{Client, GcalError, ListParams, WatchRequest};

    use super::*;

    /// The production calendar: `confsync-gcal`'s client (retries and backoff live there).
    pub struct GoogleCalendar {
        pub client: Client,
    }

    pub fn classify(e: GcalError) -> CalendarError {
        match e {
            GcalError::FullSyncRequired { .. } => CalendarError::FullSyncRequired,
            GcalError::PreconditionFailed { .. } => CalendarError::PreconditionFailed,
            e if confsync_gcal::auth::is_invalid_grant(&e) => CalendarError::Reauth {
                detail: e.to_string(),
            },
            e if e.is_retryable() => CalendarError::Retryable {
                retry_after: e.retry_after(),
                detail: e.to_string(),
            },
            e => CalendarError::Fatal {
                detail: e.to_string(),
            },
        }
    }

    impl CalendarApi for GoogleCalendar {
        fn watch<'a>(
            &'a self,
            calendar_id: &'a str,
            channel_id: &'a str,
            address: &'a str,
            token: &'a str,
            ttl_seconds: Option<u64>,
        ) -> BoxFuture<'a, Result<WatchedChannel, CalendarError>> {
            Box::pin(async move {
                let mut request = WatchRequest::new(channel_id, address);
                request.token = Some(token.to_owned());
                request.ttl_seconds = ttl_seconds;
                let channel = self
                    .client
                    .watch(calendar_id, &request)
                    .await
                    .map_err(classify)?;
                let resource_id =
                    channel
                        .resource_id
                        .clone()
                        .ok_or_else(|| CalendarError::Fatal {
                            detail: "the watch answer has no resourceId".into(),
                        })?;
                let expiration_ms = channel.expiration.ok_or_else(|| CalendarError::Fatal {
                    detail: "the watch answer has no expiration".into(),
                })?;
                Ok(WatchedChannel {
                    resource_id,
                    expiration_ms,
                })
            })
        }

        fn stop_channel<'a>(
            &'a self,
            _calendar_id: Option<&'a str>,
            channel_id: &'a str,
            resource_id: &'a str,
        ) -> BoxFuture<'a, Result<(), CalendarError>> {
            Box::pin(async move {
                match self.client.stop_channel(channel_id, resource_id).await {
                    Ok(()) | Err(GcalError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(classify(e)),
                }
            })
        }

        fn list<'a>(
            &'a self,
            calendar_id: &'a str,
            request: &'a ListRequest,
        ) -> BoxFuture<'a, Result<Page, CalendarError>> {
            Box::pin(async move {
                let params = ListParams {
                    sync_token: request.sync_token.clone(),
                    page_token: request.page_token.clone(),
                    max_results: Some(request.max_results),
                    time_min: request.time_min,
                    show_deleted: request.show_deleted.then_some(true),
                    // Only what the engine reads (why each field is there is written with
                    // the mask). `get` stays unmasked: the write-back and the recreate read
                    // the event they PATCH and must keep all of its conference data.
                    fields: Some(confsync_gcal::EVENTS_SYNC_FIELDS.to_owned()),
                    ..ListParams::default()
                };
                let page = self
                    .client
                    .list_events_raw(calendar_id, &params)
                    .await
                    .map_err(classify)?;
                // Events stay JSON text: the core decodes only the fields it reads.
                Ok(Page {
                    items: page.items,
                    next_page_token: page.next_page_token,
                    next_sync_token: page.next_sync_token,
                })
            })
        }

        fn get<'a>(
            &'a self,
            calendar_id: &'a str,
            event_id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
            Box::pin(async move {
                match self.client.get_event(calendar_id, event_id).await {
                    Ok(event) => {
                        serde_json::to_value(event)
                            .map(Some)
                            .map_err(|e| CalendarError::Fatal {
                                detail: e.to_string(),
                            })
                    }
                    Err(GcalError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(classify(e)),
                }
            })
        }

        fn acl_role<'a>(
            &'a self,
            calendar_id: &'a str,
            rule_id: &'a str,
        ) -> BoxFuture<'a, Result<Option<AccessRole>, CalendarError>> {
            Box::pin(async move {
                match self.client.get_acl_rule(calendar_id, rule_id).await {
                    Ok(rule) => Ok(Some(
                        rule.get("role")
                            .and_then(Value::as_str)
                            .and_then(AccessRole::parse)
                            .unwrap_or(AccessRole::None),
                    )),
                    Err(GcalError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(classify(e)),
                }
            })
        }

        fn patch<'a>(
            &'a self,
            calendar_id: &'a str,
            event_id: &'a str,
            body: &'a Value,
            if_match: &'a str,
        ) -> BoxFuture<'a, Result<Value, CalendarError>> {
            Box::pin(async move {
                let event = self
                    .client
                    .patch_event(calendar_id, event_id, body, Some(if_match), 1)
                    .await
                    .map_err(classify)?;
                serde_json::to_value(event).map_err(|e| CalendarError::Fatal {
                    detail: e.to_string(),
                })
            })
        }
    }
}

/// Google Calendar through a service account with domain-wide delegation: each calendar is
/// reached as its owner (the JWT's `sub`), with one cached token source per owner.
pub mod delegated {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use confsync_gcal::auth::{CALENDAR_SCOPE, ServiceAccountKey, ServiceAccountTokens};
    use confsync_gcal::{Client, RetryPolicy};

    use super::google::GoogleCalendar;
    use super::*;

    /// The service-account calendar.
    pub struct DelegatedCalendar {
        key: ServiceAccountKey,
        base_url: String,
        http: reqwest::Client,
        /// Owner of calendars whose id is not a user's email (secondary calendars).
        default_subject: Option<String>,
        clients: Mutex<HashMap<String, Arc<GoogleCalendar>>>,
    }

    impl DelegatedCalendar {
        pub fn new(
            key: ServiceAccountKey,
            base_url: &str,
            default_subject: Option<String>,
        ) -> Self {
            DelegatedCalendar {
                key,
                base_url: base_url.to_owned(),
                http: reqwest::Client::new(),
                default_subject,
                clients: Mutex::new(HashMap::new()),
            }
        }

        /// Whom to act as for a calendar: a primary calendar's id is its owner's email;
        /// secondary calendars (`...@group.calendar.google.com`) use the default subject.
        pub fn subject_for(&self, calendar_id: &str) -> Option<String> {
            let is_user =
                calendar_id.contains('@') && !calendar_id.ends_with("calendar.google.com");
            if is_user {
                Some(calendar_id.to_ascii_lowercase())
            } else {
                self.default_subject.clone()
            }
        }

        fn calendar_for(&self, calendar_id: &str) -> Result<Arc<GoogleCalendar>, CalendarError> {
            let subject = self.subject_for(calendar_id).ok_or_else(|| CalendarError::Fatal {
                detail: format!("calendar {calendar_id}: no user to act as (set google.subject for secondary calendars)"),
            })?;
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(client) = clients.get(&subject) {
                return Ok(client.clone());
            }
            let tokens = ServiceAccountTokens::new(
                self.key.clone(),
                Some(subject.clone()),
                vec![CALENDAR_SCOPE.to_owned()],
                self.http.clone(),
            );
            let client = Client::new(&self.base_url, Arc::new(tokens), RetryPolicy::default())
                .map_err(|e| CalendarError::Fatal {
                    detail: e.to_string(),
                })?;
            let calendar = Arc::new(GoogleCalendar { client });
            clients.insert(subject, calendar.clone());
            Ok(calendar)
        }
    }

    /// Each call goes to the calendar's owner's client; a channel whose calendar is unknown
    /// (an orphan) is stopped as the default subject.
    impl Route for DelegatedCalendar {
        fn route<'a>(
            &'a self,
            calendar_id: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Arc<dyn CalendarApi>, CalendarError>> {
            Box::pin(async move {
                let target = match calendar_id {
                    Some(id) => id.to_owned(),
                    None => self
                        .default_subject
                        .clone()
                        .ok_or_else(|| CalendarError::Fatal {
                            detail: "no subject to stop an orphan channel as".into(),
                        })?,
                };
                let calendar: Arc<dyn CalendarApi> = self.calendar_for(&target)?;
                Ok(calendar)
            })
        }
    }
}

#[cfg(all(test, feature = "emulated"))]
mod tests {
    use std::sync::Arc;

    use confsync_emulator::faults::{FaultSpec, Faults};
    use confsync_emulator::{Emulator, EmulatorConfig, RunningEmulator};
    use confsync_gcal::{Client, RetryPolicy, StaticToken};
    use serde_json::json;

    use super::emulated::{EmulatorCalendar, classify};
    use super::google::GoogleCalendar;
    use super::*;

    const ALICE: &str = "alice@example.com";

    /// One emulator, reached two ways as Alice: production's client over HTTP (no retries, so
    /// each failure comes back as it was answered) and the in-process emulated calendar.
    async fn both() -> (RunningEmulator, GoogleCalendar, EmulatorCalendar) {
        let running = Emulator::new(EmulatorConfig::default())
            .spawn("127.0.0.1:0")
            .await
            .expect("emulator starts");
        running
            .shared()
            .world()
            .ensure_user(ALICE, None)
            .expect("user");
        let client = Client::new(
            running.base_url(),
            Arc::new(StaticToken(format!("dev:{ALICE}"))),
            RetryPolicy::never(),
        )
        .expect("client");
        let emulated = EmulatorCalendar::new(running.shared().clone(), Some(ALICE));
        (running, GoogleCalendar { client }, emulated)
    }

    fn full_listing() -> ListRequest {
        ListRequest {
            sync_token: None,
            page_token: None,
            time_min: None,
            show_deleted: false,
            max_results: 50,
        }
    }

    fn retryable(after: Option<u64>) -> impl Fn(&CalendarError) -> bool {
        move |e| {
            matches!(e, CalendarError::Retryable { retry_after, .. }
                if *retry_after == after.map(Duration::from_secs))
        }
    }

    fn fatal(e: &CalendarError) -> bool {
        matches!(e, CalendarError::Fatal { .. })
    }

    /// The same emulator error, classified in process and by production's client from the HTTP
    /// answer, is the same `CalendarError`: one table (gcal's) for both paths.
    #[tokio::test]
    async fn injected_errors_classify_identically_in_process_and_over_http() {
        let (running, google, _) = both().await;
        let http = reqwest::Client::new();
        type Expect = Box<dyn Fn(&CalendarError) -> bool>;
        let cases: Vec<(Value, Expect)> = vec![
            (
                json!({"status": 403, "reason": "rateLimitExceeded", "retryAfter": 7}),
                Box::new(retryable(Some(7))),
            ),
            (
                json!({"status": 403, "reason": "userRateLimitExceeded"}),
                Box::new(retryable(None)),
            ),
            (
                json!({"status": 429, "reason": "rateLimitExceeded", "retryAfter": 2}),
                Box::new(retryable(Some(2))),
            ),
            (
                json!({"status": 500, "reason": "backendError", "retryAfter": 3}),
                Box::new(retryable(Some(3))),
            ),
            (json!({"status": 502}), Box::new(retryable(None))),
            (json!({"status": 503}), Box::new(retryable(None))),
            (json!({"status": 504}), Box::new(retryable(None))),
            (
                json!({"status": 410, "reason": "fullSyncRequired"}),
                Box::new(|e: &CalendarError| *e == CalendarError::FullSyncRequired),
            ),
            (
                json!({"status": 410, "reason": "updatedMinTooLongAgo"}),
                Box::new(|e: &CalendarError| *e == CalendarError::FullSyncRequired),
            ),
            (json!({"status": 410, "reason": "deleted"}), Box::new(fatal)),
            (
                json!({"status": 412, "reason": "conditionNotMet"}),
                Box::new(|e: &CalendarError| *e == CalendarError::PreconditionFailed),
            ),
            (
                json!({"status": 404, "reason": "notFound"}),
                Box::new(fatal),
            ),
            (
                json!({"status": 403, "reason": "quotaExceeded"}),
                Box::new(fatal),
            ),
            (
                json!({"status": 403, "reason": "forbiddenForNonOrganizer", "domain": "calendar"}),
                Box::new(fatal),
            ),
            (
                json!({"status": 400, "reason": "badRequest", "retryAfter": 5}),
                Box::new(fatal),
            ),
            (json!({"status": 409}), Box::new(fatal)),
            (json!({"status": 413}), Box::new(fatal)),
        ];
        for (fault, expected) in cases {
            let mut spec = fault.clone();
            spec["count"] = json!(1);
            spec["method"] = json!("calendar.events.list");
            let added = http
                .post(format!("{}emulator/faults", running.base_url()))
                .json(&spec)
                .send()
                .await
                .expect("fault added");
            assert!(added.status().is_success(), "{spec}");
            let over_http = google
                .list(ALICE, &full_listing())
                .await
                .expect_err("the fault answers");

            // The error the emulator answers that fault with, classified in process.
            let mut faults = Faults::new(0);
            let spec: FaultSpec = serde_json::from_value(spec).expect("fault spec");
            faults.add(spec).expect("fault");
            let error = faults
                .judge("calendar.events.list", "GET", "/calendar/v3/")
                .error
                .expect("the fault answers");
            let in_process = classify("calendar.events.list", &format!("calendar {ALICE}"), error);

            assert_eq!(in_process, over_http, "{fault}");
            assert!(expected(&in_process), "{fault}: {in_process:?}");
        }
        running.shutdown();
    }

    /// Errors the emulator produces itself (not injected) come out the same through both
    /// calendars, details included.
    #[tokio::test]
    async fn natural_errors_are_the_same_through_both_calendars() {
        let (running, google, emulated) = both().await;
        let calendars: [&dyn CalendarApi; 2] = [&google, &emulated];

        // A sync token the emulator never issued: 410, a full sync.
        let forged = ListRequest {
            sync_token: Some("forged".into()),
            ..full_listing()
        };
        let [a, b] = [
            calendars[0].list(ALICE, &forged).await.err(),
            calendars[1].list(ALICE, &forged).await.err(),
        ];
        assert_eq!((&a, &b), (&Some(CalendarError::FullSyncRequired), &a));

        // Someone else's calendar: 404, fatal for a listing, "absent" for a get.
        let [a, b] = [
            calendars[0]
                .list("bob@example.com", &full_listing())
                .await
                .err(),
            calendars[1]
                .list("bob@example.com", &full_listing())
                .await
                .err(),
        ];
        assert!(a.as_ref().is_some_and(fatal), "{a:?}");
        assert_eq!(a, b);
        for calendar in calendars {
            assert_eq!(calendar.get("bob@example.com", "x").await, Ok(None));
            assert_eq!(calendar.get(ALICE, "missing").await, Ok(None));
        }

        // A PATCH of a missing event (404), and with a stale etag (412).
        let body = json!({"summary": "x"});
        let [a, b] = [
            calendars[0]
                .patch(ALICE, "missing", &body, "\"1\"")
                .await
                .err(),
            calendars[1]
                .patch(ALICE, "missing", &body, "\"1\"")
                .await
                .err(),
        ];
        assert!(a.as_ref().is_some_and(fatal), "{a:?}");
        assert_eq!(a, b);
        let event = running
            .shared()
            .world()
            .insert_event(
                running.shared().clock.now(),
                ALICE,
                json!({"summary": "e", "start": {"dateTime": "2026-12-01T10:00:00Z"},
                       "end": {"dateTime": "2026-12-01T11:00:00Z"}}),
                confsync_emulator::store::WriteKind::Insert,
                &confsync_emulator::store::WriteOptions {
                    conference_data_version: 0,
                    if_match: None,
                },
            )
            .expect("event");
        let id = serde_json::from_str::<Value>(&event).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        for calendar in calendars {
            assert_eq!(
                calendar.patch(ALICE, &id, &body, "\"1\"").await.err(),
                Some(CalendarError::PreconditionFailed)
            );
        }
        running.shutdown();
    }

    /// The sync's listing mask keeps every field a [`Snapshot`] reads: over a calendar with a bit
    /// of everything (add-on and Meet conferences, guests and rooms, an all-day event, a series
    /// with a moved and a cancelled instance, a deleted event), the masked listing production
    /// sends parses to the same snapshots as the whole events, and is smaller.
    #[tokio::test]
    async fn the_listing_mask_keeps_everything_a_snapshot_reads() {
        use confsync_core::model::Snapshot;
        use confsync_emulator::store::{WriteKind, WriteOptions};
        use confsync_gcal::ListParams;

        let (running, google, _) = both().await;
        let shared = running.shared();
        let now = shared.clock.now();
        let opts = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        let events = [
            json!({"summary": "Rich", "description": "<b>Agenda</b>", "location": "Room 1",
                   "colorId": "5", "start": {"dateTime": "2026-12-01T10:00:00+01:00",
                   "timeZone": "Europe/Berlin"}, "end": {"dateTime": "2026-12-01T11:00:00+01:00"},
                   "attendees": [{"email": "Bob@Example.com", "responseStatus": "accepted"},
                                 {"email": "room-1@example.com", "resource": true},
                                 {"email": ALICE, "organizer": true}],
                   "extendedProperties": {"private": {"k": "v"}},
                   "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]},
                   "conferenceData": {
                       "conferenceId": "meeting-42",
                       "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync",
                                              "iconUri": "https://example.com/i.png"},
                       "entryPoints": [
                           {"entryPointType": "video", "uri": "https://meet.example.com/42",
                            "label": "meet.example.com/42"},
                           {"entryPointType": "phone", "uri": "tel:+1-555-0100", "pin": "1234"}],
                       "parameters": {"addOnParameters": {"parameters": {"meetingId": "42"}}},
                       "notes": "Join with the link"}}),
            json!({"summary": "Meet", "start": {"dateTime": "2026-12-02T10:00:00Z"},
                   "end": {"dateTime": "2026-12-02T10:30:00Z"},
                   "conferenceData": {"createRequest": {"requestId": "r-1",
                       "conferenceSolutionKey": {"type": "hangoutsMeet"}}}}),
            json!({"summary": "Holiday", "start": {"date": "2026-12-24"},
                   "end": {"date": "2026-12-25"}}),
            json!({"summary": "Weekly", "start": {"dateTime": "2026-12-07T10:00:00",
                   "timeZone": "Europe/Berlin"}, "end": {"dateTime": "2026-12-07T10:30:00",
                   "timeZone": "Europe/Berlin"}, "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=5"]}),
            json!({"summary": "Gone", "start": {"dateTime": "2026-12-03T10:00:00Z"},
                   "end": {"dateTime": "2026-12-03T11:00:00Z"}}),
        ];
        let mut ids = Vec::new();
        {
            let mut world = shared.world();
            for event in events {
                let written = world
                    .insert_event(now, ALICE, event, WriteKind::Insert, &opts)
                    .expect("insert");
                let value: Value = serde_json::from_str(&written).expect("json");
                ids.push(value["id"].as_str().expect("id").to_owned());
            }
            let series = &ids[3];
            world
                .write_event(
                    now,
                    ALICE,
                    &format!("{series}_20261214T090000Z"),
                    json!({"start": {"dateTime": "2026-12-14T11:00:00+01:00"},
                           "end": {"dateTime": "2026-12-14T11:30:00+01:00"}}),
                    WriteKind::Patch,
                    &opts,
                )
                .expect("moved instance");
            world
                .delete_event(now, ALICE, &format!("{series}_20261221T090000Z"), None)
                .expect("cancelled instance");
            world
                .delete_event(now, ALICE, &ids[4], None)
                .expect("deleted event");
        }

        let request = ListRequest {
            show_deleted: true,
            max_results: 2500,
            ..full_listing()
        };
        let masked = google.list(ALICE, &request).await.expect("masked listing");
        assert!(masked.next_sync_token.is_some());
        let whole = google
            .client
            .list_events_raw(
                ALICE,
                &ListParams {
                    max_results: Some(2500),
                    show_deleted: Some(true),
                    ..ListParams::default()
                },
            )
            .await
            .expect("whole listing");
        assert_eq!(masked.items.len(), whole.items.len());
        assert_eq!(
            masked.items.len(),
            7,
            "5 events, a moved and a cancelled instance"
        );
        let snapshots = |items: &[Box<serde_json::value::RawValue>]| {
            let mut snapshots: Vec<Snapshot> = items
                .iter()
                .map(|raw| Snapshot::from_json_str(raw.get()).expect("a snapshot"))
                .collect();
            snapshots.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            snapshots
        };
        let from_masked = snapshots(&masked.items);
        assert_eq!(from_masked, snapshots(&whole.items));
        // The listing really has what the comparison is about.
        let rich = from_masked
            .iter()
            .find(|s| s.event_id == ids[0])
            .expect("rich");
        let conference = rich.conference.as_ref().expect("conference");
        assert_eq!(
            conference.join_uri.as_deref(),
            Some("https://meet.example.com/42")
        );
        assert_eq!(conference.parameters["meetingId"], "42");
        assert_eq!(conference.solution_name.as_deref(), Some("Confsync"));
        let spec = rich.spec.as_ref().expect("spec");
        assert_eq!(spec.attendees, ["alice@example.com", "bob@example.com"]);
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert!(rich.organizer_self && rich.etag.is_some());
        let meet = from_masked
            .iter()
            .find(|s| s.event_id == ids[1])
            .expect("meet");
        assert_eq!(
            meet.conference.as_ref().map(|c| c.solution_type.as_str()),
            Some("hangoutsMeet")
        );
        assert!(
            from_masked
                .iter()
                .any(|s| s.is_cancelled() && s.recurring_event_id.is_some())
        );
        assert!(
            from_masked
                .iter()
                .any(|s| s.is_cancelled() && s.event_id == ids[4])
        );
        let bytes = |items: &[Box<serde_json::value::RawValue>]| {
            items.iter().map(|raw| raw.get().len()).sum::<usize>()
        };
        assert!(
            bytes(&masked.items) * 2 < bytes(&whole.items),
            "{} masked bytes, {} whole",
            bytes(&masked.items),
            bytes(&whole.items)
        );
        running.shutdown();
    }
}
