//! The `links` table: what the engine remembers of each conference it manages.
//!
//! The planner's fields are written by [`Store::commit_page`]; two columns belong to the
//! executor and are only written through [`Store::supersede_update_of_deleted_link`] (with
//! [`Store::record_applied`] for tools and tests) and [`Store::record_written_etag`], so a sync
//! pass that read a link before the executor wrote them cannot roll them back.

use std::collections::{BTreeMap, HashSet};

use confsync_core::model::MeetingSpec;
use confsync_core::plan::{Link, Occurrence};
use sqlx::QueryBuilder;

use crate::Store;
use crate::conns::Arg;
use crate::db::{Cols, Tx, on_read, on_tx, on_write};
use crate::error::{Context, StoreError};

/// When a link's meeting ends (unix ms), for choosing what a windowed full sync verifies; None
/// for a series (its last occurrence is not worked out here). An all-day event ends at the
/// start of its end date in UTC plus 14 hours (the latest zone).
fn ends_at(spec: &MeetingSpec) -> Option<i64> {
    if !spec.recurrence.is_empty() {
        return None;
    }
    match spec.end {
        confsync_core::model::When::At(t) => Some(t.timestamp_millis()),
        confsync_core::model::When::Day(d) => d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis() + 14 * 3_600_000),
    }
}

/// The `fingerprint` of a deleted link whose spec the meeting may not have: an update of it
/// was dropped because the event was gone ([`Store::supersede_update_of_deleted_link`]). Not a
/// fingerprint (those are hex), and the next write of the link's spec replaces it.
pub(crate) const UNAPPLIED: &str = "unapplied";

/// Ids per `IN (...)` list: far below SQLite's and Postgres' bind-parameter limits.
const CHUNK: usize = 500;

pub(crate) const SELECT: &str = "SELECT conference_id, provider, calendar_id, event_id, spec_json, fingerprint, \
     applied_fingerprint, last_etag_seen, last_etag_written, occurrences_json, join_url, deleted, updated_at, version FROM links";

/// [`SELECT`] with whether each link's conference has a recreate pending
/// ([`Store::recreating`]), read in the same statement.
const SELECT_WITH_RECREATING: &str = "SELECT conference_id, provider, calendar_id, event_id, spec_json, fingerprint, \
     applied_fingerprint, last_etag_seen, last_etag_written, occurrences_json, join_url, deleted, updated_at, version, \
     EXISTS (SELECT 1 FROM outbox o WHERE o.conference_id = links.conference_id AND o.state = 'pending' \
       AND o.kind = 'recreate') AS recreating FROM links";

/// What a sync page plans from ([`Store::page_links`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageLinks {
    /// The links of the page's events and of the conferences they show.
    pub links: Vec<StoredLink>,
    /// Which of those links' conferences have a recreate pending.
    pub recreating: HashSet<String>,
    /// New conference id -> the conference whose pending recreate made it (recorded before the
    /// event was pointed at it): an event showing the new id before the swap belongs to the
    /// old link, which is in `links`.
    pub recreate_targets: std::collections::HashMap<String, String>,
}

/// A link with the bookkeeping the planner does not see.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLink {
    /// The link as the planner sees it.
    pub link: Link,
    /// `link.spec.fingerprint()`: the spec the meeting has once the outbox has run.
    pub fingerprint: String,
    /// The fingerprint of the last Update that landed at the provider (None: none yet).
    pub applied_fingerprint: Option<String>,
    /// Last change to the row (unix ms).
    pub updated_at: i64,
    /// Bumped by every write of the planner's fields: a writer that read the link at this
    /// version writes it back only if it is still this one ([`LinkBase::Version`]).
    pub version: i64,
}

impl StoredLink {
    /// The meeting may not have this deleted link's spec: an update of it was dropped while
    /// the event was gone ([`UNAPPLIED`]). Bringing the event back sends its spec.
    pub fn unapplied(&self) -> bool {
        self.fingerprint == UNAPPLIED
    }
}

/// What a writer knows of the link it is about to write: the write happens only if that is
/// still true, else it fails with [`StoreError::Stale`] and the writer plans again from what is
/// stored now. No read-modify-write of a link is unconditional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkBase {
    /// The conference had no link: the write inserts one, and fails if one exists by now.
    New,
    /// The link was read at this version: the write fails if it changed since.
    Version(i64),
}

