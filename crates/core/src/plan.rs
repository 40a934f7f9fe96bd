//! The planner: a changed event plus what the engine remembers of it (its [`Link`]) in, the
//! provider actions and the link's next state out. Pure: no I/O, no clock, no randomness.
//!
//! The rules it keeps:
//! - only our conferences are acted on (add-on solution we recognise, or an existing link,
//!   since tombstones carry no conference data); everything else is skipped without error;
//! - only the organizer's copy drives changes;
//! - the provider is called only when a field it cares about changed, and never for our own
//!   write coming back (the etag we wrote);
//! - a cancelled event, or a conference removed or replaced, deletes the meeting; an event that
//!   moved to another synced calendar keeps it (the link moves and any pending delete is
//!   superseded);
//! - a meeting the provider had to replace ([`Action::Recreate`]) gets a link built by
//!   [`replacement`]: the event's spec, the old link's occurrence exceptions replayed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{ConferenceInfo, MeetingSpec, Snapshot, When};

/// Which conferences are ours.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recognizer {
    /// `conferenceSolution.name` values of our add-on's solutions.
    pub solution_names: Vec<String>,
    /// An add-on parameter key our conferences always carry (e.g. `confsyncConferenceId`).
    pub parameter_key: Option<String>,
}

impl Recognizer {
    pub fn is_ours(&self, conference: &ConferenceInfo) -> bool {
        conference.solution_type == "addOn"
            && (conference
                .solution_name
                .as_ref()
                .is_some_and(|n| self.solution_names.contains(n))
                || self
                    .parameter_key
                    .as_ref()
                    .is_some_and(|k| conference.parameters.contains_key(k)))
    }
}

/// What a provider can change in place; the planner calls it only for changes it can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub title: bool,
    pub description: bool,
    pub time: bool,
    pub attendees: bool,
    pub recurrence: bool,
    /// Single occurrences of a series can be moved or cancelled.
    pub occurrences: bool,
}

impl Capabilities {
    /// A provider that can change everything (the built-in local provider).
    pub const ALL: Capabilities = Capabilities {
        title: true,
        description: true,
        time: true,
        attendees: true,
        recurrence: true,
        occurrences: true,
    };

    fn cares(&self, change: Change) -> bool {
        match change {
            Change::Retitled => self.title,
            Change::Description => self.description,
            Change::Rescheduled => self.time,
            Change::Attendees => self.attendees,
            Change::Recurrence => self.recurrence || self.time,
            Change::Organizer => true,
            _ => true,
        }
    }
}

/// What changed about a linked event (logged, counted, and passed to providers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Rescheduled,
    Retitled,
    Description,
    Attendees,
    Recurrence,
    Organizer,
    InstanceMoved,
    InstanceCancelled,
    EventCancelled,
    ConferenceRemoved,
    ConferenceReplaced,
    MovedCalendar,
}

/// The fields of `new` that differ from `old`.
pub fn classify(old: &MeetingSpec, new: &MeetingSpec) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.start != new.start || old.end != new.end || old.time_zone != new.time_zone {
        changes.push(Change::Rescheduled);
    }
    if old.title != new.title {
        changes.push(Change::Retitled);
    }
    if old.description != new.description {
        changes.push(Change::Description);
    }
    if old.attendees != new.attendees {
        changes.push(Change::Attendees);
    }
    if old.recurrence != new.recurrence {
        changes.push(Change::Recurrence);
    }
    if old.organizer != new.organizer {
        changes.push(Change::Organizer);
    }
    changes
}

/// What became of one occurrence of a linked series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Occurrence {
    Moved {
        start: When,
        end: When,
        title: String,
    },
    Cancelled,
}

/// What the engine remembers of one linked conference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The provider's meeting id (also the event's `conferenceId`).
    pub conference_id: String,
    pub provider: String,
    pub calendar_id: String,
    /// The event (for a series: the series id).
    pub event_id: String,
    /// The spec the meeting has once every planned action has run.
    pub spec: MeetingSpec,
    pub last_etag_seen: Option<String>,
    /// The etag of our own last write-back: when sync brings it back, it is an echo.
    pub last_etag_written: Option<String>,
    /// Occurrences of a series that differ from the rule, by original start key.
    pub occurrences: BTreeMap<String, Occurrence>,
    pub deleted: bool,
    /// The join link the event shows (its video entry point), as last seen or written.
    #[serde(default)]
    pub join_url: Option<String>,
}

/// One provider call to make, in order, for one conference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Action {
    /// Bring the meeting (the whole series) in line with `spec`.
    Update {
        spec: MeetingSpec,
        changes: Vec<Change>,
    },
    /// Move or rename one occurrence.
    UpdateOccurrence {
        occurrence: When,
        start: When,
        end: When,
        title: String,
    },
    /// Cancel one occurrence.
    CancelOccurrence { occurrence: When },
    /// Delete the meeting. Executed only after checking that the event is still gone from this
    /// calendar and the link did not move (an event moved to another calendar leaves a tombstone).
    Delete { reason: Change },
    /// The event vanished from a windowed full sync: read it (`events.get`) and plan again.
    Verify,
    /// The provider changed the join link (it had to recreate the meeting): write it into the
    /// event's conference data with If-Match, re-reading on 412, never touching other fields.
    WriteBack { join_url: String },
    /// The provider cannot make a change in place (an expired meeting, a new host, a recurrence
    /// it cannot express): create a new meeting with `spec` (this row's idempotency key, so a
    /// retry finds the same one), point the event's conference data at it with If-Match, then
    /// swap the links and delete the old meeting. Queued by the executor, never by the planner.
    /// `provider` names the provider that makes the new meeting (the current one when the row
    /// was queued; None, in rows from before providers were named: the current one when it
    /// runs), so every attempt of the row reaches the same provider, whose idempotency key
    /// finds the meeting an earlier attempt made, even across a move to another provider.
    Recreate {
        spec: MeetingSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
    },
}

