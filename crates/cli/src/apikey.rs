//! `confsync apikey create|list|revoke`: the add-on API's keys. These commands open only the
//! store ([`config::load_store`]): no Google or provider secret is needed to run them.

use std::path::Path;

use anyhow::Context;

use crate::config;

/// `confsync apikey create`: prints a new key once; only its hash is stored.
pub async fn create(config_path: &Path, name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    let store = config::load_store(config_path)?.open().await?;
    let key = confsync_service::new_api_key();
    store
        .api_key_create(
            name,
            &confsync_service::hash_api_key(&key),
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .with_context(|| format!("creating API key {name}"))?;
    println!("{key}");
    eprintln!("API key {name} created; this is the only time it is shown.");
    Ok(())
}

/// `confsync apikey list`: one line per key (name, creation time, live or revoked); never a
/// key or its hash.
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
        println!("{}\t{created}\t{state}", key.name);
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
