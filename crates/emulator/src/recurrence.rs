//! Recurring events: parsing Google's `recurrence` lines and expanding them into instances.
//!
//! Google's `recurrence` field is a list of iCalendar (RFC 5545) content lines: `RRULE`, `RDATE`
//! and `EXDATE` (Google rejects `EXRULE` and any `DTSTART`, whose role the event's `start` plays).
//!
//! Rule expansion is delegated to the `rrule` crate, but only for the wall-clock arithmetic:
//! every rule is expanded on a *floating* start (the series' local wall-clock time, labelled as
//! UTC) and each generated wall-clock time is then placed in the series' zone here. That is what
//! RFC 5545 means by expanding "in the time zone of DTSTART" (a weekly 10:00 Berlin meeting stays
//! at 10:00 local across DST) and it lets this module apply RFC 5545's rules for times that DST
//! skips or repeats, which the crate would otherwise drop or resolve arbitrarily. For the same
//! reason `UNTIL`, `COUNT`'s treatment of DTSTART, `RDATE` and `EXDATE` are handled here rather
//! than by the crate's `RRuleSet`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use chrono::{
    DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset, SubsecRound,
    TimeZone, Utc,
};
use chrono_tz::Tz;

/// How far past the series start rules are expanded, so that infinite rules always terminate.
const HORIZON_MONTHS: u32 = 100 * 12;

/// Upper bound on the rule candidates one expansion looks at. A DAILY rule with long BYHOUR,
/// BYMINUTE and BYSECOND lists can produce millions of candidates within the horizon; without
/// this cap a query far into the future would stall the server instead of returning a
/// (truncated) answer. Half a million still covers a DAILY rule with 13 times a day over the
/// whole horizon.
const MAX_SCAN: usize = 500_000;

/// No zone is more than this far from UTC (tzdb's extremes, LMT included, stay under 16 h).
/// Used to know when no later wall-clock time can still map to an earlier instant.
const MAX_UTC_OFFSET_HOURS: i64 = 26;

/// The start of a series' first instance, as the event's `start` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesStart {
    /// Timed event: the instant and the IANA zone in which the recurrence is expanded (Google
    /// requires start.timeZone for recurring events).
    DateTime {
        /// The first instance's start.
        at: DateTime<Utc>,
        /// The zone whose wall clock the rule follows.
        tz: Tz,
    },
    /// All-day event (`start.date`).
    Date(NaiveDate),
}

/// Start of one occurrence (original start, i.e. as the rule generates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OccurrenceStart {
    /// An occurrence of a timed series, as a UTC instant.
    DateTime(DateTime<Utc>),
    /// An occurrence of an all-day series.
    Date(NaiveDate),
}

impl OccurrenceStart {
    /// `OccurrenceStart` -> the instant it begins in UTC (for all-day: that date at 00:00 in
    /// `tz` if given, else UTC).
    pub fn utc(&self, tz: Option<Tz>) -> DateTime<Utc> {
        match *self {
            OccurrenceStart::DateTime(at) => at,
            OccurrenceStart::Date(d) => {
                let midnight = d.and_time(NaiveTime::MIN);
                match tz {
                    Some(zone) => local_to_utc(zone, midnight),
                    None => midnight.and_utc(),
                }
            }
        }
    }
}

/// Why a `recurrence` array was rejected. Every message names the offending line so an API
/// client can tell which entry to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecurrenceError {
    /// Neither an `RRULE` nor an `RDATE`: nothing would generate instances.
    #[error("recurrence must contain at least one RRULE or RDATE line")]
    NoRule,
    /// A blank entry in the array.
    #[error("recurrence line {index} is empty")]
    EmptyLine {
        /// Zero-based position in the `recurrence` array.
        index: usize,
    },
    /// An `EXRULE` line; Google dropped support for them, as did RFC 5545.
    #[error("EXRULE is not supported: {line:?}")]
    ExruleNotSupported {
        /// The line as given.
        line: String,
    },
    /// A `DTSTART` (or `DTEND`) line; the series start comes from the event's `start`.
    #[error(
        "{line:?} is not allowed in recurrence: the series start comes from the event's start and end"
    )]
    StartNotAllowed {
        /// The line as given.
        line: String,
    },
    /// A property other than `RRULE`, `RDATE`, `EXDATE`.
    #[error("unknown recurrence property {name:?} in {line:?}: expected RRULE, RDATE or EXDATE")]
    UnknownProperty {
        /// The line as given.
        line: String,
        /// The property name found.
        name: String,
    },
    /// An `RRULE` that does not parse or validate.
    #[error("invalid recurrence rule {line:?}: {reason}")]
    InvalidRule {
        /// The line as given.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `TZID` parameter that is not an IANA zone name.
    #[error("invalid time zone {tzid:?} in recurrence line {line:?}")]
    InvalidTimeZone {
        /// The line as given.
        line: String,
        /// The zone name found.
        tzid: String,
    },
    /// A malformed `RDATE`/`EXDATE` line (bad parameter or date value) or content line.
    #[error("invalid recurrence line {line:?}: {reason}")]
    InvalidLine {
        /// The line as given.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The series starts outside years 1..=9999, where the rule arithmetic is not defined.
    #[error("recurring event start year {year} is out of range (1..=9999)")]
    StartOutOfRange {
        /// The offending year.
        year: i32,
    },
}

/// A rule's end given by `UNTIL`.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// `UNTIL=…Z`: inclusive bound on the occurrence's instant.
    Utc(DateTime<Utc>),
    /// `UNTIL` as a DATE or a floating date-time: inclusive bound on the local wall-clock time.
    Local(NaiveDateTime),
}

/// One `RRULE`, ready to expand.
#[derive(Debug, Clone)]
struct Rule {
    /// The crate's rule on the floating start; it carries COUNT but never UNTIL.
    set: rrule::RRuleSet,
    /// COUNT, which this module enforces itself because DTSTART counts even when the rule
    /// does not generate it (RFC 5545 3.3.10), which the crate does not do.
    count: Option<u32>,
    until: Option<Until>,
}

/// A parsed, validated recurrence: RRULE / EXRULE? (reject EXRULE like Google: "EXRULE is not
/// supported") / RDATE / EXDATE lines.
#[derive(Debug, Clone)]
pub struct Recurrence {
    start: SeriesStart,
    /// The series start as local wall-clock time (for all-day: midnight of the date).
    start_local: NaiveDateTime,
    /// Rules stop producing occurrences past this wall-clock time.
    horizon: NaiveDateTime,
    rules: Vec<Rule>,
    /// Added occurrences, ascending and deduplicated.
    rdates: Vec<OccurrenceStart>,
    /// Removed occurrences (exact starts).
    exdates: BTreeSet<OccurrenceStart>,
    /// Timed series only: `EXDATE;VALUE=DATE` removes every occurrence on that local date.
    exdate_days: BTreeSet<NaiveDate>,
}

/// A date or date-time value of an `RDATE`/`EXDATE`/`UNTIL`.
#[derive(Debug, Clone, Copy)]
enum DateValue {
    Date(NaiveDate),
    /// Wall-clock time plus the zone it is in (`None` = floating, i.e. the series' zone).
    DateTime(NaiveDateTime, Option<Tz>),
}

