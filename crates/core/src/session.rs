//! The sync session of one calendar: which `events.list` request comes next, and what each page
//! means. Pages in; decisions, dead letters and (on the last page) the next sync token out.
//!
//! The driver commits each page's decisions in one transaction, and the new sync token in the
//! transaction of the last page. A crash therefore either redoes pages from the old token (and
//! replanning them is a no-op, because their links were committed) or resumes the outbox.
//! A windowed full sync never treats absence as deletion: linked events it did not see come
//! back as [`Action::Verify`] for the driver to read one by one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::Snapshot;
use crate::plan::{
    Action, Applied, Capabilities, Decision, Link, PlanInput, Recognizer, Skip, plan,
};

/// The session's settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Page size (Google's maximum is 2500).
    pub max_results: u32,
    /// How far back a full sync lists (`timeMin` = now - window); None lists everything.
    pub full_sync_window: Option<Duration>,
    pub recognizer: Recognizer,
    pub capabilities: Capabilities,
    /// The provider new (adopted) links get.
    pub provider: String,
    /// What the other providers links may still name can change (a deployment moving to
    /// another provider): a link made by one of them is planned with its provider's
    /// capabilities, since its actions go to that provider.
    pub provider_capabilities: std::collections::BTreeMap<String, Capabilities>,
}

/// The next `events.list` call.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub sync_token: Option<String>,
    pub page_token: Option<String>,
    pub time_min: Option<DateTime<Utc>>,
    pub show_deleted: bool,
    pub max_results: u32,
}

/// One page of `events.list`, items still raw JSON text (a page is decoded once, straight into
/// [`Snapshot`]s, without building JSON trees: this is a sync's hot path).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Box<RawValue>>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

/// A page item: the event, or why it could not be understood.
// Almost every item is an event; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Snapshot),
    /// (event id if one could be read, reason, the raw item)
    Malformed(Option<String>, String, Value),
    /// An event that cannot concern us, left undecoded ([`ScannedPage::decode`]): it carries no
    /// conference, is not an instance of a series, and no link names it. Planned, it would be
    /// skipped (`no_conference`, or `not_linked` for a tombstone), which is what it counts as.
    Unrelated {
        event_id: String,
        cancelled: bool,
    },
}

/// A decoded page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedPage {
    pub items: Vec<Item>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

impl Page {
    /// A page from JSON values (tests, fakes, tools).
    pub fn from_values(
        items: Vec<Value>,
        next_page_token: Option<String>,
        next_sync_token: Option<String>,
    ) -> Page {
        let items = items
            .iter()
            .filter_map(|v| serde_json::value::to_raw_value(v).ok())
            .collect();
        Page {
            items,
            next_page_token,
            next_sync_token,
        }
    }

    /// Decodes every item.
    pub fn parse(self) -> ParsedPage {
        self.scan().decode(|_| true)
    }

    /// Reads of each item only what tells whether it can concern us (its id, status, series
    /// and conference id), borrowing the text: a full sync lists every event of a calendar,
    /// and most carry no conference of ours. [`ScannedPage::decode`] then decodes the rest.
    pub fn scan(self) -> ScannedPage {
        let items = self
            .items
            .into_iter()
            .map(|raw| {
                let brief = serde_json::from_str::<WireBrief>(raw.get())
                    .ok()
                    .and_then(Brief::of);
                (raw, brief)
            })
            .collect();
        ScannedPage {
            items,
            next_page_token: self.next_page_token,
            next_sync_token: self.next_sync_token,
        }
    }
}

/// The few fields of an item that say whether it may concern us, as on the wire. Each has the
/// type [`Snapshot`]'s decoding gives it, so an item whose brief does not read does not decode
/// either (and is decoded, to be dead-lettered with the reason).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBrief<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    recurring_event_id: Option<String>,
    conference_data: Option<WireBriefConference>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBriefConference {
    conference_id: Option<String>,
}

/// What [`Page::scan`] read of an item.
#[derive(Debug, Clone)]
struct Brief {
    event_id: String,
    cancelled: bool,
    recurring_event_id: Option<String>,
    /// Present when the item carries conference data: its conference id, if any.
    conference: Option<Option<String>>,
}

