//! `confsync bench adopt`: a first full sync that adopts conferences. The calendar holds
//! `--events` events, `--ours` of them carrying one of our conferences that the store has never
//! seen (a store restored from nothing, a calendar connected after its meetings were made). The
//! pass lists everything, links each of ours and queues one update for it (its meeting is
//! brought to the event as it is now); the drain then calls the provider (in memory: instant)
//! once per conference. Each round runs on a fresh store against the same calendar.
//!
//! Printed per round and as medians: the sync, the drain and the whole, the process's CPU
//! time per adopted conference, and (SQLite) per action: the bytes appended to the WAL (the
//! issue's target), and the bytes the store's connection threads wrote in all: WAL frames and
//! checkpoint copies, a final checkpoint included (what the round left in the WAL is copied
//! some time, so it counts).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use confsync_core::model::Snapshot;
use confsync_core::plan::Capabilities;
use confsync_emulator::store::{WriteKind, WriteOptions};
use confsync_emulator::{Emulator, EmulatorConfig};
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::memory::MemoryProvider;
use confsync_store::Store;
use serde_json::json;

use crate::bench::{event_body, median, sqlite_bytes_written};
use crate::bench_service::{cpu_seconds, load_average, sqlite_cpu_seconds};

#[derive(clap::Args)]
pub struct AdoptBenchArgs {
    /// Events in the calendar.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Of those, events carrying one of our conferences, unknown to the store.
    #[arg(long, default_value_t = 10_000)]
    ours: usize,
    /// Rounds, each on a fresh store (the medians are compared with the target).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The store: a fresh schema in the Postgres test database per round
    /// (`CONFSYNC_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test) instead
    /// of a temporary SQLite file.
    #[arg(long)]
    postgres: bool,
}

/// One round's figures.
struct Round {
    sync_secs: f64,
    drain_secs: f64,
    cpu_secs: f64,
    /// SQLite only: CPU of the store's connection threads.
    sqlite_cpu_secs: f64,
    /// SQLite only: bytes written by the store's connection threads.
    bytes: Option<u64>,
    /// SQLite only: bytes appended to the WAL (sync, drain).
    wal: Option<(u64, u64)>,
    actions: u64,
}