impl Recurrence {
    /// Parses Google's `recurrence` array (lines like
    /// "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20261231T000000Z",
    /// "EXDATE;TZID=Europe/Berlin:20261202T100000", "EXDATE:20261202T090000Z",
    /// "EXDATE;VALUE=DATE:20261202", "RDATE;VALUE=DATE:20261205",
    /// "RDATE;TZID=America/New_York:20261203T150000,20261204T150000"). No DTSTART lines (Google
    /// forbids them: error). Line names are case-insensitive. At least one RRULE or RDATE is
    /// required. Empty lines -> error.
    ///
    /// A timed start is truncated to whole seconds: iCalendar times have no fractions, so
    /// occurrences (and instance ids) are whole seconds too.
    pub fn parse(lines: &[String], start: SeriesStart) -> Result<Recurrence, RecurrenceError> {
        let start = match start {
            SeriesStart::DateTime { at, tz } => SeriesStart::DateTime {
                at: at.trunc_subsecs(0),
                tz,
            },
            date => date,
        };
        let start_local = match start {
            SeriesStart::DateTime { at, tz } => {
                // `naive_local()` panics when the offset pushes past chrono's range.
                let offset = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
                at.naive_utc()
                    .checked_add_offset(offset)
                    .ok_or(RecurrenceError::StartOutOfRange { year: at.year() })?
            }
            SeriesStart::Date(d) => d.and_time(NaiveTime::MIN),
        };
        let year = start_local.year();
        if !(1..=9999).contains(&year) {
            return Err(RecurrenceError::StartOutOfRange { year });
        }
        let horizon = start_local
            .checked_add_months(Months::new(HORIZON_MONTHS))
            .unwrap_or(NaiveDateTime::MAX);

        let mut rec = Recurrence {
            start,
            start_local,
            horizon,
            rules: Vec::new(),
            rdates: Vec::new(),
            exdates: BTreeSet::new(),
            exdate_days: BTreeSet::new(),
        };
        let mut has_rdate = false;
        for (index, raw) in lines.iter().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                return Err(RecurrenceError::EmptyLine { index });
            }
            let content = split_content_line(line)?;
            match content.name.to_ascii_uppercase().as_str() {
                "RRULE" => {
                    if !content.params.is_empty() {
                        return Err(invalid_rule(line, "RRULE takes no parameters"));
                    }
                    let rule = rec.parse_rule(line, content.value)?;
                    rec.rules.push(rule);
                }
                "RDATE" => {
                    for value in parse_date_list(line, &content, true)? {
                        let occ = rec.rdate_occurrence(value);
                        rec.rdates.push(occ);
                    }
                    has_rdate = true;
                }
                "EXDATE" => {
                    for value in parse_date_list(line, &content, false)? {
                        rec.add_exdate(value);
                    }
                }
                "EXRULE" => {
                    return Err(RecurrenceError::ExruleNotSupported {
                        line: line.to_owned(),
                    });
                }
                "DTSTART" | "DTEND" => {
                    return Err(RecurrenceError::StartNotAllowed {
                        line: line.to_owned(),
                    });
                }
                _ => {
                    return Err(RecurrenceError::UnknownProperty {
                        line: line.to_owned(),
                        name: content.name.to_owned(),
                    });
                }
            }
        }
        if rec.rules.is_empty() && !has_rdate {
            return Err(RecurrenceError::NoRule);
        }
        // DTSTART is an instance even when no rule generates it (an RDATE-only series); listing
        // it with the RDATEs covers that case, and the merge drops it where a rule repeats it.
        let first = match start {
            SeriesStart::DateTime { at, .. } => OccurrenceStart::DateTime(at),
            SeriesStart::Date(d) => OccurrenceStart::Date(d),
        };
        rec.rdates.push(first);
        rec.rdates.sort_unstable();
        rec.rdates.dedup();
        Ok(rec)
    }

    /// Original starts of the occurrences (DTSTART itself counts as the first occurrence per
    /// RFC 5545, even if it does not match the rule — Google behaves that way for the first
    /// instance), ascending, EXDATEs removed, RDATEs added (deduplicated), restricted to
    /// occurrences whose interval [start, start+duration) overlaps [window_start, window_end)
    /// (both bounds optional; an occurrence that ends exactly at window_start is excluded, one
    /// that starts exactly at window_end is excluded), at most `limit` results. Must terminate
    /// quickly for infinite rules (no COUNT/UNTIL) even with no window_end: stop at `limit`.
    /// Also stop after a hard horizon of 100 years past the series start.
    ///
    /// All-day occurrences are compared with the window at midnight UTC of their date.
    pub fn occurrences(
        &self,
        duration: Duration,
        window_start: Option<DateTime<Utc>>,
        window_end: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<OccurrenceStart> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        for occ in self.expand() {
            let begins = occ.utc(None);
            if window_end.is_some_and(|end| begins >= end) {
                // Occurrences ascend: every later one starts at or after the window's end too.
                break;
            }
            if let Some(ws) = window_start {
                let ends = begins
                    .checked_add_signed(duration)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if ends <= ws {
                    continue;
                }
            }
            out.push(occ);
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    /// True if `at` is one of the series' occurrences (used to validate instance ids). Should be
    /// efficient: expand only up to `at`.
    pub fn contains(&self, at: OccurrenceStart) -> bool {
        let same_kind = matches!(
            (at, self.start),
            (OccurrenceStart::DateTime(_), SeriesStart::DateTime { .. })
                | (OccurrenceStart::Date(_), SeriesStart::Date(_))
        );
        if !same_kind {
            // Ordering across kinds is meaningless; this would only scan to the horizon.
            return false;
        }
        for occ in self.expand() {
            if occ >= at {
                return occ == at;
            }
        }
        false
    }

    /// The UTC instant where the last occurrence begins, or None when the series is infinite.
    /// For all-day series it is midnight UTC of the last date. A finite series whose every
    /// instance is excluded has no last start either.
    pub fn last_start(&self) -> Option<DateTime<Utc>> {
        if self
            .rules
            .iter()
            .any(|r| r.count.is_none() && r.until.is_none())
        {
            return None;
        }
        self.expand().last().map(|occ| occ.utc(None))
    }

    /// Parses one `RRULE` value. UNTIL is taken out and checked here (the crate insists on a UTC
    /// UNTIL and compares it with its own notion of the start); the rest goes to the crate.
    fn parse_rule(&self, line: &str, value: &str) -> Result<Rule, RecurrenceError> {
        let mut parts: Vec<(String, String)> = Vec::new();
        for part in value.split(';').filter(|p| !p.is_empty()) {
            let Some((key, val)) = part.split_once('=') else {
                return Err(invalid_rule(
                    line,
                    format!("rule part {part:?} is not NAME=VALUE"),
                ));
            };
            let key = key.trim().to_ascii_uppercase();
            let val = val.trim().to_ascii_uppercase();
            if !RULE_PARTS.contains(&key.as_str()) {
                return Err(invalid_rule(line, format!("unknown rule part {key}")));
            }
            if parts.iter().any(|(k, _)| *k == key) {
                return Err(invalid_rule(
                    line,
                    format!("rule part {key} is given more than once"),
                ));
            }
            if val.is_empty() {
                return Err(invalid_rule(line, format!("rule part {key} has no value")));
            }
            parts.push((key, val));
        }
        let get = |name: &str| {
            parts
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match get("FREQ") {
            None => return Err(invalid_rule(line, "FREQ is required")),
            Some(freq @ ("HOURLY" | "MINUTELY" | "SECONDLY")) => {
                // Google Calendar does not repeat events more often than daily (its API fails
                // on such rules); refusing them also spares the expansion millions of instances.
                return Err(invalid_rule(
                    line,
                    format!("FREQ={freq} is not supported: events repeat at most DAILY"),
                ));
            }
            Some(freq) if !FREQUENCIES.contains(&freq) => {
                return Err(invalid_rule(line, format!("unknown FREQ value {freq}")));
            }
            Some(_) => {}
        }
        let count = match get("COUNT") {
            None => None,
            Some(c) => match c.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(invalid_rule(
                        line,
                        format!("COUNT must be a positive integer, not {c}"),
                    ));
                }
            },
        };
        if let Some(i) = get("INTERVAL")
            && !i.parse::<u16>().is_ok_and(|n| n > 0)
        {
            // The crate silently yields nothing for INTERVAL=0.
            return Err(invalid_rule(
                line,
                format!("INTERVAL must be an integer from 1 to 65535, not {i}"),
            ));
        }
        let until = match get("UNTIL") {
            None => None,
            Some(u) => Some(self.parse_until(line, u)?),
        };
        if count.is_some() && until.is_some() {
            // RFC 5545 3.3.10: "they MUST NOT occur in the same 'recur'".
            return Err(invalid_rule(line, "COUNT and UNTIL must not both be given"));
        }

        let for_crate: Vec<String> = parts
            .iter()
            .filter(|(k, _)| k != "UNTIL")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let unvalidated: rrule::RRule<rrule::Unvalidated> = for_crate
            .join(";")
            .parse()
            .map_err(|e: rrule::RRuleError| invalid_rule(line, crate_reason(&e)))?;
        let floating_start = rrule::Tz::UTC.from_utc_datetime(&self.start_local);
        let validated = unvalidated
            .validate(floating_start)
            .map_err(|e| invalid_rule(line, crate_reason(&e)))?;
        // `limit()` makes the crate give up on rules that never match (e.g. BYMONTHDAY=30 with
        // BYMONTH=2) after a bounded number of empty iterations instead of looping forever.
        let set = rrule::RRuleSet::new(floating_start)
            .limit()
            .rrule(validated);
        // A rule that generates nothing past DTSTART within the horizon would make every later
        // expansion pay for the crate's long fruitless search; find that out once, here, and
        // keep just DTSTART, which is all such a series has.
        let start = self.start_local;
        let generates = (&set)
            .into_iter()
            .take(2)
            .map(|dt| dt.naive_utc())
            .find(|dt| *dt != start)
            .is_some_and(|dt| dt <= self.horizon);
        if !generates {
            return Ok(Rule {
                set,
                count: Some(1),
                until: None,
            });
        }
        Ok(Rule { set, count, until })
    }

    fn parse_until(&self, line: &str, value: &str) -> Result<Until, RecurrenceError> {
        let bad = || {
            invalid_rule(
                line,
                format!("UNTIL value {value} is not a DATE or DATE-TIME"),
            )
        };
        if let Some(date) = parse_date(value) {
            // A DATE UNTIL includes that whole day.
            let end_of_day = NaiveTime::from_hms_opt(23, 59, 59).ok_or_else(bad)?;
            return Ok(Until::Local(date.and_time(end_of_day)));
        }
        let (naive, utc) = parse_date_time(value).ok_or_else(bad)?;
        Ok(if utc {
            Until::Utc(naive.and_utc())
        } else {
            Until::Local(naive)
        })
    }

    /// The occurrence an RDATE value adds.
    fn rdate_occurrence(&self, value: DateValue) -> OccurrenceStart {
        match (self.start, value) {
            (SeriesStart::Date(_), DateValue::Date(d)) => OccurrenceStart::Date(d),
            // A date-time on an all-day series adds the day it falls on, as written.
            (SeriesStart::Date(_), DateValue::DateTime(n, _)) => OccurrenceStart::Date(n.date()),
            // A date on a timed series adds an instance at the series' usual local time.
            (SeriesStart::DateTime { tz, .. }, DateValue::Date(d)) => {
                OccurrenceStart::DateTime(local_to_utc(tz, d.and_time(self.start_local.time())))
            }
            (SeriesStart::DateTime { tz, .. }, DateValue::DateTime(n, zone)) => {
                OccurrenceStart::DateTime(local_to_utc(zone.unwrap_or(tz), n))
            }
        }
    }

    fn add_exdate(&mut self, value: DateValue) {
        match (self.start, value) {
            (SeriesStart::Date(_), DateValue::Date(d)) => {
                self.exdates.insert(OccurrenceStart::Date(d));
            }
            (SeriesStart::Date(_), DateValue::DateTime(n, _)) => {
                self.exdates.insert(OccurrenceStart::Date(n.date()));
            }
            (SeriesStart::DateTime { .. }, DateValue::Date(d)) => {
                self.exdate_days.insert(d);
            }
            (SeriesStart::DateTime { tz, .. }, DateValue::DateTime(n, zone)) => {
                self.exdates.insert(OccurrenceStart::DateTime(local_to_utc(
                    zone.unwrap_or(tz),
                    n,
                )));
            }
        }
    }

    fn is_excluded(&self, occ: OccurrenceStart) -> bool {
        if self.exdates.contains(&occ) {
            return true;
        }
        match (occ, self.start) {
            (OccurrenceStart::DateTime(at), SeriesStart::DateTime { tz, .. })
                if !self.exdate_days.is_empty() =>
            {
                self.exdate_days
                    .contains(&at.with_timezone(&tz).date_naive())
            }
            _ => false,
        }
    }

    /// All occurrences, ascending and deduplicated, EXDATEs removed.
    fn expand(&self) -> Expansion<'_> {
        Expansion {
            rec: self,
            rules: self
                .rules
                .iter()
                .map(|r| RuleStream::new(self, r))
                .collect(),
            heads: vec![None; self.rules.len()],
            next_rdate: 0,
            last: None,
        }
    }
}

