//! Operator changes that span tables: forgetting a calendar.
//!
//! [`Store::forget_calendar`] stops confsync syncing a calendar, in ONE transaction: its sync
//! state, links, outbox rows (every state), dead letters and push channel records are removed,
//! and its create intents are retired (kept as `abandoned`, so a later create of the same event
//! starts a new generation and never reuses an earlier create's idempotency key). The
//! provider's meetings are not touched: forgetting is not cancelling, and the events still show
//! their join links. Row ids are never handed out again, so an action planned again after the
//! calendar comes back gets a fresh idempotency key (`planned_key#id`).
//!
//! Afterwards the calendar is unknown: a trigger for it is not recorded (`mark_dirty` answers
//! false, the service answers 404 and the add-on removes its trigger), its sync lease cannot be
//! taken, and the add-on's next create for it registers it afresh (its first pass is a full
//! sync).
//!
//! Refused ([`StoreError::Conflict`], nothing changed) while a worker may be acting on it: an
//! outbox row of its conferences under a live claim (a provider call running now), or its sync
//! lease held. The rows are locked first (a no-op UPDATE), so on Postgres a claim racing the
//! forget either committed before it (and is seen, refused) or skips the locked rows.

use crate::db::on_tx;
use crate::error::{Context, StoreError};
use crate::{Channel, Store};

/// What [`Store::forget_calendar`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Links removed (live and deleted).
    pub links: u64,
    /// Of those, live ones (their meetings stay at the provider, unlinked).
    pub live_links: u64,
    /// Outbox rows removed (every state).
    pub outbox_rows: u64,
    /// Of those, still pending (provider calls that will not be made).
    pub pending_rows: u64,
    /// Create intents retired.
    pub intents: u64,
    /// Dead letters removed.
    pub dead_letters: u64,
    /// The calendar's push channels that were live (not stopped, not expired at the forget):
    /// stop them at Google (`channels.stop`); their records are gone, so a notification that
    /// still arrives on one is an orphan the service stops.
    pub live_channels: Vec<Channel>,
}

/// The conferences of a calendar's links, as a subquery on `$1`.
const CONFERENCES: &str = "SELECT conference_id FROM links WHERE calendar_id = $1";

impl Store {
    /// Forgets a calendar (see the module documentation). `NotFound` when confsync does not
    /// sync it; `Conflict` (nothing changed) while one of its provider calls runs under a live
    /// claim or its sync lease is held: try again in a few seconds.
    pub async fn forget_calendar(
        &self,
        calendar_id: &str,
        now_ms: i64,
    ) -> Result<Forgotten, StoreError> {
        let what = || format!("forgetting calendar {calendar_id}");
        // SQLite's sync leases are held in the process that claimed the store (`serve`,
        // `sync`): from another process a pass running there cannot be seen, and forgetting
        // under it would let its next page register the calendar again.
        if !self.holds_claim() && self.claimed_by_another_process()? == Some(true) {
            return Err(StoreError::Conflict {
                what: what(),
                detail: "a confsync process (serve or sync) holds this SQLite store and may be syncing it: forget it through that process's admin API (POST /v1/admin/calendars/{calendarId}/forget) or stop it first".into(),
            });
        }
        let clock = self.now();
        let mut tx = self.write_tx(what).await?;
        let sync_until: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT sync_until FROM calendars WHERE calendar_id = $1",
        )
        .bind(calendar_id)
        .fetch_optional(c)
        .await)
        .ctx(what)?;
        let Some(sync_until) = sync_until else {
            return Err(StoreError::not_found(format!(
                "{}: confsync does not sync it",
                what()
            )));
        };
        // SQLite's sync leases are in this process (`crate::leases::LocalLeases`).
        if sync_until > clock || self.local_leases.held(calendar_id, clock) {
            return Err(StoreError::Conflict {
                what: what(),
                detail: "a worker is syncing it right now (its sync lease is held): try again in a few seconds".into(),
            });
        }
        // Lock the pending rows first: a claim racing this either committed already (seen
        // below) or skips them (Postgres claims take rows FOR UPDATE SKIP LOCKED).
        let pending = on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET updated_at = updated_at WHERE state = 'pending' AND conference_id IN ({CONFERENCES})"
        )))
        .bind(calendar_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let claimed: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND lease_until > $2 \
             AND conference_id IN ({CONFERENCES})"
        )))
        .bind(calendar_id)
        .bind(clock)
        .fetch_one(c)
        .await)
        .ctx(what)?;
        if claimed > 0 {
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!(
                    "{claimed} of its actions are running at the provider right now (claimed by a worker): try again when they are reported (a few seconds)"
                ),
            });
        }
        let live_links: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM links WHERE calendar_id = $1 AND NOT deleted",
        )
        .bind(calendar_id)
        .fetch_one(c)
        .await)
        .ctx(what)?;
        let live_channels: Vec<Channel> = {
            let rows: Vec<(String, String, String, String, i64, i64, bool)> = on_tx!(&mut tx, c => sqlx::query_as(
                "SELECT channel_id, calendar_id, resource_id, token_hash, expiration_ms, created_at, stopped \
                 FROM channels WHERE calendar_id = $1 AND NOT stopped AND expiration_ms > $2 ORDER BY created_at",
            )
            .bind(calendar_id)
            .bind(now_ms)
            .fetch_all(c)
            .await)
            .ctx(what)?;
            rows.into_iter()
                .map(
                    |(
                        channel_id,
                        calendar_id,
                        resource_id,
                        token_hash,
                        expiration_ms,
                        created_at,
                        stopped,
                    )| Channel {
                        channel_id,
                        calendar_id,
                        resource_id,
                        token_hash,
                        expiration_ms,
                        created_at,
                        stopped,
                    },
                )
                .collect()
        };
        let outbox_rows = on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM outbox WHERE conference_id IN ({CONFERENCES})"
        )))
        .bind(calendar_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let links = on_tx!(&mut tx, c => sqlx::query("DELETE FROM links WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        let intents = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE create_intents SET state = 'abandoned', updated_at = $2 \
             WHERE calendar_id = $1 AND state <> 'abandoned'",
        )
        .bind(calendar_id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        let dead_letters =
            on_tx!(&mut tx, c => sqlx::query("DELETE FROM dead_letters WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
            .ctx(what)?;
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM channels WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM calendars WHERE calendar_id = $1")
            .bind(calendar_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        tracing::info!(
            calendar_id,
            links,
            live_links,
            outbox_rows,
            pending_rows = pending,
            intents,
            dead_letters,
            live_channels = live_channels.len(),
            "calendar forgotten"
        );
        Ok(Forgotten {
            links,
            live_links: live_links as u64,
            outbox_rows,
            pending_rows: pending,
            intents,
            dead_letters,
            live_channels,
        })
    }
}
