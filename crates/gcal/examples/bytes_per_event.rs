//! Bytes per event on the wire for a sync's `events.list`, four ways: whole events, with the
//! sync's `fields` mask ([`confsync_gcal::EVENTS_SYNC_FIELDS`]), gzip-encoded, and both.
//!
//! ```text
//! cargo run --release -p confsync-gcal --example bytes_per_event [-- EVENTS]
//! ```
//!
//! It starts the Calendar v3 emulator in process, loads EVENTS (default 2,000) realistic events
//! into one calendar (a description of varying length, 2 to 12 guests with names and RSVPs, a
//! location, reminders, a private property; 70% with an add-on conference, 10% with a Meet
//! conference), then lists them the way the engine's full sync does (pages of 2,500) and counts
//! the response body bytes as they arrive (a client that does not decode gzip). Google's gzip
//! level is not published: the gzip rows use level 6 (zlib's default, what a web server
//! typically sends), and the last two the emulator's own default, level 1. The times are from
//! each request to its last body byte on loopback: the emulator's masking and compressing.

use std::io::Read;
use std::time::Duration;

use confsync_emulator::store::{WriteKind, WriteOptions};
use confsync_emulator::{Emulator, EmulatorConfig};
use confsync_gcal::{EVENTS_SYNC_FIELDS, ListParams, USER_AGENT};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

/// A small deterministic generator (xorshift), so every run loads the same calendar.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "agenda",
    "review",
    "roadmap",
    "quarterly",
    "budget",
    "customer",
    "launch",
    "design",
    "migration",
    "incident",
    "retro",
    "planning",
    "hiring",
    "onboarding",
    "security",
    "metrics",
    "latency",
    "release",
    "contract",
    "renewal",
    "pricing",
    "feedback",
    "interview",
    "offsite",
    "dashboard",
    "backlog",
    "sprint",
    "dependencies",
    "risks",
    "owners",
    "decision",
    "follow-up",
];
const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Dennis",
    "Margaret",
    "Linus",
    "Radia",
    "Frances",
    "John",
    "Donald",
    "Leslie",
    "Tony",
    "Niklaus",
    "Sophie",
    "Hedy",
    "Katherine",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Ritchie", "Hamilton",
    "Torvalds", "Perlman", "Allen", "Backus", "Knuth", "Lamport", "Hoare", "Wirth", "Wilson",
];
const ROOMS: &[&str] = &["Atlas", "Borealis", "Cygnus", "Draco", "Eridanus", "Fornax"];
const RSVP: &[&str] = &[
    "accepted",
    "accepted",
    "tentative",
    "declined",
    "needsAction",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let text: Vec<&str> = (0..words).map(|_| rng.pick(WORDS)).collect();
    text.join(" ")
}

fn event(rng: &mut Rng, n: usize) -> Value {
    let day = 1 + (n % 28) as u32;
    let hour = 8 + rng.below(9) as u32;
    let minutes = [15, 30, 45, 60, 90][rng.below(5) as usize];
    let start = chrono::NaiveDate::from_ymd_opt(2026, 12, day)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc();
    let end = start + chrono::Duration::minutes(minutes);
    let at = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    let mut description = String::new();
    for _ in 0..1 + rng.below(6) {
        let words = 6 + rng.below(14) as usize;
        description.push_str(&format!("<p>{}.</p>", sentence(rng, words)));
    }
    let guests = 2 + rng.below(11) as usize;
    let mut attendees = vec![json!({"email": ALICE, "organizer": true, "self": true,
                                    "responseStatus": "accepted"})];
    for g in 0..guests {
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        attendees.push(json!({
            "email": format!("{}.{}{g}@example.com", first.to_lowercase(), last.to_lowercase()),
            "displayName": format!("{first} {last}"),
            "responseStatus": rng.pick(RSVP),
        }));
    }
    let room = rng.pick(ROOMS);
    if rng.below(3) == 0 {
        attendees.push(
            json!({"email": format!("room-{}@resource.example.com", room.to_lowercase()),
                              "displayName": format!("Room {room}"), "resource": true,
                              "responseStatus": "accepted"}),
        );
    }
    let title_words = 2 + rng.below(4) as usize;
    let mut body = json!({
        "summary": format!("{} ({n})", sentence(rng, title_words)),
        "description": description,
        "location": format!("Room {room}, floor {}", 1 + rng.below(9)),
        "start": {"dateTime": at(start), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": at(end), "timeZone": "Europe/Berlin"},
        "attendees": attendees,
        "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]},
        "extendedProperties": {"private": {"crm.dealId": format!("D-{}", rng.below(1_000_000))}},
        "guestsCanModify": false,
    });
    match rng.below(10) {
        0..=6 => {
            let meeting = format!("{}", 80_000_000_000 + rng.below(10_000_000_000));
            body["conferenceData"] = json!({
                "conferenceId": meeting,
                "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync",
                                       "iconUri": "https://confsync.example.com/icon.png"},
                "entryPoints": [
                    {"entryPointType": "video", "uri": format!("https://meet.confsync.example.com/j/{meeting}"),
                     "label": format!("meet.confsync.example.com/j/{meeting}"), "passcode": format!("{}", rng.below(1_000_000))},
                    {"entryPointType": "phone", "uri": "tel:+1-555-0100", "label": "+1 555-0100",
                     "pin": format!("{}", rng.below(100_000_000))},
                    {"entryPointType": "more", "uri": "https://confsync.example.com/dial-in"}
                ],
                "parameters": {"addOnParameters": {"parameters": {"meetingId": meeting, "host": ALICE}}},
                "notes": "Join from your browser, or dial in with the PIN.",
            });
        }
        7 => {
            body["conferenceData"] = json!({"createRequest": {
                "requestId": format!("req-{n}"),
                "conferenceSolutionKey": {"type": "hangoutsMeet"}}});
        }
        _ => {}
    }
    body
}