impl Action {
    /// The kind, as used in idempotency keys, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Update { .. } => "update",
            Action::UpdateOccurrence { .. } => "update_occurrence",
            Action::CancelOccurrence { .. } => "cancel_occurrence",
            Action::Delete { .. } => "delete",
            Action::Verify => "verify",
            Action::WriteBack { .. } => "write_back",
            Action::Recreate { .. } => "recreate",
        }
    }

    fn occurrence(&self) -> Option<When> {
        match self {
            Action::UpdateOccurrence { occurrence, .. }
            | Action::CancelOccurrence { occurrence } => Some(*occurrence),
            _ => None,
        }
    }
}

/// Derives the idempotency key of an action: the same intended change always has the same key,
/// so a replayed page or a retried call never does the work twice.
pub fn idempotency_key(calendar_id: &str, event_id: &str, action: &Action) -> String {
    let target = match action {
        Action::Update { spec, .. } => spec.fingerprint(),
        Action::UpdateOccurrence {
            start, end, title, ..
        } => format!("{}/{}/{title}", start.key(), end.key()),
        Action::WriteBack { join_url } => join_url.clone(),
        Action::Recreate { spec, .. } => spec.fingerprint(),
        _ => String::new(),
    };
    let occurrence = action.occurrence().map(|o| o.key()).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [calendar_id, event_id, &occurrence, action.kind(), &target] {
        for b in part.bytes().chain([0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{}:{hash:016x}", action.kind())
}

/// Why nothing is done for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Skip {
    NoConference,
    NotOurs,
    AttendeeCopy,
    NotLinked,
    Echo,
    Unchanged,
    /// Something changed, but nothing the provider can act on.
    Irrelevant,
    AlreadyDeleted,
}

/// The planner's answer for one event.
// Decisions live for one page; boxing the link would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Skip(Skip),
    /// Run `actions` for `link.conference_id` (possibly none) and store `link`.
    Apply {
        link: Link,
        actions: Vec<Action>,
        changes: Vec<Change>,
        /// A pending delete of this conference must not run (the event moved calendars).
        supersede_deletes: bool,
    },
}

/// What the planner looks at.
pub struct PlanInput<'a> {
    pub calendar_id: &'a str,
    pub snapshot: &'a Snapshot,
    /// The link of this event (for an instance: of its series) on this calendar.
    pub link: Option<&'a Link>,
    /// A link elsewhere with the conference id this event carries (an event moved here).
    pub link_elsewhere: Option<&'a Link>,
    /// The provider of new links (adopted conferences).
    pub provider: &'a str,
    pub recognizer: &'a Recognizer,
    pub capabilities: Capabilities,
    /// `link`'s meeting is being recreated ([`Action::Recreate`] pending): an event showing
    /// another conference of ours is that recreate's PATCH, not a replacement by the user.
    /// Without `link`: `link_elsewhere`'s meeting is being recreated into the conference the
    /// event shows (the event moved here between the recreate's PATCH and its swap).
    pub recreating: bool,
    /// What the meeting of the deleted link an event brings back (restored, or moved here)
    /// has: usually the link's spec; see [`Applied`].
    pub applied: Applied,
}

/// What the meeting of a deleted link has, for an event that brings the link back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Applied {
    /// The link's spec, once the link's pending work has run (the usual case): an update is
    /// sent only if the event's spec differs from the link's.
    #[default]
    Linked,
    /// Not known: an update of the link was dropped while the event was gone. The event's
    /// spec is sent, even when it equals the link's.
    Unknown,
    /// The event's spec: the last update that landed carried it (the link's own spec was
    /// planned later and dropped). Nothing is sent.
    EventSpec,
}

/// Plans one event.
pub fn plan(input: &PlanInput<'_>) -> Decision {
    let s = input.snapshot;
    if let (Some(series), Some(original)) = (&s.recurring_event_id, s.original_start) {
        return plan_instance(input, series, original);
    }
    let ours = s
        .conference
        .as_ref()
        .is_some_and(|c| input.recognizer.is_ours(c));
    let Some(link) = input.link.filter(|l| !l.deleted) else {
        if input.link.is_some() && s.is_cancelled() {
            return Decision::Skip(Skip::AlreadyDeleted);
        }
        // A live event showing the conference of its own deleted link (restored, or moved
        // back, before the delete ran): the meeting is that link's, so it is the starting point
        // (an update only if the spec differs), not an adoption that updates unconditionally.
        let restored = input.link.filter(|l| {
            s.conference
                .as_ref()
                .and_then(|c| c.conference_id.as_deref())
                == Some(l.conference_id.as_str())
        });
        if input.link_elsewhere.is_none() && restored.is_some() {
            return plan_unlinked(
                &PlanInput {
                    link_elsewhere: restored,
                    ..*input
                },
                ours,
            );
        }
        return plan_unlinked(input, ours);
    };
    let mut next = link.clone();
    next.last_etag_seen = s.etag.clone();
    if let Some(join) = s.conference.as_ref().and_then(|c| c.join_uri.clone()) {
        next.join_url = Some(join);
    }
    // Our own write-back coming back: remember we saw it, call nobody. The etag alone is not
    // enough: a user edit made between our read and our write is inside the version we wrote
    // (our PATCH carried only conferenceData), so the spec must be unchanged too.
    let echo = s.etag.is_some() && s.etag == link.last_etag_written;
    if echo && !s.is_cancelled() && s.spec.as_ref() == Some(&link.spec) {
        return Decision::Apply {
            link: next,
            actions: Vec::new(),
            changes: Vec::new(),
            supersede_deletes: false,
        };
    }
    let delete = |next: Link, reason: Change| {
        let mut next = next;
        next.deleted = true;
        Decision::Apply {
            link: next,
            actions: vec![Action::Delete { reason }],
            changes: vec![reason],
            supersede_deletes: false,
        }
    };
    if s.is_cancelled() {
        return delete(next, Change::EventCancelled);
    }
    if !s.organizer_self {
        // Our link is on the organizer's calendar; a copy here that is not the organizer's
        // (e.g. the organizer moved away) changes nothing.
        return Decision::Skip(Skip::AttendeeCopy);
    }
    // A link never seen in Calendar is the add-on's create for an event the user has not
    // saved with the conference yet (adding a conference to an existing event: any sync until
    // Save sees the event without it). It is not a removal: nothing changes, and a create never
    // saved is cleaned up after its grace period (`Engine::clean_up_intents`).
    if link.last_etag_seen.is_none() {
        match &s.conference {
            None => return Decision::Skip(Skip::NoConference),
            Some(c) if !input.recognizer.is_ours(c) => return Decision::Skip(Skip::NotOurs),
            _ => {}
        }
    }
    match &s.conference {
        None => return delete(next, Change::ConferenceRemoved),
        Some(c) if !input.recognizer.is_ours(c) => return delete(next, Change::ConferenceReplaced),
        // While a recreate of this link's meeting is in flight, the event showing another
        // conference of ours is its PATCH landing before the links are swapped: the event is
        // still planned against this link (no delete, no adoption of the new conference), and
        // the swap carries what was planned here (exceptions, spec) over to the new meeting.
        Some(c)
            if !input.recreating
                && c.conference_id
                    .as_deref()
                    .is_some_and(|id| id != link.conference_id) =>
        {
            return delete(next, Change::ConferenceReplaced);
        }
        Some(_) => {}
    }
    let Some(spec) = &s.spec else {
        return Decision::Skip(Skip::Unchanged);
    };
    let changes = classify(&link.spec, spec);
    next.spec = spec.clone();
    if changes.is_empty() {
        return Decision::Apply {
            link: next,
            actions: Vec::new(),
            changes,
            supersede_deletes: false,
        };
    }
    let relevant: Vec<Change> = changes
        .iter()
        .copied()
        .filter(|c| input.capabilities.cares(*c))
        .collect();
    let mut actions = if relevant.is_empty() {
        Vec::new()
    } else {
        vec![Action::Update {
            spec: spec.clone(),
            changes: relevant.clone(),
        }]
    };
    // This also covers a meeting made from a placeholder (the add-on's create) whose
    // instances were changed before its first sync.
    if loses_exceptions(&relevant, spec, input.capabilities) {
        actions.extend(replay_exceptions(&next.occurrences));
    }
    Decision::Apply {
        link: next,
        actions,
        changes,
        supersede_deletes: false,
    }
}

