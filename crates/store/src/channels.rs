//! The `channels` table: push channels (events.watch) per calendar.

use crate::Store;
use crate::db::{Cols, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// A push channel as stored (the token only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Our channel id (unique per channel, never reused).
    pub channel_id: String,
    /// The calendar it watches.
    pub calendar_id: String,
    /// Google's id of the watched resource (checked on every notification).
    pub resource_id: String,
    /// SHA-256 of the channel's secret token.
    pub token_hash: String,
    /// When Google stops the channel (unix ms).
    pub expiration_ms: i64,
    /// When it was made (unix ms).
    pub created_at: i64,
    /// Stopped by us (replaced or no longer wanted).
    pub stopped: bool,
}

const SELECT: &str = "SELECT channel_id, calendar_id, resource_id, token_hash, expiration_ms, created_at, stopped FROM channels";

fn from_row(row: &impl Cols) -> Result<Channel, sqlx::Error> {
    Ok(Channel {
        channel_id: row.col("channel_id")?,
        calendar_id: row.col("calendar_id")?,
        resource_id: row.col("resource_id")?,
        token_hash: row.col("token_hash")?,
        expiration_ms: row.col("expiration_ms")?,
        created_at: row.col("created_at")?,
        stopped: row.col("stopped")?,
    })
}

impl Store {
    /// Records a new channel (its calendar is registered if needed).
    pub async fn channel_create(&self, channel: &Channel) -> Result<(), StoreError> {
        let what = || {
            format!(
                "recording channel {} of calendar {}",
                channel.channel_id, channel.calendar_id
            )
        };
        let mut tx = self.write_tx(what).await?;
        on_tx!(&mut tx, c => sqlx::query("INSERT INTO calendars (calendar_id, needs_full_sync, created_at) VALUES ($1, TRUE, $2) ON CONFLICT (calendar_id) DO NOTHING")
            .bind(&channel.calendar_id)
            .bind(channel.created_at)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO channels (channel_id, calendar_id, resource_id, token_hash, expiration_ms, created_at, stopped) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&channel.channel_id)
        .bind(&channel.calendar_id)
        .bind(&channel.resource_id)
        .bind(&channel.token_hash)
        .bind(channel.expiration_ms)
        .bind(channel.created_at)
        .bind(channel.stopped)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await
    }

