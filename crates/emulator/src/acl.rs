//! Calendar sharing: access control lists (`acl.list/get/insert/update/patch/delete`) and the
//! access roles they grant.
//!
//! The model follows the discovery document's `AclRule` / `Acl` schemas and `resources.acl`:
//! - A calendar's ACL holds rules keyed by rule id `"{scope.type}:{scope.value}"` (`"default"`
//!   for the public scope). Emails and domains are stored lowercased, and rule ids given in a
//!   path are lowercased after the `type:` prefix, so they compare case-insensitively.
//! - Roles, weakest first: none, freeBusyReader, reader, writerWithoutPrivateAccess, writer,
//!   owner. A user's effective role is the strongest of their `user:` rule, their email
//!   domain's `domain:` rule and the `default` rule (rules only add access). `group:` rules are
//!   stored and listed but grant nothing: the emulator has no group membership.
//! - The calendar's data owner ("A calendar has a single data owner, but can have multiple
//!   users with owner role") always has the rule `user:{owner}` with role owner. It cannot be
//!   deleted or downgraded: 403 `cannotChangeOwnAcl` when the owner tries it (Google refuses
//!   any change to the caller's own rule with that reason, "Cannot change your own access
//!   level"), 403 `cannotChangeOwnerAcl` when another owner does. The discovery document names
//!   no error for this; the reasons are the ones GAM (a Google Workspace admin tool) handles,
//!   the 403 status is the safe reading (a refusal, not a malformed request).
//!
//! Who may do what (the AclRule.role descriptions: writer "Provides read access to the
//! calendar's ACLs", owner "the additional ability to modify access levels of other users"):
//! - no role (or only `none`): the calendar does not exist for the user (404 `notFound`);
//! - freeBusyReader: the calendar is visible (`calendars.get`, the calendar list) but its
//!   events are not (403 `requiredAccessLevel`; Google's free/busy-only view of events is not
//!   emulated);
//! - reader: reads events (`events.list/get/instances/watch`);
//! - writerWithoutPrivateAccess, writer: also write events (insert, import, update, patch,
//!   delete, move). Hiding the details of private events from readers and
//!   writerWithoutPrivateAccess is not emulated;
//! - writer: also reads the ACL (`acl.list`, `acl.get`);
//! - owner: also changes it (`acl.insert/update/patch/delete`).
//!
//! A user who can see the calendar but lacks the role gets Google's observed answer: 403,
//! domain `calendar`, reason `requiredAccessLevel`, "You need to have writer access to this
//! calendar." (see [`ApiError::required_access_level`]).
//!
//! The calendar list: a `user:` rule with role freeBusyReader or above puts the calendar into
//! that user's calendar list (accessRole = the user's effective role, never `primary`); removing
//! the rule (or setting it to `none`) marks the entry deleted. Each change is a calendar list
//! change, so an incremental calendarList sync sees it. `domain:` and `default` rules grant
//! access by calendar id but add no list entries (a user subscribes to those themselves, which
//! the emulator does not model).
//!
//! `acl.list` pages like `calendarList.list` (`maxResults` 100 by default, 250 at most) and
//! supports `showDeleted` and `syncToken`: deleted rules stay as tombstones listed with role
//! "none" ("Deleted ACLs are represented by role equal to \"none\""). `acl.insert` on a scope
//! that already has a rule replaces its role (the emulator's choice: an upsert). ACL changes do
//! not invalidate the calendar's event sync tokens (Google says it "sometimes" does; the admin
//! API's `expire-sync-tokens` can simulate it, and it expires ACL sync tokens too).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ids::fnv1a;
use crate::list::{bool_param, max_results_param, query_fingerprint, sync_token_with_restrictions};
use crate::schema;
use crate::store::{Calendar, ListEntry, World, normalize_email};
use crate::tokens::{AclSyncToken, Cursor, PageToken};

