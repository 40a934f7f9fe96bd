//! `confsync demo`: the whole service on embedded defaults, in one process.
//!
//! It starts the Calendar v3 emulator on loopback and the confsync service (SQLite in a data
//! directory, the built-in local provider, push channels to its own webhook), creates a user,
//! and adds conferences the way the Apps Script add-on does: `POST /v1/conferences` before the
//! event is saved, then the event is saved with the answered conferenceData. Then it plays a
//! scenario through real HTTP (a user editing in Calendar); every change reaches confsync as a
//! push notification, and each step prints what confsync did.
//!
//! The status page stays up until Ctrl-C; with `--exit` the demo checks that every meeting
//! matches its event (and that the no-op steps made no provider call) and exits 0 or 1.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use confsync_core::model::{MeetingSpec, Snapshot};
use confsync_core::plan::Recognizer;
use confsync_core::session::{ListRequest, Page};
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::calendar::{CalendarApi, CalendarError, WatchedChannel};
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::local::LocalProvider;
use confsync_service::metrics::{Counters, Metrics, TimedProvider};
use confsync_service::{ChannelConfig, Channels, Scheduler, SchedulerConfig, Service};
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Exit after the scenario (0 when every meeting matches its event) instead of serving.
    #[arg(long)]
    exit: bool,
    /// Where the SQLite store goes.
    #[arg(long, default_value = "confsync-data/demo")]
    data_dir: PathBuf,
    /// Where the service (status page, add-on API, webhook) listens; a taken port falls back
    /// to any free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
}

/// The calendar as the engine sees it, with one scripted race: the next write-back's PATCH is
/// preceded by a real edit of the same event (as if the user saved it at that moment), so the
/// PATCH meets a genuine 412 from the emulator.
struct RacingCalendar {
    inner: GoogleCalendar,
    http: reqwest::Client,
    base: String,
    edit_before_next_patch: Mutex<Option<(String, Value)>>,
}

impl CalendarApi for RacingCalendar {
    fn list<'a>(
        &'a self,
        calendar_id: &'a str,
        request: &'a ListRequest,
    ) -> BoxFuture<'a, Result<Page, CalendarError>> {
        self.inner.list(calendar_id, request)
    }

    fn get<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, CalendarError>> {
        self.inner.get(calendar_id, event_id)
    }

    fn patch<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        body: &'a Value,
        if_match: &'a str,
    ) -> BoxFuture<'a, Result<Value, CalendarError>> {
        Box::pin(async move {
            let edit = self
                .edit_before_next_patch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((edited, user_edit)) = edit {
                let _ = self
                    .http
                    .patch(format!(
                        "{}calendar/v3/calendars/primary/events/{edited}",
                        self.base
                    ))
                    .bearer_auth(format!("dev:{ALICE}"))
                    .json(&user_edit)
                    .send()
                    .await;
            }
            self.inner
                .patch(calendar_id, event_id, body, if_match)
                .await
        })
    }

    fn watch<'a>(
        &'a self,
        calendar_id: &'a str,
        channel_id: &'a str,
        address: &'a str,
        token: &'a str,
        ttl_seconds: Option<u64>,
    ) -> BoxFuture<'a, Result<WatchedChannel, CalendarError>> {
        self.inner
            .watch(calendar_id, channel_id, address, token, ttl_seconds)
    }

    fn stop_channel<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
        channel_id: &'a str,
        resource_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CalendarError>> {
        self.inner
            .stop_channel(calendar_id, channel_id, resource_id)
    }
}

struct Demo {
    http: reqwest::Client,
    /// The emulator's base URL.
    base: String,
    /// The service's base URL.
    service: String,
    api_key: String,
    store: Store,
    local: Arc<LocalProvider>,
    calendar: Arc<RacingCalendar>,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    step: u32,
    /// What the scenario itself found wrong (a no-op step that called the provider, ...).
    problems: Vec<String>,
    next_event: u32,
}

