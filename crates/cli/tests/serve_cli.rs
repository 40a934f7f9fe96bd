//! `confsync serve`, the real binary, configured for a customer's own conferencing system (the
//! signed `webhook` provider): the add-on API creates a meeting through a receiver that checks
//! our signature, a sync brings it in line with the saved event, `/metrics` times the provider
//! calls, and SIGTERM stops the process cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use confsync_emulator::Emulator;
use confsync_providers::webhook::{DEFAULT_TOLERANCE, verify_signature};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const SECRET: &str = "webhook-secret-0123456789";

/// The customer's system: checks the signature, records the operation, answers the meeting.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Value>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if verify_signature(
        SECRET.as_bytes(),
        &header("confsync-timestamp"),
        &header("confsync-signature"),
        &body,
        chrono::Utc::now(),
        DEFAULT_TOLERANCE,
    )
    .is_err()
    {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let operation: Value = serde_json::from_slice(&body).unwrap();
    receiver.seen.lock().unwrap().push(operation.clone());
    match operation["type"].as_str() {
        Some("create") => (
            StatusCode::CREATED,
            json!({"meetingId": "acme-1", "joinUrl": "https://meet.acme.example/acme-1"})
                .to_string(),
        ),
        _ => (StatusCode::OK, "{}".into()),
    }
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test]
async fn serve_drives_a_signed_webhook_provider_and_stops_on_sigterm() {
    let emulator = Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let dir = std::env::temp_dir().join(format!("confsync-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("confsync.toml");
    std::fs::write(
        &config,
        format!(
            "[google]\nbase_url = \"{}\"\n[store]\npath = \"{}\"\n[serve]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 0\n\
             [provider]\nkind = \"webhook\"\n[provider.webhook]\nurl = \"{hook}\"\nsecret = \"env:ACME_WEBHOOK_SECRET\"\n",
            emulator.base_url(),
            dir.join("confsync.db").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_confsync");
    let key = Command::new(bin)
        .args(["apikey", "create", "--name", "addon", "--config"])
        .arg(&config)
        .env("ACME_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(key.status.success(), "{key:?}");
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();

    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("ACME_WEBHOOK_SECRET", SECRET)
        .env("CONFSYNC_GOOGLE_TOKEN", format!("dev:{ALICE}"))
        .env_remove("CONFSYNC_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            all.push_str(&line.unwrap_or_default());
            all.push('\n');
        }
        all
    });
    let mut serving = Serving(child);
    let base = first
        .trim()
        .strip_prefix("confsync serving on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let http = reqwest::Client::new();

    // The add-on asks for a conference: the receiver makes it.
    let answer = http
        .post(format!("{base}v1/conferences"))
        .bearer_auth(&key)
        .header("x-request-id", "addon-req-1")
        .json(&json!({"calendarId": ALICE, "eventId": "serveevent01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-request-id"], "addon-req-1");
    let conference: Value = answer.json().await.unwrap();
    assert_eq!(conference["conferenceId"], "acme-1");
    assert_eq!(
        conference["entryPoints"][0]["uri"],
        "https://meet.acme.example/acme-1"
    );

    // Calendar saves the event; a sync brings the meeting in line (an `update` at the receiver).
    let saved = http
        .post(format!(
            "{}calendar/v3/calendars/primary/events?conferenceDataVersion=1",
            emulator.base_url()
        ))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&json!({"id": "serveevent01", "summary": "Quarterly review", "start": {"dateTime": "2026-12-10T10:00:00Z"}, "end": {"dateTime": "2026-12-10T11:00:00Z"}, "conferenceData": conference}))
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success());
    let sync = http
        .post(format!("{base}v1/calendars/{ALICE}/sync"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 202);
    let mut updated = None;
    for _ in 0..200 {
        updated = receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|op| op["type"] == "update")
            .cloned();
        if updated.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let updated = updated.expect("the receiver got the update");
    assert_eq!(updated["meetingId"], "acme-1");
    assert_eq!(updated["spec"]["title"], "Quarterly review");

    let metrics = http
        .get(format!("{base}metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "confsync_provider_request_duration_seconds_count{operation=\"create\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(SECRET));

    // Defect: two `confsync serve` on one SQLite store started silently and ran the same
    // outbox rows twice. The second one refuses to start, saying why.
    let second = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("ACME_WEBHOOK_SECRET", SECRET)
        .env("CONFSYNC_GOOGLE_TOKEN", format!("dev:{ALICE}"))
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second serve on the same store must not start"
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another confsync process"), "{said}");

    // SIGTERM: intake stops and the process exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &serving.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(code) = serving.0.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let code = exited.expect("confsync serve exits after SIGTERM");
    let logs = logs.join().unwrap();
    assert!(code.success(), "{code:?}\n{logs}");
    assert!(
        !logs.contains(SECRET),
        "the webhook secret never reaches the logs"
    );
    assert!(!logs.contains(&key), "the API key never reaches the logs");
    let _ = std::fs::remove_dir_all(&dir);
}
