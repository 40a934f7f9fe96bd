//! The configuration file (TOML) of `confsync sync` and `confsync serve`, with CONFSYNC_*
//! environment overrides.
//!
//! Every key is described once, by a [`Section`] descriptor next to the struct serde parses it
//! into (the providers' tables next to their adapters): name, type, default, bounds, environment
//! variable and what it does. The parser takes the known keys, the bounds and the environment
//! overrides from them; `confsync config example` and README's table are rendered from them
//! ([`render`]); tests check that serde's fields, defaults and the descriptors agree.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every error
//! names the key. Secrets (the Google token) come from the environment, never from logs.
//! Commands that need only the store read only `[store]` ([`load_store`]): no provider or Google
//! secret is resolved for them.

mod render;

use std::path::{Path, PathBuf};

use confsync_providers::keys::{Key, PROVIDER_SECTIONS, Presence, Section, Type};
use serde::Deserialize;

pub use render::{example, markdown_table};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub google: GoogleConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub provider: ProviderConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub serve: ServeConfig,
}

/// Every table of the file, in the order `confsync config example` shows them.
pub fn sections() -> Vec<&'static Section> {
    let mut all = vec![&GOOGLE, &GOOGLE_OAUTH, &STORE, &PROVIDER];
    all.extend(PROVIDER_SECTIONS);
    all.extend([&SYNC, &SERVE, &SERVE_IDENTITY]);
    all
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address `confsync serve` listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Notifications for one calendar within this window make one sync.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Calendars synced at the same time.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// The safety sweep: every calendar is synced at least this often (+-25%).
    #[serde(default = "default_sweep")]
    pub sweep_minutes: u64,
    /// The public HTTPS base URL Google can reach (ends with '/'); enables push channels.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Signs organizers' join links (moderator at Jitsi and BigBlueButton): at least 32
    /// characters; `env:NAME` or `file:/path` to keep it out of the file.
    #[serde(default)]
    pub host_key: Option<String>,
    /// Signs push channel ids (at least 32 characters; `env:NAME` or `file:/path`).
    #[serde(default)]
    pub channel_key: Option<String>,
    /// Longest a request's headers may take to arrive (ms).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A connection without traffic and without a request in progress is closed after (ms).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request line plus headers (bytes).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Stops of our own unwanted push channels per minute (0: none).
    #[serde(default = "default_orphan_stops")]
    pub orphan_stops_per_minute: u32,
    /// The add-on's create is answered TEMPORARY after this long (ms).
    #[serde(default = "default_create_deadline")]
    pub create_deadline_ms: u64,
    /// On SIGTERM, running work may finish for this long (ms).
    #[serde(default = "default_shutdown_deadline")]
    pub shutdown_deadline_ms: u64,
    /// A claim on a calendar's sync or an outbox action lasts this long unless renewed (ms).
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
    /// How often the store is polled for work left by other workers (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Finished history is kept this many days.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// Per-calendar metric series for this many calendars at most (0: aggregates only).
    #[serde(default)]
    pub metrics_per_calendar: usize,
    /// Verifies the add-on users' ID tokens; None: the API key speaks for every user.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

/// The keys of `[serve]`.
pub const SERVE: Section = Section {
    path: "serve",
    doc: "`confsync serve`: the add-on API, push notifications, the sync scheduler, join links.",
    optional: false,
    keys: &[
        Key::with_env(
            "CONFSYNC_SERVE_LISTEN",
            Key::defaulted(
                "listen",
                Type::String,
                "\"127.0.0.1:8080\"",
                "The address (host:port) to listen on.",
            ),
        ),
        Key::bounded(
            "debounce_ms",
            "500",
            0,
            60_000,
            "Notifications for one calendar within this window make one sync.",
        ),
        Key::bounded("workers", "4", 1, 64, "Calendars synced at the same time."),
        Key::bounded(
            "sweep_minutes",
            "15",
            1,
            1440,
            "Every calendar is synced at least this often (+-25%), whatever the notifications.",
        ),
        Key::bounded(
            "header_read_timeout_ms",
            "10000",
            1_000,
            120_000,
            "A request's headers must arrive within this long: slow clients lose their connection instead of holding it.",
        ),
        Key::bounded(
            "idle_timeout_ms",
            "90000",
            1_000,
            3_600_000,
            "A connection without traffic for this long, and no request in progress, is closed. Behind a load balancer, make it longer than the balancer's keep-alive.",
        ),
        Key::bounded(
            "max_connections",
            "1024",
            16,
            100_000,
            "Connections served at once; more wait in the accept backlog.",
        ),
        Key::bounded(
            "max_header_bytes",
            "32768",
            8192,
            1_048_576,
            "Largest request line plus headers, in bytes; larger ones get 431.",
        ),
        Key::bounded(
            "create_deadline_ms",
            "10000",
            1_000,
            25_000,
            "The add-on's create is answered TEMPORARY after this long (the add-on waits about 30 s, and its retry resumes the same create).",
        ),
        Key::bounded(
            "shutdown_deadline_ms",
            "20000",
            0,
            300_000,
            "On SIGTERM, running syncs and provider calls may finish for this long; what did not run stays in the store and resumes at the next start.",
        ),
        Key::bounded(
            "lease_ms",
            "15000",
            2_000,
            300_000,
            "Several serve workers may share one Postgres store: a worker's claim on a calendar's sync or an outbox action lasts this long unless renewed. A worker that dies loses its work to the others at once (its liveness lock goes with it); one that stalls, after about this long.",
        ),
        Key::bounded(
            "poll_ms",
            "2000",
            200,
            60_000,
            "How often the store is polled for work another worker acknowledged and could not finish.",
        ),
        Key::bounded(
            "retention_days",
            "30",
            1,
            3_650,
            "Finished history (dead letters, channel records, finished outbox rows, expired OAuth requests) is kept this many days.",
        ),
        Key::bounded(
            "metrics_per_calendar",
            "0",
            0,
            1_000,
            "/metrics exports aggregates over every calendar (counts, the longest sync lag and counts over lag thresholds, the first channel expiry); with N above 0 it adds per-calendar series (`confsync_sync_lag_seconds{calendar_id}`, `confsync_channel_expiry_seconds{calendar_id}`) for the N calendars synced longest ago and the N whose push channel expires first.",
        ),
        Key::bounded(
            "orphan_stops_per_minute",
            "5",
            0,
            60,
            "Push channels that are ours but no longer wanted are stopped at most this often, outside the Calendar rate budgets syncs use; 0: they are left to expire.",
        ),
        Key::with_env(
            "CONFSYNC_SERVE_PUBLIC_URL",
            Key::optional(
                "public_url",
                Type::Url,
                "\"https://confsync.example.com/\"",
                "The HTTPS base URL Google can reach (ends with '/'): turns on push channels; per-user OAuth needs it (https, or http for a loopback host).",
            ),
        ),
        Key::with_env(
            "CONFSYNC_SERVE_HOST_KEY",
            Key::optional(
                "host_key",
                Type::Secret,
                "\"env:CONFSYNC_HOST_KEY\"",
                "Signs organizers' join links (GET /v1/conferences/{id} answers hostUrl): at least 32 random characters.",
            ),
        ),
        Key::with_env(
            "CONFSYNC_SERVE_CHANNEL_KEY",
            Key::optional(
                "channel_key",
                Type::Secret,
                "\"env:CONFSYNC_CHANNEL_KEY\"",
                "Signs push channel ids, so notifications for made-up channels are refused without any work: at least 32 random characters. Unset: derived from host_key, else from google.oauth.token_key, else random at each start (channels opened before a restart are then still recognised through the store until they are renewed).",
            ),
        ),
    ],
};