impl Demo {
    /// A Calendar API call as `user` (the emulator's dev tokens).
    async fn api(
        &self,
        user: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}calendar/v3/{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(format!("dev:{user}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{url}: {status} {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// What the add-on does when Alice adds our conference to a new event: it asks confsync
    /// for the conference (the event is not saved yet), and Calendar saves the event with the
    /// answered conferenceData.
    async fn add_conference(&mut self, mut event: Value) -> anyhow::Result<(String, String)> {
        self.next_event += 1;
        // Calendar's event ids are base32hex; the add-on gets the id of the event being edited.
        let event_id = format!("demoevent{:04}", self.next_event);
        let response = self
            .http
            .post(format!("{}v1/conferences", self.service))
            .bearer_auth(&self.api_key)
            .json(&json!({"calendarId": ALICE, "eventId": event_id, "requestId": format!("demo-{event_id}")}))
            .send()
            .await?;
        let status = response.status();
        let conference: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST /v1/conferences: {status} {conference}");
        }
        let meeting_id = conference["conferenceId"]
            .as_str()
            .context("conferenceId")?
            .to_owned();
        event["id"] = json!(event_id);
        event["conferenceData"] = conference;
        self.api(
            ALICE,
            reqwest::Method::POST,
            "calendars/primary/events?conferenceDataVersion=1",
            Some(event),
        )
        .await?;
        Ok((event_id, meeting_id))
    }

    /// Waits until confsync ran at least one sync after `before` and has nothing left to do.
    async fn settle(&self, before: &Counters) -> anyhow::Result<Counters> {
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = self.metrics.snapshot();
            let idle = self
                .scheduler
                .activity()
                .iter()
                .all(|a| !a.pending && !a.running);
            let depth = self.store.outbox_depth().await?;
            if now.sync_runs > before.sync_runs && idle && depth == 0 && self.caught_up().await? {
                return Ok(now);
            }
        }
        bail!("confsync did not settle within 10 s")
    }

    /// Whether confsync has seen every change in Alice's calendar: a listing from its stored
    /// sync token is empty. Without this, a sync that ran before the step's push notification
    /// arrived (push is asynchronous) would pass for the step's sync.
    async fn caught_up(&self) -> anyhow::Result<bool> {
        let Some(token) = self.store.calendar(ALICE).await?.and_then(|c| c.sync_token) else {
            return Ok(false);
        };
        let response = self
            .http
            .get(format!("{}calendar/v3/calendars/primary/events", self.base))
            .query(&[("syncToken", token.as_str())])
            .bearer_auth(format!("dev:{ALICE}"))
            .send()
            .await?;
        if !response.status().is_success() {
            return Ok(false); // 410: the token expired and confsync has not full-synced yet
        }
        let page: Value = response.json().await?;
        Ok(page["items"]
            .as_array()
            .is_some_and(|items| items.is_empty())
            && page.get("nextPageToken").is_none())
    }

    /// Plays one step: `edit` is what the user does; then prints what confsync did.
    async fn step(
        &mut self,
        what: &str,
        expect_no_provider_call: bool,
        edit: impl AsyncFnOnce(&Demo) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.step += 1;
        let before = self.metrics.snapshot();
        edit(self).await?;
        let after = self.settle(&before).await?;
        let delta = |a: &std::collections::BTreeMap<String, u64>,
                     b: &std::collections::BTreeMap<String, u64>| {
            a.iter()
                .filter_map(|(k, n)| {
                    let d = n - b.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| format!("{k} x{d}"))
                })
                .collect::<Vec<_>>()
        };
        let calls = delta(&after.provider, &before.provider);
        let writes = after.actions_done.get("write_back").copied().unwrap_or(0)
            - before.actions_done.get("write_back").copied().unwrap_or(0);
        let full = after.full_syncs > before.full_syncs;
        println!("{:>2}. {what}", self.step);
        println!(
            "    confsync: push notification -> {} sync -> {}{}",
            if full { "full" } else { "incremental" },
            if calls.is_empty() {
                "no provider call".to_owned()
            } else {
                format!("provider: {}", calls.join(", "))
            },
            if writes > 0 {
                format!("; join link written back into the event x{writes}")
            } else {
                String::new()
            }
        );
        if expect_no_provider_call && !calls.is_empty() {
            self.problems.push(format!(
                "step {}: expected no provider call, saw {}",
                self.step,
                calls.join(", ")
            ));
        }
        Ok(())
    }

