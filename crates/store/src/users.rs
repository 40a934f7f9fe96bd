//! The `google_users` and `oauth_requests` tables, and calendar owners: who reaches which
//! calendar with per-user OAuth. The store keeps sealed secrets only; the caller seals and opens
//! them (the key lives in config).

use crate::Store;
use crate::db::{Cols, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// A user who connected their Google account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleUser {
    /// The account's email, lowercase.
    pub user_id: String,
    /// The refresh token, sealed by the caller's cipher (never the token itself).
    pub refresh_token_sealed: String,
    /// The scopes granted, space separated.
    pub scope: Option<String>,
    /// The grant was revoked or expired: the user must connect again.
    pub needs_reauth: bool,
    /// Why the grant stopped working (no secret in it).
    pub reauth_reason: Option<String>,
    /// Last change (unix ms).
    pub updated_at: i64,
}

/// An authorization request waiting for its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthRequest {
    /// The PKCE verifier, sealed by the caller's cipher.
    pub verifier_sealed: String,
    /// The calendar the user asked to connect, if any.
    pub calendar_id: Option<String>,
    /// When the request started (unix ms).
    pub created_at: i64,
}

fn user_from_row(row: &impl Cols) -> Result<GoogleUser, sqlx::Error> {
    Ok(GoogleUser {
        user_id: row.col("user_id")?,
        refresh_token_sealed: row.col("refresh_token_sealed")?,
        scope: row.col("scope")?,
        needs_reauth: row.col("needs_reauth")?,
        reauth_reason: row.col("reauth_reason")?,
        updated_at: row.col("updated_at")?,
    })
}

fn request_from_row(row: &impl Cols) -> Result<OAuthRequest, sqlx::Error> {
    Ok(OAuthRequest {
        verifier_sealed: row.col("verifier_sealed")?,
        calendar_id: row.col("calendar_id")?,
        created_at: row.col("created_at")?,
    })
}

/// The condition (on a `calendars` row) that its owner must connect their Google account
/// again: the recorded owner, or with none recorded the user the calendar's id names, is marked.
macro_rules! needs_reauth {
    () => {
        "COALESCE(owner, lower(calendar_id)) IN (SELECT user_id FROM google_users WHERE needs_reauth)"
    };
}
pub(crate) use needs_reauth;

macro_rules! user_select {
    ($rest:literal) => {
        concat!(
            "SELECT user_id, refresh_token_sealed, scope, needs_reauth, reauth_reason, updated_at FROM google_users ",
            $rest
        )
    };
}

