//! `confsync doctor --config FILE`: checks a deployment's configuration against the real
//! systems, one line per check (`PASS`, `FAIL` with a hint, or `SKIP` with the reason), and
//! exits 0 only when no check failed.
//!
//! The checks, in order:
//! 1. `config`: the file loads (keys, bounds, environment overrides, secrets resolvable).
//! 2. `store migrations`: the migrations recorded in the store are compared with those this
//!    binary knows *before* the store is opened: a store migrated by a newer confsync (or with a
//!    migration that failed half way) fails and is left untouched. Otherwise the store is opened
//!    the way `confsync serve` opens it: a missing SQLite file is created and pending migrations
//!    are applied (the line says so), since running the same binary's `serve` would do exactly
//!    that at its start.
//! 3. `store writable`: a row added and removed in one committed write transaction (the write
//!    lock taken, the file written, nothing left behind).
//! 4. `store writers`: SQLite: whether a `confsync serve` (or `sync`) holds the store's
//!    single-process claim, i.e. runs on it (informational: a running service is not a
//!    failure); Postgres: the workers holding duties now. Never a failure once the store opened.
//! 5. `clock`: the local clock against the `Date` header of an answer from `google.base_url`.
//!    Fails beyond [`MAX_SKEW`] (see there for the figure).
//! 6. `google credentials`: a service account gets a token as a configured calendar's owner
//!    (domain-wide delegation: `unauthorized_client` means the scope is not granted, and the
//!    hint names the client id and the exact scope) and reads that calendar (`calendars.get`);
//!    a bearer token reads it; per-user OAuth: the token endpoint is asked to redeem a made-up
//!    authorization code (Google answers `invalid_grant` to a known client and
//!    `invalid_client` to an unknown one or a wrong secret; nothing is granted either way), and
//!    when a configured calendar's owner has connected, their grant is refreshed and the
//!    calendar read. Without a connected owner that part is said not to be checked.
//! 7. `provider credentials`: the adapter's harmless read
//!    ([`confsync_providers::ConferenceProvider::check`]).
//! 8. `public url`: `GET {public_url}healthz/identity?nonce=N` must answer the HMAC of a fresh
//!    nonce under this store's id (`confsync_service::health`): a confsync on *this* store, not
//!    some other server or another deployment's confsync. This needs `confsync serve` running.
//!    Not configured: SKIP, and not a failure: without `public_url` confsync runs without push
//!    channels (the add-on's trigger and the sweep keep calendars in step), which is a valid
//!    deployment; per-user OAuth needs it, and the config check already refuses that without it.
//!
//! A check that cannot run because an earlier one failed is a SKIP naming that check (the exit
//! code is non-zero anyway, from the failure). Nothing secret is printed: store locations are
//! redacted, tokens, keys and client secrets never appear, and provider errors carry only
//! status lines and short bodies, as in the logs.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confsync_gcal::auth::{AuthError, CALENDAR_SCOPE, ServiceAccountKey, ServiceAccountTokens};
use confsync_gcal::{Client, RetryPolicy, StaticToken, TokenSource};
use confsync_providers::ProviderError;
use confsync_store::Store;

use crate::config::Config;

/// The largest clock difference with Google that passes. A synchronised (NTP) clock is within
/// milliseconds, so anything past a few seconds means the clock is not synchronised. The
/// tightest consumer is the Postgres store's leases (`serve.lease_ms`, 15 s by default), which
/// assume workers' clocks agree well within a lease: two workers 5 s off in opposite directions
/// are 10 s apart. The rest tolerate more: identity tokens a minute, service-account assertions
/// and webhook signatures five minutes. `Date` has a resolution of one second, and the
/// request's round trip is taken out of the measure (the skew reported is the smallest one the
/// answer allows).
pub const MAX_SKEW: Duration = Duration::from_secs(5);

/// How long any one remote call of the doctor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone)]
struct Line {
    status: Status,
    name: &'static str,
    detail: String,
    hint: Option<String>,
}

