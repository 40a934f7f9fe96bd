//! `confsync bench ...`: programs that print numbers. Targets live here, not in tests.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::bench_service::cpu_seconds;
use confsync_core::model::Snapshot;
use confsync_core::plan::{Capabilities, Link};
use confsync_core::session::{ListRequest, Page as SessionPage};
use confsync_emulator::store::{WriteKind, WriteOptions};
use confsync_emulator::{Emulator, EmulatorConfig, Shared};
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{CalendarApi, CalendarError, Engine, EngineConfig};
use confsync_gcal::{ApiMethod, Client, ListParams, RetryPolicy, StaticToken};
use confsync_providers::BoxFuture;
use confsync_providers::memory::MemoryProvider;
use confsync_store::{PlannedChange, Store};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;

#[derive(clap::Args)]
pub struct EmulatorBenchArgs {
    /// Events in the calendar.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events edited before the incremental listing.
    #[arg(long, default_value_t = 10_000)]
    edits: usize,
    /// Full listings to run (the best and the median are printed).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<IgnoredAny>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

/// Resident memory of this process in bytes (Linux), 0 elsewhere.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn event_body(i: usize, with_conference: bool) -> serde_json::Value {
    let day = i % 365;
    let hour = 8 + i % 10;
    let mut event = json!({
        "summary": format!("Meeting {i}: quarterly planning with the platform team"),
        "description": "Agenda: status, risks, next steps. Notes are in the shared folder.",
        "location": "Room 4.12",
        "start": {"dateTime": format!("2027-01-01T{hour:02}:00:00Z"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2027-01-01T{hour:02}:45:00Z"), "timeZone": "Europe/Berlin"},
        "attendees": [
            {"email": format!("guest{}@example.org", i % 97), "responseStatus": "accepted"},
            {"email": format!("other{}@example.org", i % 89)},
        ],
        "reminders": {"useDefault": true},
    });
    // Spread the events over a year.
    let date = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default()
        + chrono::Duration::days(day as i64);
    event["start"]["dateTime"] = json!(format!("{date}T{hour:02}:00:00Z"));
    event["end"]["dateTime"] = json!(format!("{date}T{hour:02}:45:00Z"));
    if with_conference {
        event["conferenceData"] = json!({
            "conferenceId": format!("conf-{i}"),
            "conferenceSolution": {"key": {"type": "addOn"}, "name": "confsync"},
            "entryPoints": [{"entryPointType": "video", "uri": format!("https://meet.example.com/{i}")}],
            "parameters": {"addOnParameters": {"parameters": {"meetingId": format!("m{i}")}}},
        });
    }
    event
}

/// Lists every page over HTTP, counting items without decoding them: (items, requests, the
/// next sync token). `extra`: more query parameters (a full sync's `showDeleted` and `fields`).
async fn list_all(
    client: &reqwest::Client,
    url: &str,
    sync_token: Option<&str>,
    extra: &[(&str, &str)],
) -> anyhow::Result<(usize, usize, String)> {
    let mut page_token: Option<String> = None;
    let (mut items, mut requests) = (0, 0);
    loop {
        let mut query: Vec<(&str, &str)> = vec![("maxResults", "2500")];
        query.extend_from_slice(extra);
        if let Some(t) = sync_token {
            query.push(("syncToken", t));
        }
        if let Some(t) = &page_token {
            query.push(("pageToken", t));
        }
        let response = client
            .get(url)
            .bearer_auth("dev:bench@example.com")
            .query(&query)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("events.list answered {}", response.status());
        }
        let page: Page = serde_json::from_slice(&response.bytes().await?)?;
        requests += 1;
        items += page.items.len();
        match (page.next_page_token, page.next_sync_token) {
            (Some(next), _) => page_token = Some(next),
            (None, Some(sync)) => return Ok((items, requests, sync)),
            (None, None) => bail!("a page without nextPageToken or nextSyncToken"),
        }
    }
}

pub async fn emulator(args: EmulatorBenchArgs) -> anyhow::Result<()> {
    let rss_start = rss_bytes();
    let emulator = Emulator::new(EmulatorConfig::default());
    let shared = emulator.shared().clone();
    let calendar = "bench@example.com";
    let seeded = Instant::now();
    {
        let mut world = shared.world();
        world
            .ensure_user(calendar, Some("Bench"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = shared.clock.now();
        let opts = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        for i in 0..args.events {
            world
                .insert_event(
                    now,
                    calendar,
                    event_body(i, i % 10 == 0),
                    WriteKind::Insert,
                    &opts,
                )
                .map_err(|e| anyhow::anyhow!("insert {i}: {e}"))?;
        }
    }
    let seed_secs = seeded.elapsed().as_secs_f64();
    let rss_seeded = rss_bytes();
    let running = emulator.spawn("127.0.0.1:0").await?;
    let url = format!(
        "{}calendar/v3/calendars/{calendar}/events",
        running.base_url()
    );
    let client = reqwest::Client::new();

    println!(
        "emulator benchmark: {} events, {} edits, {} rounds; load average {}",
        args.events,
        args.edits,
        args.rounds,
        crate::bench_service::load_average()
    );
    println!(
        "seeding: {:.0} inserts/s (in process)",
        args.events as f64 / seed_secs
    );
    println!(
        "memory: {:.1} MB resident for {} events ({:.0} bytes/event)",
        (rss_seeded.saturating_sub(rss_start)) as f64 / 1e6,
        args.events,
        (rss_seeded.saturating_sub(rss_start)) as f64 / args.events.max(1) as f64
    );

    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    let mut token = String::new();
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let cpu = cpu_seconds();
        let (items, requests, sync) = list_all(&client, &url, None, &[])
            .await
            .context("full listing")?;
        let secs = started.elapsed().as_secs_f64();
        cpus.push(cpu_seconds() - cpu);
        if items != args.events {
            bail!(
                "full listing returned {items} events, expected {}",
                args.events
            );
        }
        rates.push(items as f64 / secs);
        token = sync;
        println!(
            "  full listing: {items} events in {requests} requests, {:.3} s, {:.0} events/s",
            secs,
            items as f64 / secs
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "full listing: median {:.0} events/s (target >= 200000), best {:.0}; CPU {:.2} us per event (median; the emulator's and the client's: one process); load average {}",
        median(&rates),
        rates[rates.len() - 1],
        median(&cpus) * 1e6 / args.events.max(1) as f64,
        crate::bench_service::load_average()
    );

    {
        let mut world = shared.world();
        let now = shared.clock.now();
        let ids: Vec<String> = world
            .calendar(calendar)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .events
            .keys()
            .take(args.edits)
            .cloned()
            .collect();
        let opts = WriteOptions::default();
        for (n, id) in ids.iter().enumerate() {
            world
                .write_event(
                    now,
                    calendar,
                    id,
                    json!({"summary": format!("Edited {n}")}),
                    WriteKind::Patch,
                    &opts,
                )
                .map_err(|e| anyhow::anyhow!("edit: {e}"))?;
        }
        shared.flush_notifications(&mut world);
    }
    let started = Instant::now();
    let cpu = cpu_seconds();
    let (items, requests, _) = list_all(&client, &url, Some(&token), &[])
        .await
        .context("incremental listing")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    if items != args.edits.min(args.events) {
        bail!(
            "incremental listing returned {items} changes, expected {}",
            args.edits
        );
    }
    println!(
        "incremental listing: {items} changes in {requests} requests, {secs:.3} s, {:.0} events/s; CPU {:.2} us per event",
        items as f64 / secs,
        cpu * 1e6 / items.max(1) as f64
    );
    println!(
        "memory after benchmark: {:.1} MB resident",
        rss_bytes() as f64 / 1e6
    );
    running.shutdown();
    Ok(())
}

#[derive(clap::Args)]
pub struct EngineBenchArgs {
    /// Events in the calendar.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Of those, events carrying one of our conferences (linked, with a meeting at the provider).
    #[arg(long, default_value_t = 10_000)]
    ours: usize,
    /// Changes per incremental burst.
    #[arg(long, default_value_t = 1_000)]
    burst: usize,
    /// Incremental bursts (each followed by a sync and a drain).
    #[arg(long, default_value_t = 5)]
    bursts: usize,
    /// Raw listings and full syncs to run (the medians are compared).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The store: a fresh schema in the Postgres test database (`CONFSYNC_TEST_POSTGRES_URL`,
    /// default postgres://postgres@127.0.0.1:5432/test) instead of a temporary SQLite file.
    #[arg(long)]
    postgres: bool,
}

/// The Google calendar, timing its `events.list` pages (HTTP, decoding, conversion to raw JSON),
/// so a sync's time splits into "waiting for pages" and "the engine's own work".
struct Timed {
    inner: GoogleCalendar,
    list_nanos: AtomicU64,
}

impl Timed {
    fn list_secs(&self) -> f64 {
        self.list_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl CalendarApi for Timed {
    fn list<'a>(
        &'a self,
        calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<SessionPage, CalendarError>> {
        Box::pin(async move {
            let started = Instant::now();
            let page = self.inner.list(calendar_id, request).await;
            self.list_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            page
        })
    }

    fn patch<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        body: &'a serde_json::Value,
        if_match: &'a str,
    ) -> BoxFuture<'a, Result<serde_json::Value, CalendarError>> {
        self.inner.patch(calendar_id, event_id, body, if_match)
    }

    fn get<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, CalendarError>> {
        self.inner.get(calendar_id, event_id)
    }
}

/// The benchmark's SQLite file (and its WAL files), removed when dropped.
pub(crate) struct TempDb(pub(crate) PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bytes this process's SQLite connection threads (sqlx names them `sqlx-sqlite-worker-N`) have
/// written so far: WAL frames and checkpoint copies into the database file, from
/// `/proc/self/task/*/io` (Linux; 0 elsewhere). Threads gone since are not counted, so take
/// differences while one store stays open.
pub(crate) fn sqlite_bytes_written() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let is_sqlite = std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|name| name.starts_with("sqlx-sqlite"));
        if !is_sqlite {
            continue;
        }
        let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
        total += io
            .lines()
            .find_map(|line| line.strip_prefix("wchar:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn events_list_count(client: &Client) -> u64 {
    client.request_count(ApiMethod::EventsList)
}

fn events_get_count(client: &Client) -> u64 {
    client.request_count(ApiMethod::EventsGet)
}

/// Lists every page with the client alone (no engine work): (events, requests).
async fn raw_list(client: &Client, calendar: &str) -> anyhow::Result<(usize, u64)> {
    let mut params = ListParams {
        max_results: Some(2500),
        // As the engine's full sync asks.
        show_deleted: Some(true),
        ..ListParams::default()
    };
    let (mut items, mut requests) = (0, 0);
    loop {
        let page = client.list_events(calendar, &params).await?;
        requests += 1;
        items += page.items.len();
        match page.next_page_token {
            Some(token) => params.page_token = Some(token),
            None => return Ok((items, requests)),
        }
    }
}

/// What one incremental burst did to the calendar.
#[derive(Default)]
struct Burst {
    /// Events changed (each listed once by the next incremental sync).
    touched: HashSet<String>,
    /// Changes made on our events, and how many of our events got a change the provider cares
    /// about (rename, reschedule, new attendee).
    on_ours: usize,
    relevant: HashSet<String>,
}

/// Applies `size` changes straight to the emulator's world: 60% on our events (rename,
/// reschedule and new attendee are relevant; colour and reminders are not), 40% on other events.
fn apply_burst(
    shared: &Shared,
    calendar: &str,
    number: usize,
    size: usize,
    ours: &[String],
    others: &[String],
    cursors: &mut (usize, usize),
) -> anyhow::Result<Burst> {
    let now = shared.clock.now();
    let mut world = shared.world();
    let opts = WriteOptions::default();
    let mut burst = Burst::default();
    let current =
        |world: &confsync_emulator::World, id: &str| -> anyhow::Result<serde_json::Value> {
            let (json, _) = world
                .get_event(calendar, id)
                .map_err(|e| anyhow::anyhow!("get {id}: {e}"))?;
            Ok(serde_json::from_str(&json)?)
        };
    for j in 0..size {
        let slot = j % 10;
        let on_ours = if others.is_empty() {
            true
        } else if ours.is_empty() {
            false
        } else {
            slot < 6
        };
        let (id, body, relevant) = if on_ours {
            let id = &ours[cursors.0 % ours.len()];
            cursors.0 += 1;
            match slot % 6 {
                0 | 1 => (
                    id,
                    json!({"summary": format!("Renamed in burst {number}, change {j}")}),
                    true,
                ),
                2 => {
                    let event = current(&world, id)?;
                    let shift = |field: &str| -> anyhow::Result<serde_json::Value> {
                        let at = event[field]["dateTime"]
                            .as_str()
                            .context("a dateTime start/end")?;
                        let at =
                            chrono::DateTime::parse_from_rfc3339(at)? + chrono::Duration::hours(1);
                        Ok(json!({"dateTime": at.to_rfc3339(), "timeZone": "Europe/Berlin"}))
                    };
                    (
                        id,
                        json!({"start": shift("start")?, "end": shift("end")?}),
                        true,
                    )
                }
                3 => {
                    let event = current(&world, id)?;
                    let mut attendees = event["attendees"].as_array().cloned().unwrap_or_default();
                    attendees.push(json!({"email": format!("added{number}x{j}@example.org")}));
                    (id, json!({"attendees": attendees}), true)
                }
                4 => (
                    id,
                    json!({"colorId": ((number + j) % 11 + 1).to_string()}),
                    false,
                ),
                _ => (
                    id,
                    json!({"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5 + number}]}}),
                    false,
                ),
            }
        } else {
            let id = &others[cursors.1 % others.len()];
            cursors.1 += 1;
            let body = match slot % 3 {
                0 => json!({"summary": format!("Other event renamed in burst {number}")}),
                1 => json!({"colorId": ((number + j) % 11 + 1).to_string()}),
                _ => json!({"location": format!("Room {number}.{j}")}),
            };
            (id, body, false)
        };
        world
            .write_event(now, calendar, id, body, WriteKind::Patch, &opts)
            .map_err(|e| anyhow::anyhow!("burst {number}, change {j} on {id}: {e}"))?;
        burst.touched.insert(id.clone());
        if on_ours {
            burst.on_ours += 1;
            if relevant {
                burst.relevant.insert(id.clone());
            }
        }
    }
    shared.flush_notifications(&mut world);
    Ok(burst)
}

pub async fn engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    if args.ours > args.events {
        bail!("--ours ({}) exceeds --events ({})", args.ours, args.events);
    }
    let emulator = Emulator::new(EmulatorConfig::default());
    let shared = emulator.shared().clone();
    let calendar = "bench@example.com";
    // Wasted calls: successful updates that asked for the spec the meeting already had.
    let provider = Arc::new(MemoryProvider::new("bench", Capabilities::ALL));
    let db_path = std::env::temp_dir().join(format!(
        "confsync-bench-engine-{}-{}.db",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let _db = TempDb(db_path.clone());
    let (store, store_name) = if args.postgres {
        let url = confsync_store::testing::postgres_schema_url()
            .await
            .context("--postgres: the test Postgres is not reachable")?;
        (
            Store::open(&url).await?,
            format!("Postgres ({})", confsync_store::redact_location(&url)),
        )
    } else {
        (
            Store::open(db_path.to_str().context("temp path is not UTF-8")?).await?,
            format!("SQLite (WAL) at {}", db_path.display()),
        )
    };

    // Seed the calendar in process; every `stride`-th event carries one of our conferences.
    let seeded = Instant::now();
    let stride = (args.events / args.ours.max(1)).max(1);
    let is_ours = |i: usize| args.ours > 0 && i.is_multiple_of(stride) && i / stride < args.ours;
    let mut ours: Vec<String> = Vec::with_capacity(args.ours);
    let mut others: Vec<String> = Vec::with_capacity(args.events - args.ours);
    let mut links: Vec<Link> = Vec::with_capacity(args.ours);
    {
        let mut world = shared.world();
        world
            .ensure_user(calendar, Some("Bench"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = shared.clock.now();
        let opts = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        for i in 0..args.events {
            let event_id = format!("ev{i:08}");
            let mut body = event_body(i, false);
            body["id"] = json!(event_id);
            if !is_ours(i) {
                world
                    .insert_event(now, calendar, body, WriteKind::Insert, &opts)
                    .map_err(|e| anyhow::anyhow!("insert {i}: {e}"))?;
                others.push(event_id);
                continue;
            }
            let meeting_id = format!("mtg-{i}");
            body["conferenceData"] = confsync_engine::conference::fresh(
                &confsync_engine::conference::default_recognizer(),
                &meeting_id,
                &format!("https://meet.invalid/{meeting_id}"),
            );
            let created = world
                .insert_event(now, calendar, body, WriteKind::Insert, &opts)
                .map_err(|e| anyhow::anyhow!("insert {i}: {e}"))?;
            let created: serde_json::Value = serde_json::from_str(&created)?;
            let snapshot = Snapshot::from_json(&created).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let spec = snapshot.spec.context("a created event has a spec")?;
            // The add-on made the meeting from the event as it was created ...
            provider.insert(&meeting_id, spec.clone());
            links.push(Link {
                conference_id: meeting_id,
                provider: "bench".into(),
                calendar_id: calendar.to_owned(),
                event_id: event_id.clone(),
                spec,
                last_etag_seen: snapshot.etag,
                last_etag_written: None,
                occurrences: BTreeMap::new(),
                deleted: false,
                join_url: None,
            });
            ours.push(event_id);
        }
        shared.flush_notifications(&mut world);
    }
    let seed_secs = seeded.elapsed().as_secs_f64();
    // ... and linked it, as the add-on API does (1,000 links per transaction).
    let registered = Instant::now();
    for chunk in links.chunks(1000) {
        let now = now_ms();
        let changes: Vec<PlannedChange> = chunk
            .iter()
            .map(|link| PlannedChange {
                link: link.clone(),
                base: confsync_store::LinkBase::New,
                actions: vec![],
                supersede_deletes: false,
                not_before_ms: now,
            })
            .collect();
        store
            .commit_page(calendar, &changes, &[], None, now)
            .await?;
    }
    let register_secs = registered.elapsed().as_secs_f64();
    drop(links);

    let running = emulator.spawn("127.0.0.1:0").await?;
    let client = Client::new(
        running.base_url(),
        Arc::new(StaticToken("dev:bench@example.com".into())),
        RetryPolicy::default(),
    )?;
    let timed = Arc::new(Timed {
        inner: GoogleCalendar {
            client: client.clone(),
        },
        list_nanos: AtomicU64::new(0),
    });
    let engine = Engine::new(
        store.clone(),
        timed.clone(),
        provider.clone(),
        EngineConfig {
            full_sync_window: None,
            ..EngineConfig::default()
        },
    );
    let mut failures: Vec<String> = Vec::new();

    println!(
        "engine benchmark: {} events ({} ours), {} bursts of {} changes, {} rounds, {store_name}; load average {}",
        args.events,
        ours.len(),
        args.bursts,
        args.burst,
        args.rounds,
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(
        "seeding: {} events in {seed_secs:.2} s (in process); {} links registered in {register_secs:.2} s ({:.0} links/s)",
        args.events,
        ours.len(),
        ours.len() as f64 / register_secs
    );

    // (1) The emulator's raw listing through the same client: the floor for a full sync.
    let mut raw_times = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let (items, requests) = raw_list(&client, calendar).await.context("raw listing")?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  raw listing: {items} events in {requests} requests, {secs:.3} s, {:.0} events/s",
            items as f64 / secs
        );
        if items != args.events {
            failures.push(format!(
                "raw listing returned {items} events, expected {}",
                args.events
            ));
        }
        raw_times.push(secs);
    }
    let raw_secs = median(&raw_times);
    println!(
        "raw listing (gcal client, no engine): median {:.0} events/s, {raw_secs:.3} s",
        args.events as f64 / raw_secs
    );

    // (1b) The emulator's raw HTTP listing: the requests a full sync makes (its `fields`
    // mask, gzip), each page's items counted without being decoded. The floor below which no
    // client can list.
    let http = reqwest::Client::builder()
        .user_agent(confsync_gcal::USER_AGENT)
        .build()?;
    let url = format!(
        "{}calendar/v3/calendars/{calendar}/events",
        running.base_url()
    );
    let full_sync_query = [
        ("showDeleted", "true"),
        ("fields", confsync_gcal::EVENTS_SYNC_FIELDS),
    ];
    let mut http_times = Vec::new();
    let mut http_cpu = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let cpu = cpu_seconds();
        let started = Instant::now();
        let (items, requests, _) = list_all(&http, &url, None, &full_sync_query)
            .await
            .context("raw HTTP listing")?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  raw HTTP listing: {items} events in {requests} requests, {secs:.3} s, {:.0} events/s",
            items as f64 / secs
        );
        http_times.push(secs);
        http_cpu.push(cpu_seconds() - cpu);
    }
    let http_secs = median(&http_times);
    println!(
        "raw HTTP listing (the emulator's pages with the full sync's mask and gzip, items counted, not decoded): median {:.0} events/s, {http_secs:.3} s; CPU {:.2} us per event (the emulator's and the client's)",
        args.events as f64 / http_secs,
        median(&http_cpu) * 1e6 / args.events.max(1) as f64
    );

    // (2) Full syncs: every event listed and planned, links compared, nothing to call.
    let mut sync_times = Vec::new();
    let mut list_times = Vec::new();
    let mut sync_cpu = Vec::new();
    let mut requests_per_sync = 0;
    for _ in 0..args.rounds.max(1) {
        let (lists, gets) = (events_list_count(&client), events_get_count(&client));
        let cpu = cpu_seconds();
        let listing_before = timed.list_secs();
        let started = Instant::now();
        let summary = engine.sync(calendar, true, now_ms()).await?;
        let secs = started.elapsed().as_secs_f64();
        let list_secs = timed.list_secs() - listing_before;
        let lists = events_list_count(&client) - lists;
        let gets = events_get_count(&client) - gets;
        let planned: u64 = summary.actions.values().sum();
        println!(
            "  full sync: {} events in {lists} events.list + {gets} events.get requests, {secs:.3} s, {:.0} events/s; pages {list_secs:.3} s, engine work {:.3} s; {planned} actions planned",
            summary.events,
            summary.events as f64 / secs,
            secs - list_secs
        );
        if summary.events != args.events as u64 {
            failures.push(format!(
                "full sync listed {} events, expected {}",
                summary.events, args.events
            ));
        }
        if planned > 0 || summary.dead_letters > 0 || summary.verifications > 0 {
            failures.push(format!(
                "a full sync of unchanged events planned {:?}, {} dead letters, {} verifications",
                summary.actions, summary.dead_letters, summary.verifications
            ));
        }
        requests_per_sync = lists + gets;
        sync_cpu.push(cpu_seconds() - cpu);
        sync_times.push(secs);
        list_times.push(list_secs);
    }
    let full_secs = median(&sync_times);
    let full_list_secs = median(&list_times);
    println!(
        "full sync: median {:.0} events/s, {full_secs:.3} s (target >= 100000); {:.2}x the raw HTTP listing's time (target <= 2.5x); CPU {:.2} us per event (the emulator's included)",
        args.events as f64 / full_secs,
        full_secs / http_secs,
        median(&sync_cpu) * 1e6 / args.events.max(1) as f64
    );
    println!(
        "full sync calendar requests: {requests_per_sync} per sync, {:.0} events per request (target 1 events.list per 2500 events)",
        args.events as f64 / requests_per_sync.max(1) as f64
    );
    println!(
        "engine overhead: {:+.0}% over the raw listing (target <= +25%)",
        (full_secs / raw_secs - 1.0) * 100.0
    );
    println!(
        "full sync time split (medians): pages {full_list_secs:.3} s ({:+.3} s over the raw listing), engine work {:.3} s (links lookup, planning, page commit)",
        full_list_secs - raw_secs,
        full_secs - full_list_secs
    );
    let drained = engine.drain(now_ms()).await?;
    if drained.provider_calls > 0 {
        failures.push(format!(
            "full syncs of unchanged events led to {} provider calls",
            drained.provider_calls
        ));
    }

    // (3) Incremental bursts: changes straight into the world, then one sync and one drain.
    let mut cursors = (0, 0);
    let (mut total_changes, mut total_relevant, mut total_calls, mut total_lists) = (0, 0, 0, 0);
    let (mut total_sync_secs, mut total_events, mut total_sync_cpu) = (0.0, 0, 0.0);
    let mut depth = 0;
    for number in 1..=args.bursts {
        let burst = apply_burst(
            &shared,
            calendar,
            number,
            args.burst,
            &ours,
            &others,
            &mut cursors,
        )?;
        let lists = events_list_count(&client);
        let gets = events_get_count(&client);
        let listing_before = timed.list_secs();
        let cpu = cpu_seconds();
        let started = Instant::now();
        let summary = engine.sync(calendar, false, now_ms()).await?;
        let sync_secs = started.elapsed().as_secs_f64();
        total_sync_cpu += cpu_seconds() - cpu;
        let list_secs = timed.list_secs() - listing_before;
        let lists = events_list_count(&client) - lists;
        let gets = events_get_count(&client) - gets;
        let calls_before = provider.calls().len();
        let wasted_before = provider.wasted_updates();
        let started = Instant::now();
        let drain = engine.drain(now_ms()).await?;
        let drain_secs = started.elapsed().as_secs_f64();
        let calls = provider.calls().len() - calls_before;
        let wasted = provider.wasted_updates() - wasted_before;
        depth = store.outbox_depth().await?;
        println!(
            "  burst {number}: {} changes on {} events ({} on ours, {} of our events changed relevantly); incremental sync {} events in {lists} events.list + {gets} events.get, {sync_secs:.3} s ({:.0} events/s; pages {list_secs:.3} s, engine work {:.3} s); drain {drain_secs:.3} s, {calls} provider calls ({:.2} per relevant change), {wasted} wasted, {} failed, outbox depth {depth}",
            args.burst,
            burst.touched.len(),
            burst.on_ours,
            burst.relevant.len(),
            summary.events,
            summary.events as f64 / sync_secs,
            sync_secs - list_secs,
            calls as f64 / burst.relevant.len().max(1) as f64,
            drain.failed + drain.retried,
        );
        if summary.events != burst.touched.len() as u64 {
            failures.push(format!(
                "burst {number}: the incremental sync listed {} events, {} were changed",
                summary.events,
                burst.touched.len()
            ));
        }
        if drain.failed + drain.retried > 0 {
            failures.push(format!(
                "burst {number}: {} provider actions failed, {} retried",
                drain.failed, drain.retried
            ));
        }
        total_changes += args.burst;
        total_relevant += burst.relevant.len();
        total_calls += calls;
        total_lists += lists;
        total_sync_secs += sync_secs;
        total_events += summary.events;
    }
    let wasted = provider.wasted_updates();
    if args.bursts > 0 {
        println!(
            "incremental sync: {:.0} events/s ({total_events} events in {total_sync_secs:.3} s over {} bursts; target >= 30000); CPU {:.1} us per event (the emulator's included)",
            total_events as f64 / total_sync_secs,
            args.bursts,
            total_sync_cpu * 1e6 / total_events.max(1) as f64
        );
        println!(
            "events.list requests per burst: {:.1} (target {} = one per 2500 changes)",
            total_lists as f64 / args.bursts as f64,
            args.burst.div_ceil(2500).max(1)
        );
        println!(
            "provider calls per relevant change: {:.2} ({total_calls} calls for {total_relevant} relevant changes in {total_changes} changes; target 1.0)",
            total_calls as f64 / total_relevant.max(1) as f64
        );
    }
    println!("wasted provider calls: {wasted} (target 0)");
    println!("outbox depth after drain: {depth} (target 0)");

    // Every meeting must now match its event.
    let out_of_step = {
        let world = shared.world();
        let mut out_of_step = 0;
        for (n, event_id) in ours.iter().enumerate() {
            let (json, _) = world
                .get_event(calendar, event_id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let event: serde_json::Value = serde_json::from_str(&json)?;
            let spec = Snapshot::from_json(&event)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .spec;
            let meeting_id = format!("mtg-{}", n * stride);
            if provider.meeting(&meeting_id).map(|m| m.spec) != spec {
                out_of_step += 1;
            }
        }
        out_of_step
    };
    println!("meetings out of step with their events: {out_of_step} (target 0)");

    if wasted > 0 {
        failures.push(format!("{wasted} wasted provider calls"));
    }
    if total_calls != total_relevant {
        failures.push(format!(
            "{total_calls} provider calls for {total_relevant} relevant changes"
        ));
    }
    if depth > 0 {
        failures.push(format!("{depth} outbox actions left after the drain"));
    }
    if out_of_step > 0 {
        failures.push(format!("{out_of_step} meetings out of step"));
    }
    running.shutdown();
    store.close().await;
    if !failures.is_empty() {
        bail!("engine benchmark failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
