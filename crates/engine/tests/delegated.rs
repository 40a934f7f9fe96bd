//! A service account with domain-wide delegation syncs several users' calendars, each as its
//! owner, against the emulator with dev mode off (only the registered key is accepted).

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use confsync_core::plan::Recognizer;
use confsync_emulator::{Emulator, EmulatorConfig};
use confsync_engine::calendar::Routed;
use confsync_engine::calendar::delegated::DelegatedCalendar;
use confsync_engine::{CalendarApi, Engine, EngineConfig};
use confsync_gcal::auth::ServiceAccountKey;
use confsync_providers::Capabilities;
use confsync_providers::memory::MemoryProvider;
use confsync_store::Store;
use serde_json::json;

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn each_calendar_is_synced_as_its_owner() {
    let emulator = Emulator::new(EmulatorConfig {
        dev_mode: false,
        ..Default::default()
    })
    .spawn("127.0.0.1:0")
    .await
    .unwrap();
    let base = emulator.base_url().to_owned();
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let key_file = json!({
        "type": "service_account",
        "private_key_id": "k1",
        "private_key": pem("PRIVATE KEY", pair.as_der().unwrap().as_ref()),
        "client_email": "confsync@project.iam.gserviceaccount.com",
        "token_uri": format!("{base}token"),
    });
    let http = reqwest::Client::new();
    let registered = http
        .post(format!("{base}emulator/service-accounts"))
        .json(&json!({"clientEmail": "confsync@project.iam.gserviceaccount.com", "publicKeyPem": pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref())}))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    for user in ["alice@example.com", "bob@example.com"] {
        let tokens: serde_json::Value = http
            .post(format!("{base}emulator/tokens"))
            .json(&json!({"email": user}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let event = json!({"summary": format!("{user}'s meeting"), "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"},
            "conferenceData": {"conferenceId": format!("m-{user}"), "conferenceSolution": {"key": {"type": "addOn"}, "name": "confsync"},
                "entryPoints": [{"entryPointType": "video", "uri": "https://meet.invalid/x"}]}});
        let inserted = http
            .post(format!(
                "{base}calendar/v3/calendars/primary/events?conferenceDataVersion=1"
            ))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .json(&event)
            .send()
            .await
            .unwrap();
        assert!(inserted.status().is_success());
    }
    let key = ServiceAccountKey::from_json(&key_file.to_string()).unwrap();
    let calendar = Arc::new(Routed(DelegatedCalendar::new(key, &base, None)));
    assert_eq!(
        calendar.0.subject_for("Alice@Example.com").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        calendar.0.subject_for("team@group.calendar.google.com"),
        None
    );
    let provider = Arc::new(MemoryProvider::new("mem", Capabilities::ALL));
    let config = EngineConfig {
        recognizer: Recognizer {
            solution_names: vec!["confsync".into()],
            parameter_key: None,
        },
        ..Default::default()
    };
    let engine = Engine::new(
        Store::memory().await.unwrap(),
        calendar.clone(),
        provider,
        config,
    );
    for user in ["alice@example.com", "bob@example.com"] {
        let summary = engine
            .sync(user, false, chrono::Utc::now().timestamp_millis())
            .await
            .unwrap();
        assert_eq!(summary.events, 1, "{user} sees exactly their own event");
        assert_eq!(
            summary.actions.get("update"),
            Some(&1),
            "the unknown conference of ours is adopted"
        );
    }
    // A secondary calendar without a configured subject is a clear error, not a panic.
    let request = confsync_core::session::ListRequest {
        sync_token: None,
        page_token: None,
        time_min: None,
        show_deleted: false,
        max_results: 10,
    };
    let error = calendar
        .list("team@group.calendar.google.com", &request)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("google.subject"), "{error}");
}
