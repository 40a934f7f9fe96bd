//! Calendar v3 wire types: what `events.list`, `events.get`, writes and `events.watch` carry.
//!
//! This module owns the JSON shapes only (checked against the discovery document, revision
//! 20261030), not what they mean to the sync engine. Three rules keep the types safe to read an
//! event and write it back:
//!
//! - Every field is optional and skipped when absent, so a tombstone (`{kind, etag, id, status}`)
//!   parses and a serialized event carries only what it was given.
//! - Every object the engine may write back keeps the fields it does not type in a flattened
//!   `extra` map (`workingLocationProperties`, `attachments`, fields Google adds next year...), so
//!   `serde_json::from_value::<Event>(v)` then `serde_json::to_value` gives `v` again.
//! - Enumerations (`status`, `responseStatus`, `eventType`, `entryPointType`...) stay strings:
//!   a value Google invents later must never make a page unreadable.
//!
//! Times stay the strings Google sent (`updated`, `dateTime`), so writing back never reformats
//! them; helpers such as [`Event::updated_at`] parse them on demand. One loss is accepted: an
//! explicit JSON `null` in a typed field reads as absent (Google never sends one in responses; a
//! PATCH that must clear a field builds its body as a `serde_json::Value`).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Fields a type does not name, kept verbatim for the round trip.
pub type Extra = Map<String, Value>;

/// `status` of a deleted event (a tombstone in incremental listings).
pub const STATUS_CANCELLED: &str = "cancelled";
/// `conferenceSolution.key.type` of third-party (add-on) conferences.
pub const SOLUTION_ADD_ON: &str = "addOn";
/// `conferenceSolution.key.type` of Google Meet.
pub const SOLUTION_HANGOUTS_MEET: &str = "hangoutsMeet";

/// One calendar event (`calendar#event`), or the tombstone of a deleted one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Event id, unique per calendar; instances of a series are `<seriesId>_<start>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `confirmed`, `tentative` or `cancelled` (kept as a string: unknown values are not errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Opaque quoted version (`"\"3503328055223166\""`); send it back unchanged in `If-Match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Description (may contain HTML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Start (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<EventDateTime>,
    /// End (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EventDateTime>,
    /// RRULE / RDATE / EXDATE lines of a series (no DTSTART).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Vec<String>>,
    /// For an instance: the id of its series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_event_id: Option<String>,
    /// For an instance: its start in the series, immutable even when the instance moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_start_time: Option<EventDateTime>,
    /// The calendar owning the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<Person>,
    /// Who created the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<Person>,
    /// Guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendees: Option<Vec<Attendee>>,
    /// The conference attached to the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_data: Option<ConferenceData>,
    /// Private (this copy) and shared (all attendees) string properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_properties: Option<ExtendedProperties>,
    /// Last modification time (RFC 3339, as sent); see [`Event::updated_at`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// iCalendar SEQUENCE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// iCalendar UID, shared by all instances of a series.
    #[serde(rename = "iCalUID", default, skip_serializing_if = "Option::is_none")]
    pub i_cal_uid: Option<String>,
    /// Colour id (`"1"` to `"11"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_id: Option<String>,
    /// Reminder settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Reminders>,
    /// Link to the event in the Google Calendar web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_link: Option<String>,
    /// `default`, `outOfOffice`, `focusTime`, `workingLocation`, `fromGmail`, `birthday`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Every other field, verbatim (`kind`, `attachments`, `workingLocationProperties`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Event {
    /// True for a deleted event (`status: "cancelled"`), including cancelled instances.
    pub fn is_cancelled(&self) -> bool {
        self.status.as_deref() == Some(STATUS_CANCELLED)
    }

    /// `updated` parsed as a UTC instant (None when absent or not RFC 3339).
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        parse_rfc3339(self.updated.as_deref()?).map(|t| t.with_timezone(&Utc))
    }

    /// A private extended property of this calendar's copy.
    pub fn private_property(&self, key: &str) -> Option<&str> {
        self.extended_properties
            .as_ref()?
            .private
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// Start, end or original start of an event: `date` for all-day events, else `dateTime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDateTime {
    /// All-day date, `yyyy-mm-dd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// RFC 3339 instant (with an offset unless `time_zone` is given), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    /// IANA time zone name (required for the start of a series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EventDateTime {
    /// A timed value, in Google's RFC 3339 form.
    pub fn at(instant: DateTime<Utc>) -> Self {
        EventDateTime {
            date_time: Some(instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..Default::default()
        }
    }

    /// An all-day value.
    pub fn on(date: NaiveDate) -> Self {
        EventDateTime {
            date: Some(date.format("%Y-%m-%d").to_string()),
            ..Default::default()
        }
    }

    /// `date_time` parsed (None for all-day values, or a `dateTime` without an offset).
    pub fn instant(&self) -> Option<DateTime<FixedOffset>> {
        parse_rfc3339(self.date_time.as_deref()?)
    }

    /// `date` parsed (None for timed values).
    pub fn all_day(&self) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(self.date.as_deref()?, "%Y-%m-%d").ok()
    }
}