/// The rule parts RFC 5545 defines (BYEASTER is the crate's extension and not Google's).
const RULE_PARTS: [&str; 14] = [
    "FREQ",
    "UNTIL",
    "COUNT",
    "INTERVAL",
    "BYSECOND",
    "BYMINUTE",
    "BYHOUR",
    "BYDAY",
    "BYMONTHDAY",
    "BYYEARDAY",
    "BYWEEKNO",
    "BYMONTH",
    "BYSETPOS",
    "WKST",
];

const FREQUENCIES: [&str; 4] = ["DAILY", "WEEKLY", "MONTHLY", "YEARLY"];

fn invalid_rule(line: &str, reason: impl Into<String>) -> RecurrenceError {
    RecurrenceError::InvalidRule {
        line: line.to_owned(),
        reason: reason.into(),
    }
}

/// The crate's message without its "RRule parsing error: " style prefix, which would be noise
/// in an API error.
fn crate_reason(e: &rrule::RRuleError) -> String {
    match e {
        rrule::RRuleError::ParserError(p) => p.to_string(),
        rrule::RRuleError::ValidationError(v) => v.to_string(),
        rrule::RRuleError::IterError(s) => s.clone(),
    }
}

/// A content line split into `NAME;PARAM=VALUE;...:VALUE`.
struct ContentLine<'a> {
    name: &'a str,
    params: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

fn split_content_line(line: &str) -> Result<ContentLine<'_>, RecurrenceError> {
    let invalid = |reason: &str| RecurrenceError::InvalidLine {
        line: line.to_owned(),
        reason: reason.to_owned(),
    };
    // Parameter values may be quoted and contain ':' or ';' (RFC 5545 3.1), so the separators
    // are only looked for outside quotes.
    let mut in_quotes = false;
    let mut separators = Vec::new();
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => separators.push(i),
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(colon) = colon else {
        return Err(invalid("expected NAME:VALUE, found no ':'"));
    };
    let head = &line[..colon];
    let value = &line[colon + 1..];
    let name_end = separators.first().copied().unwrap_or(colon);
    let name = head[..name_end].trim();
    if name.is_empty() {
        return Err(invalid("missing property name before ':'"));
    }
    let mut params = Vec::new();
    let mut bounds = separators.clone();
    bounds.push(colon);
    for w in bounds.windows(2) {
        let param = &line[w[0] + 1..w[1]];
        let Some((key, val)) = param.split_once('=') else {
            return Err(invalid(&format!("parameter {param:?} is not NAME=VALUE")));
        };
        let val = val.trim();
        let val = val
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(val);
        params.push((key.trim(), val));
    }
    Ok(ContentLine {
        name,
        params,
        value,
    })
}

