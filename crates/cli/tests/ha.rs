//! High availability, as a process-level test with a real load balancer: three `confsync serve`
//! workers share one Postgres store behind nginx, and are killed with SIGKILL and restarted at
//! random while the add-on and Calendar users keep creating and editing events. It proves that:
//!
//! - every change reaches the provider: at the end each live event's meeting matches the event
//!   (title, start, end, guests) and each cancelled event's meeting is deleted, within 60 s of
//!   the last change, by push notifications and the outbox alone (the sweep is hours away; only
//!   if Calendar gave up on the channel's last notification does the add-on's sync trigger
//!   stand in for it, and the run says so);
//! - no provider side effect is doubled: no event has two live meetings, the provider created
//!   exactly one meeting per event (a repeated create was answered from its idempotency key) and
//!   the add-on was answered the same conference each time it asked for an event;
//! - no meeting is orphaned: every live meeting is shown by a live event;
//! - a worker killed in the middle of a provider call has its work retried by another worker:
//!   the time from the SIGKILL to the same idempotency key reaching the provider again (or a
//!   later call for the same meeting) is printed for each such kill, with the median and the
//!   load average; only a generous bound (60 s) is asserted, so that a hang fails.
//!
//! The setup: the Calendar emulator and the signed `webhook` provider fake run in this process
//! (see `common_chaos`); a tap in front of the fake gives each worker its own hook URL (so a call
//! is known by the worker that made it) and can hold one call (the "middle of a provider call"
//! where a worker is killed). nginx (`proxy_next_upstream error timeout http_502 http_503`,
//! short connect timeouts, no passive health marking) balances the add-on's API calls and
//! Calendar's push notifications (`serve.public_url` is the balancer) over the three workers'
//! `serve.listen` ports. The store is a fresh schema of the test database
//! (`confsync_store::testing`). The test assumes nothing about which worker does the work: it
//! holds whether the workers run as active/standby (one holds the store, the others do not
//! listen until it dies) or all at once with leases; nginx skips whoever does not listen. At
//! least one worker process is alive at any time.
//!
//! Run: `cargo test -p confsync --test ha -- --nocapture` (figures are printed). Knobs:
//! `HA_SEED` replays a run's random choices (the seed is printed, decimal or 0x-hex; rounds,
//! delays, edits and kills are drawn from it, while which worker and call a kill catches
//! depends on timing); `HA_ROUNDS` (default 10) lengthens it; `CONFSYNC_TEST_POSTGRES_URL`
//! names the test database (default `postgres://postgres@127.0.0.1:5432/test`); `NGINX` the
//! nginx binary (default: `nginx` on the PATH, else `/usr/sbin/nginx`); `CHAOS_KEEP=1` keeps
//! the temp dir (nginx config and logs, one log per worker incarnation). Without nginx or a
//! reachable Postgres the test says why and skips, unless `CI` is set (then it fails, as it
//! does when `CONFSYNC_TEST_POSTGRES_URL` is set and unreachable); `.ci/run` installs nginx.
//! The default run takes about 30 s with active/standby workers; with leased workers each
//! failover of outbox work waits out the dead worker's lease.

mod common_chaos;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use common_chaos::*;
use confsync_emulator::Emulator;
use serde_json::{Value, json};

/// Workers behind the balancer.
const WORKERS: usize = 3;
/// The driver creates at most this many events per round, or `MIN_EVENTS` if more (edits go
/// on after that).
const EVENTS_PER_ROUND: usize = 2;
const MIN_EVENTS: usize = 20;
/// How long the work of a worker killed mid-call may take to be retried elsewhere (a hang
/// fails; the figure itself is only printed).
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// How long everything may take to converge at the end (nothing but push notifications and the
/// outbox: the sweep is hours away).
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
/// How long the add-on keeps retrying one create (as Calendar's add-on would, then give up).
const CREATE_LIMIT: Duration = Duration::from_secs(60);

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A whole hour two days from now: events are in the future, inside every sync window.
fn base_time() -> DateTime<Utc> {
    let t = (Utc::now() + TimeDelta::days(2)).timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(3600), 0).unwrap()
}

fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// --- nginx --------------------------------------------------------------------------------

/// The nginx binary: `NGINX`, else `nginx` on the PATH, else Debian's `/usr/sbin/nginx`.
fn nginx_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("NGINX").filter(|v| !v.is_empty()) {
        candidates.push(v.into());
    } else {
        candidates.push("nginx".into());
        candidates.push("/usr/sbin/nginx".into());
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// nginx in the foreground with its own prefix, config, pid file, logs and temp paths, all in
/// `dir`; stopped (SIGTERM, then SIGKILL) on drop.
struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    url: String,
}