/// `maxResults` when the client gives none, and the largest page (resources.acl.list).
pub const DEFAULT_MAX_RESULTS: usize = 100;
pub const MAX_RESULTS: usize = 250;

/// AclRule.scope.type values.
pub const SCOPE_TYPES: &[&str] = &["default", "user", "group", "domain"];

/// An access role (AclRule.role), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    None,
    FreeBusyReader,
    Reader,
    WriterWithoutPrivateAccess,
    Writer,
    Owner,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::None,
        Role::FreeBusyReader,
        Role::Reader,
        Role::WriterWithoutPrivateAccess,
        Role::Writer,
        Role::Owner,
    ];

    pub fn parse(role: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == role)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::FreeBusyReader => "freeBusyReader",
            Role::Reader => "reader",
            Role::WriterWithoutPrivateAccess => "writerWithoutPrivateAccess",
            Role::Writer => "writer",
            Role::Owner => "owner",
        }
    }

    /// The access level named in a `requiredAccessLevel` message.
    fn level(self) -> &'static str {
        match self {
            Role::None | Role::FreeBusyReader | Role::Reader => "reader",
            Role::WriterWithoutPrivateAccess | Role::Writer => "writer",
            Role::Owner => "owner",
        }
    }
}

/// One access rule.
#[derive(Debug, Clone)]
pub struct AclRule {
    pub scope_type: String,
    /// The lowercased email or domain; None for the `default` scope.
    pub scope_value: Option<String>,
    pub role: Role,
    /// The calendar's ACL change number of the rule's last change.
    pub seq: u64,
    /// Deleted: kept for `showDeleted` / `syncToken` listings, listed with role "none".
    pub deleted: bool,
}

impl AclRule {
    pub fn new(scope_type: &str, scope_value: Option<String>, role: Role, seq: u64) -> Self {
        AclRule {
            scope_type: scope_type.to_owned(),
            scope_value,
            role,
            seq,
            deleted: false,
        }
    }
}

/// The rule id of a scope: `"{type}:{value}"`, `"default"` for the public scope.
pub fn rule_id_of(scope_type: &str, scope_value: Option<&str>) -> String {
    match scope_value {
        Some(value) if scope_type != "default" => format!("{scope_type}:{value}"),
        _ => "default".to_owned(),
    }
}

/// A rule id as given in a path, with its value lowercased (emails and domains compare
/// case-insensitively).
pub fn normalize_rule_id(rule_id: &str) -> String {
    match rule_id.split_once(':') {
        Some((kind, value)) => format!("{kind}:{}", value.trim().to_ascii_lowercase()),
        None => rule_id.to_owned(),
    }
}

impl Calendar {
    /// The user's effective role: the data owner is `owner`; anyone else gets the strongest of
    /// the rules that match them (`user:`, `domain:`, `default`).
    pub fn role_of(&self, user: &str) -> Role {
        let user = user.trim().to_ascii_lowercase();
        if user == self.owner {
            return Role::Owner;
        }
        let mut ids = vec![format!("user:{user}"), "default".to_owned()];
        if let Some((_, domain)) = user.rsplit_once('@') {
            ids.push(format!("domain:{domain}"));
        }
        ids.iter()
            .filter_map(|id| self.acl.get(id))
            .filter(|r| !r.deleted)
            .map(|r| r.role)
            .max()
            .unwrap_or(Role::None)
    }

    /// The AclRule resource.
    pub fn rule_json(&self, rule_id: &str, rule: &AclRule) -> Value {
        let mut scope = json!({"type": rule.scope_type});
        if let Some(value) = &rule.scope_value {
            scope["value"] = json!(value);
        }
        let etag = fnv1a(&[
            self.id.as_bytes(),
            rule_id.as_bytes(),
            &rule.seq.to_be_bytes(),
        ]);
        let role = if rule.deleted { Role::None } else { rule.role };
        json!({
            "kind": "calendar#aclRule",
            "etag": format!("\"{etag}\""),
            "id": rule_id,
            "scope": scope,
            "role": role.as_str(),
        })
    }
}

