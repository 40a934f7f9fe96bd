//! The emulated world: users, calendars, events, and every rule of writing an event.
//!
//! Each calendar keeps its events in id order (full listings page through them) and a change log
//! keyed by a per-calendar sequence number (incremental listings page through that). Every write
//! gives the event a new sequence number, so "every change after token T" is a range query and a
//! change made while a client pages through a listing always lands after the listing's snapshot.
//!
//! Events are stored as the exact JSON Google would return, plus the few fields the emulator must
//! filter and sort on; that keeps listings cheap (copy bytes) and memory small.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::acl::{AclRule, Role};
use crate::error::{ApiError, ApiResult};
use crate::ids::{IdGen, fnv1a, is_valid_event_id};
use crate::recurrence::{self, OccurrenceStart, Recurrence};
use crate::schema;
use crate::time::{EventTime, occurrence_json, parse_tz, rfc3339};
use crate::tokens::TokenSigner;

/// A user of the emulated domain.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub display_name: Option<String>,
}

/// A calendar and its events.
pub struct Calendar {
    pub id: String,
    /// Internal number, bound into sync tokens.
    pub num: u64,
    pub owner: String,
    pub summary: String,
    pub tz: Tz,
    pub primary: bool,
    /// Stable id of the calendar's events collection, as push channels report it.
    pub resource_id: String,
    pub events: BTreeMap<String, StoredEvent>,
    /// Change log: sequence number -> event id (each event appears once, at its last change).
    pub changes: BTreeMap<u64, String>,
    pub seq: u64,
    /// The latest `updated` of any event (the listing's `updated`).
    pub updated: DateTime<Utc>,
    /// Bumped to invalidate every sync token issued before.
    pub token_epoch: u32,
    /// The access control list: rule id (`user:bob@example.com`, `domain:example.com`,
    /// `default`) -> rule. Deleted rules stay as tombstones for `acl.list` sync (see `acl.rs`).
    pub acl: BTreeMap<String, AclRule>,
    /// The ACL's change number (every rule change takes the next one).
    pub acl_seq: u64,
    /// Calendar list entries of this calendar, by user: the owner's, and one for every user the
    /// calendar is shared with by a `user:` rule (see `World::sync_list_entries`).
    pub list: BTreeMap<String, ListEntry>,
}

/// One user's calendar list entry for a calendar.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// The world's list change number of the entry's last change.
    pub seq: u64,
    /// The entry is hidden from the list (`hidden: true`).
    pub hidden: bool,
    /// The entry was removed from the list (`deleted: true`; the calendar itself lives on).
    pub deleted: bool,
    /// The `accessRole` the entry shows; `Role::None` once the user's access was removed (the
    /// entry is then `deleted`).
    pub role: Role,
}

impl Calendar {
    /// The user's own primary calendar (`primary` means this one for them; shared primary
    /// calendars of others are not).
    pub fn is_primary_of(&self, user: &str) -> bool {
        self.primary && self.owner == user
    }
}

/// A recurring series' expansion data.
pub struct Series {
    pub recurrence: Recurrence,
    pub duration: Duration,
    /// The zone the series expands in (its start.timeZone), None for all-day series.
    pub tz: Option<Tz>,
    pub all_day: bool,
}

/// One stored event: the resource as Google returns it, plus what listing needs.
pub struct StoredEvent {
    pub json: Box<str>,
    pub etag: String,
    pub seq: u64,
    pub updated: DateTime<Utc>,
    pub cancelled: bool,
    /// Left behind by `events.move`: only the id is known any more.
    pub moved_away: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub series: Option<Box<Series>>,
    /// For exceptions (modified or cancelled instances): the series id and original start.
    pub instance_of: Option<(String, OccurrenceStart, Option<Tz>)>,
    pub ical_uid: String,
    pub event_type: String,
    /// For invitation copies: the organizer's calendar id.
    pub origin: Option<String>,
}

impl StoredEvent {
    pub fn value(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// The deleted-event shape incremental listings return.
    pub fn tombstone(&self, id: &str) -> String {
        let mut t =
            json!({"kind": "calendar#event", "etag": self.etag, "id": id, "status": "cancelled"});
        if let Some((series, start, tz)) = &self.instance_of {
            t["recurringEventId"] = json!(series);
            t["originalStartTime"] = occurrence_json(*start, *tz);
        }
        t.to_string()
    }

    /// The last instant the event (or its series) covers, None for an infinite series.
    pub fn span_end(&self) -> Option<DateTime<Utc>> {
        match &self.series {
            None => Some(self.end),
            Some(series) => series.recurrence.last_start().map(|s| s + series.duration),
        }
    }
}

/// Options of an event write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub conference_data_version: u8,
    pub if_match: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Import,
    Update,
    Patch,
}

/// Fields a client may not set (Google ignores them on input and computes them).
const READ_ONLY: &[&str] = &[
    "kind",
    "etag",
    "created",
    "updated",
    "htmlLink",
    "hangoutLink",
    "creator",
    "privateCopy",
    "locked",
    "recurringEventId",
    "originalStartTime",
];

/// Fields of an attendee's own copy that are theirs to change.
const PERSONAL: &[&str] = &["colorId", "reminders", "transparency", "extendedProperties"];

/// The whole emulated state.
pub struct World {
    pub users: BTreeMap<String, User>,
    pub calendars: HashMap<String, Calendar>,
    next_calendar_num: u64,
    last_etag: u64,
    /// Calendar list change numbers (shared by every user's list; a user's entries are a subset).
    pub list_seq: u64,
    pub ids: IdGen,
    pub signer: TokenSigner,
    /// Calendars changed since the last drain (push channels are notified for them).
    pub dirty: Vec<String>,
    /// Organizer calendar -> event id -> the calendars that were ever given a copy of it (a
    /// superset of those holding one now: each is checked when used). A write then finds the
    /// copies to withdraw without looking at every calendar.
    copies: HashMap<String, HashMap<String, Vec<String>>>,
    /// A Meet `createRequest` stays `pending` until [`World::resolve_conference_requests`]
    /// (mirrors `EmulatorConfig::conference_create_pending`).
    pub conference_create_pending: bool,
}

impl World {
    pub fn new(seed: u64, token_key: &[u8]) -> Self {
        World {
            users: BTreeMap::new(),
            calendars: HashMap::new(),
            next_calendar_num: 1,
            last_etag: 0,
            list_seq: 0,
            ids: IdGen::new(seed),
            signer: TokenSigner::new(token_key),
            dirty: Vec::new(),
            copies: HashMap::new(),
            conference_create_pending: false,
        }
    }

    /// Creates the user and its primary calendar if they do not exist yet.
    pub fn ensure_user(&mut self, email: &str, display_name: Option<&str>) -> ApiResult<&User> {
        let email = normalize_email(email)?;
        if !self.users.contains_key(&email) {
            self.users.insert(
                email.clone(),
                User {
                    email: email.clone(),
                    display_name: display_name.map(str::to_owned),
                },
            );
            self.add_calendar(&email, email.clone(), email.clone(), Tz::UTC, true);
        }
        Ok(&self.users[&email])
    }

