//! `confsync sync`: one pass over the configured calendars, then the outbox, with a summary.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::{Engine, EngineConfig};
use confsync_gcal::{Client, RetryPolicy, StaticToken};
use confsync_providers::local::LocalProvider;
use confsync_store::Store;

use crate::config::Config;

/// Builds the engine a config describes.
/// What `sync` and `serve` build from the config: the engine, and the pieces the service
/// needs besides it.
pub struct Built {
    pub engine: Engine,
    /// Per-user OAuth, when `[google.oauth]` is set.
    pub oauth: Option<Arc<confsync_service::oauth::UserCalendars>>,
    pub budgets: Arc<confsync_service::budget::Budgets>,
    /// The calendar without the rate budgets: for the few stops of orphan push channels, which
    /// have their own budget and must never hold syncs up.
    pub unbudgeted: Arc<dyn confsync_engine::CalendarApi>,
    /// Counters shared by the scheduler and the timed provider.
    pub metrics: Arc<confsync_service::metrics::Metrics>,
}

/// The conferencing provider `provider.kind` names, from its table.
pub fn provider_from(
    config: &Config,
    store: &Store,
) -> anyhow::Result<Arc<dyn confsync_providers::ConferenceProvider>> {
    provider_of_kind(config, store, &config.provider.kind, "provider.kind")
}

/// The providers `provider.previous` names (a move to another provider): each must be a known
/// kind other than `provider.kind`, listed once, with its table.
pub fn previous_providers_from(
    config: &Config,
    store: &Store,
) -> anyhow::Result<Vec<Arc<dyn confsync_providers::ConferenceProvider>>> {
    let p = &config.provider;
    let mut built = Vec::new();
    for (i, kind) in p.previous.iter().enumerate() {
        if !crate::config::PROVIDER_KINDS.contains(&kind.as_str()) {
            anyhow::bail!(
                "provider.previous: {kind:?} is not a provider kind (one of {})",
                crate::config::PROVIDER_KINDS.join(", ")
            );
        }
        if *kind == p.kind {
            anyhow::bail!(
                "provider.previous: {kind:?} is the current provider.kind; list only the providers being moved away from"
            );
        }
        if p.previous[..i].contains(kind) {
            anyhow::bail!("provider.previous: {kind:?} is listed twice");
        }
        built.push(provider_of_kind(config, store, kind, "provider.previous")?);
    }
    Ok(built)
}

/// The adapter of one provider kind, from its table (`what`: the key that named it).
fn provider_of_kind(
    config: &Config,
    store: &Store,
    kind: &str,
    what: &str,
) -> anyhow::Result<Arc<dyn confsync_providers::ConferenceProvider>> {
    use confsync_providers::*;
    let p = &config.provider;
    let missing = || anyhow::anyhow!("{what} = {kind:?} needs a [provider.{kind}] table");
    let built: Result<Arc<dyn ConferenceProvider>, String> = match kind {
        "local" => Ok(Arc::new(LocalProvider::new(
            store.clone(),
            &p.join_base_url,
        ))),
        "zoom" => zoom::ZoomProvider::new(p.zoom.clone().ok_or_else(missing)?)
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "teams" => teams::TeamsProvider::new(p.teams.clone().ok_or_else(missing)?)
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "webex" => webex::WebexProvider::new(p.webex.clone().ok_or_else(missing)?)
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "daily" => daily::DailyProvider::new(p.daily.clone().ok_or_else(missing)?)
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "jitsi" => jitsi::JitsiProvider::new(p.jitsi.clone().ok_or_else(missing)?, store.clone())
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "bigbluebutton" => bigbluebutton::BigBlueButtonProvider::new(
            p.bigbluebutton.clone().ok_or_else(missing)?,
            store.clone(),
        )
        .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        "webhook" => webhook::WebhookProvider::new(p.webhook.clone().ok_or_else(missing)?)
            .map(|x| Arc::new(x) as Arc<dyn ConferenceProvider>),
        other => Err(format!("unknown {what} {other:?}")),
    };
    built.map_err(|e| anyhow::anyhow!("[provider.{kind}]: {e}"))
}