/// A parsed `acl.list` query.
#[derive(Debug, Clone)]
pub struct AclQuery {
    pub max_results: usize,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub show_deleted: Option<bool>,
    /// Binds page tokens to the user, calendar and query they came from.
    pub fingerprint: u64,
}

impl AclQuery {
    pub fn parse(user: &str, calendar: &str, params: &[(String, String)]) -> ApiResult<AclQuery> {
        let mut q = AclQuery {
            max_results: DEFAULT_MAX_RESULTS,
            page_token: None,
            sync_token: None,
            show_deleted: None,
            fingerprint: 0,
        };
        for (name, value) in params {
            let (name, value) = (name.as_str(), value.as_str());
            match name {
                "maxResults" => q.max_results = max_results_param(name, value, MAX_RESULTS)?,
                "pageToken" => q.page_token = Some(value.to_owned()),
                "syncToken" => q.sync_token = Some(value.to_owned()),
                "showDeleted" => q.show_deleted = Some(bool_param(name, value)?),
                _ => {}
            }
        }
        q.fingerprint = query_fingerprint(&[b"acl", user.as_bytes(), calendar.as_bytes()], params);
        // syncToken: "it is not allowed to set showDeleted to False".
        if q.sync_token.is_some() && q.show_deleted == Some(false) {
            return Err(sync_token_with_restrictions());
        }
        Ok(q)
    }
}

/// What an acl.insert/update/patch body says.
struct RuleInput {
    role: Option<Role>,
    /// (type, lowercased value; None for `default`)
    scope: Option<(String, Option<String>)>,
}

fn invalid_scope_value(value: &str) -> ApiError {
    ApiError::new(
        400,
        "global",
        "invalidScopeValue",
        format!("Invalid scope value: \"{value}\""),
    )
    .at("parameter", "scope.value")
}

/// Validates an AclRule body; `scope_required` for insert and update ("required" annotations of
/// AclRule.scope and scope.type in the discovery document).
fn parse_rule(body: &Value, scope_required: bool) -> ApiResult<RuleInput> {
    schema::validate("AclRule", body)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::parse_error(
            "the request body must be a JSON object",
        ));
    };
    let present = |o: &Map<String, Value>, key: &str| o.get(key).filter(|v| !v.is_null()).cloned();
    let role = match present(obj, "role") {
        None => None,
        Some(v) => {
            let name = v.as_str().unwrap_or_default();
            let role = Role::parse(name).ok_or_else(|| {
                let allowed: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                ApiError::invalid(format!(
                    "Invalid value for role: \"{name}\" (expected one of {})",
                    allowed.join(", ")
                ))
                .at("parameter", "role")
            })?;
            Some(role)
        }
    };
    let scope = match present(obj, "scope") {
        None if scope_required => return Err(ApiError::required("scope")),
        None => None,
        Some(scope) => {
            let scope = scope.as_object().cloned().unwrap_or_default();
            let kind = present(&scope, "type")
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or_else(|| ApiError::required("scope.type"))?;
            if !SCOPE_TYPES.contains(&kind.as_str()) {
                return Err(ApiError::invalid(format!(
                    "Invalid value for scope.type: \"{kind}\" (expected one of {})",
                    SCOPE_TYPES.join(", ")
                ))
                .at("parameter", "scope.type"));
            }
            let raw = present(&scope, "value")
                .and_then(|v| v.as_str().map(str::to_owned))
                .filter(|v| !v.trim().is_empty());
            // AclRule.scope.value: "Omitted for type \"default\"." A value sent with it is
            // ignored.
            let value = match kind.as_str() {
                "default" => None,
                _ => {
                    let raw = raw.ok_or_else(|| ApiError::required("scope.value"))?;
                    let value = if kind == "domain" {
                        let domain = raw.trim().to_ascii_lowercase();
                        let valid = domain.contains('.')
                            && !domain.starts_with('.')
                            && !domain
                                .chars()
                                .any(|c| c.is_whitespace() || "@/:".contains(c));
                        valid.then_some(domain)
                    } else {
                        normalize_email(&raw).ok()
                    };
                    Some(value.ok_or_else(|| invalid_scope_value(&raw))?)
                }
            };
            Some((kind, value))
        }
    };
    Ok(RuleInput { role, scope })
}