#[derive(Default)]
struct Report {
    lines: Vec<Line>,
}

impl Report {
    fn add(&mut self, status: Status, name: &'static str, detail: impl Into<String>) {
        let line = Line {
            status,
            name,
            detail: detail.into(),
            hint: None,
        };
        print_line(&line);
        self.lines.push(line);
    }

    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(Status::Pass, name, detail);
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.add(Status::Skip, name, detail);
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, hint: impl Into<String>) {
        let line = Line {
            status: Status::Fail,
            name,
            detail: detail.into(),
            hint: Some(hint.into()),
        };
        print_line(&line);
        self.lines.push(line);
    }

    fn failed(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.status == Status::Fail)
            .count()
    }
}

fn print_line(line: &Line) {
    let status = match line.status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
    };
    let mut out = format!("{status}  {:<21} {}", line.name, one_line(&line.detail));
    if let Some(hint) = &line.hint {
        let _ = write!(out, "\n      hint: {}", one_line(hint));
    }
    println!("{out}");
}

/// Text on one line (errors may carry newlines from bodies).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `confsync doctor --config FILE`.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let mut report = Report::default();
    let config = match Config::load(config_path) {
        Ok(config) => {
            report.pass(
                "config",
                format!("{} loads and is valid", config_path.display()),
            );
            Some(config)
        }
        Err(e) => {
            report.fail(
                "config",
                format!("{e:#}"),
                format!(
                    "`confsync config check --config {}` explains each key; `confsync config example` lists them all",
                    config_path.display()
                ),
            );
            None
        }
    };
    if let Some(config) = config {
        check_all(&config, &mut report).await;
    } else {
        for name in [
            "store",
            "clock",
            "google credentials",
            "provider credentials",
            "public url",
        ] {
            report.skip(name, "skipped: the config did not load");
        }
    }
    let failed = report.failed();
    if failed > 0 {
        // The report is the output: no error trace after it, just the count and the code.
        eprintln!(
            "{failed} of {} checks failed (hints above)",
            report.lines.len()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    println!("all checks passed");
    Ok(())
}

async fn check_all(config: &Config, report: &mut Report) {
    let store = check_store(config, report).await;
    check_clock(config, report).await;
    check_google(config, store.as_ref(), report).await;
    check_provider(config, store.as_ref(), report).await;
    check_public_url(config, store.as_ref(), report).await;
    if let Some(store) = store {
        store.close().await;
    }
}

fn list(versions: &[i64]) -> String {
    versions
        .iter()
        .map(|v| format!("{v:04}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store checks; answers the opened store when it opened.
async fn check_store(config: &Config, report: &mut Report) -> Option<Store> {
    let location = config.store.location();
    let shown = confsync_store::redact_location(&location);
    let which = if config.store.url.is_some() {
        "[store].url (CONFSYNC_STORE_URL)"
    } else {
        "[store].path (CONFSYNC_STORE_PATH)"
    };
    let skip_rest = |report: &mut Report, why: &str| {
        report.skip("store writable", format!("skipped: {why}"));
        report.skip("store writers", format!("skipped: {why}"));
    };
    let inspected = match confsync_store::inspect_migrations(&location).await {
        Ok(inspected) => inspected,
        Err(e) => {
            report.fail(
                "store migrations",
                format!("cannot read the store {shown}: {e}"),
                format!(
                    "check {which}: the file's directory and permissions, or that Postgres is reachable with those credentials"
                ),
            );
            skip_rest(report, "the store did not open");
            return None;
        }
    };
    let note = match &inspected {
        None => {
            " (the store did not exist: created, as `confsync serve` does at its start)".to_owned()
        }
        Some(found) => {
            let unknown = found.unknown();
            if !unknown.is_empty() {
                report.fail(
                    "store migrations",
                    format!(
                        "{shown} was migrated by a newer confsync: migration {} unknown to this binary (it knows up to {:04}); left untouched",
                        list(&unknown),
                        found.known.last().copied().unwrap_or(0)
                    ),
                    "run the confsync version that migrated the store (or a newer one); going back to this version needs the backup taken before the upgrade",
                );
                skip_rest(report, "the store was not opened");
                return None;
            }
            if !found.failed.is_empty() {
                report.fail(
                    "store migrations",
                    format!(
                        "{shown}: migration {} failed half way; left untouched",
                        list(&found.failed)
                    ),
                    "restore the backup taken before the upgrade, or repair the schema by hand and delete the failed row of _sqlx_migrations; the service's log at that start says what failed",
                );
                skip_rest(report, "the store was not opened");
                return None;
            }
            let pending = found.pending();
            if pending.is_empty() {
                String::new()
            } else {
                format!(
                    " (pending migration {} applied, as `confsync serve` does at its start)",
                    list(&pending)
                )
            }
        }
    };
    let store = match config.store.open().await {
        Ok(store) => store,
        Err(e) => {
            report.fail(
                "store migrations",
                format!("cannot open {shown}: {e:#}"),
                format!(
                    "check {which}: the file's directory and permissions (a read-only filesystem?), free space, or the Postgres server"
                ),
            );
            skip_rest(report, "the store did not open");
            return None;
        }
    };
    let known = match confsync_store::inspect_migrations(&location).await {
        Ok(Some(after)) => after.known.last().copied().unwrap_or(0),
        _ => 0,
    };
    report.pass(
        "store migrations",
        format!(
            "{} store {shown} at migration {known:04}, the newest this binary knows{note}",
            store.backend()
        ),
    );
    match store.probe_write().await {
        Ok(()) => report.pass(
            "store writable",
            "a write went through (a row added and removed in one transaction)",
        ),
        Err(e) => report.fail(
            "store writable",
            format!("a write was refused: {e}"),
            match store.backend() {
                "sqlite" => "the file and its directory must be writable by this user (not a read-only filesystem), the disk must have space, and no other program may hold a write transaction open (\"database is locked\")",
                _ => "the Postgres role needs INSERT and DELETE on the schema's tables, and the database must not be read-only (a replica?) or out of space",
            },
        ),
    }
    match store.claimed_by_another_process() {
        Ok(Some(true)) => report.pass(
            "store writers",
            "a confsync process (`serve` or `sync`) holds this SQLite store's single-process claim: it is running; no other may run on it",
        ),
        Ok(Some(false)) => report.pass(
            "store writers",
            "no confsync process runs on this SQLite store (nobody holds its single-process claim)",
        ),
        Ok(None) => match store.duties().await {
            Ok(duties) => {
                let now = store.clock_ms();
                let mut holders: Vec<String> = duties
                    .into_iter()
                    .filter(|(_, _, until)| *until > now)
                    .map(|(_, holder, _)| holder)
                    .collect();
                holders.sort();
                holders.dedup();
                if holders.is_empty() {
                    report.pass(
                        "store writers",
                        "Postgres: no worker holds a duty now (no `confsync serve` running, or one just starting); several workers may share this store",
                    );
                } else {
                    report.pass(
                        "store writers",
                        format!(
                            "Postgres: live workers holding duties: {}; several workers may share this store",
                            holders.join(", ")
                        ),
                    );
                }
            }
            Err(e) => report.fail(
                "store writers",
                format!("cannot read the workers' duties: {e}"),
                "the Postgres role needs SELECT on the schema's tables",
            ),
        },
        Err(e) => report.fail(
            "store writers",
            format!("cannot look at the single-process claim: {e}"),
            "the lock file next to the database (<db>.lock) must be readable and writable by this user",
        ),
    }
    Some(store)
}

/// The local clock against Google's `Date`.
async fn check_clock(config: &Config, report: &mut Report) {
    let url = format!(
        "{}calendar/v3/users/me/calendarList",
        config.google.base_url
    );
    let http = match reqwest::Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            report.fail("clock", format!("cannot build an HTTP client: {e}"), "");
            return;
        }
    };
    let before = chrono::Utc::now();
    let answer = http.get(&url).send().await;
    let after = chrono::Utc::now();
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            report.fail(
                "clock",
                format!(
                    "could not reach {} to read its Date: {}",
                    config.google.base_url,
                    transport(&e)
                ),
                "check google.base_url (CONFSYNC_GOOGLE_BASE_URL) and this machine's network (proxy, firewall, DNS)",
            );
            return;
        }
    };
    let Some(date) = answer
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
    else {
        report.fail(
            "clock",
            format!(
                "{} answered without a readable Date header",
                config.google.base_url
            ),
            "google.base_url should be Google's root URL (https://www.googleapis.com/); a proxy in between may drop the header",
        );
        return;
    };
    let date = date.with_timezone(&chrono::Utc);
    match skew(before, after, date) {
        Ok(offset) => {
            let seconds = offset.num_milliseconds() as f64 / 1000.0;
            let (how, by) = if seconds >= 0.0 {
                ("behind", seconds)
            } else {
                ("ahead of", -seconds)
            };
            let detail = format!(
                "this machine's clock is {by:.1} s {how} Google's (Date header; round trip {} ms)",
                (after - before).num_milliseconds()
            );
            if offset.abs() > chrono::Duration::from_std(MAX_SKEW).unwrap_or_default() {
                report.fail(
                    "clock",
                    format!("{detail}: more than {} s", MAX_SKEW.as_secs()),
                    "synchronise the clock (NTP: chrony or systemd-timesyncd); Postgres workers' leases and users' identity tokens depend on it",
                );
            } else {
                report.pass("clock", detail);
            }
        }
        Err(()) => report.fail("clock", "the clock moved backwards during the request", ""),
    }
}

