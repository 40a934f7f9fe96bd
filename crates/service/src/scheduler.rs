//! The sync scheduler: notifications for a calendar coalesce (debounce), one sync at a time per
//! calendar, a bounded pool of workers, and one drainer: a task that runs the outbox whenever a
//! sync queued actions, and again when a retried action comes due. It is the only drainer
//! (outbox rows have no lease yet, so two drains could run one action twice); inside a drain
//! the engine makes provider calls for different conferences concurrently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_engine::Engine;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Notifications within this window after the first one make one sync.
    pub debounce: Duration,
    /// Calendars synced at the same time.
    pub workers: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            debounce: Duration::from_millis(500),
            workers: 4,
        }
    }
}

#[derive(Default)]
struct CalendarState {
    /// A sync is wanted (not before `due`).
    dirty: bool,
    due: Option<Instant>,
    running: bool,
    syncs: u64,
    last_error: Option<String>,
}

/// What the scheduler reports about one calendar.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarActivity {
    pub calendar_id: String,
    pub pending: bool,
    pub running: bool,
    pub syncs: u64,
    pub last_error: Option<String>,
}

struct Inner {
    engine: Arc<Engine>,
    metrics: Arc<crate::metrics::Metrics>,
    config: SchedulerConfig,
    calendars: Mutex<HashMap<String, CalendarState>>,
    wake: Notify,
    workers: Semaphore,
    /// Wakes the drainer.
    drain_wake: Notify,
}

/// The drainer sleeps at most this long, so actions put off by other processes (the CLI's
/// `sync`) are picked up.
const DRAIN_IDLE: Duration = Duration::from_secs(60);

/// Handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Scheduler {
    /// Starts the scheduler's loop on the current runtime.
    pub fn start(engine: Arc<Engine>, config: SchedulerConfig) -> Scheduler {
        Scheduler::start_with_metrics(engine, config, Arc::default())
    }

    /// Like [`Scheduler::start`], counting into `metrics` (shared with a
    /// [`crate::metrics::TimedProvider`] so provider latency shows in the same scrape).
    pub fn start_with_metrics(
        engine: Arc<Engine>,
        config: SchedulerConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Scheduler {
        let inner = Arc::new(Inner {
            engine,
            metrics,
            workers: Semaphore::new(config.workers.max(1)),
            config,
            calendars: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            drain_wake: Notify::new(),
        });
        let scheduler = Scheduler { inner };
        let looping = scheduler.clone();
        tokio::spawn(async move { looping.run().await });
        let draining = scheduler.clone();
        tokio::spawn(async move { draining.drain_loop().await });
        scheduler
    }

    fn calendars(&self) -> std::sync::MutexGuard<'_, HashMap<String, CalendarState>> {
        self.inner
            .calendars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed on `calendar_id`: sync it after the debounce (coalescing repeats).
    pub fn mark_dirty(&self, calendar_id: &str) {
        let due = Instant::now() + self.inner.config.debounce;
        {
            let mut calendars = self.calendars();
            let state = calendars.entry(calendar_id.to_owned()).or_default();
            if !state.dirty {
                state.dirty = true;
                state.due = Some(due);
            }
        }
        self.inner.wake.notify_one();
    }

    /// The safety sweep: push notifications are not fully reliable, so every calendar is synced
    /// at least every `interval` (spread by +-25% per calendar, so calendars do not sync in
    /// lockstep). Checks once a minute.
    pub fn start_sweep(&self, interval: Duration) {
        let scheduler = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60).min(interval));
            loop {
                tick.tick().await;
                let Ok(calendars) = scheduler.inner.engine.store.calendars().await else {
                    continue;
                };
                let now = now_ms();
                for calendar in calendars {
                    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
                    for b in calendar.calendar_id.bytes() {
                        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                    }
                    let spread = 0.75 + (hash % 1000) as f64 / 2000.0;
                    let due_after = (interval.as_millis() as f64 * spread) as i64;
                    if calendar
                        .last_sync_at
                        .is_none_or(|last| now - last >= due_after)
                    {
                        scheduler.mark_dirty(&calendar.calendar_id);
                    }
                }
            }
        });
    }

    /// The counters this scheduler keeps.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Per-calendar activity, for the status API.
    pub fn activity(&self) -> Vec<CalendarActivity> {
        let calendars = self.calendars();
        let mut out: Vec<CalendarActivity> = calendars
            .iter()
            .map(|(id, s)| CalendarActivity {
                calendar_id: id.clone(),
                pending: s.dirty,
                running: s.running,
                syncs: s.syncs,
                last_error: s.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.calendar_id.cmp(&b.calendar_id));
        out
    }

    /// Runs due syncs, sleeping until the next one is due or something is marked dirty.
    async fn run(self) {
        loop {
            let (ready, next_due) = {
                let mut calendars = self.calendars();
                let now = Instant::now();
                let mut ready = Vec::new();
                let mut next_due: Option<Instant> = None;
                for (id, state) in calendars.iter_mut() {
                    if !state.dirty || state.running {
                        continue;
                    }
                    match state.due {
                        Some(due) if due > now => {
                            next_due = Some(next_due.map_or(due, |n| n.min(due)))
                        }
                        _ => {
                            state.dirty = false;
                            state.due = None;
                            state.running = true;
                            ready.push(id.clone());
                        }
                    }
                }
                (ready, next_due)
            };
            for calendar_id in ready {
                let worker = self.clone();
                tokio::spawn(async move { worker.sync_one(calendar_id).await });
            }
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// The drainer: runs the outbox when woken (a sync queued actions) or when the next
    /// put-off action comes due.
    async fn drain_loop(self) {
        let engine = &self.inner.engine;
        loop {
            // A drain that did nothing or failed must not be repeated at once (a store outage,
            // a row that stays due): at least this long passes before the next.
            let floor = match engine.drain(now_ms()).await {
                Ok(drained) => {
                    self.inner.metrics.drain(&drained);
                    let worked =
                        drained.done + drained.retried + drained.failed + drained.superseded;
                    if worked > 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(50)
                    }
                }
                Err(e) => {
                    warn!(error = %e, "outbox drain failed; it runs again shortly");
                    Duration::from_secs(1)
                }
            };
            let pause = match engine.store.next_due().await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, 60_000) as u64),
                Ok(None) => DRAIN_IDLE,
                Err(_) => Duration::from_secs(1),
            }
            .max(floor);
            if pause.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.inner.drain_wake.notified() => {}
                _ = tokio::time::sleep(pause.min(DRAIN_IDLE)) => {}
            }
        }
    }

    /// Asks the drainer to run the outbox now (the add-on API queued something, say).
    pub fn drain_soon(&self) {
        self.inner.drain_wake.notify_one();
    }

    async fn sync_one(self, calendar_id: String) {
        let Ok(_permit) = self.inner.workers.acquire().await else {
            return;
        };
        let engine = &self.inner.engine;
        let started = std::time::Instant::now();
        let result = engine.sync(&calendar_id, false, now_ms()).await;
        let metrics = &self.inner.metrics;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(confsync_engine::EngineError::Calendar {
                source: confsync_engine::calendar::CalendarError::Reauth { .. },
                ..
            }) => "reauth",
            Err(_) => "error",
        };
        metrics.sync_run(outcome, started.elapsed().as_secs_f64());
        let error = match result {
            Ok(summary) => {
                if summary.full {
                    metrics.full_sync();
                }
                info!(calendar_id = %calendar_id, events = summary.events, full = summary.full, "calendar synced");
                self.inner.drain_wake.notify_one();
                None
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = &error {
            warn!(calendar_id = %calendar_id, %error, "sync failed; it runs again on the next trigger");
            let _ = engine.store.record_sync_error(&calendar_id, error).await;
        }
        {
            let mut calendars = self.calendars();
            let state = calendars.entry(calendar_id).or_default();
            state.running = false;
            state.syncs += 1;
            state.last_error = error;
        }
        // A notification that arrived during the sync is due now.
        self.inner.wake.notify_one();
    }
}
