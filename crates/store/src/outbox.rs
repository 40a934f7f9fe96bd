//! The `outbox` table: provider calls still to make, at least once, in order per conference.
//!
//! A row is `pending` until the executor reports it `done` or `failed` (permanently, kept for the
//! status page), or a later change makes it `superseded` (a delete of an event that turned out
//! to have moved calendars). Finished rows are pruned after the retention
//! ([`Store::prune_history`]); ids grow and give the order.

use std::fmt;

use confsync_core::model::MeetingSpec;
use confsync_core::plan::{Action, idempotency_key};

use crate::Store;
use crate::conns::Arg;
use crate::db::{Cols, Tx, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// The whole action JSON of `$a`, a row of `outbox_actions` whose outbox row's conference is
/// `$conference` (SQL expressions): its `action_json`, or for an update stored without its
/// spec (`spec_tail` set, see [`stored_action`]) the link's spec put back in between.
macro_rules! action_json_of {
    ($a:literal, $conference:expr) => {
        concat!(
            "CASE WHEN ",
            $a,
            ".spec_tail IS NULL THEN ",
            $a,
            ".action_json ELSE ",
            $a,
            ".action_json || (SELECT l.spec_json FROM links l WHERE l.conference_id = ",
            $conference,
            ") || ",
            $a,
            ".spec_tail END"
        )
    };
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Still to run (maybe not before `not_before`).
    Pending,
    /// Ran successfully.
    Done,
    /// Failed permanently; kept visible, never retried.
    Failed,
    /// Made unnecessary by a later change before it ran.
    Superseded,
}

impl OutboxState {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Done => "done",
            OutboxState::Failed => "failed",
            OutboxState::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Option<OutboxState> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "done" => OutboxState::Done,
            "failed" => OutboxState::Failed,
            "superseded" => OutboxState::Superseded,
            _ => return None,
        })
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pending action handed to the executor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// The row id: report the attempt's outcome with it.
    pub id: i64,
    /// The conference (the provider's meeting id).
    pub conference_id: String,
    /// The calendar.
    pub calendar_id: String,
    /// The event (for a series: the series id).
    pub event_id: String,
    /// The provider call to make.
    pub action: Action,
    /// Send it with the provider call, so a repeated call does not act twice.
    pub idempotency_key: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// The fence of the claim that handed the row out ([`Store::claim_due`]); 0 for a row read
    /// without a claim ([`Store::due`]). Reports carry it, and a report whose claim has passed to
    /// another worker is refused.
    pub fence: i64,
}

/// How long a claimed row whose stored action does not read is put off (see
/// [`Store::claim_batch`]): long enough not to be claimed and parked at every drain, short
/// enough for a newer worker to find it soon after a rolling upgrade.
pub const PARK_UNREADABLE_MS: i64 = 10 * 60 * 1000;

/// A row as [`Store::claim_batch`] reads it: the entry, its claim's fence and whether its
/// conference has more pending rows; or, for a row whose stored action does not read, its
/// id, fence and the reason.
type ClaimedRow = Result<(OutboxEntry, i64, bool), (i64, i64, String)>;

/// What [`Store::claim_batch`] handed out.
#[derive(Debug)]
pub struct ClaimedBatch {
    /// The claimed rows, in the claim's order: the longest due first, then by id.
    pub items: Vec<OutboxItem>,
    /// True when this claim took every row due (fewer than asked for), and none of the
    /// claimed rows' conferences has another pending row behind it: once these are reported,
    /// a claim would find only rows queued, come due or freed since the claim. Rows queued
    /// since in this process show in [`queued_generation`]; other processes' rows, and rows
    /// coming due, are found by [`Store::next_due`] and the queuing side's wake-up.
    pub last: bool,
    /// SQLite: the links of the first `with_links` claimed rows' conferences (in the items'
    /// order), read by the claim's round trip; a conference missing was not read, or
    /// has no link. For a row started at once, this is the read the executor makes before
    /// calling the provider; a row that waits for a slot, or is not here, reads its link when
    /// it starts. None on Postgres (each row reads its link).
    pub links: Option<std::collections::HashMap<String, confsync_core::plan::Link>>,
}

/// Successes waiting for the next group commit ([`Store::complete`]).
pub(crate) type Completions = crate::group::Group<Completion, Result<u64, StoreError>>;

/// One queued success.
pub(crate) struct Completion {
    row: Claimed,
    now_ms: i64,
}