    fn add_calendar(
        &mut self,
        owner: &str,
        id: String,
        summary: String,
        tz: Tz,
        primary: bool,
    ) -> &Calendar {
        let num = self.next_calendar_num;
        self.next_calendar_num += 1;
        self.list_seq += 1;
        let resource_id = format!("{:016x}{:011x}", self.ids.next_u64(), num);
        let owner_entry = ListEntry {
            seq: self.list_seq,
            hidden: false,
            deleted: false,
            role: Role::Owner,
        };
        let calendar = Calendar {
            id: id.clone(),
            num,
            owner: owner.to_owned(),
            summary,
            tz,
            primary,
            resource_id,
            events: BTreeMap::new(),
            changes: BTreeMap::new(),
            seq: 0,
            updated: DateTime::<Utc>::UNIX_EPOCH,
            token_epoch: 0,
            // The data owner's rule: always there, always `owner` (see `acl.rs`).
            acl: BTreeMap::from([(
                format!("user:{owner}"),
                AclRule::new("user", Some(owner.to_owned()), Role::Owner, 1),
            )]),
            acl_seq: 1,
            list: BTreeMap::from([(owner.to_owned(), owner_entry)]),
        };
        self.calendars.entry(id).or_insert(calendar)
    }

    /// Creates a secondary calendar owned by `owner`.
    pub fn create_calendar(
        &mut self,
        owner: &str,
        summary: &str,
        tz: Option<&str>,
    ) -> ApiResult<String> {
        if summary.trim().is_empty() {
            return Err(ApiError::required("summary"));
        }
        let tz = match tz {
            Some(name) => parse_tz(name, "timeZone")?,
            None => Tz::UTC,
        };
        let id = format!("{}@group.calendar.google.com", self.ids.event_id());
        self.add_calendar(owner, id.clone(), summary.to_owned(), tz, false);
        Ok(id)
    }

    /// Resolves `primary` and checks that `user` may read the calendar's events (role `reader`
    /// or above, see [`World::calendar_for_read`]). Kept for embedders; handlers say whether
    /// they read or write.
    pub fn calendar_id(&self, user: &str, param: &str) -> ApiResult<String> {
        self.calendar_for_read(user, param)
    }

    pub fn calendar(&self, id: &str) -> ApiResult<&Calendar> {
        self.calendars.get(id).ok_or_else(ApiError::not_found)
    }

    /// The calendar resource (`calendars.get`).
    pub fn calendar_json(&self, id: &str) -> ApiResult<Value> {
        let cal = self.calendar(id)?;
        Ok(json!({
            "kind": "calendar#calendar",
            "etag": format!("\"{}\"", fnv1a(&[cal.id.as_bytes(), cal.summary.as_bytes()])),
            "id": cal.id,
            "summary": cal.summary,
            "timeZone": cal.tz.name(),
            // The discovery document's ConferenceProperties.allowedConferenceSolutionTypes lists
            // "eventHangout", "eventNamedHangout" and "hangoutsMeet" as the possible values
            // (`addOn` is a conferenceSolution key type, never listed here).
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }))
    }

    /// The user's calendar list, deleted and hidden entries included, the user's primary
    /// calendar first, then by id.
    pub fn calendar_list(&self, user: &str) -> Vec<(&Calendar, &ListEntry)> {
        let mut cals: Vec<(&Calendar, &ListEntry)> = self
            .calendars
            .values()
            .filter_map(|c| c.list.get(user).map(|e| (c, e)))
            .collect();
        cals.sort_by(|(a, _), (b, _)| {
            (!a.is_primary_of(user), &a.id).cmp(&(!b.is_primary_of(user), &b.id))
        });
        cals
    }

    /// A calendar list entry as listed (`deleted` entries in their minimal shape).
    pub fn calendar_list_entry(&self, user: &str, cal: &Calendar, entry: &ListEntry) -> Value {
        let etag = format!(
            "\"{}\"",
            fnv1a(&[cal.id.as_bytes(), &entry.seq.to_be_bytes()])
        );
        if entry.deleted {
            return json!({"kind": "calendar#calendarListEntry", "etag": etag, "id": cal.id, "deleted": true});
        }
        let mut entry_json = self.calendar_json(&cal.id).unwrap_or_default();
        entry_json["kind"] = json!("calendar#calendarListEntry");
        entry_json["etag"] = json!(etag);
        // CalendarListEntry.accessRole: "The effective access role that the authenticated user
        // has on the calendar", one of freeBusyReader, reader, writerWithoutPrivateAccess,
        // writer, owner (the discovery document lists writerWithoutPrivateAccess as a value of
        // its own, so it is not folded into "writer").
        entry_json["accessRole"] = json!(entry.role.as_str());
        entry_json["defaultReminders"] = json!([{"method": "popup", "minutes": 10}]);
        entry_json["selected"] = json!(true);
        if cal.is_primary_of(user) {
            entry_json["primary"] = json!(true);
        }
        // "The attribute is only returned when the calendar is hidden."
        if entry.hidden {
            entry_json["hidden"] = json!(true);
        }
        entry_json
    }