    async fn show(&self, meeting_id: &str) -> anyhow::Result<()> {
        let m = self.store.meeting(meeting_id).await?.context("meeting")?;
        if m.deleted {
            println!("    meeting {meeting_id}: deleted");
            return Ok(());
        }
        let spec: MeetingSpec = serde_json::from_str(&m.spec_json)?;
        println!(
            "    meeting {meeting_id}: \"{}\" {} -> {} (zone {}), guests [{}]{}",
            spec.title,
            local(&spec.start),
            local(&spec.end),
            spec.time_zone.as_deref().unwrap_or("UTC"),
            spec.attendees.join(", "),
            occurrences(&m.occurrences_json)
        );
        Ok(())
    }

    /// Every meeting matches its event (live events) or is deleted (cancelled ones), and every
    /// live event shows its meeting's current join link.
    async fn verify(&self) -> anyhow::Result<Vec<String>> {
        let mut problems = self.problems.clone();
        for meeting in self.store.meetings().await? {
            let link = self
                .store
                .link(&meeting.meeting_id)
                .await?
                .context("link")?;
            let event = self
                .api(
                    ALICE,
                    reqwest::Method::GET,
                    &format!("calendars/primary/events/{}", link.event_id),
                    None,
                )
                .await?;
            let snapshot = Snapshot::from_json(&event)?;
            let live = !snapshot.is_cancelled() && snapshot.conference.is_some();
            let spec: MeetingSpec = serde_json::from_str(&meeting.spec_json)?;
            match (live, meeting.deleted) {
                (true, false) if snapshot.spec.as_ref() != Some(&spec) => problems.push(format!(
                    "{} does not match its event:\n    event   {:?}\n    meeting {spec:?}",
                    meeting.meeting_id, snapshot.spec
                )),
                (true, false) => {
                    let shown = snapshot
                        .conference
                        .as_ref()
                        .and_then(|c| c.join_uri.clone());
                    if shown.as_deref() != Some(meeting.join_url.as_str()) {
                        problems.push(format!(
                            "{}: the event shows {shown:?}, the meeting's link is {}",
                            meeting.meeting_id, meeting.join_url
                        ));
                    }
                }
                (true, true) => problems.push(format!(
                    "{} was deleted but its event lives",
                    meeting.meeting_id
                )),
                (false, false) => problems.push(format!(
                    "{} lives but its event is cancelled",
                    meeting.meeting_id
                )),
                _ => {}
            }
        }
        Ok(problems)
    }
}

/// The local provider's occurrence exceptions, readable: `; occurrence 2026-12-12T13:00:00Z
/// moved to 15:00-16:00Z; occurrence ... cancelled`.
/// A meeting time as the demo's users write them (UTC+01:00, Berlin's winter offset, which the
/// demo's events use), with the UTC instant beside it: "2026-12-11 10:00+01:00 (09:00Z)".
fn local(when: &confsync_core::model::When) -> String {
    match when {
        confsync_core::model::When::At(t) => {
            let offset = chrono::FixedOffset::east_opt(3600).expect("a valid offset");
            format!(
                "{} ({}Z)",
                t.with_timezone(&offset).format("%Y-%m-%d %H:%M%:z"),
                t.format("%H:%M")
            )
        }
        other => other.key(),
    }
}

