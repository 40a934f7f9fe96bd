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