/// The organizer or creator of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// Email address (for an organizer: the calendar id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// True when this person is the calendar the event was read from.
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_: Option<bool>,
    /// Every other field (`id`, ...), verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A guest of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    /// Email address (required on writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Optional attendance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// A room or other resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<bool>,
    /// `needsAction`, `declined`, `tentative`, `accepted` (kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
    /// True for the organizer's entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<bool>,
    /// True for the entry of the calendar the event was read from.
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_: Option<bool>,
    /// The attendee's response comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Number of extra guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_guests: Option<i64>,
    /// Every other field (`id`, ...), verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The conference of an event (Meet, or a third-party add-on conference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceData {
    /// The provider's conference id (for add-ons: up to 512 characters, chosen by the provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_id: Option<String>,
    /// Which conferencing solution this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_solution: Option<ConferenceSolution>,
    /// How to join: at most one `video`, `sip` and `more`, any number of `phone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_points: Option<Vec<EntryPoint>>,
    /// Add-on parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<ConferenceParameters>,
    /// HTML notes shown to guests (up to 2048 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Server-generated signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// A request to create a conference (instead of solution plus entry points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_request: Option<CreateConferenceRequest>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ConferenceData {
    /// `conferenceSolution.key.type` (`addOn`, `hangoutsMeet`, ...).
    pub fn solution_type(&self) -> Option<&str> {
        self.conference_solution
            .as_ref()?
            .key
            .as_ref()?
            .type_
            .as_deref()
    }

    /// `parameters.addOnParameters.parameters`, where add-ons keep their own ids.
    pub fn add_on_parameters(&self) -> Option<&BTreeMap<String, String>> {
        self.parameters
            .as_ref()?
            .add_on_parameters
            .as_ref()?
            .parameters
            .as_ref()
    }

    /// The URI of the `video` entry point (the join link).
    pub fn video_uri(&self) -> Option<&str> {
        self.entry_points
            .as_deref()?
            .iter()
            .find(|e| e.entry_point_type.as_deref() == Some("video"))?
            .uri
            .as_deref()
    }
}