    /// `calendarList.get`: the user's entry for the calendar (404 when it is not in the list).
    pub fn calendar_list_get(&self, user: &str, param: &str) -> ApiResult<Value> {
        let id = if param == "primary" { user } else { param };
        let cal = self.calendar(id)?;
        match cal.list.get(user) {
            Some(entry) if !entry.deleted && entry.role > Role::None => {
                Ok(self.calendar_list_entry(user, cal, entry))
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// Hides, shows, removes or re-adds a calendar list entry (the admin API's stand-in for
    /// calendarList writes, which are not emulated). Each change is a list change. The calendar
    /// must be one the user has an entry for (their own, or one shared with them by a `user:`
    /// rule that still grants access).
    pub fn set_calendar_list_entry(
        &mut self,
        user: &str,
        cal_id: &str,
        hidden: Option<bool>,
        deleted: Option<bool>,
    ) -> ApiResult<Value> {
        let id = if cal_id == "primary" { user } else { cal_id }.to_owned();
        let cal = self.calendar(&id)?;
        if cal.list.get(user).is_none_or(|e| e.role == Role::None) {
            return Err(ApiError::not_found());
        }
        if deleted == Some(true) && cal.is_primary_of(user) {
            return Err(ApiError::bad_request(
                "The primary calendar cannot be removed from the calendar list.",
            ));
        }
        self.list_seq += 1;
        let seq = self.list_seq;
        let cal = self
            .calendars
            .get_mut(&id)
            .ok_or_else(ApiError::not_found)?;
        let entry = cal.list.get_mut(user).ok_or_else(ApiError::not_found)?;
        if let Some(hidden) = hidden {
            entry.hidden = hidden;
        }
        if let Some(deleted) = deleted {
            entry.deleted = deleted;
        }
        entry.seq = seq;
        let cal = self.calendar(&id)?;
        Ok(self.calendar_list_entry(user, cal, &cal.list[user]))
    }

    fn next_etag(&mut self, now: DateTime<Utc>) -> String {
        // Google's etags are observed to be twice `updated` in microseconds; keep that shape but
        // never repeat one, even for two writes in the same microsecond.
        let candidate = u64::try_from(now.timestamp_micros())
            .unwrap_or(0)
            .saturating_mul(2);
        self.last_etag = candidate.max(self.last_etag + 1);
        format!("\"{}\"", self.last_etag)
    }

    /// Stores `event` under `id`, giving it the calendar's next change number.
    fn put(&mut self, cal_id: &str, id: &str, mut event: StoredEvent) {
        let Some(cal) = self.calendars.get_mut(cal_id) else {
            return;
        };
        if let Some(origin) = &event.origin {
            let holders = self
                .copies
                .entry(origin.clone())
                .or_default()
                .entry(id.to_owned())
                .or_default();
            if !holders.iter().any(|h| h == cal_id) {
                holders.push(cal_id.to_owned());
            }
        }
        cal.seq += 1;
        event.seq = cal.seq;
        cal.updated = cal.updated.max(event.updated);
        if let Some(old) = cal.events.get(id) {
            cal.changes.remove(&old.seq);
        }
        cal.changes.insert(cal.seq, id.to_owned());
        cal.events.insert(id.to_owned(), event);
        if !self.dirty.iter().any(|d| d == cal_id) {
            self.dirty.push(cal_id.to_owned());
        }
    }

    /// Reads one event (or a not-yet-modified instance of a series).
    pub fn get_event(&self, cal_id: &str, event_id: &str) -> ApiResult<(String, String)> {
        let cal = self.calendar(cal_id)?;
        if let Some(ev) = cal.events.get(event_id) {
            if ev.moved_away {
                return Ok((ev.tombstone(event_id), ev.etag.clone()));
            }
            return Ok((ev.json.to_string(), ev.etag.clone()));
        }
        let (value, etag) = self
            .virtual_instance(cal, event_id)
            .ok_or_else(ApiError::not_found)?;
        Ok((Value::Object(value).to_string(), etag))
    }

    /// An instance of a series that has no exception stored, built from the series.
    fn virtual_instance(
        &self,
        cal: &Calendar,
        event_id: &str,
    ) -> Option<(Map<String, Value>, String)> {
        let (series_id, start) = recurrence::parse_instance_id(event_id)?;
        let master = cal.events.get(series_id)?;
        let series = master.series.as_ref()?;
        if master.cancelled || !series.recurrence.contains(start) {
            return None;
        }
        Some(instance_value(series_id, master, &master.value(), start))
    }

    /// `events.insert` and `events.import`.
    pub fn insert_event(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        body: Value,
        kind: WriteKind,
        opts: &WriteOptions,
    ) -> ApiResult<String> {
        schema::validate("Event", &body)?;
        let mut input = into_object(body)?;
        let id = match input.get("id").and_then(Value::as_str) {
            Some(id) => {
                if !is_valid_event_id(id) {
                    return Err(ApiError::invalid(format!(
                        "Invalid resource id value: \"{id}\" (event ids use the characters a-v and 0-9 and are 5 to 1024 long)"
                    ))
                    .at("parameter", "id"));
                }
                id.to_owned()
            }
            None => self.ids.event_id(),
        };
        let cal = self.calendar(cal_id)?;
        if kind == WriteKind::Import {
            let Some(uid) = input.get("iCalUID").and_then(Value::as_str) else {
                return Err(ApiError::required("iCalUID"));
            };
            // Importing an iCalUID the calendar already has updates that event.
            let existing = cal
                .events
                .iter()
                .find(|(_, e)| e.ical_uid == uid && e.instance_of.is_none());
            if let Some((existing_id, _)) = existing {
                let existing_id = existing_id.clone();
                input.remove("id");
                return self.write_event(
                    now,
                    cal_id,
                    &existing_id,
                    Value::Object(input),
                    WriteKind::Import,
                    opts,
                );
            }
        }
        if cal.events.contains_key(&id) {
            return Err(ApiError::duplicate());
        }
        input.insert("id".into(), json!(id));
        self.write_event(now, cal_id, &id, Value::Object(input), kind, opts)
    }

    /// `events.update` (PUT), `events.patch`, and the update half of import.
    pub fn write_event(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        event_id: &str,
        body: Value,
        kind: WriteKind,
        opts: &WriteOptions,
    ) -> ApiResult<String> {
        schema::validate("Event", &body)?;
        let input = into_object(body)?;
        let cal = self.calendar(cal_id)?;
        let (prev_value, prev_etag) = match cal.events.get(event_id) {
            Some(ev) if ev.moved_away => return Err(ApiError::not_found()),
            Some(ev) => (Some(ev.value()), Some(ev.etag.clone())),
            None if matches!(kind, WriteKind::Insert | WriteKind::Import) => (None, None),
            None => {
                let (value, etag) = self
                    .virtual_instance(cal, event_id)
                    .ok_or_else(ApiError::not_found)?;
                (Some(value), Some(etag))
            }
        };
        if let (Some(wanted), Some(current)) = (&opts.if_match, &prev_etag)
            && wanted != "*"
            && wanted != current
        {
            return Err(ApiError::condition_not_met());
        }
        let origin = cal.events.get(event_id).and_then(|e| e.origin.clone());
        if let Some(organizer_cal) = origin {
            let prev = prev_value.unwrap_or_default();
            return self.write_attendee_copy(
                now,
                cal_id,
                &organizer_cal,
                event_id,
                prev,
                input,
                kind,
                opts,
            );
        }

        let mut resource = match (kind, &prev_value) {
            (WriteKind::Patch, Some(prev)) => {
                let mut merged = prev.clone();
                merge_patch(&mut merged, strip_read_only(input, kind));
                merged
            }
            _ => strip_read_only(input, kind),
        };
        let prev = prev_value.as_ref();
        // conferenceData is only written when the client says it understands it.
        if opts.conference_data_version == 0 {
            match prev.and_then(|p| p.get("conferenceData")) {
                Some(cd) => resource.insert("conferenceData".into(), cd.clone()),
                None => resource.remove("conferenceData"),
            };
        } else if let Some(cd) = resource.get("conferenceData").filter(|v| !v.is_null()) {
            // The discovery document's CreateConferenceRequest.requestId: "If an ID provided is
            // the same as for the previous request, the request is ignored." Sending back what a
            // GET returned (a pending request included) keeps the conference as it is.
            let prev_cd = prev.and_then(|p| p.get("conferenceData"));
            let same_request = create_request_id(cd).is_some()
                && cd.get("conferenceSolution").is_none_or(Value::is_null)
                && create_request_id(cd) == prev_cd.and_then(create_request_id);
            let checked = match prev_cd {
                Some(prev_cd) if same_request => prev_cd.clone(),
                _ => check_conference_data(cd, &mut self.ids, self.conference_create_pending)?,
            };
            resource.insert("conferenceData".into(), checked);
        }
        resource.retain(|_, v| !v.is_null());
        self.commit(now, cal_id, event_id, resource, prev, None)
    }

    /// Validates, completes and stores an organizer-side event, then updates invitation copies
    /// and exceptions that follow it.
    fn commit(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        event_id: &str,
        resource: Map<String, Value>,
        prev: Option<&Map<String, Value>>,
        origin: Option<String>,
    ) -> ApiResult<String> {
        let etag = self.next_etag(now);
        let cal = self.calendar(cal_id)?;
        // Copies keep the organizer's organizer, imports the one they brought.
        let organizer = match (&origin, resource.contains_key("organizer")) {
            (None, false) => Some(self.organizer_of(cal)),
            _ => None,
        };
        let (mut stored, value) = build_event(resource, cal, event_id, prev, now, etag, organizer)?;
        stored.origin = origin.clone();
        let json = stored.json.to_string();
        let is_master = stored.series.is_some();
        self.put(cal_id, event_id, stored);
        if origin.is_none() {
            if is_master && let Some(prev) = prev {
                self.follow_master(now, cal_id, event_id, prev, &value)?;
            }
            self.propagate(now, cal_id, event_id)?;
        }
        Ok(json)
    }

    fn organizer_of(&self, cal: &Calendar) -> Value {
        let mut organizer = json!({"email": cal.id, "self": true});
        if cal.primary {
            if let Some(name) = self
                .users
                .get(&cal.owner)
                .and_then(|u| u.display_name.as_ref())
            {
                organizer["displayName"] = json!(name);
            }
        } else {
            organizer["displayName"] = json!(cal.summary);
        }
        organizer
    }

    /// After a series changed: exceptions keep what they overrode and take what they did not;
    /// exceptions whose original start is no longer an occurrence are cancelled.
    fn follow_master(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        series_id: &str,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
    ) -> ApiResult<()> {
        let cal = self.calendar(cal_id)?;
        let prefix = format!("{series_id}_");
        let exceptions: Vec<String> = cal
            .events
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, e)| !e.cancelled)
            .map(|(k, _)| k.clone())
            .collect();
        let Some(master) = cal.events.get(series_id) else {
            return Ok(());
        };
        let still_occurs: Vec<bool> = exceptions
            .iter()
            .map(|id| {
                let start = cal
                    .events
                    .get(id)
                    .and_then(|e| e.instance_of.as_ref().map(|i| i.1));
                match (start, &master.series) {
                    (Some(start), Some(series)) => series.recurrence.contains(start),
                    _ => false,
                }
            })
            .collect();
        const SKIP: &[&str] = &[
            "kind",
            "etag",
            "id",
            "created",
            "updated",
            "start",
            "end",
            "recurrence",
            "sequence",
            "iCalUID",
            "htmlLink",
            "recurringEventId",
            "originalStartTime",
        ];
        let changed: Vec<&String> = new
            .keys()
            .chain(old.keys())
            .filter(|k| !SKIP.contains(&k.as_str()) && old.get(*k) != new.get(*k))
            .collect();
        for (id, occurs) in exceptions.iter().zip(still_occurs) {
            let Some(ev) = self.calendar(cal_id)?.events.get(id) else {
                continue;
            };
            let mut value = ev.value();
            if !occurs {
                value.insert("status".into(), json!("cancelled"));
            } else {
                let mut touched = false;
                for key in &changed {
                    if value.get(*key) == old.get(*key) {
                        match new.get(*key) {
                            Some(v) => value.insert((*key).clone(), v.clone()),
                            None => value.remove(*key),
                        };
                        touched = true;
                    }
                }
                if !touched {
                    continue;
                }
            }
            let prev = ev.value();
            self.commit(now, cal_id, id, value, Some(&prev), None)?;
        }
        Ok(())
    }

    /// Brings the attendees' copies of an organizer's event up to date: a copy on the primary
    /// calendar of every emulated user invited, cancelled for users no longer invited.
    fn propagate(&mut self, now: DateTime<Utc>, cal_id: &str, event_id: &str) -> ApiResult<()> {
        let cal = self.calendar(cal_id)?;
        let Some(ev) = cal.events.get(event_id) else {
            return Ok(());
        };
        let value = ev.value();
        let invited: Vec<String> = if ev.cancelled {
            Vec::new()
        } else {
            attendee_emails(&value)
                .into_iter()
                .filter(|email| email != cal_id && self.users.contains_key(email))
                .collect()
        };
        // Copies that exist now but whose user is no longer invited.
        let stale: Vec<String> = self
            .copies
            .get(cal_id)
            .and_then(|events| events.get(event_id))
            .into_iter()
            .flatten()
            .filter_map(|holder| self.calendars.get(holder))
            .filter(|c| c.id != cal_id && !invited.contains(&c.id))
            .filter(|c| {
                c.events
                    .get(event_id)
                    .is_some_and(|e| e.origin.as_deref() == Some(cal_id) && !e.cancelled)
            })
            .map(|c| c.id.clone())
            .collect();
        for target in invited {
            let existing = self
                .calendars
                .get(&target)
                .and_then(|c| c.events.get(event_id));
            if existing.is_some_and(|e| e.origin.as_deref() != Some(cal_id)) {
                continue; // the attendee has an unrelated event with that id
            }
            let existing_value = existing.map(StoredEvent::value);
            let copy = attendee_copy(&value, existing_value.as_ref());
            self.commit(
                now,
                &target,
                event_id,
                copy,
                existing_value.as_ref(),
                Some(cal_id.to_owned()),
            )?;
        }
        for target in stale {
            let Some(existing) = self
                .calendars
                .get(&target)
                .and_then(|c| c.events.get(event_id))
            else {
                continue;
            };
            let mut copy = existing.value();
            let prev = copy.clone();
            copy.insert("status".into(), json!("cancelled"));
            self.commit(
                now,
                &target,
                event_id,
                copy,
                Some(&prev),
                Some(cal_id.to_owned()),
            )?;
        }
        Ok(())
    }

    /// A write to an attendee's copy: personal fields stay on the copy; the attendee's own RSVP
    /// goes to the organizer's event; anything else needs `guestsCanModify`.
    #[allow(clippy::too_many_arguments)]
    fn write_attendee_copy(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        organizer_cal: &str,
        event_id: &str,
        prev: Map<String, Value>,
        input: Map<String, Value>,
        kind: WriteKind,
        opts: &WriteOptions,
    ) -> ApiResult<String> {
        let mut wanted = match kind {
            WriteKind::Patch => {
                let mut merged = prev.clone();
                merge_patch(&mut merged, strip_read_only(input, kind));
                merged
            }
            _ => {
                let mut replaced = strip_read_only(input, kind);
                // A PUT need not repeat conference data it cannot write anyway.
                if let Some(cd) = prev.get("conferenceData")
                    && opts.conference_data_version == 0
                {
                    replaced.insert("conferenceData".into(), cd.clone());
                }
                replaced
            }
        };
        wanted.retain(|_, v| !v.is_null());
        let me = cal_id;
        let my_rsvp = |v: &Map<String, Value>| {
            v.get("attendees").and_then(Value::as_array).and_then(|a| {
                a.iter()
                    .find(|x| x.get("email").and_then(Value::as_str) == Some(me))
                    .cloned()
            })
        };
        let shared = |v: &Map<String, Value>| {
            let mut v = v.clone();
            for key in PERSONAL
                .iter()
                .chain(["attendees", "sequence", "id", "status"].iter())
            {
                v.remove(*key);
            }
            v
        };
        let shared_changed = shared(&prev) != shared(&wanted)
            || strip_self_rsvp(&prev, me) != strip_self_rsvp(&wanted, me);
        let organizer_value = self
            .calendar(organizer_cal)?
            .events
            .get(event_id)
            .map(StoredEvent::value);
        let Some(mut organizer_value) = organizer_value else {
            return Err(ApiError::not_found());
        };
        if shared_changed {
            if organizer_value.get("guestsCanModify") != Some(&json!(true)) {
                return Err(ApiError::forbidden_for_non_organizer());
            }
            for (key, v) in shared(&wanted) {
                organizer_value.insert(key, v);
            }
            if let Some(attendees) = wanted.get("attendees") {
                organizer_value.insert("attendees".into(), attendees.clone());
            }
        }
        let rsvp = my_rsvp(&wanted);
        if rsvp != my_rsvp(&prev) || shared_changed {
            if let (Some(rsvp), Some(list)) = (
                rsvp,
                organizer_value
                    .get_mut("attendees")
                    .and_then(Value::as_array_mut),
            ) {
                for attendee in list.iter_mut() {
                    if attendee.get("email").and_then(Value::as_str) == Some(me) {
                        for key in ["responseStatus", "comment", "additionalGuests"] {
                            match rsvp.get(key) {
                                Some(v) => attendee[key] = v.clone(),
                                None => {
                                    if let Some(obj) = attendee.as_object_mut() {
                                        obj.remove(key);
                                    }
                                }
                            }
                        }
                        if let Some(obj) = attendee.as_object_mut() {
                            obj.remove("self");
                        }
                    }
                }
            }
            let before = self
                .calendar(organizer_cal)?
                .events
                .get(event_id)
                .map(StoredEvent::value);
            self.commit(
                now,
                organizer_cal,
                event_id,
                organizer_value,
                before.as_ref(),
                None,
            )?;
        }
        // Personal fields land on the copy (propagation above rewrote it with the shared ones).
        let current = self
            .calendar(cal_id)?
            .events
            .get(event_id)
            .map(StoredEvent::value)
            .unwrap_or_default();
        let mut copy = current.clone();
        let mut personal_changed = false;
        for key in PERSONAL {
            if current.get(*key) != wanted.get(*key) {
                personal_changed = true;
                match wanted.get(*key) {
                    Some(v) => copy.insert((*key).to_owned(), v.clone()),
                    None => copy.remove(*key),
                };
            }
        }
        if personal_changed {
            self.commit(
                now,
                cal_id,
                event_id,
                copy,
                Some(&current),
                Some(organizer_cal.to_owned()),
            )?;
        }
        let (json, _) = self.get_event(cal_id, event_id)?;
        Ok(json)
    }

    /// `events.delete`: the event becomes a cancelled tombstone (instances: a cancelled exception).
    pub fn delete_event(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        event_id: &str,
        if_match: Option<&str>,
    ) -> ApiResult<()> {
        let cal = self.calendar(cal_id)?;
        let (value, etag) = match cal.events.get(event_id) {
            Some(ev) if ev.cancelled => return Err(ApiError::deleted()),
            Some(ev) => (ev.value(), ev.etag.clone()),
            None => self
                .virtual_instance(cal, event_id)
                .ok_or_else(ApiError::not_found)?,
        };
        if let Some(wanted) = if_match
            && wanted != "*"
            && wanted != etag
        {
            return Err(ApiError::condition_not_met());
        }
        if let Some(organizer_cal) = cal.events.get(event_id).and_then(|e| e.origin.clone()) {
            // An attendee removing the invitation declines it.
            let mut declined = value.clone();
            if let Some(list) = declined.get_mut("attendees").and_then(Value::as_array_mut) {
                for a in list.iter_mut() {
                    if a.get("email").and_then(Value::as_str) == Some(cal_id) {
                        a["responseStatus"] = json!("declined");
                    }
                }
            }
            let opts = WriteOptions::default();
            self.write_event(
                now,
                cal_id,
                event_id,
                Value::Object(declined),
                WriteKind::Update,
                &opts,
            )?;
            let mut copy = self
                .calendar(cal_id)?
                .events
                .get(event_id)
                .map(StoredEvent::value)
                .unwrap_or_default();
            let prev = copy.clone();
            copy.insert("status".into(), json!("cancelled"));
            self.commit(
                now,
                cal_id,
                event_id,
                copy,
                Some(&prev),
                Some(organizer_cal),
            )?;
            return Ok(());
        }
        let mut cancelled = value.clone();
        cancelled.insert("status".into(), json!("cancelled"));
        self.commit(now, cal_id, event_id, cancelled, Some(&value), None)?;
        // Cancelling a series cancels its exceptions too.
        let prefix = format!("{event_id}_");
        let exceptions: Vec<String> = self
            .calendar(cal_id)?
            .events
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, e)| !e.cancelled)
            .map(|(k, _)| k.clone())
            .collect();
        for id in exceptions {
            let Some(prev) = self
                .calendar(cal_id)?
                .events
                .get(&id)
                .map(StoredEvent::value)
            else {
                continue;
            };
            let mut value = prev.clone();
            value.insert("status".into(), json!("cancelled"));
            self.commit(now, cal_id, &id, value, Some(&prev), None)?;
        }
        Ok(())
    }

    /// `events.move`: the event goes to `dest` (same id, new organizer); the source keeps a
    /// cancelled tombstone with only the id.
    pub fn move_event(
        &mut self,
        now: DateTime<Utc>,
        cal_id: &str,
        event_id: &str,
        dest: &str,
    ) -> ApiResult<String> {
        let cal = self.calendar(cal_id)?;
        let ev = cal.events.get(event_id).ok_or_else(|| {
            if recurrence::parse_instance_id(event_id).is_some() {
                ApiError::bad_request("Cannot change the organizer of an instance.")
            } else {
                ApiError::not_found()
            }
        })?;
        if ev.cancelled {
            return Err(ApiError::not_found());
        }
        if ev.instance_of.is_some() {
            return Err(ApiError::bad_request(
                "Cannot change the organizer of an instance.",
            ));
        }
        if ev.origin.is_some() {
            return Err(ApiError::forbidden_for_non_organizer());
        }
        if dest == cal_id {
            return Ok(ev.json.to_string());
        }
        if self.calendar(dest)?.events.contains_key(event_id) {
            return Err(ApiError::duplicate());
        }
        let value = ev.value();
        let prefix = format!("{event_id}_");
        let exceptions: Vec<(String, Map<String, Value>)> = cal
            .events
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, e)| (k.clone(), e.value()))
            .collect();
        let mut moved = value.clone();
        moved.remove("organizer");
        let json = self.commit(now, dest, event_id, moved, None, None)?;
        for (id, exception) in &exceptions {
            let mut moved = exception.clone();
            moved.remove("organizer");
            self.commit(now, dest, id, moved, None, None)?;
        }
        for id in std::iter::once(event_id.to_owned()).chain(exceptions.into_iter().map(|(k, _)| k))
        {
            let etag = self.next_etag(now);
            if let Some(old) = self.calendars.get(cal_id).and_then(|c| c.events.get(&id)) {
                let tombstone = StoredEvent {
                    json: old.tombstone(&id).into_boxed_str(),
                    etag,
                    seq: 0,
                    updated: now,
                    cancelled: true,
                    moved_away: true,
                    start: old.start,
                    end: old.end,
                    series: None,
                    instance_of: old.instance_of.clone(),
                    ical_uid: old.ical_uid.clone(),
                    event_type: old.event_type.clone(),
                    origin: None,
                };
                self.put(cal_id, &id, tombstone);
            }
        }
        Ok(json)
    }

    /// Invalidates every sync token issued so far for the calendar.
    pub fn expire_sync_tokens(&mut self, cal_id: &str) -> ApiResult<()> {
        let cal = self
            .calendars
            .get_mut(cal_id)
            .ok_or_else(ApiError::not_found)?;
        // Never wraps: a wrapped epoch would make long-expired tokens valid again.
        cal.token_epoch = cal.token_epoch.checked_add(1).ok_or_else(|| {
            ApiError::bad_request("this calendar's sync tokens cannot be expired again")
        })?;
        Ok(())
    }

    /// Ends every pending Meet `createRequest` (see `conference_create_pending`): `success`
    /// gives each request id one Meet conference (a series and its exceptions share it),
    /// `failure` leaves the request with that status and no entry points, as the discovery
    /// document's ConferenceRequestStatus describes. Each resolved event is a change (new etag,
    /// change number, push notification); invitation copies follow. Answers the events resolved
    /// as `(calendar id, event id)`.
    pub fn resolve_conference_requests(
        &mut self,
        now: DateTime<Utc>,
        success: bool,
    ) -> ApiResult<Vec<(String, String)>> {
        let is_pending = |ev: &StoredEvent| {
            !ev.cancelled
                && !ev.moved_away
                && ev.origin.is_none()
                && ev.value().get("conferenceData").is_some_and(|cd| {
                    cd.pointer("/createRequest/status/statusCode")
                        .and_then(Value::as_str)
                        == Some("pending")
                })
        };
        let mut pending: Vec<(String, String)> = self
            .calendars
            .values()
            .flat_map(|cal| {
                cal.events
                    .iter()
                    .filter(|(_, ev)| is_pending(ev))
                    .map(|(id, _)| (cal.id.clone(), id.clone()))
            })
            .collect();
        pending.sort();
        let mut resolved_by_request: HashMap<String, Value> = HashMap::new();
        let mut done = Vec::new();
        for (cal_id, event_id) in pending {
            // An earlier resolution may have reached this event already (an exception
            // following its series).
            let Some(ev) = self
                .calendars
                .get(&cal_id)
                .and_then(|c| c.events.get(&event_id))
                .filter(|ev| is_pending(ev))
            else {
                continue;
            };
            let prev = ev.value();
            let request_id = prev
                .get("conferenceData")
                .and_then(create_request_id)
                .unwrap_or_default()
                .to_owned();
            let cd = match resolved_by_request.get(&request_id) {
                Some(cd) => cd.clone(),
                None => {
                    let cd = if success {
                        meet_conference(&request_id, &mut self.ids)
                    } else {
                        json!({"createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "failure"}}})
                    };
                    resolved_by_request.insert(request_id, cd.clone());
                    cd
                }
            };
            let mut value = prev.clone();
            value.insert("conferenceData".into(), cd);
            self.commit(now, &cal_id, &event_id, value, Some(&prev), None)?;
            done.push((cal_id, event_id));
        }
        Ok(done)
    }
}

pub(crate) fn normalize_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !email.contains(char::is_whitespace)
            && !email.contains('/')
    });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid(format!(
            "Invalid email address: \"{email}\""
        )))
    }
}