/// How far the server's clock is ahead of ours, the smallest the answer allows: `date` (whole
/// seconds) stood for an instant in `[date, date + 1 s)`, and the server read it between
/// `before` and `after` of our clock. Zero when the two overlap.
fn skew(
    before: chrono::DateTime<chrono::Utc>,
    after: chrono::DateTime<chrono::Utc>,
    date: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::Duration, ()> {
    if after < before {
        return Err(());
    }
    let date_end = date + chrono::Duration::seconds(1);
    Ok(if date > after {
        date - after
    } else if date_end < before {
        date_end - before
    } else {
        chrono::Duration::zero()
    })
}

/// A transport error without its URL (which may carry a host the operator configured, fine,
/// but also query secrets elsewhere: kept short either way).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut root = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            root = s.to_string();
            source = s.source();
        }
        if root.contains("://") {
            "transport error".to_owned()
        } else {
            root
        }
    }
}

/// The calendar the Google check reads, and whose owner it acts as: the first configured one,
/// else the first the store knows.
async fn calendar_to_read(config: &Config, store: Option<&Store>) -> Option<String> {
    if let Some(first) = config.sync.calendars.first() {
        return Some(first.clone());
    }
    let store = store?;
    store
        .calendars()
        .await
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.calendar_id)
}