/// Parses the comma-separated values of an `RDATE`/`EXDATE` line.
fn parse_date_list(
    line: &str,
    content: &ContentLine<'_>,
    rdate: bool,
) -> Result<Vec<DateValue>, RecurrenceError> {
    let invalid = |reason: String| RecurrenceError::InvalidLine {
        line: line.to_owned(),
        reason,
    };
    let mut value_type = None;
    let mut tz = None;
    for &(key, val) in &content.params {
        match key.to_ascii_uppercase().as_str() {
            "VALUE" => {
                let kind = val.to_ascii_uppercase();
                match kind.as_str() {
                    "DATE" | "DATE-TIME" => value_type = Some(kind),
                    "PERIOD" if rdate => {
                        return Err(invalid("RDATE;VALUE=PERIOD is not supported".to_owned()));
                    }
                    _ => return Err(invalid(format!("unsupported VALUE={val}"))),
                }
            }
            "TZID" => {
                let zone = val
                    .parse::<Tz>()
                    .map_err(|_| RecurrenceError::InvalidTimeZone {
                        line: line.to_owned(),
                        tzid: val.to_owned(),
                    })?;
                tz = Some(zone);
            }
            _ => return Err(invalid(format!("unsupported parameter {key}"))),
        }
    }
    let mut values = Vec::new();
    for raw in content.value.split(',') {
        let v = raw.trim().to_ascii_uppercase();
        if v.is_empty() {
            return Err(invalid("empty date value".to_owned()));
        }
        let parsed = match value_type.as_deref() {
            Some("DATE") => parse_date(&v)
                .map(DateValue::Date)
                .ok_or_else(|| invalid(format!("{v} is not a DATE (YYYYMMDD)")))?,
            Some(_) => parse_zoned_date_time(&v, tz).ok_or_else(|| {
                invalid(format!(
                    "{v} is not a DATE-TIME (YYYYMMDDTHHMMSS, optionally ending in Z)"
                ))
            })?,
            // Without VALUE, accept either form: clients often omit VALUE=DATE.
            None => parse_date(&v)
                .map(DateValue::Date)
                .or_else(|| parse_zoned_date_time(&v, tz))
                .ok_or_else(|| {
                    invalid(format!(
                        "{v} is not a DATE (YYYYMMDD) or DATE-TIME (YYYYMMDDTHHMMSS[Z])"
                    ))
                })?,
        };
        values.push(parsed);
    }
    Ok(values)
}

fn parse_zoned_date_time(v: &str, tz: Option<Tz>) -> Option<DateValue> {
    let (naive, utc) = parse_date_time(v)?;
    // A trailing Z wins over TZID: the value then names a UTC instant whatever else is said.
    Some(DateValue::DateTime(
        naive,
        if utc { Some(Tz::UTC) } else { tz },
    ))
}

/// `YYYYMMDD`, digits only (chrono's `%Y` would also accept signs and other widths).
fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = s.get(0..4)?.parse().ok()?;
    let month = s.get(4..6)?.parse().ok()?;
    let day = s.get(6..8)?.parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// `YYYYMMDDTHHMMSS` with an optional `Z`; returns the wall-clock time and whether it is UTC.
fn parse_date_time(s: &str) -> Option<(NaiveDateTime, bool)> {
    let (body, utc) = match s.strip_suffix('Z') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let (date, time) = body.split_once('T')?;
    let date = parse_date(date)?;
    if time.len() != 6 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h = time.get(0..2)?.parse().ok()?;
    let m = time.get(2..4)?.parse().ok()?;
    let sec = time.get(4..6)?.parse().ok()?;
    Some((date.and_time(NaiveTime::from_hms_opt(h, m, sec)?), utc))
}

/// Places a wall-clock time in `tz` as RFC 5545 3.3.5 says: a time that occurs twice (DST ends)
/// means the first one; a time that does not exist (DST starts) is read with the offset in force
/// before the gap, so 02:30 on a spring-forward day becomes 03:30 in the new offset.
fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        chrono::LocalResult::None => {
            // A day earlier is safely before the gap (transitions are months apart).
            let before = local.checked_sub_signed(Duration::days(1)).unwrap_or(local);
            let offset = tz.offset_from_utc_datetime(&before).fix();
            let utc = local
                .checked_sub_signed(Duration::seconds(i64::from(offset.local_minus_utc())))
                .unwrap_or(local);
            utc.and_utc()
        }
    }
}

/// One rule's occurrences, ascending, as instants (or dates).
struct RuleStream<'a> {
    rec: &'a Recurrence,
    rule: &'a Rule,
    inner: rrule::RRuleSetIter,
    /// DTSTART, emitted before anything the crate generates.
    pending_start: bool,
    /// Occurrences COUNT still allows (DTSTART included).
    remaining: Option<u32>,
    scanned: usize,
    /// Wall-clock time of the last candidate taken from the crate.
    last_raw: Option<NaiveDateTime>,
    raw_done: bool,
    /// Converted occurrences not yet emitted. Placing wall-clock times in a zone is not
    /// monotonic around DST gaps (02:30 becomes 03:30, after a 03:00 that follows it), so
    /// occurrences wait here until no later candidate can precede them.
    pending: BinaryHeap<Reverse<OccurrenceStart>>,
}

impl<'a> RuleStream<'a> {
    fn new(rec: &'a Recurrence, rule: &'a Rule) -> Self {
        RuleStream {
            rec,
            rule,
            inner: (&rule.set).into_iter(),
            pending_start: true,
            remaining: rule.count,
            scanned: 0,
            last_raw: None,
            raw_done: false,
            pending: BinaryHeap::new(),
        }
    }

    /// The next wall-clock candidate: DTSTART, then the crate's, within COUNT/UNTIL/horizon.
    fn next_raw(&mut self) -> Option<NaiveDateTime> {
        if self.raw_done || self.remaining == Some(0) {
            self.raw_done = true;
            return None;
        }
        let start = self.rec.start_local;
        let raw = if std::mem::take(&mut self.pending_start) {
            // DTSTART always is the first instance, even past UNTIL (RFC 5545 3.8.5.3).
            start
        } else {
            loop {
                if self.scanned >= MAX_SCAN {
                    self.raw_done = true;
                    return None;
                }
                self.scanned += 1;
                let Some(next) = self.inner.next() else {
                    self.raw_done = true;
                    return None;
                };
                let next = next.naive_utc();
                // The crate yields DTSTART too when it matches the rule; it was emitted already.
                if next != start {
                    break next;
                }
            }
        };
        if raw != start {
            let past_until = match self.rule.until {
                Some(Until::Local(u)) => raw > u,
                // Later wall-clock times can still map to instants <= UNTIL only within the
                // largest UTC offset; candidates in between are filtered in `next`.
                Some(Until::Utc(u)) => raw.and_utc() - Duration::hours(MAX_UTC_OFFSET_HOURS) > u,
                None => false,
            };
            if past_until || raw > self.rec.horizon {
                self.raw_done = true;
                return None;
            }
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= 1;
        }
        self.last_raw = Some(raw);
        Some(raw)
    }

    fn to_occurrence(&self, raw: NaiveDateTime) -> OccurrenceStart {
        match self.rec.start {
            SeriesStart::Date(_) => OccurrenceStart::Date(raw.date()),
            SeriesStart::DateTime { tz, .. } => OccurrenceStart::DateTime(local_to_utc(tz, raw)),
        }
    }

    /// Whether nothing the crate yields later can come before `occ`.
    fn settled(&self, occ: OccurrenceStart) -> bool {
        match (occ, self.last_raw) {
            (OccurrenceStart::Date(_), _) => true,
            (OccurrenceStart::DateTime(at), Some(last)) => {
                at <= last.and_utc() - Duration::hours(MAX_UTC_OFFSET_HOURS)
            }
            (OccurrenceStart::DateTime(_), None) => false,
        }
    }
}

