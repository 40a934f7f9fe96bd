//! Moving meetings to another provider (`confsync admin migrate-provider`).
//!
//! A link records the provider that made its meeting (`links.provider`). When a deployment
//! switches providers, every live link whose meeting was made by another provider and has not
//! ended is moved through the recreate path: [`Store::queue_provider_moves`] queues an
//! [`Action::Recreate`] of the link's spec for it, taking over the conference's other pending
//! work as [`Store::take_over`] does (deletes aside), in ONE transaction per batch, skipping
//! links whose recreate is already pending. The drainer then runs each like any recreate: the
//! create on the current provider (with the row's idempotency key), the event's
//! `conferenceData` PATCHed with If-Match, [`Store::swap_link`], and the old meeting's delete,
//! which goes to the provider that made it.
//!
//! Rerunning queues nothing for a link already moved (its provider is the current one) or
//! already queued. Links never seen in Calendar yet (an add-on create not saved) are left for
//! later: their event may never show them. Meetings that have ended (`ends_at` before now) stay
//! on their provider. Series have no `ends_at` and are always moved.

use confsync_core::plan::Action;

use crate::db::{on_read, on_tx, on_write};
use crate::error::{Context, StoreError};
use crate::{Store, links, outbox};

/// Where a move to `current` stands ([`Store::provider_moves`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderMoves {
    /// Live links on another provider, not ended, with no move queued: what a run would queue
    /// (those not yet seen in Calendar included, see `not_in_calendar_yet`).
    pub to_move: i64,
    /// Of `to_move`, links never seen in Calendar yet (left until their event shows them).
    pub not_in_calendar_yet: i64,
    /// Moves queued and not finished (a recreate pending).
    pub queued: i64,
    /// Moves done (recreates of another provider's meeting that completed).
    pub moved: i64,
    /// Moves that failed for good while the link is still on another provider (a rerun queues
    /// them again).
    pub failed: i64,
    /// Live links on another provider whose meeting has ended: left there.
    pub ended: i64,
    /// Of `to_move`, links whose provider is not among those the move is from (not
    /// configured): never queued, since their old meetings could not be deleted.
    pub unreachable: i64,
}

/// One move queued by [`Store::queue_provider_moves`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMove {
    /// The old conference (the meeting to move).
    pub conference_id: String,
    /// Its provider.
    pub provider: String,
    /// The calendar and event.
    pub calendar_id: String,
    /// The event (for a series: the series id).
    pub event_id: String,
}

/// Live links on another provider (`$1`), of one calendar (`$2`, '' for all), as a WHERE
/// clause on `links l`.
const OTHER_PROVIDER: &str =
    "NOT l.deleted AND l.provider <> $1 AND ($2 = '' OR l.calendar_id = $2)";
/// A recreate of the link is pending.
const RECREATE_PENDING: &str = "EXISTS (SELECT 1 FROM outbox o WHERE o.conference_id = l.conference_id \
     AND o.state = 'pending' AND o.kind = 'recreate')";
/// The meeting has not ended at `$3` (series: no end recorded).
const NOT_ENDED: &str = "(l.ends_at IS NULL OR l.ends_at >= $3)";

/// `l.provider IN ($first, ...)` for `n` names bound from `$first` on (FALSE for none).
fn in_list(first: usize, n: usize) -> String {
    if n == 0 {
        return "FALSE".to_owned();
    }
    let names: Vec<String> = (0..n).map(|i| format!("${}", i + first)).collect();
    format!("l.provider IN ({})", names.join(", "))
}