pub(crate) fn from_row(row: &impl Cols) -> Result<StoredLink, StoreError> {
    let decode = |e: sqlx::Error| StoreError::from_sqlx("reading a link row".to_owned(), e);
    let conference_id: String = row.col("conference_id").map_err(decode)?;
    let spec_json: String = row.col("spec_json").map_err(decode)?;
    let occurrences_json: String = row.col("occurrences_json").map_err(decode)?;
    let spec: MeetingSpec = serde_json::from_str(&spec_json)
        .ctx(|| format!("link of conference {conference_id}, spec_json"))?;
    let occurrences: BTreeMap<String, Occurrence> = serde_json::from_str(&occurrences_json)
        .ctx(|| format!("link of conference {conference_id}, occurrences_json"))?;
    Ok(StoredLink {
        link: Link {
            provider: row.col("provider").map_err(decode)?,
            calendar_id: row.col("calendar_id").map_err(decode)?,
            event_id: row.col("event_id").map_err(decode)?,
            spec,
            last_etag_seen: row.col("last_etag_seen").map_err(decode)?,
            last_etag_written: row.col("last_etag_written").map_err(decode)?,
            occurrences,
            join_url: row.col("join_url").map_err(decode)?,
            deleted: row.col("deleted").map_err(decode)?,
            conference_id,
        },
        fingerprint: row.col("fingerprint").map_err(decode)?,
        applied_fingerprint: row.col("applied_fingerprint").map_err(decode)?,
        updated_at: row.col("updated_at").map_err(decode)?,
        version: row.col("version").map_err(decode)?,
    })
}

/// Link rows, each with its `recreating` column when read with [`SELECT_WITH_RECREATING`]
/// (`recreating`; else false).
fn flagged_rows<'r, R: Cols + 'r>(
    rows: impl Iterator<Item = &'r R>,
    recreating: bool,
) -> Result<Vec<(StoredLink, bool)>, StoreError> {
    rows.map(|row| {
        let flag = recreating
            && row
                .col::<bool>("recreating")
                .map_err(|e| StoreError::from_sqlx("reading a link row".to_owned(), e))?;
        Ok((from_row(row)?, flag))
    })
    .collect()
}