pub async fn run(args: AdoptBenchArgs) -> anyhow::Result<()> {
    if args.ours > args.events {
        bail!("--ours ({}) exceeds --events ({})", args.ours, args.events);
    }
    let emulator = Emulator::new(EmulatorConfig::default());
    let shared = emulator.shared().clone();
    let calendar = "adopt@example.com";
    let stride = (args.events / args.ours.max(1)).max(1);
    let is_ours = |i: usize| args.ours > 0 && i.is_multiple_of(stride) && i / stride < args.ours;
    let seeded = Instant::now();
    // Each meeting as the add-on made it: from the event as it was created.
    let mut meetings = Vec::with_capacity(args.ours);
    {
        let mut world = shared.world();
        world
            .ensure_user(calendar, Some("Adopt"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = shared.clock.now();
        let opts = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        for i in 0..args.events {
            let mut body = event_body(i, false);
            body["id"] = json!(format!("ev{i:08}"));
            let meeting_id = is_ours(i).then(|| format!("mtg-{i}"));
            if let Some(meeting_id) = &meeting_id {
                body["conferenceData"] = confsync_engine::conference::fresh(
                    &confsync_engine::conference::default_recognizer(),
                    meeting_id,
                    &format!("https://meet.invalid/{meeting_id}"),
                );
            }
            let created = world
                .insert_event(now, calendar, body, WriteKind::Insert, &opts)
                .map_err(|e| anyhow::anyhow!("insert {i}: {e}"))?;
            if let Some(meeting_id) = meeting_id {
                let created: serde_json::Value = serde_json::from_str(&created)?;
                let spec = Snapshot::from_json(&created)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?
                    .spec
                    .context("a created event has a spec")?;
                meetings.push((meeting_id, spec));
            }
        }
        shared.flush_notifications(&mut world);
    }
    let seed_secs = seeded.elapsed().as_secs_f64();
    let running = emulator.spawn("127.0.0.1:0").await?;
    let client = Client::new(
        running.base_url(),
        Arc::new(StaticToken(format!("dev:{calendar}"))),
        RetryPolicy::default(),
    )?;
    println!(
        "adoption benchmark: {} events, {} of them ours and unknown to the store, {} rounds on fresh {} stores; seeding {seed_secs:.2} s; load average {}",
        args.events,
        args.ours,
        args.rounds,
        if args.postgres { "Postgres" } else { "SQLite" },
        load_average()
    );

    let mut rounds = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let db_path = std::env::temp_dir().join(format!(
            "confsync-bench-adopt-{}-{round}.db",
            std::process::id()
        ));
        let _db = crate::bench::TempDb(db_path.clone());
        let store = if args.postgres {
            let url = confsync_store::testing::postgres_schema_url()
                .await
                .context("--postgres: the test Postgres is not reachable")?;
            Store::open(&url).await?
        } else {
            Store::open(db_path.to_str().context("temp path is not UTF-8")?).await?
        };
        // The provider knows every meeting (the add-on made them), as they were made.
        let provider = Arc::new(MemoryProvider::new("bench", Capabilities::ALL));
        for (meeting_id, spec) in &meetings {
            provider.insert(meeting_id, spec.clone());
        }
        let engine = Engine::new(
            store.clone(),
            Arc::new(GoogleCalendar {
                client: client.clone(),
            }),
            provider.clone(),
            EngineConfig {
                full_sync_window: None,
                ..EngineConfig::default()
            },
        );
        let wal_before = store.sqlite_wal_bytes().await?;
        let (cpu_before, bytes_before) = (cpu_seconds(), sqlite_bytes_written());
        let sqlite_cpu_before = sqlite_cpu_seconds();
        let started = Instant::now();
        let summary = engine.sync(calendar, true, crate::bench::now_ms()).await?;
        let sync_secs = started.elapsed().as_secs_f64();
        let sync_bytes = sqlite_bytes_written() - bytes_before;
        let wal_synced = store.sqlite_wal_bytes().await?;
        let started_drain = Instant::now();
        let drained = engine.drain(crate::bench::now_ms()).await?;
        let drain_secs = started_drain.elapsed().as_secs_f64();
        let wal_drained = store.sqlite_wal_bytes().await?;
        let wal = match (wal_before, wal_synced, wal_drained) {
            (Some(before), Some(synced), Some(drained)) => {
                Some((synced - before, drained - synced))
            }
            _ => None,
        };
        // What is still only in the WAL is copied to the database file at some checkpoint:
        // counted here, with the round's work.
        let before_checkpoint = sqlite_bytes_written();
        store.checkpoint().await?;
        let checkpoint_bytes = sqlite_bytes_written() - before_checkpoint;
        let cpu_secs = cpu_seconds() - cpu_before;
        let sqlite_cpu_secs = sqlite_cpu_seconds() - sqlite_cpu_before;
        let bytes = (!args.postgres).then(|| sqlite_bytes_written() - bytes_before);
        let planned: u64 = summary.actions.values().sum();
        let calls = provider.calls().len() as u64;
        let depth = store.outbox_depth().await?;
        println!(
            "  round {round}: full sync {} events in {sync_secs:.3} s, {planned} actions planned; drain {drain_secs:.3} s, {calls} provider calls, {} done ({:?}), {} failed; total {:.3} s; CPU {:.1} us per adopted conference{}",
            summary.events,
            drained.done,
            drained.done_by_kind,
            drained.failed + drained.retried,
            sync_secs + drain_secs,
            cpu_secs * 1e6 / args.ours.max(1) as f64,
            bytes.zip(wal).map_or(String::new(), |(b, (wal_sync, wal_drain))| format!(
                "; WAL {:.0} bytes per action ({:.0} by the sync, {:.0} by the drain); store wrote {:.0} bytes per action in all ({:.0} by the sync, {:.0} by the drain, {:.0} by the final checkpoint)",
                (wal_sync + wal_drain) as f64 / planned.max(1) as f64,
                wal_sync as f64 / planned.max(1) as f64,
                wal_drain as f64 / planned.max(1) as f64,
                b as f64 / planned.max(1) as f64,
                sync_bytes as f64 / planned.max(1) as f64,
                b.saturating_sub(sync_bytes + checkpoint_bytes) as f64 / planned.max(1) as f64,
                checkpoint_bytes as f64 / planned.max(1) as f64
            )),
        );
        if summary.events != args.events as u64 {
            failures.push(format!(
                "round {round}: the full sync listed {} events, expected {}",
                summary.events, args.events
            ));
        }
        if calls != args.ours as u64 || drained.failed + drained.retried > 0 || depth != 0 {
            failures.push(format!(
                "round {round}: {calls} provider calls and {} actions done for {} conferences, {depth} left queued",
                drained.done, args.ours
            ));
        }
        rounds.push(Round {
            sync_secs,
            drain_secs,
            cpu_secs,
            sqlite_cpu_secs,
            bytes,
            wal,
            actions: planned,
        });
        store.close().await;
    }
    let of = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let total = of(|r| r.sync_secs + r.drain_secs);
    println!(
        "adoption: median {total:.3} s from the first page to the last provider call (target < 1.5 s): sync {:.3} s, drain {:.3} s; {:.0} conferences/s",
        of(|r| r.sync_secs),
        of(|r| r.drain_secs),
        args.ours as f64 / total
    );
    println!(
        "CPU: median {:.1} us per adopted conference (the whole process: emulator, engine, store client); load average {}",
        of(|r| r.cpu_secs) * 1e6 / args.ours.max(1) as f64,
        load_average()
    );
    if !args.postgres {
        println!(
            "  of which SQLite's connection threads: median {:.1} us per adopted conference",
            of(|r| r.sqlite_cpu_secs) * 1e6 / args.ours.max(1) as f64
        );
        println!(
            "WAL: median {:.0} bytes per action (target < 2048): frames the store's write connection appended to the write-ahead log (SQLite's page-write count), sync {:.0}, drain {:.0}",
            of(|r| r.wal.map_or(0, |(s, d)| s + d) as f64 / r.actions.max(1) as f64),
            of(|r| r.wal.map_or(0, |(s, _)| s) as f64 / r.actions.max(1) as f64),
            of(|r| r.wal.map_or(0, |(_, d)| d) as f64 / r.actions.max(1) as f64)
        );
        println!(
            "store writes: median {:.0} bytes per action in all: the WAL and its checkpoints' copies into the database file (the round ends with one, so nothing is left in the WAL uncounted), from the SQLite threads' I/O counters",
            of(|r| r.bytes.unwrap_or(0) as f64 / r.actions.max(1) as f64)
        );
    }
    running.shutdown();
    if !failures.is_empty() {
        bail!("adoption benchmark failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
