//! `events.list` and `events.instances`: filters, paging, sync tokens, series expansion.
//!
//! Two orders serve almost every listing without sorting: event id order for full listings and
//! change order for incremental ones (both are the calendar's own indexes). A page token records
//! where the last page stopped and the change number of the first page (the snapshot); the last
//! page's sync token stands for that snapshot, so a change made while a client pages through is
//! returned by the next incremental listing, never lost. `orderBy` listings sort what matches.

use std::ops::Bound;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ids::fnv1a;
use crate::recurrence::OccurrenceStart;
use crate::store::{Calendar, StoredEvent, World, instance_value};
use crate::time::{parse_param_time, parse_tz, rfc3339};
use crate::tokens::{Cursor, PageToken, SyncToken};

/// Instances of an unbounded series are expanded this far past "now" when no `timeMax` is given.
pub const EXPANSION_HORIZON_DAYS: i64 = 730;
/// And at most this many per series and request.
pub const EXPANSION_LIMIT: usize = 2500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    StartTime,
    Updated,
}

/// A parsed `events.list` / `events.instances` query.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub max_results: usize,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub single_events: bool,
    pub show_deleted: Option<bool>,
    pub time_min: Option<DateTime<Utc>>,
    pub time_max: Option<DateTime<Utc>>,
    pub updated_min: Option<DateTime<Utc>>,
    pub q: Vec<String>,
    pub order_by: Option<OrderBy>,
    pub ical_uid: Option<String>,
    pub private_props: Vec<(String, String)>,
    pub shared_props: Vec<(String, String)>,
    pub event_types: Vec<String>,
    pub time_zone: Option<Tz>,
    pub max_attendees: Option<usize>,
    pub original_start: Option<String>,
    /// Binds page tokens to the query they came from.
    pub fingerprint: u64,
}

/// Parameters that never change what a listing returns (they do not bind page tokens).
pub(crate) const NEUTRAL: &[&str] = &[
    "pageToken",
    "maxResults",
    "alt",
    "prettyPrint",
    "fields",
    "key",
    "quotaUser",
    "userIp",
    "access_token",
    "oauth_token",
    "$.xgafv",
    "callback",
    "upload_protocol",
    "uploadType",
];

pub(crate) fn bool_param(name: &str, value: &str) -> ApiResult<bool> {
    match value {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        other => Err(
            ApiError::invalid(format!("Invalid boolean value for {name}: \"{other}\""))
                .at("parameter", name.to_owned()),
        ),
    }
}

pub(crate) fn int_param(name: &str, value: &str) -> ApiResult<i64> {
    value.parse::<i64>().map_err(|_| {
        ApiError::invalid(format!("Invalid integer value for {name}: \"{value}\""))
            .at("parameter", name.to_owned())
    })
}

/// `maxResults`: at least 1 (else 400), capped at `cap` (Google caps silently).
pub(crate) fn max_results_param(name: &str, value: &str, cap: usize) -> ApiResult<usize> {
    let n = int_param(name, value)?;
    if n < 1 {
        return Err(ApiError::invalid(format!(
            "Invalid value for maxResults: {n} (must be at least 1)"
        ))
        .at("parameter", "maxResults"));
    }
    Ok(n.min(cap as i64) as usize)
}

/// What binds a page token to its query: the listing's `scope` and the query's parameters
/// (sorted, [`NEUTRAL`] ones left out).
pub(crate) fn query_fingerprint(scope: &[&[u8]], params: &[(String, String)]) -> u64 {
    let mut bound: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| !NEUTRAL.contains(k))
        .collect();
    bound.sort_unstable();
    let parts: Vec<&[u8]> = scope
        .iter()
        .copied()
        .chain(bound.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]))
        .collect();
    fnv1a(&parts)
}

/// Google's answer to a sync token sent with a parameter that restricts the listing.
pub(crate) fn sync_token_with_restrictions() -> ApiError {
    ApiError::new(
        400,
        "calendar",
        "syncTokenWithRequestRestrictions",
        "Sync token cannot be used with other request restrictions.",
    )
    .at("parameter", "syncToken")
}

fn property_filter(name: &str, value: &str) -> ApiResult<(String, String)> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid value for {name}: \"{value}\" (expected propertyName=value)"
            ))
            .at("parameter", name.to_owned())
        })
}