/// The public scope grants reading at most. Unsure: Google refuses more (GAM handles a reason
/// `illegalAccessRoleForDefault`), status and message are the emulator's.
fn check_role_for_scope(scope_type: &str, role: Role) -> ApiResult<()> {
    if scope_type == "default" && role > Role::Reader {
        return Err(ApiError::new(
            400,
            "calendar",
            "illegalAccessRoleForDefault",
            format!(
                "The public (default) scope cannot be given the role {}: at most reader.",
                role.as_str()
            ),
        )
        .at("parameter", "role"));
    }
    Ok(())
}

/// The data owner's rule never changes; nobody changes their own rule. `new_role` None is a
/// deletion; setting the role a rule already has is not a change.
fn check_protected(
    cal: &Calendar,
    caller: &str,
    rule_id: &str,
    new_role: Option<Role>,
) -> ApiResult<()> {
    let current = cal.acl.get(rule_id).filter(|r| !r.deleted).map(|r| r.role);
    if new_role.is_some() && new_role == current {
        return Ok(());
    }
    if rule_id == format!("user:{}", cal.owner) {
        return Err(if caller == cal.owner {
            ApiError::cannot_change_own_acl()
        } else {
            ApiError::cannot_change_owner_acl()
        });
    }
    if rule_id == format!("user:{caller}") {
        return Err(ApiError::cannot_change_own_acl());
    }
    Ok(())
}

impl World {
    /// Resolves `primary` (the caller's own primary calendar) and answers the calendar with the
    /// caller's effective role; 404 when the caller has no access at all.
    pub fn calendar_access(&self, user: &str, param: &str) -> ApiResult<(&Calendar, Role)> {
        let id = if param == "primary" { user } else { param };
        let cal = self.calendars.get(id).ok_or_else(ApiError::not_found)?;
        match cal.role_of(user) {
            Role::None => Err(ApiError::not_found()),
            role => Ok((cal, role)),
        }
    }

    /// The calendar's id when the caller has at least `needed`: 404 when they cannot see the
    /// calendar, 403 `requiredAccessLevel` when they can but their role is weaker.
    pub fn calendar_with_role(&self, user: &str, param: &str, needed: Role) -> ApiResult<String> {
        let (cal, role) = self.calendar_access(user, param)?;
        if role < needed {
            return Err(ApiError::required_access_level(needed.level()));
        }
        Ok(cal.id.clone())
    }

    /// For calendar metadata (`calendars.get`): any role that makes the calendar visible.
    pub fn calendar_visible(&self, user: &str, param: &str) -> ApiResult<String> {
        self.calendar_with_role(user, param, Role::FreeBusyReader)
    }

    /// For reading events: `reader` or above.
    pub fn calendar_for_read(&self, user: &str, param: &str) -> ApiResult<String> {
        self.calendar_with_role(user, param, Role::Reader)
    }

    /// For writing events: `writerWithoutPrivateAccess` or above.
    pub fn calendar_for_write(&self, user: &str, param: &str) -> ApiResult<String> {
        self.calendar_with_role(user, param, Role::WriterWithoutPrivateAccess)
    }

