//! The `confsync` binary: a thin clap layer over the workspace's crates.

mod apikey;
mod bench;
mod bench_adopt;
mod bench_service;
mod bench_status;
mod config;
mod demo;
mod doctor;
mod sync;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confsync_emulator::{Emulator, EmulatorConfig};

/// mimalloc instead of the system allocator: a sync allocates many small, short-lived values
/// (decoded events, rows, futures) next to long-lived ones (the store's caches, the emulator's
/// calendars), and glibc's malloc spent a third of a full sync's CPU consolidating and
/// unlinking free chunks (`bench engine` under perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// No transparent huge pages for this process. mimalloc asks for them on its arenas, and hands
/// freed memory back to the kernel after a second: under a burst (thousands of connections and
/// tasks made and dropped) every fresh 2 MiB page was faulted in and zeroed whole again, 10-14%
/// of `bench service`'s CPU in `perf` (`clear_page_erms` under `do_huge_pmd_anonymous_page`);
/// with them off, CPU per calendar fell by as much. The flag is the process's, read at each
/// page fault, so it also covers memory mapped before it is set.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and sets a flag of this process only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(
    name = "confsync",
    version,
    about = "Keeps third-party conferences in sync with Google Calendar events"
)]
struct Cli {
    /// Log format: pretty or json.
    #[arg(
        long,
        global = true,
        default_value = "pretty",
        env = "CONFSYNC_LOG_FORMAT"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a local Google Calendar v3 emulator.
    Emulator(EmulatorArgs),
    /// Benchmarks that print numbers.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// The main job on embedded defaults: the sync engine against the emulator, step by step.
    Demo(demo::DemoArgs),
    /// One sync pass: list what changed on each calendar, plan, and run the provider actions.
    Sync(SyncArgs),
    /// Run the service: the add-on API, the sync scheduler, join links.
    Serve {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a deployment against the real systems: Google credentials, the provider's, the
    /// store, public_url, the clock. One PASS/FAIL/SKIP line per check; exit 0 only when none
    /// failed.
    Doctor {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// The configuration file: a commented example, or a check of one.
    Config {
        #[command(subcommand)]
        which: ConfigCommand,
    },
    /// Manage the add-on API's keys.
    Apikey {
        #[command(subcommand)]
        which: ApikeyCommand,
    },
    /// Operator tools on the store: failed and pending actions, retries, resyncs.
    Admin {
        #[command(subcommand)]
        which: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List actions: id, kind, conference, calendar, event, attempts, last error.
    Actions {
        #[arg(long)]
        config: PathBuf,
        /// failed or pending.
        #[arg(long, default_value = "failed")]
        state: String,
        /// Only this calendar's.
        #[arg(long)]
        calendar: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Run a failed (or put-off) action again now.
    Retry {
        #[arg(long)]
        config: PathBuf,
        id: i64,
        /// Who makes the change, for the log (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Give up a failed or pending action.
    Drop {
        #[arg(long)]
        config: PathBuf,
        id: i64,
        #[arg(long)]
        by: Option<String>,
    },
    /// Fully sync a calendar now.
    Resync {
        #[arg(long)]
        config: PathBuf,
        calendar: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Stop syncing a calendar: its push channels stopped, its sync state, links, pending
    /// actions and create intents removed or retired; the service then answers 404 for it and
    /// the add-on removes its trigger. Its meetings are KEPT at the provider (the events still
    /// show their join links: forgetting is not cancelling). Refused while one of its actions
    /// runs at the provider or a worker syncs it. The add-on's next create on it registers it
    /// afresh. A running `serve` stops its channels at Google when they next notify.
    Forget {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        calendar: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Move every meeting made by a provider listed in provider.previous to provider.kind
    /// (future meetings only: ended ones stay), each through the crash-safe recreate path;
    /// prints the counts. Rerunning queues nothing already moved or queued. A running `serve`
    /// (or `confsync sync`) runs the moves.
    MigrateProvider {
        #[arg(long)]
        config: PathBuf,
        /// Print the counts only; queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this calendar's meetings.
        #[arg(long)]
        calendar: Option<String>,
        /// Queue at most this many moves (1 to 100000).
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration: every key of every table, with its default.
    Example {
        /// Print README's table of every key instead (type, range, default, what it does).
        #[arg(long)]
        markdown: bool,
    },
    /// Validate a configuration file (with CONFSYNC_* overrides applied).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a new random key for google.oauth.token_key (base64 of 32 bytes).
    Key,
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// addon (the add-on's calls), read-only (status, admin listings) or admin (admin
        /// changes too).
        #[arg(long, default_value = "addon")]
        scope: String,
    },
    /// List the keys: name, creation time, live or revoked.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke a key by name: it stops authenticating at once.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Sync only this calendar.
    #[arg(long)]
    calendar: Option<String>,
    /// Ignore stored sync tokens: full sync.
    #[arg(long)]
    full: bool,
}

#[derive(clap::Args)]
struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8085")]
    listen: String,
    /// A JSON seed file with users, calendars and events (see README).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Refuse `Bearer dev:<email>` tokens and unregistered service-account keys.
    #[arg(long)]
    no_dev: bool,
    /// Sync tokens older than this many seconds answer 410 (0: never).
    #[arg(long, default_value_t = 28 * 24 * 3600)]
    sync_token_max_age: i64,
    /// Emulate Google's per-user quota (requests per minute, e.g. 600).
    #[arg(long)]
    quota_per_user: Option<u32>,
    /// Seed for generated ids and fault probabilities.
    #[arg(long, default_value_t = 0x0c0f_5eed)]
    rng_seed: u64,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// events.list throughput of the emulator: full listing and incremental listing.
    Emulator(bench::EmulatorBenchArgs),
    /// The sync engine against the in-process emulator over HTTP: full sync of a large calendar,
    /// incremental bursts, provider calls per relevant change, wasted calls.
    Engine(bench::EngineBenchArgs),
    /// The service's push path: N calendars each changed once, latency from the webhook
    /// receiving the notification to the provider call done, and calendars/s.
    Service(bench_service::ServiceBenchArgs),
    /// The operator's views with many calendars: /v1/status, the status page and /metrics
    /// timed over HTTP (median, max, body bytes, CPU per request, resident memory).
    Status(bench_status::StatusBenchArgs),
    /// A first full sync adopting conferences the store has never seen: time from the first
    /// page to the last provider call, CPU per conference, store bytes written per action.
    Adopt(bench_adopt::AdoptBenchArgs),
}

fn init_logging(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONFSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    // The demo, the benchmarks and the doctor print their own story; their logs only say what went wrong
    // (CONFSYNC_LOG for more).
    let default_level = if matches!(
        cli.command,
        Command::Demo(_) | Command::Bench { .. } | Command::Doctor { .. }
    ) {
        "warn"
    } else {
        "info"
    };
    init_logging(&cli.log_format, default_level);
    match cli.command {
        Command::Emulator(args) => run_emulator(args).await,
        Command::Bench {
            which: BenchCommand::Emulator(args),
        } => bench::emulator(args).await,
        Command::Bench {
            which: BenchCommand::Engine(args),
        } => bench::engine(args).await,
        Command::Bench {
            which: BenchCommand::Service(args),
        } => bench_service::run(args).await,
        Command::Bench {
            which: BenchCommand::Status(args),
        } => bench_status::run(args).await,
        Command::Bench {
            which: BenchCommand::Adopt(args),
        } => bench_adopt::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Sync(args) => sync::run(&args.config, args.calendar, args.full).await,
        Command::Serve { config } => sync::serve(&config).await,
        Command::Doctor { config } => doctor::run(&config).await,
        Command::Config {
            which: ConfigCommand::Example { markdown },
        } => {
            if markdown {
                print!("{}", config::markdown_table());
            } else {
                print!("{}", config::example());
            }
            Ok(())
        }
        Command::Config {
            which: ConfigCommand::Key,
        } => {
            println!("{}", confsync_gcal::auth::TokenCipher::generate_key()?);
            Ok(())
        }
        Command::Config {
            which: ConfigCommand::Check { config },
        } => {
            let loaded = config::Config::load(&config)?;
            println!(
                "{}: valid (store {}, {} calendars listed)",
                config.display(),
                confsync_store::redact_location(&loaded.store.location()),
                loaded.sync.calendars.len()
            );
            Ok(())
        }
        Command::Apikey {
            which:
                ApikeyCommand::Create {
                    config,
                    name,
                    scope,
                },
        } => apikey::create(&config, &name, &scope).await,
        Command::Admin { which } => {
            let user = || std::env::var("USER").unwrap_or_else(|_| "an operator".to_owned());
            match which {
                AdminCommand::Actions {
                    config,
                    state,
                    calendar,
                    limit,
                } => apikey::actions(&config, &state, calendar.as_deref(), limit).await,
                AdminCommand::Retry { config, id, by } => {
                    apikey::change_action(&config, id, true, &by.unwrap_or_else(user)).await
                }
                AdminCommand::Drop { config, id, by } => {
                    apikey::change_action(&config, id, false, &by.unwrap_or_else(user)).await
                }
                AdminCommand::Resync {
                    config,
                    calendar,
                    by,
                } => apikey::resync(&config, &calendar, &by.unwrap_or_else(user)).await,
                AdminCommand::Forget {
                    config,
                    calendar,
                    by,
                } => apikey::forget(&config, &calendar, &by.unwrap_or_else(user)).await,
                AdminCommand::MigrateProvider {
                    config,
                    dry_run,
                    calendar,
                    limit,
                    by,
                } => {
                    apikey::migrate_provider(
                        &config,
                        dry_run,
                        calendar.as_deref(),
                        limit,
                        &by.unwrap_or_else(user),
                    )
                    .await
                }
            }
        }
        Command::Apikey {
            which: ApikeyCommand::List { config },
        } => apikey::list(&config).await,
        Command::Apikey {
            which: ApikeyCommand::Revoke { config, name },
        } => apikey::revoke(&config, &name).await,
    }
}

async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let config = EmulatorConfig {
        dev_mode: !args.no_dev,
        sync_token_max_age: (args.sync_token_max_age > 0)
            .then(|| chrono::Duration::seconds(args.sync_token_max_age)),
        quota_per_user_per_minute: args.quota_per_user,
        seed: args.rng_seed,
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::new(config);
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading seed file {}", path.display()))?;
        let now = emulator.shared().clock.now();
        let seeded = confsync_emulator::seed::apply(&mut emulator.shared().world(), &text, now)
            .map_err(|e| anyhow::anyhow!("seed file {}: {e}", path.display()))?;
        tracing::info!(
            events = seeded.events,
            calendars = seeded.calendars.len(),
            "seed loaded"
        );
    }
    let running = emulator
        .spawn(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    // The first line on stdout is the base URL: scripts and tests read it.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", running.base_url())?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(
        base_url = running.base_url(),
        "Calendar v3 emulator serving"
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown();
    Ok(())
}
