//! `confsync bench status`: what the operator's views cost with many calendars. A store (SQLite
//! in WAL mode on a temp file, or a fresh schema of the Postgres test database) is filled in bulk
//! with N calendars as a running service leaves them: most synced within the last sweep, a tail
//! lagging hours or days, 1% failing, some never synced, some whose owner must connect again,
//! most with a live push channel (and, when asked, stopped channels kept as history). The
//! service's router runs in process on loopback (scheduler started, no sweep, nothing to sync),
//! and each request below is timed over real HTTP: `/v1/status` (default page, 1,000 per page, a
//! search, a page by cursor), the status page (first page, a search), `/metrics` (aggregates
//! only, then with 100 per-calendar series). For each: median and max wall time, body bytes,
//! CPU per request (this process: client and service; with Postgres also the server's), and the
//! process's resident memory before and after more requests of the same kind. The load average
//! is printed beside every row: on a busy machine the times are not the service's alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confsync_core::plan::{Capabilities, Recognizer};
use confsync_emulator::{Emulator, EmulatorConfig};
use confsync_engine::calendar::emulated::EmulatorCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_providers::memory::MemoryProvider;
use confsync_service::{Scheduler, SchedulerConfig, ServerLimits, Service, hash_api_key, router};
use confsync_store::Store;
use confsync_store::testing::{CalendarFixture, insert_calendars};

use crate::bench::rss_bytes;
use crate::bench_service::{cpu_seconds, load_average, postgres_cpu_seconds};

const KEY: &str = "cs_bench-status-key";

#[derive(clap::Args)]
pub struct StatusBenchArgs {
    /// Calendars in the store.
    #[arg(long, default_value_t = 100_000)]
    calendars: usize,
    /// Timed requests of each kind (after two untimed ones).
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Further requests of each kind between the two resident memory readings.
    #[arg(long, default_value_t = 50)]
    more: usize,
    /// Stopped push channels kept per calendar (renewal history within the retention period;
    /// about 5 with 7-day channels and 30 days of retention).
    #[arg(long, default_value_t = 0)]
    channel_history: usize,
    /// The store: a fresh schema in the Postgres test database (`CONFSYNC_TEST_POSTGRES_URL`,
    /// default postgres://postgres@127.0.0.1:5432/test) instead of a temporary SQLite file.
    #[arg(long)]
    postgres: bool,
}

fn calendar_id(i: usize) -> String {
    format!("user{i:06}@example.com")
}

/// Owners of the calendars with a recorded owner; the first half lost their grant.
const OWNERS: usize = 10;

fn owner(k: usize) -> String {
    format!("owner{k}@example.com")
}

/// The i-th calendar as a service with `n` calendars leaves it at `now`: a deterministic mix
/// (no randomness, so runs compare).
fn fixture(i: usize, now: i64, history: usize) -> CalendarFixture {
    let minute = 60_000;
    // Spread over the calendars: a multiplicative hash of the index, 0..10,000.
    let h = (i.wrapping_mul(7919) % 10_000) as i64;
    let last_sync_at = match h {
        // 1% never synced (registered, first pass not done yet).
        0..100 => None,
        // 1% lagging 1 to 48 hours.
        100..200 => Some(now - 60 * minute * (1 + (h - 100) % 48)),
        // The rest within the last sweep (up to about 19 minutes).
        _ => Some(now - (h * 1_000 / 10_000) * 19 * minute / 1_000),
    };
    let failing = (200..300).contains(&h);
    CalendarFixture {
        calendar_id: calendar_id(i),
        // 2% have a recorded owner (a shared or secondary calendar reached with their grant).
        owner: (i % 50 == 1).then(|| owner(i / 50 % OWNERS)),
        last_sync_at,
        sync_failures: if failing { 1 + (h % 5) } else { 0 },
        last_error: failing.then(|| format!("events.list: 503 backendError (calendar {i})")),
        // Retried tomorrow: nothing for the bench's scheduler to do meanwhile.
        retry_at: failing.then_some(now + 24 * 60 * minute),
        dirty_at: None,
        // 90% with a live channel expiring within 7 days.
        channel_expires_at: (h % 10 != 0).then(|| now + 60 * minute + h * 60_480),
        stopped_channels: history,
    }
}

struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// GET `url` (with the API key when `key`): the body's length; an error unless 2xx.
async fn get(http: &reqwest::Client, url: String, key: bool) -> anyhow::Result<usize> {
    let mut request = http.get(&url);
    if key {
        request = request.bearer_auth(KEY);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(body.len())
}

fn load_1m() -> String {
    load_average()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

pub async fn run(args: StatusBenchArgs) -> anyhow::Result<()> {
    let n = args.calendars;
    if n == 0 || args.requests == 0 {
        bail!("--calendars and --requests must be at least 1");
    }
    let (store_url, db) = if args.postgres {
        let url = confsync_store::testing::postgres_schema_url()
            .await
            .context("--postgres: the test Postgres is not reachable")?;
        (url, None)
    } else {
        let path = std::env::temp_dir().join(format!(
            "confsync-bench-status-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        (
            path.to_str().context("temp path is not UTF-8")?.to_owned(),
            Some(TempDb(path)),
        )
    };
    let store = Store::open(&store_url).await?;
    let now = chrono::Utc::now().timestamp_millis();
    store
        .api_key_create("bench", &hash_api_key(KEY), now)
        .await?;

    println!(
        "status benchmark: {n} calendars, {} stopped channel(s) each kept as history, {}; load average {}",
        args.channel_history,
        match &db {
            Some(TempDb(path)) => format!("SQLite (WAL) at {}", path.display()),
            None => format!("Postgres ({})", confsync_store::redact_location(&store_url)),
        },
        load_average()
    );
    let fill = Instant::now();
    for k in 0..OWNERS {
        store.user_connect(&owner(k), "sealed", None, now).await?;
        if k < OWNERS / 2 {
            store.user_needs_reauth(&owner(k), "revoked", now).await?;
        }
    }
    let fixtures: Vec<CalendarFixture> = (0..n)
        .map(|i| fixture(i, now, args.channel_history))
        .collect();
    for chunk in fixtures.chunks(20_000) {
        insert_calendars(&store, chunk).await?;
    }
    drop(fixtures);
    // Postgres: the planner's statistics as autovacuum leaves them after a bulk load.
    confsync_store::testing::analyze_filled_tables(&store).await?;
    let summary = store.calendar_summary().await?;
    println!(
        "filled in {:.1} s: {} calendars, {} synced, {} failing, {} needing re-authorisation",
        fill.elapsed().as_secs_f64(),
        summary.calendars,
        summary.synced,
        summary.failing,
        summary.needing_reauth
    );

    // The service as `confsync serve` builds it, minus Google and the sweep: nothing to sync.
    let emulator = Emulator::new(EmulatorConfig::default());
    let calendar = Arc::new(EmulatorCalendar::new(emulator.shared().clone(), None));
    let provider = Arc::new(MemoryProvider::new("bench", Capabilities::ALL));
    let config = EngineConfig {
        recognizer: Recognizer {
            solution_names: vec!["confsync".into()],
            parameter_key: Some(confsync_engine::conference::DEFAULT_PARAMETER_KEY.into()),
        },
        worker: "bench-status".into(),
        ..EngineConfig::default()
    };
    store.register_worker(&config.worker).await?;
    let engine = Arc::new(Engine::new(
        store.clone(),
        calendar,
        provider.clone(),
        config,
    ));
    let scheduler = Scheduler::start(engine, SchedulerConfig::default());
    let metrics = scheduler.metrics().clone();
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler,
        create_deadline: Duration::from_secs(10),
        channels: None,
        oauth: None,
        public_url: None,
        budgets: None,
        host_key: None,
        identity: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(confsync_service::serve(
        listener,
        router(service),
        ServerLimits::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();

    let middle = calendar_id(n / 2);
    let search = format!("user{:04}", (n / 2) / 100); // about 100 calendars
    let kinds: Vec<(String, String, bool, usize)> = vec![
        ("/v1/status".into(), "v1/status".into(), true, 0),
        (
            "/v1/status?limit=1000".into(),
            "v1/status?limit=1000".into(),
            true,
            0,
        ),
        (
            format!("/v1/status?search={search}"),
            format!("v1/status?search={search}"),
            true,
            0,
        ),
        (
            "/v1/status?search=nomatch (whole scan)".into(),
            "v1/status?search=nomatch".into(),
            true,
            0,
        ),
        (
            "/v1/status?after=(middle id)".into(),
            format!("v1/status?after={middle}"),
            true,
            0,
        ),
        ("/ (status page)".into(), String::new(), false, 0),
        (
            format!("/?search={search}"),
            format!("?search={search}"),
            false,
            0,
        ),
        (
            "/?after=(middle id)&limit=1000".into(),
            format!("?after={middle}&limit=1000"),
            false,
            0,
        ),
        ("/metrics".into(), "metrics".into(), false, 0),
        (
            "/metrics, 100 per-calendar series".into(),
            "metrics".into(),
            false,
            100,
        ),
    ];

    let get = |path: &str, key: bool| get(&http, format!("{base}{path}"), key);

    println!(
        "{} timed requests of each kind (after 2 untimed), one at a time over loopback HTTP; CPU is this process's (client and service){}; RSS before and after {} more",
        args.requests,
        if args.postgres {
            " plus the Postgres server's"
        } else {
            ""
        },
        args.more
    );
    println!(
        "{:<42} {:>9} {:>9} {:>10} {:>12} {:>20} {:>6}",
        "request",
        "median ms",
        "max ms",
        "body bytes",
        "CPU/request",
        "RSS before -> after",
        "load"
    );
    let mut worst_median: f64 = 0.0;
    for (label, path, key, per_calendar) in &kinds {
        metrics.set_per_calendar(*per_calendar);
        for _ in 0..2 {
            get(path, *key).await?;
        }
        let mut times = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        let cpu = cpu_seconds();
        let pg_cpu = if args.postgres {
            postgres_cpu_seconds()
        } else {
            0.0
        };
        for _ in 0..args.requests {
            let started = Instant::now();
            bytes = get(path, *key).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let cpu_ms = (cpu_seconds() - cpu) * 1000.0 / args.requests as f64;
        let pg_cpu_ms = if args.postgres {
            Some((postgres_cpu_seconds() - pg_cpu) * 1000.0 / args.requests as f64)
        } else {
            None
        };
        times.sort_by(f64::total_cmp);
        let rss_before = rss_bytes();
        for _ in 0..args.more {
            get(path, *key).await?;
        }
        let rss_after = rss_bytes();
        let med = median(&times);
        worst_median = worst_median.max(med);
        println!(
            "{:<42} {:>9.1} {:>9.1} {:>10} {:>12} {:>20} {:>6}",
            label,
            med,
            times.last().copied().unwrap_or(f64::NAN),
            bytes,
            match pg_cpu_ms {
                Some(pg) => format!("{cpu_ms:.1}+{pg:.1} ms"),
                None => format!("{cpu_ms:.1} ms"),
            },
            format!(
                "{:.1} -> {:.1} MB",
                rss_before as f64 / 1e6,
                rss_after as f64 / 1e6
            ),
            load_1m()
        );
    }
    metrics.set_per_calendar(0);
    println!(
        "target: every median under 100 ms ({n} calendars): {} (slowest median {worst_median:.1} ms); load average {}",
        if worst_median < 100.0 {
            "met"
        } else {
            "MISSED"
        },
        load_average()
    );
    drop(store);
    drop(db);
    Ok(())
}