/// Opens the configured store: Postgres when `store.url` is set, else the SQLite file (its
/// directory created if missing).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    config.store.open().await
}

pub async fn engine_from(config: &Config) -> anyhow::Result<Built> {
    let store = open_store(config).await?;
    let mut oauth = None;
    // Whose budget a calendar's requests take: its owner where calendars are reached as their
    // owners, the one token's user otherwise.
    let mut user_of: confsync_service::budget::UserOf = Arc::new(|_: &str| "token".to_owned());
    let calendar: Arc<dyn confsync_engine::CalendarApi> = match (
        &config.google.oauth,
        &config.google.service_account_file,
    ) {
        (Some(settings), _) => {
            let public_url = config
                .serve
                .public_url
                .clone()
                .context("google.oauth needs serve.public_url")?;
            let flow = confsync_gcal::auth::AuthCodeFlow {
                auth_uri: settings.auth_uri.clone(),
                token_uri: settings.token_uri.clone(),
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                redirect_uri: format!("{public_url}oauth/google/callback"),
                scopes: vec![confsync_gcal::auth::CALENDAR_SCOPE.to_owned()],
                http: reqwest::Client::new(),
            };
            let cipher = confsync_gcal::auth::TokenCipher::from_base64(&settings.token_key)
                .map_err(|e| anyhow::anyhow!("google.oauth.token_key: {e}"))?;
            let users = Arc::new(
                confsync_service::oauth::UserCalendars::new(
                    Arc::new(confsync_service::oauth::GoogleOAuth {
                        flow,
                        cipher,
                        calendar_base_url: config.google.base_url.clone(),
                        retry: RetryPolicy::default(),
                    }),
                    store.clone(),
                )
                .with_max_pending(settings.max_pending_requests)
                // Start links are signed under a key derived from the token key (domain-
                // separated), so every instance and restart accepts them.
                .with_link_key(settings.token_key.as_bytes()),
            );
            oauth = Some(users.clone());
            let users = Arc::new(confsync_engine::calendar::Routed(users));
            user_of = Arc::new(|calendar_id: &str| {
                confsync_service::oauth::implied_owner(calendar_id)
                    .unwrap_or_else(|| calendar_id.to_owned())
            });
            users
        }
        (None, Some(path)) => {
            let key = confsync_gcal::auth::ServiceAccountKey::from_file(path)
                .with_context(|| format!("reading the service account key {}", path.display()))?;
            let delegated = confsync_engine::calendar::delegated::DelegatedCalendar::new(
                key,
                &config.google.base_url,
                config.google.subject.clone(),
            );
            let default_subject = config.google.subject.clone().unwrap_or_default();
            user_of = Arc::new(move |calendar_id: &str| {
                confsync_service::oauth::implied_owner(calendar_id)
                    .unwrap_or_else(|| default_subject.clone())
            });
            Arc::new(confsync_engine::calendar::Routed(delegated))
        }
        (None, None) => {
            let token = config.google.token.clone().context(
                "no Google credentials: set CONFSYNC_GOOGLE_TOKEN, google.service_account_file (CONFSYNC_GOOGLE_SERVICE_ACCOUNT_FILE) or [google.oauth]",
            )?;
            let client = Client::new(
                &config.google.base_url,
                Arc::new(StaticToken(token)),
                RetryPolicy::default(),
            )
            .context("building the Google Calendar client")?;
            Arc::new(GoogleCalendar { client })
        }
    };
    let budgets = Arc::new(confsync_service::budget::Budgets::new(
        confsync_service::budget::BudgetConfig {
            user_per_minute: config.google.user_requests_per_minute,
            project_per_minute: config.google.project_requests_per_minute,
        },
    ));
    let unbudgeted = calendar.clone();
    let calendar = Arc::new(confsync_engine::calendar::Routed(
        confsync_service::budget::BudgetedCalendar::new(calendar, budgets.clone(), user_of),
    ));
    let metrics = Arc::new(confsync_service::metrics::Metrics::default());
    metrics.set_per_calendar(config.serve.metrics_per_calendar);
    let provider = Arc::new(confsync_service::metrics::TimedProvider::new(
        provider_from(config, &store)?,
        metrics.clone(),
    ));
    let engine_config = EngineConfig {
        recognizer: confsync_core::plan::Recognizer {
            solution_names: config.sync.solution_names.clone(),
            parameter_key: Some(confsync_engine::conference::DEFAULT_PARAMETER_KEY.into()),
        },
        full_sync_window: (config.sync.full_sync_window_days > 0)
            .then(|| chrono::Duration::days(config.sync.full_sync_window_days)),
        page_size: config.sync.page_size,
        lease_ms: config.serve.lease_ms as i64,
        ..EngineConfig::default()
    };
    let previous: Vec<Arc<dyn confsync_providers::ConferenceProvider>> =
        previous_providers_from(config, &store)?
            .into_iter()
            .map(|p| {
                Arc::new(confsync_service::metrics::TimedProvider::new(
                    p,
                    metrics.clone(),
                )) as Arc<dyn confsync_providers::ConferenceProvider>
            })
            .collect();
    Ok(Built {
        engine: Engine::new(store, calendar, provider, engine_config)
            .with_previous_providers(previous),
        oauth,
        budgets,
        unbudgeted,
        metrics,
    })
}