impl Brief {
    /// None for an item without a usable id (decoded, to be dead-lettered).
    fn of(wire: WireBrief<'_>) -> Option<Brief> {
        let event_id = wire.id.filter(|id| !id.is_empty())?.into_owned();
        Some(Brief {
            event_id,
            cancelled: wire.status.as_deref() == Some("cancelled"),
            recurring_event_id: wire.recurring_event_id,
            conference: wire.conference_data.map(|c| c.conference_id),
        })
    }

    /// The id its link would be found by: the series' for an instance.
    fn link_key(&self) -> &str {
        self.recurring_event_id.as_deref().unwrap_or(&self.event_id)
    }
}

/// A page whose items have been scanned ([`Page::scan`]) but not yet decoded.
#[derive(Debug, Clone, Default)]
pub struct ScannedPage {
    items: Vec<(Box<RawValue>, Option<Brief>)>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

impl ScannedPage {
    /// Items listed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The event ids whose links planning this page needs (series ids for instances).
    pub fn event_ids(&self) -> Vec<String> {
        self.briefs().map(|b| b.link_key().to_owned()).collect()
    }

    /// The series ids of the page's instances.
    pub fn series_ids(&self) -> HashSet<String> {
        self.briefs()
            .filter_map(|b| b.recurring_event_id.clone())
            .collect()
    }

    /// The conference ids the page's events carry (links elsewhere: moved events).
    pub fn conference_ids(&self) -> Vec<String> {
        self.briefs()
            .filter_map(|b| b.conference.clone().flatten())
            .collect()
    }

    fn briefs(&self) -> impl Iterator<Item = &Brief> {
        self.items.iter().filter_map(|(_, brief)| brief.as_ref())
    }

    /// Decodes the items that may concern us: those `linked(event id)` says a link names, those
    /// carrying conference data, instances, and any whose brief did not read. The others become
    /// [`Item::Unrelated`]: nothing of theirs is planned, so their shape is not checked either.
    pub fn decode(self, linked: impl Fn(&str) -> bool) -> ParsedPage {
        self.decode_unlinked().finish(linked)
    }

    /// [`ScannedPage::decode`]'s first half, which needs no links: the items decoded whatever
    /// the links say (conference data, instances, unreadable briefs). The caller may run it
    /// while the page's links are read, then [`PartlyDecoded::finish`] with them.
    pub fn decode_unlinked(self) -> PartlyDecoded {
        let items = self
            .items
            .into_iter()
            .map(|(raw, brief)| match brief {
                Some(brief) if brief.conference.is_none() && brief.recurring_event_id.is_none() => {
                    Partial::IfLinked(raw, brief)
                }
                _ => Partial::Decoded(decode_item(&raw)),
            })
            .collect();
        PartlyDecoded {
            items,
            next_page_token: self.next_page_token,
            next_sync_token: self.next_sync_token,
        }
    }
}

/// A scanned page whose items needing no links are decoded ([`ScannedPage::decode_unlinked`]).
#[derive(Debug)]
pub struct PartlyDecoded {
    items: Vec<Partial>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

// As large as an `Item` (a page's items are one vector either way); boxing would add an
// allocation per decoded event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Partial {
    Decoded(Item),
    /// Without conference data and not an instance: it concerns us only if a link names it.
    IfLinked(Box<RawValue>, Brief),
}

impl PartlyDecoded {
    /// Decodes the rest: items `linked(event id)` says a link names; the others become
    /// [`Item::Unrelated`].
    pub fn finish(self, linked: impl Fn(&str) -> bool) -> ParsedPage {
        let items = self
            .items
            .into_iter()
            .map(|item| match item {
                Partial::Decoded(item) => item,
                Partial::IfLinked(raw, brief) if linked(&brief.event_id) => decode_item(&raw),
                Partial::IfLinked(_, brief) => Item::Unrelated {
                    event_id: brief.event_id,
                    cancelled: brief.cancelled,
                },
            })
            .collect();
        ParsedPage {
            items,
            next_page_token: self.next_page_token,
            next_sync_token: self.next_sync_token,
        }
    }
}

/// One listed item as the planner reads it, or dead-lettered with the reason.
fn decode_item(raw: &RawValue) -> Item {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    match Snapshot::from_json_str(raw.get()) {
        Ok(s) => Item::Event(s),
        Err(e) => {
            let id = serde_json::from_str::<IdOnly>(raw.get())
                .ok()
                .and_then(|i| i.id);
            let value = serde_json::from_str(raw.get())
                .unwrap_or_else(|_| Value::String(raw.get().to_owned()));
            Item::Malformed(id, e.reason, value)
        }
    }
}

impl ParsedPage {
    /// The event ids whose links planning this page needs (series ids for instances).
    pub fn event_ids(&self) -> Vec<String> {
        self.events()
            .map(|s| {
                s.recurring_event_id
                    .clone()
                    .unwrap_or_else(|| s.event_id.clone())
            })
            .collect()
    }