/// Lists every page of ALICE's calendar with `fields` (or not) and gzip (or not); answers the
/// response body bytes as sent, the number of events, and the time from each request to its
/// last body byte (the emulator's work, masking and compressing included; loopback).
async fn wire_bytes(base: &str, fields: Option<&str>, gzip: bool) -> (usize, usize, Duration) {
    // No automatic decoding: the bytes counted are the bytes sent.
    let http = reqwest::Client::builder().gzip(false).build().unwrap();
    let mut page_token: Option<String> = None;
    let (mut bytes, mut events, mut elapsed) = (0, 0, Duration::ZERO);
    loop {
        let params = ListParams {
            max_results: Some(2500),
            page_token: page_token.clone(),
            fields: fields.map(str::to_owned),
            ..ListParams::default()
        };
        let mut request = http
            .get(format!(
                "{base}calendar/v3/calendars/{ALICE}/events?{}",
                params.query()
            ))
            .bearer_auth(format!("dev:{ALICE}"));
        request = if gzip {
            request
                .header("Accept-Encoding", "gzip")
                .header("User-Agent", USER_AGENT)
        } else {
            request.header("User-Agent", "confsync (plain)")
        };
        let started = std::time::Instant::now();
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let compressed = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        assert_eq!(
            compressed, gzip,
            "the emulator compresses exactly when asked"
        );
        let body = response.bytes().await.unwrap();
        elapsed += started.elapsed();
        bytes += body.len();
        let text = if gzip {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut text)
                .expect("a gzip body");
            text
        } else {
            body.to_vec()
        };
        let page: Value = serde_json::from_slice(&text).unwrap();
        let page = json!({"items": page["items"].as_array().map_or(0, Vec::len),
                          "nextPageToken": page.get("nextPageToken")});
        events += page["items"].as_u64().unwrap_or(0) as usize;
        match page["nextPageToken"].as_str() {
            Some(token) => page_token = Some(token.to_owned()),
            None => return (bytes, events, elapsed),
        }
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("EVENTS is a number"))
        .unwrap_or(2000);
    let running = Emulator::new(EmulatorConfig {
        gzip_level: 6,
        ..EmulatorConfig::default()
    })
    .spawn("127.0.0.1:0")
    .await
    .expect("emulator starts");
    {
        let shared = running.shared();
        let now = shared.clock.now();
        let mut world = shared.world();
        world.ensure_user(ALICE, None).expect("user");
        let opts = WriteOptions {
            conference_data_version: 1,
            if_match: None,
        };
        let mut rng = Rng(0x5eed_cafe);
        for i in 0..n {
            world
                .insert_event(now, ALICE, event(&mut rng, i), WriteKind::Insert, &opts)
                .expect("event");
        }
    }
    let base = running.base_url().to_owned();
    println!("events.list of {n} events (pages of 2,500), response body bytes per event:");
    let mut plain = 0.0;
    for (label, fields, gzip, level) in [
        ("plain", None, false, 6),
        ("fields mask", Some(EVENTS_SYNC_FIELDS), false, 6),
        ("gzip", None, true, 6),
        ("fields mask + gzip", Some(EVENTS_SYNC_FIELDS), true, 6),
        ("gzip -1", None, true, 1),
        ("fields mask + gzip -1", Some(EVENTS_SYNC_FIELDS), true, 1),
    ] {
        running.shared().config.lock().expect("config").gzip_level = level;
        let (bytes, events, elapsed) = wire_bytes(&base, fields, gzip).await;
        assert_eq!(events, n, "{label}: every event listed");
        let per_event = bytes as f64 / n as f64;
        if plain == 0.0 {
            plain = per_event;
        }
        println!(
            "  {label:<22} {per_event:>8.1} B/event  ({:>5.1}% of plain, {bytes} bytes; {:.0} ms)",
            100.0 * per_event / plain,
            elapsed.as_secs_f64() * 1000.0
        );
    }
    println!("mask: {EVENTS_SYNC_FIELDS}");
    running.shutdown();
}
