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
# CONFSYNC_GOOGLE_OAUTH_CLIENT_SECRET, CONFSYNC_GOOGLE_OAUTH_TOKEN_KEY, CONFSYNC_STORE_PATH,
# CONFSYNC_PROVIDER_JOIN_BASE_URL, CONFSYNC_SERVE_LISTEN, CONFSYNC_SERVE_PUBLIC_URL.

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
user_requests_per_minute = 600
project_requests_per_minute = 10000

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

[store]
# The SQLite database (created with its directory if missing).
path = "confsync-data/confsync.db"

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
# user_id = "organizer@example.com"
#
# [provider.webex]
# access_token = "env:WEBEX_TOKEN"
#
# [provider.daily]
# api_key = "env:DAILY_API_KEY"
#
# [provider.jitsi]           # join links point at confsync, which mints a JWT per click
# base_url = "https://meet.example.com"
# public_url = "https://confsync.example.com/"
# room_secret = "env:JITSI_ROOM_SECRET"
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
# How many days back a full sync lists (0: everything).
full_sync_window_days = 30
# conferenceSolution.name of our add-on: how confsync recognises its conferences.
solution_names = ["confsync"]
# events.list page size (1 to 2500).
page_size = 2500

[serve]
listen = "127.0.0.1:8080"
# Notifications for one calendar within this window make one sync.
debounce_ms = 500
# Calendars synced at the same time.
workers = 4
# Every calendar is synced at least this often (+-25%), whatever the notifications.
sweep_minutes = 15
# The HTTPS base URL Google can reach; set it to turn on push channels.
# public_url = "https://confsync.example.com/"
# Signs organizers' join links (GET /v1/conferences/{id} answers hostUrl): 32+ random characters.
# host_key = "env:CONFSYNC_HOST_KEY"
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

#[derive(Debug, Clone, Deserialize)]
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
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("token_key", &"***")
            .field("auth_uri", &self.auth_uri)
            .field("token_uri", &self.token_uri)
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
        if !(1..=2500).contains(&self.sync.page_size) {
            return Err(format!(
                "sync.page_size = {}: must be 1 to 2500",
                self.sync.page_size
            ));
        }
        if self.sync.full_sync_window_days < 0 {
            return Err(format!(
                "sync.full_sync_window_days = {}: must not be negative",
                self.sync.full_sync_window_days
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
            if self.serve.public_url.is_none() {
                return Err("google.oauth needs serve.public_url: the OAuth redirect URI is {public_url}oauth/google/callback".into());
            }
            if self.google.service_account_file.is_some() {
                return Err("google.oauth and google.service_account_file are both set: choose one way to reach calendars".into());
            }
        }
        if let Some(key) = &self.serve.host_key {
            match confsync_providers::http::Secret::resolve(key) {
                Ok(k) if k.expose().len() >= 32 => {}
                Ok(_) => return Err("serve.host_key: use at least 32 random characters".into()),
                Err(e) => return Err(format!("serve.host_key: {e}")),
            }
        }
        if self.serve.workers == 0 || self.serve.sweep_minutes == 0 {
            return Err("serve.workers and serve.sweep_minutes must be at least 1".into());
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
}