/// Writes a link, keyed by conference id (a link that moved calendars changes its calendar and
/// event in place), if `base` still holds: [`LinkBase::New`] inserts and fails if the
/// conference has a link by now, [`LinkBase::Version`] updates only that version. Answers the
/// version written. `applied_fingerprint` is never touched, and `last_etag_written` is only set
/// when the row has none: both belong to the executor.
pub(crate) async fn write(
    tx: &mut Tx,
    link: &Link,
    base: LinkBase,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let what = || {
        format!(
            "storing the link of conference {} (calendar {}, event {})",
            link.conference_id, link.calendar_id, link.event_id
        )
    };
    let spec_json = serde_json::to_string(&link.spec).ctx(what)?;
    let occurrences_json = serde_json::to_string(&link.occurrences).ctx(what)?;
    let fingerprint = MeetingSpec::fingerprint_of_json(&spec_json);
    // Both statements take the link's columns as $1..$12, in this order; the update also takes
    // the version read as $13; the meeting's end comes last ($13, $14).
    let (sql, read_version, written) = match base {
        LinkBase::New => (
            "INSERT INTO links (conference_id, provider, calendar_id, event_id, spec_json, fingerprint, last_etag_seen, \
                 last_etag_written, occurrences_json, deleted, created_at, updated_at, join_url, version, ends_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, 1, $13) \
             ON CONFLICT (conference_id) DO NOTHING",
            None,
            1,
        ),
        LinkBase::Version(version) => (
            "UPDATE links SET provider = $2, calendar_id = $3, event_id = $4, spec_json = $5, fingerprint = $6, \
                 last_etag_seen = $7, last_etag_written = COALESCE(last_etag_written, $8), \
                 occurrences_json = $9, deleted = $10, updated_at = $11, join_url = $12, version = version + 1, \
                 ends_at = $14 \
             WHERE conference_id = $1 AND version = $13",
            Some(version),
            version + 1,
        ),
    };
    if let Tx::Sqlite(t) = tx {
        // Sent with the transaction's next statement, followed by the guard that aborts the
        // transaction (as `StoreError::Stale`, see `error.rs`) if it changed no row.
        let mut args = vec![
            Arg::Text(link.conference_id.clone()),
            Arg::Text(link.provider.clone()),
            Arg::Text(link.calendar_id.clone()),
            Arg::Text(link.event_id.clone()),
            Arg::Text(spec_json),
            Arg::Text(fingerprint),
            Arg::OptText(link.last_etag_seen.clone()),
            Arg::OptText(link.last_etag_written.clone()),
            Arg::Text(occurrences_json),
            Arg::Bool(link.deleted),
            Arg::Int(now_ms),
            Arg::OptText(link.join_url.clone()),
        ];
        if let Some(version) = read_version {
            args.push(Arg::Int(version));
        }
        args.push(Arg::OptInt(ends_at(&link.spec)));
        t.defer(sql, args);
        t.defer(
            "INSERT INTO write_guard (landed) VALUES (changes())",
            Vec::new(),
        );
        return Ok(written);
    }
    let done = on_tx!(tx, c => {
        let mut query = sqlx::query(sql)
            .bind(&link.conference_id)
            .bind(&link.provider)
            .bind(&link.calendar_id)
            .bind(&link.event_id)
            .bind(&spec_json)
            .bind(&fingerprint)
            .bind(&link.last_etag_seen)
            .bind(&link.last_etag_written)
            .bind(&occurrences_json)
            .bind(link.deleted)
            .bind(now_ms)
            .bind(&link.join_url);
        if let Some(version) = read_version {
            query = query.bind(version);
        }
        query.bind(ends_at(&link.spec)).execute(c).await.map(|r| r.rows_affected())
    })
    .ctx(what)?;
    if done == 0 {
        return Err(StoreError::Stale {
            what: what(),
            detail: match base {
                LinkBase::New => "the conference has a link already".to_owned(),
                LinkBase::Version(v) => format!("the link changed since version {v} was read"),
            },
        });
    }
    Ok(written)
}

/// Links per batched statement of [`write_many`] (15 bind parameters each).
const WRITE_CHUNK: usize = 200;

/// A link with its encoded columns, for [`write_many`].
struct Encoded<'a> {
    link: &'a Link,
    spec_json: String,
    occurrences_json: String,
    fingerprint: String,
    ends_at: Option<i64>,
}