pub async fn run(config_path: &Path, calendar: Option<String>, full: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let engine = engine_from(&config).await?.engine.with_progress(Arc::new(
        |calendar_id: &str, pages: u32, events: u64, full: bool| {
            if full {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r  full sync of {calendar_id}: {pages} pages, {events} events"
                );
                let _ = err.flush();
            }
        },
    ));
    // `confsync sync` runs the outbox too. An SQLite store serves one process: not while
    // `confsync serve` runs on it. On Postgres it takes leases like any worker.
    engine.store.claim_single_process().await?;
    engine.store.register_worker(&engine.config.worker).await?;
    let mut calendars: Vec<String> = match calendar {
        Some(c) => vec![c],
        None => {
            let mut all = config.sync.calendars.clone();
            for known in engine.store.calendars().await? {
                if !all.contains(&known.calendar_id) {
                    all.push(known.calendar_id);
                }
            }
            all
        }
    };
    calendars.dedup();
    if calendars.is_empty() {
        anyhow::bail!(
            "no calendar to sync: name one with --calendar or list them under [sync] calendars"
        );
    }
    let now = || chrono::Utc::now().timestamp_millis();
    let (mut events, mut skipped, mut failed_calendars) = (0u64, 0u64, 0u64);
    for calendar_id in &calendars {
        match engine.sync_leased(calendar_id, full, now(), false).await {
            Ok(None) => {
                println!("{calendar_id}: being synced by a `confsync serve` worker now; skipped");
            }
            Ok(Some(summary)) => {
                if summary.full {
                    eprintln!();
                }
                events += summary.events;
                skipped += summary.skipped.values().sum::<u64>();
                println!(
                    "{calendar_id}: {} sync, {} events in {} pages, {} planned actions, {} skipped, {} dead-lettered",
                    if summary.full { "full" } else { "incremental" },
                    summary.events,
                    summary.pages,
                    summary.actions.values().sum::<u64>(),
                    summary.skipped.values().sum::<u64>(),
                    summary.dead_letters
                );
            }
            Err(e) => {
                failed_calendars += 1;
                engine
                    .store
                    .record_sync_error(calendar_id, &e.to_string())
                    .await
                    .ok();
                eprintln!("{calendar_id}: sync failed: {e}");
            }
        }
    }
    let drained = engine.drain(now()).await?;
    let kind = |k: &str| drained.done_by_kind.get(k).copied().unwrap_or(0);
    println!(
        "summary: {events} events seen, {} conferences updated, {} deleted, {skipped} skipped, {} actions failed, {} to retry, {} calendars failed",
        kind("update") + kind("update_occurrence") + kind("cancel_occurrence"),
        kind("delete"),
        drained.failed,
        drained.retried,
        failed_calendars
    );
    if failed_calendars > 0 || drained.failed > 0 {
        anyhow::bail!("some work failed (see above)");
    }
    Ok(())
}

