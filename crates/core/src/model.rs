//! The event model: what the engine reads out of a Calendar event, and nothing more.
//!
//! A [`Snapshot`] is built from the event's JSON exactly as Calendar returns it (tombstones
//! included). Only the fields a conferencing provider can act on end up in the [`MeetingSpec`];
//! colour, reminders, RSVPs and the like are deliberately absent, which is what makes "a change
//! that does not matter" cost zero provider calls.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An instant or an all-day date, normalised so equal times compare equal whatever offset the
/// event was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum When {
    At(DateTime<Utc>),
    Day(NaiveDate),
}

impl When {
    /// Parses an `EventDateTime` object (`{"date"}` or `{"dateTime", "timeZone"?}`).
    pub fn parse(value: &Value, field: &str) -> Result<When, Malformed> {
        if let Some(date) = value.get("date").and_then(Value::as_str) {
            return NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map(When::Day)
                .map_err(|_| {
                    Malformed::new(format!("{field}.date {date:?} is not a yyyy-mm-dd date"))
                });
        }
        match value.get("dateTime").and_then(Value::as_str) {
            Some(dt) => DateTime::parse_from_rfc3339(dt)
                .map(|t| When::At(t.with_timezone(&Utc)))
                .map_err(|_| {
                    Malformed::new(format!(
                        "{field}.dateTime {dt:?} is not an RFC 3339 date-time"
                    ))
                }),
            None => Err(Malformed::new(format!(
                "{field} has neither date nor dateTime"
            ))),
        }
    }

    /// A stable text key (occurrence keys, idempotency keys).
    pub fn key(&self) -> String {
        match self {
            When::At(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            When::Day(d) => d.format("%Y-%m-%d").to_string(),
        }
    }

    /// The time a [`When::key`] stands for (occurrence keys of a link are stored as text).
    pub fn from_key(key: &str) -> Option<When> {
        if let Ok(day) = NaiveDate::parse_from_str(key, "%Y-%m-%d") {
            return Some(When::Day(day));
        }
        DateTime::parse_from_rfc3339(key)
            .ok()
            .map(|t| When::At(t.with_timezone(&Utc)))
    }
}

/// What a conferencing provider can act on: the meeting as the event describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingSpec {
    pub title: String,
    pub description: String,
    pub start: When,
    pub end: When,
    /// The IANA zone the event was written in (start.timeZone), if any.
    pub time_zone: Option<String>,
    /// RRULE/RDATE/EXDATE lines of a series, empty for single events and instances.
    pub recurrence: Vec<String>,
    /// Guests' emails, lowercase and sorted; rooms and other resources excluded; no RSVP state.
    pub attendees: Vec<String>,
    pub organizer: Option<String>,
}

impl MeetingSpec {
    /// A stable fingerprint of the spec (FNV-1a over its canonical JSON), stored with each link so
    /// "did anything the provider cares about change" is one comparison.
    pub fn fingerprint(&self) -> String {
        MeetingSpec::fingerprint_of_json(&serde_json::to_string(self).unwrap_or_default())
    }

    /// [`MeetingSpec::fingerprint`] of a spec already serialized by `serde_json::to_string`:
    /// where the JSON is written anyway (a link's `spec_json`), the spec is not serialized twice.
    pub fn fingerprint_of_json(canonical: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Event status. Unknown values are kept, not rejected: Google may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Confirmed,
    Tentative,
    Cancelled,
    Other(String),
}

impl Status {
    fn parse(value: Option<&str>) -> Status {
        match value {
            None | Some("confirmed") => Status::Confirmed,
            Some("tentative") => Status::Tentative,
            Some("cancelled") => Status::Cancelled,
            Some(other) => Status::Other(other.to_owned()),
        }
    }
}

/// The conference an event carries, as far as the engine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceInfo {
    /// `conferenceSolution.key.type`: `addOn`, `hangoutsMeet`, ...
    pub solution_type: String,
    pub solution_name: Option<String>,
    pub conference_id: Option<String>,
    /// `parameters.addOnParameters.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// The video entry point's URI (the join URL guests see).
    pub join_uri: Option<String>,
}