    /// The series ids of the page's instances.
    pub fn series_ids(&self) -> HashSet<String> {
        self.events()
            .filter_map(|s| s.recurring_event_id.clone())
            .collect()
    }

    /// The conference ids the page's events carry (links elsewhere: moved events).
    pub fn conference_ids(&self) -> Vec<String> {
        self.events()
            .filter_map(|s| s.conference.as_ref().and_then(|c| c.conference_id.clone()))
            .collect()
    }

    fn events(&self) -> impl Iterator<Item = &Snapshot> {
        self.items.iter().filter_map(|i| match i {
            Item::Event(s) => Some(s),
            Item::Malformed(..) | Item::Unrelated { .. } => None,
        })
    }
}

/// The links the session may consult and update, keyed by event id and by conference id.
#[derive(Debug, Default, Clone)]
pub struct LinkSet {
    /// calendar id -> event id -> link
    by_event: HashMap<String, HashMap<String, Link>>,
    /// conference id -> (calendar id, event id)
    by_conference: HashMap<String, (String, String)>,
    /// Conferences whose meeting is being recreated (a pending `Action::Recreate`).
    recreating: HashSet<String>,
    /// New conference id -> the conference whose pending recreate made it.
    recreate_targets: HashMap<String, String>,
    /// Deleted links whose spec the meeting may not have (an update of theirs was dropped
    /// while the event was gone), with the fingerprint of the last update that landed.
    unapplied: HashMap<String, Option<String>>,
}

impl LinkSet {
    pub fn new(links: impl IntoIterator<Item = Link>) -> Self {
        let mut set = LinkSet::default();
        for link in links {
            set.put(link);
        }
        set
    }

    pub fn put(&mut self, link: Link) {
        self.by_conference.insert(
            link.conference_id.clone(),
            (link.calendar_id.clone(), link.event_id.clone()),
        );
        self.by_event
            .entry(link.calendar_id.clone())
            .or_default()
            .insert(link.event_id.clone(), link);
    }

    pub fn get(&self, calendar_id: &str, event_id: &str) -> Option<&Link> {
        self.by_event.get(calendar_id)?.get(event_id)
    }

    pub fn by_conference(&self, conference_id: &str) -> Option<&Link> {
        let (calendar_id, event_id) = self.by_conference.get(conference_id)?;
        self.get(calendar_id, event_id)
    }

    /// Marks conferences whose meeting is being recreated (see [`PlanInput::recreating`]).
    pub fn set_recreating(&mut self, conference_ids: impl IntoIterator<Item = String>) {
        self.recreating.extend(conference_ids);
    }

    pub fn is_recreating(&self, conference_id: &str) -> bool {
        self.recreating.contains(conference_id)
    }

    /// Records meetings pending recreates made (new conference id -> the conference being
    /// recreated), for events that show one before the links are swapped.
    pub fn set_recreate_targets(&mut self, targets: impl IntoIterator<Item = (String, String)>) {
        self.recreate_targets.extend(targets);
    }

    /// Marks deleted links whose spec the meeting may not have: an update of theirs was
    /// dropped while the event was gone. Each comes with the fingerprint of the last update
    /// that landed at its meeting, if any (see [`Applied`]).
    pub fn set_unapplied(&mut self, links: impl IntoIterator<Item = (String, Option<String>)>) {
        self.unapplied.extend(links);
    }

    /// What the meeting of `link` has, for `snapshot` bringing it back (see [`Applied`]).
    pub fn applied(&self, link: &Link, snapshot: &Snapshot) -> Applied {
        match self.unapplied.get(&link.conference_id) {
            _ if !link.deleted => Applied::Linked,
            None => Applied::Linked,
            Some(landed) => applied_for(landed.as_deref(), snapshot),
        }
    }

