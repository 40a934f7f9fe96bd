//! The engine: drives the sans-IO core against a calendar, a store and a provider.
//!
//! Decisions live in the core (planner, session) and in [`disposition`]; the modules here are
//! the thin drivers that read, call and write. Each multi-step action names its crash points in
//! its module's documentation: what a crash (or a lost answer: the call took effect, its answer
//! never came) between two steps leaves behind, and how the next attempt finds it.
//!
//! | module | what it drives |
//! |---|---|
//! | [`sync`](mod@sync) | one pass over one calendar: list, plan, commit page by page |
//! | [`drain`] | the outbox: one row per conference at a time, provider calls, outcomes |
//! | [`guard`] | the checks around a delete (event restored or moved) and a full sync's verifications |
//! | [`write_back`] | a new join link written into the event (If-Match, re-read on 412) |
//! | [`recreate`] | a meeting the provider cannot change in place, replaced |
//! | [`create`] | the add-on's create, idempotent per event; abandoned creates cleaned up |
//! | [`disposition`] | retry, park or fail: one pure function for every failed row |
//! | [`conference`] | Calendar's `conferenceData` for our conferences, built in one place |
//!
//! Concurrency: syncs, drains, the add-on's creates and webhooks may run at the same time (and
//! in different processes, with the Postgres store). No read-modify-write of a link is
//! unconditional: a writer that read a link before network calls writes it only if its version
//! is unchanged ([`LinkBase`]), else it reads again and re-plans.
//!
//! Time is an argument everywhere (`now_ms`), never read here, so the deterministic simulation
//! can drive the engine. The calendar is reached through [`CalendarApi`]: the Google client in
//! production, the in-process emulator in the simulation.

pub mod backoff;
pub mod calendar;
pub mod conference;
pub mod create;
pub mod disposition;
pub mod drain;
pub mod guard;
pub mod recreate;
pub mod sync;
pub mod write_back;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use confsync_core::plan::{Action, Capabilities, Recognizer, idempotency_key};
use confsync_core::session::{SessionConfig, SessionError};
use confsync_providers::ConferenceProvider;
use confsync_store::{Store, StoreError};

pub use calendar::{AccessRole, CalendarApi, CalendarError, WatchedChannel};
pub use confsync_store::LinkBase;
pub use disposition::REAUTH_PARK;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub recognizer: Recognizer,
    /// How far back a full sync lists; None lists everything.
    pub full_sync_window: Option<chrono::Duration>,
    pub page_size: u32,
    /// Deletes wait this long, so an event moved to another synced calendar is seen there first.
    pub delete_grace_ms: i64,
    /// Before a delete, up to this many other synced calendars are checked for the event (an
    /// event moved to another calendar leaves a tombstone behind that looks like a deletion).
    pub move_check_limit: usize,
    pub backoff: backoff::Backoff,
    /// Provider calls a drain makes at the same time (each for a different conference: the
    /// outbox hands out one row per conference). Real providers answer in 100s of ms, so
    /// running them one by one would cap a service at a few calls per second.
    pub drain_concurrency: usize,
    /// Rows a drain claims at once (None: by store, [`default_claim_batch`]). A batch's
    /// successes are reported together, in one transaction, and the next claim comes after
    /// the batch: larger batches mean fewer commits per action (bytes written, round trips),
    /// smaller ones spread a backlog over more workers and report sooner.
    pub claim_batch: Option<usize>,
    /// A conference the add-on created whose event never showed it is deleted after this long
    /// (the user closed the event without saving it, or the answer never reached Calendar).
    pub intent_grace_ms: i64,
    /// This process's name on the leases it takes in the store ([`confsync_store::worker_id`]).
    pub worker: String,
    /// How long a claim on an outbox row or a calendar's sync lasts unless renewed (renewed
    /// every third of it while the work runs). A worker that dies loses its work to the others
    /// after this long.
    pub lease_ms: i64,
}

/// The rows a drain claims at once unless [`EngineConfig::claim_batch`] says otherwise.
/// - SQLite: 256. One process holds the store, so there is no one to share a backlog with,
///   and each claim and each batch's report is a commit that rewrites the pages its rows are
///   on: `bench adopt` measured 1,010 bytes of WAL per action drained in batches of 64 and
///   542 in batches of 256.
/// - Postgres: 64. Several workers drain one store; a worker that claimed a large batch would
///   keep the others idle while it works through it.
pub fn default_claim_batch(backend: &str) -> usize {
    if backend == "sqlite" { 256 } else { 64 }
}

/// The default [`EngineConfig::lease_ms`].
pub const DEFAULT_LEASE_MS: i64 = 15_000;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            recognizer: conference::default_recognizer(),
            full_sync_window: Some(chrono::Duration::days(30)),
            page_size: 2500,
            delete_grace_ms: 0,
            move_check_limit: 50,
            backoff: backoff::Backoff::default(),
            drain_concurrency: 16,
            claim_batch: None,
            intent_grace_ms: 24 * 3_600_000,
            worker: confsync_store::worker_id(),
            lease_ms: DEFAULT_LEASE_MS,
        }
    }
}