impl Nginx {
    fn start(binary: &Path, dir: &Path, port: u16, upstreams: &[u16]) -> Nginx {
        let dir = dir.join("nginx");
        for sub in [
            "tmp/client_body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        // max_fails=0: no passive health marking, so a worker that starts listening again is
        // tried at once; a worker that does not listen costs a refused connect, and the request
        // goes to the next one. Requests are never sent twice once a worker had them (POSTs are
        // not retried on the next worker after being sent: no `non_idempotent`).
        let servers: String = upstreams
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20 log_format ha '$msec $status \"$request\" upstream=$upstream_addr upstream_status=$upstream_status';\n\
             \x20 access_log {d}/access.log ha;\n\
             \x20 client_body_temp_path {d}/tmp/client_body;\n\
             \x20 proxy_temp_path {d}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {d}/tmp/scgi;\n\
             \x20 upstream confsync {{\n{servers}  }}\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   location / {{\n\
             \x20     proxy_pass http://confsync;\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Host $http_host;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_next_upstream error timeout http_502 http_503;\n\
             \x20     proxy_next_upstream_tries {tries};\n\
             \x20     proxy_next_upstream_timeout 10s;\n\
             \x20     proxy_connect_timeout 500ms;\n\
             \x20     proxy_send_timeout 15s;\n\
             \x20     proxy_read_timeout 30s;\n\
             \x20     proxy_max_temp_file_size 0;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n",
            tries = upstreams.len(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let out = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx ({}): {e}", binary.display()));
        let mut nginx = Nginx {
            child: Some(child),
            dir,
            url: format!("http://127.0.0.1:{port}/"),
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            let exited = nginx
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || started.elapsed() > Duration::from_secs(10) {
                let why = format!(
                    "nginx did not start; stderr:\n{}\nerror.log:\n{}",
                    tail(&nginx.dir.join("stderr.log"), 20),
                    tail(&nginx.dir.join("error.log"), 20)
                );
                drop(nginx);
                panic!("{why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (requests, requests that went to more than one worker, answers 502 that no worker
    /// gave: none listened, or the one that had the request died) from the access log.
    fn figures(&self) -> (usize, usize, usize) {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut requests = 0;
        let mut passed_on = 0;
        let mut none = 0;
        for line in text.lines() {
            requests += 1;
            let upstream = line
                .split(" upstream=")
                .nth(1)
                .and_then(|r| r.split(" upstream_status=").next())
                .unwrap_or_default();
            if upstream.contains(',') {
                passed_on += 1;
            }
            let statuses = line.split(" upstream_status=").nth(1).unwrap_or_default();
            if line.split(' ').nth(1) == Some("502")
                && statuses.split(", ").all(|s| s.trim() == "502")
            {
                none += 1;
            }
        }
        (requests, passed_on, none)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// --- the tap in front of the provider fake -----------------------------------------------

/// One call a worker made to the provider.
#[derive(Clone, Debug)]
struct TapCall {
    slot: usize,
    key: String,
    kind: String,
    meeting: String,
    at: Instant,
}

/// The call being held: the worker that made it waits for an answer.
struct HeldCall {
    call: TapCall,
    headers: HeaderMap,
    body: Bytes,
    answer: Option<tokio::sync::oneshot::Sender<(StatusCode, String)>>,
}

#[derive(Default)]
struct TapState {
    calls: Vec<TapCall>,
    /// The next call of this type ("": of any type) is held.
    armed: Option<String>,
    held: Option<HeldCall>,
}

/// Each worker posts to `/hook/{slot}`; the tap records the call and passes it, signature and
/// all, to the fake (in a task of its own: the side effect happens even if the worker dies).
struct Tap {
    fake: String,
    http: reqwest::Client,
    state: Mutex<TapState>,
}

impl Tap {
    async fn spawn(fake: &str) -> (Arc<Tap>, String) {
        let tap = Arc::new(Tap {
            fake: fake.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state: Mutex::new(TapState::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook/{slot}", axum::routing::post(tap_receive))
            .with_state(tap.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (tap, url)
    }

    async fn forward(&self, headers: &HeaderMap, body: Bytes) -> (StatusCode, String) {
        let mut request = self.http.post(&self.fake).body(body);
        for name in [
            "content-type",
            "idempotency-key",
            "confsync-timestamp",
            "confsync-signature",
        ] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                request = request.header(name, v);
            }
        }
        match request.send().await {
            Ok(r) => {
                let status = StatusCode::from_u16(r.status().as_u16())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (StatusCode::BAD_GATEWAY, format!("tap: {e}")),
        }
    }

    fn calls(&self) -> Vec<TapCall> {
        lock(&self.state).calls.clone()
    }

    /// Holds the next call of type `kind` ("": any).
    fn arm(&self, kind: &str) {
        lock(&self.state).armed = Some(kind.to_owned());
    }

    /// Disarms; answers the call held, if one was.
    fn disarm(&self) -> Option<TapCall> {
        let mut s = lock(&self.state);
        s.armed = None;
        s.held.as_ref().map(|h| h.call.clone())
    }

    fn held(&self) -> Option<TapCall> {
        lock(&self.state).held.as_ref().map(|h| h.call.clone())
    }

    /// Lets the held call go: to the provider (its side effect happens, its answer goes to
    /// whoever still waits) or nowhere (the worker, if alive, is answered 503).
    fn release(self: &Arc<Self>, to_provider: bool) {
        let Some(mut held) = lock(&self.state).held.take() else {
            return;
        };
        let answer = held.answer.take();
        if to_provider {
            let tap = self.clone();
            tokio::spawn(async move {
                let a = tap.forward(&held.headers, held.body).await;
                if let Some(tx) = answer {
                    let _ = tx.send(a);
                }
            });
        } else if let Some(tx) = answer {
            let _ = tx.send((StatusCode::SERVICE_UNAVAILABLE, "held and dropped".into()));
        }
    }
}

async fn tap_receive(
    State(tap): State<Arc<Tap>>,
    UrlPath(slot): UrlPath<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let op: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |k: &str| op[k].as_str().unwrap_or_default().to_owned();
    let call = TapCall {
        slot,
        key: text("idempotencyKey"),
        kind: text("type"),
        meeting: text("meetingId"),
        at: Instant::now(),
    };
    let held = {
        let mut s = lock(&tap.state);
        s.calls.push(call.clone());
        let wanted = s
            .armed
            .as_ref()
            .is_some_and(|k| k.is_empty() || *k == call.kind);
        if wanted && s.held.is_none() {
            s.armed = None;
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.held = Some(HeldCall {
                call,
                headers: headers.clone(),
                body: body.clone(),
                answer: Some(tx),
            });
            Some(rx)
        } else {
            None
        }
    };
    match held {
        Some(rx) => rx
            .await
            .unwrap_or((StatusCode::SERVICE_UNAVAILABLE, "tap gone".into())),
        None => {
            let worker = tap.clone();
            tokio::spawn(async move { worker.forward(&headers, body).await })
                .await
                .unwrap_or((StatusCode::BAD_GATEWAY, "tap task failed".into()))
        }
    }
}

// --- the workers --------------------------------------------------------------------------

/// One `confsync serve` slot: its own config (listen port, hook URL), restarted in place.
struct Worker {
    slot: usize,
    config: PathBuf,
    dir: PathBuf,
    store_url: String,
    child: Option<Child>,
    pid: u32,
    incarnation: u32,
    /// When the current incarnation printed "serving on" (None: not serving, e.g. a standby).
    serving: Arc<Mutex<Option<Instant>>>,
    log: PathBuf,
    /// A dead worker comes back at this time.
    restart_at: Option<Instant>,
}

impl Worker {
    fn new(slot: usize, dir: &Path, config: PathBuf, store_url: &str) -> Worker {
        Worker {
            slot,
            config,
            dir: dir.to_owned(),
            store_url: store_url.to_owned(),
            child: None,
            pid: 0,
            incarnation: 0,
            serving: Arc::new(Mutex::new(None)),
            log: PathBuf::new(),
            restart_at: None,
        }
    }

    fn name(&self) -> String {
        format!("w{}", self.slot)
    }

    /// Starts the process (it may wait as a standby: nothing is awaited here).
    fn spawn(&mut self) {
        assert!(self.child.is_none());
        self.incarnation += 1;
        self.log = self
            .dir
            .join(format!("w{}-{}.log", self.slot, self.incarnation));
        let log = std::fs::File::create(&self.log).unwrap();
        let mut child = confsync_command()
            .env("CONFSYNC_STORE_URL", &self.store_url)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let serving = Arc::new(Mutex::new(None));
        self.serving = serving.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.trim().starts_with("confsync serving on ") {
                    *lock(&serving) = Some(Instant::now());
                }
            }
        });
        self.child = Some(child);
        self.restart_at = None;
    }

    /// Running (serving or waiting)? An exit it made by itself is answered as Err.
    fn check(&mut self) -> Result<bool, String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(false);
        };
        match child.try_wait() {
            Ok(None) => Ok(true),
            Ok(Some(status)) => {
                self.child = None;
                Err(format!(
                    "worker {} (pid {}) exited by itself ({status}); its log ends:\n{}",
                    self.name(),
                    self.pid,
                    tail(&self.log, 15)
                ))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn serving_since(&self) -> Option<Instant> {
        *lock(&self.serving)
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn panicked(&self) -> Vec<String> {
        (1..=self.incarnation)
            .filter_map(|i| {
                let path = self.dir.join(format!("w{}-{i}.log", self.slot));
                let text = std::fs::read_to_string(&path).ok()?;
                text.contains("panicked")
                    .then(|| path.display().to_string())
            })
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

struct Pool {
    workers: Vec<Worker>,
    /// Exits no one asked for.
    unexpected: Vec<String>,
    kills: u32,
    restarts: u32,
}

impl Pool {
    /// Notes workers that died by themselves (they come back soon) and restarts those due.
    fn tick(&mut self) {
        for w in &mut self.workers {
            if let Err(e) = w.check() {
                eprintln!("[ha] {e}");
                self.unexpected.push(e);
                w.restart_at = Some(Instant::now() + Duration::from_millis(200));
            }
            if !w.running() && w.restart_at.is_some_and(|t| t <= Instant::now()) {
                w.spawn();
                self.restarts += 1;
            }
        }
    }

    fn alive(&self) -> usize {
        self.workers.iter().filter(|w| w.running()).count()
    }

    /// SIGKILL to worker `slot`, back after `down`; refused (false) if it is the last alive.
    fn kill(&mut self, slot: usize, down: Duration) -> bool {
        if self.alive() < 2 || !self.workers[slot].running() {
            return false;
        }
        self.workers[slot].sigkill();
        self.workers[slot].restart_at = Some(Instant::now() + down);
        self.kills += 1;
        true
    }

    /// Starts every worker that is down.
    fn all_up(&mut self) {
        for w in &mut self.workers {
            if !w.running() {
                w.spawn();
                self.restarts += 1;
            }
        }
    }

    /// Waits `d`, ticking.
    async fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tick();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.tick();
    }

    fn serving(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|w| w.running() && w.serving_since().is_some())
            .map(Worker::name)
            .collect()
    }
}

fn write_worker_config(
    dir: &Path,
    slot: usize,
    emulator: &str,
    store_url: &str,
    port: u16,
    balancer: &str,
    hook: &str,
) -> PathBuf {
    let path = dir.join(format!("w{slot}.toml"));
    // The keys are the same for every worker: a channel one worker opened is recognised by all.
    let text = format!(
        "[google]\nbase_url = \"{emulator}\"\n\
         [store]\nurl = \"{store_url}\"\n\
         [serve]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{balancer}\"\n\
         debounce_ms = 200\nsweep_minutes = 600\n\
         host_key = \"ha-test-host-key-0123456789abcdefghij\"\n\
         channel_key = \"ha-test-channel-key-0123456789abcdefgh\"\n\
         [provider]\nkind = \"webhook\"\n\
         [provider.webhook]\nurl = \"{hook}{slot}\"\nsecret = \"env:ACME_WEBHOOK_SECRET\"\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn create_key(config: &Path, store_url: &str) -> String {
    let out = confsync_command()
        .env("CONFSYNC_STORE_URL", store_url)
        .args(["apikey", "create", "--name", "addon", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "apikey create: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// --- the users: creates and edits ---------------------------------------------------------

struct Ev {
    number: usize,
    rev: u32,
    start: DateTime<Utc>,
    minutes: i64,
    guests: Vec<String>,
    /// The conference the add-on was answered.
    meeting: Option<String>,
    /// Every conference id the add-on was answered for this event (one, if all is well).
    answers: BTreeSet<String>,
    cancelled: bool,
}

#[derive(Default)]
struct Model {
    events: BTreeMap<String, Ev>,
    guests: u64,
    changes: BTreeMap<&'static str, u64>,
    /// Add-on creates answered something else than the conference (attempts), and creates
    /// never answered within the limit.
    create_retries: u64,
    create_failures: Vec<String>,
    create_latency: Vec<Duration>,
}

struct Ctx {
    cal: Calendar,
    addon: Addon,
    model: Mutex<Model>,
    base_time: DateTime<Utc>,
    max_events: usize,
}

fn title(number: usize, rev: u32) -> String {
    format!("HA event {number} rev {rev}")
}

/// "HA event 7 rev 3" -> "haev0007".
fn event_of_title(title: &str) -> Option<String> {
    let rest = title.strip_prefix("HA event ")?;
    let number: usize = rest.split(' ').next()?.parse().ok()?;
    Some(format!("haev{number:04}"))
}

/// A new event in Calendar, the add-on's create through the balancer (retried with the same
/// request id until answered, as the add-on does), then Calendar saving the conference.
async fn create_event(ctx: &Ctx) {
    let (id, request_id, body) = {
        let mut m = lock(&ctx.model);
        let number = m.events.len() + 1;
        let id = format!("haev{number:04}");
        let start = ctx.base_time + TimeDelta::hours(3 * number as i64);
        let request_id = format!("req-{id}");
        m.events.insert(
            id.clone(),
            Ev {
                number,
                rev: 0,
                start,
                minutes: 60,
                guests: Vec::new(),
                meeting: None,
                answers: BTreeSet::new(),
                cancelled: false,
            },
        );
        *m.changes.entry("create").or_default() += 1;
        let body = json!({
            "id": id, "summary": title(number, 0),
            "start": {"dateTime": rfc(start)},
            "end": {"dateTime": rfc(start + TimeDelta::minutes(60))},
        });
        (id, request_id, body)
    };
    ctx.cal.insert(&body).await;
    let started = Instant::now();
    let answer = loop {
        let last = match ctx.addon.create_conference(&id, &request_id).await {
            Ok((200, answer)) if answer["conferenceId"].is_string() => break answer,
            other => format!("{other:?}"),
        };
        lock(&ctx.model).create_retries += 1;
        if started.elapsed() >= CREATE_LIMIT {
            lock(&ctx.model).create_failures.push(format!(
                "the add-on's create for {id} was not answered with a conference within {} s; last answer {last}",
                CREATE_LIMIT.as_secs()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let meeting = answer["conferenceId"].as_str().unwrap().to_owned();
    {
        let mut m = lock(&ctx.model);
        m.create_latency.push(started.elapsed());
        let e = m.events.get_mut(&id).unwrap();
        e.answers.insert(meeting.clone());
        e.meeting = Some(meeting);
    }
    ctx.cal.patch(&id, &json!({"conferenceData": answer})).await;
}

/// A move, a rename, a guest added or removed, or a cancel.
async fn edit_event(ctx: &Ctx, rng: &mut Rng, event_id: &str, may_cancel: bool) {
    enum Edit {
        Patch(Value),
        Cancel,
    }
    let edit = {
        let mut m = lock(&ctx.model);
        let guest_number = m.guests + 1;
        let e = m.events.get_mut(event_id).unwrap();
        let (kind, edit) = match rng.below(100) {
            n if n < 6 && may_cancel => {
                e.cancelled = true;
                ("cancel", Edit::Cancel)
            }
            n if n < 35 => {
                let sign = if rng.chance(0.5) { 1 } else { -1 };
                e.start += TimeDelta::minutes(sign * 30 * rng.range(1, 8));
                e.minutes = [30, 45, 60, 90][rng.below(4) as usize];
                let body = json!({
                    "start": {"dateTime": rfc(e.start)},
                    "end": {"dateTime": rfc(e.start + TimeDelta::minutes(e.minutes))},
                });
                ("move", Edit::Patch(body))
            }
            n if n < 60 => {
                e.rev += 1;
                (
                    "rename",
                    Edit::Patch(json!({"summary": title(e.number, e.rev)})),
                )
            }
            n if n < 85 || e.guests.is_empty() => {
                e.guests.push(format!("guest{guest_number}@example.com"));
                let attendees: Vec<Value> = e.guests.iter().map(|g| json!({"email": g})).collect();
                m.guests = guest_number;
                ("add guest", Edit::Patch(json!({"attendees": attendees})))
            }
            _ => {
                let gone = rng.below(e.guests.len() as u64) as usize;
                e.guests.remove(gone);
                let attendees: Vec<Value> = e.guests.iter().map(|g| json!({"email": g})).collect();
                ("remove guest", Edit::Patch(json!({"attendees": attendees})))
            }
        };
        *m.changes.entry(kind).or_default() += 1;
        edit
    };
    match edit {
        Edit::Patch(body) => {
            ctx.cal.patch(event_id, &body).await;
        }
        Edit::Cancel => {
            let r = ctx
                .cal
                .http
                .delete(format!(
                    "{}calendar/v3/calendars/{ALICE}/events/{event_id}",
                    ctx.cal.base
                ))
                .bearer_auth(format!("dev:{ALICE}"))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "events.delete answered {}",
                r.status()
            );
        }
    }
}

/// The users, until told to stop: creates and edits one after another, a little apart.
async fn drive(ctx: Arc<Ctx>, mut rng: Rng, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let (create, target, may_cancel) = {
            let m = lock(&ctx.model);
            let live: Vec<&String> = m
                .events
                .iter()
                .filter(|(_, e)| e.meeting.is_some() && !e.cancelled)
                .map(|(id, _)| id)
                .collect();
            let create = m.events.len() < ctx.max_events && (live.len() < 3 || rng.chance(0.2));
            let target =
                (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize].clone());
            (create || target.is_none(), target, live.len() > 3)
        };
        if create {
            if lock(&ctx.model).events.len() >= ctx.max_events {
                // Nothing left to create or edit.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            create_event(&ctx).await;
        } else {
            edit_event(&ctx, &mut rng, target.as_deref().unwrap(), may_cancel).await;
        }
        tokio::time::sleep(rng.ms(30, 250)).await;
    }
}

// --- the end state ------------------------------------------------------------------------

/// Every event as Calendar has it now against its meeting at the provider.
async fn mismatches(ctx: &Ctx, provider: &ProviderFake) -> Vec<String> {
    let events: Vec<(String, Option<String>, bool)> = lock(&ctx.model)
        .events
        .iter()
        .map(|(id, e)| (id.clone(), e.meeting.clone(), e.cancelled))
        .collect();
    let mut problems = Vec::new();
    for (id, meeting, cancelled) in events {
        let Some(meeting) = meeting else {
            problems.push(format!("event {id}: never got a conference"));
            continue;
        };
        let have = provider.meeting(&meeting);
        if cancelled {
            match have {
                Some(m) if m.deleted => {}
                Some(m) => problems.push(format!(
                    "event {id} is cancelled; its meeting {meeting} is live ({})",
                    Shape::of_spec(&m.spec)
                )),
                None => problems.push(format!("event {id}: the provider has no meeting {meeting}")),
            }
            continue;
        }
        let event = ctx.cal.get(&id).await;
        let shown = event["conferenceData"]["conferenceId"]
            .as_str()
            .unwrap_or_default();
        if shown != meeting {
            problems.push(format!(
                "event {id}: shows conference {shown:?}, the add-on was answered {meeting}"
            ));
            continue;
        }
        let want = Shape::of_event(&event);
        match have {
            Some(m) if !m.deleted && Shape::of_spec(&m.spec) == want => {}
            Some(m) => problems.push(format!(
                "event {id}: is {want}; provider meeting {meeting} {}is {}",
                if m.deleted { "(deleted) " } else { "" },
                Shape::of_spec(&m.spec)
            )),
            None => problems.push(format!("event {id}: the provider has no meeting {meeting}")),
        }
    }
    problems
}

/// The conference each live event of alice's calendar shows.
async fn shown_conferences(cal: &Calendar) -> BTreeMap<String, String> {
    cal.list()
        .await
        .iter()
        .filter_map(|e| {
            Some((
                e["id"].as_str()?.to_owned(),
                e["conferenceData"]["conferenceId"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Whether Calendar gave up on the last notification of alice's active channel.
async fn last_notification_dropped(cal: &Calendar) -> bool {
    let Some((channel, _, last)) = cal.active_channel().await else {
        return false;
    };
    cal.deliveries(&channel)
        .await
        .iter()
        .any(|d| d["messageNumber"].as_u64() == Some(last) && d["delivered"] == json!(false))
}

/// Notifications on alice's channels: (delivered, delivered after a retry, dropped).
async fn notification_figures(cal: &Calendar) -> (usize, usize, usize) {
    let mut figures = (0, 0, 0);
    for c in cal.channels().await {
        if c["calendarId"] != json!(ALICE) {
            continue;
        }
        for d in cal.deliveries(c["id"].as_str().unwrap_or_default()).await {
            if d["delivered"] == json!(true) {
                figures.0 += 1;
                if d["attempts"].as_u64().unwrap_or(0) > 1 {
                    figures.1 += 1;
                }
            } else {
                figures.2 += 1;
            }
        }
    }
    figures
}

// --- the test -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// Hold a provider call, SIGKILL the worker that made it, time the retry elsewhere.
    MidCall,
    /// SIGKILL a random worker (one or two) at a random time.
    Random,
}

fn plan(round: usize, rng: &mut Rng) -> Round {
    match round {
        0 => Round::MidCall,
        1 => Round::Random,
        _ if rng.chance(0.5) => Round::MidCall,
        _ => Round::Random,
    }
}

/// One failover measurement.
struct Failover {
    call: TapCall,
    killed_pid: u32,
    to_provider: bool,
    /// (time from the kill, the retrying call) or None (not within the limit).
    retried: Option<(Duration, TapCall)>,
    /// When another worker started serving after the kill (active/standby: the takeover).
    took_over: Option<(Duration, String)>,
    load: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_behind_a_load_balancer_survive_kills() {
    let _serial = exclusive().await;
    // The gates: nginx, then Postgres (whose helper says why it skips, or fails when required).
    let Some(nginx_bin) = nginx_binary() else {
        let why = "nginx is not installed (nor named by NGINX): the HA test needs it as the load balancer (`apt-get install nginx`; .ci/run installs it)";
        assert!(!under_ci(), "{why}");
        eprintln!("skipping the HA test: {why}");
        return;
    };
    let Some(store_url) = confsync_store::testing::postgres_schema_url().await else {
        let why = "Postgres is not reachable (see the line above): the HA test's workers share a Postgres store";
        assert!(!under_ci(), "{why}");
        eprintln!("skipping the HA test: {why}");
        return;
    };
    let rounds = env_u64("HA_ROUNDS", 10) as usize;
    let seed = Rng::seed_from_env("HA_SEED");
    say(format!(
        "ha: {WORKERS} workers behind nginx, {rounds} rounds, HA_SEED={seed:#x}"
    ));
    let mut rng = Rng::new(seed);
    let mut verdict = Verdict::new("workers_behind_a_load_balancer_survive_kills");
    let test_started = Instant::now();

    let emulator = Emulator::new(Default::default())
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let cal = Calendar::new(emulator.base_url());
    let (provider, fake_url) = ProviderFake::spawn(100, rng.next_u64()).await;
    let (tap, hook) = Tap::spawn(&fake_url).await;
    let dir = TempDir::new("ha");
    let balancer_port = free_port();
    let ports: Vec<u16> = (0..WORKERS).map(|_| free_port()).collect();
    let nginx = Nginx::start(&nginx_bin, dir.path(), balancer_port, &ports);
    let configs: Vec<PathBuf> = (0..WORKERS)
        .map(|slot| {
            write_worker_config(
                dir.path(),
                slot,
                emulator.base_url(),
                &store_url,
                ports[slot],
                &nginx.url,
                &hook,
            )
        })
        .collect();
    let key = create_key(&configs[0], &store_url);
    let mut pool = Pool {
        workers: configs
            .into_iter()
            .enumerate()
            .map(|(slot, config)| Worker::new(slot, dir.path(), config, &store_url))
            .collect(),
        unexpected: Vec::new(),
        kills: 0,
        restarts: 0,
    };
    // The first worker serves before the others start (whatever the mode, one serves).
    pool.workers[0].spawn();
    let first_serving = Instant::now();
    while pool.workers[0].serving_since().is_none() {
        pool.tick();
        assert!(
            first_serving.elapsed() < Duration::from_secs(30),
            "the first worker did not serve within 30 s; its log:\n{}",
            tail(&pool.workers[0].log, 30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &mut pool.workers[1..] {
        w.spawn();
    }
    pool.wait(Duration::from_millis(500)).await;
    say(format!(
        "ha: nginx on {} -> workers on ports {ports:?}; serving now: {:?}",
        nginx.url,
        pool.serving()
    ));

    let ctx = Arc::new(Ctx {
        cal: cal.clone(),
        addon: Addon::new(&nginx.url, &key),
        model: Mutex::new(Model::default()),
        base_time: base_time(),
        max_events: MIN_EVENTS.max(EVENTS_PER_ROUND * rounds),
    });

    // Setup, no kills: the first conference opens the calendar's push channel (to the
    // balancer), its handshake answered through it.
    create_event(&ctx).await;
    assert!(
        lock(&ctx.model).create_failures.is_empty(),
        "setup: the first conference: {:?}",
        lock(&ctx.model).create_failures
    );
    let (channel, _, _) = until(
        Duration::from_secs(15),
        Duration::from_millis(25),
        async || cal.active_channel().await,
    )
    .await
    .expect("setup: a worker opens a push channel with the first conference");
    assert!(
        until(
            Duration::from_secs(15),
            Duration::from_millis(25),
            async || cal.handshake_acknowledged(&channel).await.then_some(())
        )
        .await
        .is_some(),
        "setup: the channel's sync handshake is acknowledged through the balancer"
    );

    // The users, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(drive(ctx.clone(), rng.fork(), stop.clone()));

    let mut failovers: Vec<Failover> = Vec::new();
    let mut probes_without_call = 0;
    for round in 0..rounds {
        let kind = plan(round, &mut rng);
        match kind {
            Round::MidCall => {
                pool.all_up();
                pool.wait(rng.ms(200, 1500)).await;
                // Some probes hold an add-on create (made while answering the API), the others
                // whatever call comes next (mostly the outbox's).
                let creating = lock(&ctx.model).events.len() + 2 < ctx.max_events;
                let hold = if creating && (round == 0 || rng.chance(0.3)) {
                    "create"
                } else {
                    ""
                };
                tap.arm(hold);
                let armed = Instant::now();
                while tap.held().is_none() && armed.elapsed() < Duration::from_secs(15) {
                    pool.tick();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let Some(call) = tap.disarm() else {
                    probes_without_call += 1;
                    say(format!(
                        "round {round}: MidCall: no provider call ({hold:?}) within 15 s to hold"
                    ));
                    continue;
                };
                let victim = call.slot;
                let pid = pool.workers[victim].pid;
                let to_provider = rng.chance(0.5);
                let down = rng.ms(300, 3000);
                if !pool.kill(victim, down) {
                    tap.release(true);
                    say(format!(
                        "round {round}: MidCall: the held call's worker w{victim} is the last alive; not killed"
                    ));
                    continue;
                }
                let killed = Instant::now();
                // After the kill, as a provider would: the call happened (its answer lost) or
                // never arrived.
                tap.release(to_provider);
                let mut took_over = None;
                let mut retried = None;
                while killed.elapsed() < FAILOVER_LIMIT {
                    pool.tick();
                    if took_over.is_none() {
                        took_over = pool
                            .workers
                            .iter()
                            .filter(|w| w.slot != victim)
                            .filter_map(|w| w.serving_since().map(|t| (t, w.name())))
                            .filter(|(t, _)| *t > killed)
                            .min_by_key(|(t, _)| *t)
                            .map(|(t, name)| (t - killed, name));
                    }
                    retried = tap
                        .calls()
                        .into_iter()
                        .filter(|c| c.at > killed)
                        .find(|c| {
                            c.key == call.key
                                || (!call.meeting.is_empty() && c.meeting == call.meeting)
                        })
                        .map(|c| (c.at - killed, c));
                    if retried.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let f = Failover {
                    call,
                    killed_pid: pid,
                    to_provider,
                    retried,
                    took_over,
                    load: loadavg(),
                };
                let retried_text = match &f.retried {
                    Some((t, c)) => format!(
                        "{} by w{} after {:.3} s",
                        if c.key == f.call.key {
                            "the same key retried"
                        } else {
                            "a later call for the same meeting"
                        },
                        c.slot,
                        t.as_secs_f64()
                    ),
                    None => format!("NOT retried within {} s", FAILOVER_LIMIT.as_secs()),
                };
                say(format!(
                    "round {round}: MidCall: held {} {:?} from w{victim} (pid {pid}); SIGKILL; the held call {}; {retried_text}{}; loadavg {}",
                    f.call.kind,
                    f.call.key,
                    if to_provider {
                        "went on to the provider (answer lost)"
                    } else {
                        "never reached the provider"
                    },
                    f.took_over
                        .as_ref()
                        .map(|(t, w)| format!(
                            " ({w} took over: serving {:.3} s after the kill)",
                            t.as_secs_f64()
                        ))
                        .unwrap_or_default(),
                    f.load
                ));
                verdict.check(f.retried.is_some(), || {
                    format!(
                        "round {round}: the {} call {:?} of killed worker w{victim} (pid {}) was not retried by another worker within {} s",
                        f.call.kind,
                        f.call.key,
                        f.killed_pid,
                        FAILOVER_LIMIT.as_secs()
                    )
                });
                failovers.push(f);
            }
            Round::Random => {
                pool.wait(rng.ms(200, 2500)).await;
                let mut killed = Vec::new();
                let victims = if rng.chance(0.3) { 2 } else { 1 };
                for _ in 0..victims {
                    let alive: Vec<usize> = pool
                        .workers
                        .iter()
                        .filter(|w| w.running())
                        .map(|w| w.slot)
                        .collect();
                    if alive.len() < 2 {
                        break;
                    }
                    let slot = alive[rng.below(alive.len() as u64) as usize];
                    let serving = pool.workers[slot].serving_since().is_some();
                    let down = rng.ms(300, 4000);
                    if pool.kill(slot, down) {
                        killed.push(format!(
                            "w{slot} ({}, back in {:.1} s)",
                            if serving { "serving" } else { "not serving" },
                            down.as_secs_f64()
                        ));
                    }
                    pool.wait(rng.ms(0, 800)).await;
                }
                say(format!(
                    "round {round}: Random: SIGKILL {}; serving now: {:?}",
                    killed.join(", "),
                    pool.serving()
                ));
            }
        }
        pool.wait(rng.ms(200, 1500)).await;
    }

    // The end: the users stop, every worker comes back, and everything must converge by
    // push notifications and the outbox alone.
    stop.store(true, Ordering::SeqCst);
    let driver_ended = Instant::now();
    let mut driver = driver;
    let driven = loop {
        pool.tick();
        if driver.is_finished() {
            break (&mut driver).await;
        }
        if driver_ended.elapsed() > CREATE_LIMIT + Duration::from_secs(30) {
            driver.abort();
            break Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Err(e) = driven {
        verdict.fail(format!("the users' driver failed: {e}"));
    }
    pool.all_up();
    let settle = Instant::now();
    let mut last = Vec::new();
    let mut converged = None;
    let mut final_dropped = false;
    while settle.elapsed() < CONVERGE_LIMIT {
        pool.tick();
        last = mismatches(&ctx, &provider).await;
        if last.is_empty() {
            converged = Some(settle.elapsed());
            break;
        }
        // Calendar gives up on a notification after five attempts (about 4 s; Google drops
        // them too): if it gave up on the channel's last one, only a sync trigger can help.
        if settle.elapsed() > Duration::from_secs(5) && last_notification_dropped(&cal).await {
            final_dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if final_dropped {
        // The add-on's EventUpdated trigger, through the balancer, as in production.
        say(
            "note: Calendar dropped the channel's last notification (no worker answered 2xx in five attempts); the add-on's sync trigger stands in for it",
        );
        let _ = ctx.addon.sync().await;
        let again = Instant::now();
        while again.elapsed() < CONVERGE_LIMIT {
            pool.tick();
            last = mismatches(&ctx, &provider).await;
            if last.is_empty() {
                converged = Some(settle.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    verdict.check(converged.is_some(), || {
        format!(
            "{} s after the users stopped, meetings do not match their events ({}): {}",
            CONVERGE_LIMIT.as_secs(),
            if final_dropped {
                "after the add-on's sync trigger"
            } else {
                "the channel's last notification was acknowledged"
            },
            last.join("; ")
        )
    });
    let notifications = notification_figures(&cal).await;

    // No duplicate side effect, no orphan.
    let shown = shown_conferences(&cal).await;
    let meetings = provider.meetings();
    let (duplicates, orphans) = duplicates_and_orphans(&meetings, &shown, &event_of_title);
    verdict.check(duplicates.is_empty(), || {
        format!("duplicate meetings: {}", duplicates.join("; "))
    });
    verdict.check(orphans.is_empty(), || {
        format!(
            "orphan meetings (live, shown by no live event): {}",
            orphans.join("; ")
        )
    });
    let mut created: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in provider.effects().iter().filter(|e| e.kind == "create") {
        let m = provider.meeting(&e.meeting_id).unwrap();
        let event = event_of_meeting(&m, &event_of_title).unwrap_or_else(|| "?".into());
        created.entry(event).or_default().push(e.meeting_id.clone());
    }
    let twice: Vec<String> = created
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(event, ids)| format!("event {event}: meetings {ids:?} created"))
        .collect();
    verdict.check(twice.is_empty(), || {
        format!(
            "the provider created more than one meeting for an event: {}",
            twice.join("; ")
        )
    });
    {
        let m = lock(&ctx.model);
        let events_with_meeting = m.events.values().filter(|e| e.meeting.is_some()).count();
        verdict.check(created.len() == events_with_meeting, || {
            format!(
                "the provider created meetings for {} events ({:?}); the add-on was answered for {events_with_meeting}",
                created.len(),
                created.keys().collect::<Vec<_>>()
            )
        });
        for (id, e) in &m.events {
            verdict.check(e.answers.len() <= 1, || {
                format!(
                    "event {id}: the add-on was answered different conferences {:?}",
                    e.answers
                )
            });
        }
        for f in &m.create_failures {
            verdict.fail(f.clone());
        }
    }
    let bad_signatures = lock(&provider.state).bad_signatures;
    verdict.check(bad_signatures == 0, || {
        format!("{bad_signatures} provider calls had a bad signature")
    });
    for e in &pool.unexpected {
        verdict.fail(e.clone());
    }
    for w in &pool.workers {
        for log in w.panicked() {
            verdict.fail(format!("a worker panicked: see {log}"));
        }
    }
    let serving_at_end = pool.serving();

    // Figures.
    let m = lock(&ctx.model);
    let measured: Vec<Duration> = failovers
        .iter()
        .filter_map(|f| f.retried.as_ref().map(|(t, _)| *t))
        .collect();
    let takeovers: Vec<Duration> = failovers
        .iter()
        .filter_map(|f| f.took_over.as_ref().map(|(t, _)| *t))
        .collect();
    let (median, max) = median_max(&measured);
    let (takeover_median, takeover_max) = median_max(&takeovers);
    let (create_median, create_max) = median_max(&m.create_latency);
    let (requests, passed_on, none_reached) = nginx.figures();
    let calls = tap.calls();
    let mut calls_by_worker: BTreeMap<String, u64> = BTreeMap::new();
    for c in &calls {
        *calls_by_worker.entry(format!("w{}", c.slot)).or_default() += 1;
    }
    say(format!(
        "ha figures (HA_SEED={seed:#x}, {:.1} s):\n\
         \x20 failover (SIGKILL mid provider call -> the work retried by another worker; the held call done or lost at the provider): {}; median {median:.3} s, max {max:.3} s ({} measured of {} kills; {} probes found no call)\n\
         \x20 another worker taking over (starting to serve) after such a kill: {}\n\
         \x20 kills {} (SIGKILL), restarts {}; workers serving at the end: {serving_at_end:?}\n\
         \x20 changes: {} on {} events; add-on creates: median {create_median:.2} s, max {create_max:.2} s to an answer, {} unanswered attempts retried\n\
         \x20 provider calls by worker: {calls_by_worker:?}; provider: {}\n\
         \x20 nginx: {requests} requests, {passed_on} passed on to another worker, {none_reached} answered 502 (no worker answered: not listening, or died mid-request)\n\
         \x20 push notifications: {} delivered ({} after a retry), {} dropped by Calendar\n\
         \x20 converged {} after the users stopped{}; duplicates {}, orphans {}\n\
         \x20 loadavg at the end: {}",
        test_started.elapsed().as_secs_f64(),
        failovers
            .iter()
            .map(|f| format!(
                "{} ({} {})",
                f.retried
                    .as_ref()
                    .map(|(t, _)| format!("{:.3} s", t.as_secs_f64()))
                    .unwrap_or_else(|| "none".into()),
                f.call.kind,
                if f.to_provider { "done" } else { "lost" }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        measured.len(),
        failovers.len(),
        probes_without_call,
        if takeovers.is_empty() {
            "none (the other workers were serving already)".to_owned()
        } else {
            format!(
                "median {takeover_median:.3} s, max {takeover_max:.3} s ({} of {} kills)",
                takeovers.len(),
                failovers.len()
            )
        },
        pool.kills,
        pool.restarts,
        m.changes
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        m.events.len(),
        m.create_retries,
        provider.summary(),
        notifications.0,
        notifications.1,
        notifications.2,
        converged
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .unwrap_or_else(|| "NOT".into()),
        if final_dropped {
            " (with the add-on's sync trigger)"
        } else {
            ""
        },
        duplicates.len(),
        orphans.len(),
        loadavg(),
    ));
    drop(m);
    if verdict.failed() > 0 {
        for w in &pool.workers {
            eprintln!(
                "--- worker {} (incarnation {}) log tail:\n{}",
                w.name(),
                w.incarnation,
                tail(&w.log, 30)
            );
        }
        eprintln!(
            "--- nginx error.log tail:\n{}",
            tail(&nginx.dir.join("error.log"), 20)
        );
    }
    drop(pool);
    drop(nginx);
    verdict.finish();
}