/// `[serve.identity]`: the ID tokens the add-on sends (`X-Confsync-Identity`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The accepted `aud` values: the add-on script's OAuth client id(s).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The issuer's JWKS.
    #[serde(default = "default_certs_url")]
    pub certs_url: String,
    /// The accepted `iss` values.
    #[serde(default = "default_issuers")]
    pub issuers: Vec<String>,
}

/// The keys of `[serve.identity]`.
pub const SERVE_IDENTITY: Section = Section {
    path: "serve.identity",
    doc: "Who is calling: the add-on sends each user's OpenID Connect ID token (ScriptApp.getIdentityToken()); with this table the API checks it and acts on a calendar only for its owner or an editor. Without it, the API key alone speaks for every user (logged at startup).",
    optional: true,
    keys: &[
        Key::required(
            "audiences",
            Type::Strings,
            "[\"1234-abc.apps.googleusercontent.com\"]",
            "The add-on script's OAuth client id(s): the accepted `aud` values.",
        ),
        Key::defaulted(
            "certs_url",
            Type::Url,
            "\"https://www.googleapis.com/oauth2/v3/certs\"",
            "The issuer's signing keys (JWKS): https, or http for a loopback host.",
        ),
        Key::defaulted(
            "issuers",
            Type::Strings,
            "[\"https://accounts.google.com\", \"accounts.google.com\"]",
            "The accepted `iss` values.",
        ),
    ],
};

fn default_certs_url() -> String {
    confsync_service::identity::GOOGLE_CERTS_URL.into()
}
fn default_issuers() -> Vec<String> {
    confsync_service::identity::GOOGLE_ISSUERS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// An https URL, or http to a loopback host (an emulator on this machine).
pub fn is_https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return url.len() > "https://".len();
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("debounce_ms", &self.debounce_ms)
            .field("workers", &self.workers)
            .field("sweep_minutes", &self.sweep_minutes)
            .field("public_url", &self.public_url)
            .field("host_key", &secret(&self.host_key))
            .field("channel_key", &secret(&self.channel_key))
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("orphan_stops_per_minute", &self.orphan_stops_per_minute)
            .field("create_deadline_ms", &self.create_deadline_ms)
            .field("shutdown_deadline_ms", &self.shutdown_deadline_ms)
            .field("lease_ms", &self.lease_ms)
            .field("metrics_per_calendar", &self.metrics_per_calendar)
            .field("poll_ms", &self.poll_ms)
            .field("retention_days", &self.retention_days)
            .field("identity", &self.identity)
            .finish()
    }
}

fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_idle_timeout() -> u64 {
    90_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_orphan_stops() -> u32 {
    5
}
fn default_create_deadline() -> u64 {
    10_000
}
fn default_shutdown_deadline() -> u64 {
    20_000
}
fn default_lease() -> u64 {
    confsync_engine::DEFAULT_LEASE_MS as u64
}
fn default_poll() -> u64 {
    2_000
}
fn default_retention_days() -> u64 {
    30
}
fn default_max_pending() -> u32 {
    1000
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_debounce() -> u64 {
    500
}
fn default_workers() -> usize {
    4
}
fn default_sweep() -> u64 {
    15
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            debounce_ms: default_debounce(),
            workers: default_workers(),
            sweep_minutes: default_sweep(),
            public_url: None,
            host_key: None,
            channel_key: None,
            header_read_timeout_ms: default_header_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            orphan_stops_per_minute: default_orphan_stops(),
            create_deadline_ms: default_create_deadline(),
            shutdown_deadline_ms: default_shutdown_deadline(),
            lease_ms: default_lease(),
            poll_ms: default_poll(),
            retention_days: default_retention_days(),
            metrics_per_calendar: 0,
            identity: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// Google's root URL, or an emulator's (`http://127.0.0.1:8085/`).
    #[serde(default = "default_google_url")]
    pub base_url: String,
    /// A bearer token (one user); better set CONFSYNC_GOOGLE_TOKEN.
    #[serde(default)]
    pub token: Option<String>,
    /// A service account's JSON key file (domain-wide delegation): each calendar is reached as
    /// its owner. Takes precedence over `token`.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// The user to act as for secondary calendars (whose ids are not a user's email).
    #[serde(default)]
    pub subject: Option<String>,
    /// Per-user OAuth: users connect their own calendars.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    /// Calendar API requests per minute per user (0: no budget).
    #[serde(default = "default_user_rpm")]
    pub user_requests_per_minute: u32,
    /// Calendar API requests per minute for the whole project (0: no budget).
    #[serde(default = "default_project_rpm")]
    pub project_requests_per_minute: u32,
}

/// The keys of `[google]`.
pub const GOOGLE: Section = Section {
    path: "google",
    doc: "Google Calendar, reached with a bearer token (one user), a service account with domain-wide delegation (each calendar as its owner), or per-user OAuth ([google.oauth]).",
    optional: false,
    keys: &[
        Key::with_env(
            "CONFSYNC_GOOGLE_BASE_URL",
            Key::defaulted(
                "base_url",
                Type::Url,
                "\"https://www.googleapis.com/\"",
                "Google's root URL, or an emulator's (\"http://127.0.0.1:8085/\"); ends with '/'.",
            ),
        ),
        Key::with_env(
            "CONFSYNC_GOOGLE_TOKEN",
            Key::optional(
                "token",
                Type::String,
                "\"...\"",
                "A bearer token: one user's calendars. Better set by its environment variable: secrets stay out of files.",
            ),
        ),
        Key::with_env(
            "CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE",
            Key::optional(
                "service_account_file",
                Type::Path,
                "\"/etc/confsync/service-account.json\"",
                "A service account's JSON key file, with domain-wide delegation: each calendar is reached as its owner. Takes precedence over token; not with [google.oauth].",
            ),
        ),
        Key::optional(
            "subject",
            Type::String,
            "\"admin@example.com\"",
            "With a service account: the user to act as for secondary calendars (whose ids are not a user's email).",
        ),
        Key::bounded(
            "user_requests_per_minute",
            "600",
            0,
            100_000,
            "Calendar API requests per minute per calendar owner (Google's default quota is 600): calls wait for the budget instead of drawing 403 rateLimitExceeded. 0: no budget.",
        ),
        Key::bounded(
            "project_requests_per_minute",
            "10000",
            0,
            1_000_000,
            "Calendar API requests per minute for the whole project. 0: no budget.",
        ),
    ],
};

/// `[google.oauth]`: the OAuth client users authorise.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Base64 of 32 bytes: the AES-256-GCM key sealing refresh tokens.
    #[serde(default)]
    pub token_key: String,
    #[serde(default = "default_auth_uri")]
    pub auth_uri: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
    /// Sign-ins waiting for their callback at once.
    #[serde(default = "default_max_pending")]
    pub max_pending_requests: u32,
}

/// The keys of `[google.oauth]`.
pub const GOOGLE_OAUTH: Section = Section {
    path: "google.oauth",
    doc: "Per-user OAuth: each user connects their own calendars at {serve.public_url}oauth/google/start (the add-on sends them there). Needs serve.public_url: the redirect URI {public_url}oauth/google/callback is registered with the OAuth client.",
    optional: true,
    keys: &[
        Key::with_env(
            "CONFSYNC_GOOGLE_OAUTH_CLIENT_ID",
            Key::required(
                "client_id",
                Type::String,
                "\"1234-abc.apps.googleusercontent.com\"",
                "The OAuth client's id.",
            ),
        ),
        Key::with_env(
            "CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET",
            Key::optional(
                "client_secret",
                Type::String,
                "\"...\"",
                "The OAuth client's secret (better set by its environment variable).",
            ),
        ),
        Key::with_env(
            "CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY",
            Key::required(
                "token_key",
                Type::String,
                "\"...\"",
                "32 random bytes, base64: seals users' refresh tokens at rest (AES-256-GCM). `confsync config key` makes one; better set by its environment variable.",
            ),
        ),
        Key::defaulted(
            "auth_uri",
            Type::Url,
            "\"https://accounts.google.com/o/oauth2/v2/auth\"",
            "Google's authorization endpoint.",
        ),
        Key::defaulted(
            "token_uri",
            Type::Url,
            "\"https://oauth2.googleapis.com/token\"",
            "Google's token endpoint.",
        ),
        Key::bounded(
            "max_pending_requests",
            "1000",
            10,
            100_000,
            "Sign-ins waiting for their callback at once; when full, /oauth/google/start answers 503 for a few minutes.",
        ),
    ],
};

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("token_key", &"***")
            .field("auth_uri", &self.auth_uri)
            .field("token_uri", &self.token_uri)
            .field("max_pending_requests", &self.max_pending_requests)
            .finish()
    }
}