impl Store {
    /// Counts of a move to the provider named `current` from the providers named `from` (of
    /// one calendar if given), at `now_ms`. A few COUNT queries: bounded whatever the number of links.
    pub async fn provider_moves(
        &self,
        current: &str,
        from: &[String],
        calendar_id: Option<&str>,
        now_ms: i64,
    ) -> Result<ProviderMoves, StoreError> {
        let what = || format!("counting meetings to move to provider {current}");
        let calendar = calendar_id.unwrap_or("");
        let sql = format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN {NOT_ENDED} AND NOT {RECREATE_PENDING} THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN {NOT_ENDED} AND NOT {RECREATE_PENDING} AND l.last_etag_seen IS NULL THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN {RECREATE_PENDING} THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN NOT {NOT_ENDED} AND NOT {RECREATE_PENDING} THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN {NOT_ENDED} AND NOT {RECREATE_PENDING} AND NOT {from_clause} THEN 1 ELSE 0 END), 0) \
             FROM links l WHERE {OTHER_PROVIDER}",
            from_clause = in_list(4, from.len())
        );
        let (to_move, not_in_calendar_yet, queued, ended, unreachable): (i64, i64, i64, i64, i64) =
            on_read!(self, c => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(current)
                    .bind(calendar)
                    .bind(now_ms);
                for name in from {
                    query = query.bind(name);
                }
                query.fetch_one(c).await
            })
            .ctx(what)?;
        let outcomes = "SELECT \
               COALESCE(SUM(CASE WHEN o.state = 'done' THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN o.state = 'failed' AND NOT l.deleted THEN 1 ELSE 0 END), 0) \
             FROM outbox o JOIN links l ON l.conference_id = o.conference_id \
             WHERE o.kind = 'recreate' AND l.provider <> $1 AND ($2 = '' OR l.calendar_id = $2)";
        let (moved, failed): (i64, i64) = on_read!(self, c => sqlx::query_as(outcomes)
            .bind(current)
            .bind(calendar)
            .fetch_one(c)
            .await)
        .ctx(what)?;
        Ok(ProviderMoves {
            to_move,
            not_in_calendar_yet,
            queued,
            moved,
            failed,
            ended,
            unreachable,
        })
    }

    /// Queues up to `limit` moves to the provider named `current` (of one calendar if given):
    /// for each live link on one of the providers named `from` whose meeting has not ended at `now_ms`, that
    /// has been seen in Calendar and has no recreate pending, its other pending work (deletes
    /// aside) is superseded and an [`Action::Recreate`] of its spec queued, all in ONE
    /// transaction. Answers the moves queued; a rerun queues none of them again.
    pub async fn queue_provider_moves(
        &self,
        current: &str,
        from: &[String],
        calendar_id: Option<&str>,
        limit: i64,
        now_ms: i64,
    ) -> Result<Vec<QueuedMove>, StoreError> {
        let what = || format!("queueing moves to provider {current}");
        let calendar = calendar_id.unwrap_or("");
        if from.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx(what).await?;
        let sql = format!(
            "SELECT l.conference_id FROM links l WHERE {OTHER_PROVIDER} AND {NOT_ENDED} \
               AND l.last_etag_seen IS NOT NULL AND NOT {RECREATE_PENDING} AND {from_clause} \
             ORDER BY l.conference_id LIMIT CAST($4 AS BIGINT)",
            from_clause = in_list(5, from.len())
        );
        let ids: Vec<String> = on_tx!(&mut tx, c => {
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(current)
                .bind(calendar)
                .bind(now_ms)
                .bind(limit);
            for name in from {
                query = query.bind(name);
            }
            query.fetch_all(c).await
        })
        .ctx(what)?;
        let mut queued = Vec::new();
        for id in ids {
            let Some(stored) = links::get(&mut tx, &id).await? else {
                continue;
            };
            let link = stored.link;
            // No row of this conference is running on our behalf: every pending one but the
            // deletes is taken over (0 is no row id).
            outbox::supersede_all_but_deletes(&mut tx, &id, 0, now_ms).await?;
            let recreate = [Action::Recreate {
                spec: link.spec.clone(),
                provider: Some(current.to_owned()),
            }];
            outbox::append(
                &mut tx,
                &outbox::Append {
                    conference_id: &id,
                    calendar_id: &link.calendar_id,
                    event_id: &link.event_id,
                    actions: &recreate,
                    link_spec: None,
                    not_before_ms: now_ms,
                },
                now_ms,
            )
            .await?;
            queued.push(QueuedMove {
                conference_id: id,
                provider: link.provider,
                calendar_id: link.calendar_id,
                event_id: link.event_id,
            });
        }
        self.commit(tx, what).await?;
        if !queued.is_empty() {
            tracing::info!(
                current,
                queued = queued.len(),
                "meetings queued to move to the current provider"
            );
        }
        Ok(queued)
    }

    /// The provider that makes the meeting of the create whose key is `key` (an intent of
    /// [`Store::begin_create`]): the first caller records `provider`, and every caller gets the
    /// one recorded (one conditional statement), so every retry of the create, on any worker,
    /// before or after a move to another provider, reaches the provider that may have made the
    /// meeting already. None when there is no such intent (linked or abandoned since).
    pub async fn claim_intent_provider(
        &self,
        calendar_id: &str,
        event_id: &str,
        key: &str,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(generation) = key
            .rsplit_once(':')
            .and_then(|(_, g)| g.parse::<i64>().ok())
        else {
            return Ok(None);
        };
        on_write!(self, c => sqlx::query_scalar(
            "UPDATE create_intents SET provider = COALESCE(provider, $4) \
             WHERE calendar_id = $1 AND event_id = $2 AND generation = $3 RETURNING provider",
        )
        .bind(calendar_id)
        .bind(event_id)
        .bind(generation)
        .bind(provider)
        .fetch_optional(c)
        .await)
        .ctx(|| {
            format!(
                "recording the provider of the create of event {event_id} (calendar {calendar_id})"
            )
        })
        .map(Option::flatten)
    }
}