/// How many times this process has queued outbox rows or made one pending again (every store
/// in the process counts here; a statement rolled back counts too). A drain reads it before a
/// claim: unchanged after its batch, nothing it ran queued a follow-up
/// ([`ClaimedBatch::last`]). Counting too much only costs a claim that finds nothing.
static QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn note_queued() {
    QUEUED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Rows this process has queued (every store in the process counts here; a replay that queued
/// nothing counts too), and their count when this process last refreshed the outbox's planner
/// statistics ([`refresh_statistics`]).
static ROWS_QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ANALYZED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Rows queued between two refreshes of the outbox's statistics.
const ANALYZE_EVERY: u64 = 1_000;

fn note_rows(rows: u64) {
    ROWS_QUEUED.fetch_add(rows, std::sync::atomic::Ordering::SeqCst);
}

/// Postgres: `ANALYZE outbox` once this process has queued [`ANALYZE_EVERY`] rows since it last
/// did, before a claim. Without statistics (a new store, or a burst queued since autovacuum's
/// last pass, which comes at most once a minute) the planner takes the pending rows for a
/// handful and joins them with themselves: a claim over 10,000 pending rows took 5 s instead
/// of a few ms (`bench adopt --postgres`). Bounded: it waits at most 100 ms for the table's
/// lock (an autovacuum holding it yields), and a failure only skips the refresh.
async fn refresh_statistics(pool: &sqlx::PgPool) {
    use std::sync::atomic::Ordering::SeqCst;
    let (queued, at) = (ROWS_QUEUED.load(SeqCst), ANALYZED_AT.load(SeqCst));
    if queued.saturating_sub(at) < ANALYZE_EVERY
        || ANALYZED_AT
            .compare_exchange(at, queued, SeqCst, SeqCst)
            .is_err()
    {
        return;
    }
    let analyzed = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '100ms'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("ANALYZE outbox").execute(&mut *tx).await?;
        tx.commit().await
    };
    if let Err(e) = analyzed.await {
        tracing::debug!(error = %e, "refreshing the outbox's planner statistics failed; skipped");
    }
}

/// See [`QUEUED`]: compare two readings to know whether anything was queued in between.
pub fn queued_generation() -> u64 {
    QUEUED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Marks a row done if it is still pending under this claim (1) or not (0).
///
/// Nothing else is written: what an update that landed carried is read from its done row when
/// it is needed ([`Store::supersede_update_of_deleted_link`]), not copied to the link at every
/// success (that rewrote a link row per update: about a third of the drain's writes).
async fn complete_in(tx: &mut Tx, row: Claimed, now_ms: i64) -> Result<u64, StoreError> {
    let id = row.id;
    let what = || format!("completing outbox row {id}");
    on_tx!(tx, c => sqlx::query(
        "UPDATE outbox SET state = 'done', attempts = attempts + 1, last_error = NULL, updated_at = $2, \
             lease_owner = NULL, lease_until = 0 \
         WHERE id = $1 AND state = 'pending' AND ($3 < 0 OR lease_fence = $3)",
    )
    .bind(id)
    .bind(now_ms)
    .bind(row.fence_param())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .ctx(what)
}

/// [`complete_in`] for a group of reports, in one statement per chunk whatever their number.
/// Answers each report's count in order, as if each had been made alone in turn: a row
/// reported twice lands once, for the first report that holds its claim.
async fn complete_many(tx: &mut Tx, batch: &[Completion]) -> Result<Vec<u64>, StoreError> {
    let what = || format!("completing {} outbox rows", batch.len());
    let mut answers = vec![0_u64; batch.len()];
    // Rounds of distinct rows: a row's second report is made after its first.
    let mut rest: Vec<usize> = (0..batch.len()).collect();
    while !rest.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = rest
            .into_iter()
            .partition(|&i| seen.insert(batch[i].row.id));
        rest = later;
        let mut landed: std::collections::HashSet<i64> = std::collections::HashSet::new();
        for chunk in crate::db::chunks(&round[..], APPEND_CHUNK) {
            let rows: Vec<(i64,)> = on_tx!(tx, c => {
                let mut query = sqlx::QueryBuilder::new(
                    "UPDATE outbox SET state = 'done', attempts = attempts + 1, last_error = NULL, \
                         updated_at = v.column3, lease_owner = NULL, lease_until = 0 FROM (",
                );
                query
                    .push_values(chunk, |mut row, &i| {
                        let c = &batch[i];
                        row.push("CAST(")
                            .push_bind_unseparated(c.row.id)
                            .push_unseparated(" AS BIGINT)")
                            .push("CAST(")
                            .push_bind_unseparated(c.row.fence_param())
                            .push_unseparated(" AS BIGINT)")
                            .push("CAST(")
                            .push_bind_unseparated(c.now_ms)
                            .push_unseparated(" AS BIGINT)");
                    })
                    .push(
                        ") AS v WHERE outbox.id = v.column1 AND outbox.state = 'pending' \
                         AND (v.column2 < 0 OR outbox.lease_fence = v.column2) \
                         RETURNING outbox.id",
                    );
                query
                    .build_query_as()
                    .fetch_all(c)
                    .await
            })
            .ctx(what)?;
            landed.extend(rows.into_iter().map(|(id,)| id));
        }
        for &i in &round {
            if landed.contains(&batch[i].row.id) {
                answers[i] = 1;
            }
        }
    }
    Ok(answers)
}

/// Rows [`keep_applied`] reads at a time.
const KEEP_APPLIED_CHUNK: i64 = 512;

/// Before [`Store::prune_history`] deletes the finished rows last changed before `before_ms`:
/// for each conference whose last done update is among them, the link records that update's
/// spec fingerprint (`applied_fingerprint`), which [`Store::supersede_update_of_deleted_link`]
/// falls back on once the row is gone. Read in chunks of rows, so a first prune of a large
/// history holds a chunk at a time.
pub(crate) async fn keep_applied(tx: &mut Tx, before_ms: i64) -> Result<u64, StoreError> {
    let what = || "keeping the spec of each conference's last update that landed".to_owned();
    let (mut after, mut kept) = (0_i64, 0_u64);
    loop {
        let rows: Vec<(i64, String, String)> = on_tx!(tx, c => sqlx::query_as(
            concat!("SELECT o.id, o.conference_id, ", action_json_of!("a", "o.conference_id"),
            " AS action_json FROM outbox o JOIN outbox_actions a ON a.id = o.id \
             WHERE o.kind = 'update' AND o.state = 'done' AND o.updated_at < $1 AND o.id > $2 \
               AND NOT EXISTS (SELECT 1 FROM outbox n WHERE n.conference_id = o.conference_id \
                                 AND n.id > o.id AND n.kind = 'update' AND n.state = 'done') \
             ORDER BY o.id LIMIT CAST($3 AS BIGINT)"),
        )
        .bind(before_ms)
        .bind(after)
        .bind(KEEP_APPLIED_CHUNK)
        .fetch_all(c)
        .await)
        .ctx(what)?;
        let Some(last) = rows.last() else {
            return Ok(kept);
        };
        after = last.0;
        let full = rows.len() as i64 == KEEP_APPLIED_CHUNK;
        for (id, conference_id, action_json) in rows {
            // A row this build cannot read (see `Store::claim_batch`) leaves the link as it
            // is: pruning must not stop on it.
            let spec = match serde_json::from_str::<Action>(&action_json) {
                Ok(Action::Update { spec, .. }) => spec,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(
                        outbox_id = id,
                        conference_id,
                        %error,
                        "pruning: a done update's stored action does not read; its spec is not kept"
                    );
                    continue;
                }
            };
            kept += on_tx!(tx, c => sqlx::query(
                "UPDATE links SET applied_fingerprint = $2 WHERE conference_id = $1",
            )
            .bind(&conference_id)
            .bind(spec.fingerprint())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
            .ctx(what)?;
        }
        if !full {
            return Ok(kept);
        }
    }
}

/// Which attempt a report answers: an outbox row, and for a claimed row the fence of its claim.
/// A bare row id (tests, admin tools) reports without a fence check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The row id.
    pub id: i64,
    /// The claim's fence; None: any.
    pub fence: Option<i64>,
}

impl From<i64> for Claimed {
    fn from(id: i64) -> Claimed {
        Claimed { id, fence: None }
    }
}

impl From<&OutboxItem> for Claimed {
    fn from(item: &OutboxItem) -> Claimed {
        Claimed {
            id: item.id,
            fence: (item.fence > 0).then_some(item.fence),
        }
    }
}

impl Claimed {
    /// The fence as bound in SQL: -1 matches any.
    fn fence_param(&self) -> i64 {
        self.fence.unwrap_or(-1)
    }
}

/// An outbox row in any state (inspection, tests, the status page).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The outbox row id.
    pub id: i64,
    /// The conference (the provider's meeting id).
    pub conference_id: String,
    /// The calendar.
    pub calendar_id: String,
    /// The event (for a series: the series id).
    pub event_id: String,
    /// The provider call to make.
    pub action: Action,
    /// The key sent with the provider call.
    pub idempotency_key: String,
    /// Where the row stands.
    pub state: OutboxState,
    /// Attempts reported so far.
    pub attempts: i64,
    /// Not run before this time (unix ms).
    pub not_before: i64,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
    /// When the row was created (unix ms).
    pub created_at: i64,
    /// Last change to the row (unix ms).
    pub updated_at: i64,
}

/// An action that failed permanently.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAction {
    /// The outbox row id.
    pub id: i64,
    /// The conference (the provider's meeting id).
    pub conference_id: String,
    /// The calendar.
    pub calendar_id: String,
    /// The event (for a series: the series id).
    pub event_id: String,
    /// The action's kind (`update`, `delete`, ...).
    pub kind: String,
    /// The provider call to make.
    pub action: Action,
    /// The key sent with the provider call.
    pub idempotency_key: String,
    /// Attempts reported so far.
    pub attempts: i64,
    /// Why it failed.
    pub error: String,
    /// When it failed (unix ms).
    pub failed_at: i64,
}

/// An outbox row's action (`outbox_actions`, written once beside the row), as a column of a
/// query over `outbox`.
macro_rules! action_of {
    ($row:literal) => {
        concat!(
            "(SELECT ",
            action_json_of!("a", concat!($row, ".conference_id")),
            " FROM outbox_actions a WHERE a.id = ",
            $row,
            ".id) AS action_json"
        )
    };
}

/// An outbox row's idempotency key, as a column of a query over `outbox`: its planned key
/// suffixed with its row id (`planned_key#id`; row ids are never reused, so neither is a key),
/// or for a row queued before SQLite's migration 0023 (Postgres 0016) the key it was given then.
macro_rules! key_of {
    ($row:literal) => {
        concat!(
            "COALESCE(",
            $row,
            ".idempotency_key, ",
            $row,
            ".planned_key || '#' || ",
            $row,
            ".id) AS idempotency_key"
        )
    };
}

/// How an action is stored in `outbox_actions`: its JSON, and None; or, for an update whose
/// spec is `link_spec` (the spec of its link as written in the same transaction), the JSON
/// before the spec and, as `spec_tail`, the JSON after it: the spec is the link's, read back
/// from it (`action_json_of!`), and written into the row by the trigger of SQLite's migration
/// 0022 (Postgres 0015) before the link's spec changes. The spec is not stored twice.
fn stored_action(
    action: &Action,
    link_spec: Option<&MeetingSpec>,
    what: impl Fn() -> String,
) -> Result<(String, Option<String>), StoreError> {
    if let (Action::Update { spec, changes }, Some(link_spec)) = (action, link_spec)
        && spec == link_spec
    {
        // As serde writes the action (`stored_action_splits_the_action_as_serde_writes_it`),
        // without the spec, which is not even serialized.
        let changes = serde_json::to_string(changes).ctx(&what)?;
        return Ok((
            UPDATE_HEAD.to_owned(),
            Some(format!("{UPDATE_CHANGES}{changes}}}")),
        ));
    }
    Ok((serde_json::to_string(action).ctx(&what)?, None))
}

