//! The configuration file (TOML) of `confsync sync`, with CONFSYNC_* environment overrides.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every error
//! names the key. Secrets (the Google token) come from the environment, never from logs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `confsync config example`: every key, with its default and what it does.
pub const EXAMPLE: &str = r#"# confsync configuration. Every key can be left out (the default is shown).
# Environment overrides: CONFSYNC_GOOGLE_BASE_URL, CONFSYNC_GOOGLE_TOKEN,
# CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE, CONFSYNC_GOOGLE_OAUTH_CLIENT_ID,
# CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET, CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY, CONFSYNC_STORE_PATH, CONFSYNC_STORE_URL,
# CONFSYNC_PROVIDER_JOIN_BASE_URL, CONFSYNC_SERVE_LISTEN, CONFSYNC_SERVE_PUBLIC_URL,
# CONFSYNC_SERVE_HOST_KEY, CONFSYNC_SERVE_CHANNEL_KEY.

[google]
# Google's root URL, or an emulator's ("http://127.0.0.1:8085/").
base_url = "https://www.googleapis.com/"
# A bearer token. Prefer the CONFSYNC_GOOGLE_TOKEN environment variable: secrets stay out of files.
# token = "..."
# Or a service account with domain-wide delegation (each calendar is reached as its owner):
# service_account_file = "/etc/confsync/service-account.json"   # CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE
# subject = "admin@example.com"   # who to act as for secondary calendars
# Calendar API rate budgets: requests per minute per user (Google's default quota is 600) and
# for the whole project; calls wait for them instead of drawing 403 rateLimitExceeded. 0: off.
user_requests_per_minute = 600        # 0 to 100000
project_requests_per_minute = 10000   # 0 to 1000000

# Or per-user OAuth: each user connects their own calendars at {serve.public_url}oauth/google/start
# (the add-on sends them there). Needs serve.public_url (the redirect URI is
# {public_url}oauth/google/callback, registered with the OAuth client).
# [google.oauth]
# client_id = "1234-abc.apps.googleusercontent.com"
# client_secret = "..."          # better: CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET
# token_key = "..."              # 32 random bytes, base64; seals refresh tokens at rest.
#                                # Better: CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY. `confsync config key` makes one.
# auth_uri = "https://accounts.google.com/o/oauth2/v2/auth"
# token_uri = "https://oauth2.googleapis.com/token"
# max_pending_requests = 1000    # sign-ins waiting for their callback at once (10 to 100000);
#                                # when full, /oauth/google/start answers 503 for a few minutes

[store]
# The SQLite database (created with its directory if missing): the embedded default.
path = "confsync-data/confsync.db"
# Or Postgres, for a standby worker (CONFSYNC_STORE_URL): when set, `path` is not used. Any
# option of the URL form is taken (sslmode=require, ...); the password never appears in logs.
# url = "postgres://confsync:secret@db.internal:5432/confsync"

[provider]
# "local": the built-in provider; meetings live in the store, join pages are served by confsync.
# Or "zoom", "teams", "webex", "daily", "jitsi", "bigbluebutton", "webhook", configured by the
# table of that name below. Secrets take a value, "env:NAME" or "file:/path".
kind = "local"
# Where the local provider's join links point: confsync's own public address.
join_base_url = "http://127.0.0.1:8080/"

# [provider.zoom]            # Server-to-Server OAuth app
# account_id = "..."
# client_id = "..."
# client_secret = "env:ZOOM_CLIENT_SECRET"
# user_id = "me"
#
# [provider.teams]           # Microsoft Graph onlineMeetings, client credentials
# tenant_id = "..."
# client_id = "..."
# client_secret = "env:GRAPH_CLIENT_SECRET"
# user_id = "organizer@example.com"   # object id, or a UPN (resolved once; needs User.Read.All)
# access_policy_grace_secs = 3600     # a 403 is retried this long (policies take 30 min)
# lock_lobby_on_delete = true         # lobby to organizer-only before a delete
#
# [provider.webex]
# access_token = "env:WEBEX_TOKEN"
# create_limit_per_day = 100          # create attempts per 24 h (Webex counts failed ones)
#
# [provider.daily]
# api_key = "env:DAILY_API_KEY"
# series_horizon_days = 90            # exp of an endless series' room, renewed by updates
# delete_burst = 50                   # deletes per delete_window_secs (30), 500 ms apart
#
# [provider.jitsi]           # join links point at confsync, which mints a JWT per click
# base_url = "https://meet.example.com"
# public_url = "https://confsync.example.com/"
# room_secret = "env:JITSI_ROOM_SECRET"
# [provider.jitsi.jwt]       # optional; mode = "jaas" for 8x8 JaaS (app_id = vpaas-magic-cookie-...)
# app_id = "..."
# private_key = "file:/etc/confsync/jitsi.pem"
# moderator_as_string = true          # false: a boolean, for Prosody plugins that read one
#
# [provider.bigbluebutton]   # join links point at confsync, which calls create, then join
# base_url = "https://bbb.example.com/bigbluebutton/api"
# shared_secret = "env:BBB_SECRET"
# public_url = "https://confsync.example.com/"
#
# [provider.webhook]         # your own system: signed JSON POSTs (see the README)
# url = "https://meetings.example.com/confsync"
# secret = "env:CONFSYNC_WEBHOOK_SECRET"

