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

/// Why a channel counts as gone quiet ([`Store::channels_gone_quiet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// It never heard from Google, not even the `sync` handshake.
    NoHandshake,
    /// It usually hears often and has been quiet for much longer than usual.
    Silent,
}

/// A push notification as [`Store::accept_push`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct PushMessage<'a> {
    /// `X-Goog-Channel-ID`.
    pub channel_id: &'a str,
    /// `X-Goog-Resource-ID`.
    pub resource_id: &'a str,
    /// SHA-256 (hex) of `X-Goog-Channel-Token`, as stored.
    pub token_hash: &'a str,
    /// `X-Goog-Message-Number`.
    pub number: i64,
    /// When it arrived (unix ms).
    pub now_ms: i64,
    /// Record a sync trigger for the channel's calendar (an `exists` message; not the `sync`
    /// handshake).
    pub record_trigger: bool,
}

/// Accepting a channel's message: its number, when it came, and the moving average of the
/// gaps between messages (the gap since the last one, never negative since workers' clocks
/// differ a little, enters with weight 1/5). Followed by the conditions.
const ACCEPT: &str = "UPDATE channels SET highest_message = $2, last_message_at = $3, \
     gap_ms = CASE WHEN last_message_at IS NULL THEN gap_ms \
         WHEN gap_ms IS NULL THEN CASE WHEN $3 > last_message_at THEN $3 - last_message_at ELSE 0 END \
         ELSE (gap_ms * 4 + CASE WHEN $3 > last_message_at THEN $3 - last_message_at ELSE 0 END) / 5 END";

/// A push message waiting for the next group commit ([`Store::accept_push`] on SQLite).
pub(crate) struct QueuedPush {
    channel_id: String,
    resource_id: String,
    token_hash: String,
    number: i64,
    now_ms: i64,
    record_trigger: bool,
}

/// What a push message is answered: its calendar and whether its trigger was recorded.
type Accepted = Result<Option<(String, bool)>, StoreError>;

/// Push messages waiting for the next group commit (SQLite).
pub(crate) type PushGroup = crate::group::Group<QueuedPush, Accepted>;

/// Messages per group commit: 6 values each, far below SQLite's bind limit.
const PUSH_GROUP: usize = 64;

/// One message's statements in a group batch, its values `$(6k+1)..$(6k+6)`: accepted as
/// [`Store::accept_push`] says, and the trigger recorded only if this message was (`changes()`
/// is the first statement's count). Each row says which message it answers.
fn push_statements(k: usize) -> String {
    let sql = format!(
        "{ACCEPT} WHERE channel_id = $1 AND highest_message < $2 AND NOT stopped AND token_hash = $4 \
           AND (resource_id = '' OR resource_id = $5) RETURNING calendar_id, {k} AS message; \
         UPDATE calendars SET dirty_gen = dirty_gen + 1, dirty_at = COALESCE(dirty_at, $3) \
           WHERE $6 AND changes() > 0 \
             AND calendar_id = (SELECT calendar_id FROM channels WHERE channel_id = $1) \
           RETURNING TRUE AS recorded, {k} AS message"
    );
    crate::conns::shift_placeholders(&sql, 6 * k)
}

/// Ids per `IN (...)` list: far below either backend's bind limit.
pub(crate) const IN_CHUNK: usize = 500;

/// `$first, $first+1, ...`: `n` placeholders for an `IN (...)` list.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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