impl ListQuery {
    /// Parses the query string parameters of a listing.
    pub fn parse(calendar_id: &str, params: &[(String, String)]) -> ApiResult<ListQuery> {
        let mut q = ListQuery {
            max_results: 250,
            ..Default::default()
        };
        for (name, value) in params {
            let (name, value) = (name.as_str(), value.as_str());
            match name {
                "maxResults" => q.max_results = max_results_param(name, value, 2500)?,
                "pageToken" => q.page_token = Some(value.to_owned()),
                "syncToken" => q.sync_token = Some(value.to_owned()),
                "singleEvents" => q.single_events = bool_param(name, value)?,
                "showDeleted" => q.show_deleted = Some(bool_param(name, value)?),
                "timeMin" => q.time_min = Some(parse_param_time(name, value)?),
                "timeMax" => q.time_max = Some(parse_param_time(name, value)?),
                "updatedMin" => q.updated_min = Some(parse_param_time(name, value)?),
                "q" => q.q = value.split_whitespace().map(str::to_lowercase).collect(),
                "orderBy" => {
                    q.order_by = Some(match value {
                        "startTime" => OrderBy::StartTime,
                        "updated" => OrderBy::Updated,
                        other => {
                            return Err(ApiError::invalid(format!("Invalid value for orderBy: \"{other}\" (expected startTime or updated)")).at("parameter", "orderBy"));
                        }
                    })
                }
                "iCalUID" => q.ical_uid = Some(value.to_owned()),
                "privateExtendedProperty" => q.private_props.push(property_filter(name, value)?),
                "sharedExtendedProperty" => q.shared_props.push(property_filter(name, value)?),
                "eventTypes" => q.event_types.push(value.to_owned()),
                "timeZone" => q.time_zone = Some(parse_tz(value, "timeZone")?),
                "maxAttendees" => {
                    let n = int_param(name, value)?;
                    q.max_attendees = Some(n.max(1) as usize);
                }
                "originalStart" => q.original_start = Some(value.to_owned()),
                _ => {}
            }
        }
        q.fingerprint = query_fingerprint(&[calendar_id.as_bytes()], params);

        if q.sync_token.is_some() {
            let restricted = q.ical_uid.is_some()
                || q.order_by.is_some()
                || !q.private_props.is_empty()
                || !q.shared_props.is_empty()
                || !q.q.is_empty()
                || q.time_min.is_some()
                || q.time_max.is_some()
                || q.updated_min.is_some()
                || q.show_deleted == Some(false);
            if restricted {
                return Err(sync_token_with_restrictions());
            }
        }
        if let (Some(min), Some(max)) = (q.time_min, q.time_max)
            && min >= max
        {
            return Err(ApiError::new(
                400,
                "calendar",
                "timeRangeEmpty",
                "The specified time range is empty.",
            )
            .at("parameter", "timeMax"));
        }
        if q.order_by == Some(OrderBy::StartTime) && !q.single_events {
            return Err(ApiError::bad_request(
                "The requested ordering is not available for the particular query.",
            )
            .at("parameter", "orderBy"));
        }
        Ok(q)
    }
}

/// A page being filled. It takes one item more than it returns, to know whether more follow.
struct Page {
    limit: usize,
    items: Vec<String>,
    last: Option<Cursor>,
    more: bool,
}

impl Page {
    fn new(limit: usize) -> Self {
        Page {
            limit,
            items: Vec::new(),
            last: None,
            more: false,
        }
    }

    /// Adds an item; false when the page is full (and the item is not taken).
    fn push(&mut self, at: Cursor, item: String) -> bool {
        if self.items.len() == self.limit {
            self.more = true;
            return false;
        }
        self.items.push(item);
        self.last = Some(at);
        true
    }
}

/// What a listing shows of each event.
struct View<'a> {
    query: &'a ListQuery,
    now: DateTime<Utc>,
    /// Incremental listings always show deletions.
    show_deleted: bool,
}