fn doctor_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        max_retry_after: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

/// Reads `calendar_id` with `tokens`; the error as text with a hint.
async fn read_calendar(
    base_url: &str,
    tokens: Arc<dyn TokenSource>,
    calendar_id: &str,
) -> Result<(), (String, String)> {
    let client = Client::builder(base_url, tokens)
        .retry(doctor_retry())
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| (e.to_string(), "check google.base_url".to_owned()))?;
    match client.get_calendar(calendar_id).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let hint = match e.status() {
                Some(404) => format!(
                    "calendar {calendar_id:?} does not exist or is not shared with this account: check [sync] calendars"
                ),
                Some(403) => "the account may not read this calendar, or the Calendar API is not enabled in the Cloud project (APIs & Services > Library > Google Calendar API)".to_owned(),
                Some(401) => "the credentials were refused".to_owned(),
                _ => "check google.base_url and the network; a retry may pass".to_owned(),
            };
            Err((e.to_string(), hint))
        }
    }
}

async fn check_google(config: &Config, store: Option<&Store>, report: &mut Report) {
    const NAME: &str = "google credentials";
    let google = &config.google;
    let calendar = calendar_to_read(config, store).await;
    if let Some(settings) = &google.oauth {
        check_google_oauth(config, settings, store, calendar, report).await;
        return;
    }
    if let Some(path) = &google.service_account_file {
        let key = match ServiceAccountKey::from_file(path) {
            Ok(key) => key,
            Err(e) => {
                report.fail(
                    NAME,
                    format!("{}: {e}", path.display()),
                    "google.service_account_file (CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE) must be the JSON key file as the Cloud console downloads it",
                );
                return;
            }
        };
        // The numeric client id the Admin console asks for (not a secret).
        let client_id = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| {
                v.get("client_id")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "(the key file's client_id)".to_owned());
        let owner = calendar
            .as_deref()
            .and_then(confsync_service::oauth::implied_owner)
            .or_else(|| google.subject.clone());
        let Some(owner) = owner else {
            report.fail(
                NAME,
                match &calendar {
                    Some(c) => format!(
                        "no user to act as for calendar {c:?}: it is not a user's primary calendar and google.subject is unset"
                    ),
                    None => "no calendar to read: none under [sync] calendars or in the store, and google.subject is unset".to_owned(),
                },
                "list a user's calendar under [sync] calendars, or set google.subject to a user of the domain",
            );
            return;
        };
        let target = calendar.clone().unwrap_or_else(|| "primary".to_owned());
        let email = key.client_email().to_owned();
        let tokens = ServiceAccountTokens::new(
            key,
            Some(owner.clone()),
            vec![CALENDAR_SCOPE.to_owned()],
            reqwest::Client::new(),
        )
        .with_retry_backoff(Duration::from_millis(200));
        if let Err(e) = tokens.access_token().await {
            let reason = match &e {
                AuthError::Endpoint(g) => g.reason().map(str::to_owned),
                _ => None,
            };
            let (detail, hint) = match (&e, reason.as_deref()) {
                (_, Some("unauthorized_client")) => (
                    format!(
                        "domain-wide delegation is not granted: the token endpoint answered unauthorized_client for service account {email} acting as {owner}"
                    ),
                    format!(
                        "in the Google Admin console (Security > Access and data control > API controls > Manage domain-wide delegation) add client ID {client_id} with the OAuth scope {CALENDAR_SCOPE} (the only scope confsync asks for); it can take a few minutes to apply"
                    ),
                ),
                (AuthError::InvalidGrant { .. }, _) => (
                    format!("the token endpoint refused the grant for {email} acting as {owner}: {e}"),
                    format!(
                        "{owner} must be an existing user of the Workspace domain; the key must not be deleted or disabled (IAM > Service accounts > Keys); and this machine's clock must be right (see the clock check)"
                    ),
                ),
                (_, Some("invalid_client")) => (
                    format!("the token endpoint does not know this key: {e}"),
                    "the service account or this key was deleted or disabled: create a new key (IAM > Service accounts > Keys) and point google.service_account_file at it".to_owned(),
                ),
                _ => (
                    format!("no token for {email} acting as {owner}: {e}"),
                    "check the network to the key file's token_uri; a retry may pass".to_owned(),
                ),
            };
            report.fail(NAME, detail, hint);
            return;
        }
        match read_calendar(&google.base_url, Arc::new(tokens), &target).await {
            Ok(()) => report.pass(
                NAME,
                format!(
                    "read calendar {target} as {owner} (service account {email}; delegation of {CALENDAR_SCOPE} granted)"
                ),
            ),
            Err((detail, hint)) => report.fail(NAME, detail, hint),
        }
        return;
    }
    let Some(token) = &google.token else {
        report.fail(
            NAME,
            "no Google credentials configured",
            "set CONFSYNC_GOOGLE_TOKEN (one user), google.service_account_file (a Workspace domain) or [google.oauth] (users connect their calendars)",
        );
        return;
    };
    let target = calendar.unwrap_or_else(|| "primary".to_owned());
    match read_calendar(
        &google.base_url,
        Arc::new(StaticToken(token.clone())),
        &target,
    )
    .await
    {
        Ok(()) => report.pass(
            NAME,
            format!("read calendar {target} with the bearer token (google.token / CONFSYNC_GOOGLE_TOKEN)"),
        ),
        Err((detail, hint)) => report.fail(
            NAME,
            detail,
            format!("{hint}; a bearer token (CONFSYNC_GOOGLE_TOKEN) lasts about an hour: a lasting deployment uses a service account or per-user OAuth"),
        ),
    }
}