/// `confsync serve`: the add-on API, the scheduler (debounce, one sync per calendar at a time,
/// the safety sweep) and join links, until Ctrl-C or SIGTERM.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let built = engine_from(&config).await?;
    // An SQLite store serves one process. On Postgres any number of `serve` workers share
    // the store: they take its work under leases (see the scheduler).
    built.engine.store.claim_single_process().await?;
    // Postgres: other workers see this one alive, and take its work over at once when it dies.
    built
        .engine
        .store
        .register_worker(&built.engine.config.worker)
        .await?;
    tracing::info!(
        worker = %built.engine.config.worker,
        store = built.engine.store.backend(),
        "worker started"
    );
    if built.engine.store.backend() == "postgres" {
        // Google's quotas are the deployment's: each live worker takes an even share.
        let (store, budgets) = (built.engine.store.clone(), built.budgets.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
            loop {
                tick.tick().await;
                match store.live_workers().await {
                    Ok(workers) => {
                        let share = u32::try_from(workers.len()).unwrap_or(u32::MAX).max(1);
                        if share != budgets.share() {
                            tracing::info!(
                                workers = share,
                                "rate budgets shared among the live workers"
                            );
                            budgets.set_share(share);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count the live workers; rate budget shares unchanged")
                    }
                }
            }
        });
    }
    let engine = Arc::new(built.engine);
    let scheduler = confsync_service::Scheduler::start_with_metrics(
        engine.clone(),
        confsync_service::SchedulerConfig {
            debounce: std::time::Duration::from_millis(config.serve.debounce_ms),
            workers: config.serve.workers,
            poll: std::time::Duration::from_millis(config.serve.poll_ms),
            retention: std::time::Duration::from_secs(config.serve.retention_days * 86_400),
        },
        built.metrics,
    );
    scheduler.start_sweep(std::time::Duration::from_secs(
        config.serve.sweep_minutes * 60,
    ));
    let channel_key = channel_key(&config)?;
    let channels = config.serve.public_url.as_ref().map(|url| {
        let channels = confsync_service::Channels::with_options(
            engine.calendar.clone(),
            engine.store.clone(),
            scheduler.clone(),
            confsync_service::ChannelConfig {
                public_url: url.clone(),
                ttl_seconds: None,
                renew_check: std::time::Duration::from_secs(60),
                silence_floor: std::time::Duration::from_secs(600),
                handshake_grace: std::time::Duration::from_secs(120),
            },
            confsync_service::ChannelOptions {
                key: channel_key,
                orphan_calendar: Some(built.unbudgeted.clone()),
                orphan_stops_per_minute: config.serve.orphan_stops_per_minute,
            },
        );
        channels.start_renewal();
        channels
    });
    let service = Arc::new(confsync_service::Service {
        store: engine.store.clone(),
        provider: engine.provider.clone(),
        scheduler,
        create_deadline: std::time::Duration::from_millis(config.serve.create_deadline_ms),
        channels,
        oauth: built.oauth,
        public_url: config.serve.public_url.clone(),
        budgets: Some(built.budgets),
        host_key: config
            .serve
            .host_key
            .as_deref()
            .map(confsync_providers::http::Secret::resolve)
            .transpose()
            .map_err(|e| anyhow::anyhow!("serve.host_key: {e}"))?
            .map(|k| k.expose().as_bytes().to_vec()),
        identity: identity_verifier(&config),
    });
    let stopping = service.scheduler.clone();
    let listener = tokio::net::TcpListener::bind(&config.serve.listen)
        .await
        .with_context(|| format!("listening on {}", config.serve.listen))?;
    println!("confsync serving on http://{}/", listener.local_addr()?);
    let ms = std::time::Duration::from_millis;
    let limits = confsync_service::ServerLimits {
        header_read_timeout: ms(config.serve.header_read_timeout_ms),
        idle_timeout: ms(config.serve.idle_timeout_ms),
        max_connections: config.serve.max_connections,
        max_header_bytes: config.serve.max_header_bytes,
    };
    confsync_service::serve(listener, confsync_service::router(service), limits, async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: no new requests");
    })
    .await?;
    // Running syncs and provider calls may finish up to the deadline; whatever did not run
    // stays dirty or pending in the store and resumes at the next start.
    let deadline = std::time::Duration::from_millis(config.serve.shutdown_deadline_ms);
    if stopping.shutdown(deadline).await {
        tracing::info!("stopped: running syncs and provider calls finished");
    } else {
        tracing::warn!("stopped at the deadline: unfinished work resumes at the next start");
    }
    // Hand this worker's leases over now rather than after the lease time.
    let engine = stopping.engine();
    if let Err(e) = engine
        .store
        .release_leases(Some(&engine.config.worker))
        .await
    {
        tracing::warn!(error = %e, "could not release this worker's leases; they expire");
    }
    Ok(())
}