/// Identifies a conferencing solution and how it is shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceSolution {
    /// The solution's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ConferenceSolutionKey>,
    /// User-visible name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User-visible icon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_uri: Option<String>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{type}`: `addOn`, `hangoutsMeet`, or a deprecated value (kept as a string).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceSolutionKey {
    /// The solution type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One way to join a conference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPoint {
    /// `video`, `phone`, `sip` or `more` (kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point_type: Option<String>,
    /// `http(s):` for video and more, `tel:` for phone, `sip:` for sip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// User-visible label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Access code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_code: Option<String>,
    /// Meeting code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_code: Option<String>,
    /// Passcode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// CLDR region code of a phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// Features such as `toll` or `toll_free`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point_features: Option<Vec<String>>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `conferenceData.parameters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceParameters {
    /// Parameters of an add-on conference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_on_parameters: Option<AddOnParameters>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `conferenceData.parameters.addOnParameters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddOnParameters {
    /// String map visible to every guest: never put host secrets here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `conferenceData.createRequest`: asks Google (or the add-on) to create the conference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConferenceRequest {
    /// Client-chosen id making the request idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Which solution to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_solution_key: Option<ConferenceSolutionKey>,
    /// `{statusCode: pending|success|failure}` (server-set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConferenceRequestStatus>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `conferenceData.createRequest.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceRequestStatus {
    /// `pending`, `success` or `failure` (kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `extendedProperties`: string maps, private to one calendar's copy or shared with all guests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedProperties {
    /// Visible on this calendar's copy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<BTreeMap<String, String>>,
    /// Visible on every attendee's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<BTreeMap<String, String>>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `reminders`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reminders {
    /// Use the calendar's default reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default: Option<bool>,
    /// Explicit reminders (at most 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<Reminder>>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One reminder (`EventReminder`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reminder {
    /// `email` or `popup` (kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Minutes before the start (0 to 40320).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<i64>,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One page of `events.list` (`calendar#events`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Events {
    /// The events of this page (possibly none even when more pages follow).
    #[serde(default)]
    pub items: Vec<Event>,
    /// Present when more pages follow; pass it back as `page_token` with the same query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Present on the last page only; pass it as `sync_token` for the next incremental listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_token: Option<String>,
    /// The calendar's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The calendar's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Last modification time of the calendar (RFC 3339, as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The caller's access role (`owner`, `writer`, `reader`, `freeBusyReader`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_role: Option<String>,
    /// Every other field (`kind`, `etag`, `defaultReminders`, ...), verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A push notification channel (`api#channel`), as `events.watch` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The channel id the client chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Google's id of the watched resource (needed by `channels.stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The watched resource's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// The client's token, echoed in every notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Expiry in Unix milliseconds (an int64 string on the wire; a JSON number is accepted).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "int64_string"
    )]
    pub expiration: Option<i64>,
    /// Delivery type (`web_hook`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Every other field (`kind`, `params`, ...), verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Channel {
    /// `expiration` as an instant.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.expiration?)
    }
}

/// What `events.watch` needs: a new channel id and the HTTPS address notifications go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// Unique channel id (up to 64 characters of `[A-Za-z0-9-_+/=]`); a new one per channel.
    pub id: String,
    /// HTTPS address that receives the notifications.
    pub address: String,
    /// Echoed in `X-Goog-Channel-Token` (up to 256 characters); use it to authenticate callbacks.
    pub token: Option<String>,
    /// Requested lifetime in seconds (Google's default: 604800); read the answer's `expiration`.
    pub ttl_seconds: Option<u64>,
}

impl WatchRequest {
    /// A `web_hook` channel with Google's default lifetime and no token.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        WatchRequest {
            id: id.into(),
            address: address.into(),
            token: None,
            ttl_seconds: None,
        }
    }

    /// The request body (`{"id","type":"web_hook","address","token"?,"params":{"ttl"}?}`).
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("id".into(), Value::String(self.id.clone()));
        body.insert("type".into(), Value::String("web_hook".into()));
        body.insert("address".into(), Value::String(self.address.clone()));
        if let Some(token) = &self.token {
            body.insert("token".into(), Value::String(token.clone()));
        }
        if let Some(ttl) = self.ttl_seconds {
            let mut params = Map::new();
            params.insert("ttl".into(), Value::String(ttl.to_string()));
            body.insert("params".into(), Value::Object(params));
        }
        Value::Object(body)
    }
}

fn parse_rfc3339(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok()
}

