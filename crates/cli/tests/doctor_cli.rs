//! `confsync doctor`, the real binary, against the Calendar emulator (a service account with
//! domain-wide delegation, the emulator's movable clock behind its `Date` header), a Daily fake
//! (the provider's harmless read) and `confsync serve` processes (public_url): every check
//! passes on a sound deployment (exit 0), and each failure is reported with its hint and a
//! non-zero exit.

mod common_tmp;
use common_tmp::TempDir;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use confsync_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

const ALICE: &str = "alice@example.com";
const SA_EMAIL: &str = "confsync@project.iam.gserviceaccount.com";
const SA_CLIENT_ID: &str = "108765432109876543210";
const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";
const DAILY_KEY: &str = "daily-api-key-0123456789abcdef";

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The emulator (no dev tokens: only registered keys sign), a service-account key file for it,
/// and a Daily fake.
struct World {
    emulator: confsync_emulator::RunningEmulator,
    dir: TempDir,
    key_file: PathBuf,
    public_key: String,
    daily: String,
}

impl World {
    async fn new() -> World {
        let emulator = Emulator::new(EmulatorConfig {
            dev_mode: false,
            ..Default::default()
        })
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
        let dir = TempDir::new("doctor-cli");
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let key_file = dir.0.join("service-account.json");
        std::fs::write(
            &key_file,
            json!({
                "type": "service_account",
                "project_id": "project",
                "private_key_id": "k1",
                "private_key": pem("PRIVATE KEY", pair.as_der().unwrap().as_ref()),
                "client_email": SA_EMAIL,
                "client_id": SA_CLIENT_ID,
                "token_uri": format!("{}token", emulator.base_url()),
            })
            .to_string(),
        )
        .unwrap();
        let public_key = pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref());
        let daily = daily_fake().await;
        World {
            emulator,
            dir,
            key_file,
            public_key,
            daily,
        }
    }

    fn base(&self) -> &str {
        self.emulator.base_url()
    }

    /// Registers the key with these delegated scopes (None: every scope).
    async fn register(&self, scopes: Option<&[&str]>) {
        let mut body = json!({"clientEmail": SA_EMAIL, "publicKeyPem": self.public_key});
        if let Some(scopes) = scopes {
            body["delegatedScopes"] = json!(scopes);
        }
        let answer = reqwest::Client::new()
            .post(format!("{}emulator/service-accounts", self.base()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }

    /// A config file: the store `db`, the Daily key, and `public_url`/`listen` when given.
    fn config(&self, name: &str, db: &str, daily_key: &str, serve: Option<(u16, u16)>) -> PathBuf {
        let mut text = format!(
            "[google]\nbase_url = \"{}\"\nservice_account_file = \"{}\"\n\
             [store]\npath = \"{}\"\n\
             [provider]\nkind = \"daily\"\n[provider.daily]\napi_key = \"{daily_key}\"\nbase_url = \"{}\"\ntimeout_secs = 5\n\
             [sync]\ncalendars = [\"{ALICE}\"]\n",
            self.base(),
            self.key_file.display(),
            self.dir.0.join(db).display(),
            self.daily,
        );
        if let Some((listen, public)) = serve {
            text.push_str(&format!(
                "[serve]\nlisten = \"127.0.0.1:{listen}\"\npublic_url = \"http://127.0.0.1:{public}/\"\n"
            ));
        }
        let path = self.dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn db(&self, db: &str) -> PathBuf {
        self.dir.0.join(db)
    }
}

/// `GET /v1/rooms?limit=1` with the right key: an empty listing; anything else with another key:
/// Daily's 401.
async fn daily_fake() -> String {
    async fn rooms(headers: HeaderMap) -> (StatusCode, String) {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {DAILY_KEY}"))
        {
            (
                StatusCode::OK,
                json!({"total_count": 0, "data": []}).to_string(),
            )
        } else {
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "authentication-error", "info": "invalid API key"}).to_string(),
            )
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/rooms", axum::routing::get(rooms));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confsync"));
    cmd.args(args).arg("--config").arg(config);
    for (name, _) in std::env::vars() {
        if name.starts_with("CONFSYNC_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

struct Doctor {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Doctor {
    /// The line of check `name`; panics (with the whole report) when it is missing.
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
            .unwrap_or_else(|| panic!("no line for {name:?} in:\n{}", self.stdout))
    }

    /// The hint printed under check `name`'s line.
    fn hint(&self, name: &str) -> &str {
        let line = self.line(name);
        let mut lines = self.stdout.lines().skip_while(|l| *l != line).skip(1);
        lines
            .next()
            .and_then(|l| l.trim_start().strip_prefix("hint: "))
            .unwrap_or_else(|| panic!("no hint under {name:?} in:\n{}", self.stdout))
    }

    fn assert_status(&self, name: &str, status: &str) {
        assert!(
            self.line(name).starts_with(status),
            "{name}: expected {status} in:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }

    fn assert_failed(&self) {
        assert!(
            !self.ok,
            "the doctor exited 0 with a failure:\n{}",
            self.stdout
        );
        assert!(
            self.stderr.contains("checks failed"),
            "stderr: {}",
            self.stderr
        );
    }

    fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "{secret:?} printed:\n{}\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Runs `confsync doctor` (off the runtime: the emulator and the fakes answer in process).
async fn doctor(config: &Path) -> Doctor {
    let mut cmd = command(&["doctor"], config);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Doctor {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `confsync serve` process, killed on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(config: &Path) -> Serving {
    let mut child = command(&["serve"], config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        first
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("confsync serving on"),
        "serve did not start: {first:?}"
    );
    Serving(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_sound_deployment_and_nothing_secret_is_printed() {
    let world = World::new().await;
    world.register(Some(&[CALENDAR_SCOPE])).await;
    let port = free_port();
    let config = world.config("ok.toml", "ok.db", DAILY_KEY, Some((port, port)));
    // Before the service runs: everything but public_url passes (and the store is created).
    let before = doctor(&config).await;
    before.assert_status("public url", "FAIL");
    assert!(before.hint("public url").contains("start `confsync serve`"));
    before.assert_status("store migrations", "PASS");
    assert!(
        before
            .line("store migrations")
            .contains("did not exist: created"),
        "{}",
        before.stdout
    );
    before.assert_failed();

    let _serving = serve(&config).await;
    let report = doctor(&config).await;
    assert!(report.ok, "{}\n{}", report.stdout, report.stderr);
    for name in [
        "config",
        "store migrations",
        "store writable",
        "store writers",
        "clock",
        "google credentials",
        "provider credentials",
        "public url",
    ] {
        report.assert_status(name, "PASS");
    }
    assert!(report.stdout.ends_with("all checks passed\n"));
    assert!(report.line("store writers").contains("it is running"));
    assert!(
        report
            .line("google credentials")
            .contains(&format!("read calendar {ALICE} as {ALICE}")),
        "{}",
        report.stdout
    );
    assert!(report.line("public url").contains("on this store"));
    let key_file = std::fs::read_to_string(&world.key_file).unwrap();
    let private_key: serde_json::Value = serde_json::from_str(&key_file).unwrap();
    let body_line = private_key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap();
    report.assert_no_secret(&[DAILY_KEY, body_line]);
    // The doctor left no row behind: the store's write probe is as the service left it.
    let rows = std::process::Command::new("sqlite3")
        .arg(world.db("ok.db"))
        .arg("SELECT count(*) FROM write_probe WHERE id = 0")
        .output();
    if let Ok(rows) = rows {
        assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_not_granted_names_the_client_id_and_the_scope() {
    let world = World::new().await;
    world
        .register(Some(&["https://www.googleapis.com/auth/calendar.readonly"]))
        .await;
    let config = world.config("c.toml", "c.db", DAILY_KEY, None);
    let report = doctor(&config).await;
    report.assert_status("google credentials", "FAIL");
    assert!(
        report
            .line("google credentials")
            .contains("domain-wide delegation is not granted"),
        "{}",
        report.stdout
    );
    let hint = report.hint("google credentials");
    assert!(
        hint.contains(SA_CLIENT_ID)
            && hint.contains(CALENDAR_SCOPE)
            && hint.contains("Admin console"),
        "{hint}"
    );
    // Not configured is said, and is not what fails.
    report.assert_status("public url", "SKIP");
    assert!(report.line("public url").contains("not a failure"));
    report.assert_status("provider credentials", "PASS");
    report.assert_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_google_does_not_know_is_refused_with_a_hint() {
    let world = World::new().await;
    // Not registered: the emulator (like Google) does not know the key.
    let config = world.config("c.toml", "c.db", DAILY_KEY, None);
    let report = doctor(&config).await;
    report.assert_status("google credentials", "FAIL");
    assert!(
        report
            .hint("google credentials")
            .contains("deleted or disabled"),
        "{}",
        report.stdout
    );
    report.assert_failed();

    // A key file that is not one.
    std::fs::write(&world.key_file, "{\"type\": \"service_account\"}").unwrap();
    let report = doctor(&config).await;
    report.assert_status("google credentials", "FAIL");
    assert!(report.hint("google credentials").contains("JSON key file"));
    report.assert_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_provider_credentials_name_the_key_to_check_without_printing_it() {
    let world = World::new().await;
    world.register(None).await;
    let config = world.config("c.toml", "c.db", "not-the-daily-key-0123", None);
    let report = doctor(&config).await;
    report.assert_status("google credentials", "PASS");
    report.assert_status("provider credentials", "FAIL");
    assert!(
        report.line("provider credentials").contains("401"),
        "{}",
        report.stdout
    );
    assert!(
        report
            .hint("provider credentials")
            .contains("[provider.daily] api_key")
    );
    report.assert_no_secret(&["not-the-daily-key-0123"]);
    report.assert_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_load_fails_first_and_skips_the_rest() {
    let world = World::new().await;
    let config = world.dir.0.join("bad.toml");
    std::fs::write(&config, "[store]\npaht = \"x.db\"\n").unwrap();
    let report = doctor(&config).await;
    report.assert_status("config", "FAIL");
    assert!(report.hint("config").contains("confsync config check"));
    report.assert_status("google credentials", "SKIP");
    report.assert_failed();
}

/// `sqlite3` (installed by `.ci/run`); tests that need it say so and stop without it.
fn sqlite3() -> Option<Command> {
    let found = Command::new("sqlite3").arg("-version").output().is_ok();
    if !found {
        eprintln!("sqlite3 is not installed: skipping (.ci/run installs it)");
    }
    found.then(|| Command::new("sqlite3"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_by_a_newer_confsync_is_reported_and_left_untouched() {
    let world = World::new().await;
    world.register(None).await;
    let config = world.config("c.toml", "c.db", DAILY_KEY, None);
    assert!(doctor(&config).await.ok);
    let Some(mut sqlite) = sqlite3() else { return };
    let inserted = sqlite
        .arg(world.db("c.db"))
        .arg("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', 1, X'00', 0)")
        .status()
        .unwrap();
    assert!(inserted.success());
    let report = doctor(&config).await;
    report.assert_status("store migrations", "FAIL");
    assert!(
        report.line("store migrations").contains("newer confsync")
            && report.line("store migrations").contains("9999"),
        "{}",
        report.stdout
    );
    assert!(
        report
            .hint("store migrations")
            .contains("version that migrated")
    );
    report.assert_status("store writable", "SKIP");
    report.assert_failed();
    // Untouched: the row is still there and nothing was applied over it.
    let rows = Command::new("sqlite3")
        .arg(world.db("c.db"))
        .arg("SELECT count(*) FROM _sqlx_migrations WHERE version = 9999")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_writes_is_reported() {
    let world = World::new().await;
    world.register(None).await;
    let config = world.config("c.toml", "c.db", DAILY_KEY, None);
    assert!(doctor(&config).await.ok);
    let Some(mut sqlite) = sqlite3() else { return };
    // Another program holds a write transaction open: every write waits, then is refused.
    let mut holder = sqlite
        .arg(world.db("c.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN IMMEDIATE;\nINSERT INTO write_probe (id, probed_at) VALUES (42, 42);\n")
        .unwrap();
    stdin.flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let report = doctor(&config).await;
    let _ = holder.kill();
    let _ = holder.wait();
    report.assert_status("store writable", "FAIL");
    assert!(
        report.line("store writable").contains("locked"),
        "{}",
        report.stdout
    );
    assert!(
        report
            .hint("store writable")
            .contains("write transaction open")
    );
    report.assert_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_reaching_nothing_another_server_or_another_store_fails() {
    let world = World::new().await;
    world.register(None).await;
    // Nothing listens there.
    let nothing = free_port();
    let config = world.config("a.toml", "a.db", DAILY_KEY, Some((free_port(), nothing)));
    let report = doctor(&config).await;
    report.assert_status("public url", "FAIL");
    assert!(report.line("public url").contains("did not answer"));
    report.assert_failed();

    // Some other server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let config = world.config("a.toml", "a.db", DAILY_KEY, Some((free_port(), other)));
    let report = doctor(&config).await;
    report.assert_status("public url", "FAIL");
    assert!(
        report.line("public url").contains("404")
            && report.line("public url").contains("not confsync"),
        "{}",
        report.stdout
    );
    report.assert_failed();

    // A confsync, but running on another store.
    let port_b = free_port();
    let config_b = world.config("b.toml", "b.db", DAILY_KEY, Some((port_b, port_b)));
    let _serving = serve(&config_b).await;
    assert!(doctor(&config_b).await.ok, "b itself is sound");
    let config = world.config("a.toml", "a.db", DAILY_KEY, Some((free_port(), port_b)));
    let report = doctor(&config).await;
    report.assert_status("public url", "FAIL");
    assert!(
        report.line("public url").contains("another store"),
        "{}",
        report.stdout
    );
    assert!(report.hint("public url").contains("another deployment"));
    report.assert_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_off_from_googles_date_fails() {
    let world = World::new().await;
    world.register(None).await;
    let config = world.config("c.toml", "c.db", DAILY_KEY, None);
    let report = doctor(&config).await;
    report.assert_status("clock", "PASS");
    assert!(report.ok, "{}", report.stdout);
    let moved = reqwest::Client::new()
        .post(format!("{}emulator/clock", world.base()))
        .json(&json!({"advanceSeconds": 120}))
        .send()
        .await
        .unwrap();
    assert!(moved.status().is_success());
    let report = doctor(&config).await;
    report.assert_status("clock", "FAIL");
    assert!(
        report.line("clock").contains("behind Google's"),
        "{}",
        report.stdout
    );
    assert!(report.hint("clock").contains("NTP"));
    // The rest still works: tokens tolerate two minutes.
    report.assert_status("google credentials", "PASS");
    report.assert_failed();
}
