//! Time: the emulator's clock and Google's time formats.
//!
//! The clock is real time plus an offset the admin API can move forward, so tests can age sync
//! tokens and expire channels without waiting.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::recurrence::{OccurrenceStart, SeriesStart};

/// The earliest instant the emulator's clock may show (Unix epoch).
pub const CLOCK_MIN_MS: i64 = 0;
/// The latest instant the emulator's clock may show: 9999-12-31T23:59:59.999Z, the last
/// instant RFC 3339 (four-digit years) can write.
pub const CLOCK_MAX_MS: i64 = 253_402_300_799_999;

/// Wall-clock time plus an adjustable offset.
///
/// The clock always shows an instant between [`CLOCK_MIN_MS`] and [`CLOCK_MAX_MS`]: moves that
/// would leave that range are refused, and [`Clock::now`] clamps (real time keeps running after
/// a move to the very end), so reading the clock can never overflow.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

/// Why the clock refused to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockError(pub String);

impl std::fmt::Display for ClockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClockError {}

fn clamped(ms: i64) -> DateTime<Utc> {
    let ms = ms.clamp(CLOCK_MIN_MS, CLOCK_MAX_MS);
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        clamped(Utc::now().timestamp_millis().saturating_add(offset))
    }

    /// Moves the clock forward (or back, for negative values) and answers the new time. A move
    /// that would take the clock outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59Z is refused
    /// and leaves the clock where it was.
    pub fn advance(&self, seconds: i64) -> Result<DateTime<Utc>, ClockError> {
        let out_of_range = || {
            ClockError(format!(
                "advanceSeconds {seconds} would move the clock outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z (now {})",
                rfc3339(self.now())
            ))
        };
        let by_ms = seconds.checked_mul(1000).ok_or_else(out_of_range)?;
        let mut current = self.offset_ms.load(Ordering::Relaxed);
        loop {
            let offset = current.checked_add(by_ms).ok_or_else(out_of_range)?;
            let target = Utc::now()
                .timestamp_millis()
                .checked_add(offset)
                .ok_or_else(out_of_range)?;
            if !(CLOCK_MIN_MS..=CLOCK_MAX_MS).contains(&target) {
                return Err(out_of_range());
            }
            // Two concurrent moves must not add up to one past the range: swap only if no other
            // move happened since `current` was read.
            match self.offset_ms.compare_exchange(
                current,
                offset,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(clamped(target)),
                Err(actual) => current = actual,
            }
        }
    }
}

/// Formats like Google's `updated`/`created`: RFC 3339 UTC with milliseconds.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp given as a query parameter (`timeMin`, `updatedMin`, ...).
pub fn parse_param_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(format!(
            "Invalid value for {name}: \"{value}\" is not an RFC 3339 timestamp with offset ({e})"
        ))
        .at("parameter", name.to_owned())
        })
}

pub fn parse_tz(name: &str, field: &str) -> Result<Tz, ApiError> {
    name.parse::<Tz>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid time zone definition for {field}: \"{name}\""
        ))
        .at("parameter", field.to_owned())
    })
}

/// A parsed `EventDateTime` (`start`, `end`, `originalStartTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTime {
    /// All-day: a calendar date (for `end`, exclusive).
    Date(NaiveDate),
    /// A timed instant, with the zone the event was given in, if any.
    DateTime { at: DateTime<Utc>, tz: Option<Tz> },
}

impl EventTime {
    /// Parses `{"date"}` or `{"dateTime", "timeZone"?}`. `field` names it in errors.
    pub fn parse(value: &Value, field: &str) -> Result<EventTime, ApiError> {
        let tz = match value.get("timeZone").and_then(Value::as_str) {
            Some(name) => Some(parse_tz(name, &format!("{field}.timeZone"))?),
            None => None,
        };
        let date = value.get("date").and_then(Value::as_str);
        let date_time = value.get("dateTime").and_then(Value::as_str);
        match (date, date_time) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
                "Invalid {field}: only one of date and dateTime may be set"
            ))
            .at("parameter", field.to_owned())),
            (Some(d), None) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(EventTime::Date)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid {field}.date: \"{d}\" is not a yyyy-mm-dd date"
                    ))
                    .at("parameter", format!("{field}.date"))
                }),
            (None, Some(dt)) => {
                if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
                    return Ok(EventTime::DateTime {
                        at: parsed.with_timezone(&Utc),
                        tz,
                    });
                }
                // Without an offset the time is local to `timeZone`, which is then required.
                let local = chrono::NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S")
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f"))
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "Invalid {field}.dateTime: \"{dt}\" is not an RFC 3339 date-time"
                        ))
                        .at("parameter", format!("{field}.dateTime"))
                    })?;
                let Some(zone) = tz else {
                    return Err(ApiError::bad_request(format!(
                        "Missing time zone definition for {field} time: \"{dt}\" has no offset and no timeZone"
                    ))
                    .at("parameter", format!("{field}.timeZone")));
                };
                let at = local.and_local_timezone(zone).earliest().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Invalid {field}.dateTime: \"{dt}\" does not exist in {zone}"
                    ))
                })?;
                Ok(EventTime::DateTime {
                    at: at.with_timezone(&Utc),
                    tz,
                })
            }
            (None, None) => Err(ApiError::required(field)),
        }
    }

    /// The instant this time begins; all-day dates start at midnight in `calendar_tz`.
    pub fn instant(&self, calendar_tz: Tz) -> DateTime<Utc> {
        match *self {
            EventTime::DateTime { at, .. } => at,
            EventTime::Date(d) => d
                .and_hms_opt(0, 0, 0)
                .and_then(|n| n.and_local_timezone(calendar_tz).earliest())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()),
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self, EventTime::Date(_))
    }

    /// The series start this time describes, for recurrence expansion.
    pub fn series_start(&self, calendar_tz: Tz) -> SeriesStart {
        match *self {
            EventTime::Date(d) => SeriesStart::Date(d),
            EventTime::DateTime { at, tz } => SeriesStart::DateTime {
                at,
                tz: tz.unwrap_or(calendar_tz),
            },
        }
    }
}