/// An update's JSON up to its spec, and between its spec and its changes ([`stored_action`]).
const UPDATE_HEAD: &str = r#"{"kind":"update","spec":"#;
const UPDATE_CHANGES: &str = r#","changes":"#;

const SELECT: &str = concat!(
    "SELECT id, conference_id, calendar_id, event_id, kind, ",
    action_of!("outbox"),
    ", ",
    key_of!("outbox"),
    ", state, attempts, \
     not_before, last_error, created_at, updated_at FROM outbox"
);

fn entry(row: &impl Cols) -> Result<OutboxEntry, StoreError> {
    let what = || "reading an outbox row".to_owned();
    let id: i64 = row.col("id").ctx(what)?;
    let action_json: String = row.col("action_json").ctx(what)?;
    let state: String = row.col("state").ctx(what)?;
    Ok(OutboxEntry {
        action: serde_json::from_str(&action_json)
            .ctx(|| format!("outbox row {id}, action_json"))?,
        state: OutboxState::parse(&state).ok_or_else(|| StoreError::Conflict {
            what: format!("outbox row {id}"),
            detail: format!("unknown state {state:?}"),
        })?,
        id,
        conference_id: row.col("conference_id").ctx(what)?,
        calendar_id: row.col("calendar_id").ctx(what)?,
        event_id: row.col("event_id").ctx(what)?,
        idempotency_key: row.col("idempotency_key").ctx(what)?,
        attempts: row.col("attempts").ctx(what)?,
        not_before: row.col("not_before").ctx(what)?,
        last_error: row.col("last_error").ctx(what)?,
        created_at: row.col("created_at").ctx(what)?,
        updated_at: row.col("updated_at").ctx(what)?,
    })
}

/// The rows of an operator's listing (the status page, the admin API): a row this build
/// cannot read is left out with a warning that names it, so that one such row does not take the
/// whole listing down. The drain has parked it (see [`Store::claim_batch`]); its id, from the
/// warning, is what `drop_action` takes.
fn listed(rows: &[impl Cols]) -> Vec<OutboxEntry> {
    rows.iter()
        .filter_map(|row| match entry(row) {
            Ok(entry) => Some(entry),
            Err(error) => {
                tracing::warn!(%error, "an outbox row that does not read is left out of a listing");
                None
            }
        })
        .collect()
}

/// Whether the conference's latest row (superseded ones aside) is `$1`'s planned key and still
/// pending: [`append`]'s replay check for a single action, as SQL (`$1` the planned key, `$2`
/// the conference).
macro_rules! replay_of_one {
    () => {
        "EXISTS (SELECT 1 FROM (SELECT planned_key, state FROM outbox \
                     WHERE conference_id = $2 AND state <> 'superseded' ORDER BY id DESC LIMIT 1) AS t \
                 WHERE t.planned_key = $1 AND t.state = 'pending')"
    };
}

/// The insert of one outbox row (`$1` its planned key, `$2`..`$5` its conference, calendar,
/// event and kind, `$6` its `not_before`, `$7` now), followed by `$guard`. The row's
/// idempotency key is not stored: it is `planned_key#id` ([`key_of!`]).
macro_rules! insert_row {
    ($guard:expr) => {
        concat!(
            "INSERT INTO outbox (conference_id, calendar_id, event_id, kind, planned_key, \
                 state, attempts, not_before, created_at, updated_at) \
             SELECT $2, $3, $4, $5, $1, 'pending', 0, $6, $7, $7",
            $guard
        )
    };
}

/// Queues one row and its action. `unless_replay`: not if the conference's latest row
/// (superseded ones aside) is this planned key and still pending ([`replay_of_one!`], checked
/// against the outbox as it was before the insert). Nothing reads the outcome: on SQLite both
/// statements are sent with the transaction's next statement or its COMMIT ([`Tx::defer`]);
/// Postgres inserts both in one statement.
async fn insert_row(
    tx: &mut Tx,
    append: &Append<'_>,
    action: &Action,
    planned_key: String,
    (action_json, spec_tail): (String, Option<String>),
    unless_replay: bool,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut args = vec![
        Arg::Text(planned_key),
        Arg::Text(append.conference_id.to_owned()),
        Arg::Text(append.calendar_id.to_owned()),
        Arg::Text(append.event_id.to_owned()),
        Arg::Text(action.kind().to_owned()),
        Arg::Int(append.not_before_ms),
        Arg::Int(now_ms),
    ];
    let insert = if unless_replay {
        concat!(insert_row!(" WHERE NOT "), replay_of_one!())
    } else {
        insert_row!("")
    };
    match tx {
        // Its action right after it, on the same connection: the insert's count and row id
        // say whether and where it landed.
        Tx::Sqlite(_) => {
            tx.defer(insert, args).await?;
            tx.defer(
                "INSERT INTO outbox_actions (id, action_json, spec_tail) \
                 SELECT last_insert_rowid(), $1, $2 WHERE changes() = 1",
                vec![Arg::Text(action_json), Arg::OptText(spec_tail)],
            )
            .await
        }
        Tx::Postgres(_) => {
            args.extend([Arg::Text(action_json), Arg::OptText(spec_tail)]);
            let sql = format!(
                "WITH queued AS ({insert} RETURNING id) \
                 INSERT INTO outbox_actions (id, action_json, spec_tail) \
                 SELECT id, $8, $9 FROM queued"
            );
            tx.defer(sql, args).await
        }
    }
}

/// [`append`] for a single action, as statements whose outcome nothing reads (see
/// [`insert_row`]): a sync page of one change is two round trips to the writer instead of
/// four (the writer is held for the whole transaction: in a burst, every other write waits
/// that long). The same rules in SQL: a replay (the conference's latest row, superseded ones
/// aside, is this planned key and still pending) queues nothing. Answers how many rows it may
/// have queued (1): callers that report what was queued use [`append`].
pub(crate) async fn append_one(
    tx: &mut Tx,
    append: &Append<'_>,
    action: &Action,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let what = || {
        format!(
            "queueing an action for conference {} (calendar {}, event {})",
            append.conference_id, append.calendar_id, append.event_id
        )
    };
    let planned_key = idempotency_key(append.calendar_id, append.event_id, action);
    let stored = stored_action(action, append.link_spec, what)?;
    note_queued();
    note_rows(1);
    insert_row(tx, append, action, planned_key, stored, true, now_ms)
        .await
        .ctx(what)?;
    Ok(1)
}

/// Appends a change's actions for one conference (inside the page's transaction).
///
/// A replay inserts nothing: when the conference's latest rows (superseded ones aside) carry
/// the same planned keys in the same order and are all still pending, they will do exactly this
/// work. In every other case the actions are queued, so a change is never swallowed: the same
/// intent recurring after a different one (spec A, then B, then A again), or after it already
/// ran (a later full sync verifying the same event), gets a new row, whose idempotency key
/// (`planned_key#id`, the row's own id) is new, and neither the outbox nor the provider
/// mistakes it for the first one. A page replayed after its actions ran therefore runs them
/// again: at least once, never lost. Answers how many rows it queued.
pub(crate) async fn append(
    tx: &mut Tx,
    append: &Append<'_>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let Append {
        conference_id,
        calendar_id,
        event_id,
        actions,
        link_spec,
        ..
    } = *append;
    if actions.is_empty() {
        return Ok(0);
    }
    let what = || {
        format!(
            "queueing actions for conference {conference_id} (calendar {calendar_id}, event {event_id})"
        )
    };
    let planned: Vec<String> = actions
        .iter()
        .map(|a| idempotency_key(calendar_id, event_id, a))
        .collect();
    let mut tail: Vec<(String, String)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT planned_key, state FROM outbox WHERE conference_id = $1 AND state <> 'superseded' \
         ORDER BY id DESC LIMIT CAST($2 AS BIGINT)",
    )
    .bind(conference_id)
    .bind(planned.len() as i64)
    .fetch_all(c)
    .await)
    .ctx(what)?;
    tail.reverse();
    let replay = tail.len() == planned.len()
        && tail
            .iter()
            .zip(&planned)
            .all(|((key, state), planned_key)| key == planned_key && state == "pending");
    if replay {
        tracing::debug!(
            conference_id,
            calendar_id,
            event_id,
            "replayed actions still pending; nothing queued"
        );
        return Ok(0);
    }
    for (action, planned_key) in actions.iter().zip(planned) {
        let stored = stored_action(action, link_spec, what)?;
        note_queued();
        note_rows(1);
        insert_row(tx, append, action, planned_key, stored, false, now_ms)
            .await
            .ctx(what)?;
    }
    Ok(actions.len())
}