impl View<'_> {
    /// Where expansion stops: `timeMax`, else nowhere for a finite series, else the horizon.
    fn window_end(&self, series: &crate::store::Series) -> Option<DateTime<Utc>> {
        match (self.query.time_max, series.recurrence.last_start()) {
            (Some(max), _) => Some(max),
            (None, Some(_)) => None,
            (None, None) => Some(self.now + Duration::days(EXPANSION_HORIZON_DAYS)),
        }
    }

    fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        let q = self.query;
        // Zero-length events still count at their start.
        let end = end.max(start + Duration::seconds(1));
        q.time_min.is_none_or(|min| end > min) && q.time_max.is_none_or(|max| start < max)
    }

    /// Filters that need the event's content (q, extended properties, iCalUID, event types).
    fn content_matches(&self, ev: &StoredEvent, value: Option<&Map<String, Value>>) -> bool {
        let q = self.query;
        if let Some(uid) = &q.ical_uid
            && &ev.ical_uid != uid
        {
            return false;
        }
        if !q.event_types.is_empty() && !q.event_types.contains(&ev.event_type) {
            return false;
        }
        if q.q.is_empty() && q.private_props.is_empty() && q.shared_props.is_empty() {
            return true;
        }
        let owned;
        let value = match value {
            Some(v) => v,
            None => {
                owned = ev.value();
                &owned
            }
        };
        let props_match = |kind: &str, wanted: &[(String, String)]| {
            wanted.iter().all(|(k, v)| {
                value
                    .get("extendedProperties")
                    .and_then(|p| p.get(kind))
                    .and_then(|p| p.get(k))
                    .and_then(Value::as_str)
                    == Some(v)
            })
        };
        if !props_match("private", &q.private_props) || !props_match("shared", &q.shared_props) {
            return false;
        }
        if q.q.is_empty() {
            return true;
        }
        let mut text = String::new();
        for key in ["summary", "description", "location"] {
            if let Some(s) = value.get(key).and_then(Value::as_str) {
                text.push_str(&s.to_lowercase());
                text.push('\n');
            }
        }
        for person in value
            .get("attendees")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(value.get("organizer"))
        {
            for key in ["email", "displayName"] {
                if let Some(s) = person.get(key).and_then(Value::as_str) {
                    text.push_str(&s.to_lowercase());
                    text.push('\n');
                }
            }
        }
        q.q.iter().all(|term| text.contains(term.as_str()))
    }

    /// The item for a stored event as listed (tombstone when cancelled), or None when hidden.
    fn item(&self, id: &str, ev: &StoredEvent) -> Option<String> {
        if ev.cancelled {
            let visible = self.show_deleted || self.query.updated_min.is_some();
            return visible.then(|| ev.tombstone(id));
        }
        if let Some(min) = self.query.updated_min
            && ev.updated < min
        {
            return None;
        }
        let in_window = match &ev.series {
            Some(_) => {
                self.query.time_max.is_none_or(|max| ev.start < max)
                    && self
                        .query
                        .time_min
                        .is_none_or(|min| ev.span_end().is_none_or(|end| end > min))
            }
            None => self.overlaps(ev.start, ev.end),
        };
        if !in_window || !self.content_matches(ev, None) {
            return None;
        }
        Some(self.shaped(&ev.json))
    }

    /// Applies `maxAttendees` (the only per-request reshaping of an item).
    fn shaped(&self, json: &str) -> String {
        let Some(max) = self.query.max_attendees else {
            return json.to_owned();
        };
        let Ok(Value::Object(mut value)) = serde_json::from_str::<Value>(json) else {
            return json.to_owned();
        };
        if let Some(list) = value.get_mut("attendees").and_then(Value::as_array_mut)
            && list.len() > max
        {
            list.retain(|a| {
                a.get("self") == Some(&json!(true)) || a.get("organizer") == Some(&json!(true))
            });
            list.truncate(max);
            value.insert("attendeesOmitted".into(), json!(true));
        }
        Value::Object(value).to_string()
    }

    /// The instances of series `id` as listed with `singleEvents=true`, ordered by original
    /// start: (original start key, item). Exceptions replace the occurrence they modify.
    fn instances(
        &self,
        cal: &Calendar,
        id: &str,
        master: &StoredEvent,
        after: Option<i64>,
    ) -> Vec<(i64, String)> {
        let Some(series) = &master.series else {
            return Vec::new();
        };
        let prefix = format!("{id}_");
        let exceptions: Vec<(&String, &StoredEvent)> = cal
            .events
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .collect();
        let master_value = if master.cancelled {
            Map::new()
        } else {
            master.value()
        };
        let mut out: Vec<(i64, String)> = Vec::new();
        // A cancelled series: every instance is reported deleted.
        let window_start = if master.cancelled {
            None
        } else {
            self.query.time_min
        };
        let occurrences = series.recurrence.occurrences(
            series.duration,
            window_start,
            self.window_end(series),
            EXPANSION_LIMIT,
        );
        for start in occurrences {
            let key = occurrence_key(start);
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            let instance_id = crate::recurrence::instance_id(id, start);
            if exceptions.iter().any(|(k, _)| **k == instance_id) {
                continue;
            }
            if master.cancelled {
                if self.show_deleted {
                    let mut t = json!({"kind": "calendar#event", "etag": master.etag, "id": instance_id, "status": "cancelled", "recurringEventId": id});
                    t["originalStartTime"] = crate::time::occurrence_json(start, series.tz);
                    out.push((key, t.to_string()));
                }
                continue;
            }
            let (value, _) = instance_value(id, master, &master_value, start);
            if !self.content_matches(master, Some(&value)) {
                continue;
            }
            if let Some(min) = self.query.updated_min
                && master.updated < min
            {
                continue;
            }
            out.push((key, self.shaped(&Value::Object(value).to_string())));
        }
        for (exception_id, ev) in exceptions {
            let Some((_, original, _)) = &ev.instance_of else {
                continue;
            };
            let key = occurrence_key(*original);
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if let Some(item) = self.item(exception_id, ev) {
                out.push((key, item));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Emits one stored event (expanded when it is a series and singleEvents is on).
    fn emit(
        &self,
        cal: &Calendar,
        id: &str,
        ev: &StoredEvent,
        at: impl Fn(Option<i64>) -> Cursor,
        after: Option<i64>,
        page: &mut Page,
    ) -> bool {
        if self.query.single_events {
            if ev.instance_of.is_some() && !self.incremental_exception(ev) {
                return true; // listed with its series
            }
            if ev.series.is_some() {
                for (key, item) in self.instances(cal, id, ev, after) {
                    if !page.push(at(Some(key)), item) {
                        return false;
                    }
                }
                // A cancelled series with showDeleted off still owes its tombstone to
                // incremental clients that saw the series (none do in single mode).
                return true;
            }
        }
        if self.cancelled_instance_of_live_series(cal, ev) {
            return page.push(at(None), ev.tombstone(id));
        }
        match self.item(id, ev) {
            Some(item) => page.push(at(None), item),
            None => true,
        }
    }

    /// The discovery document's `showDeleted`: "Cancelled instances of recurring events (but not
    /// the underlying recurring event) will still be included if showDeleted and singleEvents are
    /// both False." They keep the tombstone shape (id, recurringEventId, originalStartTime).
    fn cancelled_instance_of_live_series(&self, cal: &Calendar, ev: &StoredEvent) -> bool {
        if !ev.cancelled || ev.moved_away || self.query.single_events || self.show_deleted {
            return false;
        }
        let Some((series_id, _, _)) = &ev.instance_of else {
            return false;
        };
        if self.query.updated_min.is_some() {
            return false; // `item` lists every tombstone then
        }
        cal.events
            .get(series_id)
            .is_some_and(|master| !master.cancelled && !master.moved_away)
            && self.overlaps(ev.start, ev.end)
            && self.content_matches(ev, None)
    }

    fn incremental_exception(&self, _ev: &StoredEvent) -> bool {
        self.query.sync_token.is_some()
    }
}

/// The Unix-seconds key of an occurrence (dates at midnight UTC), used in cursors.
pub fn occurrence_key(start: OccurrenceStart) -> i64 {
    match start {
        OccurrenceStart::DateTime(at) => at.timestamp(),
        OccurrenceStart::Date(d) => d
            .and_hms_opt(0, 0, 0)
            .map(|n| n.and_utc().timestamp())
            .unwrap_or(0),
    }
}

impl World {
    /// `events.list` on a calendar the caller may read. Returns the response body.
    pub fn list_events(
        &self,
        cal_id: &str,
        query: &ListQuery,
        now: DateTime<Utc>,
        sync_token_max_age: Option<Duration>,
    ) -> ApiResult<String> {
        let cal = self.calendar(cal_id)?;
        let page_token = match &query.page_token {
            Some(token) => {
                let parsed: PageToken = self
                    .signer
                    .open(token)
                    .filter(|t: &PageToken| t.query == query.fingerprint)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "Invalid pageToken: it is malformed or belongs to a different query.",
                        )
                        .at("parameter", "pageToken")
                    })?;
                Some(parsed)
            }
            None => None,
        };
        let from_seq = match &query.sync_token {
            Some(token) => {
                let parsed: SyncToken = self
                    .signer
                    .open(token)
                    .ok_or_else(ApiError::full_sync_required)?;
                let too_old = sync_token_max_age
                    .is_some_and(|age| now.timestamp() - parsed.issued > age.num_seconds());
                if parsed.cal != cal.num
                    || parsed.epoch != cal.token_epoch
                    || too_old
                    || parsed.seq > cal.seq
                {
                    return Err(ApiError::full_sync_required());
                }
                if parsed.single != query.single_events {
                    return Err(ApiError::bad_request(format!(
                        "This sync token was issued for singleEvents={}; use the same value as the full sync that produced it.",
                        parsed.single
                    ))
                    .at("parameter", "singleEvents"));
                }
                Some(parsed.seq)
            }
            None => None,
        };
        if let (Some(min), None) = (query.updated_min, &query.sync_token)
            && sync_token_max_age.is_some_and(|age| now - min > age)
        {
            return Err(ApiError::new(
                410,
                "calendar",
                "updatedMinTooLongAgo",
                "The requested minimum modification time lies too far in the past.",
            )
            .at("parameter", "updatedMin"));
        }
        let snapshot = page_token.as_ref().map_or(cal.seq, |t| t.snapshot);
        let view = View {
            query,
            now,
            show_deleted: from_seq.is_some() || query.show_deleted == Some(true),
        };
        let mut page = Page::new(query.max_results);
        let cursor = page_token.as_ref().map(|t| t.cursor.clone());

        if let Some(order) = query.order_by {
            let offset = match cursor {
                Some(Cursor::Offset(n)) => n,
                _ => 0,
            };
            let mut all: Vec<(String, String)> = Vec::new();
            for (id, ev) in &cal.events {
                let mut sink = Page::new(usize::MAX);
                view.emit(cal, id, ev, |_| Cursor::Offset(0), None, &mut sink);
                for item in sink.items {
                    let sort_key = sort_key(&item, order);
                    all.push((sort_key, item));
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            for (i, (_, item)) in all.into_iter().enumerate().skip(offset) {
                if !page.push(Cursor::Offset(i + 1), item) {
                    break;
                }
            }
        } else if let Some(from) = from_seq {
            let (start, after) = match cursor {
                Some(Cursor::Seq(seq, occ)) => (
                    if occ.is_some() {
                        Bound::Included(seq)
                    } else {
                        Bound::Excluded(seq)
                    },
                    occ,
                ),
                _ => (Bound::Excluded(from), None),
            };
            for (seq, id) in cal.changes.range((start, Bound::Included(snapshot))) {
                let Some(ev) = cal.events.get(id) else {
                    continue;
                };
                let resume = if Some(*seq) == cursor_seq(&page_token) {
                    after
                } else {
                    None
                };
                let seq = *seq;
                if !view.emit(cal, id, ev, |occ| Cursor::Seq(seq, occ), resume, &mut page) {
                    break;
                }
            }
        } else {
            let (start, after, cursor_id) = match &cursor {
                Some(Cursor::Id(id, occ)) => (
                    if occ.is_some() {
                        Bound::Included(id.clone())
                    } else {
                        Bound::Excluded(id.clone())
                    },
                    *occ,
                    Some(id.clone()),
                ),
                _ => (Bound::Unbounded, None, None),
            };
            for (id, ev) in cal.events.range::<String, _>((start, Bound::Unbounded)) {
                let resume = if cursor_id.as_deref() == Some(id.as_str()) {
                    after
                } else {
                    None
                };
                if !view.emit(
                    cal,
                    id,
                    ev,
                    |occ| Cursor::Id(id.clone(), occ),
                    resume,
                    &mut page,
                ) {
                    break;
                }
            }
        }

        let next = if page.more {
            let last = page.last.clone().unwrap_or(Cursor::Offset(0));
            (
                "nextPageToken",
                self.signer.seal(&PageToken {
                    query: query.fingerprint,
                    snapshot,
                    cursor: last,
                }),
            )
        } else {
            (
                "nextSyncToken",
                self.signer.seal(&SyncToken {
                    cal: cal.num,
                    epoch: cal.token_epoch,
                    seq: snapshot,
                    issued: now.timestamp(),
                    single: query.single_events,
                }),
            )
        };
        Ok(envelope(cal, query, next, &page.items))
    }

    /// `events.instances`: the instances of one series (exceptions included), paged by offset.
    pub fn list_instances(
        &self,
        cal_id: &str,
        event_id: &str,
        query: &ListQuery,
        now: DateTime<Utc>,
    ) -> ApiResult<String> {
        let cal = self.calendar(cal_id)?;
        let master = cal.events.get(event_id).ok_or_else(ApiError::not_found)?;
        if master.series.is_none() {
            return Err(ApiError::bad_request("The event is not a recurring event.")
                .at("parameter", "eventId"));
        }
        let offset = match &query.page_token {
            Some(token) => match self
                .signer
                .open::<PageToken>(token)
                .filter(|t| t.query == query.fingerprint)
            {
                Some(PageToken {
                    cursor: Cursor::Offset(n),
                    ..
                }) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "Invalid pageToken: it is malformed or belongs to a different query.",
                    )
                    .at("parameter", "pageToken"));
                }
            },
            None => 0,
        };
        let single = ListQuery {
            single_events: true,
            ..query.clone()
        };
        let view = View {
            query: &single,
            now,
            show_deleted: query.show_deleted == Some(true),
        };
        let mut items = view.instances(cal, event_id, master, None);
        if let Some(original) = &query.original_start {
            let wanted =
                crate::time::EventTime::parse(&json!({"dateTime": original}), "originalStart")
                    .or_else(|_| {
                        crate::time::EventTime::parse(&json!({"date": original}), "originalStart")
                    })?;
            let key = match wanted {
                crate::time::EventTime::Date(d) => occurrence_key(OccurrenceStart::Date(d)),
                crate::time::EventTime::DateTime { at, .. } => at.timestamp(),
            };
            items.retain(|(k, _)| *k == key);
        }
        let mut page = Page::new(query.max_results);
        for (i, (_, item)) in items.into_iter().enumerate().skip(offset) {
            if !page.push(Cursor::Offset(i + 1), item) {
                break;
            }
        }
        let next = if page.more {
            (
                "nextPageToken",
                self.signer.seal(&PageToken {
                    query: query.fingerprint,
                    snapshot: cal.seq,
                    cursor: page.last.clone().unwrap_or(Cursor::Offset(0)),
                }),
            )
        } else {
            ("", String::new())
        };
        Ok(envelope(cal, query, next, &page.items))
    }
}