/// Renders an occurrence's start as an `EventDateTime`, in the series' zone.
pub fn occurrence_json(start: OccurrenceStart, tz: Option<Tz>) -> Value {
    match start {
        OccurrenceStart::Date(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
        OccurrenceStart::DateTime(at) => match tz {
            Some(zone) => json!({
                "dateTime": at.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Secs, false),
                "timeZone": zone.name(),
            }),
            None => json!({"dateTime": at.to_rfc3339_opts(SecondsFormat::Secs, true)}),
        },
    }
}

/// Shifts an `EventDateTime` to a new start, keeping its zone and style.
pub fn shifted_json(start: &EventTime, by: chrono::Duration) -> Value {
    match *start {
        EventTime::Date(d) => json!({"date": (d + by).format("%Y-%m-%d").to_string()}),
        EventTime::DateTime { at, tz } => occurrence_json(OccurrenceStart::DateTime(at + by), tz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_zones_and_dates() {
        let t =
            EventTime::parse(&json!({"dateTime": "2026-12-01T10:00:00+01:00"}), "start").unwrap();
        assert_eq!(
            t,
            EventTime::DateTime {
                at: "2026-12-01T09:00:00Z".parse().unwrap(),
                tz: None
            }
        );
        let t = EventTime::parse(
            &json!({"dateTime": "2026-07-01T10:00:00", "timeZone": "Europe/Berlin"}),
            "start",
        )
        .unwrap();
        assert_eq!(
            t.instant(Tz::UTC),
            "2026-07-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let t = EventTime::parse(&json!({"date": "2026-12-24"}), "start").unwrap();
        assert!(t.is_all_day());
    }

    #[test]
    fn the_clock_refuses_moves_out_of_range_and_stays_readable() {
        let clock = Clock::default();
        let before = clock.now();
        for seconds in [
            i64::MAX,
            i64::MIN,
            10_000_000_000_000_000,
            -10_000_000_000_000_000,
            i64::MAX / 1000,
            -(i64::MAX / 1000),
            300_000_000_000,
            -3_000_000_000,
        ] {
            assert!(clock.advance(seconds).is_err(), "{seconds}");
            assert!(clock.now() >= before && clock.now() - before < chrono::Duration::minutes(1));
        }
        // To the very end of the range, then further: refused; the clock still reads.
        let to_end = CLOCK_MAX_MS / 1000 - Utc::now().timestamp() - 10;
        let end = clock.advance(to_end).unwrap();
        assert_eq!(end.format("%Y").to_string(), "9999");
        assert!(clock.advance(3600).is_err());
        assert_eq!(clock.now().format("%Y").to_string(), "9999");
        // And back to the start of the range.
        let start = clock.advance(-end.timestamp()).unwrap();
        assert_eq!(start.format("%Y").to_string(), "1970");
        assert!(clock.advance(-3600).is_err());
        assert!(clock.now().timestamp() >= 0);
    }

    #[test]
    fn rejects_bad_times_with_precise_messages() {
        let err = EventTime::parse(&json!({"dateTime": "tomorrow"}), "start").unwrap_err();
        assert!(err.message.contains("start.dateTime"), "{}", err.message);
        let err = EventTime::parse(&json!({"dateTime": "2026-12-01T10:00:00"}), "end").unwrap_err();
        assert!(err.message.contains("Missing time zone"), "{}", err.message);
        let err = EventTime::parse(
            &json!({"date": "2026-12-01", "timeZone": "Mars/Olympus"}),
            "end",
        )
        .unwrap_err();
        assert!(err.message.contains("Mars/Olympus"), "{}", err.message);
        let err = EventTime::parse(&json!({"date": "2026-13-01"}), "end").unwrap_err();
        assert!(err.message.contains("end.date"), "{}", err.message);
        assert_eq!(
            EventTime::parse(&json!({}), "end").unwrap_err().reason,
            "required"
        );
    }
}
