//! `confsync serve` on Postgres, two processes on one store: the second waits as a standby
//! (it does not serve while the first holds the store), the first is killed with SIGKILL, and
//! the standby takes over: it serves, and a change made after the death reaches the meeting.
//! The time from the kill to the standby serving is printed. Skipped where no Postgres is
//! reachable and none is required (see `confsync_store::testing`).

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

/// Starts `confsync serve`; the receiver gets its "serving on" line when (if) it serves.
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

#[tokio::test]
async fn a_standby_serve_takes_over_when_the_holder_is_killed() {
    let Some(url) = confsync_store::testing::postgres_schema_url().await else {
        return;
    };
    let emulator = Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("confsync-standby-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("confsync.toml");
    std::fs::write(
        &config,
        format!(
            "[google]\nbase_url = \"{}\"\n[store]\nurl = \"{url}\"\n[serve]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 0\n",
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
    let base = first_up
        .recv_timeout(Duration::from_secs(30))
        .expect("the first process serves");
    let (_standby, standby_up) = serve(&config);
    assert!(
        standby_up.recv_timeout(Duration::from_secs(2)).is_err(),
        "the standby does not serve while the first process holds the store"
    );

    // A conference through the first process, and its event saved in Calendar.
    let http = reqwest::Client::new();
    let conference: Value = http
        .post(format!("{base}v1/conferences"))
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
    assert!(
        saved.status().is_success(),
        "{conference} {:?}",
        saved.text().await
    );

    // The first process dies without a word; the event is renamed meanwhile.
    first.0.kill().unwrap();
    let killed = Instant::now();
    first.0.wait().unwrap();
    let renamed = http
        .patch(format!("{events}/failoverevent01"))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&json!({"summary": "After"}))
        .send()
        .await
        .unwrap();
    assert!(renamed.status().is_success());

    let standby = standby_up
        .recv_timeout(Duration::from_secs(30))
        .expect("the standby takes over");
    let failover = killed.elapsed();
    eprintln!("failover: the standby served {failover:?} after the holder was killed");
    let sync = http
        .post(format!("{standby}v1/calendars/{ALICE}/sync"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 202);
    let store = Store::open(&url).await.unwrap();
    let mut title = String::new();
    for _ in 0..400 {
        if let Some(meeting) = store.meeting(&meeting_id).await.unwrap() {
            let spec: Value = serde_json::from_str(&meeting.spec_json).unwrap();
            title = spec["title"].as_str().unwrap_or_default().to_owned();
            if title == "After" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        title, "After",
        "the change made after the death reached the meeting"
    );
    std::fs::remove_dir_all(&dir).ok();
}
