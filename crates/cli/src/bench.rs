//! `confsync bench ...`: programs that print numbers. Targets live here, not in tests.

use std::time::Instant;

use anyhow::{Context, bail};
use confsync_emulator::store::{WriteKind, WriteOptions};
use confsync_emulator::{Emulator, EmulatorConfig};
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
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn event_body(i: usize, with_conference: bool) -> serde_json::Value {
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

async fn list_all(
    client: &reqwest::Client,
    url: &str,
    sync_token: Option<&str>,
) -> anyhow::Result<(usize, usize, String)> {
    let mut page_token: Option<String> = None;
    let (mut items, mut requests) = (0, 0);
    loop {
        let mut query: Vec<(&str, &str)> = vec![("maxResults", "2500")];
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
        "emulator benchmark: {} events, {} edits, {} rounds",
        args.events, args.edits, args.rounds
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
    let mut token = String::new();
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let (items, requests, sync) = list_all(&client, &url, None)
            .await
            .context("full listing")?;
        let secs = started.elapsed().as_secs_f64();
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
        "full listing: best {:.0} events/s, median {:.0} events/s (target >= 200000)",
        rates[rates.len() - 1],
        rates[rates.len() / 2]
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
    let (items, requests, _) = list_all(&client, &url, Some(&token))
        .await
        .context("incremental listing")?;
    let secs = started.elapsed().as_secs_f64();
    if items != args.edits.min(args.events) {
        bail!(
            "incremental listing returned {items} changes, expected {}",
            args.edits
        );
    }
    println!(
        "incremental listing: {items} changes in {requests} requests, {secs:.3} s, {:.0} events/s",
        items as f64 / secs
    );
    println!(
        "memory after benchmark: {:.1} MB resident",
        rss_bytes() as f64 / 1e6
    );
    running.shutdown();
    Ok(())
}
