//! The `meetings` table: the built-in local provider's meetings. The provider owns the JSON
//! shapes (`spec_json`, `occurrences_json`); the store keeps them and makes creation idempotent.

use crate::Store;
use crate::db::{Cols, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// A meeting of the local provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// The meeting id (a link's conference id).
    pub meeting_id: String,
    /// The idempotency key of the create that made it.
    pub idempotency_key: String,
    /// The meeting as the provider last set it (the provider's JSON).
    pub spec_json: String,
    /// The URL guests join with.
    pub join_url: String,
    /// `{}` until occurrences are set.
    pub occurrences_json: String,
    /// Soft-deleted meetings are kept.
    pub deleted: bool,
    /// When the row was created (unix ms).
    pub created_at: i64,
    /// Last change to the row (unix ms).
    pub updated_at: i64,
}

const SELECT: &str = "SELECT meeting_id, idempotency_key, spec_json, join_url, occurrences_json, deleted, created_at, updated_at FROM meetings";

fn from_row(row: &impl Cols) -> Result<Meeting, sqlx::Error> {
    Ok(Meeting {
        meeting_id: row.col("meeting_id")?,
        idempotency_key: row.col("idempotency_key")?,
        spec_json: row.col("spec_json")?,
        join_url: row.col("join_url")?,
        occurrences_json: row.col("occurrences_json")?,
        deleted: row.col("deleted")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
    })
}

impl Store {
    /// Creates a meeting, idempotently: if a meeting was already created with
    /// `idempotency_key`, that meeting is returned unchanged (whatever `meeting_id` this call
    /// proposed). A `meeting_id` already used by another key is a [`StoreError::Conflict`].
    pub async fn meeting_create(
        &self,
        meeting_id: &str,
        idempotency_key: &str,
        spec_json: &str,
        join_url: &str,
        now_ms: i64,
    ) -> Result<Meeting, StoreError> {
        let what = || format!("creating meeting {meeting_id} (idempotency key {idempotency_key})");
        // An upsert by key, then a read of what it left (a statement that sees every commit
        // before it): no read-then-write, no key needed (see `crate::db`).
        let mut tx = self.write_tx_keyed(self.lock_keys(), what).await?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO meetings (meeting_id, idempotency_key, spec_json, join_url, occurrences_json, deleted, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '{}', FALSE, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(meeting_id)
        .bind(idempotency_key)
        .bind(spec_json)
        .bind(join_url)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let meeting = on_tx!(&mut tx, c => {
            let row = sqlx::query(
                "SELECT meeting_id, idempotency_key, spec_json, join_url, occurrences_json, deleted, created_at, updated_at \
                 FROM meetings WHERE idempotency_key = $1",
            )
            .bind(idempotency_key)
            .fetch_one(c)
            .await;
            row.and_then(|row| from_row(&row))
        })
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(meeting)
    }

    /// A meeting (deleted ones included), None if unknown.
    pub async fn meeting(&self, meeting_id: &str) -> Result<Option<Meeting>, StoreError> {
        let what = || format!("loading meeting {meeting_id}");
        let sql = format!("{SELECT} WHERE meeting_id = $1");
        on_read!(self, c => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(meeting_id)
                .fetch_optional(c)
                .await;
            row.and_then(|row| row.as_ref().map(from_row).transpose())
        })
        .ctx(what)
    }

    /// Replaces a live meeting's spec. [`StoreError::NotFound`] if the meeting is unknown or
    /// deleted.
    pub async fn meeting_update(
        &self,
        meeting_id: &str,
        spec_json: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let done = on_write!(self, c => sqlx::query("UPDATE meetings SET spec_json = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(spec_json)
            .bind(now_ms)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(|| format!("updating meeting {meeting_id}"))?;
        live(done, meeting_id, "updating")
    }

    /// Gives a live meeting a new join URL (the host reset the link).
    pub async fn meeting_set_join_url(
        &self,
        meeting_id: &str,
        join_url: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let done = on_write!(self, c => sqlx::query("UPDATE meetings SET join_url = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(join_url)
            .bind(now_ms)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(|| format!("changing the join URL of meeting {meeting_id}"))?;
        live(done, meeting_id, "changing the join URL of")
    }

    /// Replaces a live meeting's occurrence exceptions. [`StoreError::NotFound`] if the meeting
    /// is unknown or deleted.
    pub async fn meeting_set_occurrences(
        &self,
        meeting_id: &str,
        occurrences_json: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let done = on_write!(self, c => sqlx::query("UPDATE meetings SET occurrences_json = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(occurrences_json)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(|| format!("setting occurrences of meeting {meeting_id}"))?;
        live(done, meeting_id, "setting occurrences of")
    }

    /// Soft-deletes a meeting. Deleting a deleted meeting is a no-op; an unknown one is
    /// [`StoreError::NotFound`].
    pub async fn meeting_delete(&self, meeting_id: &str) -> Result<(), StoreError> {
        let what = || format!("deleting meeting {meeting_id}");
        let now = self.now();
        let done = on_write!(self, c => sqlx::query("UPDATE meetings SET deleted = TRUE, updated_at = $2 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        if done == 0 && self.meeting(meeting_id).await?.is_none() {
            return Err(StoreError::not_found(what()));
        }
        Ok(())
    }

    /// Every meeting, deleted ones included, oldest first.
    pub async fn meetings(&self) -> Result<Vec<Meeting>, StoreError> {
        let what = || "listing meetings".to_owned();
        let sql = format!("{SELECT} ORDER BY created_at, meeting_id");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(c).await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(what)
    }
}

fn live(rows: u64, meeting_id: &str, doing: &str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::not_found(format!(
            "{doing} meeting {meeting_id}: no live meeting"
        )))
    } else {
        Ok(())
    }
}
