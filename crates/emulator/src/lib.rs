//! A faithful local emulator of the Google Calendar v3 REST API.
//!
//! It serves the v3 paths under `/calendar/v3/` (so a client only changes its root URL), an OAuth
//! token endpoint at `/token`, and an admin API under `/emulator/` for tests: users, faults,
//! sync-token expiry, a movable clock, push-notification inspection. See the README for the
//! admin API and `ARCHITECTURE.md` for how the pieces fit.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let running = confsync_emulator::Emulator::new(Default::default()).spawn("127.0.0.1:0").await?;
//! println!("{}", running.base_url()); // http://127.0.0.1:PORT/
//! # Ok(()) }
//! ```

// Errors carry Google's whole envelope (reason, message, location); they are the cold path and
// boxing them would only add noise to every handler.
#![allow(clippy::result_large_err)]

pub mod acl;
pub mod auth;
pub mod calendar_list;
pub mod error;
pub mod faults;
pub mod fields;
mod http;
pub mod identity;
pub mod ids;
pub mod list;
pub mod push;
pub mod recurrence;
pub mod response;
pub mod schema;
pub mod seed;
pub mod store;
pub mod time;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::Duration;

pub use error::ApiError;
pub use store::World;

/// Settings of one emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Accept `Bearer dev:<email>` and any service-account key.
    pub dev_mode: bool,
    /// Sync tokens older than this answer 410 (None: they never age out).
    pub sync_token_max_age: Option<Duration>,
    /// Per-user requests per minute (Google: 600), None for no quota.
    pub quota_per_user_per_minute: Option<u32>,
    /// 403 or 429 when the quota is exceeded.
    pub quota_status: u16,
    /// Seeds event ids and fault probabilities.
    pub seed: u64,
    pub max_body_bytes: usize,
    pub push: push::PushSettings,
    /// A Meet `conferenceData.createRequest` stays `{"statusCode": "pending"}` (Google creates
    /// conferences asynchronously) until `POST /emulator/conferences/resolve`; off by default
    /// (created on the spot, `success`).
    pub conference_create_pending: bool,
    /// gzip level (0 to 9) of answers to clients that ask for gzip. 1 by default: the emulator
    /// mostly serves loopback tests and benchmarks, where its compression time is the
    /// benchmark's time; Google's level is not published (6, zlib's default, is what a web
    /// server typically sends: the `bytes_per_event` example measures with it).
    pub gzip_level: u32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            dev_mode: true,
            sync_token_max_age: Some(Duration::days(28)),
            quota_per_user_per_minute: None,
            quota_status: 403,
            seed: 0x0c0f_5eed,
            max_body_bytes: 1 << 20,
            push: push::PushSettings::default(),
            conference_create_pending: false,
            gzip_level: 1,
        }
    }
}

/// Everything the request handlers share.
pub struct Shared {
    pub world: Mutex<World>,
    pub clock: time::Clock,
    pub config: Mutex<EmulatorConfig>,
    pub auth: Mutex<auth::AuthState>,
    /// The keys ID tokens are signed with (`/oauth2/v3/certs`).
    pub identity: Mutex<identity::IdentityKeys>,
    pub faults: Mutex<faults::Faults>,
    pub quota: Mutex<faults::Quota>,
    pub push: push::PushHub,
    pub stats: Mutex<BTreeMap<String, u64>>,
    base_url: OnceLock<String>,
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn config(&self) -> EmulatorConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The base URL (`http://host:port/`), once the emulator listens.
    pub fn base_url(&self) -> &str {
        self.base_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://localhost/")
    }

    /// Tells push channels about the calendars the last writes touched.
    pub fn flush_notifications(&self, world: &mut World) {
        if world.dirty.is_empty() {
            return;
        }
        let now = self.clock.now();
        for calendar_id in world.dirty.drain(..) {
            self.push.notify(&calendar_id, now);
        }
    }
}

/// An emulator, ready to serve.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

/// A serving emulator; dropping it does not stop the server (call [`RunningEmulator::shutdown`]).
pub struct RunningEmulator {
    pub emulator: Emulator,
    pub addr: SocketAddr,
    base_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let token_key = ids::secret(32);
        let mut world = World::new(config.seed, token_key.as_bytes());
        world.conference_create_pending = config.conference_create_pending;
        let shared = Shared {
            world: Mutex::new(world),
            clock: time::Clock::default(),
            auth: Mutex::new(auth::AuthState::default()),
            identity: Mutex::new(identity::IdentityKeys::default()),
            faults: Mutex::new(faults::Faults::new(config.seed)),
            quota: Mutex::new(faults::Quota::default()),
            push: push::PushHub::new(config.push.clone()),
            stats: Mutex::new(BTreeMap::new()),
            config: Mutex::new(config),
            base_url: OnceLock::new(),
        };
        Emulator {
            shared: Arc::new(shared),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The axum router (for embedding in another server or in-process tests).
    pub fn router(&self) -> axum::Router {
        http::router(self.shared.clone())
    }

    /// Binds `addr` (port 0 picks a free one) and serves in the background.
    pub async fn spawn(self, addr: &str) -> std::io::Result<RunningEmulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{local}/");
        let _ = self.shared.base_url.set(base_url.clone());
        self.shared
            .push
            .deliver_on(tokio::runtime::Handle::current());
        let router = self.router();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(RunningEmulator {
            emulator: self,
            addr: local,
            base_url,
            shutdown: Some(tx),
        })
    }
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT/`: give it to a client as its root URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn shared(&self) -> &Arc<Shared> {
        self.emulator.shared()
    }

    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
