//! `confsync demo`: the sync engine end to end on embedded defaults.
//!
//! One process starts the Calendar v3 emulator on loopback, opens a SQLite store in a data
//! directory and uses the built-in local provider. Conferences are created the way the add-on
//! does it (meeting at the provider, conference data on the event, a link in the store); then a
//! user edits events through the Calendar REST API and confsync syncs over HTTP after each step,
//! printing what it did to the meetings.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use confsync_core::model::{MeetingSpec, Snapshot};
use confsync_core::plan::{Link, Recognizer};
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::ConferenceProvider;
use confsync_providers::local::LocalProvider;
use confsync_store::{PlannedChange, Store};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Exit after the scenario (0 when every meeting matches its event) instead of serving.
    #[arg(long)]
    exit: bool,
    /// Where the SQLite store goes.
    #[arg(long, default_value = "confsync-data/demo")]
    data_dir: PathBuf,
}

struct Demo {
    http: reqwest::Client,
    base: String,
    engine: Engine,
    store: Store,
    provider: Arc<LocalProvider>,
    step: u32,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Demo {
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

    /// What the add-on does when a user adds our conference to an event.
    async fn add_conference(&self, event: Value) -> anyhow::Result<(String, String)> {
        // The add-on sees the event as the user is creating it (it may not be saved yet).
        let draft = json!({"id": "draft", "summary": event["summary"], "start": event["start"], "end": event["end"],
            "recurrence": event.get("recurrence").cloned().unwrap_or(json!([])), "organizer": {"email": ALICE}});
        let spec = Snapshot::from_json(&draft)?.spec.context("spec")?;
        let key = format!("demo-{}", event["summary"].as_str().unwrap_or(""));
        let meeting = self.provider.create(&spec, &key).await?;
        let mut event = event;
        event["conferenceData"] = json!({
            "conferenceId": meeting.meeting_id,
            "conferenceSolution": {"key": {"type": "addOn"}, "name": "confsync"},
            "entryPoints": [{"entryPointType": "video", "uri": meeting.join_url, "label": "Join with confsync"}],
            "parameters": {"addOnParameters": {"parameters": {"confsyncConferenceId": meeting.meeting_id}}},
        });
        let created = self
            .api(
                ALICE,
                reqwest::Method::POST,
                "calendars/primary/events?conferenceDataVersion=1",
                Some(event),
            )
            .await?;
        let id = created["id"].as_str().context("event id")?.to_owned();
        let snapshot = Snapshot::from_json(&created)?;
        let link = Link {
            conference_id: meeting.meeting_id.clone(),
            provider: "local".into(),
            calendar_id: ALICE.into(),
            event_id: id.clone(),
            // What the meeting was made with: the first sync updates it if the saved event differs.
            spec,
            last_etag_seen: snapshot.etag,
            last_etag_written: None,
            occurrences: Default::default(),
            deleted: false,
            join_url: Some(meeting.join_url),
        };
        let change = PlannedChange {
            link,
            actions: vec![],
            supersede_deletes: false,
            not_before_ms: now_ms(),
        };
        self.store
            .commit_page(ALICE, &[change], &[], None, now_ms())
            .await?;
        Ok((id, meeting.meeting_id))
    }

    /// Syncs Alice's calendar, runs the outbox and prints what happened.
    async fn sync(&mut self, what: &str) -> anyhow::Result<()> {
        self.step += 1;
        let summary = self.engine.sync(ALICE, false, now_ms()).await?;
        let drained = self.engine.drain(now_ms()).await?;
        let done: Vec<String> = drained
            .done_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "{:>2}. {what}\n    confsync: {} sync, {} changed events listed, provider calls: {}{}",
            self.step,
            if summary.full { "full" } else { "incremental" },
            summary.events,
            drained.provider_calls,
            if done.is_empty() {
                String::new()
            } else {
                format!(" ({})", done.join(", "))
            }
        );
        Ok(())
    }

    async fn meeting_spec(&self, meeting_id: &str) -> anyhow::Result<(MeetingSpec, bool, String)> {
        let m = self.store.meeting(meeting_id).await?.context("meeting")?;
        Ok((
            serde_json::from_str(&m.spec_json)?,
            m.deleted,
            m.occurrences_json,
        ))
    }