/// [`write`] for links of DIFFERENT conferences, a few statements for all of them: the whole
/// batch fails with [`StoreError::Stale`] if any one's `base` no longer holds (the caller's
/// transaction is then rolled back, as with [`write`]). Deleted links are written first, then
/// live ones, then new ones, so an event whose conference was replaced within the batch never
/// holds two live links in between (the `links_event` index is unique among live links).
pub(crate) async fn write_many(
    tx: &mut Tx,
    calendar_id: &str,
    links: &[(&Link, LinkBase)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let what = || {
        format!(
            "storing {} links of a sync page of calendar {calendar_id}",
            links.len()
        )
    };
    let mut deleted = Vec::new();
    let mut live = Vec::new();
    let mut new = Vec::new();
    for (link, base) in links {
        let spec_json = serde_json::to_string(&link.spec).ctx(what)?;
        let encoded = Encoded {
            link,
            fingerprint: MeetingSpec::fingerprint_of_json(&spec_json),
            spec_json,
            occurrences_json: serde_json::to_string(&link.occurrences).ctx(what)?,
            ends_at: ends_at(&link.spec),
        };
        match base {
            LinkBase::Version(version) if link.deleted => deleted.push((encoded, *version)),
            LinkBase::Version(version) => live.push((encoded, *version)),
            LinkBase::New => new.push(encoded),
        }
    }
    for group in [&deleted, &live] {
        for chunk in crate::db::chunks(&group[..], WRITE_CHUNK) {
            let done = on_tx!(tx, c => {
                let mut query = QueryBuilder::new(
                    "UPDATE links SET provider = v.column2, calendar_id = v.column3, event_id = v.column4, \
                         spec_json = v.column5, fingerprint = v.column6, last_etag_seen = v.column7, \
                         last_etag_written = COALESCE(links.last_etag_written, v.column8), \
                         occurrences_json = v.column9, deleted = v.column10, updated_at = ",
                );
                query
                    .push_bind(now_ms)
                    .push(
                        ", join_url = v.column11, version = links.version + 1, ends_at = v.column13 \
                         FROM (",
                    )
                    .push_values(chunk, |mut row, (e, version)| {
                        row.push_bind(&e.link.conference_id)
                            .push_bind(&e.link.provider)
                            .push_bind(&e.link.calendar_id)
                            .push_bind(&e.link.event_id)
                            .push_bind(&e.spec_json)
                            .push_bind(&e.fingerprint)
                            .push_bind(&e.link.last_etag_seen)
                            .push_bind(&e.link.last_etag_written)
                            .push_bind(&e.occurrences_json)
                            .push("CAST(")
                            .push_bind_unseparated(e.link.deleted)
                            .push_unseparated(" AS BOOLEAN)")
                            .push_bind(&e.link.join_url)
                            .push("CAST(")
                            .push_bind_unseparated(*version)
                            .push_unseparated(" AS BIGINT)")
                            .push("CAST(")
                            .push_bind_unseparated(e.ends_at)
                            .push_unseparated(" AS BIGINT)");
                    })
                    .push(") AS v WHERE links.conference_id = v.column1 AND links.version = v.column12");
                query
                    .build()
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })
            .ctx(what)?;
            all_written(
                done,
                chunk.len(),
                what,
                "links changed since they were read",
            )?;
        }
    }
    for chunk in crate::db::chunks(&new[..], WRITE_CHUNK) {
        let done = on_tx!(tx, c => {
            let mut query = QueryBuilder::new(
                "INSERT INTO links (conference_id, provider, calendar_id, event_id, spec_json, fingerprint, \
                     last_etag_seen, last_etag_written, occurrences_json, deleted, created_at, updated_at, join_url, \
                     version, ends_at) ",
            );
            query
                .push_values(chunk, |mut row, e| {
                    row.push_bind(&e.link.conference_id)
                        .push_bind(&e.link.provider)
                        .push_bind(&e.link.calendar_id)
                        .push_bind(&e.link.event_id)
                        .push_bind(&e.spec_json)
                        .push_bind(&e.fingerprint)
                        .push_bind(&e.link.last_etag_seen)
                        .push_bind(&e.link.last_etag_written)
                        .push_bind(&e.occurrences_json)
                        .push_bind(e.link.deleted)
                        .push_bind(now_ms)
                        .push_bind(now_ms)
                        .push_bind(&e.link.join_url)
                        .push("1")
                        .push_bind(e.ends_at);
                })
                .push(" ON CONFLICT (conference_id) DO NOTHING");
            query
                .build()
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(what)?;
        all_written(
            done,
            chunk.len(),
            what,
            "new links' conferences have a link already",
        )?;
    }
    Ok(())
}

/// [`StoreError::Stale`] unless a batched write of `rows` links wrote each (`done` of them did):
/// the others were not what their writer read (`why`).
fn all_written(
    done: u64,
    rows: usize,
    what: impl Fn() -> String,
    why: &str,
) -> Result<(), StoreError> {
    if done < rows as u64 {
        return Err(StoreError::Stale {
            what: what(),
            detail: format!("{} of {rows} {why}", rows as u64 - done),
        });
    }
    Ok(())
}

/// The link of a conference, read inside a transaction.
pub(crate) async fn get(
    tx: &mut Tx,
    conference_id: &str,
) -> Result<Option<StoredLink>, StoreError> {
    let sql = format!("{SELECT} WHERE conference_id = $1");
    on_tx!(tx, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conference_id)
            .fetch_optional(c)
            .await;
        row.ctx(|| format!("loading the link of conference {conference_id}"))
            .and_then(|row| row.as_ref().map(from_row).transpose())
    })
}

/// The live links of an event, read inside a transaction.
pub(crate) async fn live_of_event(
    tx: &mut Tx,
    calendar_id: &str,
    event_id: &str,
) -> Result<Vec<StoredLink>, StoreError> {
    let sql = format!("{SELECT} WHERE calendar_id = $1 AND event_id = $2 AND NOT deleted");
    on_tx!(tx, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(calendar_id)
            .bind(event_id)
            .fetch_all(c)
            .await;
        rows.ctx(|| format!("loading the live links of event {event_id} (calendar {calendar_id})"))
            .and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
    })
}