impl Store {
    /// Stores a user's (new) grant and clears any re-authorisation mark.
    pub async fn user_connect(
        &self,
        user_id: &str,
        refresh_token_sealed: &str,
        scope: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        on_write!(self, c => sqlx::query(
            "INSERT INTO google_users (user_id, refresh_token_sealed, scope, needs_reauth, created_at, updated_at) \
             VALUES ($1, $2, $3, FALSE, $4, $4) \
             ON CONFLICT (user_id) DO UPDATE SET refresh_token_sealed = excluded.refresh_token_sealed, \
             scope = excluded.scope, needs_reauth = FALSE, reauth_reason = NULL, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(refresh_token_sealed)
        .bind(scope)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("storing the grant of user {user_id}"))?;
        Ok(())
    }

    /// The user, None if they never connected.
    pub async fn user(&self, user_id: &str) -> Result<Option<GoogleUser>, StoreError> {
        on_read!(self, c => {
            let row = sqlx::query(user_select!("WHERE user_id = $1"))
                .bind(user_id)
                .fetch_optional(c)
                .await;
            row.and_then(|row| row.as_ref().map(user_from_row).transpose())
        })
        .ctx(|| format!("loading user {user_id}"))
    }

    /// Every connected user, by id.
    pub async fn users(&self) -> Result<Vec<GoogleUser>, StoreError> {
        on_read!(self, c => {
            let rows = sqlx::query(user_select!("ORDER BY user_id"))
                .fetch_all(c)
                .await;
            rows.and_then(|rows| rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(|| "listing users".to_owned())
    }

    /// Marks the user's grant as unusable (revoked, expired). Answers whether this call changed
    /// it (false: already marked, or unknown user), so the caller logs the transition once.
    pub async fn user_needs_reauth(
        &self,
        user_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = on_write!(self, c => sqlx::query(
            "UPDATE google_users SET needs_reauth = TRUE, reauth_reason = $2, updated_at = $3 \
             WHERE user_id = $1 AND NOT needs_reauth",
        )
        .bind(user_id)
        .bind(reason)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("marking user {user_id} as needing re-authorisation"))?;
        Ok(done > 0)
    }

    /// Records whose grant reaches a calendar (registering the calendar if needed).
    pub async fn calendar_set_owner(
        &self,
        calendar_id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let what = || format!("setting the owner of calendar {calendar_id}");
        let mut tx = self.write_tx(what).await?;
        crate::calendars::ensure(&mut tx, calendar_id, now_ms).await?;
        on_tx!(&mut tx, c => sqlx::query("UPDATE calendars SET owner = $2 WHERE calendar_id = $1")
            .bind(calendar_id)
            .bind(owner)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// Records `owner` as the calendar's owner only if none is recorded or it is the same user
    /// (registering the calendar if needed), in one conditional write: a recorded owner is never
    /// replaced. Answers the other owner when one is recorded.
    pub async fn calendar_claim_owner(
        &self,
        calendar_id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let what = || format!("claiming calendar {calendar_id}");
        let mut tx = self.write_tx(what).await?;
        crate::calendars::ensure(&mut tx, calendar_id, now_ms).await?;
        let done = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE calendars SET owner = $2 WHERE calendar_id = $1 AND (owner IS NULL OR owner = $2)",
        )
        .bind(calendar_id)
        .bind(owner)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let other = if done == 0 {
            on_tx!(&mut tx, c => {
                let row = sqlx::query("SELECT owner FROM calendars WHERE calendar_id = $1")
                    .bind(calendar_id)
                    .fetch_optional(c)
                    .await;
                row.map(|row| row.and_then(|r| r.col::<Option<String>>("owner").ok().flatten()))
            })
            .ctx(what)?
        } else {
            None
        };
        self.commit(tx, what).await?;
        Ok(other)
    }

    /// The recorded owner of a calendar, if one was set.
    pub async fn calendar_owner(&self, calendar_id: &str) -> Result<Option<String>, StoreError> {
        on_read!(self, c => {
            let row = sqlx::query("SELECT owner FROM calendars WHERE calendar_id = $1")
                .bind(calendar_id)
                .fetch_optional(c)
                .await;
            row.map(|row| row.and_then(|r| r.col::<Option<String>>("owner").ok().flatten()))
        })
        .ctx(|| format!("loading the owner of calendar {calendar_id}"))
    }

    /// Whether any user is marked as needing re-authorisation (one indexed read): when none
    /// is, no calendar needs it, and the queries below skip their scan.
    pub async fn any_user_needs_reauth(&self) -> Result<bool, StoreError> {
        let found: Option<i32> = on_read!(self, c => sqlx::query_scalar(
            "SELECT 1 FROM google_users WHERE needs_reauth LIMIT 1",
        )
        .fetch_optional(c)
        .await)
        .ctx(|| "looking for users needing re-authorisation".to_owned())?;
        Ok(found.is_some())
    }

    /// How many calendars need re-authorisation: their recorded owner (or, with none recorded,
    /// the user their id names) is marked as needing it. One COUNT, no rows loaded, and no scan
    /// at all while no user is marked.
    pub async fn calendars_needing_reauth_count(&self) -> Result<i64, StoreError> {
        if !self.any_user_needs_reauth().await? {
            return Ok(0);
        }
        on_read!(self, c => sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM calendars WHERE ",
            needs_reauth!()
        ))
        .fetch_one(c)
        .await)
        .ctx(|| "counting calendars needing re-authorisation".to_owned())
    }

    /// Which of `calendar_ids` need re-authorisation: their recorded owner (or, with none
    /// recorded, the user their id names) is marked as needing it. For the calendars a status
    /// page shows, by id: bounded by the ids asked about, whatever the number of calendars
    /// (counted by [`Store::calendar_summary`], listed by [`Store::calendars_ranked`] with
    /// [`crate::Worst::NeedingReauth`]).
    pub async fn calendars_needing_reauth_among(
        &self,
        calendar_ids: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        if calendar_ids.is_empty() || !self.any_user_needs_reauth().await? {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for chunk in crate::db::chunks(calendar_ids, crate::channels::IN_CHUNK) {
            let sql = format!(
                concat!(
                    "SELECT calendar_id FROM calendars WHERE calendar_id IN ({}) AND ",
                    needs_reauth!(),
                    " ORDER BY calendar_id"
                ),
                crate::channels::placeholders(1, chunk.len())
            );
            let rows: Vec<String> = on_read!(self, c => {
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(c).await
            })
            .ctx(|| "checking calendars for re-authorisation".to_owned())?;
            found.extend(rows);
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Keeps an authorization request until its callback, unless `max_pending` requests are
    /// already waiting: answers false then (nothing stored). Stale ones (older than
    /// `stale_before_ms`) are dropped first, in the same transaction, so the table never holds
    /// more than `max_pending` rows whatever unauthenticated callers do.
    pub async fn oauth_request_put(
        &self,
        state_hash: &str,
        verifier_sealed: &str,
        calendar_id: Option<&str>,
        now_ms: i64,
        stale_before_ms: i64,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let what = || "storing an authorization request".to_owned();
        let mut tx = self.write_tx(what).await?;
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM oauth_requests WHERE created_at < $1")
            .bind(stale_before_ms)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        let pending: i64 =
            on_tx!(&mut tx, c => sqlx::query_scalar("SELECT COUNT(*) AS n FROM oauth_requests")
            .fetch_one(c)
            .await)
            .ctx(what)?;
        if pending >= i64::from(max_pending) {
            self.commit(tx, what).await?; // keeps the pruning
            return Ok(false);
        }
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO oauth_requests (state_hash, verifier_sealed, calendar_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(state_hash)
        .bind(verifier_sealed)
        .bind(calendar_id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(true)
    }

    /// How many authorization requests are stored (stale ones included until the next put).
    pub async fn oauth_requests_pending(&self) -> Result<i64, StoreError> {
        let what = || "counting authorization requests".to_owned();
        on_read!(self, c => sqlx::query_scalar("SELECT COUNT(*) AS n FROM oauth_requests")
            .fetch_one(c)
            .await)
        .ctx(what)
    }

    /// Takes (and deletes) the authorization request for a state: single use.
    pub async fn oauth_request_take(
        &self,
        state_hash: &str,
    ) -> Result<Option<OAuthRequest>, StoreError> {
        let what = || "taking an authorization request".to_owned();
        let mut tx = self.write_tx(what).await?;
        let request = on_tx!(&mut tx, c => {
            let row = sqlx::query(
                "SELECT verifier_sealed, calendar_id, created_at FROM oauth_requests WHERE state_hash = $1",
            )
            .bind(state_hash)
            .fetch_optional(c)
            .await;
            row.and_then(|row| row.as_ref().map(request_from_row).transpose())
        })
        .ctx(what)?;
        let Some(request) = request else {
            return Ok(None);
        };
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM oauth_requests WHERE state_hash = $1")
            .bind(state_hash)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(Some(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_authorization_requests_are_capped_after_dropping_stale_ones() {
        let store = Store::memory().await.unwrap();
        for i in 0..3 {
            assert!(
                store
                    .oauth_request_put(&format!("s{i}"), "v", None, 1_000 + i, 0, 3)
                    .await
                    .unwrap()
            );
        }
        assert!(
            !store
                .oauth_request_put("s3", "v", Some("c"), 2_000, 0, 3)
                .await
                .unwrap(),
            "full: refused, nothing stored"
        );
        assert_eq!(store.oauth_requests_pending().await.unwrap(), 3);
        assert!(store.oauth_request_take("s3").await.unwrap().is_none());
        // Once the first two are stale, a new one fits.
        assert!(
            store
                .oauth_request_put("s4", "v", None, 3_000, 1_002, 3)
                .await
                .unwrap()
        );
        assert_eq!(store.oauth_requests_pending().await.unwrap(), 2);
    }
}