/// Actions to queue for one conference ([`append_many`]).
pub(crate) struct Append<'a> {
    pub conference_id: &'a str,
    pub calendar_id: &'a str,
    pub event_id: &'a str,
    pub actions: &'a [Action],
    /// The spec of the conference's link as written in the same transaction, if it was: an
    /// update to it is stored without a copy ([`stored_action`]).
    pub link_spec: Option<&'a MeetingSpec>,
    pub not_before_ms: i64,
}

/// Conferences per tail query and rows per insert of [`append_many`].
const APPEND_CHUNK: usize = 200;

/// [`append`] for DIFFERENT conferences, in a few statements for all of them: each
/// conference's replay check reads its own tail (one query for all), and the rows are inserted
/// together, in the order given, then their actions beside them. The same rows and replays as
/// calling [`append`] for each in turn.
pub(crate) async fn append_many(
    tx: &mut Tx,
    calendar_id: &str,
    appends: &[Append<'_>],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let what = || {
        format!(
            "queueing actions for {} conferences of a sync page of calendar {calendar_id}",
            appends.len()
        )
    };
    let appends: Vec<&Append<'_>> = appends.iter().filter(|a| !a.actions.is_empty()).collect();
    if appends.is_empty() {
        return Ok(0);
    }
    // Each conference's last non-superseded rows, newest first, as many as it plans now.
    let mut tails: std::collections::HashMap<String, Vec<(i64, String, String)>> =
        std::collections::HashMap::new();
    for chunk in crate::db::chunks(&appends[..], APPEND_CHUNK) {
        let depth = chunk.iter().map(|a| a.actions.len()).max().unwrap_or(0) as i64;
        let rows: Vec<(String, String, String, i64)> = on_tx!(tx, c => {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT conference_id, planned_key, state, rn FROM (\
                 SELECT conference_id, planned_key, state, \
                 ROW_NUMBER() OVER (PARTITION BY conference_id ORDER BY id DESC) AS rn \
                 FROM outbox WHERE state <> 'superseded' AND conference_id IN (",
            );
            let mut list = query.separated(", ");
            for append in chunk {
                list.push_bind(append.conference_id);
            }
            query.push(")) AS t WHERE rn <= ").push_bind(depth);
            query
                .build_query_as()
                .fetch_all(c)
                .await
        })
        .ctx(what)?;
        for (conference_id, planned_key, state, rn) in rows {
            tails
                .entry(conference_id)
                .or_default()
                .push((rn, planned_key, state));
        }
    }
    // What is new, with its planned keys (in order) and its action as stored.
    type Row<'r> = (&'r Append<'r>, &'r Action, String, (String, Option<String>));
    let mut rows: Vec<Row<'_>> = Vec::new();
    for append in appends {
        let planned: Vec<String> = append
            .actions
            .iter()
            .map(|a| idempotency_key(append.calendar_id, append.event_id, a))
            .collect();
        let mut tail: Vec<(i64, String, String)> = tails
            .remove(append.conference_id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(rn, _, _)| *rn <= planned.len() as i64)
            .collect();
        tail.sort_by_key(|(rn, _, _)| std::cmp::Reverse(*rn));
        let replay = tail.len() == planned.len()
            && tail
                .iter()
                .zip(&planned)
                .all(|((_, key, state), planned_key)| key == planned_key && state == "pending");
        if replay {
            tracing::debug!(
                conference_id = append.conference_id,
                calendar_id = append.calendar_id,
                event_id = append.event_id,
                "replayed actions still pending; nothing queued"
            );
            continue;
        }
        for (action, planned_key) in append.actions.iter().zip(planned) {
            let stored = stored_action(action, append.link_spec, what)?;
            rows.push((append, action, planned_key, stored));
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    note_queued();
    note_rows(rows.len() as u64);
    for chunk in crate::db::chunks(&rows[..], APPEND_CHUNK) {
        let mut landed: Vec<(i64, String, String)> = on_tx!(tx, c => {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO outbox (conference_id, calendar_id, event_id, kind, planned_key, \
                     state, attempts, not_before, created_at, updated_at) ",
            );
            query
                .push_values(chunk, |mut row, (append, action, planned_key, _)| {
                    row.push_bind(append.conference_id)
                        .push_bind(append.calendar_id)
                        .push_bind(append.event_id)
                        .push_bind(action.kind())
                        .push_bind(planned_key)
                        .push("'pending'")
                        .push("0")
                        .push_bind(append.not_before_ms)
                        .push_bind(now_ms)
                        .push_bind(now_ms);
                })
                .push(" RETURNING id, conference_id, planned_key");
            query
                .build_query_as()
                .fetch_all(c)
                .await
        })
        .ctx(what)?;
        // Ids are given in the order of the rows inserted; each is checked against its row
        // all the same, so that an action never lands beside another conference's row.
        landed.sort_unstable_by_key(|(id, _, _)| *id);
        let matches = landed.len() == chunk.len()
            && landed.iter().zip(chunk).all(|((_, conference, key), row)| {
                conference == row.0.conference_id && key == &row.2
            });
        if !matches {
            return Err(StoreError::Conflict {
                what: what(),
                detail: format!(
                    "{} rows inserted came back as {} in an order that does not match",
                    chunk.len(),
                    landed.len()
                ),
            });
        }
        on_tx!(tx, c => {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO outbox_actions (id, action_json, spec_tail) ",
            );
            query.push_values(
                landed.iter().zip(chunk),
                |mut row, ((id, _, _), (_, _, _, (json, tail)))| {
                    row.push_bind(*id).push_bind(json).push_bind(tail);
                },
            );
            query.build().execute(c).await.map(|_| ())
        })
        .ctx(what)?;
    }
    Ok(rows.len())
}

/// Marks the conference's pending deletes superseded (inside the page's transaction).
pub(crate) async fn supersede_deletes(
    tx: &mut Tx,
    conference_id: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE outbox SET state = 'superseded', updated_at = $2 \
         WHERE conference_id = $1 AND state = 'pending' AND kind = 'delete'",
    )
    .bind(conference_id)
    .bind(now_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .ctx(|| format!("superseding pending deletes of conference {conference_id}"))
}

/// Marks the conference's pending rows superseded, except `keep` (the row running now) and its
/// deletes (inside a transaction): what they were to do was taken over by a new meeting.
pub(crate) async fn supersede_all_but_deletes(
    tx: &mut Tx,
    conference_id: &str,
    keep: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE outbox SET state = 'superseded', updated_at = $3 \
         WHERE conference_id = $1 AND state = 'pending' AND kind <> 'delete' AND id <> $2",
    )
    .bind(conference_id)
    .bind(keep)
    .bind(now_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .ctx(|| format!("superseding pending actions of conference {conference_id}"))
}

