//! `confsync sync --config FILE`, the real binary, against an emulator spawned by the test: the
//! summary it prints, incremental and forced full passes, and how it fails on a bad config or a
//! missing token (naming the key or variable, never printing the token).

mod common_tmp;
use common_tmp::TempDir;

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{NaiveTime, SecondsFormat, Utc};
use confsync_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const DEV_TOKEN: &str = "dev:alice@example.com";

/// Environment the binary reads that must not leak in from the machine running the tests.
const CONFSYNC_ENV: &[&str] = &[
    "CONFSYNC_GOOGLE_TOKEN",
    "CONFSYNC_GOOGLE_BASE_URL",
    "CONFSYNC_STORE_PATH",
    "CONFSYNC_PROVIDER_JOIN_BASE_URL",
    "CONFSYNC_LOG",
    "CONFSYNC_LOG_FORMAT",
];

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            ok: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn summary(&self) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with("summary: "))
            .unwrap_or_else(|| panic!("no summary line in:\n{self}"))
    }

    fn calendar_line(&self, calendar_id: &str) -> &str {
        let prefix = format!("{calendar_id}: ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for {calendar_id} in:\n{self}"))
    }

    fn assert_ok(&self) {
        assert!(self.ok, "confsync sync failed ({:?}):\n{self}", self.code);
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout\n{}--- stderr\n{}---",
            self.stdout, self.stderr
        )
    }
}

struct Setup {
    emulator: RunningEmulator,
    http: reqwest::Client,
    dir: TempDir,
}

