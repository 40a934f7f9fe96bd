//! Prometheus metrics in the text exposition format, kept by hand: a handful of counters does
//! not justify a metrics framework. Gauges (outbox depth, lag, channel expiry) are read from the
//! store at scrape time, so they are never stale.
//!
//! A scrape stays small and fast whatever the number of calendars: the calendar gauges are
//! aggregates computed by the store (counts, the longest lag and counts over lag thresholds, the
//! earliest channel expiry), never one series per calendar. Per-calendar series
//! (`confsync_sync_lag_seconds{calendar_id}`, `confsync_channel_expiry_seconds{calendar_id}`)
//! are opt-in ([`Metrics::set_per_calendar`], `serve.metrics_per_calendar`) and even then
//! capped: the N calendars synced longest ago, the N whose channel expires first.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use confsync_engine::DrainSummary;
use confsync_providers::{
    BoxFuture, Capabilities, ConferenceProvider, JoinAnswer, JoinRequest, Meeting, MeetingSpec,
    ProviderError, When,
};

/// Counters the scheduler updates, and how the exposition is rendered.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
    /// Per-calendar series for this many calendars at most (0: none, the default).
    per_calendar: AtomicUsize,
}

/// The most per-calendar series [`Metrics::set_per_calendar`] allows (per family).
pub const MAX_PER_CALENDAR: usize = 1000;

/// Lag thresholds (seconds) of `confsync_calendars_lagging{over_seconds}`: 15 minutes (the
/// default sweep), an hour (the alert), 6 hours, a day.
pub const LAG_THRESHOLDS: [i64; 4] = [900, 3600, 21_600, 86_400];

#[derive(Default)]
struct State {
    sync_runs: BTreeMap<&'static str, u64>,
    sync_seconds_sum: f64,
    sync_seconds_count: u64,
    full_syncs: u64,
    actions: BTreeMap<(String, &'static str), u64>,
    /// (operation, outcome) -> latency histogram
    provider: BTreeMap<(&'static str, &'static str), Histogram>,
}

/// Upper bounds (seconds) of the provider latency buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; the +Inf bucket is `count`).
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// See [`Metrics::snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub sync_runs: u64,
    pub full_syncs: u64,
    pub provider: BTreeMap<String, u64>,
    pub actions_done: BTreeMap<String, u64>,
}

/// What a scrape adds from elsewhere. Store counts are -1 when the store cannot be read.
pub struct Gauges<'a> {
    /// (budget, calls that waited for it): `user` and `project` Calendar API budgets.
    pub budget_waits: &'a [(&'static str, u64)],
    /// Calendars known.
    pub calendars: i64,
    /// Calendars never synced (no completed pass yet: no lag to measure).
    pub calendars_never_synced: i64,
    /// Calendars whose owner must connect their Google account again.
    pub calendars_needing_reauth: i64,
    pub outbox_depth: i64,
    pub failed_actions: i64,
    /// Seconds since the oldest last completed pass among calendars synced at least once.
    pub sync_lag_max: Option<f64>,
    /// (threshold in seconds, calendars whose last completed pass is older), for
    /// [`LAG_THRESHOLDS`].
    pub calendars_lagging: &'a [(i64, i64)],
    /// Calendars with a live push channel.
    pub calendars_with_channel: i64,
    /// Seconds until the first calendar's push channel (its newest) expires.
    pub channel_expiry_min: Option<f64>,
    /// Opt-in, capped: (calendar id, seconds since its last successful sync).
    pub sync_lag: &'a [(String, f64)],
    /// Opt-in, capped: (calendar id, seconds until its push channel expires).
    pub channel_expiry: &'a [(String, f64)],
    /// (outcome, count) of push notifications
    pub notifications: &'a [(&'static str, u64)],
    /// Calendars polled because their push channel was silent longer than expected.
    pub silent_polls: u64,
    /// Calendars whose last pass failed (retried with backoff), and those waiting for a pass
    /// (a trigger was acknowledged and no pass has completed since).
    pub calendars_sync_failing: i64,
    pub calendars_dirty: i64,
    /// Whether the store takes writes (0 while writes fail: /readyz answers 503).
    pub store_writable: bool,
    /// (outcome, count) of the add-on users' identity tokens: `verified`, `refused`,
    /// `unavailable` (the issuer's keys could not be fetched). Empty without identities.
    pub identity_tokens: &'a [(&'static str, u64)],
    /// (decision, count) of calendar access for verified callers: `owner`, `editor`, `refused`.
    pub calendar_access: &'a [(&'static str, u64)],
}