impl Store {
    /// Up to `limit` actions to run now, the longest due first (then the oldest): for each
    /// conference only its oldest pending row, and only once its `not_before` has passed. The
    /// order is the `outbox_due` index's (`not_before, id` of pending rows), so finding them
    /// reads pending rows only: ordered by id alone, SQLite walked the whole table in id
    /// order, every finished row kept for the retention period included, at every claim. Nothing later for a conference
    /// is handed out before that row is done, failed or superseded, so an old update never
    /// lands after a delete. A row is handed out again until it is reported (at least once).
    pub async fn due(&self, limit: i64, now_ms: i64) -> Result<Vec<OutboxItem>, StoreError> {
        let what = || "listing due outbox actions".to_owned();
        let entries = on_read!(self, c => {
            let rows = sqlx::query(
                concat!(
                "SELECT o.id, o.conference_id, o.calendar_id, o.event_id, o.kind, ",
                action_of!("o"),
                ", ",
                key_of!("o"),
                ", o.state, \
                     o.attempts, o.not_before, o.last_error, o.created_at, o.updated_at \
                 FROM outbox o \
                 WHERE o.state = 'pending' AND o.not_before <= $1 AND o.lease_until <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM outbox p \
                                   WHERE p.conference_id = o.conference_id AND p.state = 'pending' AND p.id < o.id) \
                 ORDER BY o.not_before, o.id LIMIT CAST($2 AS BIGINT)"),
            )
            .bind(now_ms)
            .bind(limit)
            .fetch_all(c)
            .await;
            rows.ctx(what)
                .and_then(|rows| rows.iter().map(entry).collect::<Result<Vec<_>, _>>())
        })?;
        Ok(entries
            .into_iter()
            .map(|e| OutboxItem {
                id: e.id,
                conference_id: e.conference_id,
                calendar_id: e.calendar_id,
                event_id: e.event_id,
                action: e.action,
                idempotency_key: e.idempotency_key,
                attempts: e.attempts,
                fence: 0,
            })
            .collect())
    }

    /// Claims up to `limit` rows due at `due_ms` for `worker`, for `lease_ms` from now (the
    /// store's clock, [`Store::with_clock`], which every worker's lease is measured by): the
    /// rows [`Store::due`] would hand out (each conference's oldest pending row, past its
    /// `not_before`, not under another live claim), the longest due first. Each claim bumps the row's
    /// fence; the items carry it, and their reports are refused once the claim has passed to
    /// another worker. Several workers claim at once without waiting for each other: Postgres
    /// takes the rows `FOR UPDATE SKIP LOCKED`, outside the store's write lock (a claim touches
    /// only the lease columns; a report racing it is ordered by the row lock, and whichever
    /// comes second sees the other's effect). A claim that is not renewed
    /// ([`Store::renew_claims`]) expires, and the row goes to whoever claims next: a worker
    /// that died mid-call loses its rows after `lease_ms`.
    pub async fn claim_due(
        &self,
        worker: &str,
        limit: i64,
        due_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        Ok(self
            .claim_batch(worker, limit, 0, due_ms, lease_ms)
            .await?
            .items)
    }

    /// [`Store::claim_due`], answering also whether the claim was the last one needed
    /// ([`ClaimedBatch::last`]): a drain that knows it skips the claim that would find
    /// nothing (a write round trip per drain when changes come one at a time).
    pub async fn claim_batch(
        &self,
        worker: &str,
        limit: i64,
        with_links: i64,
        due_ms: i64,
        lease_ms: i64,
    ) -> Result<ClaimedBatch, StoreError> {
        let what = || "claiming due outbox actions".to_owned();
        let now_ms = self.now();
        // One statement per backend (literal SQL): Postgres adds FOR UPDATE SKIP LOCKED. Its
        // LIMIT is cast, as every LIMIT of the store's: SQLite (3.51) re-prepares a statement
        // whose LIMIT is a bare parameter each time it is bound (its planner reads the value),
        // a parse and a plan per claim (`the_statements_of_a_sync_and_a_drain_are_prepared_once`).
        macro_rules! claim_sql {
            ($set:literal, $free:expr, $lock:literal) => {
                concat!(
                    "UPDATE outbox SET lease_owner = $1, lease_until = $2, lease_fence = lease_fence + 1",
                    $set,
                    " WHERE id IN (SELECT o.id FROM outbox o \
                         WHERE o.state = 'pending' AND o.not_before <= $5 AND ",
                    $free,
                    " AND NOT EXISTS (SELECT 1 FROM outbox p \
                               WHERE p.conference_id = o.conference_id AND p.state = 'pending' AND p.id < o.id) \
                         ORDER BY o.not_before, o.id LIMIT CAST($4 AS BIGINT)",
                    $lock,
                    ") RETURNING id, conference_id, calendar_id, event_id, kind, ",
                    action_of!("outbox"),
                    ", ",
                    key_of!("outbox"),
                    ", state, \
                         attempts, not_before, last_error, created_at, updated_at, lease_fence, \
                         EXISTS (SELECT 1 FROM outbox q WHERE q.conference_id = outbox.conference_id \
                                 AND q.state = 'pending' AND q.id > outbox.id) AS more"
                )
            };
        }
        /// A claimed row, or (its id, its claim's fence, why) when its stored action does not
        /// read: one unreadable row must not fail the rows claimed with it.
        fn claimed_row(r: &impl Cols) -> Result<ClaimedRow, StoreError> {
            let what = || "claiming due outbox actions".to_owned();
            let fence: i64 = r.col("lease_fence").ctx(what)?;
            let more: bool = r.col("more").ctx(what)?;
            Ok(match entry(r) {
                Ok(e) => Ok((e, fence, more)),
                Err(e) => Err((r.col("id").ctx(what)?, fence, e.to_string())),
            })
        }
        let mut links = None;
        let claimed: Vec<ClaimedRow> = match &self.db {
            crate::db::Db::Sqlite { writer, .. } => {
                // The claimed rows' links come back in the same round trip: the claimed rows
                // are the pending due ones this claim stamped (`outbox_due` finds them).
                // Only the first `with_links` of them, in the claim's order (the order the
                // items are handed out in): the drain uses a claim's links only for the rows
                // it starts at once, and reads the others' when they start. Through
                // `outbox_due`, named, in its order: the first rows this claim stamped are
                // found at once. (Asked for in id order, SQLite's planner walked the whole
                // table by id instead, done rows and all: a claim's cost grew with the
                // outbox's history, `the_statements_of_a_sync_and_a_drain_do_not_grow_with_history`.)
                let sql = format!(
                    "{}; {} WHERE conference_id IN (SELECT conference_id FROM outbox INDEXED BY outbox_due \
                       WHERE state = 'pending' AND not_before <= $5 AND lease_owner = $1 \
                         AND lease_until = $2 ORDER BY not_before, id LIMIT CAST($6 AS BIGINT))",
                    claim_sql!("", "o.lease_until <= $3", ""),
                    crate::links::SELECT
                );
                use futures_util::StreamExt;
                use sqlx::Executor;
                let results: Vec<_> = writer
                    .fetch_many(
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(worker)
                            .bind(now_ms + lease_ms)
                            .bind(now_ms)
                            .bind(limit)
                            .bind(due_ms)
                            .bind(with_links),
                    )
                    .collect()
                    .await;
                let results: Result<Vec<_>, _> = results.into_iter().collect();
                let results = results.ctx(what);
                self.note_write(&results);
                // The claim's rows, its end, then the links' rows.
                let (mut rows, mut read, mut claim_done) =
                    (Vec::new(), std::collections::HashMap::new(), false);
                for result in results? {
                    match result {
                        sqlx::Either::Left(_) => claim_done = true,
                        sqlx::Either::Right(row) if !claim_done => rows.push(claimed_row(&row)?),
                        sqlx::Either::Right(row) => {
                            let stored = crate::links::from_row(&row)?;
                            read.insert(stored.link.conference_id.clone(), stored.link);
                        }
                    }
                }
                links = Some(read);
                rows
            }
            crate::db::Db::Postgres { pool, .. } => {
                refresh_statistics(pool).await;
                // A claim whose holder died (its liveness lock is gone) is free at once.
                let rows = sqlx::query(claim_sql!(
                    ", lease_key = $6",
                    concat!(
                        "(o.lease_until <= $3 OR (o.lease_key <> 0 AND NOT ",
                        crate::leases::holder_alive!("o.lease_key"),
                        "))"
                    ),
                    " FOR UPDATE SKIP LOCKED"
                ))
                .bind(worker)
                .bind(now_ms + lease_ms)
                .bind(now_ms)
                .bind(limit)
                .bind(due_ms)
                .bind(self.liveness_key(worker))
                .fetch_all(pool)
                .await;
                let rows = rows.ctx(what);
                self.note_write(&rows);
                rows?.iter().map(claimed_row).collect::<Result<_, _>>()?
            }
        };
        let last = (claimed.len() as i64) < limit
            && !claimed.iter().any(|row| matches!(row, Ok((_, _, true))));
        let (claimed, unreadable): (Vec<_>, Vec<_>) = claimed.into_iter().partition(Result::is_ok);
        for (id, fence, error) in unreadable.into_iter().filter_map(Result::err) {
            self.park_unreadable(id, fence, &error, now_ms).await?;
        }
        let mut claimed: Vec<(OutboxEntry, i64, bool)> =
            claimed.into_iter().filter_map(Result::ok).collect();
        // The claim's order: the longest due first (`outbox_due`'s order).
        claimed.sort_by_key(|(e, _, _)| (e.not_before, e.id));
        let items = claimed
            .into_iter()
            .map(|(e, fence, _)| OutboxItem {
                id: e.id,
                conference_id: e.conference_id,
                calendar_id: e.calendar_id,
                event_id: e.event_id,
                action: e.action,
                idempotency_key: e.idempotency_key,
                attempts: e.attempts,
                fence,
            })
            .collect();
        Ok(ClaimedBatch { items, last, links })
    }