async fn check_google_oauth(
    config: &Config,
    settings: &crate::config::OAuthConfig,
    store: Option<&Store>,
    calendar: Option<String>,
    report: &mut Report,
) {
    const NAME: &str = "google credentials";
    let public_url = config.serve.public_url.clone().unwrap_or_default();
    let flow = confsync_gcal::auth::AuthCodeFlow {
        auth_uri: settings.auth_uri.clone(),
        token_uri: settings.token_uri.clone(),
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.clone(),
        redirect_uri: format!("{public_url}oauth/google/callback"),
        scopes: vec![CALENDAR_SCOPE.to_owned()],
        http: reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default(),
    };
    let verifier = match confsync_gcal::auth::PkceVerifier::generate() {
        Ok(v) => v,
        Err(e) => {
            report.fail(NAME, e.to_string(), "");
            return;
        }
    };
    // A made-up code: a known client with the right secret gets invalid_grant, anything
    // else invalid_client; nothing is granted either way.
    let client = match flow
        .exchange("confsync-doctor-made-up-code", &verifier)
        .await
    {
        Err(AuthError::InvalidGrant { .. }) => format!(
            "OAuth client {} accepted by the token endpoint (a made-up code was refused as invalid_grant)",
            settings.client_id
        ),
        Err(AuthError::Endpoint(e))
            if matches!(e.reason(), Some("invalid_client" | "unauthorized_client")) =>
        {
            report.fail(
                NAME,
                format!("the token endpoint refused the OAuth client {}: {e}", settings.client_id),
                "check google.oauth.client_id and client_secret (a Web application client of the Cloud project, APIs & Services > Credentials)",
            );
            return;
        }
        Err(e) => {
            report.fail(
                NAME,
                format!("the token endpoint did not answer as expected: {e}"),
                "check google.oauth.token_uri and the network to it",
            );
            return;
        }
        Ok(_) => {
            report.fail(
                NAME,
                "the token endpoint accepted a made-up authorization code",
                "google.oauth.token_uri does not point at a real OAuth token endpoint",
            );
            return;
        }
    };
    let cipher = match confsync_gcal::auth::TokenCipher::from_base64(&settings.token_key) {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                NAME,
                format!("google.oauth.token_key: {e}"),
                "`confsync config key` prints a new one (users then connect again)",
            );
            return;
        }
    };
    let (Some(store), Some(calendar)) = (store, calendar) else {
        report.pass(
            NAME,
            format!(
                "{client}; no configured calendar (or no store) to read as its owner: users' grants not checked"
            ),
        );
        return;
    };
    let owner = match store.calendar_owner(&calendar).await {
        Ok(Some(owner)) => Some(owner),
        _ => confsync_service::oauth::implied_owner(&calendar),
    };
    let user = match &owner {
        Some(owner) => store.user(owner).await.ok().flatten(),
        None => None,
    };
    let Some(user) = user else {
        report.pass(
            NAME,
            format!(
                "{client}; calendar {calendar}'s owner has not connected yet: their grant is not checked (they connect through the add-on)"
            ),
        );
        return;
    };
    if user.needs_reauth {
        report.fail(
            NAME,
            format!(
                "{client}; but {} (owner of {calendar}) must connect again: their grant was revoked or expired",
                user.user_id
            ),
            "the user opens the add-on again (its AUTHENTICATION answer links to the sign-in); /v1/status lists calendars needing re-authorisation",
        );
        return;
    }
    let refresh = match cipher.decrypt(&user.refresh_token_sealed, &user.user_id) {
        Ok(r) => r,
        Err(e) => {
            report.fail(
                NAME,
                format!("{client}; but {}'s stored grant cannot be opened: {e}", user.user_id),
                "google.oauth.token_key is not the key the grants were sealed with: restore it (or users connect again)",
            );
            return;
        }
    };
    let tokens = flow.token_source(refresh).with_account(&user.user_id);
    match read_calendar(&config.google.base_url, Arc::new(tokens), &calendar).await {
        Ok(()) => report.pass(
            NAME,
            format!(
                "{client}; read calendar {calendar} as {} with their grant",
                user.user_id
            ),
        ),
        Err((detail, hint)) => report.fail(NAME, format!("{client}; but {detail}"), hint),
    }
}