fn cursor_seq(token: &Option<PageToken>) -> Option<u64> {
    match token {
        Some(PageToken {
            cursor: Cursor::Seq(seq, _),
            ..
        }) => Some(*seq),
        _ => None,
    }
}

fn sort_key(item: &str, order: OrderBy) -> String {
    let value: Value = serde_json::from_str(item).unwrap_or_default();
    let id = value.get("id").and_then(Value::as_str).unwrap_or("");
    match order {
        OrderBy::Updated => format!(
            "{}\u{0}{id}",
            value.get("updated").and_then(Value::as_str).unwrap_or("")
        ),
        OrderBy::StartTime => {
            let start = value
                .get("start")
                .and_then(|s| crate::time::EventTime::parse(s, "start").ok())
                .map(|t| t.instant(Tz::UTC).timestamp())
                .unwrap_or(i64::MIN);
            // Offset keeps negative times sortable as text.
            format!("{:020}\u{0}{id}", i128::from(start) + i128::from(i64::MAX))
        }
    }
}

/// The `calendar#events` response around the items (which are already JSON text).
fn envelope(cal: &Calendar, query: &ListQuery, next: (&str, String), items: &[String]) -> String {
    let updated = rfc3339(cal.updated);
    let tz = query.time_zone.unwrap_or(cal.tz);
    let mut head = json!({
        "kind": "calendar#events",
        "etag": format!("\"{}\"", cal.seq.wrapping_mul(2).wrapping_add(cal.num << 40)),
        "summary": cal.summary,
        "description": "",
        "updated": updated,
        "timeZone": tz.name(),
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}],
    });
    if !next.0.is_empty() {
        head[next.0] = json!(next.1);
    }
    let mut out = head.to_string();
    out.pop(); // the closing brace: items follow
    let capacity = out.len() + items.iter().map(|i| i.len() + 1).sum::<usize>() + 16;
    out.reserve(capacity);
    out.push_str(",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str("]}");
    out
}