/// Marks a link deleted (inside a transaction).
pub(crate) async fn mark_deleted(
    tx: &mut Tx,
    conference_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE links SET deleted = TRUE, updated_at = $2, version = version + 1 WHERE conference_id = $1",
    )
        .bind(conference_id)
        .bind(now_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("marking the link of conference {conference_id} deleted"))?;
    Ok(())
}

/// Sets the etag of our own last write to the conference's event (inside a transaction).
pub(crate) async fn set_written_etag(
    tx: &mut Tx,
    conference_id: &str,
    etag: &str,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE links SET last_etag_written = $2 WHERE conference_id = $1")
        .bind(conference_id)
        .bind(etag)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .ctx(|| format!("recording the written etag of conference {conference_id}"))?;
    Ok(())
}

impl Store {
    /// The links a page of `calendar_id` may consult: that calendar's links of `event_ids`, plus
    /// links anywhere carrying one of `conference_ids` (an event moved here from another
    /// calendar).
    ///
    /// An event holds at most one live link, but may also hold deleted ones (its conference was
    /// replaced): for each event, only its live link is returned when it has one, else its most
    /// recently updated deleted one (a tombstone must see that the meeting is already deleted).
    /// Each link appears once.
    pub async fn links(
        &self,
        calendar_id: &str,
        event_ids: &[String],
        conference_ids: &[String],
    ) -> Result<Vec<Link>, StoreError> {
        Ok(self
            .link_records(calendar_id, event_ids, conference_ids)
            .await?
            .into_iter()
            .map(|s| s.link)
            .collect())
    }

    /// [`Store::links`] with each link's bookkeeping (its version, for a conditional write).
    pub async fn link_records(
        &self,
        calendar_id: &str,
        event_ids: &[String],
        conference_ids: &[String],
    ) -> Result<Vec<StoredLink>, StoreError> {
        let rows = self
            .flagged_link_records(calendar_id, event_ids, conference_ids, false)
            .await?;
        Ok(rows.into_iter().map(|(stored, _)| stored).collect())
    }

    /// What a sync page plans from, in one read per chunk of ids: [`Store::link_records`], and
    /// which of those links' conferences have a recreate pending ([`Store::recreating`]). A
    /// conference id no link has may be the meeting a pending recreate made
    /// ([`Store::record_recreate_target`]) and the event already shows, before the links are
    /// swapped: the link being recreated is loaded too, and named in
    /// [`PageLinks::recreate_targets`] (one more read, only for ids no link has).
    pub async fn page_links(
        &self,
        calendar_id: &str,
        event_ids: &[String],
        conference_ids: &[String],
    ) -> Result<PageLinks, StoreError> {
        let rows = self
            .flagged_link_records(calendar_id, event_ids, conference_ids, true)
            .await?;
        let mut page = PageLinks::default();
        for (stored, recreating) in rows {
            if recreating {
                page.recreating.insert(stored.link.conference_id.clone());
            }
            page.links.push(stored);
        }
        let known: HashSet<&str> = page
            .links
            .iter()
            .map(|s| s.link.conference_id.as_str())
            .collect();
        let unknown: Vec<&String> = conference_ids
            .iter()
            .filter(|id| !known.contains(id.as_str()))
            .collect();
        if unknown.is_empty() {
            return Ok(page);
        }
        let what = || format!("loading the recreates behind conferences of calendar {calendar_id}");
        let mut targets = Vec::new();
        for chunk in crate::db::chunks(&unknown, CHUNK) {
            let rows: Vec<(String, String)> = match &self.db {
                crate::db::Db::Postgres { pool, .. } => sqlx::query_as(
                    "SELECT recreate_into, conference_id FROM outbox \
                     WHERE recreate_into = ANY($1) AND state = 'pending' AND kind = 'recreate'",
                )
                .bind(chunk)
                .fetch_all(pool)
                .await
                .ctx(what)?,
                crate::db::Db::Sqlite { reader, .. } => {
                    let mut query = QueryBuilder::new(
                        "SELECT recreate_into, conference_id FROM outbox WHERE recreate_into IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(") AND state = 'pending' AND kind = 'recreate'");
                    query.build_query_as().fetch_all(reader).await.ctx(what)?
                }
            };
            targets.extend(rows);
        }
        if targets.is_empty() {
            return Ok(page);
        }
        let recreated: Vec<&String> = targets
            .iter()
            .map(|(_, old)| old)
            .filter(|old| !known.contains(old.as_str()))
            .collect();
        let extra = self.by_conference(&recreated, true, what).await?;
        drop(known);
        for (stored, _) in extra {
            page.recreating.insert(stored.link.conference_id.clone());
            page.links.push(stored);
        }
        page.recreate_targets.extend(targets);
        Ok(page)
    }