    /// A claimed row whose stored action this build cannot read (written by a newer version
    /// during a rolling upgrade, or edited by hand) is parked, not failed: its claim ends, it
    /// stays pending with the reason as its error for [`PARK_UNREADABLE_MS`], and a worker
    /// that reads it (or an operator's retry or drop) takes it from there. Its conference's
    /// later rows wait behind it, as for any pending row; other conferences' rows go on.
    async fn park_unreadable(
        &self,
        id: i64,
        fence: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        tracing::error!(
            outbox_id = id,
            error,
            "an outbox row's stored action does not read: parked, the rows claimed with it go on"
        );
        let reason = format!(
            "this worker cannot read the stored action ({error}); parked for a worker that can, \
             or for an operator to drop"
        );
        let row = Claimed {
            id,
            fence: Some(fence),
        };
        self.park(row, now_ms + PARK_UNREADABLE_MS, &reason, now_ms)
            .await
            .map(drop)
    }

    /// Extends `worker`'s claims on these rows (the ones it is still running) to `lease_ms`
    /// from now (the store's clock). A claim already taken over by another worker is not
    /// touched. Answers how many claims were extended.
    pub async fn renew_claims(
        &self,
        worker: &str,
        ids: &[i64],
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        let now_ms = self.now();
        let mut renewed = 0;
        for chunk in crate::db::chunks(ids, 500) {
            renewed += on_write!(self, c => {
                let mut query = sqlx::QueryBuilder::new("UPDATE outbox SET lease_until = ");
                query
                    .push_bind(now_ms + lease_ms)
                    .push(" WHERE state = 'pending' AND lease_owner = ")
                    .push_bind(worker)
                    .push(" AND id IN (");
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                query.push(")");
                query.build().execute(c).await.map(|r| r.rows_affected())
            })
            .ctx(|| format!("renewing {} outbox claims", chunk.len()))?;
        }
        Ok(renewed)
    }

