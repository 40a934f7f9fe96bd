//! The `meetings` table: the built-in local provider's meetings. The provider owns the JSON
//! shapes (`spec_json`, `occurrences_json`); the store keeps them and makes creation idempotent.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::Store;
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

fn from_row(row: &SqliteRow) -> Result<Meeting, sqlx::Error> {
    Ok(Meeting {
        meeting_id: row.try_get("meeting_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        spec_json: row.try_get("spec_json")?,
        join_url: row.try_get("join_url")?,
        occurrences_json: row.try_get("occurrences_json")?,
        deleted: row.try_get("deleted")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
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
        let mut tx = self.write_tx(what).await?;
        sqlx::query(
            "INSERT INTO meetings (meeting_id, idempotency_key, spec_json, join_url, occurrences_json, deleted, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '{}', FALSE, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(meeting_id)
        .bind(idempotency_key)
        .bind(spec_json)
        .bind(join_url)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .ctx(what)?;
        let row = sqlx::query(
            "SELECT meeting_id, idempotency_key, spec_json, join_url, occurrences_json, deleted, created_at, updated_at \
             FROM meetings WHERE idempotency_key = $1",
        )
        .bind(idempotency_key)
        .fetch_one(&mut *tx)
        .await
        .ctx(what)?;
        let meeting = from_row(&row).ctx(what)?;
        self.commit(tx, what).await?;
        Ok(meeting)
    }

    /// A meeting (deleted ones included), None if unknown.
    pub async fn meeting(&self, meeting_id: &str) -> Result<Option<Meeting>, StoreError> {
        let what = || format!("loading meeting {meeting_id}");
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(SELECT);
        query.push(" WHERE meeting_id = ").push_bind(meeting_id);
        let row = query.build().fetch_optional(&self.reader).await.ctx(what)?;
        row.as_ref().map(from_row).transpose().ctx(what)
    }

    /// Replaces a live meeting's spec. [`StoreError::NotFound`] if the meeting is unknown or
    /// deleted.
    pub async fn meeting_update(
        &self,
        meeting_id: &str,
        spec_json: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE meetings SET spec_json = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(spec_json)
            .bind(now_ms)
            .execute(&self.writer)
            .await
            .ctx(|| format!("updating meeting {meeting_id}"))?;
        live(done.rows_affected(), meeting_id, "updating")
    }

    /// Gives a live meeting a new join URL (the host reset the link).
    pub async fn meeting_set_join_url(
        &self,
        meeting_id: &str,
        join_url: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE meetings SET join_url = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(join_url)
            .bind(now_ms)
            .execute(&self.writer)
            .await
            .ctx(|| format!("changing the join URL of meeting {meeting_id}"))?;
        live(done.rows_affected(), meeting_id, "changing the join URL of")
    }

    /// Replaces a live meeting's occurrence exceptions. [`StoreError::NotFound`] if the meeting
    /// is unknown or deleted.
    pub async fn meeting_set_occurrences(
        &self,
        meeting_id: &str,
        occurrences_json: &str,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE meetings SET occurrences_json = $2, updated_at = $3 WHERE meeting_id = $1 AND NOT deleted")
                .bind(meeting_id)
                .bind(occurrences_json)
                .bind(self.now())
                .execute(&self.writer)
                .await
                .ctx(|| format!("setting occurrences of meeting {meeting_id}"))?;
        live(done.rows_affected(), meeting_id, "setting occurrences of")
    }

    /// Soft-deletes a meeting. Deleting a deleted meeting is a no-op; an unknown one is
    /// [`StoreError::NotFound`].
    pub async fn meeting_delete(&self, meeting_id: &str) -> Result<(), StoreError> {
        let what = || format!("deleting meeting {meeting_id}");
        let done = sqlx::query("UPDATE meetings SET deleted = TRUE, updated_at = $2 WHERE meeting_id = $1 AND NOT deleted")
            .bind(meeting_id)
            .bind(self.now())
            .execute(&self.writer)
            .await
            .ctx(what)?;
        if done.rows_affected() == 0 && self.meeting(meeting_id).await?.is_none() {
            return Err(StoreError::not_found(what()));
        }
        Ok(())
    }

    /// Every meeting, deleted ones included, oldest first.
    pub async fn meetings(&self) -> Result<Vec<Meeting>, StoreError> {
        let what = || "listing meetings".to_owned();
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(SELECT);
        query.push(" ORDER BY created_at, meeting_id");
        let rows = query.build().fetch_all(&self.reader).await.ctx(what)?;
        rows.iter()
            .map(from_row)
            .collect::<Result<_, _>>()
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