impl Iterator for RuleStream<'_> {
    type Item = OccurrenceStart;

    fn next(&mut self) -> Option<OccurrenceStart> {
        loop {
            if let Some(&Reverse(first)) = self.pending.peek()
                && (self.raw_done || self.settled(first))
            {
                self.pending.pop();
                return Some(first);
            }
            let Some(raw) = self.next_raw() else {
                // No more candidates: drain what is waiting, in order.
                return self.pending.pop().map(|Reverse(occ)| occ);
            };
            let occ = self.to_occurrence(raw);
            let beyond_until = match self.rule.until {
                Some(Until::Utc(u)) => raw != self.rec.start_local && occ.utc(None) > u,
                _ => false,
            };
            if !beyond_until {
                self.pending.push(Reverse(occ));
            }
        }
    }
}

/// The union of all rules and RDATEs, ascending, deduplicated, EXDATEs removed.
struct Expansion<'a> {
    rec: &'a Recurrence,
    rules: Vec<RuleStream<'a>>,
    /// Each rule's next occurrence, once looked at.
    heads: Vec<Option<OccurrenceStart>>,
    next_rdate: usize,
    last: Option<OccurrenceStart>,
}

impl Iterator for Expansion<'_> {
    type Item = OccurrenceStart;

    fn next(&mut self) -> Option<OccurrenceStart> {
        loop {
            for (head, stream) in self.heads.iter_mut().zip(self.rules.iter_mut()) {
                if head.is_none() {
                    *head = stream.next();
                }
            }
            let mut best: Option<(OccurrenceStart, Option<usize>)> =
                self.rec.rdates.get(self.next_rdate).map(|&r| (r, None));
            for (i, head) in self.heads.iter().enumerate() {
                if let Some(h) = *head
                    && best.is_none_or(|(b, _)| h < b)
                {
                    best = Some((h, Some(i)));
                }
            }
            let (occ, source) = best?;
            match source {
                Some(i) => {
                    if let Some(head) = self.heads.get_mut(i) {
                        *head = None;
                    }
                }
                None => self.next_rdate += 1,
            }
            if self.last == Some(occ) {
                continue;
            }
            self.last = Some(occ);
            if !self.rec.is_excluded(occ) {
                return Some(occ);
            }
        }
    }
}

/// Google's instance id: `<seriesId>_<YYYYMMDDTHHMMSSZ>` (UTC start) for timed, `<seriesId>_<YYYYMMDD>`
/// for all-day.
pub fn instance_id(series_id: &str, start: OccurrenceStart) -> String {
    match start {
        OccurrenceStart::DateTime(at) => format!("{series_id}_{}", at.format("%Y%m%dT%H%M%SZ")),
        OccurrenceStart::Date(d) => format!("{series_id}_{}", d.format("%Y%m%d")),
    }
}