    /// When the next action becomes due (the earliest `not_before` among the rows [`Store::due`]
    /// could hand out, or the end of the claim a row is under), None when nothing is pending.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> = on_read!(self, c => sqlx::query_scalar(
            "SELECT MIN(CASE WHEN o.lease_until > o.not_before THEN o.lease_until ELSE o.not_before END) AS next \
             FROM outbox o \
             WHERE o.state = 'pending' \
               AND NOT EXISTS (SELECT 1 FROM outbox p \
                               WHERE p.conference_id = o.conference_id AND p.state = 'pending' AND p.id < o.id)",
        )
        .fetch_one(c)
        .await)
        .ctx(|| "finding the next due outbox action".to_owned())?;
        Ok(next)
    }

    /// Reports a successful attempt: the row is done (whatever it was; a superseded delete
    /// that ran anyway did happen). Refused (logged, answers false) when the row is no longer
    /// pending under this claim.
    pub async fn complete(&self, row: impl Into<Claimed>, now_ms: i64) -> Result<bool, StoreError> {
        let row = row.into();
        let id = row.id;
        let done = self.complete_grouped(row, now_ms).await?;
        self.report(done, row, || format!("completing outbox row {id}"))
            .await
    }

    /// Records one success, group-committed (`crate::group`) with the others arriving
    /// meanwhile: the drain reports up to `drain_concurrency` rows at once. On SQLite, one
    /// transaction per row wrote each touched page of the outbox, its indexes and the links
    /// once per row (tens of KB of WAL per action); on Postgres it was five round trips per
    /// row (BEGIN, the shared write lock, two updates, COMMIT). The reports are independent
    /// conditional statements, so committing them together changes no outcome; a crash before
    /// the commit loses them all, as it would lose a report not yet made (the rows stay
    /// claimed and run again, with the same idempotency keys). Groups are per process: another
    /// worker's rows are under its claims, not in this group.
    async fn complete_grouped(&self, row: Claimed, now_ms: i64) -> Result<u64, StoreError> {
        let completion = Completion { row, now_ms };
        self.completions
            .submit(completion, |batch| self.commit_completions(batch))
            .await
            .unwrap_or_else(|| {
                Err(StoreError::Database {
                    what: format!("completing outbox row {}", row.id),
                    source: sqlx::Error::Protocol(
                        "the group commit holding this report was abandoned; the row runs again once its claim expires".into(),
                    ),
                })
            })
    }

    /// Commits `batch` in one transaction and answers each report; if that fails, commits
    /// each alone, so each gets its own answer (one bad row fails no other).
    async fn commit_completions(
        &self,
        queued: Vec<crate::group::Queued<Completion, Result<u64, StoreError>>>,
    ) {
        if queued.is_empty() {
            return;
        }
        let (batch, answers): (Vec<Completion>, Vec<_>) =
            queued.into_iter().map(|q| (q.item, q.answer)).unzip();
        let what = || format!("completing {} outbox rows", batch.len());
        let together = async {
            let mut tx = self.write_tx_keyed(self.lock_keys(), what).await?;
            let done = match (tx, &batch[..]) {
                // A report alone (changes coming one at a time): one round trip.
                (Tx::Sqlite(tx), [one]) => vec![self.complete_one_sqlite(tx, one).await?],
                (other, _) => {
                    tx = other;
                    let done = complete_many(&mut tx, &batch).await?;
                    self.commit(tx, what).await?;
                    done
                }
            };
            Ok::<_, StoreError>(done)
        };
        match together.await {
            Ok(done) => {
                for (answer, done) in answers.into_iter().zip(done) {
                    let _ = answer.send(Ok(done));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(rows = batch.len(), error = %e, "a group commit of outbox reports failed; committing each alone");
                for (c, answer) in batch.into_iter().zip(answers) {
                    let result = self.complete_alone(c.row, c.now_ms).await;
                    let _ = answer.send(result);
                }
            }
        }
    }

    /// [`complete_many`] for one report on SQLite, in ONE round trip to the connection's
    /// thread: BEGIN, the row's update and COMMIT, sent together.
    async fn complete_one_sqlite(
        &self,
        tx: crate::conns::SqliteTx,
        c: &Completion,
    ) -> Result<u64, StoreError> {
        let (id, fence) = (c.row.id, c.row.fence_param());
        let rows = tx
            .commit_with(
                "UPDATE outbox SET state = 'done', attempts = attempts + 1, last_error = NULL, \
                     updated_at = $2, lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND state = 'pending' AND ($3 < 0 OR lease_fence = $3) RETURNING id",
                vec![Arg::Int(id), Arg::Int(c.now_ms), Arg::Int(fence)],
            )
            .await
            .ctx(|| format!("completing outbox row {id}"));
        self.note_write(&rows);
        Ok(rows?.len() as u64)
    }

    /// One success in its own transaction.
    async fn complete_alone(&self, row: Claimed, now_ms: i64) -> Result<u64, StoreError> {
        let what = || format!("completing outbox row {}", row.id);
        // A single atomic statement on a row under this worker's claim: no key needed.
        let mut tx = self.write_tx_keyed(self.lock_keys(), what).await?;
        let done = complete_in(&mut tx, row, now_ms).await?;
        self.commit(tx, what).await?;
        Ok(done)
    }

    /// Reports a transient failure: the row stays pending, hidden from [`Store::due`] until
    /// `not_before_ms` (the backoff, or the provider's Retry-After), and its claim ends. Its
    /// conference's later rows wait too. A row that is no longer pending (under this claim) is
    /// left as it is.
    pub async fn retry_later(
        &self,
        row: impl Into<Claimed>,
        not_before_ms: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let row = row.into();
        let id = row.id;
        let what = || format!("rescheduling outbox row {id}");
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, not_before = $2, last_error = $3, updated_at = $4, \
                 lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'pending' AND ($5 < 0 OR lease_fence = $5)",
        )
        .bind(id)
        .bind(not_before_ms)
        .bind(error)
        .bind(now_ms)
        .bind(row.fence_param())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.report(done, row, what).await
    }

    /// Puts a pending row off until `not_before_ms` without counting an attempt: it waits for
    /// something retries cannot fix (credentials to be renewed), so it must not run out of tries
    /// and fail; it stays visible as pending with its error.
    pub async fn park(
        &self,
        row: impl Into<Claimed>,
        not_before_ms: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let row = row.into();
        let id = row.id;
        let what = || format!("parking outbox row {id}");
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET not_before = $2, last_error = $3, updated_at = $4, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'pending' AND ($5 < 0 OR lease_fence = $5)",
        )
        .bind(id)
        .bind(not_before_ms)
        .bind(error)
        .bind(now_ms)
        .bind(row.fence_param())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.report(done, row, what).await
    }

    /// Reports a permanent failure: the row is failed, listed by [`Store::failures`], never
    /// retried; its conference's later rows become due. A row that is no longer pending (under
    /// this claim) is left as it is.
    pub async fn fail(
        &self,
        row: impl Into<Claimed>,
        error: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let row = row.into();
        let id = row.id;
        let what = || format!("recording the failure of outbox row {id}");
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $2, updated_at = $3, \
                 lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'pending' AND ($4 < 0 OR lease_fence = $4)",
        )
        .bind(id)
        .bind(error)
        .bind(now_ms)
        .bind(row.fence_param())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        if done > 0 {
            tracing::warn!(outbox_id = id, error, "outbox action failed permanently");
        }
        self.report(done, row, what).await
    }

    /// Marks a pending row superseded (the executor found it unnecessary, e.g. a delete whose
    /// event is back). A row that is no longer pending (under this claim) is left as it is.
    pub async fn supersede(&self, row: impl Into<Claimed>) -> Result<bool, StoreError> {
        let row = row.into();
        let id = row.id;
        let what = || format!("superseding outbox row {id}");
        let now = self.now();
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET state = 'superseded', updated_at = $2, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'pending' AND ($3 < 0 OR lease_fence = $3)",
        )
        .bind(id)
        .bind(now)
        .bind(row.fence_param())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.report(done, row, what).await
    }

    /// Supersedes an update whose conference's link is deleted (its event was cancelled, or
    /// lost our conference, after the update was planned): the meeting is on its way out, so
    /// the provider is not called. In the same transaction the link is marked
    /// ([`crate::links::UNAPPLIED`]): its spec is no longer what the meeting has once the
    /// outbox has run, so a sync (or the delete's guard) that brings the event back, restored
    /// or moved, sends the event's spec to the meeting even when it equals the link's. The
    /// mark bumps the link's version: a writer that read the link before it plans again.
    /// Beside it the link records the spec of the conference's last update that landed (its
    /// `applied_fingerprint`): an event brought back with that spec needs no call.
    ///
    /// Answers None, changing nothing, when the link is not deleted (any more): the update
    /// is needed and runs. Else like [`Store::supersede`].
    pub async fn supersede_update_of_deleted_link(
        &self,
        item: &OutboxItem,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        let row = Claimed::from(item);
        let id = row.id;
        let what = || format!("superseding outbox update {id} of a deleted link");
        let mut keys = self.lock_keys();
        keys.conference(&item.conference_id);
        let mut tx = self.write_tx_keyed(keys, what).await?;
        let done = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE outbox SET state = 'superseded', updated_at = $2, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'pending' AND ($3 < 0 OR lease_fence = $3) \
                 AND EXISTS (SELECT 1 FROM links l WHERE l.conference_id = outbox.conference_id AND l.deleted)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(row.fence_param())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        if done == 0 {
            drop(tx); // rolled back: nothing was written
            let deleted = self
                .link_record(&item.conference_id)
                .await?
                .is_some_and(|l| l.link.deleted);
            if !deleted {
                return Ok(None);
            }
            return self.report(0, row, what).await.map(Some);
        }
        // What the meeting has: the spec of the conference's last update that landed (its
        // rows run in id order, so every earlier row is finished). Kept on the link beside the
        // mark for the planner; no such row (none landed, or it was pruned, which recorded it
        // on the link: `keep_applied`) keeps what the link recorded, if anything.
        let landed: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
            concat!("SELECT ", action_json_of!("a", "o.conference_id"),
            " FROM outbox o JOIN outbox_actions a ON a.id = o.id \
             WHERE o.conference_id = $1 AND o.id < $2 AND o.kind = 'update' AND o.state = 'done' \
             ORDER BY o.id DESC LIMIT 1"),
        )
        .bind(&item.conference_id)
        .bind(id)
        .fetch_optional(c)
        .await)
        .ctx(what)?;
        let landed = match landed.map(|json| serde_json::from_str::<Action>(&json)) {
            Some(Ok(Action::Update { spec, .. })) => Some(spec.fingerprint()),
            Some(Ok(_)) | None => None,
            Some(Err(e)) => {
                return Err(e).ctx(|| format!("{}: the last update that landed", what()));
            }
        };
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE links SET fingerprint = $2, applied_fingerprint = COALESCE($4, applied_fingerprint), \
                 version = version + 1, updated_at = $3 \
             WHERE conference_id = $1 AND deleted",
        )
        .bind(&item.conference_id)
        .bind(crate::links::UNAPPLIED)
        .bind(now_ms)
        .bind(landed)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.commit(tx, what).await?;
        Ok(Some(true))
    }

    /// Follows up a report that changed `done` rows: answers true when it did; none means the
    /// row is missing (an error), no longer pending, or claimed again by another worker since
    /// (refused, logged: that worker runs it and reports).
    async fn report(
        &self,
        done: u64,
        row: Claimed,
        what: impl Fn() -> String,
    ) -> Result<bool, StoreError> {
        if done > 0 {
            return Ok(true);
        }
        let id = row.id;
        match self.row_state(id, &what).await? {
            None => Err(StoreError::not_found(what())),
            Some((state, fence)) if state == "pending" => {
                tracing::warn!(
                    outbox_id = id,
                    claim = row.fence,
                    current = fence,
                    "outbox row claimed by another worker since: this late report is refused"
                );
                Ok(false)
            }
            Some((state, _)) => {
                tracing::debug!(
                    outbox_id = id,
                    state,
                    "outbox row no longer pending; report ignored"
                );
                Ok(false)
            }
        }
    }

    /// Records the meeting a pending recreate row made (its conference id), before the event is
    /// pointed at it: a sync that finds the event showing it before the links are swapped then
    /// plans the event against the link being recreated ([`Store::page_links`]). Whoever runs
    /// the row records the same meeting (the provider's create is keyed by the row), so the
    /// write is not conditional on the claim; a row no longer pending is left as it is.
    pub async fn record_recreate_target(
        &self,
        id: i64,
        new_conference_id: &str,
    ) -> Result<(), StoreError> {
        on_write!(self, c => sqlx::query(
            "UPDATE outbox SET recreate_into = $2 \
             WHERE id = $1 AND state = 'pending' AND kind = 'recreate' \
               AND recreate_into IS DISTINCT FROM $2",
        )
        .bind(id)
        .bind(new_conference_id)
        .execute(c)
        .await
        .map(|_| ()))
        .ctx(|| format!("recording the meeting outbox row {id} recreates into"))?;
        Ok(())
    }

    /// Which of these conferences have a recreate pending (their meeting is being replaced):
    /// the planner must not take the new conference id on their events for a replacement.
    pub async fn recreating(
        &self,
        conference_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for chunk in crate::db::chunks(conference_ids, 500) {
            let rows: Vec<String> = on_read!(self, c => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT DISTINCT conference_id FROM outbox WHERE state = 'pending' AND kind = 'recreate' \
                     AND conference_id IN (",
                );
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(id);
                }
                query.push(")");
                query.build_query_scalar().fetch_all(c).await
            })
            .ctx(|| "listing conferences being recreated".to_owned())?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// How many actions are pending (due or waiting for their retry time).
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        on_read!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(c)
            .await)
            .ctx(|| "counting pending outbox actions".to_owned())
    }

    /// How many outbox rows the store keeps, in any state (size checks).
    pub async fn outbox_rows(&self) -> Result<i64, StoreError> {
        on_read!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(c)
            .await)
        .ctx(|| "counting outbox rows".to_owned())
    }

    /// How many actions failed permanently (and are still kept), counted, never capped.
    pub async fn failed_count(&self) -> Result<i64, StoreError> {
        on_read!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")
            .fetch_one(c)
            .await)
        .ctx(|| "counting failed outbox actions".to_owned())
    }

    /// The most recent permanent failures, newest first.
    pub async fn failures(&self, limit: i64) -> Result<Vec<FailedAction>, StoreError> {
        let entries = self
            .outbox_where(
                " WHERE state = 'failed' ORDER BY updated_at DESC, id DESC LIMIT ",
                limit,
                "listing failed outbox actions",
            )
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| FailedAction {
                id: e.id,
                kind: e.action.kind().to_owned(),
                conference_id: e.conference_id,
                calendar_id: e.calendar_id,
                event_id: e.event_id,
                action: e.action,
                idempotency_key: e.idempotency_key,
                attempts: e.attempts,
                error: e.last_error.unwrap_or_default(),
                failed_at: e.updated_at,
            })
            .collect())
    }

    /// The most recently finished rows (done, failed, superseded) across all conferences, newest
    /// first: what confsync did lately.
    pub async fn outbox_recent(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_where(
            " WHERE state <> 'pending' ORDER BY updated_at DESC, id DESC LIMIT ",
            limit,
            "listing recent outbox rows",
        )
        .await
    }

    /// Pending rows across all conferences, soonest due first.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_where(
            " WHERE state = 'pending' ORDER BY not_before, id LIMIT ",
            limit,
            "listing pending outbox rows",
        )
        .await
    }

    /// Rows matching a fixed clause that ends with `LIMIT `, at most `limit` of them.
    async fn outbox_where(
        &self,
        clause: &'static str,
        limit: i64,
        what: &'static str,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!("{SELECT}{clause}CAST($1 AS BIGINT)");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(limit)
                .fetch_all(c)
                .await;
            rows.ctx(|| what.to_owned()).map(|rows| listed(&rows))
        })
    }

    /// Admin: up to `limit` rows in `state` (`failed` newest first, `pending` in run order),
    /// of one calendar if given.
    pub async fn actions(
        &self,
        state: OutboxState,
        calendar_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let order = match state {
            OutboxState::Pending => " ORDER BY not_before, id",
            _ => " ORDER BY updated_at DESC, id DESC",
        };
        let sql = format!(
            "{SELECT} WHERE state = $1 AND ($2 = '' OR calendar_id = $2){order} LIMIT CAST($3 AS BIGINT)"
        );
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(state.as_str())
                .bind(calendar_id.unwrap_or(""))
                .bind(limit)
                .fetch_all(c)
                .await;
            rows.ctx(|| format!("listing {state} actions")).map(|rows| listed(&rows))
        })
    }

    /// Admin: runs a failed (or put-off pending) action again as soon as a drainer takes it:
    /// pending, due now, attempts counted afresh, any claim ended. Answers false when the row
    /// is neither failed nor pending (done or superseded: nothing to retry); NotFound when
    /// there is no such row.
    pub async fn retry_action(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let what = || format!("retrying outbox row {id}");
        note_queued();
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, not_before = $2, updated_at = $2, \
                 lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state IN ('failed', 'pending')",
        )
        .bind(id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.note_admin(done, id, what).await
    }

    /// Admin: drops a failed or pending action (it becomes `superseded`, with `reason` as its
    /// error): its conference's later actions become due. Answers false when the row is done or
    /// superseded already.
    pub async fn drop_action(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let what = || format!("dropping outbox row {id}");
        let done = on_write!(self, c => sqlx::query(
            "UPDATE outbox SET state = 'superseded', last_error = $2, updated_at = $3, \
                 lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state IN ('failed', 'pending')",
        )
        .bind(id)
        .bind(reason)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(what)?;
        self.note_admin(done, id, what).await
    }

    /// True when an admin change touched the row; false when it exists in another state;
    /// NotFound when it does not exist.
    async fn note_admin(
        &self,
        done: u64,
        id: i64,
        what: impl Fn() -> String,
    ) -> Result<bool, StoreError> {
        if done > 0 {
            return Ok(true);
        }
        match self.row_state(id, &what).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::not_found(what())),
        }
    }

    /// A row's state and claim fence, None when there is no such row (after a change that
    /// touched nothing: why not).
    async fn row_state(
        &self,
        id: i64,
        what: impl Fn() -> String,
    ) -> Result<Option<(String, i64)>, StoreError> {
        on_read!(self, c => sqlx::query_as(
            "SELECT state, lease_fence FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(c)
        .await)
        .ctx(what)
    }

    /// Every outbox row of a conference, in order (inspection and tests).
    pub async fn outbox_of(&self, conference_id: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!("{SELECT} WHERE conference_id = $1 ORDER BY id");
        on_read!(self, c => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(conference_id)
                .fetch_all(c)
                .await;
            rows.ctx(|| format!("listing the outbox of conference {conference_id}"))
                .and_then(|rows| rows.iter().map(entry).collect::<Result<Vec<_>, _>>())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update stored without its spec reads back as the action it was: the parts it is
    /// stored as, with the spec's JSON between them, are serde's own JSON for it.
    #[test]
    fn stored_action_splits_the_action_as_serde_writes_it() {
        let spec = MeetingSpec {
            title: "Weekly \"sync\" {x}".to_owned(),
            description: "a\nb".to_owned(),
            start: confsync_core::model::When::Day("2026-12-01".parse().unwrap()),
            end: confsync_core::model::When::Day("2026-12-02".parse().unwrap()),
            time_zone: Some("Europe/Berlin".to_owned()),
            recurrence: vec!["RRULE:FREQ=WEEKLY".to_owned()],
            attendees: vec!["bob@example.com".to_owned()],
            organizer: None,
        };
        let action = Action::Update {
            spec: spec.clone(),
            changes: vec![
                confsync_core::plan::Change::Retitled,
                confsync_core::plan::Change::Rescheduled,
            ],
        };
        let (head, tail) = stored_action(&action, Some(&spec), String::new).unwrap();
        let tail = tail.expect("stored without its spec");
        let whole = format!("{head}{}{tail}", serde_json::to_string(&spec).unwrap());
        assert_eq!(whole, serde_json::to_string(&action).unwrap());
        let other = MeetingSpec {
            title: "other".to_owned(),
            ..spec
        };
        let (json, tail) = stored_action(&action, Some(&other), String::new).unwrap();
        assert_eq!(
            (json, tail),
            (serde_json::to_string(&action).unwrap(), None)
        );
    }
}