    /// A channel by id (stopped ones included).
    pub async fn channel(&self, channel_id: &str) -> Result<Option<Channel>, StoreError> {
        let what = || format!("loading channel {channel_id}");
        let sql = format!("{SELECT} WHERE channel_id = $1");
        on_read!(self, c => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(channel_id)
                .fetch_optional(c)
                .await;
            row.and_then(|row| row.as_ref().map(from_row).transpose())
        })
        .ctx(what)
    }

    /// Channels not stopped by us and not expired at `now_ms`, newest first.
    pub async fn live_channels(&self, now_ms: i64) -> Result<Vec<Channel>, StoreError> {
        let what = || "listing live channels".to_owned();
        let sql =
            format!("{SELECT} WHERE NOT stopped AND expiration_ms > $1 ORDER BY created_at DESC");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms)
                .fetch_all(c)
                .await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(what)
    }

    /// Live channels expiring first (at most `limit`), and how many are live: status at any
    /// scale.
    pub async fn channels_expiring_first(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<(Vec<Channel>, i64), StoreError> {
        let what = || "listing the live channels expiring first".to_owned();
        let sql = format!(
            "{SELECT} WHERE NOT stopped AND expiration_ms > $1 ORDER BY expiration_ms, channel_id LIMIT $2"
        );
        let first = on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(c)
                .await;
            rows.and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
        })
        .ctx(what)?;
        let live: i64 = on_read!(self, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM channels WHERE NOT stopped AND expiration_ms > $1",
        )
        .bind(now_ms)
        .fetch_one(c)
        .await)
        .ctx(what)?;
        Ok((first, live))
    }

    /// Marks a channel stopped.
    pub async fn channel_stop(&self, channel_id: &str) -> Result<(), StoreError> {
        let what = || format!("stopping channel {channel_id}");
        on_write!(self, c => sqlx::query("UPDATE channels SET stopped = TRUE WHERE channel_id = $1")
            .bind(channel_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        Ok(())
    }
}

impl Store {
    /// Completes a channel recorded before its watch call: Google's resource id and expiration.
    pub async fn channel_activate(
        &self,
        channel_id: &str,
        resource_id: &str,
        expiration_ms: i64,
    ) -> Result<(), StoreError> {
        let what = || format!("activating channel {channel_id}");
        on_write!(self, c => sqlx::query(
            "UPDATE channels SET resource_id = $2, expiration_ms = $3 WHERE channel_id = $1",
        )
        .bind(channel_id)
        .bind(resource_id)
        .bind(expiration_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        Ok(())
    }
}

impl Store {
    /// Accepts message `number` of a channel if it is above every number accepted on that
    /// channel before: answers true then (and remembers it), false for a replay, a redelivery
    /// or an unknown channel. One conditional UPDATE, so of concurrent deliveries of one number
    /// exactly one is accepted, and the mark survives restarts.
    pub async fn channel_message_accept(
        &self,
        channel_id: &str,
        number: i64,
    ) -> Result<bool, StoreError> {
        let what = || format!("recording message {number} of channel {channel_id}");
        let done = on_write!(self, c => sqlx::query(
            "UPDATE channels SET highest_message = $2 WHERE channel_id = $1 AND highest_message < $2",
        )
        .bind(channel_id)
        .bind(number)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        Ok(done > 0)
    }

    /// The highest message number accepted on a channel (0: none yet), None for an unknown
    /// channel.
    pub async fn channel_highest_message(
        &self,
        channel_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let what = || format!("loading the highest message of channel {channel_id}");
        on_read!(self, c => sqlx::query_scalar::<_, i64>("SELECT highest_message FROM channels WHERE channel_id = $1")
            .bind(channel_id)
            .fetch_optional(c)
            .await)
        .ctx(what)
    }

    /// How many channels are recorded (stopped ones included).
    pub async fn channel_count(&self) -> Result<i64, StoreError> {
        let what = || "counting channels".to_owned();
        on_read!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) AS n FROM channels")
            .fetch_one(c)
            .await)
        .ctx(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str) -> Channel {
        Channel {
            channel_id: id.to_owned(),
            calendar_id: "alice@example.com".to_owned(),
            resource_id: "r1".to_owned(),
            token_hash: "h".to_owned(),
            expiration_ms: i64::MAX,
            created_at: 0,
            stopped: false,
        }
    }

    #[tokio::test]
    async fn a_message_number_is_accepted_once_and_only_above_the_highest() {
        let store = Store::memory().await.unwrap();
        store.channel_create(&channel("c1")).await.unwrap();
        assert_eq!(store.channel_highest_message("c1").await.unwrap(), Some(0));
        assert!(store.channel_message_accept("c1", 1).await.unwrap());
        assert!(
            !store.channel_message_accept("c1", 1).await.unwrap(),
            "a replay"
        );
        assert!(
            store.channel_message_accept("c1", 5).await.unwrap(),
            "not contiguous"
        );
        assert!(
            !store.channel_message_accept("c1", 3).await.unwrap(),
            "older"
        );
        assert_eq!(store.channel_highest_message("c1").await.unwrap(), Some(5));
        assert!(!store.channel_message_accept("nope", 1).await.unwrap());
        assert_eq!(store.channel_highest_message("nope").await.unwrap(), None);
        // Concurrent deliveries of one number: exactly one is accepted.
        let tries = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.channel_message_accept("c1", 9).await.unwrap() })
        });
        let mut accepted = 0;
        for t in tries {
            accepted += usize::from(t.await.unwrap());
        }
        assert_eq!(accepted, 1);
        assert_eq!(store.channel_count().await.unwrap(), 1);
    }
}