fn quiet_row(row: &impl Cols) -> Result<(Channel, Quiet), sqlx::Error> {
    let quiet = if row.col::<bool>("no_handshake")? {
        Quiet::NoHandshake
    } else {
        Quiet::Silent
    };
    Ok((from_row(row)?, quiet))
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
        let mut keys = self.lock_keys();
        keys.calendar(&channel.calendar_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
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

    /// Whether `calendar_id` has a live channel: one indexed lookup (opening a conference asks
    /// this on every create; reading every live channel for it grew with the deployment).
    pub async fn has_live_channel(
        &self,
        calendar_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let what = || format!("looking for a live channel of calendar {calendar_id}");
        on_read!(self, c => {
            let row: Result<Option<String>, _> = sqlx::query_scalar(
                "SELECT channel_id FROM channels WHERE calendar_id = $1 AND NOT stopped AND expiration_ms > $2 LIMIT 1",
            )
            .bind(calendar_id)
            .bind(now_ms)
            .fetch_optional(c)
            .await;
            row.map(|r| r.is_some())
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
            "{SELECT} WHERE NOT stopped AND expiration_ms > $1 ORDER BY expiration_ms, channel_id LIMIT CAST($2 AS BIGINT)"
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

    /// Per calendar with a live channel, its newest one's expiry (unix ms); the count of such
    /// calendars and the earliest of those expiries: push coverage at any scale, no rows loaded
    /// (one query).
    pub async fn channel_coverage(&self, now_ms: i64) -> Result<(i64, Option<i64>), StoreError> {
        on_read!(self, c => sqlx::query_as(
            "SELECT COUNT(*), MIN(newest) FROM (SELECT MAX(expiration_ms) AS newest FROM channels \
             WHERE NOT stopped AND expiration_ms > $1 GROUP BY calendar_id) AS live",
        )
        .bind(now_ms)
        .fetch_one(c)
        .await)
        .ctx(|| "measuring push channel coverage".to_owned())
    }

    /// The `limit` calendars whose newest live channel expires first, with that expiry (unix
    /// ms): what the per-calendar expiry metric shows.
    pub async fn calendars_by_channel_expiry(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on_read!(self, c => sqlx::query_as(
            "SELECT calendar_id, MAX(expiration_ms) AS newest FROM channels \
             WHERE NOT stopped AND expiration_ms > $1 GROUP BY calendar_id \
             ORDER BY newest, calendar_id LIMIT CAST($2 AS BIGINT)",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(c)
        .await)
        .ctx(|| "listing the calendars whose push channel expires first".to_owned())
    }

    /// Of `calendar_ids`, those with a live channel, each with its newest one's expiry (unix
    /// ms), by id: for the calendars a status page shows.
    pub async fn channels_newest_among(
        &self,
        now_ms: i64,
        calendar_ids: &[&str],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut found = Vec::new();
        for chunk in crate::db::chunks(calendar_ids, IN_CHUNK) {
            let sql = format!(
                "SELECT calendar_id, MAX(expiration_ms) AS newest FROM channels \
                 WHERE NOT stopped AND expiration_ms > $1 AND calendar_id IN ({}) \
                 GROUP BY calendar_id ORDER BY calendar_id",
                placeholders(2, chunk.len())
            );
            let rows: Vec<(String, i64)> = on_read!(self, c => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now_ms);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(c).await
            })
            .ctx(|| "reading the push channels of a page of calendars".to_owned())?;
            found.extend(rows);
        }
        found.sort();
        Ok(found)
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
    /// Accepts message `number` of a channel, arrived at `now_ms`, if it is above every number
    /// accepted on that channel before: answers true then (and remembers it, with when it came
    /// and the moving average of the gaps between messages, for
    /// [`Store::channels_gone_quiet`]), false for a replay, a redelivery or an unknown channel.
    /// One conditional UPDATE, so of concurrent deliveries of one number exactly one is
    /// accepted, and the mark survives restarts.
    pub async fn channel_message_accept(
        &self,
        channel_id: &str,
        number: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let what = || format!("recording message {number} of channel {channel_id}");
        let sql = format!("{ACCEPT} WHERE channel_id = $1 AND highest_message < $2");
        let done = on_write!(self, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(channel_id)
        .bind(number)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        Ok(done > 0)
    }

    /// A push notification's whole store work in one atomic step: message `number` of
    /// `channel_id` is accepted as [`Store::channel_message_accept`] does, but only if the
    /// channel is live (not stopped), `token_hash` is its token's and `resource_id` its
    /// resource (or it has none yet); and when `record_trigger`, the channel's calendar is
    /// marked dirty as [`Store::mark_dirty`] does, in the same transaction: a crash cannot
    /// leave a message accepted (so its redelivery is ignored as a duplicate) without its
    /// trigger recorded.
    ///
    /// Answers the channel's calendar and whether a trigger was recorded (false when not asked
    /// for, or the calendar is not registered), or None when nothing was accepted: an unknown,
    /// stopped or mismatched channel, or a number not above the highest accepted. The caller
    /// then tells those apart the long way ([`Store::channel`]).
    ///
    /// SQLite: one batch of statements (one hand-off to the connection's thread); Postgres: one
    /// statement.
    pub async fn accept_push(
        &self,
        push: &PushMessage<'_>,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let what = || {
            format!(
                "recording message {} of channel {}",
                push.number, push.channel_id
            )
        };
        // The message's own conditions, beyond the number's.
        const LIVE: &str =
            "NOT stopped AND token_hash = $4 AND (resource_id = '' OR resource_id = $5)";
        let accepted = match &self.db {
            crate::db::Db::Sqlite { .. } => return self.accept_push_grouped(push).await,
            crate::db::Db::Postgres { .. } => {
                on_write!(self, c => sqlx::query_as::<_, (String, bool)>(
                sqlx::AssertSqlSafe(format!(
                    "WITH accepted AS ({ACCEPT} WHERE channel_id = $1 AND highest_message < $2 AND {LIVE} \
                         RETURNING calendar_id), \
                     recorded AS (UPDATE calendars SET dirty_gen = dirty_gen + 1, dirty_at = COALESCE(dirty_at, $3) \
                         WHERE $6 AND calendar_id IN (SELECT calendar_id FROM accepted) RETURNING calendar_id) \
                     SELECT calendar_id, EXISTS (SELECT 1 FROM recorded) FROM accepted"
                )),
            )
            .bind(push.channel_id)
            .bind(push.number)
            .bind(push.now_ms)
            .bind(push.token_hash)
            .bind(push.resource_id)
            .bind(push.record_trigger)
            .fetch_optional(c)
            .await)
            }
        };
        accepted.ctx(what)
    }

    /// [`Store::accept_push`] on SQLite, group-committed (`crate::group`) with the messages
    /// arriving meanwhile: one transaction and one round trip to the writer for up to
    /// [`PUSH_GROUP`] of them (a burst of changes is a burst of notifications, each otherwise
    /// its own write transaction). Each message's statements are its own conditional ones, run
    /// in arrival order, so a group accepts and records exactly what the messages would one
    /// after another (a second delivery of one number in the same group is a duplicate, as it
    /// would be alone), and every message is durable before its caller's answer. A failed group
    /// is committed message by message, so each caller gets its own answer.
    async fn accept_push_grouped(
        &self,
        push: &PushMessage<'_>,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let queued = QueuedPush {
            channel_id: push.channel_id.to_owned(),
            resource_id: push.resource_id.to_owned(),
            token_hash: push.token_hash.to_owned(),
            number: push.number,
            now_ms: push.now_ms,
            record_trigger: push.record_trigger,
        };
        self.push_group
            .submit(queued, |batch| async move {
                let mut batch = batch.into_iter().peekable();
                while batch.peek().is_some() {
                    let group: Vec<_> = batch.by_ref().take(PUSH_GROUP).collect();
                    self.commit_pushes(group).await;
                }
            })
            .await
            .unwrap_or_else(|| {
                Err(StoreError::Database {
                    what: format!(
                        "recording message {} of channel {}",
                        push.number, push.channel_id
                    ),
                    source: sqlx::Error::Protocol(
                        "the group commit holding this message was abandoned; Google retries it"
                            .into(),
                    ),
                })
            })
    }

    /// Commits `group` in one transaction and answers each message; if that fails, each alone.
    async fn commit_pushes(&self, queued: Vec<crate::group::Queued<QueuedPush, Accepted>>) {
        let crate::db::Db::Sqlite { writer, .. } = &self.db else {
            return;
        };
        let (group, answers): (Vec<QueuedPush>, Vec<_>) =
            queued.into_iter().map(|q| (q.item, q.answer)).unzip();
        let what = |n: usize| format!("recording {n} push messages");
        let run = |group: &[QueuedPush]| {
            let mut sql = String::from("BEGIN IMMEDIATE; ");
            let mut query_args = sqlx::sqlite::SqliteArguments::default();
            let mut bound = Ok(());
            for (k, m) in group.iter().enumerate() {
                sql.push_str(&push_statements(k));
                sql.push_str("; ");
                for value in [
                    crate::conns::Arg::Text(m.channel_id.clone()),
                    crate::conns::Arg::Int(m.number),
                    crate::conns::Arg::Int(m.now_ms),
                    crate::conns::Arg::Text(m.token_hash.clone()),
                    crate::conns::Arg::Text(m.resource_id.clone()),
                    crate::conns::Arg::Bool(m.record_trigger),
                ] {
                    if bound.is_ok() {
                        bound = value.add_to(&mut query_args);
                    }
                }
            }
            sql.push_str("COMMIT");
            let n = group.len();
            async move {
                bound?;
                let rows = writer
                    .transaction_batch(sqlx::query_with(sqlx::AssertSqlSafe(sql), query_args))
                    .await?;
                let mut answers: Vec<Option<(String, bool)>> = vec![None; n];
                for row in &rows {
                    let k: i64 = row.col("message")?;
                    let Some(answer) = usize::try_from(k).ok().and_then(|k| answers.get_mut(k))
                    else {
                        continue;
                    };
                    match sqlx::Row::columns(row).first().map(sqlx::Column::name) {
                        Some("calendar_id") => {
                            *answer = Some((row.col::<String>("calendar_id")?, false))
                        }
                        Some("recorded") => {
                            if let Some((_, recorded)) = answer {
                                *recorded = true;
                            }
                        }
                        _ => {}
                    }
                }
                Ok::<_, sqlx::Error>(answers)
            }
        };
        let together = run(&group).await.ctx(|| what(group.len()));
        self.note_write(&together);
        match together {
            Ok(accepted) => {
                for (answer, accepted) in answers.into_iter().zip(accepted) {
                    let _ = answer.send(Ok(accepted));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(messages = group.len(), error = %e, "a group commit of push messages failed; committing each alone");
                for (m, answer) in group.iter().zip(answers) {
                    let alone = run(std::slice::from_ref(m)).await.ctx(|| what(1));
                    self.note_write(&alone);
                    let _ = answer.send(alone.map(|mut accepted| accepted.pop().flatten()));
                }
            }
        }
    }

    /// Live channels gone quiet at `now_ms`, each answered once (marked in the same statement,
    /// so of several workers asking at once one gets it):
    /// - `NoHandshake`: no message at all (not even the `sync` handshake Google sends when a
    ///   channel opens) `grace_ms` after it was made;
    /// - `Silent`: a channel that has heard at least two messages and has been quiet for three
    ///   of its usual gaps, and at least `floor_ms`. Answered once per silence: the next
    ///   message starts a new one.
    ///
    /// What was heard is in the store, so it does not matter which worker the load balancer
    /// gave each notification to.
    pub async fn channels_gone_quiet(
        &self,
        now_ms: i64,
        grace_ms: i64,
        floor_ms: i64,
    ) -> Result<Vec<(Channel, Quiet)>, StoreError> {
        let what = || "finding push channels gone quiet".to_owned();
        let rows = on_write!(self, c => sqlx::query(
            "UPDATE channels SET quiet_polled_at = COALESCE(last_message_at, -1) \
             WHERE NOT stopped AND expiration_ms > $1 AND quiet_polled_at <> COALESCE(last_message_at, -1) \
               AND ((last_message_at IS NULL AND created_at < $1 - $2) \
                 OR (gap_ms IS NOT NULL AND $1 - last_message_at > \
                     CASE WHEN gap_ms * 3 > $3 THEN gap_ms * 3 ELSE $3 END)) \
             RETURNING channel_id, calendar_id, resource_id, token_hash, expiration_ms, created_at, stopped, \
                 last_message_at IS NULL AS no_handshake",
        )
        .bind(now_ms)
        .bind(grace_ms)
        .bind(floor_ms)
        .fetch_all(c)
        .await
        .and_then(|rows| rows.iter().map(quiet_row).collect::<Result<Vec<_>, _>>()))
        .ctx(what)?;
        Ok(rows)
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
        assert!(store.channel_message_accept("c1", 1, 0).await.unwrap());
        assert!(
            !store.channel_message_accept("c1", 1, 0).await.unwrap(),
            "a replay"
        );
        assert!(
            store.channel_message_accept("c1", 5, 0).await.unwrap(),
            "not contiguous"
        );
        assert!(
            !store.channel_message_accept("c1", 3, 0).await.unwrap(),
            "older"
        );
        assert_eq!(store.channel_highest_message("c1").await.unwrap(), Some(5));
        assert!(!store.channel_message_accept("nope", 1, 0).await.unwrap());
        assert_eq!(store.channel_highest_message("nope").await.unwrap(), None);
        // Concurrent deliveries of one number: exactly one is accepted.
        let tries = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.channel_message_accept("c1", 9, 0).await.unwrap() })
        });
        let mut accepted = 0;
        for t in tries {
            accepted += usize::from(t.await.unwrap());
        }
        assert_eq!(accepted, 1);
        assert_eq!(store.channel_count().await.unwrap(), 1);
    }
}
