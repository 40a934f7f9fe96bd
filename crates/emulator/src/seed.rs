//! Seed files: users, calendars and events to start the emulator with (`--seed FILE`).
//!
//! ```json
//! {"users": [{"email": "alice@example.com", "displayName": "Alice",
//!             "calendars": [{"summary": "Team", "timeZone": "Europe/Berlin"}]}],
//!  "events": [{"calendarId": "alice@example.com", "conferenceDataVersion": 1,
//!              "event": {"summary": "Standup", "start": {...}, "end": {...}}}]}
//! ```
//! Events go through the same checks as `events.insert`; a bad one stops the load with its index.

use serde::Deserialize;
use serde_json::Value;

use crate::store::{World, WriteKind, WriteOptions};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub events: Vec<SeedEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedUser {
    pub email: String,
    pub display_name: Option<String>,
    #[serde(default)]
    pub calendars: Vec<SeedCalendar>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedCalendar {
    pub summary: String,
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedEvent {
    pub calendar_id: String,
    #[serde(default)]
    pub conference_data_version: u8,
    pub event: Value,
}

/// What a seed created: secondary calendar ids in file order, and the number of events.
#[derive(Debug, Default)]
pub struct Seeded {
    pub calendars: Vec<String>,
    pub events: usize,
}

/// Parses and applies a seed file.
pub fn apply(
    world: &mut World,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Seeded, String> {
    let seed: SeedFile =
        serde_json::from_str(text).map_err(|e| format!("invalid seed file: {e}"))?;
    let mut seeded = Seeded::default();
    for user in &seed.users {
        let email = world
            .ensure_user(&user.email, user.display_name.as_deref())
            .map_err(|e| format!("user {}: {}", user.email, e.message))?
            .email
            .clone();
        for cal in &user.calendars {
            let id = world
                .create_calendar(&email, &cal.summary, cal.time_zone.as_deref())
                .map_err(|e| format!("calendar {}: {}", cal.summary, e.message))?;
            seeded.calendars.push(id);
        }
    }
    for (i, item) in seed.events.into_iter().enumerate() {
        if item.conference_data_version > 1 {
            return Err(format!(
                "events[{i}] on {}: conferenceDataVersion must be 0 or 1, not {}",
                item.calendar_id, item.conference_data_version
            ));
        }
        let opts = WriteOptions {
            conference_data_version: item.conference_data_version,
            if_match: None,
        };
        world
            .insert_event(now, &item.calendar_id, item.event, WriteKind::Insert, &opts)
            .map_err(|e| format!("events[{i}] on {}: {}", item.calendar_id, e.message))?;
        seeded.events += 1;
    }
    Ok(seeded)
}