fn occurrences(json: &str) -> String {
    let parsed: confsync_providers::local::Occurrences =
        serde_json::from_str(json).unwrap_or_default();
    parsed
        .iter()
        .map(|(at, change)| match change {
            Some((start, end, _)) => format!(
                "; occurrence {} moved to {} -> {}",
                confsync_core::model::When::from_key(at).map_or_else(|| at.clone(), |w| local(&w)),
                local(start),
                local(end)
            ),
            None => format!("; occurrence {at} cancelled"),
        })
        .collect()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let emulator = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await?;
    let base = emulator.base_url().to_owned();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // A fresh store each run; it stays in the data directory afterwards for inspection.
    let db = args.data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = Store::open(&db.to_string_lossy()).await?;
    let api_key = confsync_service::new_api_key();
    store
        .api_key_create(
            "demo add-on",
            &confsync_service::hash_api_key(&api_key),
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;

    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "note: {} is not available ({e}); using a free port",
                args.listen
            );
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let service_url = format!("http://{}/", listener.local_addr()?);

    let metrics = Arc::new(Metrics::default());
    let local = Arc::new(LocalProvider::new(store.clone(), &service_url));
    let provider = Arc::new(TimedProvider::new(local.clone(), metrics.clone()));
    let calendar = Arc::new(RacingCalendar {
        inner: GoogleCalendar {
            client: Client::new(
                &base,
                Arc::new(StaticToken(format!("dev:{ALICE}"))),
                RetryPolicy::default(),
            )?,
        },
        http: reqwest::Client::new(),
        base: base.clone(),
        edit_before_next_patch: Mutex::new(None),
    });
    let engine = Arc::new(Engine::new(
        store.clone(),
        calendar.clone(),
        provider.clone(),
        EngineConfig {
            recognizer: Recognizer {
                solution_names: vec!["confsync".into()],
                parameter_key: Some(confsync_engine::conference::DEFAULT_PARAMETER_KEY.into()),
            },
            ..EngineConfig::default()
        },
    ));
    let scheduler = Scheduler::start_with_metrics(
        engine,
        SchedulerConfig {
            debounce: Duration::from_millis(100),
            workers: 2,
            ..SchedulerConfig::default()
        },
        metrics.clone(),
    );
    scheduler.start_sweep(Duration::from_secs(15 * 60));
    let channels = Channels::new(
        calendar.clone(),
        store.clone(),
        scheduler.clone(),
        ChannelConfig::new(service_url.clone()),
    );
    channels.start_renewal();
    let service = Arc::new(Service {
        store: store.clone(),
        provider,
        scheduler: scheduler.clone(),
        create_deadline: std::time::Duration::from_secs(10),
        channels: Some(channels),
        oauth: None,
        public_url: Some(service_url.clone()),
        budgets: None,
        host_key: None,
        identity: None,
    });
    let app = confsync_service::router(service);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut demo = Demo {
        http: reqwest::Client::new(),
        base: base.clone(),
        service: service_url.clone(),
        api_key,
        store,
        local,
        calendar,
        scheduler,
        metrics,
        step: 0,
        problems: Vec::new(),
        next_event: 0,
    };
    println!("confsync demo");
    println!("  Calendar v3 emulator: {base}");
    println!(
        "  confsync service:     {service_url} (store {})",
        db.display()
    );
    demo.api(BOB, reqwest::Method::GET, "calendars/primary", None)
        .await?; // Bob exists

    let day = (chrono::Utc::now() + chrono::Duration::days(7)).date_naive();
    let at = |h: u32| format!("{day}T{h:02}:00:00+01:00");
    let event = |summary: &str, h: u32| json!({"summary": summary, "start": {"dateTime": at(h), "timeZone": "Europe/Berlin"}, "end": {"dateTime": at(h + 1), "timeZone": "Europe/Berlin"}});

    // The add-on creates three conferences; the first one starts syncing Alice's calendar (a
    // push channel and a first full sync).
    let before = demo.metrics.snapshot();
    let (planning, m_planning) = demo.add_conference(event("Planning", 9)).await?;
    let (review, m_review) = demo.add_conference(event("Design review", 11)).await?;
    let mut weekly = event("Weekly sync", 14);
    weekly["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=6"]);
    let (series, m_series) = demo.add_conference(weekly).await?;
    demo.settle(&before).await?;
    println!(
        " 0. The add-on created 3 conferences through POST /v1/conferences; confsync opened a push channel for {ALICE} and synced it"
    );
    demo.show(&m_planning).await?;

    let path = |id: &str| format!("calendars/primary/events/{id}");
    let patch = reqwest::Method::PATCH;
    let p = path(&planning);
    demo.step("Alice moves \"Planning\" to 10:00", false, async |d| {
        d.api(ALICE, patch.clone(), &p, Some(json!({"start": {"dateTime": at(10), "timeZone": "Europe/Berlin"}, "end": {"dateTime": at(11), "timeZone": "Europe/Berlin"}}))).await.map(|_| ())
    })
    .await?;
    demo.show(&m_planning).await?;
    demo.step("Alice renames it \"Planning Q1\"", false, async |d| {
        d.api(
            ALICE,
            patch.clone(),
            &p,
            Some(json!({"summary": "Planning Q1"})),
        )
        .await
        .map(|_| ())
    })
    .await?;
    demo.show(&m_planning).await?;
    demo.step("Alice invites bob@example.com", false, async |d| {
        d.api(
            ALICE,
            patch.clone(),
            &p,
            Some(json!({"attendees": [{"email": BOB}]})),
        )
        .await
        .map(|_| ())
    })
    .await?;
    demo.show(&m_planning).await?;
    demo.step(
        "Alice only changes the colour (no provider call expected)",
        true,
        async |d| {
            d.api(ALICE, patch.clone(), &p, Some(json!({"colorId": "5"})))
                .await
                .map(|_| ())
        },
    )
    .await?;
    demo.step(
        "Bob accepts the invitation (no provider call expected)",
        true,
        async |d| {
            d.api(
                BOB,
                patch.clone(),
                &p,
                Some(json!({"attendees": [{"email": BOB, "responseStatus": "accepted"}]})),
            )
            .await
            .map(|_| ())
        },
    )
    .await?;

    let instances = demo
        .api(
            ALICE,
            reqwest::Method::GET,
            &format!("calendars/primary/events/{series}/instances"),
            None,
        )
        .await?;
    let second = instances["items"][1]["id"]
        .as_str()
        .context("second instance")?
        .to_owned();
    let third = instances["items"][2]["id"]
        .as_str()
        .context("third instance")?
        .to_owned();
    let moved_day = instances["items"][1]["start"]["dateTime"]
        .as_str()
        .context("instance start")?[..10]
        .to_owned();
    demo.step(
        "Alice moves one instance of \"Weekly sync\" to 16:00",
        false,
        async |d| {
            d.api(ALICE, patch.clone(), &path(&second), Some(json!({"start": {"dateTime": format!("{moved_day}T16:00:00+01:00")}, "end": {"dateTime": format!("{moved_day}T17:00:00+01:00")}}))).await.map(|_| ())
        },
    )
    .await?;
    demo.step("Alice cancels the next instance", false, async |d| {
        d.api(ALICE, reqwest::Method::DELETE, &path(&third), None)
            .await
            .map(|_| ())
    })
    .await?;
    demo.show(&m_series).await?;
    demo.step("Alice cancels \"Design review\"", false, async |d| {
        d.api(ALICE, reqwest::Method::DELETE, &path(&review), None)
            .await
            .map(|_| ())
    })
    .await?;
    demo.show(&m_review).await?;
    demo.step(
        "Google expires the sync token (410) while Alice edits the agenda",
        false,
        async |d| {
            d.http
                .post(format!(
                    "{}emulator/calendars/{ALICE}/expire-sync-tokens",
                    d.base
                ))
                .send()
                .await?
                .error_for_status()?;
            d.api(
                ALICE,
                patch.clone(),
                &p,
                Some(json!({"description": "Agenda: budget"})),
            )
            .await
            .map(|_| ())
        },
    )
    .await?;
    demo.show(&m_planning).await?;

    // The host resets the meeting's link at the provider; Alice renames the event, and while
    // confsync writes the new link into it she edits the event again (a genuine 412).
    let new_link = demo.local.reset_join_link(&m_planning).await?;
    *demo
        .calendar
        .edit_before_next_patch
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some((
        planning.clone(),
        json!({"description": "Agenda: budget, hiring"}),
    ));
    demo.step(
        "The host resets the meeting link; Alice renames the event and edits it again while confsync writes the new link back",
        false,
        async |d| {
            d.api(ALICE, patch.clone(), &p, Some(json!({"summary": "Planning Q1 (final)"})))
                .await
                .map(|_| ())
        },
    )
    .await?;
    let event = demo.api(ALICE, reqwest::Method::GET, &p, None).await?;
    println!(
        "    event: \"{}\", description \"{}\" (Alice's concurrent edit kept), join link {}",
        event["summary"].as_str().unwrap_or(""),
        event["description"].as_str().unwrap_or(""),
        if event["conferenceData"]["entryPoints"][0]["uri"] == json!(new_link) {
            "updated to the new one"
        } else {
            "NOT updated"
        }
    );
    if event["description"] != json!("Agenda: budget, hiring") {
        demo.problems
            .push("the user's edit during the write-back was lost".into());
    }

    let problems = demo.verify().await?;
    if problems.is_empty() {
        println!("check: every meeting matches its event");
    } else {
        println!("check failed:\n  {}", problems.join("\n  "));
    }
    if args.exit {
        server.abort();
        emulator.shutdown();
        if !problems.is_empty() {
            bail!("{} problems found", problems.len());
        }
        return Ok(());
    }
    println!("Status page: {service_url}   (Ctrl-C to stop)");
    tokio::signal::ctrl_c().await?;
    server.abort();
    emulator.shutdown();
    Ok(())
}
