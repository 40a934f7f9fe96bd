//! `confsync serve` on Postgres, two workers on one store at the same time: both serve, a
//! conference created through one is synced by either, and when the worker that acknowledged a
//! change is killed with SIGKILL before it synced, the other one picks the change up from the
//! store (its poll finds the calendar dirty and not leased) and it reaches the meeting. The
//! time from the kill to the change landing is printed. Skipped where no Postgres is reachable
//! and none is required (see `confsync_store::testing`). The process-level test with a load
//! balancer, three workers and random kills is `ha.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confsync_emulator::Emulator;
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `confsync serve`; the receiver gets its "serving on" line.
fn serve(config: &std::path::Path) -> (Serving, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confsync"))
        .args(["serve", "--config"])
        .arg(config)
        .env("CONFSYNC_GOOGLE_TOKEN", format!("dev:{ALICE}"))
        .env_remove("CONFSYNC_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(base) = line.trim().strip_prefix("confsync serving on ") {
                let _ = tx.send(base.to_owned());
            }
        }
    });
    (Serving(child), rx)
}

/// The meeting's title once it is `want` (polled up to `limit`), else the last one seen.
async fn title_becomes(store: &Store, meeting_id: &str, want: &str, limit: Duration) -> String {
    let started = Instant::now();
    let mut title = String::new();
    while started.elapsed() < limit {
        if let Some(meeting) = store.meeting(meeting_id).await.unwrap() {
            let spec: Value = serde_json::from_str(&meeting.spec_json).unwrap();
            title = spec["title"].as_str().unwrap_or_default().to_owned();
            if title == want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    title
}

#[tokio::test]
async fn a_change_acknowledged_by_a_worker_that_dies_is_synced_by_another() {
    let Some(url) = confsync_store::testing::postgres_schema_url().await else {
        return;
    };
    let emulator = Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("confsync-workers-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("confsync.toml");
    // A long debounce, so the first worker can be killed after acknowledging a change and
    // before syncing it; a short poll and lease, so the other finds it soon.
    std::fs::write(
        &config,
        format!(
            "[google]\nbase_url = \"{}\"\n[store]\nurl = \"{url}\"\n[serve]\nlisten = \"127.0.0.1:0\"\n\
             debounce_ms = 1500\npoll_ms = 300\nlease_ms = 3000\n",
            emulator.base_url(),
        ),
    )
    .unwrap();
    let key = Command::new(env!("CARGO_BIN_EXE_confsync"))
        .args(["apikey", "create", "--name", "addon", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(key.status.success(), "{key:?}");
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();

    let (mut first, first_up) = serve(&config);
    let (_second, second_up) = serve(&config);
    let first_base = first_up
        .recv_timeout(Duration::from_secs(30))
        .expect("the first worker serves");
    let second_base = second_up
        .recv_timeout(Duration::from_secs(30))
        .expect("the second worker serves at the same time");

    // A conference through the second worker, its event saved in Calendar, synced.
    let http = reqwest::Client::new();
    let conference: Value = http
        .post(format!("{second_base}v1/conferences"))
        .bearer_auth(&key)
        .json(&json!({"calendarId": ALICE, "eventId": "failoverevent01"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let meeting_id = conference["conferenceId"].as_str().unwrap().to_owned();
    let events = format!(
        "{}calendar/v3/calendars/primary/events",
        emulator.base_url()
    );
    let saved = http
        .post(format!("{events}?conferenceDataVersion=1"))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&json!({"id": "failoverevent01", "summary": "Before", "start": {"dateTime": "2026-12-10T10:00:00Z"}, "end": {"dateTime": "2026-12-10T11:00:00Z"}, "conferenceData": conference}))
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success(), "{:?}", saved.text().await);
    let store = Store::open(&url).await.unwrap();
    let sync = http
        .post(format!("{first_base}v1/calendars/{ALICE}/sync"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 202);
    assert_eq!(
        title_becomes(&store, &meeting_id, "Before", Duration::from_secs(20)).await,
        "Before"
    );

    // The event is renamed; the first worker acknowledges the trigger and dies before its
    // debounce ends.
    let renamed = http
        .patch(format!("{events}/failoverevent01"))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&json!({"summary": "After"}))
        .send()
        .await
        .unwrap();
    assert!(renamed.status().is_success());
    let sync = http
        .post(format!("{first_base}v1/calendars/{ALICE}/sync"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 202);
    first.0.kill().unwrap();
    let killed = Instant::now();
    first.0.wait().unwrap();
    let title = title_becomes(&store, &meeting_id, "After", Duration::from_secs(30)).await;
    let resumed = killed.elapsed();
    assert_eq!(
        title, "After",
        "the change acknowledged by the dead worker reached the meeting"
    );
    eprintln!(
        "the change acknowledged by the killed worker landed {resumed:?} after the kill (debounce 1.5 s, poll 0.3 s)"
    );
    std::fs::remove_dir_all(&dir).ok();
}
