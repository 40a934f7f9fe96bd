//! The sync scheduler: notifications for a calendar coalesce (debounce), one sync at a time per
//! calendar, a bounded pool of workers, and one drainer: a task that runs the outbox whenever a
//! sync queued actions, and again when a retried action comes due; inside a drain the engine
//! makes provider calls for different conferences concurrently.
//!
//! Several processes may run a scheduler on one (Postgres) store, with no leader: a calendar is
//! synced under its sync lease ([`Engine::sync_leased`]: a worker that finds it leased leaves
//! it to the holder, whose pass answers the trigger or leaves it dirty), outbox rows are
//! claimed under leases ([`Engine::drain`]), and singleton duties (the sweep, clean-ups,
//! retention) are taken with [`confsync_store::Store::take_duty`]. Every worker polls the
//! store for dirty calendars every [`SchedulerConfig::poll`] (a trigger acknowledged by a worker
//! that died is picked up once its lease expires) and drains when another worker's
//! notification says rows were queued (Postgres LISTEN/NOTIFY; polling is the fallback).
//!
//! Triggers are durable: [`Scheduler::request_sync`] records the calendar dirty in the store
//! before the trigger is acknowledged, and only a pass that started after it clears the mark.
//! At startup every dirty calendar and every calendar whose last pass failed is synced. A failed
//! pass is retried with backoff (never sooner than Calendar's Retry-After; not at all while the
//! owner's grant is revoked, until they connect again). [`Scheduler::shutdown`] stops new work
//! and waits (up to a deadline) for running syncs and the drain; what did not run stays dirty or
//! pending in the store.

use std::collections::{HashMap, HashSet};
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
    /// How often the store is polled for calendars waiting for a sync (triggers another worker
    /// acknowledged and could not run, failed passes due for a retry) and for outbox rows
    /// whose notification was missed.
    pub poll: Duration,
    /// How long finished history (dead letters, stopped or expired channel records, OAuth
    /// requests) is kept.
    pub retention: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            debounce: Duration::from_millis(500),
            workers: 4,
            poll: Duration::from_secs(2),
            retention: HISTORY_RETENTION,
        }
    }
}

/// The calendars the scheduler knows, and which of them want a sync: finding the due ones
/// walks those, not every calendar known (a deployment knows 100,000 and has a few dirty; the
/// loop runs after every sync).
#[derive(Default)]
struct Calendars {
    states: HashMap<String, CalendarState>,
    /// Ids whose state is `dirty` (a superset while a sync of one runs; checked when walked).
    wanted: HashSet<String>,
}

impl std::ops::Deref for Calendars {
    type Target = HashMap<String, CalendarState>;
    fn deref(&self) -> &Self::Target {
        &self.states
    }
}

impl std::ops::DerefMut for Calendars {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.states
    }
}

impl Calendars {
    /// Marks `calendar_id` dirty, due at `due`, unless it is already (or, with `skip_running`,
    /// its sync runs): answers whether it was marked.
    fn want(&mut self, calendar_id: &str, due: Instant, skip_running: bool) -> bool {
        let state = self.states.entry(calendar_id.to_owned()).or_default();
        if state.dirty || (skip_running && state.running) {
            return false;
        }
        state.dirty = true;
        state.due = Some(due);
        self.wanted.insert(calendar_id.to_owned());
        true
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
    /// Passes failed in a row.
    failures: u32,
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
    /// Passes failed in a row (retried with backoff).
    pub failures: u32,
}

struct Inner {
    engine: Arc<Engine>,
    metrics: Arc<crate::metrics::Metrics>,
    config: SchedulerConfig,
    calendars: Mutex<Calendars>,
    wake: Notify,
    workers: Semaphore,
    /// Wakes the drainer.
    drain_wake: Notify,
    /// Set by [`Scheduler::shutdown`]: no new syncs or drains.
    stopping: std::sync::atomic::AtomicBool,
    /// Syncs running now, and whether a drain is.
    running_syncs: std::sync::atomic::AtomicUsize,
    draining: std::sync::atomic::AtomicBool,
    /// Wakes [`Scheduler::shutdown`] when a sync or drain ends.
    idle: Notify,
}

/// Backoff of failed passes: 2 s doubling to 15 minutes (with jitter), never sooner than
/// Calendar's Retry-After.
const SYNC_BACKOFF: confsync_engine::backoff::Backoff = confsync_engine::backoff::Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(15 * 60),
    max_attempts: i64::MAX,
};

