//! `calendarList.list`: paging and incremental sync of a user's calendar list.
//!
//! As the discovery document describes the method: `maxResults` defaults to 100 entries and a
//! page never holds more than 250; each page carries exactly one of `nextPageToken` and
//! `nextSyncToken`. A sync token returns only entries changed since it was issued, deleted and
//! hidden ones always included (so `showDeleted=false` / `showHidden=false` are refused with it,
//! as are `minAccessRole` and `showOwnOrganizationOnly`), and a token that is no longer valid is
//! a 410. Tokens are sealed like events.list's (see `tokens.rs`), and the last page's sync token
//! stands for the list's change number when the first page was served, so a change made while a
//! client pages is returned by the next incremental call.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::acl::Role;
use crate::error::{ApiError, ApiResult};
use crate::ids::fnv1a;
use crate::list::{bool_param, max_results_param, query_fingerprint, sync_token_with_restrictions};
use crate::store::{Calendar, ListEntry, World};
use crate::tokens::{CalendarListSyncToken, Cursor, PageToken};

/// `maxResults` when the client gives none, and the largest page.
pub const DEFAULT_MAX_RESULTS: usize = 100;
pub const MAX_RESULTS: usize = 250;

const ACCESS_ROLES: &[&str] = &[
    "freeBusyReader",
    "reader",
    "writerWithoutPrivateAccess",
    "writer",
    "owner",
];

/// A parsed `calendarList.list` query.
#[derive(Debug, Clone)]
pub struct CalendarListQuery {
    pub max_results: usize,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub show_deleted: Option<bool>,
    pub show_hidden: Option<bool>,
    pub min_access_role: Option<String>,
    pub own_organization_only: Option<bool>,
    /// Binds page tokens to the user and query they came from.
    pub fingerprint: u64,
}

impl CalendarListQuery {
    pub fn parse(user: &str, params: &[(String, String)]) -> ApiResult<CalendarListQuery> {
        let mut q = CalendarListQuery {
            max_results: DEFAULT_MAX_RESULTS,
            page_token: None,
            sync_token: None,
            show_deleted: None,
            show_hidden: None,
            min_access_role: None,
            own_organization_only: None,
            fingerprint: 0,
        };
        for (name, value) in params {
            let (name, value) = (name.as_str(), value.as_str());
            match name {
                "maxResults" => q.max_results = max_results_param(name, value, MAX_RESULTS)?,
                "pageToken" => q.page_token = Some(value.to_owned()),
                "syncToken" => q.sync_token = Some(value.to_owned()),
                "showDeleted" => q.show_deleted = Some(bool_param(name, value)?),
                "showHidden" => q.show_hidden = Some(bool_param(name, value)?),
                "showOwnOrganizationOnly" => {
                    q.own_organization_only = Some(bool_param(name, value)?)
                }
                "minAccessRole" => {
                    if !ACCESS_ROLES.contains(&value) {
                        return Err(ApiError::invalid(format!(
                            "Invalid value for minAccessRole: \"{value}\""
                        ))
                        .at("parameter", "minAccessRole"));
                    }
                    q.min_access_role = Some(value.to_owned());
                }
                _ => {}
            }
        }
        q.fingerprint = query_fingerprint(&[b"calendarList", user.as_bytes()], params);
        if q.sync_token.is_some()
            && (q.show_deleted == Some(false)
                || q.show_hidden == Some(false)
                || q.min_access_role.is_some()
                || q.own_organization_only.is_some())
        {
            return Err(sync_token_with_restrictions());
        }
        Ok(q)
    }
}

/// The full listing's order: the user's primary calendar first, then by id.
fn order_key(user: &str, cal: &Calendar) -> String {
    format!(
        "{}{}",
        if cal.is_primary_of(user) { '0' } else { '1' },
        cal.id
    )
}