    /// [`Store::link_records`], each link with whether its conference has a recreate pending
    /// when `recreating` asks for it (read by the same statement; else false).
    async fn flagged_link_records(
        &self,
        calendar_id: &str,
        event_ids: &[String],
        conference_ids: &[String],
        recreating: bool,
    ) -> Result<Vec<(StoredLink, bool)>, StoreError> {
        let what = || format!("loading links of calendar {calendar_id}");
        let select = if recreating {
            SELECT_WITH_RECREATING
        } else {
            SELECT
        };
        let mut found: BTreeMap<String, (StoredLink, bool)> = BTreeMap::new();
        let mut by_event: BTreeMap<String, (StoredLink, bool)> = BTreeMap::new();
        for chunk in crate::db::chunks(event_ids, CHUNK) {
            let rows = match &self.db {
                // Postgres: one array parameter, so the lookup is an index scan of
                // (calendar_id, event_id) per id; a list of hundreds of parameters is planned as
                // a linear search of the list for every row.
                crate::db::Db::Postgres { pool, .. } => {
                    let sql = format!("{select} WHERE calendar_id = $1 AND event_id = ANY($2)");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(calendar_id)
                        .bind(chunk)
                        .fetch_all(pool)
                        .await;
                    flagged_rows(rows.ctx(what)?.iter(), recreating)?
                }
                crate::db::Db::Sqlite { reader, .. } => {
                    let mut query = QueryBuilder::new(select);
                    query
                        .push(" WHERE calendar_id = ")
                        .push_bind(calendar_id)
                        .push(" AND event_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(")");
                    let rows = query.build().fetch_all(reader).await;
                    flagged_rows(rows.ctx(what)?.iter(), recreating)?
                }
            };
            for stored in rows {
                // Live beats deleted; among equals the most recently updated wins.
                let rank = |(s, _): &(StoredLink, bool)| (!s.link.deleted, s.updated_at);
                let better = by_event
                    .get(&stored.0.link.event_id)
                    .is_none_or(|held| rank(&stored) > rank(held));
                if better {
                    by_event.insert(stored.0.link.event_id.clone(), stored);
                }
            }
        }
        for stored in by_event.into_values() {
            found.insert(stored.0.link.conference_id.clone(), stored);
        }
        // Conferences whose link the event lookup found need no second read.
        let conference_ids: Vec<&String> = conference_ids
            .iter()
            .filter(|id| !found.contains_key(id.as_str()))
            .collect();
        for stored in self
            .by_conference(&conference_ids, recreating, what)
            .await?
        {
            found
                .entry(stored.0.link.conference_id.clone())
                .or_insert(stored);
        }
        Ok(found.into_values().collect())
    }

