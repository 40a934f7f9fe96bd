//! Prometheus metrics in the text exposition format, kept by hand: a handful of counters does
//! not justify a metrics framework. Gauges (outbox depth, lag, channel expiry) are read from the
//! store at scrape time, so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use confsync_engine::DrainSummary;

/// Counters the scheduler updates.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sync_runs: BTreeMap<&'static str, u64>,
    sync_seconds_sum: f64,
    sync_seconds_count: u64,
    actions: BTreeMap<(String, &'static str), u64>,
}

/// What a scrape adds from elsewhere.
pub struct Gauges<'a> {
    pub outbox_depth: i64,
    pub failed_actions: usize,
    /// (calendar id, seconds since its last successful sync)
    pub sync_lag: &'a [(String, f64)],
    /// (calendar id, seconds until its push channel expires)
    pub channel_expiry: &'a [(String, f64)],
    /// (outcome, count) of push notifications
    pub notifications: &'a [(&'static str, u64)],
}

impl Metrics {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sync pass ended (`ok` or `error`) after `seconds`.
    pub fn sync_run(&self, outcome: &'static str, seconds: f64) {
        let mut s = self.state();
        *s.sync_runs.entry(outcome).or_default() += 1;
        s.sync_seconds_sum += seconds;
        s.sync_seconds_count += 1;
    }

    /// The outcome of an outbox drain.
    pub fn drain(&self, summary: &DrainSummary) {
        let mut s = self.state();
        for (kind, n) in &summary.done_by_kind {
            *s.actions.entry(((*kind).to_owned(), "done")).or_default() += n;
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
        for outcome in ["ok", "error"] {
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
            "# HELP confsync_outbox_depth Pending outbox actions.\n# TYPE confsync_outbox_depth gauge\nconfsync_outbox_depth {}",
            gauges.outbox_depth
        );
        let _ = writeln!(
            out,
            "# HELP confsync_failed_actions Actions recorded as failed (recent).\n# TYPE confsync_failed_actions gauge\nconfsync_failed_actions {}",
            gauges.failed_actions
        );
        let _ = writeln!(
            out,
            "# HELP confsync_sync_lag_seconds Seconds since a calendar's last successful sync.\n# TYPE confsync_sync_lag_seconds gauge"
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
            "# HELP confsync_channel_expiry_seconds Seconds until a calendar's push channel expires.\n# TYPE confsync_channel_expiry_seconds gauge"
        );
        for (calendar, left) in gauges.channel_expiry {
            let _ = writeln!(
                out,
                "confsync_channel_expiry_seconds{{calendar_id=\"{}\"}} {left:.3}",
                esc(calendar)
            );
        }
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
        out
    }
}