    async fn show(&self, meeting_id: &str) -> anyhow::Result<()> {
        let (spec, deleted, occurrences) = self.meeting_spec(meeting_id).await?;
        if deleted {
            println!("    meeting {meeting_id}: deleted");
        } else {
            let when = |w: &confsync_core::model::When| w.key();
            println!(
                "    meeting {meeting_id}: \"{}\" {} -> {} (UTC), guests [{}]{}",
                spec.title,
                when(&spec.start),
                when(&spec.end),
                spec.attendees.join(", "),
                if occurrences.len() > 2 {
                    format!(", occurrence exceptions {occurrences}")
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    }

    /// Every meeting matches its event (live events) or is deleted (cancelled ones).
    async fn verify(&self) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
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

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let running = confsync_emulator::Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await?;
    let base = running.base_url().to_owned();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // A fresh store each run; it stays in the data directory afterwards for inspection.
    let db = args.data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = Store::open(&db.to_string_lossy()).await?;
    let provider = Arc::new(LocalProvider::new(store.clone(), "http://127.0.0.1:8080/"));
    let client = Client::new(
        &base,
        Arc::new(StaticToken(format!("dev:{ALICE}"))),
        RetryPolicy::default(),
    )?;
    let config = EngineConfig {
        recognizer: Recognizer {
            solution_names: vec!["confsync".into()],
            parameter_key: Some("confsyncConferenceId".into()),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        store.clone(),
        Arc::new(GoogleCalendar { client }),
        provider.clone(),
        config,
    );
    let mut demo = Demo {
        http: reqwest::Client::new(),
        base: base.clone(),
        engine,
        store,
        provider,
        step: 0,
    };
    println!(
        "confsync demo: Calendar v3 emulator at {base}, store {}",
        db.display()
    );
    demo.api(BOB, reqwest::Method::GET, "calendars/primary", None)
        .await?; // Bob exists

    let day = (chrono::Utc::now() + chrono::Duration::days(7)).date_naive();
    let at = |h: u32| format!("{day}T{h:02}:00:00+01:00");
    let event = |summary: &str, h: u32| json!({"summary": summary, "start": {"dateTime": at(h), "timeZone": "Europe/Berlin"}, "end": {"dateTime": at(h + 1), "timeZone": "Europe/Berlin"}});
    let (planning, m_planning) = demo.add_conference(event("Planning", 9)).await?;
    let (review, m_review) = demo.add_conference(event("Design review", 11)).await?;
    let mut weekly = event("Weekly sync", 14);
    weekly["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=6"]);
    let (series, m_series) = demo.add_conference(weekly).await?;
    demo.sync("first sync of alice@example.com (three conferences created by the add-on)")
        .await?;

    let path = |id: &str| format!("calendars/primary/events/{id}");
    let patch = reqwest::Method::PATCH;
    demo.api(ALICE, patch.clone(), &path(&planning), Some(json!({"start": {"dateTime": at(10), "timeZone": "Europe/Berlin"}, "end": {"dateTime": at(11), "timeZone": "Europe/Berlin"}}))).await?;
    demo.sync("Alice moves \"Planning\" to 10:00").await?;
    demo.show(&m_planning).await?;
    demo.api(
        ALICE,
        patch.clone(),
        &path(&planning),
        Some(json!({"summary": "Planning Q1"})),
    )
    .await?;
    demo.sync("Alice renames it \"Planning Q1\"").await?;
    demo.show(&m_planning).await?;
    demo.api(
        ALICE,
        patch.clone(),
        &path(&planning),
        Some(json!({"attendees": [{"email": BOB}]})),
    )
    .await?;
    demo.sync("Alice invites bob@example.com").await?;
    demo.show(&m_planning).await?;
    demo.api(
        ALICE,
        patch.clone(),
        &path(&planning),
        Some(json!({"colorId": "5"})),
    )
    .await?;
    demo.sync("Alice only changes the colour (no provider call expected)")
        .await?;
    demo.api(
        BOB,
        patch.clone(),
        &path(&planning),
        Some(json!({"attendees": [{"email": BOB, "responseStatus": "accepted"}]})),
    )
    .await?;
    demo.sync("Bob accepts the invitation (no provider call expected)")
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
    demo.api(ALICE, patch.clone(), &path(&second), Some(json!({"start": {"dateTime": format!("{moved_day}T16:00:00+01:00")}, "end": {"dateTime": format!("{moved_day}T17:00:00+01:00")}}))).await?;
    demo.sync("Alice moves one instance of \"Weekly sync\" to 16:00")
        .await?;
    demo.api(ALICE, reqwest::Method::DELETE, &path(&third), None)
        .await?;
    demo.sync("Alice cancels the next instance").await?;
    demo.show(&m_series).await?;
    demo.api(ALICE, reqwest::Method::DELETE, &path(&review), None)
        .await?;
    demo.sync("Alice cancels \"Design review\"").await?;
    demo.show(&m_review).await?;
    demo.http
        .post(format!(
            "{base}emulator/calendars/{ALICE}/expire-sync-tokens"
        ))
        .send()
        .await?
        .error_for_status()?;
    demo.api(
        ALICE,
        patch.clone(),
        &path(&planning),
        Some(json!({"description": "Agenda: budget"})),
    )
    .await?;
    demo.sync("Google expires the sync token (410) while Alice edits the agenda")
        .await?;
    demo.show(&m_planning).await?;

    let problems = demo.verify().await?;
    if problems.is_empty() {
        println!("check: every meeting matches its event");
    } else {
        println!("check failed:\n  {}", problems.join("\n  "));
    }
    if args.exit {
        running.shutdown();
        if !problems.is_empty() {
            bail!("{} meetings do not match their events", problems.len());
        }
        return Ok(());
    }
    println!(
        "The emulator keeps serving at {base} (Ctrl-C to stop). The status page arrives with `confsync serve`."
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown();
    Ok(())
}