fn into_object(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::parse_error(
            "the request body must be a JSON object",
        )),
    }
}

fn strip_read_only(mut input: Map<String, Value>, kind: WriteKind) -> Map<String, Value> {
    for key in READ_ONLY {
        input.remove(*key);
    }
    if kind != WriteKind::Import {
        input.remove("organizer");
    }
    if matches!(kind, WriteKind::Update | WriteKind::Patch) {
        input.remove("iCalUID");
        input.remove("id");
    }
    input
}

/// Google's patch semantics: objects merge field by field, `null` clears, anything else
/// (arrays included) replaces.
pub fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.insert(key, Value::Null);
            }
            Value::Object(inner) => match target.get_mut(&key) {
                Some(Value::Object(existing)) if key != "conferenceData" => {
                    merge_patch(existing, inner)
                }
                _ => {
                    target.insert(key, Value::Object(inner));
                }
            },
            other => {
                target.insert(key, other);
            }
        }
    }
}

fn attendee_emails(value: &Map<String, Value>) -> Vec<String> {
    value
        .get("attendees")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| a.get("email").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

fn strip_self_rsvp(value: &Map<String, Value>, me: &str) -> Value {
    let mut list = value.get("attendees").cloned().unwrap_or(Value::Null);
    if let Some(items) = list.as_array_mut() {
        for a in items.iter_mut() {
            if let Some(obj) = a.as_object_mut() {
                obj.remove("self");
                obj.remove("organizer");
                if obj.get("email").and_then(Value::as_str) == Some(me) {
                    obj.remove("responseStatus");
                    obj.remove("comment");
                    obj.remove("additionalGuests");
                }
            }
        }
    }
    list
}

/// The attendee's view of an organizer's event.
fn attendee_copy(
    organizer: &Map<String, Value>,
    existing: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut copy = organizer.clone();
    if let Some(org) = copy.get_mut("organizer").and_then(Value::as_object_mut) {
        org.remove("self");
    }
    if let Some(creator) = copy.get_mut("creator").and_then(Value::as_object_mut) {
        creator.remove("self");
    }
    if let Some(props) = copy
        .get_mut("extendedProperties")
        .and_then(Value::as_object_mut)
    {
        props.remove("private");
    }
    for key in PERSONAL {
        copy.remove(*key);
        if let Some(v) = existing.and_then(|e| e.get(*key)) {
            copy.insert((*key).to_owned(), v.clone());
        }
    }
    if let Some(props) = organizer
        .get("extendedProperties")
        .and_then(|p| p.get("shared"))
    {
        let mut merged = existing
            .and_then(|e| e.get("extendedProperties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        merged.insert("shared".into(), props.clone());
        copy.insert("extendedProperties".into(), Value::Object(merged));
    }
    copy.insert(
        "sequence".into(),
        organizer.get("sequence").cloned().unwrap_or(json!(0)),
    );
    copy
}

/// An instance of a series as `events.instances` shows it.
pub fn instance_value(
    series_id: &str,
    master: &StoredEvent,
    master_value: &Map<String, Value>,
    start: OccurrenceStart,
) -> (Map<String, Value>, String) {
    let series = master.series.as_ref();
    let tz = series.and_then(|s| s.tz);
    let duration = series.map(|s| s.duration).unwrap_or_default();
    let id = recurrence::instance_id(series_id, start);
    let etag = format!(
        "\"{}\"",
        fnv1a(&[master.etag.as_bytes(), id.as_bytes()]) >> 1
    );
    let mut v = Map::new();
    for (key, value) in master_value {
        match key.as_str() {
            "recurrence" => {}
            "id" => {
                v.insert("id".into(), json!(id));
            }
            "etag" => {
                v.insert("etag".into(), json!(etag));
            }
            "start" => {
                v.insert("start".into(), occurrence_json(start, tz));
            }
            "end" => {
                let end = match start {
                    OccurrenceStart::Date(d) => {
                        OccurrenceStart::Date(d + Duration::days(duration.num_days().max(1)))
                    }
                    OccurrenceStart::DateTime(at) => OccurrenceStart::DateTime(at + duration),
                };
                v.insert("end".into(), occurrence_json(end, tz));
                v.insert("recurringEventId".into(), json!(series_id));
                v.insert("originalStartTime".into(), occurrence_json(start, tz));
            }
            _ => {
                v.insert(key.clone(), value.clone());
            }
        }
    }
    (v, etag)
}

const STATUSES: &[&str] = &["confirmed", "tentative", "cancelled"];
const RESPONSE_STATUSES: &[&str] = &["needsAction", "declined", "tentative", "accepted"];

fn check_enum(value: Option<&Value>, field: &str, allowed: &[&str]) -> ApiResult<()> {
    match value.and_then(Value::as_str) {
        Some(v) if !allowed.contains(&v) => Err(ApiError::invalid(format!(
            "Invalid value for {field}: \"{v}\" (expected one of {})",
            allowed.join(", ")
        ))
        .at("parameter", field.to_owned())),
        _ => Ok(()),
    }
}

/// Checks everything about an event Google would refuse, and computes the read-only fields.
fn build_event(
    mut resource: Map<String, Value>,
    cal: &Calendar,
    id: &str,
    prev: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
    etag: String,
    organizer: Option<Value>,
) -> ApiResult<(StoredEvent, Map<String, Value>)> {
    // Computed below; a merged previous version must not bring back stale values.
    let creator_given = resource.remove("creator");
    for key in [
        "kind",
        "etag",
        "created",
        "updated",
        "htmlLink",
        "hangoutLink",
        "recurringEventId",
        "originalStartTime",
    ] {
        resource.remove(key);
    }
    check_enum(resource.get("status"), "status", STATUSES)?;
    check_enum(
        resource.get("transparency"),
        "transparency",
        &["opaque", "transparent"],
    )?;
    check_enum(
        resource.get("visibility"),
        "visibility",
        &["default", "public", "private", "confidential"],
    )?;
    check_enum(
        resource.get("eventType"),
        "eventType",
        &[
            "default",
            "outOfOffice",
            "focusTime",
            "workingLocation",
            "fromGmail",
            "birthday",
        ],
    )?;
    if let Some(color) = resource.get("colorId").and_then(Value::as_str)
        && !matches!(color.parse::<u8>(), Ok(1..=11))
    {
        return Err(ApiError::invalid(format!(
            "Invalid value for colorId: \"{color}\" (expected \"1\" to \"11\")"
        )));
    }
    if let Some(attendees) = resource.get("attendees").and_then(Value::as_array) {
        for (i, a) in attendees.iter().enumerate() {
            if a.get("email")
                .and_then(Value::as_str)
                .is_none_or(|e| !e.contains('@'))
            {
                return Err(ApiError::required(&format!("attendees[{i}].email")));
            }
            check_enum(
                a.get("responseStatus"),
                &format!("attendees[{i}].responseStatus"),
                RESPONSE_STATUSES,
            )?;
        }
    }
    if let Some(overrides) = resource
        .get("reminders")
        .and_then(|r| r.get("overrides"))
        .and_then(Value::as_array)
    {
        if overrides.len() > 5 {
            return Err(ApiError::invalid(
                "Too many reminder overrides: at most 5 are allowed.",
            ));
        }
        for (i, o) in overrides.iter().enumerate() {
            check_enum(
                o.get("method"),
                &format!("reminders.overrides[{i}].method"),
                &["email", "popup"],
            )?;
            let minutes = o.get("minutes").and_then(Value::as_i64).unwrap_or(-1);
            if !(0..=40320).contains(&minutes) {
                return Err(ApiError::invalid(format!(
                    "Invalid value for reminders.overrides[{i}].minutes: must be 0 to 40320"
                )));
            }
        }
    }
    let start = EventTime::parse(resource.get("start").unwrap_or(&Value::Null), "start")?;
    let end = EventTime::parse(resource.get("end").unwrap_or(&Value::Null), "end")?;
    if start.is_all_day() != end.is_all_day() {
        return Err(ApiError::bad_request(
            "Start and end times must either both be date or both be dateTime.",
        ));
    }
    let (start_at, end_at) = (start.instant(cal.tz), end.instant(cal.tz));
    if end_at < start_at {
        return Err(ApiError::new(
            400,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        )
        .at("parameter", "end"));
    }
    let recurrence_lines: Option<Vec<String>> = resource
        .get("recurrence")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    let instance_of = recurrence::parse_instance_id(id).map(|(series, original)| {
        let tz = match original {
            OccurrenceStart::DateTime(_) => match start {
                EventTime::DateTime { tz, .. } => tz,
                EventTime::Date(_) => None,
            },
            OccurrenceStart::Date(_) => None,
        };
        (series.to_owned(), original, tz)
    });
    let series = match recurrence_lines.filter(|l| !l.is_empty()) {
        None => None,
        Some(_) if instance_of.is_some() => {
            return Err(ApiError::bad_request(
                "An instance of a recurring event cannot itself recur.",
            ));
        }
        Some(lines) => {
            let tz = match start {
                EventTime::DateTime { tz: None, .. } => {
                    return Err(ApiError::bad_request(
                        "Missing time zone definition for start time: a recurring event needs start.timeZone.",
                    )
                    .at("parameter", "start.timeZone"));
                }
                EventTime::DateTime { tz, .. } => tz,
                EventTime::Date(_) => None,
            };
            let recurrence =
                Recurrence::parse(&lines, start.series_start(cal.tz)).map_err(|e| {
                    ApiError::invalid(format!("Invalid recurrence rule: {e}"))
                        .at("parameter", "recurrence")
                })?;
            Some(Box::new(Series {
                recurrence,
                duration: end_at - start_at,
                tz,
                all_day: start.is_all_day(),
            }))
        }
    };

    let status = resource
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("confirmed")
        .to_owned();
    let created = prev
        .and_then(|p| p.get("created"))
        .cloned()
        .unwrap_or_else(|| json!(rfc3339(now)));
    let ical_uid = resource
        .get("iCalUID")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            prev.and_then(|p| p.get("iCalUID"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| match &instance_of {
            Some((series, _, _)) => format!("{series}@google.com"),
            None => format!("{id}@google.com"),
        });
    let prev_sequence = prev
        .and_then(|p| p.get("sequence"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let significant = prev.is_some_and(|p| {
        ["start", "end", "recurrence", "location", "status"]
            .iter()
            .any(|k| p.get(*k) != resource.get(*k))
    });
    // RFC 5545 3.8.7.4: SEQUENCE is incremented when DTSTART, DTEND, RRULE, ... change, and
    // Google does so. A patch carries the stored value merged in and a PUT often sends back the
    // value it read: neither is a request to keep it. Only a higher value than the one the
    // change would give is the client's own choice.
    let computed = prev_sequence + i64::from(significant);
    let sequence = match resource
        .get("sequence")
        .and_then(|s| s.as_i64().or_else(|| s.as_str()?.parse().ok()))
    {
        Some(given) if given > computed => given,
        _ => computed,
    };
    let organizer = organizer
        .or_else(|| resource.get("organizer").cloned())
        .or_else(|| prev.and_then(|p| p.get("organizer")).cloned());
    let creator = creator_given
        .or_else(|| prev.and_then(|p| p.get("creator")).cloned())
        .unwrap_or_else(|| json!({"email": cal.owner, "self": true}));
    let event_type = resource
        .get("eventType")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    use base64::Engine;
    let eid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {}", cal.id));

    // Google's field order, computed fields first.
    let mut out = Map::new();
    out.insert("kind".into(), json!("calendar#event"));
    out.insert("etag".into(), json!(etag));
    out.insert("id".into(), json!(id));
    out.insert("status".into(), json!(status));
    out.insert(
        "htmlLink".into(),
        json!(format!("https://www.google.com/calendar/event?eid={eid}")),
    );
    out.insert("created".into(), created);
    out.insert("updated".into(), json!(rfc3339(now)));
    for key in ["summary", "description", "location", "colorId"] {
        if let Some(v) = resource.remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.insert("creator".into(), creator);
    if let Some(organizer) = organizer {
        out.insert("organizer".into(), organizer);
    }
    for (key, time) in [("start", start), ("end", end)] {
        if let Some(mut v) = resource.remove(key) {
            // Google answers local times with their offset.
            if let EventTime::DateTime { at, tz: Some(zone) } = time {
                v["dateTime"] = json!(
                    at.with_timezone(&zone)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                );
            }
            out.insert(key.into(), v);
        }
    }
    for key in ["endTimeUnspecified", "recurrence"] {
        if let Some(v) = resource.remove(key) {
            out.insert(key.into(), v);
        }
    }
    if let Some((series, original, tz)) = &instance_of {
        out.insert("recurringEventId".into(), json!(series));
        out.insert("originalStartTime".into(), occurrence_json(*original, *tz));
    }
    out.insert("iCalUID".into(), json!(ical_uid));
    out.insert("sequence".into(), json!(sequence));
    if let Some(Value::Array(mut attendees)) = resource.remove("attendees") {
        for a in attendees.iter_mut() {
            if let Some(obj) = a.as_object_mut() {
                let email = obj
                    .get("email")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase);
                obj.remove("self");
                obj.entry("responseStatus").or_insert(json!("needsAction"));
                if email.as_deref() == Some(cal.id.as_str()) {
                    obj.insert("self".into(), json!(true));
                }
            }
        }
        out.insert("attendees".into(), Value::Array(attendees));
    }
    if let Some(cd) = resource.remove("conferenceData") {
        if let Some(link) = meet_link(&cd) {
            out.insert("hangoutLink".into(), json!(link));
        }
        out.insert("conferenceData".into(), cd);
    }
    resource.remove("iCalUID");
    resource.remove("id");
    resource.remove("status");
    resource.remove("sequence");
    resource.remove("organizer");
    resource.remove("eventType");
    resource
        .entry("reminders")
        .or_insert(json!({"useDefault": true}));
    for (key, value) in resource {
        out.insert(key, value);
    }
    out.insert("eventType".into(), json!(event_type));

    // The discovery document's Event.updated: "Last modification time of the main event data
    // [...] Updating event reminders will not cause this to change." A write that changes only
    // the reminders keeps the previous `updated` (the etag still changes).
    let mut updated = now;
    if let Some(prev) = prev
        && let Some(prev_updated) = prev
            .get("updated")
            .and_then(Value::as_str)
            .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
        && prev.get("reminders") != out.get("reminders")
    {
        let main_data = |m: &Map<String, Value>| {
            let mut m = m.clone();
            for key in ["etag", "updated", "reminders"] {
                m.remove(key);
            }
            m
        };
        if main_data(prev) == main_data(&out) {
            updated = prev_updated.with_timezone(&Utc);
            out.insert("updated".into(), json!(rfc3339(updated)));
        }
    }

    let cancelled = status == "cancelled";
    let stored = StoredEvent {
        json: Value::Object(out.clone()).to_string().into_boxed_str(),
        etag,
        seq: 0,
        updated,
        cancelled,
        moved_away: false,
        start: start_at,
        end: end_at,
        series,
        instance_of,
        ical_uid,
        event_type,
        origin: None,
    };
    Ok((stored, out))
}

fn meet_link(cd: &Value) -> Option<String> {
    if cd
        .pointer("/conferenceSolution/key/type")
        .and_then(Value::as_str)
        != Some("hangoutsMeet")
    {
        return None;
    }
    cd.get("entryPoints")?
        .as_array()?
        .iter()
        .find(|e| e.get("entryPointType").and_then(Value::as_str) == Some("video"))
        .and_then(|e| e.get("uri").and_then(Value::as_str))
        .map(str::to_owned)
}

fn create_request_id(cd: &Value) -> Option<&str> {
    cd.pointer("/createRequest/requestId")
        .and_then(Value::as_str)
}

/// A Meet conference created for `createRequest.requestId` (status `success`).
fn meet_conference(request_id: &str, ids: &mut IdGen) -> Value {
    let code = ids.event_id();
    let code = format!("{}-{}-{}", &code[0..3], &code[3..7], &code[7..10]);
    json!({
        "createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "success"}},
        "entryPoints": [{"entryPointType": "video", "uri": format!("https://meet.google.com/{code}"), "label": format!("meet.google.com/{code}")}],
        "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet", "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png"},
        "conferenceId": code,
    })
}

/// Google's rules for `conferenceData` on a write with `conferenceDataVersion=1`.
fn check_conference_data(cd: &Value, ids: &mut IdGen, create_pending: bool) -> ApiResult<Value> {
    let mut cd = cd.clone();
    let bad = |msg: String| {
        Err(ApiError::invalid(format!("Invalid conference data: {msg}"))
            .at("parameter", "conferenceData"))
    };
    const SOLUTIONS: &[&str] = &["addOn", "hangoutsMeet", "eventHangout", "eventNamedHangout"];
    if let Some(kind) = cd
        .pointer("/conferenceSolution/key/type")
        .and_then(Value::as_str)
        && !SOLUTIONS.contains(&kind)
    {
        return bad(format!(
            "unknown conferenceSolution.key.type \"{kind}\" (expected one of {})",
            SOLUTIONS.join(", ")
        ));
    }
    let has_solution = cd.get("conferenceSolution").is_some_and(|s| !s.is_null());
    let entry_points = cd
        .get("entryPoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let create_request = cd.get("createRequest").filter(|r| !r.is_null()).cloned();
    if create_request.is_none() && (!has_solution || entry_points.is_empty()) {
        return bad("either conferenceSolution with at least one entry point, or createRequest, is required".into());
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (i, ep) in entry_points.iter().enumerate() {
        let kind = ep
            .get("entryPointType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let uri = ep.get("uri").and_then(Value::as_str).unwrap_or("");
        let schemes: &[&str] = match kind {
            "video" | "more" => &["https://", "http://"],
            "phone" => &["tel:"],
            "sip" => &["sip:"],
            "" => return bad(format!("entryPoints[{i}].entryPointType is required")),
            other => {
                return bad(format!(
                    "entryPoints[{i}].entryPointType \"{other}\" is not one of video, phone, sip, more"
                ));
            }
        };
        if !schemes
            .iter()
            .any(|s| uri.to_ascii_lowercase().starts_with(s))
        {
            return bad(format!(
                "entryPoints[{i}].uri \"{uri}\" of a {kind} entry point must start with {}",
                schemes.join(" or ")
            ));
        }
        *counts
            .entry(match kind {
                "video" => "video",
                "sip" => "sip",
                "more" => "more",
                _ => "phone",
            })
            .or_default() += 1;
    }
    for kind in ["video", "sip", "more"] {
        if counts.get(kind).copied().unwrap_or(0) > 1 {
            return bad(format!("at most one {kind} entry point is allowed"));
        }
    }
    if !entry_points.is_empty() && counts.get("more") == Some(&entry_points.len()) {
        return bad("a conference with only a \"more\" entry point is invalid".into());
    }
    if let Some(notes) = cd.get("notes").and_then(Value::as_str)
        && notes.chars().count() > 2048
    {
        return bad("notes exceed 2048 characters".into());
    }
    if let Some(id) = cd.get("conferenceId").and_then(Value::as_str)
        && id.chars().count() > 512
    {
        return bad("conferenceId exceeds 512 characters".into());
    }
    if let Some(request) = create_request {
        let kind = request
            .pointer("/conferenceSolutionKey/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let request_id = request
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if request_id.is_empty() {
            return bad("createRequest.requestId is required".into());
        }
        match kind {
            // Meet conferences are created on the spot, so tests can make events with a
            // conference that is not ours.
            // Google creates conferences asynchronously (ConferenceData.createRequest: "The data
            // is generated asynchronously. To see whether the data is present check the status
            // field."); with `conferenceCreatePending` the request stays pending until
            // `POST /emulator/conferences/resolve`.
            "hangoutsMeet" if !has_solution && create_pending => {
                cd = json!({
                    "createRequest": {"requestId": request_id, "conferenceSolutionKey": {"type": "hangoutsMeet"}, "status": {"statusCode": "pending"}},
                });
            }
            "hangoutsMeet" if !has_solution => {
                cd = meet_conference(request_id, ids);
            }
            "hangoutsMeet" => {}
            "addOn" if !has_solution => {
                return bad("an addOn conference cannot be created through createRequest; the add-on supplies conferenceSolution and entryPoints".into());
            }
            "addOn" => {}
            other => {
                return bad(format!(
                    "createRequest.conferenceSolutionKey.type \"{other}\" is not supported"
                ));
            }
        }
    }
    if cd
        .pointer("/conferenceSolution/key/type")
        .and_then(Value::as_str)
        == Some("addOn")
        && cd.get("signature").is_none()
    {
        // Google signs add-on conference data server-side; clients cannot forge it.
        let basis = cd.to_string();
        cd["signature"] = json!(format!("{:016x}", fnv1a(&[basis.as_bytes()])));
    }
    Ok(cd)
}
