//! `confsync apikey create|list|revoke`: the add-on API's keys. These commands open only the
//! store ([`config::load_store`]): no Google or provider secret is needed to run them.

use std::path::Path;

use anyhow::Context;

use crate::config;

/// `confsync apikey create`: prints a new key once; only its hash is stored. `scope`: `addon`
/// (the add-on's calls), `read-only` (status and admin listings) or `admin` (admin changes).
pub async fn create(config_path: &Path, name: &str, scope: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    if !confsync_store::SCOPES.contains(&scope) {
        anyhow::bail!(
            "--scope {scope:?}: must be one of {}",
            confsync_store::SCOPES.join(", ")
        );
    }
    let store = config::load_store(config_path)?.open().await?;
    let key = confsync_service::new_api_key();
    store
        .api_key_create_scoped(
            name,
            &confsync_service::hash_api_key(&key),
            scope,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .with_context(|| format!("creating API key {name}"))?;
    println!("{key}");
    eprintln!("API key {name} created; this is the only time it is shown.");
    Ok(())
}

/// `confsync apikey list`: one line per key (name, scope, creation time, live or revoked);
/// never a key or its hash.
pub async fn list(config_path: &Path) -> anyhow::Result<()> {
    let store = config::load_store(config_path)?.open().await?;
    let keys = store.api_keys().await.context("listing API keys")?;
    if keys.is_empty() {
        eprintln!("no API keys (`confsync apikey create --name NAME` makes one)");
    }
    for key in keys {
        let created = chrono::DateTime::from_timestamp_millis(key.created_at)
            .map_or_else(|| key.created_at.to_string(), |t| t.to_rfc3339());
        let state = if key.revoked { "revoked" } else { "live" };
        println!("{}\t{}\t{created}\t{state}", key.name, key.scope);
    }
    Ok(())
}

/// `confsync apikey revoke`: the key stops authenticating at once.
pub async fn revoke(config_path: &Path, name: &str) -> anyhow::Result<()> {
    let store = config::load_store(config_path)?.open().await?;
    store
        .api_key_revoke(name)
        .await
        .with_context(|| format!("revoking API key {name}"))?;
    eprintln!("API key {name} revoked.");
    Ok(())
}

/// `confsync admin actions`: failed (or pending) actions, newest failures first.
pub async fn actions(
    config_path: &Path,
    state: &str,
    calendar: Option<&str>,
    limit: i64,
) -> anyhow::Result<()> {
    let state = match state {
        "failed" => confsync_store::OutboxState::Failed,
        "pending" => confsync_store::OutboxState::Pending,
        other => anyhow::bail!("--state {other:?}: must be failed or pending"),
    };
    if !(1..=10_000).contains(&limit) {
        anyhow::bail!("--limit must be 1 to 10000");
    }
    let store = config::load_store(config_path)?.open().await?;
    let rows = store
        .actions(state, calendar, limit)
        .await
        .context("listing actions")?;
    if rows.is_empty() {
        eprintln!("no {state} actions");
    }
    for r in rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\tattempts {}\t{}",
            r.id,
            r.action.kind(),
            r.conference_id,
            r.calendar_id,
            r.event_id,
            r.attempts,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `confsync admin retry|drop ID`: a failed (or pending) action runs again now, or is given
/// up. Logged with the operator's name for the change (`--by`, else `$USER`).
pub async fn change_action(
    config_path: &Path,
    id: i64,
    retry: bool,
    by: &str,
) -> anyhow::Result<()> {
    let store = config::load_store(config_path)?.open().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let changed = if retry {
        store.retry_action(id, now).await
    } else {
        store
            .drop_action(id, &format!("dropped by {by} (confsync admin drop)"), now)
            .await
    }
    .with_context(|| format!("action {id}"))?;
    let verb = if retry { "retried" } else { "dropped" };
    if !changed {
        anyhow::bail!("action {id} is done or dropped already: not {verb}");
    }
    tracing::info!(by, outbox_id = id, "admin: action {verb}");
    eprintln!(
        "action {id} {verb}{}",
        if retry {
            ": a running `confsync serve` runs it within its poll"
        } else {
            ""
        }
    );
    Ok(())
}

/// `confsync admin resync CALENDAR`: the calendar's next pass is a full sync, and it is due now
/// (a running `serve` picks it up at its next poll).
pub async fn resync(config_path: &Path, calendar: &str, by: &str) -> anyhow::Result<()> {
    let store = config::load_store(config_path)?.open().await?;
    if store.calendar(calendar).await?.is_none() {
        anyhow::bail!("confsync does not sync calendar {calendar}");
    }
    store.mark_full_sync_needed(calendar).await?;
    store
        .mark_dirty(calendar, chrono::Utc::now().timestamp_millis())
        .await?;
    tracing::info!(by, calendar, "admin: full sync requested");
    eprintln!("calendar {calendar}: full sync requested");
    Ok(())
}

/// `confsync admin forget --calendar ID`: confsync stops syncing the calendar
/// ([`confsync_store::Store::forget_calendar`]). Its meetings stay at the provider. Its push
/// channels' records are removed: this command cannot call Google, so a running `serve` stops
/// each at its next notification (an orphan of ours), or it expires by itself (7 days at most).
pub async fn forget(config_path: &Path, calendar: &str, by: &str) -> anyhow::Result<()> {
    if calendar.trim().is_empty() {
        anyhow::bail!("--calendar must not be empty");
    }
    let store = config::load_store(config_path)?.open().await?;
    let forgotten = match store
        .forget_calendar(calendar, chrono::Utc::now().timestamp_millis())
        .await
    {
        Ok(forgotten) => forgotten,
        Err(confsync_store::StoreError::NotFound { .. }) => {
            anyhow::bail!("confsync does not sync calendar {calendar}")
        }
        Err(confsync_store::StoreError::Conflict { detail, .. }) => {
            anyhow::bail!("calendar {calendar} not forgotten: {detail}")
        }
        Err(e) => return Err(e).with_context(|| format!("forgetting calendar {calendar}")),
    };
    tracing::info!(by, calendar, "admin: calendar forgotten");
    println!(
        "calendar {calendar} forgotten: {} links ({} meetings kept at the provider), {} pending actions dropped, {} create intents retired, {} push channels to stop",
        forgotten.links,
        forgotten.live_links,
        forgotten.pending_rows,
        forgotten.intents,
        forgotten.live_channels.len()
    );
    if !forgotten.live_channels.is_empty() {
        eprintln!(
            "its push channels are stopped by a running `confsync serve` when they next notify (or expire by themselves); remove the calendar from [sync] calendars if it is listed there"
        );
    }
    Ok(())
}

/// `confsync admin migrate-provider`: queues the moves of meetings made by a provider of
/// `provider.previous` to `provider.kind` (none with `--dry-run`), and prints where the move
/// stands. Reads the providers' names and the store only: no adapter is built, no secret
/// resolved (an adapter's name is its kind).
pub async fn migrate_provider(
    config_path: &Path,
    dry_run: bool,
    calendar: Option<&str>,
    limit: i64,
    by: &str,
) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&limit) {
        anyhow::bail!("--limit must be 1 to 100000");
    }
    let (current, previous) = config::load_provider_names(config_path)?;
    for kind in &previous {
        if !config::PROVIDER_KINDS.contains(&kind.as_str()) || *kind == current {
            anyhow::bail!(
                "provider.previous: {kind:?} must be a provider kind other than provider.kind ({current})"
            );
        }
    }
    let store = config::load_store(config_path)?.open().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let from = &previous;
    let queued = if dry_run {
        Vec::new()
    } else {
        store
            .queue_provider_moves(&current, from, calendar, limit, now)
            .await
            .context("queueing moves")?
    };
    if !queued.is_empty() {
        tracing::info!(by, queued = queued.len(), provider = %current, "admin: meetings queued to move to the current provider");
    }
    let moves = store
        .provider_moves(&current, from, calendar, now)
        .await
        .context("counting moves")?;
    println!(
        "provider {current} (from {}): {} to move, {} queued, {} moved, {} failed, {} ended (left on their provider), {} not in Calendar yet{}",
        if from.is_empty() {
            "no provider.previous".to_owned()
        } else {
            from.join(", ")
        },
        moves.to_move,
        moves.queued,
        moves.moved,
        moves.failed,
        moves.ended,
        moves.not_in_calendar_yet,
        if dry_run {
            " (dry run: nothing queued)".to_owned()
        } else {
            format!("; {} queued now", queued.len())
        }
    );
    if moves.unreachable > 0 {
        eprintln!(
            "warning: {} meetings were made by a provider provider.previous does not list: they are not moved (their old meetings could not be deleted); list it, with its table, and run this again",
            moves.unreachable
        );
    }
    Ok(())
}