    async fn by_conference(
        &self,
        conference_ids: &[&String],
        recreating: bool,
        what: impl Fn() -> String + Copy,
    ) -> Result<Vec<(StoredLink, bool)>, StoreError> {
        let select = if recreating {
            SELECT_WITH_RECREATING
        } else {
            SELECT
        };
        let mut found = Vec::with_capacity(conference_ids.len());
        for chunk in crate::db::chunks(conference_ids, CHUNK) {
            let rows = match &self.db {
                crate::db::Db::Postgres { pool, .. } => {
                    let sql = format!("{select} WHERE conference_id = ANY($1)");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(chunk)
                        .fetch_all(pool)
                        .await;
                    flagged_rows(rows.ctx(what)?.iter(), recreating)?
                }
                crate::db::Db::Sqlite { reader, .. } => {
                    let mut query = QueryBuilder::new(select);
                    query.push(" WHERE conference_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    let rows = query.build().fetch_all(reader).await;
                    flagged_rows(rows.ctx(what)?.iter(), recreating)?
                }
            };
            found.extend(rows);
        }
        Ok(found)
    }

    /// The link of a conference, wherever it is.
    pub async fn link(&self, conference_id: &str) -> Result<Option<Link>, StoreError> {
        Ok(self.link_record(conference_id).await?.map(|s| s.link))
    }

    /// The link of a conference with its bookkeeping.
    pub async fn link_record(&self, conference_id: &str) -> Result<Option<StoredLink>, StoreError> {
        let sql = format!("{SELECT} WHERE conference_id = $1");
        on_read!(self, c => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(conference_id)
                .fetch_optional(c)
                .await;
            row.ctx(|| format!("loading the link of conference {conference_id}"))
                .and_then(|row| row.as_ref().map(from_row).transpose())
        })
    }

    /// The events of `calendar_id`'s live links whose meeting may end at or after `after_ms`
    /// (series and links of unknown end included): what a full sync listing from a window
    /// starting there must verify when it does not list them. One query.
    pub async fn link_event_ids_ending_after(
        &self,
        calendar_id: &str,
        after_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        on_read!(self, c => sqlx::query_scalar(
            "SELECT event_id FROM links WHERE calendar_id = $1 AND NOT deleted \
               AND (ends_at IS NULL OR ends_at >= $2) ORDER BY event_id",
        )
        .bind(calendar_id)
        .bind(after_ms)
        .fetch_all(c)
        .await)
        .ctx(|| format!("listing linked events of calendar {calendar_id}"))
    }

    /// How many links the store keeps, live or deleted (size checks).
    pub async fn link_rows(&self) -> Result<i64, StoreError> {
        on_read!(self, c => sqlx::query_scalar("SELECT COUNT(*) FROM links")
            .fetch_one(c)
            .await)
        .ctx(|| "counting links".to_owned())
    }

    /// The event ids of the calendar's live links, sorted (a full sync without a window verifies
    /// those it did not see).
    pub async fn link_event_ids(&self, calendar_id: &str) -> Result<Vec<String>, StoreError> {
        on_read!(self, c => sqlx::query_scalar(
            "SELECT event_id FROM links WHERE calendar_id = $1 AND NOT deleted ORDER BY event_id",
        )
        .bind(calendar_id)
        .fetch_all(c)
        .await)
        .ctx(|| format!("listing linked events of calendar {calendar_id}"))
    }

    /// Records that an Update with this spec fingerprint landed at the provider.
    pub async fn record_applied(
        &self,
        conference_id: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let done = on_write!(self, c => sqlx::query(
            "UPDATE links SET applied_fingerprint = $2, updated_at = $3 WHERE conference_id = $1",
        )
        .bind(conference_id)
        .bind(fingerprint)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("recording the applied spec of conference {conference_id}"))?;
        if done == 0 {
            return Err(StoreError::not_found(format!(
                "recording the applied spec of conference {conference_id}: no link"
            )));
        }
        Ok(())
    }

    /// Records the etag of our own write-back to the conference's event, so the planner
    /// recognises it as an echo when sync brings it back.
    pub async fn record_written_etag(
        &self,
        conference_id: &str,
        etag: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let done = on_write!(self, c => sqlx::query(
            "UPDATE links SET last_etag_written = $2, updated_at = $3 WHERE conference_id = $1",
        )
        .bind(conference_id)
        .bind(etag)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .ctx(|| format!("recording the written etag of conference {conference_id}"))?;
        if done == 0 {
            return Err(StoreError::not_found(format!(
                "recording the written etag of conference {conference_id}: no link"
            )));
        }
        Ok(())
    }
}