fn default_auth_uri() -> String {
    confsync_gcal::auth::GOOGLE_AUTH_URI.into()
}
fn default_token_uri() -> String {
    confsync_gcal::auth::GOOGLE_TOKEN_URI.into()
}
fn default_user_rpm() -> u32 {
    600
}
fn default_project_rpm() -> u32 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file (created if missing).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A Postgres URL; when set, the store is there and `path` is not used.
    #[serde(default)]
    pub url: Option<String>,
}

/// The keys of `[store]`.
pub const STORE: Section = Section {
    path: "store",
    doc: "Where confsync keeps its state: an SQLite file (the embedded default) or Postgres (several workers).",
    optional: false,
    keys: &[
        Key::with_env(
            "CONFSYNC_STORE_PATH",
            Key::defaulted(
                "path",
                Type::Path,
                "\"confsync-data/confsync.db\"",
                "The SQLite database, created with its directory if missing.",
            ),
        ),
        Key::with_env(
            "CONFSYNC_STORE_URL",
            Key::optional(
                "url",
                Type::String,
                "\"postgres://confsync:secret@db.internal:5432/confsync\"",
                "A Postgres URL instead: when set, path is not used. Any option of the URL form is taken (sslmode=require, ...); the password never appears in logs.",
            ),
        ),
    ],
};

impl StoreConfig {
    /// What [`confsync_store::Store::open`] takes: the URL, else the file's path.
    pub fn location(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }

    /// Opens the store: Postgres when `url` is set, else the SQLite file (its directory created
    /// if missing).
    pub async fn open(&self) -> anyhow::Result<confsync_store::Store> {
        use anyhow::Context;
        if self.url.is_none()
            && let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        let location = self.location();
        confsync_store::Store::open(&location)
            .await
            .with_context(|| {
                format!(
                    "opening the store {}",
                    confsync_store::redact_location(&location)
                )
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which conferencing system: `local` (the built-in provider), `zoom`, `teams`, `webex`,
    /// `daily`, `jitsi`, `bigbluebutton` or `webhook`; the table of that name configures it.
    #[serde(default = "default_provider")]
    pub kind: String,
    /// Providers this deployment is moving away from (`confsync admin migrate-provider`): each
    /// keeps its table, so the meetings it made are still updated and deleted through it.
    #[serde(default)]
    pub previous: Vec<String>,
    /// Where the local provider's join links point (confsync serves them).
    #[serde(default = "default_join_url")]
    pub join_base_url: String,
    #[serde(default)]
    pub zoom: Option<confsync_providers::zoom::ZoomConfig>,
    #[serde(default)]
    pub teams: Option<confsync_providers::teams::TeamsConfig>,
    #[serde(default)]
    pub webex: Option<confsync_providers::webex::WebexConfig>,
    #[serde(default)]
    pub daily: Option<confsync_providers::daily::DailyConfig>,
    #[serde(default)]
    pub jitsi: Option<confsync_providers::jitsi::JitsiConfig>,
    #[serde(default)]
    pub bigbluebutton: Option<confsync_providers::bigbluebutton::BigBlueButtonConfig>,
    #[serde(default)]
    pub webhook: Option<confsync_providers::webhook::WebhookConfig>,
}

/// The keys of `[provider]`.
pub const PROVIDER: Section = Section {
    path: "provider",
    doc: "The conferencing provider: kind picks the adapter, the table [provider.<kind>] configures it. Secrets take a value, \"env:NAME\" or \"file:/path\", and never appear in logs.",
    optional: false,
    keys: &[
        Key::defaulted(
            "kind",
            Type::OneOf(&PROVIDER_KINDS),
            "\"local\"",
            "`local`: the built-in provider (meetings live in the store, join pages are served by confsync); any other needs its table below.",
        ),
        Key::defaulted(
            "previous",
            Type::Strings,
            "[]",
            "Providers this deployment moves away from (kinds, each with its table kept): meetings they made are still updated and deleted through them until `confsync admin migrate-provider` has moved them to `kind`.",
        ),
        Key::with_env(
            "CONFSYNC_PROVIDER_JOIN_BASE_URL",
            Key::defaulted(
                "join_base_url",
                Type::Url,
                "\"http://127.0.0.1:8080/\"",
                "Where the local provider's join links point: confsync's own public address (ends with '/').",
            ),
        ),
    ],
};

/// The provider kinds `provider.kind` accepts.
pub const PROVIDER_KINDS: [&str; 8] = [
    "local",
    "zoom",
    "teams",
    "webex",
    "daily",
    "jitsi",
    "bigbluebutton",
    "webhook",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Calendars to sync when none is named on the command line (besides those in the store).
    #[serde(default)]
    pub calendars: Vec<String>,
    /// Days back a full sync lists (0: everything).
    #[serde(default = "default_window")]
    pub full_sync_window_days: i64,
    /// `conferenceSolution.name` values of our add-on.
    #[serde(default = "default_solutions")]
    pub solution_names: Vec<String>,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

/// The keys of `[sync]`.
pub const SYNC: Section = Section {
    path: "sync",
    doc: "What is synced, by `confsync sync` and by the service.",
    optional: false,
    keys: &[
        Key::defaulted(
            "calendars",
            Type::Strings,
            "[]",
            "Calendars `confsync sync` handles besides those already in the store.",
        ),
        Key::bounded(
            "full_sync_window_days",
            "30",
            0,
            3650,
            "How many days back a full sync lists; 0: everything.",
        ),
        Key::defaulted(
            "solution_names",
            Type::Strings,
            "[\"confsync\"]",
            "conferenceSolution.name of our add-on: how confsync recognises its conferences (not empty).",
        ),
        Key::bounded("page_size", "2500", 1, 2500, "events.list page size."),
    ],
};

fn default_google_url() -> String {
    "https://www.googleapis.com/".into()
}
fn default_store_path() -> PathBuf {
    PathBuf::from("confsync-data/confsync.db")
}
fn default_provider() -> String {
    "local".into()
}
fn default_join_url() -> String {
    "http://127.0.0.1:8080/".into()
}
fn default_window() -> i64 {
    30
}
fn default_solutions() -> Vec<String> {
    vec!["confsync".into()]
}
fn default_page_size() -> u32 {
    2500
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            base_url: default_google_url(),
            token: None,
            service_account_file: None,
            subject: None,
            oauth: None,
            user_requests_per_minute: default_user_rpm(),
            project_requests_per_minute: default_project_rpm(),
        }
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            url: None,
        }
    }
}
impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: default_provider(),
            previous: Vec::new(),
            join_base_url: default_join_url(),
            zoom: None,
            teams: None,
            webex: None,
            daily: None,
            jitsi: None,
            bigbluebutton: None,
            webhook: None,
        }
    }
}
impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            calendars: Vec::new(),
            full_sync_window_days: default_window(),
            solution_names: default_solutions(),
            page_size: default_page_size(),
        }
    }
}

impl Config {
    /// Reads, parses, applies environment overrides and validates.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = read(path)?;
        Self::parse(&text, |k| std::env::var(k).ok())
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Parses `text`; `env` looks up CONFSYNC_* overrides.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let table = prepare(text, &env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| serde_error(e, ""))?;
        config.validate()?;
        Ok(config)
    }
}