/// How long finished history (dead letters, stopped or expired channel records) is kept by
/// default ([`SchedulerConfig::retention`]).
pub const HISTORY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often abandoned creates are looked for.
const INTENT_CLEAN_UP_EVERY: Duration = Duration::from_secs(10 * 60);

/// The drainer sleeps at most this long (a multiple of the poll), so actions queued by other
/// processes whose notification was missed are picked up.
const DRAIN_IDLE_POLLS: u32 = 5;

/// Other workers' notifications within this window wake the drainer once.
const NOTIFY_COALESCE: Duration = Duration::from_millis(100);

/// How long a singleton duty is held without renewal: its holder renews it every period, so
/// another worker takes it over within this many periods of the holder's death.
const DUTY_PERIODS: u32 = 3;

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
            calendars: Mutex::new(Calendars::default()),
            wake: Notify::new(),
            drain_wake: Notify::new(),
            stopping: Default::default(),
            running_syncs: Default::default(),
            draining: Default::default(),
            idle: Notify::new(),
        });
        let scheduler = Scheduler { inner };
        let looping = scheduler.clone();
        tokio::spawn(async move { looping.run().await });
        let draining = scheduler.clone();
        tokio::spawn(async move { draining.drain_loop().await });
        let polling = scheduler.clone();
        tokio::spawn(async move { polling.poll_store().await });
        let listening = scheduler.clone();
        tokio::spawn(async move { listening.listen().await });
        scheduler
    }

    /// The engine the scheduler drives.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Every calendar the store says is waiting (dirty, or its last pass failed), and not
    /// being synced by another worker, is scheduled (a failed one at its retry time): at startup
    /// (triggers acknowledged before a restart), then every [`SchedulerConfig::poll`]
    /// (triggers acknowledged by a worker that died, failed passes of other workers). Calendars
    /// this scheduler already has in hand are left as they are.
    async fn poll_store(self) {
        let mut first = true;
        loop {
            if self.stopping() {
                return;
            }
            match self.inner.engine.store.calendars_to_sync().await {
                Ok(waiting) => {
                    if first && !waiting.is_empty() {
                        info!(
                            calendars = waiting.len(),
                            "resuming syncs triggered before the restart"
                        );
                    }
                    first = false;
                    let now = now_ms();
                    let mut scheduled = false;
                    let mut calendars = self.calendars();
                    for (calendar_id, due_ms) in waiting {
                        let wait = Duration::from_millis((due_ms - now).clamp(0, 3_600_000) as u64);
                        let due = Instant::now() + wait.max(self.inner.config.debounce);
                        scheduled |= calendars.want(&calendar_id, due, true);
                    }
                    drop(calendars);
                    if scheduled {
                        self.inner.wake.notify_one();
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot read which calendars wait for a sync; trying again");
                }
            }
            tokio::time::sleep(self.inner.config.poll).await;
        }
    }

    /// Wakes the drainer when another worker queued outbox rows (Postgres LISTEN/NOTIFY), at
    /// most once per [`NOTIFY_COALESCE`]. A
    /// store without notifications (SQLite) ends this task at once.
    async fn listen(self) {
        let mut listener = match self.inner.engine.store.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot listen for other workers' notifications; polling only");
                return;
            }
        };
        loop {
            if self.stopping() {
                return;
            }
            match listener.recv().await {
                Ok(_) => {
                    // Coalesced: the worker that queued a row drains it itself at once, so a
                    // notification matters only for rows it cannot take soon. A burst of them
                    // wakes this drainer once per window instead of once each (every worker
                    // racing for every row cost more than the rows).
                    let window = tokio::time::Instant::now() + NOTIFY_COALESCE;
                    while let Ok(Ok(_)) = tokio::time::timeout_at(window, listener.recv()).await {}
                    self.inner.drain_wake.notify_one();
                }
                Err(e) => {
                    warn!(error = %e, "notification listener failed; reconnecting (polling meanwhile)");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// A trigger for `calendar_id` (a push notification, the add-on's sync call): recorded in
    /// the store first, then scheduled after the debounce. Answers false for a calendar the
    /// store does not know (nothing recorded or scheduled). An error means nothing was
    /// recorded: do not acknowledge the trigger.
    pub async fn request_sync(
        &self,
        calendar_id: &str,
    ) -> Result<bool, confsync_store::StoreError> {
        let known = self
            .inner
            .engine
            .store
            .mark_dirty(calendar_id, now_ms())
            .await?;
        if known {
            self.mark_dirty(calendar_id);
        }
        Ok(known)
    }

    /// Stops starting syncs and drains, and waits until the running ones finish or `deadline`
    /// passes. Whatever did not run stays dirty or pending in the store for the next start.
    /// Answers whether everything finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        use std::sync::atomic::Ordering;
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        self.inner.drain_wake.notify_one();
        let end = Instant::now() + deadline;
        loop {
            let notified = self.inner.idle.notified();
            let busy = self.inner.running_syncs.load(Ordering::SeqCst) > 0
                || self.inner.draining.load(Ordering::SeqCst);
            if !busy {
                return true;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                warn!(
                    syncs = self.inner.running_syncs.load(Ordering::SeqCst),
                    "shutdown deadline passed with work running; it resumes at the next start"
                );
                return false;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn calendars(&self) -> std::sync::MutexGuard<'_, Calendars> {
        self.inner
            .calendars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed on `calendar_id`: sync it after the debounce (coalescing repeats).
    pub fn mark_dirty(&self, calendar_id: &str) {
        let due = Instant::now() + self.inner.config.debounce;
        {
            self.calendars().want(calendar_id, due, false);
        }
        self.inner.wake.notify_one();
    }

    /// The safety sweep: push notifications are not fully reliable, so every calendar is synced
    /// at least every `interval` (spread by +-25% per calendar, so calendars do not sync in
    /// lockstep). Checks once a minute.
    pub fn start_sweep(&self, interval: Duration) {
        let cleaning = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTENT_CLEAN_UP_EVERY);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                if cleaning.stopping() {
                    return;
                }
                if !cleaning.holds_duty("clean-up", INTENT_CLEAN_UP_EVERY).await {
                    continue;
                }
                // History past its use goes once an hour (the first tick too: at startup).
                if ticks.is_multiple_of(6) {
                    let now = now_ms();
                    let before = now - cleaning.inner.config.retention.as_millis() as i64;
                    match cleaning.inner.engine.store.prune_history(before, now).await {
                        Ok(p) if p == confsync_store::Pruned::default() => {}
                        Ok(p) => info!(
                            oauth_requests = p.oauth_requests,
                            channels = p.channels,
                            dead_letters = p.dead_letters,
                            outbox = p.outbox,
                            links = p.links,
                            "history past its retention pruned"
                        ),
                        Err(e) => warn!(error = %e, "pruning history failed"),
                    }
                }
                ticks += 1;
                match cleaning.inner.engine.clean_up_intents(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(closed = n, "abandoned creates cleaned up");
                        cleaning.drain_soon();
                    }
                    Err(e) => warn!(error = %e, "cleaning up abandoned creates failed"),
                }
            }
        });
        let scheduler = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(60).min(interval);
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if scheduler.stopping() {
                    return;
                }
                if !scheduler.holds_duty("sweep", period).await {
                    continue;
                }
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
                        && calendar.dirty_at.is_none()
                    {
                        // Recorded in the store: any worker may run it, and it survives this
                        // one's death.
                        if let Err(e) = scheduler.request_sync(&calendar.calendar_id).await {
                            warn!(calendar_id = %calendar.calendar_id, error = %e, "sweep could not mark the calendar");
                        }
                    }
                }
            }
        });
    }

    /// Whether this worker holds the singleton duty `name`, run every `period` (taken, renewed,
    /// or refused because another live worker holds it).
    async fn holds_duty(&self, name: &str, period: Duration) -> bool {
        let engine = &self.inner.engine;
        let ttl = (period * DUTY_PERIODS).as_millis() as i64;
        match engine
            .store
            .take_duty(name, &engine.config.worker, engine.store.clock_ms(), ttl)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                warn!(duty = name, error = %e, "cannot take the duty; skipping this round");
                false
            }
        }
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
                failures: s.failures,
            })
            .collect();
        out.sort_by(|a, b| a.calendar_id.cmp(&b.calendar_id));
        out
    }

    /// Activity of these calendars only (status pages: bounded work per request).
    pub fn activity_of<'a>(
        &self,
        calendar_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<CalendarActivity> {
        let calendars = self.calendars();
        calendar_ids
            .into_iter()
            .filter_map(|id| {
                calendars.get(id).map(|s| CalendarActivity {
                    calendar_id: id.to_owned(),
                    pending: s.dirty,
                    running: s.running,
                    syncs: s.syncs,
                    last_error: s.last_error.clone(),
                    failures: s.failures,
                })
            })
            .collect()
    }

    /// Calendars whose last pass failed (retried with backoff), for the metrics.
    pub fn failing(&self) -> usize {
        self.calendars().values().filter(|s| s.failures > 0).count()
    }

    /// Runs due syncs, sleeping until the next one is due or something is marked dirty.
    async fn run(self) {
        loop {
            if self.stopping() {
                return;
            }
            let (ready, next_due) = {
                let mut calendars = self.calendars();
                let Calendars { states, wanted } = &mut *calendars;
                let now = Instant::now();
                let mut ready = Vec::new();
                let mut next_due: Option<Instant> = None;
                wanted.retain(|id| {
                    let Some(state) = states.get_mut(id).filter(|s| s.dirty) else {
                        return false;
                    };
                    if state.running {
                        return true;
                    }
                    match state.due {
                        Some(due) if due > now => {
                            next_due = Some(next_due.map_or(due, |n| n.min(due)));
                            true
                        }
                        _ => {
                            state.dirty = false;
                            state.due = None;
                            state.running = true;
                            ready.push(id.clone());
                            false
                        }
                    }
                });
                (ready, next_due)
            };
            for calendar_id in ready {
                self.inner
                    .running_syncs
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
            if self.stopping() {
                return;
            }
            self.inner
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let drained = engine.drain(now_ms()).await;
            self.inner
                .draining
                .store(false, std::sync::atomic::Ordering::SeqCst);
            self.inner.idle.notify_waiters();
            // A drain that did nothing or failed must not be repeated at once (a store outage,
            // a row that stays due): at least this long passes before the next.
            let floor = match drained {
                Ok(drained) => {
                    self.inner.metrics.drain(&drained);
                    for calendar_id in &drained.resync {
                        self.mark_dirty(calendar_id);
                    }
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
            // Postgres: other workers' rows (queued, or left by a worker that died) are looked
            // for every poll; SQLite: one process, every few polls is plenty.
            let idle = match engine.store.backend() {
                "postgres" => self.inner.config.poll,
                _ => self.inner.config.poll * DRAIN_IDLE_POLLS,
            };
            let pause = match engine.store.next_due().await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, 60_000) as u64),
                Ok(None) => idle,
                Err(_) => Duration::from_secs(1),
            }
            .max(floor);
            if pause.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.inner.drain_wake.notified() => {}
                _ = tokio::time::sleep(pause.min(idle)) => {}
            }
        }
    }

    /// Asks the drainer to run the outbox now (the add-on API queued something, say).
    pub fn drain_soon(&self) {
        self.inner.drain_wake.notify_one();
    }

    async fn sync_one(self, calendar_id: String) {
        self.sync_guarded(&calendar_id).await;
        self.inner
            .running_syncs
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.idle.notify_waiters();
        // A notification that arrived during the sync (or a retry) is due now.
        self.inner.wake.notify_one();
    }

    async fn sync_guarded(&self, calendar_id: &str) {
        let Ok(_permit) = self.inner.workers.acquire().await else {
            return;
        };
        if self.stopping() {
            // Not started: the calendar stays dirty in the store for the next start.
            self.calendars()
                .entry(calendar_id.to_owned())
                .or_default()
                .running = false;
            return;
        }
        let engine = &self.inner.engine;
        let started = std::time::Instant::now();
        // The pass answers the triggers recorded before it read the calendar's state; one
        // recorded after keeps the calendar dirty for another pass (`still_dirty`).
        // Boxed: a pass's future is large, and every calendar made ready gets a task at once
        // (most of them waiting for a permit above); unboxed, each task would carry the whole
        // pass, and a burst of thousands would fault in fresh memory for each.
        let pass = Box::pin(engine.sync_leased(calendar_id, false, now_ms(), true));
        let result = match pass.await {
            Ok(Some(summary)) => Ok(summary),
            Ok(None) => {
                // Another worker is syncing it: its pass answers what is recorded dirty by now,
                // or leaves the calendar dirty for the next poll.
                tracing::debug!(calendar_id, "calendar being synced by another worker");
                self.calendars()
                    .entry(calendar_id.to_owned())
                    .or_default()
                    .running = false;
                return;
            }
            Err(e) => Err(e),
        };
        let metrics = &self.inner.metrics;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.needs_reauth() => "reauth",
            Err(_) => "error",
        };
        metrics.sync_run(outcome, started.elapsed().as_secs_f64());
        let (error, retry_in) = match &result {
            Ok(summary) => {
                if summary.full {
                    metrics.full_sync();
                }
                info!(calendar_id = %calendar_id, events = summary.events, full = summary.full, replans = summary.replans, "calendar synced");
                if summary.resync {
                    // A series link moved here: a full pass follows at once.
                    self.mark_dirty(calendar_id);
                }
                self.inner.drain_wake.notify_one();
                if summary.still_dirty {
                    // A trigger arrived during the pass (here or at another worker), or the
                    // pass could not be recorded.
                    self.mark_dirty(calendar_id);
                }
                (None, None)
            }
            Err(e) => {
                let failures = self.calendars().get(calendar_id).map_or(0, |s| s.failures);
                // A revoked grant waits for the owner to connect again (the callback syncs).
                let retry_in = (!e.needs_reauth())
                    .then(|| SYNC_BACKOFF.delay(i64::from(failures), e.retry_after(), calendar_id));
                let error = e.to_string();
                let retry_at = retry_in.map(|d| now_ms() + d.as_millis() as i64);
                match &retry_in {
                    Some(d) => {
                        warn!(calendar_id, %error, failures = failures + 1, retry_in_s = d.as_secs_f64(), "sync failed; retrying with backoff")
                    }
                    None => {
                        warn!(calendar_id, %error, "sync failed; it runs again when the calendar's owner connects")
                    }
                }
                if let Err(store_error) = engine
                    .store
                    .sync_failed(calendar_id, &error, retry_at, now_ms())
                    .await
                {
                    warn!(calendar_id, error = %store_error, "could not record the failed pass");
                }
                (Some(error), retry_in)
            }
        };
        let mut calendars = self.calendars();
        let state = calendars.entry(calendar_id.to_owned()).or_default();
        state.running = false;
        state.syncs += 1;
        match error {
            None => state.failures = 0,
            Some(_) => state.failures = state.failures.saturating_add(1),
        }
        state.last_error = error;
        if let Some(wait) = retry_in {
            calendars.want(calendar_id, Instant::now() + wait, false);
        }
    }
}