impl Metrics {
    /// Per-calendar series (sync lag, channel expiry) for at most `limit` calendars each (the
    /// synced longest ago, the channels expiring first; capped at [`MAX_PER_CALENDAR`]); 0
    /// turns them off (the default: aggregates only).
    pub fn set_per_calendar(&self, limit: usize) {
        self.per_calendar
            .store(limit.min(MAX_PER_CALENDAR), Ordering::Relaxed);
    }

    /// See [`Metrics::set_per_calendar`].
    pub fn per_calendar(&self) -> usize {
        self.per_calendar.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One provider call (`create`, `update`, ...) ended with `outcome` after `seconds`.
    pub fn provider_call(&self, operation: &'static str, outcome: &'static str, seconds: f64) {
        self.state()
            .provider
            .entry((operation, outcome))
            .or_default()
            .observe(seconds);
    }

    /// One sync pass ended (`ok` or `error`) after `seconds`.
    pub fn sync_run(&self, outcome: &'static str, seconds: f64) {
        let mut s = self.state();
        *s.sync_runs.entry(outcome).or_default() += 1;
        s.sync_seconds_sum += seconds;
        s.sync_seconds_count += 1;
    }

    /// A sync pass was a full sync (first sync, or the token expired).
    pub fn full_sync(&self) {
        self.state().full_syncs += 1;
    }

    /// Counters so far, for programs that watch the service in process (the demo, benchmarks):
    /// sync passes, full syncs, provider calls by `operation` (`operation:outcome` when not ok),
    /// and actions done by kind.
    pub fn snapshot(&self) -> Counters {
        let s = self.state();
        let mut provider = BTreeMap::new();
        for ((operation, outcome), h) in &s.provider {
            let key = if *outcome == "ok" {
                (*operation).to_owned()
            } else {
                format!("{operation}:{outcome}")
            };
            *provider.entry(key).or_default() += h.count;
        }
        Counters {
            sync_runs: s.sync_runs.values().sum(),
            full_syncs: s.full_syncs,
            provider,
            actions_done: s
                .actions
                .iter()
                .filter(|((_, outcome), _)| *outcome == "done")
                .map(|((kind, _), n)| (kind.clone(), *n))
                .collect(),
        }
    }

    /// The outcome of an outbox drain.
    pub fn drain(&self, summary: &DrainSummary) {
        let mut s = self.state();
        for (kind, n) in &summary.done_by_kind {
            *s.actions.entry(((*kind).to_owned(), "done")).or_default() += n;
        }
        for (kind, n) in &summary.retried_by_kind {
            *s.actions
                .entry(((*kind).to_owned(), "retried"))
                .or_default() += n;
        }
        for (outcome, n) in [
            ("retried", summary.retried),
            ("failed", summary.failed),
            ("superseded", summary.superseded),
        ] {
            if n > 0 {
                *s.actions.entry(("any".to_owned(), outcome)).or_default() += n;
            }
        }
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges<'_>) -> String {
        let s = self.state();
        let mut out = String::new();
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            out,
            "# HELP confsync_sync_runs_total Calendar sync passes, by outcome.\n# TYPE confsync_sync_runs_total counter"
        );
        for outcome in ["ok", "error", "reauth"] {
            let _ = writeln!(
                out,
                "confsync_sync_runs_total{{outcome=\"{outcome}\"}} {}",
                s.sync_runs.get(outcome).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "# HELP confsync_sync_duration_seconds Time spent in sync passes.\n# TYPE confsync_sync_duration_seconds summary"
        );
        let _ = writeln!(
            out,
            "confsync_sync_duration_seconds_sum {}",
            s.sync_seconds_sum
        );
        let _ = writeln!(
            out,
            "confsync_sync_duration_seconds_count {}",
            s.sync_seconds_count
        );
        let _ = writeln!(
            out,
            "# HELP confsync_full_syncs_total Sync passes that listed the whole calendar (first sync, expired token).\n# TYPE confsync_full_syncs_total counter\nconfsync_full_syncs_total {}",
            s.full_syncs
        );
        let _ = writeln!(
            out,
            "# HELP confsync_actions_total Outbox actions, by kind and outcome.\n# TYPE confsync_actions_total counter"
        );
        for ((kind, outcome), n) in &s.actions {
            let _ = writeln!(
                out,
                "confsync_actions_total{{kind=\"{}\",outcome=\"{outcome}\"}} {n}",
                esc(kind)
            );
        }
        let _ = writeln!(
            out,
            "# HELP confsync_provider_request_duration_seconds Conferencing provider calls, by operation and outcome.\n# TYPE confsync_provider_request_duration_seconds histogram"
        );
        for ((operation, outcome), h) in &s.provider {
            let labels = format!("operation=\"{operation}\",outcome=\"{outcome}\"");
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "confsync_provider_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "confsync_provider_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\nconfsync_provider_request_duration_seconds_sum{{{labels}}} {}\nconfsync_provider_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP confsync_rate_budget_waits_total Calendar API calls that waited for a rate budget.\n# TYPE confsync_rate_budget_waits_total counter"
        );
        for (budget, n) in gauges.budget_waits {
            let _ = writeln!(
                out,
                "confsync_rate_budget_waits_total{{budget=\"{budget}\"}} {n}"
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "confsync_calendars",
            "Calendars known (-1 when the store cannot be read).",
            gauges.calendars,
        );
        gauge(
            &mut out,
            "confsync_calendars_never_synced",
            "Calendars without a completed pass yet.",
            gauges.calendars_never_synced,
        );
        gauge(
            &mut out,
            "confsync_calendars_needing_reauth",
            "Calendars waiting for their owner to connect again (revoked grant).",
            gauges.calendars_needing_reauth,
        );
        gauge(
            &mut out,
            "confsync_calendars_sync_failing",
            "Calendars whose last sync failed (retried with backoff).",
            gauges.calendars_sync_failing,
        );
        gauge(
            &mut out,
            "confsync_calendars_dirty",
            "Calendars with an acknowledged trigger not yet synced.",
            gauges.calendars_dirty,
        );
        let _ = writeln!(
            out,
            "# HELP confsync_store_writable 1 while the store takes writes, 0 while they fail.\n# TYPE confsync_store_writable gauge\nconfsync_store_writable {}",
            u8::from(gauges.store_writable)
        );
        let _ = writeln!(
            out,
            "# HELP confsync_outbox_depth Pending outbox actions.\n# TYPE confsync_outbox_depth gauge\nconfsync_outbox_depth {}",
            gauges.outbox_depth
        );
        let _ = writeln!(
            out,
            "# HELP confsync_failed_actions Actions that failed permanently and are kept (counted; -1 when the store cannot be read).\n# TYPE confsync_failed_actions gauge\nconfsync_failed_actions {}",
            gauges.failed_actions
        );
        let _ = writeln!(
            out,
            "# HELP confsync_sync_lag_seconds_max Seconds since the oldest last successful sync among calendars synced at least once (no sample before the first).\n# TYPE confsync_sync_lag_seconds_max gauge"
        );
        if let Some(lag) = gauges.sync_lag_max {
            let _ = writeln!(out, "confsync_sync_lag_seconds_max {lag:.3}");
        }
        let _ = writeln!(
            out,
            "# HELP confsync_calendars_lagging Calendars whose last successful sync is older than over_seconds (never synced ones not counted).\n# TYPE confsync_calendars_lagging gauge"
        );
        for (over, n) in gauges.calendars_lagging {
            let _ = writeln!(
                out,
                "confsync_calendars_lagging{{over_seconds=\"{over}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "confsync_calendars_with_channel",
            "Calendars with a live push channel.",
            gauges.calendars_with_channel,
        );
        let _ = writeln!(
            out,
            "# HELP confsync_channel_expiry_seconds_min Seconds until the first calendar's push channel (its newest) expires (no sample without live channels).\n# TYPE confsync_channel_expiry_seconds_min gauge"
        );
        if let Some(left) = gauges.channel_expiry_min {
            let _ = writeln!(out, "confsync_channel_expiry_seconds_min {left:.3}");
        }
        // Opt-in and capped: one series per calendar only for the worst few.
        if self.per_calendar() > 0 {
            let _ = writeln!(
                out,
                "# HELP confsync_sync_lag_seconds Seconds since a calendar's last successful sync (opt-in: only the calendars synced longest ago, serve.metrics_per_calendar of them).\n# TYPE confsync_sync_lag_seconds gauge"
            );
            for (calendar, lag) in gauges.sync_lag {
                let _ = writeln!(
                    out,
                    "confsync_sync_lag_seconds{{calendar_id=\"{}\"}} {lag:.3}",
                    esc(calendar)
                );
            }
            let _ = writeln!(
                out,
                "# HELP confsync_channel_expiry_seconds Seconds until a calendar's push channel expires (opt-in: only the calendars whose channel expires first, serve.metrics_per_calendar of them).\n# TYPE confsync_channel_expiry_seconds gauge"
            );
            for (calendar, left) in gauges.channel_expiry {
                let _ = writeln!(
                    out,
                    "confsync_channel_expiry_seconds{{calendar_id=\"{}\"}} {left:.3}",
                    esc(calendar)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP confsync_silent_channel_polls_total Calendars polled because push was silent longer than expected.\n# TYPE confsync_silent_channel_polls_total counter\nconfsync_silent_channel_polls_total {}",
            gauges.silent_polls
        );
        let _ = writeln!(
            out,
            "# HELP confsync_notifications_total Push notifications, by outcome.\n# TYPE confsync_notifications_total counter"
        );
        for (outcome, n) in gauges.notifications {
            let _ = writeln!(
                out,
                "confsync_notifications_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        if !gauges.identity_tokens.is_empty() {
            let _ = writeln!(
                out,
                "# HELP confsync_identity_tokens_total Add-on users' ID tokens, by outcome.\n# TYPE confsync_identity_tokens_total counter"
            );
            for (outcome, n) in gauges.identity_tokens {
                let _ = writeln!(
                    out,
                    "confsync_identity_tokens_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP confsync_calendar_access_total Calendar access decisions for verified users (owner, editor by the calendar's ACL, refused).\n# TYPE confsync_calendar_access_total counter"
            );
            for (decision, n) in gauges.calendar_access {
                let _ = writeln!(
                    out,
                    "confsync_calendar_access_total{{decision=\"{decision}\"}} {n}"
                );
            }
        }
        out
    }
}

/// A provider that times every call into [`Metrics`] (operation, outcome, seconds).
pub struct TimedProvider {
    inner: Arc<dyn ConferenceProvider>,
    metrics: Arc<Metrics>,
}

impl TimedProvider {
    pub fn new(inner: Arc<dyn ConferenceProvider>, metrics: Arc<Metrics>) -> TimedProvider {
        TimedProvider { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: BoxFuture<'_, Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = std::time::Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ProviderError::Transient { .. }) => "transient",
            Err(ProviderError::RateLimited { .. }) => "rate_limited",
            Err(ProviderError::NotFound { .. }) => "not_found",
            Err(ProviderError::Conflict { .. }) => "conflict",
            Err(ProviderError::Permanent { .. }) => "permanent",
            Err(ProviderError::Reauth { .. }) => "reauth",
            Err(ProviderError::Recreate { .. }) => "recreate",
        };
        self.metrics
            .provider_call(operation, outcome, started.elapsed().as_secs_f64());
        result
    }
}

impl ConferenceProvider for TimedProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Forwarded untimed: the doctor's read is not a sync's provider call.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        self.inner.check()
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(self.timed("create", self.inner.create(spec, key)))
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(self.timed("update", self.inner.update(meeting_id, spec, key)))
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(
            self.timed(
                "update_occurrence",
                self.inner
                    .update_occurrence(meeting_id, occurrence, start, end, title, key),
            ),
        )
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.timed(
            "cancel_occurrence",
            self.inner.cancel_occurrence(meeting_id, occurrence, key),
        ))
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.timed("delete", self.inner.delete(meeting_id, key)))
    }

    fn join<'a>(
        &'a self,
        meeting_id: &'a str,
        request: &'a JoinRequest,
    ) -> BoxFuture<'a, Result<Option<JoinAnswer>, ProviderError>> {
        Box::pin(self.timed("join", self.inner.join(meeting_id, request)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confsync_providers::memory::MemoryProvider;

    fn gauges() -> Gauges<'static> {
        Gauges {
            budget_waits: &[],
            calendars: 0,
            calendars_never_synced: 0,
            calendars_needing_reauth: 0,
            outbox_depth: 0,
            failed_actions: 0,
            sync_lag_max: None,
            calendars_lagging: &[],
            calendars_with_channel: 0,
            channel_expiry_min: None,
            sync_lag: &[],
            channel_expiry: &[],
            notifications: &[],
            silent_polls: 0,
            calendars_sync_failing: 0,
            calendars_dirty: 0,
            store_writable: true,
            identity_tokens: &[],
            calendar_access: &[],
        }
    }

    #[tokio::test]
    async fn provider_calls_are_timed_by_operation_and_outcome() {
        let metrics = Arc::new(Metrics::default());
        let memory = Arc::new(MemoryProvider::new("memory", Capabilities::ALL));
        memory.fail_next([ProviderError::RateLimited {
            provider: "memory".into(),
            detail: "slow down".into(),
            retry_after: None,
        }]);
        let timed = TimedProvider::new(memory, metrics.clone());
        let spec = MeetingSpec {
            title: "t".into(),
            description: String::new(),
            start: When::Day(chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()),
            end: When::Day(chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()),
            time_zone: None,
            recurrence: vec![],
            attendees: vec![],
            organizer: None,
        };
        assert!(timed.create(&spec, "k1").await.is_err());
        let meeting = timed.create(&spec, "k1").await.unwrap();
        timed.delete(&meeting.meeting_id, "k2").await.unwrap();
        let text = metrics.render(&gauges());
        for line in [
            "confsync_provider_request_duration_seconds_count{operation=\"create\",outcome=\"rate_limited\"} 1",
            "confsync_provider_request_duration_seconds_count{operation=\"create\",outcome=\"ok\"} 1",
            "confsync_provider_request_duration_seconds_bucket{operation=\"delete\",outcome=\"ok\",le=\"+Inf\"} 1",
            "# TYPE confsync_provider_request_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