/// One event as read from a calendar: a live event or a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub event_id: String,
    pub etag: Option<String>,
    pub status: Status,
    /// For instances of a series: the series id and the instance's original start.
    pub recurring_event_id: Option<String>,
    pub original_start: Option<When>,
    /// True when this calendar's copy is the organizer's (`organizer.self`).
    pub organizer_self: bool,
    pub conference: Option<ConferenceInfo>,
    /// None for tombstones (Google guarantees only the id, and for instances the original start).
    pub spec: Option<MeetingSpec>,
}

impl Snapshot {
    pub fn is_cancelled(&self) -> bool {
        self.status == Status::Cancelled
    }

    /// Parses one item of an `events.list` page or an `events.get` answer.
    pub fn from_json(item: &Value) -> Result<Snapshot, Malformed> {
        let wire = WireEvent::deserialize(item)
            .map_err(|e| Malformed::new(format!("unexpected shape: {e}")))?;
        wire.into_snapshot()
    }

    /// Parses one item from its JSON text. This is the hot path of a sync: only the fields the
    /// engine reads are decoded; everything else is skipped without building a tree.
    pub fn from_json_str(item: &str) -> Result<Snapshot, Malformed> {
        let wire: WireEvent = serde_json::from_str(item)
            .map_err(|e| Malformed::new(format!("unexpected shape: {e}")))?;
        wire.into_snapshot()
    }
}