/// What can stop a pass or a drain.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("calendar {calendar_id}: {source}")]
    Calendar {
        calendar_id: String,
        source: CalendarError,
    },
    #[error("calendar {calendar_id}: {source}")]
    Session {
        calendar_id: String,
        source: SessionError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime shut down under the pass (work handed to its blocking threads never ran).
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// When a failed pass may be tried again at the earliest (a Calendar Retry-After).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            EngineError::Calendar {
                source: CalendarError::Retryable { retry_after, .. },
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// True when retrying cannot help until the calendar's owner connects again.
    pub fn needs_reauth(&self) -> bool {
        matches!(
            self,
            EngineError::Calendar {
                source: CalendarError::Reauth { .. },
                ..
            }
        )
    }
}

/// The summary of one sync pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSummary {
    pub calendar_id: String,
    pub full: bool,
    pub pages: u32,
    pub events: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub actions: BTreeMap<&'static str, u64>,
    pub dead_letters: u64,
    /// Linked events a full sync did not list, queued for an events.get check.
    pub verifications: u64,
    /// Times the pass was planned again because a link changed under it (a concurrent writer).
    pub replans: u32,
    /// The calendar must be synced again at once (a full pass: a series link moved here). It is
    /// recorded dirty in the store too, so a restart does not lose it.
    pub resync: bool,
    /// A trigger arrived during the pass (on this worker or another): the calendar stays dirty
    /// and wants another pass. Set by [`Engine::sync_leased`] when told which triggers the pass
    /// answers.
    pub still_dirty: bool,
    /// The calendar's trigger generation (`dirty_gen`) when the pass read its state, before it
    /// listed anything: the triggers it answers.
    pub answered_gen: i64,
}

/// The summary of one outbox drain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainSummary {
    pub done: u64,
    pub retried: u64,
    pub failed: u64,
    pub superseded: u64,
    /// Provider calls made (successful or not).
    pub provider_calls: u64,
    /// Completed actions by kind (`update`, `delete`, ...).
    pub done_by_kind: BTreeMap<&'static str, u64>,
    /// Attempts put off for a retry, by kind.
    pub retried_by_kind: BTreeMap<&'static str, u64>,
    /// Calendars to sync again at once (the delete guard moved a series link there); recorded
    /// dirty in the store too.
    pub resync: Vec<String>,
}

impl DrainSummary {
    /// Adds another drain's counts to this one.
    pub fn merge(&mut self, other: DrainSummary) {
        self.done += other.done;
        self.retried += other.retried;
        self.failed += other.failed;
        self.superseded += other.superseded;
        self.provider_calls += other.provider_calls;
        for (kind, n) in other.done_by_kind {
            *self.done_by_kind.entry(kind).or_default() += n;
        }
        for (kind, n) in other.retried_by_kind {
            *self.retried_by_kind.entry(kind).or_default() += n;
        }
        for calendar_id in other.resync {
            if !self.resync.contains(&calendar_id) {
                self.resync.push(calendar_id);
            }
        }
    }
}

/// Called after each page of a sync: (calendar id, pages so far, events so far, full sync?).
pub type Progress = Arc<dyn Fn(&str, u32, u64, bool) + Send + Sync>;

/// The engine: one current provider, and the providers whose meetings links may still name.
///
/// Creates and recreates use `provider` (the current one). Every other action of a link (update,
/// occurrence change, delete) goes to the provider that made its meeting, named by the link
/// (`Link::provider`): the current one or one of `previous` (a deployment moving to another
/// provider, `confsync admin migrate-provider`). A link naming a provider that is neither has
/// its actions parked (pending, no attempt used) with an error naming the provider: never sent
/// to the wrong provider, never dropped; another worker may have it configured (a rolling
/// change of configuration), or the operator configures it again or drops the rows.
pub struct Engine {
    pub store: Store,
    pub calendar: Arc<dyn CalendarApi>,
    pub provider: Arc<dyn ConferenceProvider>,
    /// Providers of earlier meetings, by name ([`Engine::with_previous_providers`]).
    previous: BTreeMap<String, Arc<dyn ConferenceProvider>>,
    pub config: EngineConfig,
    progress: Option<Progress>,
    /// Retries are logged at WARN at most once a minute per conference.
    retry_warnings: RetryWarnings,
}

/// Rate-limits retry warnings: at most one per key per minute, in bounded memory.
#[derive(Default)]
struct RetryWarnings {
    /// Per key, when a warning was last let through (unix ms).
    last: Mutex<HashMap<String, i64>>,
}

impl RetryWarnings {
    const EVERY_MS: i64 = 60_000;
    const KEYS: usize = 10_000;

    fn allow(&self, key: &str, now_ms: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= Self::KEYS {
            last.retain(|_, at| now_ms - *at < Self::EVERY_MS);
            if last.len() >= Self::KEYS {
                return false; // a storm of distinct keys: the metrics still count each one
            }
        }
        match last.get(key) {
            Some(at) if now_ms - *at < Self::EVERY_MS => false,
            _ => {
                last.insert(key.to_owned(), now_ms);
                true
            }
        }
    }
}