    /// The link whose pending recreate made `conference_id`, if the recreate has not swapped
    /// the links yet.
    pub fn recreated_into(&self, conference_id: &str) -> Option<&Link> {
        let old = self.recreate_targets.get(conference_id)?;
        self.by_conference(old)
            .filter(|l| &l.conference_id == old && self.is_recreating(old))
    }
}

/// What the meeting of a deleted link marked unapplied has, for `snapshot` bringing it back:
/// the event's spec if the last update that landed (`landed`, its fingerprint) carried it,
/// else not known.
pub fn applied_for(landed: Option<&str>, snapshot: &Snapshot) -> Applied {
    match (landed, &snapshot.spec) {
        (Some(landed), Some(spec)) if landed == spec.fingerprint() => Applied::EventSpec,
        _ => Applied::Unknown,
    }
}

/// Why a sync of a calendar cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("a page carried neither nextPageToken nor nextSyncToken")]
    NoToken,
    #[error("the full sync itself was answered with 410; giving up on this pass")]
    FullSyncRefused,
}

/// Counters of one pass, for the summary and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub pages: u32,
    pub events: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub actions: BTreeMap<&'static str, u64>,
    pub dead_letters: u64,
}

/// What one page means.
#[derive(Debug, Clone, PartialEq)]
pub struct PageOutcome {
    /// Every decision that changes a link or calls a provider, in page order.
    pub decisions: Vec<(Snapshot, Decision)>,
    /// Items that could not be understood: (event id if known, reason, raw item).
    pub dead_letters: Vec<(Option<String>, String, Value)>,
    /// Present on the last page: store it in the same transaction as this page's decisions.
    pub sync_token: Option<String>,
}

/// One pass over one calendar.
#[derive(Debug, Clone)]
pub struct Session {
    calendar_id: String,
    config: SessionConfig,
    sync_token: Option<String>,
    page_token: Option<String>,
    full: bool,
    time_min: Option<DateTime<Utc>>,
    /// Full sync: the events seen (absent linked events are verified at the end).
    seen: BTreeSet<String>,
    /// Instances whose series had no link here when they were listed: the series may move here
    /// later in this pass (a change listed after its instance's), so they are planned again on
    /// the last page.
    deferred: Vec<Snapshot>,
    done: bool,
    tally: Tally,
}