/// `[store]` of the file at `path`, with its environment overrides: for commands that need only
/// the store (`confsync apikey`). The whole file's keys and bounds are checked, but no provider
/// or Google secret is resolved and no other table is validated.
pub fn load_store(path: &Path) -> anyhow::Result<StoreConfig> {
    let text = read(path)?;
    parse_store(&text, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// `provider.kind` and `provider.previous` of the file at `path` (checked as [`load_store`]
/// checks the file; nothing resolved): for `confsync admin migrate-provider`, which needs the
/// providers' names, not their adapters.
pub fn load_provider_names(path: &Path) -> anyhow::Result<(String, Vec<String>)> {
    let text = read(path)?;
    let mut table = prepare(&text, &|k: &str| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let provider = table.remove("provider");
    let field = |name: &str| provider.as_ref().and_then(|p| p.get(name)).cloned();
    let kind = match field("kind") {
        None => default_provider(),
        Some(v) => v
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("provider.kind must be a string"))?,
    };
    let previous = match field("previous") {
        None => Vec::new(),
        Some(v) => v
            .try_into::<Vec<String>>()
            .map_err(|_| anyhow::anyhow!("provider.previous must be a list of strings"))?,
    };
    Ok((kind, previous))
}

/// [`load_store`] on `text`.
pub fn parse_store(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreConfig, String> {
    let mut table = prepare(text, &env)?;
    match table.remove("store") {
        None => Ok(StoreConfig::default()),
        Some(store) => store.try_into().map_err(|e| serde_error(e, "store")),
    }
}

/// serde's error (`what\nin `a.b``) as `a.b: what`, `prefix` being where the value was.
fn serde_error(e: toml::de::Error, prefix: &str) -> String {
    let text = e.to_string();
    let text = text.trim_end();
    match text.rsplit_once("\nin `") {
        Some((what, at)) => format!("{}: {what}", join(prefix, at.trim_end_matches('`'))),
        None if prefix.is_empty() => text.to_owned(),
        None => format!("{prefix}: {text}"),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))
}

/// What the descriptors check before serde sees the file: TOML syntax, known keys, the
/// environment overrides applied, bounds and allowed values.
fn prepare(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<toml::Table, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let sections = sections();
    check_known_keys("", &table, &sections)?;
    apply_env(&mut table, &sections, env);
    check_values(&table, &sections)?;
    Ok(table)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Every key of `table` (at `path`) is a described key, or a described table holding only
/// described keys.
fn check_known_keys(path: &str, table: &toml::Table, sections: &[&Section]) -> Result<(), String> {
    let own = sections.iter().find(|s| s.path == path);
    let children: Vec<&str> = sections
        .iter()
        .filter_map(|s| s.path.strip_prefix(path))
        .filter_map(|rest| match path {
            "" => Some(rest),
            _ => rest.strip_prefix('.'),
        })
        .filter(|name| !name.is_empty() && !name.contains('.'))
        .collect();
    for (key, value) in table {
        let full = join(path, key);
        if children.contains(&key.as_str()) {
            let Some(inner) = value.as_table() else {
                return Err(format!("{full}: expected a table ([{full}])"));
            };
            check_known_keys(&full, inner, sections)?;
        } else if own.and_then(|s| s.key(key)).is_none() {
            let mut expected: Vec<String> = own
                .map(|s| s.keys.iter().map(|k| k.name.to_owned()).collect())
                .unwrap_or_default();
            expected.extend(children.iter().map(|c| format!("[{}]", join(path, c))));
            let place = if path.is_empty() {
                "the top level".to_owned()
            } else {
                format!("[{path}]")
            };
            return Err(format!(
                "unknown key `{full}`: {place} takes {}",
                expected.join(", ")
            ));
        }
    }
    Ok(())
}

/// Sets every key whose environment variable is set (creating its table if needed).
fn apply_env(
    table: &mut toml::Table,
    sections: &[&Section],
    env: &impl Fn(&str) -> Option<String>,
) {
    for section in sections {
        for key in section.keys {
            let Some(value) = key.env.and_then(env) else {
                continue;
            };
            let mut at = &mut *table;
            for part in section.path.split('.') {
                let entry = at
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                // check_known_keys made sure described tables are tables.
                let Some(inner) = entry.as_table_mut() else {
                    return;
                };
                at = inner;
            }
            at.insert(key.name.to_owned(), toml::Value::String(value));
        }
    }
}

/// The value of `section.key` in `table`, if set.
fn lookup<'a>(table: &'a toml::Table, section: &Section, key: &str) -> Option<&'a toml::Value> {
    let mut at = table;
    for part in section.path.split('.') {
        at = at.get(part)?.as_table()?;
    }
    at.get(key)
}

/// Integers within their bounds (`key = value: must be LOW to HIGH`), strings among their
/// allowed values. Values of the wrong type are left to serde, which names them.
fn check_values(table: &toml::Table, sections: &[&Section]) -> Result<(), String> {
    for section in sections {
        for key in section.keys {
            let Some(value) = lookup(table, section, key.name) else {
                continue;
            };
            let full = join(section.path, key.name);
            if let (Some((low, high)), Some(v)) = (key.bounds, value.as_integer())
                && !(low..=high).contains(&v)
            {
                return Err(format!("{full} = {v}: must be {low} to {high}"));
            }
            if let (Type::OneOf(allowed), Some(v)) = (key.ty, value.as_str())
                && !allowed.contains(&v)
            {
                return Err(format!(
                    "{full} = {v:?}: expected one of {}",
                    allowed.join(", ")
                ));
            }
        }
    }
    Ok(())
}

impl Config {
    fn validate(&self) -> Result<(), String> {
        let url = |key: &str, value: &str| {
            let ok = (value.starts_with("http://") || value.starts_with("https://"))
                && value.ends_with('/');
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{key} = {value:?}: expected an http(s) URL ending in '/'"
                ))
            }
        };
        url("google.base_url", &self.google.base_url)?;
        url("provider.join_base_url", &self.provider.join_base_url)?;
        // provider.kind is one of PROVIDER_KINDS (check_values).
        let kind = self.provider.kind.as_str();
        let configured = match kind {
            "zoom" => self.provider.zoom.is_some(),
            "teams" => self.provider.teams.is_some(),
            "webex" => self.provider.webex.is_some(),
            "daily" => self.provider.daily.is_some(),
            "jitsi" => self.provider.jitsi.is_some(),
            "bigbluebutton" => self.provider.bigbluebutton.is_some(),
            "webhook" => self.provider.webhook.is_some(),
            _ => true,
        };
        if !configured {
            return Err(format!(
                "provider.kind = {kind:?} needs a [provider.{kind}] table (`confsync config example` shows its keys)"
            ));
        }
        if self.serve.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "serve.listen = {:?}: expected host:port, e.g. \"127.0.0.1:8080\"",
                self.serve.listen
            ));
        }
        if let Some(public) = &self.serve.public_url {
            url("serve.public_url", public)?;
        }
        if let Some(oauth) = &self.google.oauth {
            if oauth.client_id.trim().is_empty() {
                return Err(
                    "google.oauth.client_id is empty (or set CONFSYNC_GOOGLE_OAUTH_CLIENT_ID)"
                        .into(),
                );
            }
            if let Err(e) = confsync_gcal::auth::TokenCipher::from_base64(&oauth.token_key) {
                return Err(format!(
                    "google.oauth.token_key: {e} (expected base64 of 32 random bytes; `confsync config key` makes one; or set CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY)"
                ));
            }
            for (key, value) in [
                ("google.oauth.auth_uri", &oauth.auth_uri),
                ("google.oauth.token_uri", &oauth.token_uri),
            ] {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!("{key} = {value:?}: expected an http(s) URL"));
                }
            }
            match &self.serve.public_url {
                None => {
                    return Err("google.oauth needs serve.public_url: the OAuth redirect URI is {public_url}oauth/google/callback, and users are sent to {public_url}oauth/google/start to connect".into());
                }
                Some(public) if !is_https_or_loopback(public) => {
                    return Err(format!(
                        "serve.public_url = {public:?}: with google.oauth it must be an https URL (Calendar accepts only absolute https sign-in URLs; http only for a loopback host)"
                    ));
                }
                Some(_) => {}
            }
            if self.google.service_account_file.is_some() {
                return Err("google.oauth and google.service_account_file are both set: choose one way to reach calendars".into());
            }
        }
        for (name, key) in [
            ("serve.host_key", &self.serve.host_key),
            ("serve.channel_key", &self.serve.channel_key),
        ] {
            if let Some(key) = key {
                match confsync_providers::http::Secret::resolve(key) {
                    Ok(k) if k.expose().len() >= 32 => {}
                    Ok(_) => return Err(format!("{name}: use at least 32 random characters")),
                    Err(e) => return Err(format!("{name}: {e}")),
                }
            }
        }
        if let Some(identity) = &self.serve.identity {
            if identity.audiences.is_empty()
                || identity.audiences.iter().any(|a| a.trim().is_empty())
            {
                return Err("serve.identity.audiences is empty: list the add-on script's OAuth client id(s) (the `aud` of its ID tokens)".into());
            }
            if identity.issuers.is_empty() || identity.issuers.iter().any(|i| i.trim().is_empty()) {
                return Err("serve.identity.issuers is empty: leave it out for Google's".into());
            }
            if !is_https_or_loopback(&identity.certs_url) {
                return Err(format!(
                    "serve.identity.certs_url = {:?}: expected an https URL (http only for a loopback host)",
                    identity.certs_url
                ));
            }
        }
        if self.sync.solution_names.is_empty() {
            return Err(
                "sync.solution_names is empty: confsync would recognise no conference as its own"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    use confsync_providers::keys::serde_fields;
    use confsync_providers::{bigbluebutton, daily, jitsi, teams, webex, webhook, zoom};

    /// A literal secret, long enough for every minimum.
    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789";

    /// The serde fields of the struct each table is parsed into ("" is the whole file).
    fn struct_fields() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("", serde_fields::<Config>()),
            ("google", serde_fields::<GoogleConfig>()),
            ("google.oauth", serde_fields::<OAuthConfig>()),
            ("store", serde_fields::<StoreConfig>()),
            ("provider", serde_fields::<ProviderConfig>()),
            ("provider.zoom", serde_fields::<zoom::ZoomConfig>()),
            ("provider.teams", serde_fields::<teams::TeamsConfig>()),
            ("provider.webex", serde_fields::<webex::WebexConfig>()),
            ("provider.daily", serde_fields::<daily::DailyConfig>()),
            ("provider.jitsi", serde_fields::<jitsi::JitsiConfig>()),
            (
                "provider.jitsi.jwt",
                serde_fields::<jitsi::JitsiJwtConfig>(),
            ),
            (
                "provider.bigbluebutton",
                serde_fields::<bigbluebutton::BigBlueButtonConfig>(),
            ),
            ("provider.webhook", serde_fields::<webhook::WebhookConfig>()),
            ("sync", serde_fields::<SyncConfig>()),
            ("serve", serde_fields::<ServeConfig>()),
            ("serve.identity", serde_fields::<IdentityConfig>()),
        ]
    }

    /// Every `section.key` the descriptors name.
    fn described() -> BTreeSet<String> {
        sections()
            .iter()
            .flat_map(|s| s.keys.iter().map(|k| join(s.path, k.name)))
            .collect()
    }

    /// Every leaf `a.b.key` of a table.
    fn leaves(path: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            match v.as_table() {
                Some(inner) => leaves(&join(path, k), inner, out),
                None => {
                    out.insert(join(path, k));
                }
            }
        }
    }

    /// Secrets given as `env:`/`file:` become literal ones, so nothing is read.
    fn literal_secrets(table: &mut toml::Table) {
        fn table_at<'a>(table: &'a mut toml::Table, path: &str) -> Option<&'a mut toml::Table> {
            let mut at = table;
            for part in path.split('.') {
                at = at.get_mut(part)?.as_table_mut()?;
            }
            Some(at)
        }
        for section in sections() {
            let Some(at) = table_at(table, section.path) else {
                continue;
            };
            for key in section.keys.iter().filter(|k| k.ty == Type::Secret) {
                if let Some(toml::Value::String(v)) = at.get_mut(key.name)
                    && (v.starts_with("env:") || v.starts_with("file:"))
                {
                    *v = SECRET.into();
                }
            }
        }
    }

    /// The example with every disabled key and table turned on (`#key = ...` -> `key = ...`).
    fn example_all_on() -> String {
        example()
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Adding a field to a config struct (a provider's included) without its descriptor, or a
    /// descriptor for a key serde does not take, fails here.
    #[test]
    fn every_accepted_key_is_described() {
        let structs = struct_fields();
        let paths: BTreeSet<&str> = sections().iter().map(|s| s.path).collect();
        let mapped: BTreeSet<&str> = structs
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !p.is_empty())
            .collect();
        assert_eq!(paths, mapped, "every table has a struct and a section");
        for (path, fields) in structs {
            let accepted: BTreeSet<&str> = fields.iter().copied().collect();
            assert!(!accepted.is_empty(), "[{path}]: not a serde struct?");
            let mut expected: BTreeSet<&str> = sections()
                .iter()
                .find(|s| s.path == path)
                .map(|s| s.keys.iter().map(|k| k.name).collect())
                .unwrap_or_default();
            for child in &paths {
                let rest = if path.is_empty() {
                    Some(*child)
                } else {
                    child.strip_prefix(path).and_then(|r| r.strip_prefix('.'))
                };
                if let Some(name) = rest.filter(|r| !r.contains('.')) {
                    expected.insert(name);
                }
            }
            assert_eq!(
                accepted, expected,
                "[{path}]: serde's fields vs the descriptors"
            );
        }
        for section in sections() {
            let names: BTreeSet<&str> = section.keys.iter().map(|k| k.name).collect();
            assert_eq!(
                names.len(),
                section.keys.len(),
                "[{}]: a key twice",
                section.path
            );
            for key in section.keys {
                assert!(
                    !key.doc.trim().is_empty(),
                    "{}.{}: no doc",
                    section.path,
                    key.name
                );
                if let (Some((low, high)), Presence::Default(d)) = (key.bounds, key.presence) {
                    let d: i64 = d.parse().unwrap();
                    assert!(
                        low <= d && d <= high,
                        "{}.{}: default out of range",
                        section.path,
                        key.name
                    );
                }
            }
        }
    }

    /// `confsync config example` shows every accepted key of every table, each provider's
    /// included: turned on, its keys are exactly the described ones and serde takes their
    /// values.
    #[test]
    fn the_example_shows_every_key() {
        let text = example_all_on();
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        let mut shown = BTreeSet::new();
        leaves("", &table, &mut shown);
        assert_eq!(shown, described());
        for (path, _) in struct_fields().iter().filter(|(p, _)| !p.is_empty()) {
            assert!(text.contains(&format!("\n[{path}]\n")), "[{path}] missing");
        }
        literal_secrets(&mut table);
        let parsed: Result<Config, _> = toml::Value::Table(table).try_into();
        let parsed = parsed.unwrap();
        assert!(parsed.provider.zoom.is_some() && parsed.provider.jitsi.unwrap().jwt.is_some());
        // Every zoom key the issue found missing.
        let zoom = &example()[example().find("#[provider.zoom]").unwrap()..];
        let zoom = &zoom[..zoom.find("#[provider.teams]").unwrap()];
        for key in [
            "account_id",
            "client_id",
            "client_secret",
            "user_id",
            "base_url",
            "oauth_url",
            "timeout_secs",
            "default_time_zone",
            "max_occurrences",
            "reconcile_list_type",
            "reconcile_max_pages",
        ] {
            assert!(zoom.contains(&format!("\n#{key} = ")), "{key}");
        }
    }

    /// The defaults the descriptors document are the ones serde fills in: every table with
    /// only its required keys parses to the same thing as with every default written out.
    #[test]
    fn documented_defaults_are_the_code_defaults() {
        let mut required = toml::Table::new();
        let mut defaults = toml::Table::new();
        for section in sections() {
            for (table, with_defaults) in [(&mut required, false), (&mut defaults, true)] {
                let mut at = &mut *table;
                for part in section.path.split('.') {
                    at = at
                        .entry(part)
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                        .as_table_mut()
                        .unwrap();
                }
                for key in section.keys {
                    let literal = match key.presence {
                        Presence::Required => key.example,
                        Presence::Default(d) if with_defaults => d,
                        _ => continue,
                    };
                    let value: toml::Table = toml::from_str(&format!("v = {literal}")).unwrap();
                    at.insert(key.name.into(), value["v"].clone());
                }
            }
        }
        literal_secrets(&mut required);
        literal_secrets(&mut defaults);
        let parse = |t: toml::Table| -> String {
            let c: Config = toml::Value::Table(t).try_into().unwrap();
            format!("{c:?}")
        };
        let (left_out, written_out) = (parse(required), parse(defaults));
        if let Some((a, b)) = left_out
            .split(", ")
            .zip(written_out.split(", "))
            .find(|(a, b)| a != b)
        {
            panic!("a documented default is not the code's: left out {a}, written out {b}");
        }
        assert_eq!(left_out, written_out);
        // An empty file is the tables' defaults too.
        let empty = format!("{:?}", Config::parse("", |_| None).unwrap());
        let written: String = sections()
            .iter()
            .filter(|s| !s.optional)
            .map(|s| {
                let keys: String = s
                    .keys
                    .iter()
                    .filter_map(|k| match k.presence {
                        Presence::Default(d) => Some(format!("{} = {d}\n", k.name)),
                        _ => None,
                    })
                    .collect();
                format!("[{}]\n{keys}", s.path)
            })
            .collect();
        assert_eq!(
            empty,
            format!("{:?}", Config::parse(&written, |_| None).unwrap())
        );
    }

    /// Every documented range and value list is enforced with an error naming the key; both ends
    /// of a range are accepted.
    #[test]
    fn every_bound_and_value_list_is_enforced() {
        let none = |_: &str| None;
        for section in sections() {
            for key in section.keys {
                let full = join(section.path, key.name);
                let set = |v: &str| format!("[{}]\n{} = {v}", section.path, key.name);
                if let Some((low, high)) = key.bounds {
                    for v in [low - 1, high + 1] {
                        assert_eq!(
                            prepare(&set(&v.to_string()), &none).unwrap_err(),
                            format!("{full} = {v}: must be {low} to {high}")
                        );
                    }
                    for v in [low, high] {
                        prepare(&set(&v.to_string()), &none).unwrap();
                    }
                }
                if let Type::OneOf(values) = key.ty {
                    let e = prepare(&set("\"nope\""), &none).unwrap_err();
                    assert!(
                        e.starts_with(&format!("{full} = \"nope\": expected one of {}", values[0])),
                        "{e}"
                    );
                    for v in values {
                        prepare(&set(&format!("\"{v}\"")), &none).unwrap();
                    }
                }
            }
        }
    }

    /// Every documented environment variable overrides its key (creating its table).
    #[test]
    fn every_environment_override_applies() {
        let mut seen = 0;
        for section in sections() {
            for key in section.keys {
                let Some(var) = key.env else {
                    continue;
                };
                seen += 1;
                let table =
                    prepare("", &|k: &str| (k == var).then(|| "from-env".to_owned())).unwrap();
                assert_eq!(
                    lookup(&table, section, key.name).and_then(|v| v.as_str()),
                    Some("from-env"),
                    "{var}"
                );
            }
        }
        assert_eq!(seen, 13);
    }

    /// README's configuration table is `confsync config example --markdown`, verbatim.
    #[test]
    fn readme_table_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let begin = "<!-- BEGIN `confsync config example --markdown` -->\n";
        let end = "<!-- END `confsync config example --markdown` -->";
        let start = readme.find(begin).expect("README has the begin marker") + begin.len();
        let stop = readme[start..]
            .find(end)
            .expect("README has the end marker")
            + start;
        assert!(
            readme[start..stop] == markdown_table(),
            "README's configuration table is stale: replace the lines between its markers with the output of `cargo run -p confsync -- config example --markdown`"
        );
        for key in described() {
            assert!(
                readme[start..stop].contains(&format!("| `{key}` |")),
                "{key}"
            );
        }
    }

    /// `confsync apikey` reads only [store]: the provider's and Google's secrets are not
    /// resolved, nor other tables validated; unknown keys and bounds are still refused.
    #[test]
    fn the_store_alone_resolves_no_secret() {
        let text = "[store]\npath = \"/tmp/keys.db\"\n[provider]\nkind = \"zoom\"\n[provider.zoom]\naccount_id = \"a\"\nclient_id = \"c\"\nclient_secret = \"env:CONFSYNC_TEST_UNSET_ZOOM_SECRET\"\n[google.oauth]\nclient_id = \"c\"\ntoken_key = \"short\"\n[serve]\nhost_key = \"env:CONFSYNC_TEST_UNSET_HOST_KEY\"";
        let none = |_: &str| None;
        let e = Config::parse(text, none).unwrap_err();
        assert!(e.contains("CONFSYNC_TEST_UNSET_ZOOM_SECRET"), "{e}");
        let store = parse_store(text, none).unwrap();
        assert_eq!(store.location(), "/tmp/keys.db");
        let store = parse_store(text, |k| {
            (k == "CONFSYNC_STORE_URL").then(|| "postgres://u@h/db".to_owned())
        })
        .unwrap();
        assert_eq!(store.location(), "postgres://u@h/db");
        assert_eq!(
            parse_store("", none).unwrap().location(),
            "confsync-data/confsync.db"
        );
        let e = parse_store("[provider.zoom]\nclient_secrte = \"x\"", none).unwrap_err();
        assert!(e.contains("provider.zoom.client_secrte"), "{e}");
        let e = parse_store("[store]\npath = 3", none).unwrap_err();
        assert!(e.starts_with("store.path: invalid type"), "{e}");
        let e = Config::parse("[sync]\npage_size = \"x\"", none).unwrap_err();
        assert!(e.starts_with("sync.page_size: invalid type"), "{e}");
        let e = Config::parse("[provider.zoom]\naccount_id = \"a\"", none).unwrap_err();
        assert!(
            e.starts_with("provider.zoom: missing field `client_id`"),
            "{e}"
        );
        let e = parse_store("[serve]\nworkers = 0", none).unwrap_err();
        assert_eq!(e, "serve.workers = 0: must be 1 to 64");
    }

    #[test]
    fn defaults_fill_an_empty_file_and_env_overrides_win() {
        let c = Config::parse("", |k| {
            (k == "CONFSYNC_GOOGLE_TOKEN").then(|| "t".to_owned())
        })
        .unwrap();
        assert_eq!(c.google.base_url, "https://www.googleapis.com/");
        assert_eq!(c.google.token.as_deref(), Some("t"));
        assert_eq!(c.sync.page_size, 2500);
    }

    #[test]
    fn the_example_is_a_valid_config() {
        let c = Config::parse(&example(), |_| None).unwrap();
        assert_eq!(c.serve.listen, "127.0.0.1:8080");
        assert_eq!(c.sync.page_size, 2500);
    }

    /// Issue 14: [serve.identity] and the absolute https public URL per-user OAuth needs.
    #[test]
    fn identity_and_oauth_public_url() {
        let none = |_: &str| None;
        let c = Config::parse(
            "[serve.identity]\naudiences = [\"a.apps.googleusercontent.com\"]",
            none,
        )
        .unwrap();
        let identity = c.serve.identity.unwrap();
        assert_eq!(
            identity.certs_url,
            "https://www.googleapis.com/oauth2/v3/certs"
        );
        assert_eq!(
            identity.issuers,
            ["https://accounts.google.com", "accounts.google.com"]
        );
        assert!(Config::parse("", none).unwrap().serve.identity.is_none());
        for (text, key) in [
            ("[serve.identity]", "serve.identity.audiences"),
            (
                "[serve.identity]\naudiences = [\"\"]",
                "serve.identity.audiences",
            ),
            (
                "[serve.identity]\naudiences = [\"a\"]\nissuers = []",
                "serve.identity.issuers",
            ),
            (
                "[serve.identity]\naudiences = [\"a\"]\ncerts_url = \"http://keys.example.com/certs\"",
                "serve.identity.certs_url",
            ),
            ("[serve.identity]\naudiences = [\"a\"]\nextra = 1", "extra"),
        ] {
            let e = Config::parse(text, none).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        Config::parse("[serve.identity]\naudiences = [\"a\"]\ncerts_url = \"http://127.0.0.1:8085/oauth2/v3/certs\"", none).unwrap();
        let key = confsync_gcal::auth::TokenCipher::generate_key().unwrap();
        let with_key = |k: &str| (k == "CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY").then(|| key.clone());
        let oauth = |public: &str| {
            format!("[serve]\npublic_url = \"{public}\"\n[google.oauth]\nclient_id = \"c\"")
        };
        let e = Config::parse(&oauth("http://confsync.example.com/"), with_key).unwrap_err();
        assert!(e.contains("serve.public_url") && e.contains("https"), "{e}");
        for ok in [
            "https://confsync.example.com/",
            "http://127.0.0.1:8080/",
            "http://localhost:8080/",
            "http://[::1]:8080/",
        ] {
            Config::parse(&oauth(ok), with_key).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://127.0.0.1.example.com/",
            "http://localhost@evil.example/",
            "http://10.0.0.1/",
        ] {
            assert!(!is_https_or_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let none = |_: &str| None;
        assert!(
            Config::parse("[sync]\npage_sise = 3", none)
                .unwrap_err()
                .contains("page_sise")
        );
        assert!(
            Config::parse("[google]\nbase_url = \"ftp://x/\"", none)
                .unwrap_err()
                .contains("google.base_url")
        );
        assert!(
            Config::parse("[sync]\npage_size = 9000", none)
                .unwrap_err()
                .contains("sync.page_size")
        );
        assert!(
            Config::parse("[provider]\nkind = \"zoom\"", none)
                .unwrap_err()
                .contains("[provider.zoom]")
        );
        assert!(
            Config::parse("[provider]\nkind = \"gotomeeting\"", none)
                .unwrap_err()
                .contains("expected one of local, zoom")
        );
        let e = Config::parse(
            "[provider]\nkind = \"webhook\"\n[provider.webhook]\nurl = \"https://meet.example.com/hook\"\nsecret = \"env:CONFSYNC_TEST_UNSET_SECRET\"",
            none,
        )
        .unwrap_err();
        assert!(e.contains("CONFSYNC_TEST_UNSET_SECRET"), "{e}");
        assert!(Config::parse("[sync\n", none).is_err());
        let oauth = "[serve]\npublic_url = \"https://c.example.com/\"\n[google.oauth]\nclient_id = \"c\"\ntoken_key = \"short\"";
        let e = Config::parse(oauth, none).unwrap_err();
        assert!(
            e.contains("google.oauth.token_key") && !e.contains("short"),
            "{e}"
        );
        let e = Config::parse("[google.oauth]\nclient_id = \"c\"", |k| {
            (k == "CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY")
                .then(|| confsync_gcal::auth::TokenCipher::generate_key().unwrap())
        })
        .unwrap_err();
        assert!(e.contains("serve.public_url"), "{e}");
        assert!(
            Config::parse("[serve]\nlisten = \"nowhere\"", none)
                .unwrap_err()
                .contains("serve.listen")
        );
        assert!(
            Config::parse("[serve]\npublic_url = \"confsync.example.com\"", none)
                .unwrap_err()
                .contains("serve.public_url")
        );
    }

    #[test]
    fn numbers_out_of_range_name_the_key_and_the_range() {
        let none = |_: &str| None;
        for (text, expected) in [
            ("[serve]\nworkers = 0", "serve.workers = 0: must be 1 to 64"),
            (
                "[serve]\nworkers = 100000",
                "serve.workers = 100000: must be 1 to 64",
            ),
            (
                "[serve]\ndebounce_ms = 3600000",
                "serve.debounce_ms = 3600000: must be 0 to 60000",
            ),
            (
                "[serve]\nsweep_minutes = 0",
                "serve.sweep_minutes = 0: must be 1 to 1440",
            ),
            (
                "[serve]\nheader_read_timeout_ms = 0",
                "serve.header_read_timeout_ms = 0: must be 1000 to 120000",
            ),
            (
                "[serve]\nidle_timeout_ms = 999",
                "serve.idle_timeout_ms = 999: must be 1000 to 3600000",
            ),
            (
                "[serve]\nmax_connections = 1",
                "serve.max_connections = 1: must be 16 to 100000",
            ),
            (
                "[serve]\nmax_header_bytes = 100",
                "serve.max_header_bytes = 100: must be 8192 to 1048576",
            ),
            (
                "[serve]\norphan_stops_per_minute = 1000",
                "serve.orphan_stops_per_minute = 1000: must be 0 to 60",
            ),
            (
                "[google]\nuser_requests_per_minute = 1000000",
                "google.user_requests_per_minute = 1000000: must be 0 to 100000",
            ),
            (
                "[google]\nproject_requests_per_minute = 2000000",
                "google.project_requests_per_minute = 2000000: must be 0 to 1000000",
            ),
            (
                "[sync]\nfull_sync_window_days = -1",
                "sync.full_sync_window_days = -1: must be 0 to 3650",
            ),
            (
                "[sync]\npage_size = 0",
                "sync.page_size = 0: must be 1 to 2500",
            ),
        ] {
            let e = Config::parse(text, none).unwrap_err();
            assert_eq!(e, expected, "{text}");
        }
        let oauth = format!(
            "[serve]\npublic_url = \"https://c.example.com/\"\n[google.oauth]\nclient_id = \"c\"\ntoken_key = \"{}\"\nmax_pending_requests = 1",
            confsync_gcal::auth::TokenCipher::generate_key().unwrap()
        );
        assert_eq!(
            Config::parse(&oauth, none).unwrap_err(),
            "google.oauth.max_pending_requests = 1: must be 10 to 100000"
        );
        let e = Config::parse("[serve]\nchannel_key = \"short\"", none).unwrap_err();
        assert!(
            e.contains("serve.channel_key") && !e.contains("short"),
            "{e}"
        );
        let c = Config::parse("", |k| {
            (k == "CONFSYNC_SERVE_CHANNEL_KEY").then(|| "k".repeat(40))
        })
        .unwrap();
        assert!(
            !format!("{c:?}").contains(&"k".repeat(40)),
            "no secret in Debug"
        );
        assert_eq!(c.serve.max_connections, 1024);
    }
}