/// The fields of an event the engine reads, as they are on the wire. Unknown fields are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    id: Option<String>,
    etag: Option<String>,
    status: Option<String>,
    summary: Option<String>,
    description: Option<String>,
    start: Option<WireTime>,
    end: Option<WireTime>,
    recurrence: Option<Vec<String>>,
    recurring_event_id: Option<String>,
    original_start_time: Option<WireTime>,
    organizer: Option<WirePerson>,
    attendees: Option<Vec<WirePerson>>,
    conference_data: Option<WireConference>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTime {
    date: Option<String>,
    date_time: Option<String>,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePerson {
    email: Option<String>,
    #[serde(rename = "self")]
    is_self: Option<bool>,
    resource: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireConference {
    conference_id: Option<String>,
    conference_solution: Option<WireSolution>,
    create_request: Option<WireCreateRequest>,
    parameters: Option<WireParameters>,
    entry_points: Option<Vec<WireEntryPoint>>,
}

#[derive(Deserialize)]
struct WireSolution {
    key: Option<WireKey>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireKey {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCreateRequest {
    conference_solution_key: Option<WireKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireParameters {
    add_on_parameters: Option<WireAddOn>,
}

#[derive(Deserialize)]
struct WireAddOn {
    parameters: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEntryPoint {
    entry_point_type: Option<String>,
    uri: Option<String>,
}

impl WireTime {
    fn parse(&self, field: &str) -> Result<When, Malformed> {
        if let Some(date) = &self.date {
            return NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map(When::Day)
                .map_err(|_| {
                    Malformed::new(format!("{field}.date {date:?} is not a yyyy-mm-dd date"))
                });
        }
        match &self.date_time {
            Some(dt) => DateTime::parse_from_rfc3339(dt)
                .map(|t| When::At(t.with_timezone(&Utc)))
                .map_err(|_| {
                    Malformed::new(format!(
                        "{field}.dateTime {dt:?} is not an RFC 3339 date-time"
                    ))
                }),
            None => Err(Malformed::new(format!(
                "{field} has neither date nor dateTime"
            ))),
        }
    }
}

impl WireEvent {
    fn into_snapshot(self) -> Result<Snapshot, Malformed> {
        let event_id = self
            .id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Malformed::new("the event has no id"))?;
        let status = Status::parse(self.status.as_deref());
        let original_start = match &self.original_start_time {
            Some(t) => Some(t.parse("originalStartTime")?),
            None => None,
        };
        if self.recurring_event_id.is_some() && original_start.is_none() {
            return Err(Malformed::new("an instance without originalStartTime"));
        }
        let organizer_self = self
            .organizer
            .as_ref()
            .and_then(|o| o.is_self)
            .unwrap_or(false);
        let conference = self.conference_data.as_ref().map(conference_info);
        let spec = if status == Status::Cancelled && self.start.is_none() {
            None
        } else {
            Some(self.spec()?)
        };
        Ok(Snapshot {
            event_id,
            etag: self.etag,
            status,
            recurring_event_id: self.recurring_event_id,
            original_start,
            organizer_self,
            conference,
            spec,
        })
    }

    fn spec(&self) -> Result<MeetingSpec, Malformed> {
        let start_time = self
            .start
            .as_ref()
            .ok_or_else(|| Malformed::new("the event has no start"))?;
        let end_time = self
            .end
            .as_ref()
            .ok_or_else(|| Malformed::new("the event has no end"))?;
        let start = start_time.parse("start")?;
        let end = end_time.parse("end")?;
        if matches!(
            (start, end),
            (When::At(_), When::Day(_)) | (When::Day(_), When::At(_))
        ) {
            return Err(Malformed::new("start and end mix date and dateTime"));
        }
        if end < start {
            return Err(Malformed::new("the event ends before it starts"));
        }
        let recurrence = self.recurrence.clone().unwrap_or_default();
        for line in &recurrence {
            let upper = line.to_ascii_uppercase();
            if !["RRULE:", "RDATE", "EXDATE", "EXRULE:"]
                .iter()
                .any(|p| upper.starts_with(p))
            {
                return Err(Malformed::new(format!("unknown recurrence line {line:?}")));
            }
        }
        let mut attendees: Vec<String> = self
            .attendees
            .iter()
            .flatten()
            .filter(|a| a.resource != Some(true))
            .filter_map(|a| a.email.as_deref())
            .map(str::to_ascii_lowercase)
            .collect();
        attendees.sort();
        attendees.dedup();
        Ok(MeetingSpec {
            title: self.summary.clone().unwrap_or_default(),
            description: self.description.clone().unwrap_or_default(),
            start,
            end,
            time_zone: start_time.time_zone.clone(),
            recurrence,
            attendees,
            organizer: self
                .organizer
                .as_ref()
                .and_then(|o| o.email.as_deref())
                .map(str::to_ascii_lowercase),
        })
    }
}

fn conference_info(cd: &WireConference) -> ConferenceInfo {
    let solution_type = cd
        .conference_solution
        .as_ref()
        .and_then(|s| s.key.as_ref())
        .and_then(|k| k.kind.clone())
        .or_else(|| {
            cd.create_request
                .as_ref()
                .and_then(|r| r.conference_solution_key.as_ref())
                .and_then(|k| k.kind.clone())
        })
        .unwrap_or_default();
    ConferenceInfo {
        solution_type,
        solution_name: cd.conference_solution.as_ref().and_then(|s| s.name.clone()),
        conference_id: cd.conference_id.clone(),
        parameters: cd
            .parameters
            .as_ref()
            .and_then(|p| p.add_on_parameters.as_ref())
            .and_then(|a| a.parameters.clone())
            .unwrap_or_default(),
        join_uri: cd
            .entry_points
            .iter()
            .flatten()
            .find(|e| e.entry_point_type.as_deref() == Some("video"))
            .and_then(|e| e.uri.clone()),
    }
}

/// An event the engine cannot understand; it goes to the dead-letter table with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {reason}")]
pub struct Malformed {
    pub reason: String,
}

impl Malformed {
    pub fn new(reason: impl Into<String>) -> Self {
        Malformed {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn occurrence_keys_parse_back_to_their_time() {
        let at = When::At("2026-12-08T10:00:00Z".parse().unwrap());
        let day = When::Day(NaiveDate::from_ymd_opt(2026, 12, 8).unwrap());
        for w in [at, day] {
            assert_eq!(When::from_key(&w.key()), Some(w));
        }
        assert_eq!(When::from_key("next tuesday"), None);
    }

    fn event() -> Value {
        json!({
            "kind": "calendar#event", "etag": "\"1\"", "id": "e1", "status": "confirmed",
            "summary": "Planning", "description": "Agenda",
            "start": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-01T11:00:00+01:00", "timeZone": "Europe/Berlin"},
            "organizer": {"email": "Alice@Example.com", "self": true},
            "attendees": [
                {"email": "bob@example.com", "responseStatus": "accepted"},
                {"email": "room@resource.calendar.google.com", "resource": true},
                {"email": "Carol@example.com", "responseStatus": "needsAction"}
            ],
            "colorId": "5",
            "conferenceData": {
                "conferenceId": "m-1",
                "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync"},
                "entryPoints": [{"entryPointType": "video", "uri": "https://m/1"}],
                "parameters": {"addOnParameters": {"parameters": {"meetingId": "1"}}}
            }
        })
    }

    #[test]
    fn reads_the_fields_a_provider_cares_about() {
        let s = Snapshot::from_json(&event()).unwrap();
        let spec = s.spec.unwrap();
        assert_eq!(spec.title, "Planning");
        assert_eq!(
            spec.start,
            When::At("2026-12-01T09:00:00Z".parse().unwrap())
        );
        assert_eq!(
            spec.attendees,
            ["bob@example.com", "carol@example.com"],
            "resources out, sorted, lowercase"
        );
        assert_eq!(spec.organizer.as_deref(), Some("alice@example.com"));
        assert!(s.organizer_self);
        let c = s.conference.unwrap();
        assert_eq!(
            (c.solution_type.as_str(), c.conference_id.as_deref()),
            ("addOn", Some("m-1"))
        );
        assert_eq!(c.parameters["meetingId"], "1");
        assert_eq!(c.join_uri.as_deref(), Some("https://m/1"));
    }

    #[test]
    fn colour_and_rsvp_do_not_change_the_spec() {
        let before = Snapshot::from_json(&event()).unwrap().spec.unwrap();
        let mut changed = event();
        changed["colorId"] = json!("7");
        changed["attendees"][0]["responseStatus"] = json!("declined");
        changed["reminders"] = json!({"useDefault": false});
        let after = Snapshot::from_json(&changed).unwrap().spec.unwrap();
        assert_eq!(before.fingerprint(), after.fingerprint());
    }

    #[test]
    fn the_same_instant_in_another_offset_is_the_same_spec() {
        let before = Snapshot::from_json(&event()).unwrap().spec.unwrap();
        let mut shifted = event();
        shifted["start"]["dateTime"] = json!("2026-12-01T09:00:00Z");
        let after = Snapshot::from_json(&shifted).unwrap().spec.unwrap();
        assert_eq!(before.start, after.start);
    }

    #[test]
    fn tombstones_have_no_spec() {
        let t = Snapshot::from_json(
            &json!({"kind": "calendar#event", "etag": "\"2\"", "id": "e1", "status": "cancelled"}),
        )
        .unwrap();
        assert!(t.is_cancelled());
        assert!(t.spec.is_none() && t.conference.is_none());
        let i = Snapshot::from_json(&json!({"id": "e1_20261201T090000Z", "status": "cancelled", "recurringEventId": "e1", "originalStartTime": {"dateTime": "2026-12-01T10:00:00+01:00"}})).unwrap();
        assert_eq!(
            i.original_start,
            Some(When::At("2026-12-01T09:00:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn malformed_events_say_why() {
        let cases = [
            (json!({"status": "confirmed"}), "no id"),
            (
                json!({"id": "x", "start": {"dateTime": "soon"}, "end": {"dateTime": "2026-12-01T10:00:00Z"}}),
                "start.dateTime",
            ),
            (
                json!({"id": "x", "start": {"date": "2026-12-01"}, "end": {"dateTime": "2026-12-01T10:00:00Z"}}),
                "mix",
            ),
            (
                json!({"id": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}}),
                "no end",
            ),
            (
                json!({"id": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T09:00:00Z"}}),
                "before",
            ),
            (
                json!({"id": "x", "recurrence": ["BOGUS"], "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}}),
                "recurrence",
            ),
            (
                json!({"id": "x", "recurringEventId": "s"}),
                "originalStartTime",
            ),
        ];
        for (item, why) in cases {
            let err = Snapshot::from_json(&item).unwrap_err();
            assert!(err.reason.contains(why), "{why}: {}", err.reason);
        }
    }

    #[test]
    fn unknown_status_values_are_kept() {
        let mut e = event();
        e["status"] = json!("postponed");
        assert_eq!(
            Snapshot::from_json(&e).unwrap().status,
            Status::Other("postponed".into())
        );
    }
}