[sync]
# Calendars `confsync sync` handles besides those already in the store.
calendars = []
# How many days back a full sync lists (0: everything; at most 3650).
full_sync_window_days = 30
# conferenceSolution.name of our add-on: how confsync recognises its conferences.
solution_names = ["confsync"]
# events.list page size (1 to 2500).
page_size = 2500

[serve]
listen = "127.0.0.1:8080"
# Notifications for one calendar within this window make one sync (0 to 60000).
debounce_ms = 500
# Calendars synced at the same time (1 to 64).
workers = 4
# Every calendar is synced at least this often (+-25%), whatever the notifications (1 to 1440).
sweep_minutes = 15
# A request's headers must arrive within this long (1000 to 120000): slow clients lose their
# connection instead of holding it.
header_read_timeout_ms = 10000
# A connection without traffic for this long, and no request in progress, is closed
# (1000 to 3600000). Behind a load balancer, make it longer than the balancer's keep-alive.
idle_timeout_ms = 90000
# Connections served at once (16 to 100000); more wait in the accept backlog.
max_connections = 1024
# Largest request line plus headers, in bytes (8192 to 1048576); larger ones get 431.
max_header_bytes = 32768
# The add-on's create is answered TEMPORARY after this long (1000 to 25000; the add-on waits
# about 30 s, and its retry resumes the same create).
create_deadline_ms = 10000
# On SIGTERM, running syncs and provider calls may finish for this long (0 to 300000); what did
# not run stays in the store and resumes at the next start.
shutdown_deadline_ms = 20000
# Several `serve` workers may share one Postgres store. A worker's claim on a calendar's sync or
# an outbox action lasts this long unless renewed (2000 to 300000): a worker that dies loses its
# work to the others after about this long.
lease_ms = 15000
# How often the store is polled for work another worker acknowledged and could not finish
# (200 to 60000).
poll_ms = 2000
# Finished history (dead letters, channel records, expired OAuth requests) is kept this many
# days (1 to 3650).
retention_days = 30
# Push channels that are ours but no longer wanted are stopped at most this often (0 to 60;
# 0: they are left to expire), outside the Calendar rate budgets syncs use.
orphan_stops_per_minute = 5
# The HTTPS base URL Google can reach; set it to turn on push channels.
# public_url = "https://confsync.example.com/"
# Signs organizers' join links (GET /v1/conferences/{id} answers hostUrl): 32+ random characters.
# host_key = "env:CONFSYNC_HOST_KEY"
# Signs push channel ids, so notifications for made-up channels are refused without any work:
# 32+ random characters. Default: derived from host_key, else from google.oauth.token_key, else
# random at each start (channels opened before a restart are then still recognised through the
# store until they are renewed).
# channel_key = "env:CONFSYNC_CHANNEL_KEY"

# Who is calling: the add-on sends each user's OpenID Connect ID token
# (ScriptApp.getIdentityToken()); with this table the API checks it and acts on a calendar only
# for its owner. Without it, the API key alone speaks for every user (logged at startup).
# [serve.identity]
# audiences = ["1234-abc.apps.googleusercontent.com"]   # the add-on script's OAuth client id(s)
# certs_url = "https://www.googleapis.com/oauth2/v3/certs"
# issuers = ["https://accounts.google.com", "accounts.google.com"]
"#;

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
    /// Verifies the add-on users' ID tokens; None: the API key speaks for every user.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

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