/// The verifier of the add-on users' ID tokens (`[serve.identity]`), its keys fetched in the
/// background; without the section, the API key alone speaks for every user (logged).
fn identity_verifier(config: &Config) -> Option<Arc<confsync_service::identity::IdentityVerifier>> {
    let Some(settings) = &config.serve.identity else {
        tracing::warn!(
            "no [serve.identity]: the add-on API trusts its API key alone, so users cannot be told apart (any holder of the key may act on any calendar and read any organizer's host link); set serve.identity.audiences to the add-on's OAuth client id"
        );
        return None;
    };
    let verifier = Arc::new(confsync_service::identity::IdentityVerifier::new(
        confsync_service::identity::IdentitySettings {
            audiences: settings.audiences.clone(),
            issuers: settings.issuers.clone(),
            certs_url: settings.certs_url.clone(),
            refetch_floor: confsync_service::identity::DEFAULT_REFETCH_FLOOR,
        },
    ));
    let prefetch = verifier.clone();
    tokio::spawn(async move { prefetch.prefetch().await });
    Some(verifier)
}

/// The key push channel ids are signed with: `serve.channel_key`; else derived from
/// `serve.host_key` or `google.oauth.token_key` (domain-separated, so neither secret is
/// exposed or weakened); else random for this process (channels opened before a restart are
/// then recognised through the store until renewed, and their orphans are left to expire).
fn channel_key(config: &Config) -> anyhow::Result<confsync_service::ChannelKey> {
    let resolve = |key: &str, value: &str| {
        confsync_providers::http::Secret::resolve(value)
            .map(|k| k.expose().as_bytes().to_vec())
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
    };
    let secret = if let Some(value) = &config.serve.channel_key {
        Some(resolve("serve.channel_key", value)?)
    } else if let Some(value) = &config.serve.host_key {
        Some(resolve("serve.host_key", value)?)
    } else {
        config
            .google
            .oauth
            .as_ref()
            .map(|o| o.token_key.as_bytes().to_vec())
    };
    Ok(match secret {
        Some(secret) => confsync_service::ChannelKey::derive(&secret),
        None => {
            if config.serve.public_url.is_some() {
                tracing::info!(
                    "no serve.channel_key (nor host_key or google.oauth.token_key): push channel ids are signed with a key for this run only"
                );
            }
            confsync_service::ChannelKey::random()
        }
    })
}