/// Google's JSON encoding of int64: a decimal string (numbers are accepted when reading).
mod int64_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(i64),
            Text(String),
        }
        match Option::<Wire>::deserialize(d)? {
            None => Ok(None),
            Some(Wire::Number(n)) => Ok(Some(n)),
            Some(Wire::Text(text)) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("not an int64: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_event() -> Value {
        json!({
            "kind": "calendar#event",
            "etag": "\"3503328055223166\"",
            "id": "abc123def456",
            "status": "confirmed",
            "htmlLink": "https://www.google.com/calendar/event?eid=YWJj",
            "created": "2026-11-01T09:00:00.000Z",
            "updated": "2026-11-02T10:00:00.123Z",
            "summary": "Standup",
            "description": "<b>daily</b>",
            "location": "Room 1",
            "colorId": "5",
            "creator": {"email": "alice@example.com", "self": true, "id": "c1"},
            "organizer": {"email": "alice@example.com", "displayName": "Alice", "self": true},
            "start": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-01T10:15:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=5"],
            "iCalUID": "abc123def456@google.com",
            "sequence": 0,
            "attendees": [
                {"email": "bob@example.com", "responseStatus": "someFutureStatus",
                 "additionalGuests": 2, "comment": "late", "optional": true,
                 "id": "att-1", "asyncOperation": "x"},
                {"email": "alice@example.com", "organizer": true, "self": true,
                 "responseStatus": "accepted", "resource": false, "displayName": "Alice"}
            ],
            "extendedProperties": {"private": {"confsync.link": "L1"}, "shared": {"b": "2", "a": "1"}},
            "conferenceData": {
                "entryPoints": [
                    {"entryPointType": "video", "uri": "https://meet.example/abc",
                     "label": "meet.example/abc", "passcode": "123",
                     "entryPointFeatures": ["toll"], "futureEntryField": 7},
                    {"entryPointType": "hologram", "uri": "holo:abc"}
                ],
                "conferenceSolution": {"key": {"type": "addOn"}, "name": "Example",
                                       "iconUri": "https://example/icon.png"},
                "conferenceId": "conf-1",
                "signature": "sig",
                "notes": "<i>notes</i>",
                "parameters": {"addOnParameters": {"parameters": {"meetingId": "m-1"}}},
                "createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "addOn"},
                                  "status": {"statusCode": "success"}},
                "futureConferenceField": {"deep": [1, 2, {"x": null}]}
            },
            "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]},
            "eventType": "workingLocation",
            "workingLocationProperties": {"type": "officeLocation",
                                          "officeLocation": {"buildingId": "B1", "label": "HQ"}},
            "attachments": [{"fileUrl": "https://drive.google.com/x", "title": "Doc",
                             "mimeType": "application/pdf", "fileId": "f1"}],
            "guestsCanModify": true,
            "hangoutLink": "https://meet.google.com/abc-defg-hij",
            "futureField": {"x": 1}
        })
    }

    #[test]
    fn unknown_fields_round_trip_unchanged() {
        let wire = full_event();
        let event: Event = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(event.summary.as_deref(), Some("Standup"));
        assert_eq!(event.extra["futureField"], json!({"x": 1}));
        assert!(event.extra.contains_key("workingLocationProperties"));
        assert!(event.extra.contains_key("attachments"));
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(back, wire);
        // Serializing twice is byte-stable too.
        let again: Event = serde_json::from_value(back.clone()).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
    }

    #[test]
    fn an_event_in_model_field_order_round_trips_byte_for_byte() {
        // Typed fields serialize in declaration order, then unknown ones in arrival order.
        let wire = concat!(
            r#"{"id":"abc123","status":"confirmed","etag":"\"1\"","summary":"S","#,
            r#""start":{"dateTime":"2026-12-01T10:00:00Z","futureStartField":1},"#,
            r#""end":{"date":"2026-12-02"},"#,
            r#""attendees":[{"email":"b@example.com","responseStatus":"accepted","id":"a1"}],"#,
            r#""conferenceData":{"conferenceId":"c","entryPoints":[{"entryPointType":"video","#,
            r#""uri":"https://x/c","futureEntry":true}],"futureConference":[1]},"#,
            r#""kind":"calendar#event","futureField":{"x":1},"#,
            r#""workingLocationProperties":{"type":"homeOffice","homeOffice":{}},"#,
            r#""attachments":[{"fileUrl":"https://drive.google.com/x","title":"T"}]}"#
        );
        let event: Event = serde_json::from_str(wire).unwrap();
        assert_eq!(serde_json::to_string(&event).unwrap(), wire);
    }

    #[test]
    fn typed_fields_read_the_camel_case_wire_names() {
        let event: Event = serde_json::from_value(full_event()).unwrap();
        let start = event.start.as_ref().unwrap();
        assert_eq!(start.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(
            start.instant().unwrap().to_rfc3339(),
            "2026-12-01T10:00:00+01:00"
        );
        assert_eq!(event.i_cal_uid.as_deref(), Some("abc123def456@google.com"));
        assert_eq!(event.organizer.as_ref().unwrap().self_, Some(true));
        let bob = &event.attendees.as_ref().unwrap()[0];
        assert_eq!(bob.response_status.as_deref(), Some("someFutureStatus"));
        assert_eq!(bob.additional_guests, Some(2));
        assert_eq!(bob.extra["id"], json!("att-1"));
        let conference = event.conference_data.as_ref().unwrap();
        assert_eq!(conference.solution_type(), Some(SOLUTION_ADD_ON));
        assert_eq!(conference.video_uri(), Some("https://meet.example/abc"));
        assert_eq!(
            conference.add_on_parameters().unwrap()["meetingId"],
            "m-1".to_owned()
        );
        assert_eq!(
            conference.entry_points.as_ref().unwrap()[0].extra["futureEntryField"],
            json!(7)
        );
        assert_eq!(event.private_property("confsync.link"), Some("L1"));
        assert_eq!(
            event.updated_at().unwrap().to_rfc3339(),
            "2026-11-02T10:00:00.123+00:00"
        );
    }

    #[test]
    fn a_tombstone_parses_and_serializes_minimally() {
        let wire =
            json!({"kind": "calendar#event", "etag": "\"1\"", "id": "x1", "status": "cancelled"});
        let event: Event = serde_json::from_value(wire.clone()).unwrap();
        assert!(event.is_cancelled());
        assert_eq!(serde_json::to_value(&event).unwrap(), wire);
    }

    #[test]
    fn an_empty_event_serializes_to_an_empty_object() {
        assert_eq!(serde_json::to_value(Event::default()).unwrap(), json!({}));
    }

    #[test]
    fn all_day_and_timed_values_build_google_forms() {
        let day = EventDateTime::on(NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
        assert_eq!(
            serde_json::to_value(&day).unwrap(),
            json!({"date": "2026-12-24"})
        );
        assert_eq!(day.all_day(), NaiveDate::from_ymd_opt(2026, 12, 24));
        let at = EventDateTime::at(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        assert_eq!(
            serde_json::to_value(&at).unwrap(),
            json!({"dateTime": "2027-01-15T08:00:00Z"})
        );
    }

    #[test]
    fn a_page_keeps_its_tokens_and_unknown_fields() {
        let wire = json!({
            "kind": "calendar#events", "etag": "\"p\"", "summary": "alice@example.com",
            "updated": "2026-11-02T10:00:00.000Z", "timeZone": "UTC", "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "nextSyncToken": "CPDAlvWDx70CEPDAlvWDx70CGAU=",
            "items": [{"id": "a", "status": "cancelled"}]
        });
        let page: Events = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(
            page.next_sync_token.as_deref(),
            Some("CPDAlvWDx70CEPDAlvWDx70CGAU=")
        );
        assert_eq!(serde_json::to_value(&page).unwrap(), wire);
        let empty: Events = serde_json::from_value(json!({"nextPageToken": "p2"})).unwrap();
        assert!(empty.items.is_empty());
    }

    #[test]
    fn channel_expiration_reads_strings_and_numbers_and_writes_a_string() {
        let wire = json!({"kind": "api#channel", "id": "ch1", "resourceId": "r1",
                          "resourceUri": "https://x/events", "expiration": "1800000000000"});
        let channel: Channel = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(channel.expiration, Some(1_800_000_000_000));
        assert_eq!(
            channel.expires_at(),
            DateTime::from_timestamp(1_800_000_000, 0)
        );
        assert_eq!(serde_json::to_value(&channel).unwrap(), wire);
        let number: Channel = serde_json::from_value(json!({"expiration": 5})).unwrap();
        assert_eq!(number.expiration, Some(5));
        assert!(serde_json::from_value::<Channel>(json!({"expiration": "soon"})).is_err());
    }

    #[test]
    fn watch_request_body_has_google_shape() {
        let mut request = WatchRequest::new("ch-1", "https://hooks.example/gcal");
        assert_eq!(
            request.body(),
            json!({"id": "ch-1", "type": "web_hook", "address": "https://hooks.example/gcal"})
        );
        request.token = Some("t".into());
        request.ttl_seconds = Some(3600);
        assert_eq!(request.body()["params"], json!({"ttl": "3600"}));
        assert_eq!(request.body()["token"], json!("t"));
    }
}

/// One `events.list` page with its events as raw JSON text (see `Client::list_events_raw`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvents {
    /// The events of this page, undecoded.
    #[serde(default)]
    pub items: Vec<Box<serde_json::value::RawValue>>,
    /// Present when more pages follow.
    #[serde(default)]
    pub next_page_token: Option<String>,
    /// Present on the last page only.
    #[serde(default)]
    pub next_sync_token: Option<String>,
}