    /// `acl.list`. Returns the response body.
    pub fn acl_list(
        &self,
        user: &str,
        param: &str,
        query: &AclQuery,
        now: DateTime<Utc>,
        sync_token_max_age: Option<Duration>,
    ) -> ApiResult<String> {
        let id = self.calendar_with_role(user, param, Role::Writer)?;
        let cal = self.calendar(&id)?;
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
                let parsed: AclSyncToken = self
                    .signer
                    .open(token)
                    .ok_or_else(ApiError::full_sync_required)?;
                let too_old = sync_token_max_age
                    .is_some_and(|age| now.timestamp() - parsed.issued > age.num_seconds());
                if parsed.acl_cal != cal.num
                    || parsed.acl_epoch != cal.token_epoch
                    || parsed.acl_seq > cal.acl_seq
                    || too_old
                {
                    return Err(ApiError::full_sync_required());
                }
                Some(parsed.acl_seq)
            }
            None => None,
        };
        let snapshot = page_token.as_ref().map_or(cal.acl_seq, |t| t.snapshot);
        let cursor = page_token.map(|t| t.cursor);
        let entries: Vec<(Cursor, &String, &AclRule)> = match from {
            // Incremental: every rule changed since the token, deletions included, in change
            // order.
            Some(from) => {
                let after = match cursor {
                    Some(Cursor::Seq(seq, _)) => seq,
                    _ => from,
                };
                let mut changed: Vec<(&String, &AclRule)> = cal
                    .acl
                    .iter()
                    .filter(|(_, r)| r.seq > after && r.seq <= snapshot)
                    .collect();
                changed.sort_by_key(|(_, r)| r.seq);
                changed
                    .into_iter()
                    .map(|(id, r)| (Cursor::Seq(r.seq, None), id, r))
                    .collect()
            }
            // Full: by rule id.
            None => {
                let after = match cursor {
                    Some(Cursor::Id(key, _)) => Some(key),
                    _ => None,
                };
                cal.acl
                    .iter()
                    .filter(|(_, r)| !r.deleted || query.show_deleted == Some(true))
                    .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
                    .map(|(id, r)| (Cursor::Id(id.clone(), None), id, r))
                    .collect()
            }
        };
        let more = entries.len() > query.max_results;
        let page: Vec<(Cursor, &String, &AclRule)> =
            entries.into_iter().take(query.max_results).collect();
        let items: Vec<Value> = page.iter().map(|(_, id, r)| cal.rule_json(id, r)).collect();
        let mut body = json!({
            "kind": "calendar#acl",
            "etag": format!("\"{}\"", fnv1a(&[b"acl".as_slice(), cal.id.as_bytes(), &snapshot.to_be_bytes()])),
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
                body["nextSyncToken"] = json!(self.signer.seal(&AclSyncToken {
                    acl_cal: cal.num,
                    acl_epoch: cal.token_epoch,
                    acl_seq: snapshot,
                    issued: now.timestamp(),
                }));
            }
        }
        body["items"] = Value::Array(items);
        Ok(body.to_string())
    }

    /// `acl.get`: the rule (404 `notFound` when the calendar has no such rule).
    pub fn acl_get(&self, user: &str, param: &str, rule_id: &str) -> ApiResult<String> {
        let id = self.calendar_with_role(user, param, Role::Writer)?;
        let cal = self.calendar(&id)?;
        let rule_id = normalize_rule_id(rule_id);
        let rule = cal
            .acl
            .get(&rule_id)
            .filter(|r| !r.deleted)
            .ok_or_else(ApiError::not_found)?;
        Ok(cal.rule_json(&rule_id, rule).to_string())
    }

    /// `acl.insert`: creates the rule for the body's scope (or replaces the role of the rule the
    /// scope already has). Answers the rule.
    pub fn acl_insert(&mut self, user: &str, param: &str, body: Value) -> ApiResult<String> {
        let id = self.calendar_with_role(user, param, Role::Owner)?;
        let input = parse_rule(&body, true)?;
        let role = input.role.ok_or_else(|| ApiError::required("role"))?;
        let (scope_type, scope_value) = input.scope.ok_or_else(|| ApiError::required("scope"))?;
        check_role_for_scope(&scope_type, role)?;
        let rule_id = rule_id_of(&scope_type, scope_value.as_deref());
        check_protected(self.calendar(&id)?, user, &rule_id, Some(role))?;
        self.set_rule(&id, &rule_id, &scope_type, scope_value, role)
    }

    /// `acl.update` (PUT; `scope` required and must be the rule's own, `role` kept when
    /// absent) and `acl.patch`. Answers the rule.
    pub fn acl_update(
        &mut self,
        user: &str,
        param: &str,
        rule_id: &str,
        body: Value,
        patch: bool,
    ) -> ApiResult<String> {
        let id = self.calendar_with_role(user, param, Role::Owner)?;
        let input = parse_rule(&body, !patch)?;
        let rule_id = normalize_rule_id(rule_id);
        let cal = self.calendar(&id)?;
        let current = cal
            .acl
            .get(&rule_id)
            .filter(|r| !r.deleted)
            .ok_or_else(ApiError::not_found)?;
        if let Some((kind, value)) = &input.scope
            && rule_id_of(kind, value.as_deref()) != rule_id
        {
            return Err(ApiError::invalid(format!(
                "The scope of rule \"{rule_id}\" cannot be changed (insert a rule for the other scope instead)."
            ))
            .at("parameter", "scope"));
        }
        let role = input.role.unwrap_or(current.role);
        let (scope_type, scope_value) = (current.scope_type.clone(), current.scope_value.clone());
        check_role_for_scope(&scope_type, role)?;
        check_protected(cal, user, &rule_id, Some(role))?;
        self.set_rule(&id, &rule_id, &scope_type, scope_value, role)
    }

    /// `acl.delete`.
    pub fn acl_delete(&mut self, user: &str, param: &str, rule_id: &str) -> ApiResult<()> {
        let id = self.calendar_with_role(user, param, Role::Owner)?;
        let rule_id = normalize_rule_id(rule_id);
        let cal = self.calendar(&id)?;
        if cal.acl.get(&rule_id).is_none_or(|r| r.deleted) {
            return Err(ApiError::not_found());
        }
        check_protected(cal, user, &rule_id, None)?;
        let cal = self
            .calendars
            .get_mut(&id)
            .ok_or_else(ApiError::not_found)?;
        cal.acl_seq += 1;
        let seq = cal.acl_seq;
        if let Some(rule) = cal.acl.get_mut(&rule_id) {
            rule.deleted = true;
            rule.seq = seq;
        }
        self.sync_list_entries(&id);
        Ok(())
    }

    /// Stores a rule (a change only when the role differs or the rule was absent or deleted)
    /// and brings the calendar list entries up to date. Answers the rule.
    fn set_rule(
        &mut self,
        cal_id: &str,
        rule_id: &str,
        scope_type: &str,
        scope_value: Option<String>,
        role: Role,
    ) -> ApiResult<String> {
        let cal = self
            .calendars
            .get_mut(cal_id)
            .ok_or_else(ApiError::not_found)?;
        let unchanged = cal
            .acl
            .get(rule_id)
            .is_some_and(|r| !r.deleted && r.role == role);
        if !unchanged {
            cal.acl_seq += 1;
            let rule = AclRule::new(scope_type, scope_value, role, cal.acl_seq);
            cal.acl.insert(rule_id.to_owned(), rule);
            self.sync_list_entries(cal_id);
        }
        let cal = self.calendar(cal_id)?;
        let rule = cal.acl.get(rule_id).ok_or_else(ApiError::not_found)?;
        Ok(cal.rule_json(rule_id, rule).to_string())
    }

    /// Puts the calendar into (or takes it out of) the list of every user a `user:` rule names,
    /// with the user's effective role as accessRole. Every entry that appears, disappears or
    /// changes its role takes the next list change number.
    fn sync_list_entries(&mut self, cal_id: &str) {
        let Some(cal) = self.calendars.get(cal_id) else {
            return;
        };
        let mut users: BTreeSet<String> = cal.list.keys().cloned().collect();
        users.extend(
            cal.acl
                .values()
                .filter(|r| r.scope_type == "user" && !r.deleted)
                .filter_map(|r| r.scope_value.clone()),
        );
        let changes: Vec<(String, Role)> = users
            .into_iter()
            .filter_map(|user| {
                let wanted = if user == cal.owner {
                    Role::Owner
                } else if cal
                    .acl
                    .get(&format!("user:{user}"))
                    .is_some_and(|r| !r.deleted && r.role >= Role::FreeBusyReader)
                {
                    cal.role_of(&user)
                } else {
                    Role::None
                };
                let current = cal.list.get(&user).map_or(Role::None, |e| e.role);
                (wanted != current).then_some((user, wanted))
            })
            .collect();
        for (user, role) in changes {
            self.list_seq += 1;
            let seq = self.list_seq;
            let Some(cal) = self.calendars.get_mut(cal_id) else {
                return;
            };
            let entry = cal.list.entry(user).or_insert(ListEntry {
                seq,
                hidden: false,
                deleted: false,
                role: Role::None,
            });
            if role == Role::None {
                // Access removed: the entry leaves the list.
                entry.deleted = true;
            } else if entry.role == Role::None {
                // Access (re)granted: the entry (re)enters the list, visible.
                entry.deleted = false;
                entry.hidden = false;
            }
            entry.role = role;
            entry.seq = seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_with_calendar() -> (World, String) {
        let mut world = World::new(1, b"k");
        world.ensure_user("alice@example.com", None).unwrap();
        let id = world
            .create_calendar("alice@example.com", "team", None)
            .unwrap();
        (world, id)
    }

    fn share(world: &mut World, cal: &str, kind: &str, value: Option<&str>, role: &str) {
        let mut scope = json!({"type": kind});
        if let Some(value) = value {
            scope["value"] = json!(value);
        }
        world
            .acl_insert(
                "alice@example.com",
                cal,
                json!({"role": role, "scope": scope}),
            )
            .unwrap();
    }

    #[test]
    fn roles_parse_print_and_order_from_weakest() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Writer"), None);
        assert!(Role::None < Role::FreeBusyReader);
        assert!(Role::Reader < Role::WriterWithoutPrivateAccess);
        assert!(Role::WriterWithoutPrivateAccess < Role::Writer);
        assert!(Role::Writer < Role::Owner);
    }

    #[test]
    fn rule_ids_compare_case_insensitively() {
        assert_eq!(
            normalize_rule_id("user:Bob@Example.COM"),
            "user:bob@example.com"
        );
        assert_eq!(normalize_rule_id("default"), "default");
        assert_eq!(rule_id_of("default", Some("ignored")), "default");
        assert_eq!(
            rule_id_of("domain", Some("example.com")),
            "domain:example.com"
        );
    }

    #[test]
    fn the_effective_role_is_the_strongest_matching_rule() {
        let (mut world, cal) = world_with_calendar();
        share(&mut world, &cal, "user", Some("bob@example.com"), "reader");
        share(&mut world, &cal, "domain", Some("example.com"), "writer");
        share(&mut world, &cal, "group", Some("team@example.com"), "owner");
        share(&mut world, &cal, "default", None, "freeBusyReader");
        let c = world.calendar(&cal).unwrap();
        assert_eq!(c.role_of("alice@example.com"), Role::Owner);
        assert_eq!(c.role_of("BOB@example.com"), Role::Writer);
        assert_eq!(c.role_of("carol@example.com"), Role::Writer);
        // Groups have no members in the emulator; the public rule applies to anyone.
        assert_eq!(c.role_of("team@example.com"), Role::Writer);
        assert_eq!(c.role_of("dave@other.example"), Role::FreeBusyReader);
        // Only the user rule puts the calendar into a list.
        assert!(c.list.contains_key("bob@example.com"));
        assert!(!c.list.contains_key("carol@example.com"));
        assert_eq!(c.list["bob@example.com"].role, Role::Writer);
    }
}