/// Inverse of instance_id: splits at the LAST '_' and parses the suffix; None if it is not an
/// instance id.
pub fn parse_instance_id(id: &str) -> Option<(&str, OccurrenceStart)> {
    let (series, suffix) = id.rsplit_once('_')?;
    if series.is_empty() {
        return None;
    }
    if let Some(date) = parse_date(suffix) {
        return Some((series, OccurrenceStart::Date(date)));
    }
    match parse_date_time(suffix) {
        // Timed instance ids are always UTC; a floating suffix is not one Google would mint.
        Some((naive, true)) => Some((series, OccurrenceStart::DateTime(naive.and_utc()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    fn at(s: &str) -> OccurrenceStart {
        OccurrenceStart::DateTime(utc(s))
    }

    fn day(s: &str) -> OccurrenceStart {
        OccurrenceStart::Date(date(s))
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("test date")
    }

    fn timed(s: &str, tz: Tz) -> SeriesStart {
        SeriesStart::DateTime { at: utc(s), tz }
    }

    fn parse(v: &[&str], start: SeriesStart) -> Recurrence {
        Recurrence::parse(&lines(v), start).expect("valid recurrence")
    }

    fn all(rec: &Recurrence) -> Vec<OccurrenceStart> {
        rec.occurrences(Duration::hours(1), None, None, 10_000)
    }

    fn err(v: &[&str]) -> RecurrenceError {
        Recurrence::parse(&lines(v), timed("2026-01-05T09:00:00Z", Tz::UTC))
            .expect_err("should be rejected")
    }

    #[test]
    fn weekly_with_count_yields_exactly_count_occurrences() {
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;COUNT=3"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-05T09:00:00Z"),
                at("2026-01-12T09:00:00Z"),
                at("2026-01-19T09:00:00Z")
            ]
        );

        let rec = parse(
            &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-05T09:00:00Z"),
                at("2026-01-07T09:00:00Z"),
                at("2026-01-12T09:00:00Z"),
                at("2026-01-14T09:00:00Z"),
            ]
        );
    }

    #[test]
    fn dtstart_off_the_rule_is_the_first_occurrence_and_counts_toward_count() {
        // 2026-01-06 is a Tuesday; the rule only yields Mondays.
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3"],
            timed("2026-01-06T10:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-06T10:00:00Z"),
                at("2026-01-12T10:00:00Z"),
                at("2026-01-19T10:00:00Z")
            ]
        );
    }

    #[test]
    fn daily_until_date_time_is_inclusive() {
        let start = timed("2026-03-01T08:00:00Z", Tz::UTC);
        let rec = parse(&["RRULE:FREQ=DAILY;UNTIL=20260303T080000Z"], start);
        assert_eq!(
            all(&rec),
            vec![
                at("2026-03-01T08:00:00Z"),
                at("2026-03-02T08:00:00Z"),
                at("2026-03-03T08:00:00Z")
            ]
        );
        let rec = parse(&["RRULE:FREQ=DAILY;UNTIL=20260303T075959Z"], start);
        assert_eq!(
            all(&rec),
            vec![at("2026-03-01T08:00:00Z"), at("2026-03-02T08:00:00Z")]
        );
    }

    #[test]
    fn daily_until_date_includes_that_whole_local_day() {
        // 23:30 in Berlin is 22:30Z; the DATE bound is the local day, not the UTC one.
        let rec = parse(
            &["RRULE:FREQ=DAILY;UNTIL=20260303"],
            timed("2026-03-01T22:30:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-03-01T22:30:00Z"),
                at("2026-03-02T22:30:00Z"),
                at("2026-03-03T22:30:00Z")
            ]
        );
    }

    #[test]
    fn until_before_start_leaves_only_the_first_instance() {
        let rec = parse(
            &["RRULE:FREQ=DAILY;UNTIL=20250101T000000Z"],
            timed("2026-03-01T08:00:00Z", Tz::UTC),
        );
        assert_eq!(all(&rec), vec![at("2026-03-01T08:00:00Z")]);
    }

    #[test]
    fn weekly_berlin_meeting_stays_at_local_ten_across_dst() {
        // DST starts 2026-03-29 and ends 2026-10-25 in Europe/Berlin.
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;COUNT=4"],
            timed("2026-03-16T09:00:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-03-16T09:00:00Z"),
                at("2026-03-23T09:00:00Z"),
                at("2026-03-30T08:00:00Z"),
                at("2026-04-06T08:00:00Z"),
            ]
        );
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;COUNT=2"],
            timed("2026-10-19T08:00:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![at("2026-10-19T08:00:00Z"), at("2026-10-26T09:00:00Z")]
        );
    }

    #[test]
    fn skipped_local_time_moves_forward_and_repeated_time_takes_the_first() {
        // 02:30 does not exist on 2026-03-29 in Berlin: RFC 5545 reads it with the old offset.
        let rec = parse(
            &["RRULE:FREQ=DAILY;COUNT=3"],
            timed("2026-03-28T01:30:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-03-28T01:30:00Z"),
                at("2026-03-29T01:30:00Z"),
                at("2026-03-30T00:30:00Z")
            ]
        );
        // 02:30 happens twice on 2026-10-25: the first (summer time) one is meant.
        let rec = parse(
            &["RRULE:FREQ=DAILY;COUNT=3"],
            timed("2026-10-24T00:30:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-10-24T00:30:00Z"),
                at("2026-10-25T00:30:00Z"),
                at("2026-10-26T01:30:00Z")
            ]
        );
    }

    #[test]
    fn hourly_occurrences_stay_sorted_across_a_dst_gap() {
        // 02:30 local on the gap day maps to 01:30Z, after 03:00 local (01:00Z) would if unsorted.
        let rec = parse(
            &["RRULE:FREQ=DAILY;BYHOUR=2,3;BYMINUTE=0,30;COUNT=8"],
            timed("2026-03-28T01:00:00Z", chrono_tz::Europe::Berlin),
        );
        let occ = all(&rec);
        assert!(occ.windows(2).all(|w| w[0] < w[1]), "{occ:?}");
        // 02:00/02:30 on the gap day coincide with 03:00/03:30 and are counted once each.
        assert_eq!(
            occ,
            vec![
                at("2026-03-28T01:00:00Z"),
                at("2026-03-28T01:30:00Z"),
                at("2026-03-28T02:00:00Z"),
                at("2026-03-28T02:30:00Z"),
                at("2026-03-29T01:00:00Z"),
                at("2026-03-29T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn exdate_removes_by_tzid_by_utc_by_floating_and_by_date() {
        let start = timed("2026-11-25T09:00:00Z", chrono_tz::Europe::Berlin);
        let rec = parse(
            &[
                "RRULE:FREQ=WEEKLY;COUNT=6",
                "EXDATE;TZID=Europe/Berlin:20261202T100000",
                "EXDATE:20261209T090000Z",
                "EXDATE;VALUE=DATE:20261216",
                "exdate:20261223T100000",
            ],
            start,
        );
        // COUNT is applied before EXDATEs, so the series still ends on 2026-12-30.
        assert_eq!(
            all(&rec),
            vec![at("2026-11-25T09:00:00Z"), at("2026-12-30T09:00:00Z")]
        );
    }

    #[test]
    fn exdate_can_remove_the_first_instance() {
        let rec = parse(
            &["RRULE:FREQ=DAILY;COUNT=2", "EXDATE:20260105T090000Z"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(all(&rec), vec![at("2026-01-06T09:00:00Z")]);
    }

    #[test]
    fn rdate_adds_occurrences_and_duplicates_are_dropped() {
        let ny = chrono_tz::America::New_York;
        let rec = parse(
            &[
                "RRULE:FREQ=WEEKLY;COUNT=3",
                "RDATE;TZID=America/New_York:20261203T150000,20261204T150000",
                // Same instant as the second weekly occurrence (15:00 EST).
                "RDATE:20261208T200000Z",
                "RDATE;TZID=America/New_York:20261203T150000",
            ],
            timed("2026-12-01T20:00:00Z", ny),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-12-01T20:00:00Z"),
                at("2026-12-03T20:00:00Z"),
                at("2026-12-04T20:00:00Z"),
                at("2026-12-08T20:00:00Z"),
                at("2026-12-15T20:00:00Z"),
            ]
        );
    }

    #[test]
    fn rdate_only_series_has_its_start_plus_the_dates() {
        let rec = parse(
            &["RDATE;VALUE=DATE:20261205,20261201"],
            SeriesStart::Date(date("2026-12-01")),
        );
        assert_eq!(all(&rec), vec![day("2026-12-01"), day("2026-12-05")]);
        // A DATE on a timed series adds an instance at the series' local time of day.
        let rec = parse(
            &["RDATE;VALUE=DATE:20260710"],
            timed("2026-07-01T08:00:00Z", chrono_tz::Europe::Berlin),
        );
        assert_eq!(
            all(&rec),
            vec![at("2026-07-01T08:00:00Z"), at("2026-07-10T08:00:00Z")]
        );
        assert_eq!(rec.last_start(), Some(utc("2026-07-10T08:00:00Z")));
    }

    #[test]
    fn window_keeps_overlapping_occurrences_and_excludes_touching_edges() {
        let rec = parse(
            &["RRULE:FREQ=DAILY;COUNT=10"],
            timed("2026-01-01T10:00:00Z", Tz::UTC),
        );
        let hour = Duration::hours(1);
        // 01-02 ends exactly at window start; 01-05 starts exactly at window end: both out.
        let got = rec.occurrences(
            hour,
            Some(utc("2026-01-02T11:00:00Z")),
            Some(utc("2026-01-05T10:00:00Z")),
            100,
        );
        assert_eq!(
            got,
            vec![at("2026-01-03T10:00:00Z"), at("2026-01-04T10:00:00Z")]
        );
        // 01-03 began before the window but is still running at its start.
        let got = rec.occurrences(
            hour,
            Some(utc("2026-01-03T10:30:00Z")),
            Some(utc("2026-01-05T10:00:01Z")),
            100,
        );
        assert_eq!(
            got,
            vec![
                at("2026-01-03T10:00:00Z"),
                at("2026-01-04T10:00:00Z"),
                at("2026-01-05T10:00:00Z")
            ]
        );
        // Only an end bound, and a limit.
        let got = rec.occurrences(hour, None, Some(utc("2026-01-09T00:00:00Z")), 2);
        assert_eq!(
            got,
            vec![at("2026-01-01T10:00:00Z"), at("2026-01-02T10:00:00Z")]
        );
        assert!(rec.occurrences(hour, None, None, 0).is_empty());
    }

    #[test]
    fn infinite_rule_stops_at_limit_and_at_the_hundred_year_horizon() {
        let rec = parse(
            &["RRULE:FREQ=DAILY"],
            timed("2026-01-01T10:00:00Z", Tz::UTC),
        );
        let got = rec.occurrences(Duration::hours(1), None, None, 5);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], at("2026-01-05T10:00:00Z"));
        let got = rec.occurrences(
            Duration::hours(1),
            Some(utc("2076-01-01T00:00:00Z")),
            None,
            2,
        );
        assert_eq!(
            got,
            vec![at("2076-01-01T10:00:00Z"), at("2076-01-02T10:00:00Z")]
        );
        let got = rec.occurrences(Duration::hours(1), None, None, usize::MAX);
        assert_eq!(got.last(), Some(&at("2126-01-01T10:00:00Z")));
        assert!(
            rec.occurrences(
                Duration::hours(1),
                Some(utc("2126-01-02T00:00:00Z")),
                None,
                10
            )
            .is_empty()
        );
    }

    #[test]
    fn sub_daily_frequencies_are_rejected_like_google() {
        for freq in ["HOURLY", "MINUTELY", "SECONDLY"] {
            let line = format!("RRULE:FREQ={freq}");
            let e = err(&[line.as_str()]);
            assert!(
                matches!(&e, RecurrenceError::InvalidRule { line: l, .. } if *l == line),
                "{e}"
            );
            assert!(e.to_string().contains("not supported"), "{e}");
        }
    }

    #[test]
    fn dense_daily_rule_with_far_window_terminates() {
        // 48 instances a day would be 1.75 million over the horizon; the scan cap stops it.
        let rec = parse(
            &[
                "RRULE:FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0,30",
            ],
            timed("2026-01-01T00:00:00Z", Tz::UTC),
        );
        let got = rec.occurrences(
            Duration::minutes(30),
            Some(utc("2026-01-02T00:00:00Z")),
            None,
            3,
        );
        assert_eq!(
            got,
            vec![
                at("2026-01-02T00:00:00Z"),
                at("2026-01-02T00:30:00Z"),
                at("2026-01-02T01:00:00Z")
            ]
        );
        let got = rec.occurrences(
            Duration::minutes(30),
            Some(utc("2120-01-01T00:00:00Z")),
            None,
            3,
        );
        assert!(got.is_empty(), "past the scan cap");
    }

    #[test]
    fn rule_that_never_matches_terminates() {
        let rec = parse(
            &["RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"],
            SeriesStart::Date(date("2026-01-01")),
        );
        assert_eq!(
            rec.occurrences(Duration::days(1), None, None, 10),
            vec![day("2026-01-01")]
        );
    }

    #[test]
    fn monthly_last_friday_second_tuesday_and_setpos() {
        let rec = parse(
            &["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=4"],
            timed("2026-01-30T12:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-30T12:00:00Z"),
                at("2026-02-27T12:00:00Z"),
                at("2026-03-27T12:00:00Z"),
                at("2026-04-24T12:00:00Z"),
            ]
        );
        let rec = parse(
            &["RRULE:FREQ=MONTHLY;BYDAY=2TU;COUNT=3"],
            timed("2026-01-13T12:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-13T12:00:00Z"),
                at("2026-02-10T12:00:00Z"),
                at("2026-03-10T12:00:00Z")
            ]
        );
        // Last weekday of the month.
        let rec = parse(
            &["RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=3"],
            timed("2026-01-30T12:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-30T12:00:00Z"),
                at("2026-02-27T12:00:00Z"),
                at("2026-03-31T12:00:00Z")
            ]
        );
        let rec = parse(
            &["RRULE:FREQ=MONTHLY;BYMONTHDAY=15;INTERVAL=2;COUNT=3"],
            timed("2026-01-15T12:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![
                at("2026-01-15T12:00:00Z"),
                at("2026-03-15T12:00:00Z"),
                at("2026-05-15T12:00:00Z")
            ]
        );
    }

    #[test]
    fn wkst_changes_biweekly_grouping_as_in_rfc_5545() {
        let ny = chrono_tz::America::New_York;
        let start = timed("1997-08-05T13:00:00Z", ny); // 09:00 EDT
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO"],
            start,
        );
        assert_eq!(
            all(&rec),
            vec![
                at("1997-08-05T13:00:00Z"),
                at("1997-08-10T13:00:00Z"),
                at("1997-08-19T13:00:00Z"),
                at("1997-08-24T13:00:00Z")
            ]
        );
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU"],
            start,
        );
        assert_eq!(
            all(&rec),
            vec![
                at("1997-08-05T13:00:00Z"),
                at("1997-08-17T13:00:00Z"),
                at("1997-08-19T13:00:00Z"),
                at("1997-08-31T13:00:00Z")
            ]
        );
    }

    #[test]
    fn all_day_yearly_series() {
        let rec = parse(
            &["RRULE:FREQ=YEARLY;COUNT=3"],
            SeriesStart::Date(date("2026-12-24")),
        );
        assert_eq!(
            all(&rec),
            vec![day("2026-12-24"), day("2027-12-24"), day("2028-12-24")]
        );
        assert_eq!(rec.last_start(), Some(utc("2028-12-24T00:00:00Z")));
        // February 29 only exists in leap years; the rule skips the others.
        let rec = parse(
            &["RRULE:FREQ=YEARLY;COUNT=3"],
            SeriesStart::Date(date("2024-02-29")),
        );
        assert_eq!(
            all(&rec),
            vec![day("2024-02-29"), day("2028-02-29"), day("2032-02-29")]
        );
        let rec = parse(
            &[
                "RRULE:FREQ=YEARLY;UNTIL=20281224",
                "EXDATE;VALUE=DATE:20271224",
            ],
            SeriesStart::Date(date("2026-12-24")),
        );
        assert_eq!(all(&rec), vec![day("2026-12-24"), day("2028-12-24")]);
        // All-day occurrences meet the window at midnight UTC and last `duration`.
        let got = rec.occurrences(
            Duration::days(1),
            Some(utc("2026-12-24T12:00:00Z")),
            None,
            10,
        );
        assert_eq!(got, vec![day("2026-12-24"), day("2028-12-24")]);
        let got = rec.occurrences(
            Duration::days(1),
            Some(utc("2026-12-25T00:00:00Z")),
            None,
            10,
        );
        assert_eq!(got, vec![day("2028-12-24")]);
    }

    #[test]
    fn instance_ids_round_trip() {
        let timed_start = at("2026-12-02T09:00:00Z");
        assert_eq!(
            instance_id("abc123", timed_start),
            "abc123_20261202T090000Z"
        );
        assert_eq!(
            parse_instance_id("abc123_20261202T090000Z"),
            Some(("abc123", timed_start))
        );
        let all_day = day("2026-12-24");
        assert_eq!(instance_id("abc123", all_day), "abc123_20261224");
        assert_eq!(
            parse_instance_id("abc123_20261224"),
            Some(("abc123", all_day))
        );
        // The series id may itself contain underscores: the suffix follows the last one.
        let id = instance_id("my_series_id", timed_start);
        assert_eq!(parse_instance_id(&id), Some(("my_series_id", timed_start)));
        for not_instance in [
            "abc123",
            "_20261224",
            "abc_",
            "abc_2026122",
            "abc_20261302",
            "abc_20261202T090000",
            "abc_20261202T250000Z",
            "abc_x",
        ] {
            assert_eq!(parse_instance_id(not_instance), None, "{not_instance}");
        }
    }

    #[test]
    fn parse_errors_name_the_offending_line() {
        let e = err(&["RRULE:FREQ=SOMETIMES"]);
        assert_eq!(
            e.to_string(),
            "invalid recurrence rule \"RRULE:FREQ=SOMETIMES\": unknown FREQ value SOMETIMES"
        );
        assert!(matches!(
            err(&["DTSTART:20260105T090000Z", "RRULE:FREQ=DAILY"]),
            RecurrenceError::StartNotAllowed { .. }
        ));
        let e = err(&["RRULE:FREQ=DAILY", "EXRULE:FREQ=WEEKLY"]);
        assert!(e.to_string().starts_with("EXRULE is not supported"), "{e}");
        assert_eq!(err(&[]), RecurrenceError::NoRule);
        assert_eq!(err(&["EXDATE:20260105T090000Z"]), RecurrenceError::NoRule);
        assert_eq!(
            err(&["RRULE:FREQ=DAILY", "  "]),
            RecurrenceError::EmptyLine { index: 1 }
        );
        let e = err(&["FOO:BAR"]);
        assert_eq!(
            e,
            RecurrenceError::UnknownProperty {
                line: "FOO:BAR".into(),
                name: "FOO".into()
            }
        );
        let e = err(&[
            "RRULE:FREQ=DAILY",
            "EXDATE;TZID=Mars/Olympus:20260105T090000",
        ]);
        assert!(
            matches!(&e, RecurrenceError::InvalidTimeZone { tzid, .. } if tzid == "Mars/Olympus"),
            "{e}"
        );
        assert!(e.to_string().contains("Mars/Olympus"));
        // The crate's own rejections surface with the line.
        let e = err(&["RRULE:FREQ=MONTHLY;BYMONTHDAY=40"]);
        assert!(
            e.to_string().contains("RRULE:FREQ=MONTHLY;BYMONTHDAY=40"),
            "{e}"
        );
        let e = err(&["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20260301T000000Z"]);
        assert!(e.to_string().contains("COUNT and UNTIL"), "{e}");
        let e = err(&["RRULE:FREQ=DAILY;FOO=1"]);
        assert!(e.to_string().contains("unknown rule part FOO"), "{e}");
        let e = err(&["RRULE:FREQ=DAILY;INTERVAL=0"]);
        assert!(e.to_string().contains("INTERVAL must be"), "{e}");
        let e = err(&["RDATE;VALUE=PERIOD:20260105T090000Z/PT1H"]);
        assert!(e.to_string().contains("PERIOD"), "{e}");
    }

    #[test]
    fn names_and_rule_values_are_case_insensitive() {
        let rec = parse(
            &["rrule:freq=weekly;byday=mo;count=2"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![at("2026-01-05T09:00:00Z"), at("2026-01-12T09:00:00Z")]
        );
    }

    #[test]
    fn contains_matches_only_real_occurrences() {
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE", "EXDATE:20260107T090000Z"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert!(rec.contains(at("2026-01-05T09:00:00Z")));
        assert!(rec.contains(at("2026-01-12T09:00:00Z")));
        assert!(rec.contains(at("2030-06-05T09:00:00Z")));
        assert!(!rec.contains(at("2026-01-07T09:00:00Z")), "EXDATE'd");
        assert!(!rec.contains(at("2026-01-06T09:00:00Z")), "a Tuesday");
        assert!(!rec.contains(at("2026-01-12T09:00:01Z")), "wrong time");
        assert!(
            !rec.contains(at("2025-12-29T09:00:00Z")),
            "before the start"
        );
        assert!(
            !rec.contains(day("2026-01-05")),
            "all-day id for a timed series"
        );
    }

    #[test]
    fn last_start_for_finite_and_infinite_series() {
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;COUNT=3"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(rec.last_start(), Some(utc("2026-01-19T09:00:00Z")));
        let rec = parse(
            &["RRULE:FREQ=WEEKLY;UNTIL=20260201T000000Z"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(rec.last_start(), Some(utc("2026-01-26T09:00:00Z")));
        let rec = parse(
            &["RRULE:FREQ=WEEKLY"],
            timed("2026-01-05T09:00:00Z", Tz::UTC),
        );
        assert_eq!(rec.last_start(), None);
    }

    #[test]
    fn sub_second_start_is_truncated_to_whole_seconds() {
        let rec = parse(
            &["RRULE:FREQ=DAILY;COUNT=2"],
            timed("2026-01-05T09:00:00.250Z", Tz::UTC),
        );
        assert_eq!(
            all(&rec),
            vec![at("2026-01-05T09:00:00Z"), at("2026-01-06T09:00:00Z")]
        );
    }

    #[test]
    fn occurrence_start_utc_uses_the_given_zone_for_dates() {
        assert_eq!(day("2026-07-01").utc(None), utc("2026-07-01T00:00:00Z"));
        assert_eq!(
            day("2026-07-01").utc(Some(chrono_tz::Europe::Berlin)),
            utc("2026-06-30T22:00:00Z")
        );
        assert_eq!(
            at("2026-07-01T05:00:00Z").utc(Some(chrono_tz::Europe::Berlin)),
            utc("2026-07-01T05:00:00Z")
        );
    }

    #[test]
    fn recurrence_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Recurrence>();
        assert_send_sync::<RecurrenceError>();
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "",
            ":",
            ";",
            "RRULE",
            "RRULE:",
            "RRULE:;",
            "RRULE:FREQ",
            "RRULE:FREQ=",
            "RRULE:=DAILY",
            "RRULE:FREQ=DAILY;COUNT=-1",
            "RRULE:FREQ=DAILY;COUNT=0",
            "RRULE:FREQ=DAILY;COUNT=99999999999",
            "RRULE:FREQ=DAILY;INTERVAL=0",
            "RRULE:FREQ=DAILY;INTERVAL=70000",
            "RRULE:FREQ=DAILY;INTERVAL=65535",
            "RRULE:FREQ=WEEKLY;BYDAY=XX",
            "RRULE:FREQ=MONTHLY;BYDAY=99FR",
            "RRULE:FREQ=MONTHLY;BYDAY=0MO",
            "RRULE:FREQ=MONTHLY;BYSETPOS=0",
            "RRULE:FREQ=YEARLY;BYWEEKNO=54",
            "RRULE:FREQ=YEARLY;BYYEARDAY=-367",
            "RRULE:FREQ=DAILY;BYHOUR=24",
            "RRULE:FREQ=DAILY;BYMINUTE=60;BYSECOND=61",
            "RRULE:FREQ=DAILY;UNTIL=2026",
            "RRULE:FREQ=DAILY;UNTIL=20261301",
            "RRULE:FREQ=DAILY;UNTIL=99991231T235959Z",
            "RRULE:FREQ=DAILY;WKST=XY",
            "RRULE;X=1:FREQ=DAILY",
            "RRULE:FREQ=DAILY;FREQ=WEEKLY",
            "RRULE:FREQ=HOURLY;BYHOUR=1;INTERVAL=24",
            "RRULE:FREQ=DAILY;BYSECOND=1,2;BYSETPOS=-1",
            "RRULE:FREQ=MINUTELY;INTERVAL=1440;BYMINUTE=1",
            "RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=31;BYSETPOS=1",
            "RDATE:",
            "RDATE:,",
            "RDATE:2026",
            "RDATE:20261301",
            "RDATE:20260101T246000Z",
            "RDATE;VALUE=DATE:20260101T000000",
            "RDATE;VALUE=DATE-TIME:20260101",
            "RDATE;TZID=:20260101T000000",
            "RDATE;TZID=\"Europe/Berlin\":20260101T000000",
            "RDATE;\"unterminated:20260101",
            "RDATE;=:1",
            "EXDATE;FOO=BAR:20260101",
            "EXDATE;VALUE=TEXT:x",
            "RDATE:99991231T235959Z",
            "RDATE:00010101T000000",
            "RDATE;TZID=Pacific/Kiritimati:99991231T235959",
            "ÄÖÜ:ß",
            "RRULE:FREQ=DAILY;BYDAY=MO\u{0}",
            "\u{feff}RRULE:FREQ=DAILY",
            "RRULE:FREQ=ÿ",
        ];
        let starts = [
            timed("2026-01-05T09:00:00Z", chrono_tz::Europe::Berlin),
            timed("9999-12-31T23:59:59Z", Tz::UTC),
            timed("0001-01-01T00:00:00Z", chrono_tz::Pacific::Kiritimati),
            SeriesStart::Date(date("2026-02-28")),
            SeriesStart::Date(NaiveDate::MAX),
            SeriesStart::Date(NaiveDate::MIN),
            SeriesStart::DateTime {
                at: DateTime::<Utc>::MAX_UTC,
                tz: Tz::UTC,
            },
            SeriesStart::DateTime {
                at: DateTime::<Utc>::MAX_UTC,
                tz: chrono_tz::Pacific::Kiritimati,
            },
            SeriesStart::DateTime {
                at: DateTime::<Utc>::MIN_UTC,
                tz: chrono_tz::America::New_York,
            },
        ];
        for start in starts {
            for g in garbage {
                for set in [
                    vec![g],
                    vec!["RRULE:FREQ=DAILY;COUNT=3", g],
                    vec![g, "RDATE:20260301T000000Z"],
                ] {
                    if let Ok(rec) = Recurrence::parse(&lines(&set), start) {
                        let got = rec.occurrences(Duration::hours(1), None, None, 50);
                        let _ = rec.occurrences(
                            Duration::MAX,
                            Some(DateTime::<Utc>::MIN_UTC),
                            Some(DateTime::<Utc>::MAX_UTC),
                            5,
                        );
                        let _ =
                            rec.occurrences(Duration::MIN, Some(DateTime::<Utc>::MAX_UTC), None, 5);
                        if let Some(first) = got.first() {
                            let _ = rec.contains(*first);
                        }
                        let _ = rec.contains(OccurrenceStart::DateTime(DateTime::<Utc>::MAX_UTC));
                        let _ = rec.contains(OccurrenceStart::Date(NaiveDate::MAX));
                        if rec
                            .rules
                            .iter()
                            .all(|r| r.count.is_some() || r.until.is_some())
                        {
                            let _ = rec.last_start();
                        }
                    }
                }
            }
            let _ = parse_instance_id("");
        }
        for d in [NaiveDate::MAX, NaiveDate::MIN] {
            for tz in [
                None,
                Some(chrono_tz::Pacific::Kiritimati),
                Some(chrono_tz::America::New_York),
            ] {
                let _ = OccurrenceStart::Date(d).utc(tz);
            }
            let _ = instance_id("x", OccurrenceStart::Date(d));
        }
        for id in garbage {
            let _ = parse_instance_id(id);
        }
    }
}