impl StoreConfig {
    /// What [`confsync_store::Store::open`] takes: the URL, else the file's path.
    pub fn location(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => self.path.to_string_lossy().into_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which conferencing system: `local` (the built-in provider), `zoom`, `teams`, `webex`,
    /// `daily`, `jitsi`, `bigbluebutton` or `webhook`; the table of that name configures it.
    #[serde(default = "default_provider")]
    pub kind: String,
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
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Self::parse(&text, |k| std::env::var(k).ok())
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Parses `text`; `env` looks up CONFSYNC_* overrides.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = env("CONFSYNC_GOOGLE_BASE_URL") {
            config.google.base_url = v;
        }
        if let Some(v) = env("CONFSYNC_GOOGLE_TOKEN") {
            config.google.token = Some(v);
        }
        if let Some(v) = env("CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE") {
            config.google.service_account_file = Some(PathBuf::from(v));
        }
        for (name, set) in [
            ("CONFSYNC_GOOGLE_OAUTH_CLIENT_ID", 0),
            ("CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET", 1),
            ("CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY", 2),
        ] {
            if let Some(v) = env(name) {
                let oauth = config.google.oauth.get_or_insert_with(|| OAuthConfig {
                    client_id: String::new(),
                    client_secret: None,
                    token_key: String::new(),
                    auth_uri: default_auth_uri(),
                    token_uri: default_token_uri(),
                    max_pending_requests: default_max_pending(),
                });
                match set {
                    0 => oauth.client_id = v,
                    1 => oauth.client_secret = Some(v),
                    _ => oauth.token_key = v,
                }
            }
        }
        if let Some(v) = env("CONFSYNC_STORE_PATH") {
            config.store.path = PathBuf::from(v);
        }
        if let Some(v) = env("CONFSYNC_STORE_URL") {
            config.store.url = Some(v);
        }
        if let Some(v) = env("CONFSYNC_PROVIDER_JOIN_BASE_URL") {
            config.provider.join_base_url = v;
        }
        if let Some(v) = env("CONFSYNC_SERVE_LISTEN") {
            config.serve.listen = v;
        }
        if let Some(v) = env("CONFSYNC_SERVE_PUBLIC_URL") {
            config.serve.public_url = Some(v);
        }
        if let Some(v) = env("CONFSYNC_SERVE_HOST_KEY") {
            config.serve.host_key = Some(v);
        }
        if let Some(v) = env("CONFSYNC_SERVE_CHANNEL_KEY") {
            config.serve.channel_key = Some(v);
        }
        config.validate()?;
        Ok(config)
    }

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
        let kind = self.provider.kind.as_str();
        if !PROVIDER_KINDS.contains(&kind) {
            return Err(format!(
                "provider.kind = {kind:?}: expected one of {}",
                PROVIDER_KINDS.join(", ")
            ));
        }
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
        self.check_ranges()?;
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

/// `key = value: must be LOW to HIGH`, if the value is out of its range.
fn bounded<T>(key: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value}: must be {} to {}",
            range.start(),
            range.end()
        ))
    }
}

impl Config {
    /// Every number in its sane range; the error names the key and the range.
    fn check_ranges(&self) -> Result<(), String> {
        let (g, s, v) = (&self.google, &self.sync, &self.serve);
        bounded("sync.page_size", s.page_size, 1..=2500)?;
        bounded(
            "sync.full_sync_window_days",
            s.full_sync_window_days,
            0..=3650,
        )?;
        bounded(
            "google.user_requests_per_minute",
            g.user_requests_per_minute,
            0..=100_000,
        )?;
        bounded(
            "google.project_requests_per_minute",
            g.project_requests_per_minute,
            0..=1_000_000,
        )?;
        if let Some(oauth) = &g.oauth {
            bounded(
                "google.oauth.max_pending_requests",
                oauth.max_pending_requests,
                10..=100_000,
            )?;
        }
        bounded("serve.debounce_ms", v.debounce_ms, 0..=60_000)?;
        bounded("serve.workers", v.workers, 1..=64)?;
        bounded("serve.sweep_minutes", v.sweep_minutes, 1..=1440)?;
        bounded(
            "serve.header_read_timeout_ms",
            v.header_read_timeout_ms,
            1_000..=120_000,
        )?;
        bounded(
            "serve.idle_timeout_ms",
            v.idle_timeout_ms,
            1_000..=3_600_000,
        )?;
        bounded("serve.max_connections", v.max_connections, 16..=100_000)?;
        bounded(
            "serve.max_header_bytes",
            v.max_header_bytes,
            8192..=1_048_576,
        )?;
        bounded(
            "serve.orphan_stops_per_minute",
            v.orphan_stops_per_minute,
            0..=60,
        )?;
        bounded(
            "serve.create_deadline_ms",
            v.create_deadline_ms,
            1_000..=25_000,
        )?;
        bounded(
            "serve.shutdown_deadline_ms",
            v.shutdown_deadline_ms,
            0..=300_000,
        )?;
        bounded("serve.lease_ms", v.lease_ms, 2_000..=300_000)?;
        bounded("serve.poll_ms", v.poll_ms, 200..=60_000)?;
        bounded("serve.retention_days", v.retention_days, 1..=3_650)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Config::parse(EXAMPLE, |_| None).unwrap();
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