impl World {
    /// `calendarList.list` for `user`. Returns the response body.
    pub fn list_calendar_list(
        &self,
        user: &str,
        query: &CalendarListQuery,
        now: DateTime<Utc>,
        sync_token_max_age: Option<Duration>,
    ) -> ApiResult<String> {
        let page_token = match &query.page_token {
            Some(token) => Some(
                self.signer
                    .open::<PageToken>(token)
                    .filter(|t| t.query == query.fingerprint)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "Invalid pageToken: it is malformed or belongs to a different query.",
                        )
                        .at("parameter", "pageToken")
                    })?,
            ),
            None => None,
        };
        let from = match &query.sync_token {
            Some(token) => {
                let parsed: CalendarListSyncToken = self
                    .signer
                    .open(token)
                    .ok_or_else(ApiError::full_sync_required)?;
                let too_old = sync_token_max_age
                    .is_some_and(|age| now.timestamp() - parsed.issued > age.num_seconds());
                if parsed.user != user || parsed.list_seq > self.list_seq || too_old {
                    return Err(ApiError::full_sync_required());
                }
                Some(parsed.list_seq)
            }
            None => None,
        };
        let snapshot = page_token.as_ref().map_or(self.list_seq, |t| t.snapshot);
        let cursor = page_token.map(|t| t.cursor);
        let cals = self.calendar_list(user);

        let min_role = query.min_access_role.as_deref().and_then(Role::parse);

        // (cursor of the entry, calendar, entry) in listing order.
        let entries: Vec<(Cursor, &Calendar, &ListEntry)> = match from {
            Some(from) => {
                let after = match cursor {
                    Some(Cursor::Seq(seq, _)) => seq,
                    _ => from,
                };
                let mut changed: Vec<(&Calendar, &ListEntry)> = cals
                    .into_iter()
                    .filter(|(_, e)| e.seq > after && e.seq <= snapshot)
                    .collect();
                changed.sort_by_key(|(_, e)| e.seq);
                changed
                    .into_iter()
                    .map(|(c, e)| (Cursor::Seq(e.seq, None), c, e))
                    .collect()
            }
            None => {
                let after = match cursor {
                    Some(Cursor::Id(key, _)) => Some(key),
                    _ => None,
                };
                cals.into_iter()
                    .filter(|(_, e)| {
                        if e.deleted {
                            query.show_deleted == Some(true)
                        } else {
                            !e.hidden || query.show_hidden == Some(true)
                        }
                    })
                    // minAccessRole: "The minimum access role for the user in the returned
                    // entries." (A deleted entry has no role left and stays listed.)
                    .filter(|(_, e)| e.deleted || min_role.is_none_or(|min| e.role >= min))
                    .map(|(c, e)| (Cursor::Id(order_key(user, c), None), c, e))
                    .filter(|(k, _, _)| match (&after, k) {
                        (Some(a), Cursor::Id(k, _)) => k > a,
                        _ => true,
                    })
                    .collect()
            }
        };
        let more = entries.len() > query.max_results;
        let page: Vec<(Cursor, &Calendar, &ListEntry)> =
            entries.into_iter().take(query.max_results).collect();
        let items: Vec<Value> = page
            .iter()
            .map(|(_, c, e)| self.calendar_list_entry(user, c, e))
            .collect();
        let mut body = json!({
            "kind": "calendar#calendarList",
            "etag": format!("\"{}\"", fnv1a(&[user.as_bytes(), &snapshot.to_be_bytes()])),
        });
        match page.last().map(|(k, _, _)| k.clone()).filter(|_| more) {
            Some(last) => {
                body["nextPageToken"] = json!(self.signer.seal(&PageToken {
                    query: query.fingerprint,
                    snapshot,
                    cursor: last,
                }));
            }
            None => {
                body["nextSyncToken"] = json!(self.signer.seal(&CalendarListSyncToken {
                    user: user.to_owned(),
                    list_seq: snapshot,
                    issued: now.timestamp(),
                }));
            }
        }
        body["items"] = Value::Array(items);
        Ok(body.to_string())
    }
}