fn now_utc(now_ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default()
}

impl Engine {
    pub fn new(
        store: Store,
        calendar: Arc<dyn CalendarApi>,
        provider: Arc<dyn ConferenceProvider>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            store,
            calendar,
            provider,
            previous: BTreeMap::new(),
            config,
            progress: None,
            retry_warnings: RetryWarnings::default(),
        }
    }

    /// Adds the providers whose meetings links may still name (a move to another provider):
    /// their links' updates, occurrence changes and deletes go to them. One named like the
    /// current provider is ignored (the current one answers for its name).
    pub fn with_previous_providers(
        mut self,
        providers: impl IntoIterator<Item = Arc<dyn ConferenceProvider>>,
    ) -> Self {
        for provider in providers {
            let name = provider.name().to_owned();
            if name != self.provider.name() {
                self.previous.insert(name, provider);
            }
        }
        self
    }

    /// The provider of this name: the current one, or a previous one.
    pub fn provider_named(&self, name: &str) -> Option<&Arc<dyn ConferenceProvider>> {
        if name == self.provider.name() {
            Some(&self.provider)
        } else {
            self.previous.get(name)
        }
    }

    /// The names of the previous providers.
    pub fn previous_providers(&self) -> Vec<String> {
        self.previous.keys().cloned().collect()
    }

    /// The provider a link's actions go to: the one that made its meeting. No link (never the
    /// case for a queued action: links are never removed while actions are pending) means the
    /// current one. A provider that is not configured is an error naming it (the row is
    /// parked with it).
    pub(crate) fn provider_of(
        &self,
        link: Option<&confsync_core::plan::Link>,
    ) -> Result<&Arc<dyn ConferenceProvider>, String> {
        let Some(link) = link else {
            return Ok(&self.provider);
        };
        self.provider_named(&link.provider).ok_or_else(|| {
            format!(
                "conference {} was made by provider {:?}, which is not configured (the current provider is {:?}; list the old one under [provider] previous, with its table, to reach its meetings)",
                link.conference_id,
                link.provider,
                self.provider.name()
            )
        })
    }

    /// Where a move of every meeting to the current provider stands (of one calendar if
    /// given): counts from the store.
    pub async fn provider_moves(
        &self,
        calendar_id: Option<&str>,
        now_ms: i64,
    ) -> Result<confsync_store::ProviderMoves, EngineError> {
        Ok(self
            .store
            .provider_moves(
                self.provider.name(),
                &self.previous_providers(),
                calendar_id,
                now_ms,
            )
            .await?)
    }

    /// Queues up to `limit` moves of meetings made by a previous provider to the current one
    /// (see `confsync_store::Store::queue_provider_moves`); the drainer runs them as recreates.
    pub async fn queue_provider_moves(
        &self,
        calendar_id: Option<&str>,
        limit: i64,
        now_ms: i64,
    ) -> Result<Vec<confsync_store::QueuedMove>, EngineError> {
        Ok(self
            .store
            .queue_provider_moves(
                self.provider.name(),
                &self.previous_providers(),
                calendar_id,
                limit,
                now_ms,
            )
            .await?)
    }

    /// Reports progress after each page (the CLI's progress bar on full syncs).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_results: self.config.page_size,
            full_sync_window: self.config.full_sync_window,
            recognizer: self.config.recognizer.clone(),
            capabilities: self.provider.capabilities(),
            provider: self.provider.name().to_owned(),
            provider_capabilities: self
                .previous
                .iter()
                .map(|(name, p)| (name.clone(), p.capabilities()))
                .collect(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.provider.capabilities()
    }

    /// Whether a retry of this conference's action should be logged at WARN now (at most once
    /// a minute per conference; the metrics count every one).
    fn should_warn_retry(&self, conference_id: &str, now_ms: i64) -> bool {
        self.retry_warnings.allow(conference_id, now_ms)
    }
}

/// The key of an action, as the store derives it (re-exported for tests and tools).
pub fn key_of(calendar_id: &str, event_id: &str, action: &Action) -> String {
    idempotency_key(calendar_id, event_id, action)
}

#[cfg(test)]
mod tests {
    use super::RetryWarnings;

    #[test]
    fn retry_warnings_are_rate_limited_per_conference_in_bounded_memory() {
        let w = RetryWarnings::default();
        assert!(w.allow("a", 0));
        assert!(!w.allow("a", 59_999), "the same conference within a minute");
        assert!(w.allow("b", 1), "another conference");
        assert!(w.allow("a", 60_000), "a minute later");
        for i in 0..RetryWarnings::KEYS {
            w.allow(&format!("k{i}"), 100_000);
        }
        assert!(
            !w.allow("new", 100_001),
            "full of recent keys: no unbounded growth"
        );
        assert!(w.last.lock().unwrap().len() <= RetryWarnings::KEYS);
        assert!(w.allow("new", 200_000), "old keys expire");
    }
}