/// An update with `changes` makes the meeting of series `spec` lose its occurrence
/// exceptions: most providers drop them when a series' time or rule changes (the memory
/// provider models that), so the ones the link recorded are sent again after the update.
fn loses_exceptions(changes: &[Change], spec: &MeetingSpec, capabilities: Capabilities) -> bool {
    capabilities.occurrences
        && !spec.recurrence.is_empty()
        && changes
            .iter()
            .any(|c| matches!(c, Change::Rescheduled | Change::Recurrence))
}

/// The provider calls that put a link's recorded occurrence exceptions on a meeting.
fn replay_exceptions(occurrences: &BTreeMap<String, Occurrence>) -> Vec<Action> {
    occurrences
        .iter()
        .filter_map(|(key, occurrence)| {
            let original = When::from_key(key)?;
            Some(match occurrence {
                Occurrence::Moved { start, end, title } => Action::UpdateOccurrence {
                    occurrence: original,
                    start: *start,
                    end: *end,
                    title: title.clone(),
                },
                Occurrence::Cancelled => Action::CancelOccurrence {
                    occurrence: original,
                },
            })
        })
        .collect()
}

fn plan_unlinked(input: &PlanInput<'_>, ours: bool) -> Decision {
    let s = input.snapshot;
    if s.is_cancelled() {
        return Decision::Skip(Skip::NotLinked);
    }
    let Some(conference) = &s.conference else {
        return Decision::Skip(Skip::NoConference);
    };
    if !ours {
        return Decision::Skip(Skip::NotOurs);
    }
    if !s.organizer_self {
        return Decision::Skip(Skip::AttendeeCopy);
    }
    let (Some(spec), Some(conference_id)) = (&s.spec, &conference.conference_id) else {
        return Decision::Skip(Skip::NotLinked);
    };
    // The same conference linked on another calendar: the event moved here. The source may
    // already have planned a delete from the tombstone the move left; that delete is superseded.
    // With `recreating`, the event shows the meeting the source link's pending recreate made,
    // before the links were swapped: the link moves here with its own conference, and the swap
    // builds the new conference's link from it.
    if let Some(elsewhere) = input
        .link_elsewhere
        .filter(|l| &l.conference_id == conference_id || input.recreating)
    {
        let mut moved = elsewhere.clone();
        moved.deleted = false;
        if &elsewhere.conference_id == conference_id {
            moved.join_url = conference.join_uri.clone().or(moved.join_url);
        }
        moved.calendar_id = input.calendar_id.to_owned();
        moved.event_id = s.event_id.clone();
        moved.last_etag_seen = s.etag.clone();
        moved.spec = spec.clone();
        // A link restored on its own calendar (its delete had not run) did not move.
        let mut changes = if elsewhere.calendar_id == input.calendar_id {
            Vec::new()
        } else {
            vec![Change::MovedCalendar]
        };
        let spec_changes: Vec<Change> = classify(&elsewhere.spec, spec)
            .into_iter()
            .filter(|c| input.capabilities.cares(*c))
            .collect();
        let applied = if elsewhere.deleted {
            input.applied
        } else {
            Applied::Linked
        };
        let unapplied = applied == Applied::Unknown;
        let mut actions =
            if applied == Applied::EventSpec || (spec_changes.is_empty() && !unapplied) {
                Vec::new()
            } else {
                vec![Action::Update {
                    spec: spec.clone(),
                    changes: spec_changes.clone(),
                }]
            };
        // As in place. An unapplied spec may carry a time or rule change the link no longer
        // shows (it is the link's own spec): the exceptions are sent again with it too.
        let replay = if unapplied {
            loses_exceptions(&[Change::Rescheduled], spec, input.capabilities)
        } else {
            loses_exceptions(&spec_changes, spec, input.capabilities)
        };
        if !actions.is_empty() && replay {
            actions.extend(replay_exceptions(&moved.occurrences));
        }
        changes.extend(spec_changes);
        return Decision::Apply {
            link: moved,
            actions,
            changes,
            supersede_deletes: true,
        };
    }
    // Ours but unknown (made before syncing began, or the store was lost): adopt it, and make
    // the meeting match the event once.
    let link = Link {
        conference_id: conference_id.clone(),
        provider: input.provider.to_owned(),
        calendar_id: input.calendar_id.to_owned(),
        event_id: s.event_id.clone(),
        spec: spec.clone(),
        last_etag_seen: s.etag.clone(),
        last_etag_written: None,
        occurrences: BTreeMap::new(),
        deleted: false,
        join_url: conference.join_uri.clone(),
    };
    Decision::Apply {
        link,
        actions: vec![Action::Update {
            spec: spec.clone(),
            changes: Vec::new(),
        }],
        changes: Vec::new(),
        supersede_deletes: false,
    }
}