/// What to check in `[provider.<kind>]` when its credentials are refused.
fn credential_hint(kind: &str) -> String {
    match kind {
        "zoom" => "check [provider.zoom] account_id, client_id and client_secret (the Server-to-Server OAuth app's, activated, with meeting scopes); secrets may be env:NAME or file:/path".to_owned(),
        "teams" => "check [provider.teams] tenant_id, client_id and client_secret (the secret's value, not its id) of the app registration, granted OnlineMeetings.ReadWrite.All with admin consent".to_owned(),
        "webex" => "check [provider.webex] access_token, or client_id, client_secret and refresh_token of the integration (refresh tokens expire after 90 days unused)".to_owned(),
        "daily" => "check [provider.daily] api_key (Daily dashboard > Developers)".to_owned(),
        "bigbluebutton" => "check [provider.bigbluebutton] shared_secret (`bbb-conf --secret` on the server) and checksum (the algorithm the server accepts)".to_owned(),
        "jitsi" => "check [provider.jitsi]'s JWT key settings".to_owned(),
        other => format!("check the credentials in [provider.{other}]"),
    }
}

async fn check_provider(config: &Config, store: Option<&Store>, report: &mut Report) {
    const NAME: &str = "provider credentials";
    let kind = config.provider.kind.as_str();
    let needs_store = matches!(kind, "local" | "jitsi" | "bigbluebutton");
    let stand_in;
    let store = match store {
        Some(store) => store,
        None if needs_store => {
            report.skip(
                NAME,
                format!(
                    "skipped: provider {kind} keeps its meetings in the store, which did not open"
                ),
            );
            return;
        }
        None => match Store::memory().await {
            // Only to build the adapter: this one keeps nothing in the store.
            Ok(memory) => {
                stand_in = memory;
                &stand_in
            }
            Err(e) => {
                report.fail(NAME, format!("cannot build the adapter: {e}"), "");
                return;
            }
        },
    };
    let provider = match crate::sync::provider_from(config, store) {
        Ok(provider) => provider,
        Err(e) => {
            report.fail(
                NAME,
                format!("{e:#}"),
                format!("`confsync config example` shows every key of [provider.{kind}]"),
            );
            return;
        }
    };
    let outcome = tokio::time::timeout(CALL_TIMEOUT * 2, provider.check()).await;
    match outcome {
        Ok(Ok(what)) => report.pass(NAME, what),
        Err(_) => report.fail(
            NAME,
            format!(
                "{kind}: no answer within {} s",
                (CALL_TIMEOUT * 2).as_secs()
            ),
            format!("check [provider.{kind}]'s base URL and the network to it"),
        ),
        Ok(Err(e)) => {
            let hint = match &e {
                ProviderError::Reauth { .. } => credential_hint(kind),
                ProviderError::Permanent { detail, .. } if detail.contains("checksum") => {
                    credential_hint(kind)
                }
                ProviderError::Permanent { .. } | ProviderError::NotFound { .. } => format!(
                    "the provider refused the request: check [provider.{kind}] (the user or account it names, its permissions); {}",
                    credential_hint(kind)
                ),
                ProviderError::Transient { .. } | ProviderError::RateLimited { .. } => format!(
                    "check [provider.{kind}]'s base URL and the network to it; a retry may pass"
                ),
                ProviderError::Conflict { .. } | ProviderError::Recreate { .. } => {
                    credential_hint(kind)
                }
            };
            report.fail(NAME, e.to_string(), hint);
        }
    }
}