impl Session {
    /// Starts a pass: incremental with `stored_token`, else (or when `force_full`) a full sync
    /// listing from `now - full_sync_window`.
    pub fn new(
        calendar_id: &str,
        stored_token: Option<String>,
        force_full: bool,
        now: DateTime<Utc>,
        config: SessionConfig,
    ) -> Session {
        let full = force_full || stored_token.is_none();
        let time_min = if full {
            config.full_sync_window.map(|w| now - w)
        } else {
            None
        };
        Session {
            calendar_id: calendar_id.to_owned(),
            sync_token: if full { None } else { stored_token },
            page_token: None,
            full,
            time_min,
            seen: BTreeSet::new(),
            deferred: Vec::new(),
            done: false,
            config,
            tally: Tally::default(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn calendar_id(&self) -> &str {
        &self.calendar_id
    }

    /// The request to send next.
    pub fn request(&self) -> ListRequest {
        ListRequest {
            sync_token: self.sync_token.clone(),
            page_token: self.page_token.clone(),
            time_min: self.time_min,
            // Incremental lists always include deletions. A full sync asks for them too:
            // cancelled instances of a series exist only as cancelled exceptions, and a full
            // sync after a 410 must see them to cancel those occurrences at the provider.
            show_deleted: self.full,
            max_results: self.config.max_results,
        }
    }

    /// The token was refused (410): start over with a full sync of this calendar only.
    pub fn restart_full(&mut self, now: DateTime<Utc>) -> Result<(), SessionError> {
        if self.full && self.sync_token.is_none() && self.page_token.is_none() {
            return Err(SessionError::FullSyncRefused);
        }
        self.full = true;
        self.sync_token = None;
        self.page_token = None;
        self.time_min = self.config.full_sync_window.map(|w| now - w);
        self.seen.clear();
        self.deferred.clear();
        Ok(())
    }

    /// Series ids of deferred instances: the driver loads their links along with the last
    /// page's (a series may have been linked here by an earlier page of this pass).
    pub fn deferred_series(&self) -> Vec<String> {
        self.deferred
            .iter()
            .filter_map(|s| s.recurring_event_id.clone())
            .collect()
    }

    /// Plans one page. `links` must hold the links of this calendar for the page's events (and
    /// for conference ids they carry); it is updated as decisions are made, so a series and its
    /// instances on one page see each other's effects.
    pub fn on_page(
        &mut self,
        page: ParsedPage,
        links: &mut LinkSet,
    ) -> Result<PageOutcome, SessionError> {
        self.tally.pages += 1;
        let mut outcome = PageOutcome {
            decisions: Vec::new(),
            dead_letters: Vec::new(),
            sync_token: None,
        };
        for item in page.items {
            self.tally.events += 1;
            let snapshot = match item {
                Item::Event(s) => s,
                Item::Malformed(id, reason, raw) => {
                    self.tally.dead_letters += 1;
                    outcome.dead_letters.push((id, reason, raw));
                    continue;
                }
                Item::Unrelated {
                    event_id,
                    cancelled,
                } => {
                    // As `plan` would skip it, unlinked and without a conference.
                    let skip = if cancelled {
                        Skip::NotLinked
                    } else {
                        Skip::NoConference
                    };
                    *self.tally.skipped.entry(skip_name(skip)).or_default() += 1;
                    if self.full {
                        self.seen.insert(event_id);
                    }
                    continue;
                }
            };
            if self.full {
                self.seen.insert(
                    snapshot
                        .recurring_event_id
                        .clone()
                        .unwrap_or_else(|| snapshot.event_id.clone()),
                );
            }
            let decision = self.decide(&snapshot, links);
            if decision == Decision::Skip(Skip::NotLinked) && snapshot.recurring_event_id.is_some()
            {
                self.deferred.push(snapshot);
                continue;
            }
            self.record(snapshot, decision, links, &mut outcome);
        }
        match (page.next_page_token, page.next_sync_token) {
            (Some(next), _) => self.page_token = Some(next),
            (None, Some(token)) => {
                for snapshot in std::mem::take(&mut self.deferred) {
                    let decision = self.decide(&snapshot, links);
                    self.record(snapshot, decision, links, &mut outcome);
                }
                self.done = true;
                self.page_token = None;
                outcome.sync_token = Some(token);
            }
            (None, None) => return Err(SessionError::NoToken),
        }
        Ok(outcome)
    }

    fn decide(&self, snapshot: &Snapshot, links: &LinkSet) -> Decision {
        let key = snapshot
            .recurring_event_id
            .as_deref()
            .unwrap_or(&snapshot.event_id);
        let link = links.get(&self.calendar_id, key);
        let shown = snapshot
            .conference
            .as_ref()
            .and_then(|c| c.conference_id.as_deref());
        let elsewhere = shown
            .and_then(|id| links.by_conference(id))
            .filter(|l| l.calendar_id != self.calendar_id);
        // The event shows the meeting a pending recreate made, before the links were swapped
        // (it moved here meanwhile): it is the recreated link's event, moved, not a stranger to
        // adopt (an adoption would send its update to the deployment's current provider, which
        // may not be the one that made the meeting).
        let recreated = match (link.filter(|l| !l.deleted), elsewhere) {
            (None, None) => shown
                .and_then(|id| links.recreated_into(id))
                .filter(|l| l.calendar_id != self.calendar_id),
            _ => None,
        };
        let link_elsewhere = elsewhere.or(recreated);
        plan(&PlanInput {
            calendar_id: &self.calendar_id,
            snapshot,
            link,
            link_elsewhere,
            provider: &self.config.provider,
            recognizer: &self.config.recognizer,
            // What the provider the actions go to can change in place.
            capabilities: link
                .filter(|l| !l.deleted)
                .or(link_elsewhere)
                .or(link)
                .and_then(|l| self.config.provider_capabilities.get(&l.provider))
                .copied()
                .unwrap_or(self.config.capabilities),
            recreating: recreated.is_some()
                || link
                    .filter(|l| !l.deleted)
                    .is_some_and(|l| links.is_recreating(&l.conference_id)),
            applied: match [link, link_elsewhere]
                .into_iter()
                .flatten()
                .find(|l| l.deleted)
            {
                Some(gone) if !links.unapplied.is_empty() => links.applied(gone, snapshot),
                _ => Applied::Linked,
            },
        })
    }

    fn record(
        &mut self,
        snapshot: Snapshot,
        decision: Decision,
        links: &mut LinkSet,
        outcome: &mut PageOutcome,
    ) {
        match &decision {
            Decision::Skip(reason) => {
                *self.tally.skipped.entry(skip_name(*reason)).or_default() += 1;
            }
            Decision::Apply {
                link,
                actions,
                supersede_deletes,
                ..
            } => {
                for action in actions {
                    *self.tally.actions.entry(action.kind()).or_default() += 1;
                }
                if actions.is_empty() {
                    *self.tally.skipped.entry("unchanged").or_default() += 1;
                    // Nothing to run and nothing new to remember (most of a full sync): the
                    // link as it stands (loaded, or as this page's earlier decisions left it)
                    // is already what this decision would store.
                    if !supersede_deletes && links.by_conference(&link.conference_id) == Some(link)
                    {
                        return;
                    }
                }
                links.put(link.clone());
                outcome.decisions.push((snapshot, decision));
            }
        }
    }

    /// After the last page of a full sync: the linked events of this calendar that were not
    /// listed. Each must be read (`events.get`) and planned before anything destructive happens.
    pub fn unseen<'a>(
        &self,
        linked_event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Action)> {
        if !self.full || !self.done {
            return Vec::new();
        }
        linked_event_ids
            .into_iter()
            .filter(|id| !self.seen.contains(*id))
            .map(|id| (id.to_owned(), Action::Verify))
            .collect()
    }
}

fn skip_name(skip: Skip) -> &'static str {
    match skip {
        Skip::NoConference => "no_conference",
        Skip::NotOurs => "not_ours",
        Skip::AttendeeCopy => "attendee_copy",
        Skip::NotLinked => "not_linked",
        Skip::Echo => "echo",
        Skip::Unchanged => "unchanged",
        Skip::Irrelevant => "irrelevant",
        Skip::AlreadyDeleted => "already_deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> SessionConfig {
        SessionConfig {
            max_results: 2500,
            full_sync_window: Some(Duration::days(30)),
            recognizer: Recognizer {
                solution_names: vec!["Confsync".into()],
                parameter_key: None,
            },
            capabilities: Capabilities::ALL,
            provider: "local".into(),
            provider_capabilities: Default::default(),
        }
    }

    fn ours(id: &str, conf: &str) -> Value {
        json!({"id": id, "etag": "\"1\"", "summary": id, "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"},
            "organizer": {"email": "a@x.io", "self": true},
            "conferenceData": {"conferenceId": conf, "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync"}, "entryPoints": [{"entryPointType": "video", "uri": "https://m"}]}})
    }

    #[test]
    fn only_items_that_may_concern_us_are_decoded() {
        let page = Page::from_values(
            vec![
                ours("e1", "m1"),
                // Malformed, but without a conference or a link: not decoded, so not caught.
                json!({"id": "plain", "start": {"dateTime": "bad"}, "end": {"dateTime": "bad"}}),
                json!({"id": "gone", "status": "cancelled"}),
                // The same shapes, once a link names the event or it is an instance: decoded.
                json!({"id": "linked", "start": {"dateTime": "bad"}}),
                json!({"id": "inst", "recurringEventId": "series", "start": {"dateTime": "2026-12-01T10:00:00Z"}}),
                // No usable id, or a brief that does not read: decoded (and dead-lettered).
                json!({"summary": "no id"}),
                json!({"id": "", "summary": "empty id"}),
                json!({"id": 7}),
                json!({"id": "odd", "conferenceData": "not an object"}),
            ],
            None,
            Some("t".into()),
        )
        .scan();
        assert_eq!(
            page.event_ids(),
            ["e1", "plain", "gone", "linked", "series"]
        );
        assert_eq!(page.conference_ids(), ["m1"]);
        let parsed = page.decode(|id| id == "linked");
        let kinds: Vec<String> = parsed
            .items
            .iter()
            .map(|item| match item {
                Item::Event(s) => format!("event {}", s.event_id),
                Item::Malformed(id, ..) => format!("malformed {}", id.as_deref().unwrap_or("?")),
                Item::Unrelated {
                    event_id,
                    cancelled,
                } => format!("unrelated {event_id} {cancelled}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "event e1",
                "unrelated plain false",
                "unrelated gone true",
                "malformed linked",
                "malformed inst",
                "malformed ?",
                "malformed ",
                "malformed ?",
                "malformed odd",
            ]
        );

        // Unrelated items count as the skips planning them would have been.
        let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut s = Session::new("cal", None, false, now, config());
        let outcome = s.on_page(parsed, &mut LinkSet::default()).unwrap();
        assert_eq!(outcome.dead_letters.len(), 6);
        assert_eq!(s.tally().events, 9);
        assert_eq!(s.tally().skipped.get("no_conference"), Some(&1));
        assert_eq!(s.tally().skipped.get("not_linked"), Some(&1));
        assert_eq!(
            s.unseen(["plain", "gone", "elsewhere"]),
            [("elsewhere".to_owned(), Action::Verify)]
        );
    }

    #[test]
    fn a_first_pass_is_a_windowed_full_sync_and_ends_with_the_token() {
        let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut s = Session::new("cal", None, false, now, config());
        assert!(s.is_full());
        assert_eq!(s.request().time_min, Some(now - Duration::days(30)));
        let mut links = LinkSet::default();
        let first = s.on_page(Page::from_values(vec![ours("e1", "m1"), json!({"id": "plain", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}})], Some("p2".into()), None).parse(), &mut links).unwrap();
        assert_eq!(first.sync_token, None);
        assert_eq!(first.decisions.len(), 1, "the adopted conference");
        assert_eq!(s.request().page_token.as_deref(), Some("p2"));
        let last = s
            .on_page(
                Page::from_values(vec![], None, Some("t1".into())).parse(),
                &mut links,
            )
            .unwrap();
        assert_eq!(last.sync_token.as_deref(), Some("t1"));
        assert!(s.is_done());
        assert_eq!(s.tally().skipped["no_conference"], 1);
    }

    #[test]
    fn linked_events_missing_from_a_full_sync_are_verified_not_deleted() {
        let now = Utc::now();
        let mut s = Session::new("cal", Some("old".into()), true, now, config());
        let mut links = LinkSet::default();
        s.on_page(
            Page::from_values(vec![ours("e1", "m1")], None, Some("t".into())).parse(),
            &mut links,
        )
        .unwrap();
        let verify = s.unseen(["e1", "e2"]);
        assert_eq!(verify, vec![("e2".to_owned(), Action::Verify)]);
    }

    #[test]
    fn a_410_restarts_as_a_full_sync_once() {
        let now = Utc::now();
        let mut s = Session::new("cal", Some("stale".into()), false, now, config());
        assert_eq!(s.request().sync_token.as_deref(), Some("stale"));
        s.restart_full(now).unwrap();
        assert_eq!(s.request().sync_token, None);
        assert!(s.is_full());
        assert_eq!(s.restart_full(now), Err(SessionError::FullSyncRefused));
    }

    #[test]
    fn malformed_items_are_dead_lettered_and_the_page_goes_on() {
        let mut s = Session::new("cal", Some("t".into()), false, Utc::now(), config());
        let mut links = LinkSet::default();
        let out = s
            .on_page(
                Page::from_values(
                    vec![
                        json!({"summary": "no id"}),
                        json!({"id": "bad", "start": {"dateTime": "x"}, "end": {}}),
                        ours("e1", "m1"),
                    ],
                    None,
                    Some("t2".into()),
                )
                .parse(),
                &mut links,
            )
            .unwrap();
        assert_eq!(out.dead_letters.len(), 2);
        assert_eq!(out.dead_letters[1].0.as_deref(), Some("bad"));
        assert_eq!(out.decisions.len(), 1);
        assert_eq!(out.sync_token.as_deref(), Some("t2"));
    }

    #[test]
    fn a_page_without_any_token_is_an_error() {
        let mut s = Session::new("cal", Some("t".into()), false, Utc::now(), config());
        assert_eq!(
            s.on_page(Page::default().parse(), &mut LinkSet::default()),
            Err(SessionError::NoToken)
        );
    }
}