fn plan_instance(input: &PlanInput<'_>, _series: &str, original: When) -> Decision {
    let s = input.snapshot;
    let Some(link) = input.link.filter(|l| !l.deleted) else {
        return Decision::Skip(Skip::NotLinked);
    };
    // Tombstones of instances carry no organizer; the link being on this calendar is enough.
    if !s.is_cancelled() && !s.organizer_self {
        return Decision::Skip(Skip::AttendeeCopy);
    }
    let key = original.key();
    let mut next = link.clone();
    if s.is_cancelled() {
        if link.occurrences.get(&key) == Some(&Occurrence::Cancelled) {
            return Decision::Skip(Skip::Unchanged);
        }
        next.occurrences.insert(key, Occurrence::Cancelled);
        let actions = if input.capabilities.occurrences {
            vec![Action::CancelOccurrence {
                occurrence: original,
            }]
        } else {
            Vec::new()
        };
        return Decision::Apply {
            link: next,
            actions,
            changes: vec![Change::InstanceCancelled],
            supersede_deletes: false,
        };
    }
    let Some(spec) = &s.spec else {
        return Decision::Skip(Skip::Unchanged);
    };
    let expected_end = match (original, link.spec.start, link.spec.end) {
        (When::At(o), When::At(s0), When::At(e0)) => When::At(o + (e0 - s0)),
        (When::Day(o), When::Day(s0), When::Day(e0)) => When::Day(o + (e0 - s0)),
        _ => spec.end,
    };
    let as_rule =
        spec.start == original && spec.end == expected_end && spec.title == link.spec.title;
    let wanted = if as_rule {
        None
    } else {
        Some(Occurrence::Moved {
            start: spec.start,
            end: spec.end,
            title: spec.title.clone(),
        })
    };
    if link.occurrences.get(&key) == wanted.as_ref() {
        return Decision::Skip(Skip::Unchanged);
    }
    match &wanted {
        Some(o) => next.occurrences.insert(key, o.clone()),
        None => next.occurrences.remove(&key),
    };
    let actions = if input.capabilities.occurrences {
        vec![Action::UpdateOccurrence {
            occurrence: original,
            start: spec.start,
            end: spec.end,
            title: spec.title.clone(),
        }]
    } else {
        // Documented policy: without occurrence operations the series meeting stays as it is
        // (its join link keeps working at the moved time); the link records the exception.
        Vec::new()
    };
    Decision::Apply {
        link: next,
        actions,
        changes: vec![Change::InstanceMoved],
        supersede_deletes: false,
    }
}

/// What the recreate path knows once the event shows the new meeting (or is about to).
#[derive(Debug, Clone, Copy)]
pub struct Replacement<'a> {
    /// The new meeting's id (the event's new `conferenceId`) and join link.
    pub conference_id: &'a str,
    pub join_url: &'a str,
    /// Where the event is (it may have moved calendars since the old link was planned).
    pub calendar_id: &'a str,
    /// The event as last read or written, showing the new conference.
    pub snapshot: &'a Snapshot,
    /// The spec the new meeting was created with.
    pub created: &'a MeetingSpec,
    /// The etag of our own PATCH, when this attempt made it: an echo when sync brings it back.
    pub written_etag: Option<&'a str>,
    pub capabilities: Capabilities,
}

/// The link of a meeting that replaced `old` (the recreate path), and the actions that bring the
/// new meeting in line: an `Update` when the event's spec differs from the one the meeting was
/// made with (the event changed meanwhile), then the occurrence exceptions the old link recorded
/// and the new meeting does not have yet (a new meeting starts without them).
///
/// `existing` is a link already stored for the new conference (an earlier attempt's swap, or a
/// sync of another calendar that adopted the conference of an event moved there after our
/// PATCH): it is kept, with its planned spec as the starting point, and completed with what only
/// the old link knew.
pub fn replacement(
    old: &Link,
    existing: Option<&Link>,
    r: &Replacement<'_>,
) -> (Link, Vec<Action>) {
    let mut link = match existing.filter(|l| !l.deleted) {
        Some(l) => l.clone(),
        None => Link {
            conference_id: r.conference_id.to_owned(),
            provider: old.provider.clone(),
            calendar_id: r.calendar_id.to_owned(),
            event_id: r.snapshot.event_id.clone(),
            spec: r.created.clone(),
            last_etag_seen: None,
            last_etag_written: None,
            occurrences: BTreeMap::new(),
            deleted: false,
            join_url: None,
        },
    };
    link.calendar_id = r.calendar_id.to_owned();
    link.event_id = r
        .snapshot
        .recurring_event_id
        .clone()
        .unwrap_or_else(|| r.snapshot.event_id.clone());
    link.join_url = Some(r.join_url.to_owned());
    link.last_etag_seen = r.snapshot.etag.clone();
    if let Some(written) = r.written_etag {
        link.last_etag_written = Some(written.to_owned());
    }
    let mut actions = Vec::new();
    if let Some(spec) = &r.snapshot.spec {
        let relevant: Vec<Change> = classify(&link.spec, spec)
            .into_iter()
            .filter(|c| r.capabilities.cares(*c))
            .collect();
        if !relevant.is_empty() {
            actions.push(Action::Update {
                spec: spec.clone(),
                changes: relevant,
            });
        }
        link.spec = spec.clone();
    }
    for (key, occurrence) in &old.occurrences {
        if link.occurrences.contains_key(key) {
            continue;
        }
        link.occurrences.insert(key.clone(), occurrence.clone());
        let Some(original) = When::from_key(key).filter(|_| r.capabilities.occurrences) else {
            continue; // recorded only, as for any exception without occurrence operations
        };
        actions.push(match occurrence {
            Occurrence::Moved { start, end, title } => Action::UpdateOccurrence {
                occurrence: original,
                start: *start,
                end: *end,
                title: title.clone(),
            },
            Occurrence::Cancelled => Action::CancelOccurrence {
                occurrence: original,
            },
        });
    }
    (link, actions)
}

