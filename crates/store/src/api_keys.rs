//! The `api_keys` table: who may call the add-on API. Only hashes are stored; the caller hashes.

use crate::Store;
use crate::db::{on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// An API key as stored (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The name given at creation (`confsync apikey create --name`).
    pub name: String,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Revoked keys no longer authenticate.
    pub revoked: bool,
    /// What the key may do: `addon`, `read-only` or `admin`.
    pub scope: String,
}

/// The scopes a key may have.
pub const SCOPES: [&str; 3] = ["addon", "read-only", "admin"];

impl Store {
    /// Stores a new key's hash under `name`. A name or hash already used is a
    /// [`StoreError::Conflict`].
    pub async fn api_key_create(
        &self,
        name: &str,
        key_hash: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.api_key_create_scoped(name, key_hash, "addon", now_ms)
            .await
    }

    /// [`Store::api_key_create`] with a scope (one of [`SCOPES`]; anything else is a
    /// [`StoreError::Conflict`]).
    pub async fn api_key_create_scoped(
        &self,
        name: &str,
        key_hash: &str,
        scope: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let what = || format!("creating API key {name}");
        if !SCOPES.contains(&scope) {
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!("unknown scope {scope:?} (one of {})", SCOPES.join(", ")),
            });
        }
        let mut tx = self.write_tx(what).await?;
        let taken: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar("SELECT name FROM api_keys WHERE name = $1 OR key_hash = $2")
            .bind(name)
            .bind(key_hash)
            .fetch_optional(c)
            .await)
        .ctx(what)?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                what: format!("creating API key {name}"),
                detail: "the name or the key is already in use".into(),
            });
        }
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO api_keys (name, key_hash, created_at, revoked, scope) VALUES ($1, $2, $3, FALSE, $4)",
        )
        .bind(name)
        .bind(key_hash)
        .bind(now_ms)
        .bind(scope)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// The name of the live key with this hash, if any.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        let what = || "looking up an API key".to_owned();
        on_read!(self, c => sqlx::query_scalar::<_, String>("SELECT name FROM api_keys WHERE key_hash = $1 AND NOT revoked")
            .bind(key_hash)
            .fetch_optional(c)
            .await)
        .ctx(what)
    }

    /// The name and scope of the live key with this hash, if any.
    pub async fn api_key_lookup(
        &self,
        key_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let what = || "looking up an API key".to_owned();
        on_read!(self, c => sqlx::query_as::<_, (String, String)>(
            "SELECT name, scope FROM api_keys WHERE key_hash = $1 AND NOT revoked",
        )
        .bind(key_hash)
        .fetch_optional(c)
        .await)
        .ctx(what)
    }

    /// Revokes a key by name; [`StoreError::NotFound`] if there is none.
    pub async fn api_key_revoke(&self, name: &str) -> Result<(), StoreError> {
        let what = || format!("revoking API key {name}");
        let done =
            on_write!(self, c => sqlx::query("UPDATE api_keys SET revoked = TRUE WHERE name = $1")
            .bind(name)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
            .ctx(what)?;
        if done == 0 {
            return Err(StoreError::NotFound {
                what: format!("API key {name}"),
            });
        }
        Ok(())
    }

    /// Every key (without hashes).
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let what = || "listing API keys".to_owned();
        let rows: Vec<(String, i64, bool, String)> = on_read!(self, c => sqlx::query_as(
            "SELECT name, created_at, revoked, scope FROM api_keys ORDER BY name",
        )
        .fetch_all(c)
        .await)
        .ctx(what)?;
        Ok(rows
            .into_iter()
            .map(|(name, created_at, revoked, scope)| ApiKey {
                name,
                created_at,
                revoked,
                scope,
            })
            .collect())
    }
}