async fn check_public_url(config: &Config, store: Option<&Store>, report: &mut Report) {
    const NAME: &str = "public url";
    let Some(public_url) = &config.serve.public_url else {
        report.skip(
            NAME,
            "not configured (serve.public_url): no push channels, calendars follow the add-on's trigger and the sweep; not a failure",
        );
        return;
    };
    let Some(store) = store else {
        report.skip(
            NAME,
            "skipped: the store did not open, so the answer cannot be compared with it",
        );
        return;
    };
    let id = match store
        .store_id(&confsync_service::health::fresh_store_id())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            report.fail(
                NAME,
                format!("cannot read the store's id: {e}"),
                "see the store checks",
            );
            return;
        }
    };
    let nonce: String = confsync_service::health::fresh_store_id()[..32].to_owned();
    let url = format!("{public_url}healthz/identity?nonce={nonce}");
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap_or_default();
    let started = Instant::now();
    let answer = match http.get(&url).send().await {
        Ok(answer) => answer,
        Err(e) => {
            report.fail(
                NAME,
                format!("{public_url} did not answer: {}", transport(&e)),
                "start `confsync serve`, and check that public_url reaches it from here (DNS, TLS certificate, the proxy or load balancer in front); Google must reach it from the internet too",
            );
            return;
        }
    };
    let status = answer.status().as_u16();
    let body: Option<serde_json::Value> = answer.json().await.ok();
    let service = body
        .as_ref()
        .and_then(|b| b.get("service"))
        .and_then(|s| s.as_str());
    let proof = body
        .as_ref()
        .and_then(|b| b.get("proof"))
        .and_then(|s| s.as_str());
    match (status, service, proof) {
        (200, Some("confsync"), Some(proof))
            if proof == confsync_service::health::identity_proof(&id, &nonce) =>
        {
            report.pass(
                NAME,
                format!(
                    "{public_url} answers as confsync on this store ({} ms)",
                    started.elapsed().as_millis()
                ),
            );
        }
        (200, Some("confsync"), _) => report.fail(
            NAME,
            format!("{public_url} answers as a confsync, but one running on another store"),
            "public_url points at another deployment (staging? an old host?), or that service's [store] is not this config's",
        ),
        (404, _, _) => report.fail(
            NAME,
            format!("{public_url} answered 404 to /healthz/identity: not confsync (or a confsync older than this one)"),
            "point public_url (and the proxy in front) at `confsync serve`'s listen address, running this version",
        ),
        (status, _, _) => report.fail(
            NAME,
            format!("{public_url} answered HTTP {status}, not as confsync"),
            "point public_url (and the proxy in front) at `confsync serve`'s listen address; a 503 means the service cannot read its store",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn skew_is_the_least_the_date_header_allows() {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        // Date 100 s (whole) stands for [100 s, 101 s): a request from 100.2 to 100.4 overlaps.
        assert_eq!(
            skew(at(100_200), at(100_400), at(100_000)).unwrap(),
            chrono::Duration::zero()
        );
        // Google ahead: Date 110 s after a request that ended at 100.4 s.
        assert_eq!(
            skew(at(100_200), at(100_400), at(110_000))
                .unwrap()
                .num_milliseconds(),
            9_600
        );
        // Google behind: Date 90 s ([90, 91)) for a request from 100.2 s.
        assert_eq!(
            skew(at(100_200), at(100_400), at(90_000))
                .unwrap()
                .num_milliseconds(),
            -9_200
        );
        assert!(skew(at(2), at(1), at(0)).is_err());
    }

    #[test]
    fn lines_stay_on_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