impl Decision {
    /// The actions to run (empty for skips).
    pub fn actions(&self) -> &[Action] {
        match self {
            Decision::Apply { actions, .. } => actions,
            Decision::Skip(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use serde_json::json;

    fn recognizer() -> Recognizer {
        Recognizer {
            solution_names: vec!["Confsync".into()],
            parameter_key: Some("confsyncConferenceId".into()),
        }
    }

    fn event(summary: &str) -> serde_json::Value {
        json!({
            "id": "e1", "etag": "\"10\"", "status": "confirmed", "summary": summary,
            "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"},
            "organizer": {"email": "alice@example.com", "self": true},
            "attendees": [{"email": "bob@example.com", "responseStatus": "needsAction"}],
            "conferenceData": {"conferenceId": "m1", "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync"},
                "entryPoints": [{"entryPointType": "video", "uri": "https://m/1"}]}
        })
    }

    fn snap(v: &serde_json::Value) -> Snapshot {
        Snapshot::from_json(v).unwrap()
    }

    fn linked(v: &serde_json::Value) -> Link {
        let s = snap(v);
        Link {
            conference_id: "m1".into(),
            provider: "local".into(),
            calendar_id: "alice@example.com".into(),
            event_id: "e1".into(),
            spec: s.spec.unwrap(),
            last_etag_seen: s.etag,
            last_etag_written: None,
            occurrences: BTreeMap::new(),
            deleted: false,
            join_url: None,
        }
    }

    fn run(s: &Snapshot, link: Option<&Link>) -> Decision {
        plan(&PlanInput {
            calendar_id: "alice@example.com",
            snapshot: s,
            link,
            link_elsewhere: None,
            provider: "local",
            recognizer: &recognizer(),
            capabilities: Capabilities::ALL,
            recreating: false,
            applied: Applied::Linked,
        })
    }

    /// An event on `calendar_id` bringing back the deleted link `gone` (its own, restored, when
    /// the calendar is the link's; else moved here), whose meeting has `applied`.
    fn bring_back(s: &Snapshot, gone: &Link, calendar_id: &str, applied: Applied) -> Decision {
        let restored = gone.calendar_id == calendar_id;
        plan(&PlanInput {
            calendar_id,
            snapshot: s,
            link: restored.then_some(gone),
            link_elsewhere: (!restored).then_some(gone),
            provider: "local",
            recognizer: &recognizer(),
            capabilities: Capabilities::ALL,
            recreating: false,
            applied,
        })
    }

    /// Most providers drop a series' occurrence exceptions when its time or rule changes (the
    /// add-on's placeholder meeting's first update is such a change): the exceptions the link
    /// recorded are sent again after the update. Found by the concurrent simulation.
    #[test]
    fn a_series_time_change_replays_the_recorded_exceptions() {
        let mut series = event("Planning");
        series["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
        let mut link = linked(&series);
        link.occurrences
            .insert("2026-12-08T10:00:00Z".into(), Occurrence::Cancelled);
        let mut moved = series.clone();
        moved["start"]["dateTime"] = json!("2026-12-01T12:00:00Z");
        moved["end"]["dateTime"] = json!("2026-12-01T13:00:00Z");
        moved["etag"] = json!("\"11\"");
        let decision = run(&snap(&moved), Some(&link));
        assert!(
            matches!(
                decision.actions(),
                [Action::Update { .. }, Action::CancelOccurrence { .. }]
            ),
            "{decision:?}"
        );
        // A title change keeps the exceptions at the provider: nothing replayed.
        let mut renamed = series.clone();
        renamed["summary"] = json!("Planning (renamed)");
        renamed["etag"] = json!("\"12\"");
        let decision = run(&snap(&renamed), Some(&link));
        assert!(
            matches!(decision.actions(), [Action::Update { .. }]),
            "{decision:?}"
        );
    }

    /// An event showing the conference of its own deleted link (restored before the delete
    /// ran) starts from that link: no provider call when its spec did not change (an adoption
    /// would update unconditionally). Found by the concurrent simulation.
    #[test]
    fn a_restored_event_starts_from_its_deleted_link() {
        let v = event("Planning");
        let mut gone = linked(&v);
        gone.deleted = true;
        let decision = run(&snap(&v), Some(&gone));
        let Decision::Apply {
            actions,
            link,
            supersede_deletes,
            ..
        } = decision
        else {
            panic!("{decision:?}")
        };
        assert!(actions.is_empty(), "{actions:?}");
        assert!(!link.deleted && supersede_deletes);
        let mut renamed = event("Planning (renamed)");
        renamed["etag"] = json!("\"11\"");
        assert!(matches!(
            run(&snap(&renamed), Some(&gone)).actions(),
            [Action::Update { .. }]
        ));
        // An update of the link's spec was dropped while the event was gone: the meeting may
        // not have it, so bringing the event back sends it, unchanged or not.
        let restored = bring_back(&snap(&v), &gone, "alice@example.com", Applied::Unknown);
        assert!(
            matches!(restored.actions(), [Action::Update { spec, .. }] if spec == &gone.spec),
            "{restored:?}"
        );
        let moved = bring_back(&snap(&v), &gone, "team@example.com", Applied::Unknown);
        assert!(
            matches!(moved.actions(), [Action::Update { spec, .. }] if spec == &gone.spec),
            "{moved:?}"
        );
        // The last update that landed carried the event's spec (the link's own was planned
        // later and dropped): nothing to send, though the event differs from the link.
        let landed = bring_back(
            &snap(&renamed),
            &gone,
            "alice@example.com",
            Applied::EventSpec,
        );
        assert!(landed.actions().is_empty(), "{landed:?}");
    }

    /// A series brought back with an update (its time changed, or an update of it was
    /// dropped while it was gone) gets its recorded exceptions sent again after the update, as
    /// in place: most providers drop them when a series' time changes. Found by the
    /// simulation (seeds 407, 559, 802 once dropped updates were resent).
    #[test]
    fn a_series_brought_back_with_an_update_replays_its_exceptions() {
        let mut series = event("Planning");
        series["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
        let mut gone = linked(&series);
        gone.deleted = true;
        gone.occurrences
            .insert("2026-12-08T10:00:00Z".into(), Occurrence::Cancelled);
        let plan_back = |v: &serde_json::Value, applied: Applied| {
            bring_back(&snap(v), &gone, "alice@example.com", applied)
        };
        let decision = plan_back(&series, Applied::Unknown);
        assert!(
            matches!(
                decision.actions(),
                [Action::Update { .. }, Action::CancelOccurrence { .. }]
            ),
            "{decision:?}"
        );
        assert!(plan_back(&series, Applied::Linked).actions().is_empty());
        let mut moved = series.clone();
        moved["start"]["dateTime"] = json!("2026-12-01T12:00:00Z");
        moved["end"]["dateTime"] = json!("2026-12-01T13:00:00Z");
        moved["etag"] = json!("\"11\"");
        let decision = plan_back(&moved, Applied::Linked);
        assert!(
            matches!(
                decision.actions(),
                [Action::Update { .. }, Action::CancelOccurrence { .. }]
            ),
            "{decision:?}"
        );
    }

    #[test]
    fn a_reschedule_updates_the_meeting() {
        let link = linked(&event("Planning"));
        let mut moved = event("Planning");
        moved["start"]["dateTime"] = json!("2026-12-01T12:00:00Z");
        moved["end"]["dateTime"] = json!("2026-12-01T13:00:00Z");
        moved["etag"] = json!("\"11\"");
        let decision = run(&snap(&moved), Some(&link));
        let Decision::Apply {
            actions,
            changes,
            link: next,
            ..
        } = decision
        else {
            panic!("{decision:?}")
        };
        assert_eq!(changes, [Change::Rescheduled]);
        assert!(matches!(&actions[..], [Action::Update { .. }]));
        assert_eq!(next.last_etag_seen.as_deref(), Some("\"11\""));
    }

    #[test]
    fn colour_or_rsvp_changes_cause_no_provider_call() {
        let link = linked(&event("Planning"));
        let mut recoloured = event("Planning");
        recoloured["colorId"] = json!("4");
        recoloured["attendees"][0]["responseStatus"] = json!("accepted");
        recoloured["etag"] = json!("\"12\"");
        assert!(run(&snap(&recoloured), Some(&link)).actions().is_empty());
    }

    #[test]
    fn a_provider_that_ignores_descriptions_is_not_called_for_them() {
        let link = linked(&event("Planning"));
        let mut described = event("Planning");
        described["description"] = json!("new agenda");
        let caps = Capabilities {
            description: false,
            ..Capabilities::ALL
        };
        let d = plan(&PlanInput {
            calendar_id: "alice@example.com",
            snapshot: &snap(&described),
            link: Some(&link),
            link_elsewhere: None,
            provider: "local",
            recognizer: &recognizer(),
            capabilities: caps,
            recreating: false,
            applied: Applied::Linked,
        });
        assert!(d.actions().is_empty());
        let Decision::Apply { link: next, .. } = d else {
            panic!()
        };
        assert_eq!(
            next.spec.description, "new agenda",
            "the link still learns the new spec"
        );
    }

    #[test]
    fn our_own_write_coming_back_is_an_echo() {
        let mut link = linked(&event("Planning"));
        link.last_etag_written = Some("\"20\"".into());
        let mut echoed = event("Planning");
        echoed["conferenceData"]["entryPoints"][0]["uri"] = json!("https://m/new-link");
        echoed["etag"] = json!("\"20\"");
        assert!(run(&snap(&echoed), Some(&link)).actions().is_empty());
    }

    #[test]
    fn an_echo_that_carries_a_user_edit_is_still_planned() {
        let mut link = linked(&event("Planning"));
        link.last_etag_written = Some("\"20\"".into());
        // The user renamed the event just before our write-back; the version we wrote has it.
        let mut written = event("Renamed by the user");
        written["etag"] = json!("\"20\"");
        let d = run(&snap(&written), Some(&link));
        assert!(matches!(d.actions(), [Action::Update { .. }]), "{d:?}");
    }

    #[test]
    fn cancellation_and_conference_removal_delete_the_meeting() {
        let link = linked(&event("Planning"));
        let tombstone = snap(&json!({"id": "e1", "etag": "\"13\"", "status": "cancelled"}));
        assert_eq!(
            run(&tombstone, Some(&link)).actions(),
            [Action::Delete {
                reason: Change::EventCancelled
            }]
        );
        let mut removed = event("Planning");
        removed.as_object_mut().unwrap().remove("conferenceData");
        assert_eq!(
            run(&snap(&removed), Some(&link)).actions(),
            [Action::Delete {
                reason: Change::ConferenceRemoved
            }]
        );
        let mut meet = event("Planning");
        meet["conferenceData"] = json!({"conferenceId": "abc-defg-hij", "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"}});
        assert_eq!(
            run(&snap(&meet), Some(&link)).actions(),
            [Action::Delete {
                reason: Change::ConferenceReplaced
            }]
        );
        let mut deleted = link.clone();
        deleted.deleted = true;
        assert_eq!(
            run(&tombstone, Some(&deleted)),
            Decision::Skip(Skip::AlreadyDeleted)
        );
    }

    #[test]
    fn events_that_are_not_ours_are_skipped() {
        let mut plain = event("x");
        plain.as_object_mut().unwrap().remove("conferenceData");
        assert_eq!(run(&snap(&plain), None), Decision::Skip(Skip::NoConference));
        let mut meet = event("x");
        meet["conferenceData"]["conferenceSolution"] =
            json!({"key": {"type": "hangoutsMeet"}, "name": "Google Meet"});
        assert_eq!(run(&snap(&meet), None), Decision::Skip(Skip::NotOurs));
        let mut other_addon = event("x");
        other_addon["conferenceData"]["conferenceSolution"]["name"] = json!("Someone else");
        assert_eq!(
            run(&snap(&other_addon), None),
            Decision::Skip(Skip::NotOurs)
        );
        assert_eq!(
            run(&snap(&json!({"id": "zz", "status": "cancelled"})), None),
            Decision::Skip(Skip::NotLinked)
        );
    }

    #[test]
    fn attendee_copies_never_drive_changes() {
        let mut copy = event("Planning");
        copy["organizer"] = json!({"email": "alice@example.com"});
        assert_eq!(run(&snap(&copy), None), Decision::Skip(Skip::AttendeeCopy));
    }

    #[test]
    fn an_event_moved_to_another_synced_calendar_keeps_its_meeting() {
        let link = linked(&event("Planning"));
        let arrived = snap(&event("Planning"));
        let d = plan(&PlanInput {
            calendar_id: "team@group.calendar.google.com",
            snapshot: &arrived,
            link: None,
            link_elsewhere: Some(&link),
            provider: "local",
            recognizer: &recognizer(),
            capabilities: Capabilities::ALL,
            recreating: false,
            applied: Applied::Linked,
        });
        let Decision::Apply {
            link: moved,
            actions,
            changes,
            supersede_deletes,
        } = d
        else {
            panic!()
        };
        assert!(actions.is_empty() && supersede_deletes);
        assert_eq!(changes, [Change::MovedCalendar]);
        assert_eq!(moved.calendar_id, "team@group.calendar.google.com");
        // Also when the source calendar saw the tombstone first and planned a delete.
        let mut deleted = link.clone();
        deleted.deleted = true;
        let d = plan(&PlanInput {
            calendar_id: "team@group.calendar.google.com",
            snapshot: &arrived,
            link: None,
            link_elsewhere: Some(&deleted),
            provider: "local",
            recognizer: &recognizer(),
            capabilities: Capabilities::ALL,
            recreating: false,
            applied: Applied::Linked,
        });
        let Decision::Apply {
            link: moved,
            supersede_deletes,
            ..
        } = d
        else {
            panic!()
        };
        assert!(supersede_deletes && !moved.deleted);
    }

    #[test]
    fn instance_moves_and_cancellations_use_occurrence_actions() {
        let mut series = event("Weekly");
        series["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
        let link = linked(&series);
        let instance = |start: &str, end: &str| {
            json!({"id": "e1_20261208T100000Z", "etag": "\"30\"", "status": "confirmed", "summary": "Weekly",
                "recurringEventId": "e1", "originalStartTime": {"dateTime": "2026-12-08T10:00:00Z"},
                "start": {"dateTime": start}, "end": {"dateTime": end},
                "organizer": {"email": "alice@example.com", "self": true}})
        };
        let unchanged = snap(&instance("2026-12-08T10:00:00Z", "2026-12-08T11:00:00Z"));
        assert_eq!(
            run(&unchanged, Some(&link)),
            Decision::Skip(Skip::Unchanged)
        );
        let moved = snap(&instance("2026-12-08T14:00:00Z", "2026-12-08T15:00:00Z"));
        let Decision::Apply {
            link: next,
            actions,
            ..
        } = run(&moved, Some(&link))
        else {
            panic!()
        };
        assert!(matches!(actions[..], [Action::UpdateOccurrence { .. }]));
        assert_eq!(
            run(&moved, Some(&next)),
            Decision::Skip(Skip::Unchanged),
            "replaying the page is a no-op"
        );
        let cancelled = snap(
            &json!({"id": "e1_20261215T100000Z", "status": "cancelled", "recurringEventId": "e1", "originalStartTime": {"dateTime": "2026-12-15T10:00:00Z"}}),
        );
        let when = When::At("2026-12-15T10:00:00Z".parse().unwrap());
        assert_eq!(
            run(&cancelled, Some(&next)).actions(),
            [Action::CancelOccurrence { occurrence: when }]
        );
        let without = plan(&PlanInput {
            calendar_id: "alice@example.com",
            snapshot: &cancelled,
            link: Some(&next),
            link_elsewhere: None,
            provider: "local",
            recognizer: &recognizer(),
            capabilities: Capabilities {
                occurrences: false,
                ..Capabilities::ALL
            },
            recreating: false,
            applied: Applied::Linked,
        });
        assert!(
            without.actions().is_empty(),
            "documented policy: recorded, not sent"
        );
    }

    #[test]
    fn unknown_conferences_of_ours_are_adopted_once() {
        let d = run(&snap(&event("Planning")), None);
        let Decision::Apply { link, actions, .. } = d else {
            panic!()
        };
        assert_eq!(link.conference_id, "m1");
        assert_eq!(actions.len(), 1);
        assert_eq!(
            run(&snap(&event("Planning")), Some(&link)).actions(),
            [],
            "second time: unchanged"
        );
    }

    #[test]
    fn an_event_showing_the_conference_of_a_recreate_in_flight_keeps_its_link() {
        let link = linked(&event("Planning"));
        let mut repointed = event("Planning (renamed)");
        repointed["conferenceData"]["conferenceId"] = json!("m2");
        repointed["etag"] = json!("\"50\"");
        let snapshot = snap(&repointed);
        let recognizer = recognizer();
        let input = |recreating| PlanInput {
            calendar_id: "alice@example.com",
            snapshot: &snapshot,
            link: Some(&link),
            link_elsewhere: None,
            provider: "local",
            recognizer: &recognizer,
            capabilities: Capabilities::ALL,
            recreating,
            applied: Applied::Linked,
        };
        assert_eq!(
            plan(&input(false)).actions(),
            [Action::Delete {
                reason: Change::ConferenceReplaced
            }],
            "without a recreate in flight, the conference was replaced"
        );
        let Decision::Apply {
            link: next,
            actions,
            ..
        } = plan(&input(true))
        else {
            panic!()
        };
        assert!(!next.deleted, "the swap, not the sync, ends the old link");
        assert_eq!(next.conference_id, "m1");
        assert_eq!(next.spec.title, "Planning (renamed)");
        assert!(
            matches!(&actions[..], [Action::Update { .. }]),
            "{actions:?}"
        );
        // A conference that is not ours is a replacement even then.
        let mut meet = repointed.clone();
        meet["conferenceData"]["conferenceSolution"] =
            json!({"key": {"type": "hangoutsMeet"}, "name": "Google Meet"});
        let meet = snap(&meet);
        assert_eq!(
            plan(&PlanInput {
                snapshot: &meet,
                ..input(true)
            })
            .actions(),
            [Action::Delete {
                reason: Change::ConferenceReplaced
            }]
        );
    }

    #[test]
    fn a_replacement_link_follows_the_event_and_replays_the_old_exceptions() {
        let mut series = event("Weekly");
        series["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=4"]);
        let mut old = linked(&series);
        let moved = When::At("2026-12-08T10:00:00Z".parse().unwrap());
        let cancelled = When::At("2026-12-15T10:00:00Z".parse().unwrap());
        let moved_to = Occurrence::Moved {
            start: When::At("2026-12-08T14:00:00Z".parse().unwrap()),
            end: When::At("2026-12-08T15:00:00Z".parse().unwrap()),
            title: "Weekly".into(),
        };
        old.occurrences.insert(moved.key(), moved_to.clone());
        old.occurrences
            .insert(cancelled.key(), Occurrence::Cancelled);
        // The event was renamed after the new meeting was made, and shows the new conference.
        let mut now = series.clone();
        now["summary"] = json!("Weekly (renamed)");
        now["etag"] = json!("\"40\"");
        now["conferenceData"]["conferenceId"] = json!("m2");
        let snapshot = snap(&now);
        let created = old.spec.clone();
        let r = Replacement {
            conference_id: "m2",
            join_url: "https://m/2",
            calendar_id: "alice@example.com",
            snapshot: &snapshot,
            created: &created,
            written_etag: Some("\"40\""),
            capabilities: Capabilities::ALL,
        };
        let (link, actions) = replacement(&old, None, &r);
        assert_eq!(link.conference_id, "m2");
        assert_eq!(link.event_id, "e1");
        assert!(!link.deleted);
        assert_eq!(link.spec.title, "Weekly (renamed)");
        assert_eq!(link.join_url.as_deref(), Some("https://m/2"));
        assert_eq!(link.last_etag_written.as_deref(), Some("\"40\""));
        assert_eq!(link.occurrences, old.occurrences);
        assert!(
            matches!(&actions[..], [
                Action::Update { changes, .. },
                Action::UpdateOccurrence { occurrence: m, .. },
                Action::CancelOccurrence { occurrence: c },
            ] if changes == &[Change::Retitled] && *m == moved && *c == cancelled),
            "{actions:?}"
        );
        // Once stored, the event coming back is an echo.
        assert!(run(&snapshot, Some(&link)).actions().is_empty());

        // A link a sync already made for the new conference keeps what it knows; only the
        // exceptions it lacks are replayed, and its planned spec is the starting point.
        let mut adopted = link.clone();
        adopted.occurrences.remove(&cancelled.key());
        adopted.last_etag_written = None;
        let (kept, actions) = replacement(&old, Some(&adopted), &r);
        assert_eq!(kept.occurrences, old.occurrences);
        assert_eq!(
            actions,
            [Action::CancelOccurrence {
                occurrence: cancelled
            }]
        );
        // Without occurrence operations, the exceptions are recorded, not sent.
        let caps = Capabilities {
            occurrences: false,
            ..Capabilities::ALL
        };
        let (_, actions) = replacement(
            &old,
            None,
            &Replacement {
                capabilities: caps,
                ..r
            },
        );
        assert!(
            matches!(&actions[..], [Action::Update { .. }]),
            "{actions:?}"
        );
    }

    #[test]
    fn idempotency_keys_identify_the_intended_change() {
        let spec = snap(&event("a")).spec.unwrap();
        let other = snap(&event("b")).spec.unwrap();
        let update = |s: &MeetingSpec| Action::Update {
            spec: s.clone(),
            changes: vec![],
        };
        assert_eq!(
            idempotency_key("c", "e", &update(&spec)),
            idempotency_key("c", "e", &update(&spec))
        );
        assert_ne!(
            idempotency_key("c", "e", &update(&spec)),
            idempotency_key("c", "e", &update(&other))
        );
        assert_ne!(
            idempotency_key("c", "e", &update(&spec)),
            idempotency_key("c2", "e", &update(&spec))
        );
        let recreate = |s: &MeetingSpec| Action::Recreate {
            spec: s.clone(),
            provider: None,
        };
        assert_eq!(
            idempotency_key("c", "e", &recreate(&spec)),
            idempotency_key("c", "e", &recreate(&spec))
        );
        assert_ne!(
            idempotency_key("c", "e", &recreate(&spec)),
            idempotency_key("c", "e", &recreate(&other))
        );
        assert_ne!(
            idempotency_key("c", "e", &recreate(&spec)),
            idempotency_key("c", "e", &update(&spec))
        );
        assert!(idempotency_key("c", "e", &recreate(&spec)).starts_with("recreate:"));
        let _ = Status::Confirmed;
    }
}