impl Setup {
    /// An emulator with Alice and three events on her calendar (none of them ours: a plain
    /// event, an all-day event and a Meet call), and a config file pointing at it.
    async fn start() -> Setup {
        let emulator = Emulator::new(EmulatorConfig::default())
            .spawn("127.0.0.1:0")
            .await
            .expect("the emulator starts");
        let setup = Setup {
            emulator,
            http: reqwest::Client::new(),
            dir: TempDir::new("sync-cli"),
        };
        setup
            .admin("users", json!({"email": ALICE, "displayName": "Alice"}))
            .await;
        let day = |days: i64| {
            (Utc::now().date_naive() + chrono::Duration::days(days))
                .and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap())
                .and_utc()
        };
        let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let plain = json!({"summary": "Lunch", "start": {"dateTime": at(day(1))}, "end": {"dateTime": at(day(1) + chrono::Duration::hours(1))}});
        let all_day = json!({"summary": "Offsite", "start": {"date": day(3).format("%Y-%m-%d").to_string()}, "end": {"date": day(4).format("%Y-%m-%d").to_string()}});
        let meet = json!({"summary": "Meet call", "start": {"dateTime": at(day(2))}, "end": {"dateTime": at(day(2) + chrono::Duration::minutes(30))},
            "conferenceData": {"createRequest": {"requestId": "meet-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}}});
        for event in [plain, all_day, meet] {
            setup
                .calendar(
                    reqwest::Method::POST,
                    "calendars/primary/events?conferenceDataVersion=1",
                    event,
                )
                .await;
        }
        setup.write_config("config.toml", "");
        setup
    }

    fn base(&self) -> &str {
        self.emulator.base_url()
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}emulator/{path}", self.base()))
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        assert!(response.status().is_success(), "emulator/{path}");
        response.json().await.unwrap_or(Value::Null)
    }

    async fn calendar(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}calendar/v3/{path}", self.base()))
            .bearer_auth(DEV_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// Writes a config file in the scratch directory: the emulator, a store inside the
    /// directory, Alice's calendar, and `extra` appended (more keys, or mistakes).
    fn write_config(&self, name: &str, extra: &str) -> PathBuf {
        let store = self.dir.0.join("data").join("confsync.db");
        let text = format!(
            "[google]\nbase_url = {base:?}\n\n[store]\npath = {store:?}\n\n[sync]\ncalendars = [{ALICE:?}]\n{extra}",
            base = self.base(),
            store = store.to_string_lossy(),
        );
        let path = self.dir.0.join(name);
        std::fs::write(&path, text).expect("the config file is written");
        path
    }

    fn config(&self) -> PathBuf {
        self.dir.0.join("config.toml")
    }

    /// Runs `confsync sync --config <config> <args>` with `token` (None: unset) in the scratch
    /// directory, while this runtime keeps serving the emulator.
    async fn sync(&self, config: &Path, args: &[&str], token: Option<&str>) -> Run {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_confsync"));
        command
            .arg("sync")
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(&self.dir.0);
        for var in CONFSYNC_ENV {
            command.env_remove(var);
        }
        command.env("CONFSYNC_LOG", "debug");
        if let Some(token) = token {
            command.env("CONFSYNC_GOOGLE_TOKEN", token);
        }
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the runner thread")
            .expect("the binary runs");
        Run::from(output)
    }
}

#[tokio::test]
async fn sync_exits_zero_and_prints_a_summary() {
    let s = Setup::start().await;
    let run = s.sync(&s.config(), &[], Some(DEV_TOKEN)).await;

    run.assert_ok();
    assert!(
        run.calendar_line(ALICE)
            .starts_with(&format!("{ALICE}: full sync, 3 events in 1 pages")),
        "{run}"
    );
    assert!(
        run.summary().starts_with(
            "summary: 3 events seen, 0 conferences updated, 0 deleted, 3 skipped, 0 actions failed"
        ),
        "{run}"
    );
    assert!(
        s.dir.0.join("data").join("confsync.db").exists(),
        "the store is where the config says"
    );
}

#[tokio::test]
async fn a_second_run_is_incremental() {
    let s = Setup::start().await;
    s.sync(&s.config(), &[], Some(DEV_TOKEN)).await.assert_ok();

    let quiet = s.sync(&s.config(), &[], Some(DEV_TOKEN)).await;
    quiet.assert_ok();
    assert!(
        quiet
            .calendar_line(ALICE)
            .starts_with(&format!("{ALICE}: incremental sync, 0 events")),
        "{quiet}"
    );
    assert!(
        quiet.summary().starts_with("summary: 0 events seen,"),
        "{quiet}"
    );

    // One change: the next run sees exactly that event.
    let listed = s
        .calendar(
            reqwest::Method::GET,
            "calendars/primary/events",
            json!(null),
        )
        .await;
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    s.calendar(
        reqwest::Method::PATCH,
        &format!("calendars/primary/events/{id}"),
        json!({"summary": "Renamed"}),
    )
    .await;
    let changed = s.sync(&s.config(), &[], Some(DEV_TOKEN)).await;
    changed.assert_ok();
    assert!(
        changed
            .calendar_line(ALICE)
            .starts_with(&format!("{ALICE}: incremental sync, 1 events")),
        "{changed}"
    );
    assert!(
        changed.summary().starts_with("summary: 1 events seen,"),
        "{changed}"
    );
}

#[tokio::test]
async fn full_forces_a_full_sync() {
    let s = Setup::start().await;
    s.sync(&s.config(), &[], Some(DEV_TOKEN)).await.assert_ok();

    let full = s.sync(&s.config(), &["--full"], Some(DEV_TOKEN)).await;
    full.assert_ok();
    assert!(
        full.calendar_line(ALICE)
            .starts_with(&format!("{ALICE}: full sync, 3 events")),
        "{full}"
    );
    assert!(
        full.summary().starts_with("summary: 3 events seen,"),
        "{full}"
    );

    // --full does not stick: the run after it is incremental again.
    let after = s.sync(&s.config(), &[], Some(DEV_TOKEN)).await;
    after.assert_ok();
    assert!(
        after.calendar_line(ALICE).contains("incremental sync"),
        "{after}"
    );
}

#[tokio::test]
async fn a_typo_in_the_config_exits_non_zero_naming_the_key() {
    let s = Setup::start().await;
    let config = s.write_config("typo.toml", "page_sise = 100\n");
    let run = s.sync(&config, &[], Some(DEV_TOKEN)).await;

    assert!(!run.ok, "a typo must not fall back to a default:\n{run}");
    assert!(run.stderr.contains("page_sise"), "{run}");
    assert!(
        !run.stdout.contains("summary:"),
        "nothing was synced:\n{run}"
    );
    assert!(
        !s.dir.0.join("data").exists(),
        "a bad config touches nothing"
    );
}

#[tokio::test]
async fn a_missing_token_exits_non_zero_naming_the_variable() {
    let s = Setup::start().await;
    let run = s.sync(&s.config(), &[], None).await;

    assert!(!run.ok, "{run}");
    assert!(run.stderr.contains("CONFSYNC_GOOGLE_TOKEN"), "{run}");
    assert!(!run.stdout.contains("summary:"), "{run}");
}

#[tokio::test]
async fn the_token_never_appears_in_the_output() {
    let s = Setup::start().await;
    // A real-looking access token the emulator issued for Alice, so a leak is unmistakable.
    let issued = s.admin("tokens", json!({"email": ALICE})).await;
    let token = issued["access_token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 16, "{token}");

    // Debug logging, a successful run and a --full run.
    for args in [&[][..], &["--full"][..]] {
        let run = s.sync(&s.config(), args, Some(&token)).await;
        run.assert_ok();
        assert!(!run.stdout.contains(&token), "token in stdout:\n{run}");
        assert!(!run.stderr.contains(&token), "token in stderr:\n{run}");
    }

    // A refused token: the failure is reported without the token.
    let refused = "ya29.not-a-token-the-emulator-issued-0123456789";
    let run = s.sync(&s.config(), &["--full"], Some(refused)).await;
    assert!(!run.ok, "a refused token fails the run:\n{run}");
    assert!(!run.stdout.contains(refused), "token in stdout:\n{run}");
    assert!(!run.stderr.contains(refused), "token in stderr:\n{run}");
    assert!(
        !run.stderr.contains("not-a-token"),
        "not even part of it:\n{run}"
    );

    // The dev token too.
    let run = s.sync(&s.config(), &[], Some(DEV_TOKEN)).await;
    run.assert_ok();
    assert!(
        !run.stdout.contains(DEV_TOKEN) && !run.stderr.contains(DEV_TOKEN),
        "{run}"
    );
}
