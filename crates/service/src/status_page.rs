//! `GET /`: the operator's status page, server-rendered HTML with inline CSS and no JavaScript.
//!
//! It stays small and fast whatever the number of calendars, built on the same bounded queries
//! as `/v1/status`: the totals are COUNT queries (calendars, synced, failing, waiting for a
//! sync, needing re-authorisation, live push channels, outbox depth, failed actions); the worst
//! calendars are [`WORST`] each (synced longest ago, failing longest, needing
//! re-authorisation); the calendars themselves come one page at a time (`?limit=` 1 to 1000,
//! default 100; `?after=` the last id of the previous page, which the "Next page" link
//! carries; `?search=` a part of the id, matched literally, from a GET form); the push
//! channels expiring first, [`ROWS`]. Re-authorisation, channel expiry and the scheduler's
//! activity are looked up for the calendars shown only. Bad parameters get a 400 page that
//! says what is allowed.
//!
//! The page needs no API key, so it shows no secrets: no API keys, no channel tokens or resource
//! ids, no join links (they may carry a host's passcode), no idempotency keys. Calendar ids, event
//! ids and conference ids are the operator's own data. Every value is HTML-escaped (and
//! URL-encoded inside links).
//!
//! Pending actions, recent changes and failures each come from one store query across all
//! conferences (`outbox_pending`, `outbox_recent`, `failures`), [`ROWS`] rows each.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use confsync_core::plan::Action;
use confsync_store::{CalendarState, OutboxState, Worst};

use crate::scheduler::CalendarActivity;
use crate::{CalendarPage, Service, StatusQuery};

/// How many rows the recent changes, pending actions, failures and expiring channels show.
pub const ROWS: usize = 20;

/// How many calendars each list of the worst shows.
pub const WORST: usize = 10;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in human units: "42 s", "5 min", "3 h 20 min", "6 d 23 h".
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// A timestamp (ms since the epoch) as UTC.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// What an action does to the conference, without secrets (a write-back's join link is left
/// out).
pub fn describe(action: &Action) -> String {
    match action {
        Action::Update { changes, .. } if changes.is_empty() => "bring in line".to_owned(),
        Action::Update { changes, .. } => {
            let names: Vec<String> = changes.iter().map(|c| format!("{c:?}")).collect();
            names.join(", ")
        }
        Action::UpdateOccurrence { occurrence, .. } => {
            format!("occurrence {} moved or renamed", occurrence.key())
        }
        Action::CancelOccurrence { occurrence } => {
            format!("occurrence {} cancelled", occurrence.key())
        }
        Action::Delete { reason } => format!("meeting deleted ({reason:?})"),
        Action::Verify => "event re-read (missing from a full sync)".to_owned(),
        Action::WriteBack { .. } => "new join link written to the event".to_owned(),
        Action::Recreate { .. } => "meeting recreated (could not be changed in place)".to_owned(),
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}\
header{background:#1f3a5f;color:#fff;padding:16px 24px}\
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;opacity:.8;font-size:13px}\
.totals{display:flex;gap:12px;padding:16px 24px;flex-wrap:wrap}\
.total{background:#fff;border-radius:8px;padding:12px 18px;min-width:150px;box-shadow:0 1px 3px rgba(0,0,0,.12)}\
.total b{display:block;font-size:28px}.total span{font-size:13px;color:#56657a}\
.total.bad b{color:#b3261e}\
section{margin:0 24px 20px;background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 3px rgba(0,0,0,.12)}\
h2{font-size:16px;margin:4px 0 10px}\
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e7ec;vertical-align:top}\
th{background:#eef2f6;font-weight:600}\
td.err{color:#b3261e;max-width:420px;word-break:break-word}\
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600}\
.ok,.state-done{background:#dcf3e3;color:#17633a}.warn,.state-pending{background:#fff1cc;color:#7a5300}\
.state-failed,.bad-badge{background:#fde0dd;color:#b3261e}.state-superseded,.none{background:#e8eaee;color:#56657a}\
p.empty{color:#56657a;font-size:13px;margin:4px 0}\
h3{font-size:14px;margin:14px 0 6px}\
form.search{display:flex;gap:12px;align-items:center;flex-wrap:wrap;font-size:13px;margin:0 0 8px}\
form.search input{font:inherit;padding:3px 6px;border:1px solid #c5ced8;border-radius:4px}\
form.search input[type=search]{min-width:260px}form.search input[type=number]{width:70px}\
nav.pages{margin:10px 0 2px;font-size:13px}nav.pages a{margin-right:16px;color:#1f3a5f;font-weight:600}";

/// `GET /[?limit=&after=&search=]`: the status page.
pub(crate) async fn page(
    State(service): State<Arc<Service>>,
    query: Result<axum::extract::Query<StatusQuery>, QueryRejection>,
) -> Response {
    let Some(page) = query.ok().and_then(|q| q.0.checked()) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CACHE_CONTROL, "no-store")],
            Html(format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>confsync status: bad request</title><style>{STYLE}</style></head><body><header><h1>confsync status</h1></header><section><h2>Bad request</h2><p>The status page takes these query parameters only: {}.</p><p><a href=\"?\">Back to the first page</a></p></section></body></html>",
                escape(StatusQuery::RULES)
            )),
        )
            .into_response();
    };
    match render(&service, &page).await {
        Ok(html) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "status page: the store is unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\"><title>confsync status</title></head><body><h1>confsync status</h1><p>The store is unavailable: {}</p></body></html>",
                    escape(&e.to_string())
                )),
            )
                .into_response()
        }
    }
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", escape(text))
}

fn state_badge(state: OutboxState) -> String {
    badge(&format!("state-{}", state.as_str()), state.as_str())
}

/// A link to a page of calendars: the query string, URL-encoded, then escaped for the attribute.
fn page_link(after: Option<&str>, search: &str, limit: i64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(after) = after {
        query.append_pair("after", after);
    }
    if !search.is_empty() {
        query.append_pair("search", search);
    }
    if limit != 100 {
        query.append_pair("limit", &limit.to_string());
    }
    escape(&format!("?{}", query.finish()))
}

/// What the rows of calendar tables need beyond the calendar's own state, looked up for the
/// calendars shown only.
struct Shown {
    now: i64,
    activity: Vec<CalendarActivity>,
    /// Sorted ids.
    reauth: Vec<String>,
    /// (calendar id, newest live channel's expiry), sorted.
    channels: Vec<(String, i64)>,
}

const CALENDAR_HEAD: &str = "<table><thead><tr><th>Calendar</th><th>Sync state</th><th>Full sync</th><th>Last sync</th><th>Lag</th><th>Failed passes</th><th>Last error</th><th>Push channel</th></tr></thead><tbody>";

fn calendar_rows(h: &mut String, calendars: &[CalendarState], shown: &Shown) {
    let now = shown.now;
    h.push_str(CALENDAR_HEAD);
    for c in calendars {
        let a = shown
            .activity
            .iter()
            .find(|a| a.calendar_id == c.calendar_id);
        let synced = if shown.reauth.binary_search(&c.calendar_id).is_ok() {
            badge("bad-badge", "needs re-authorisation")
        } else if c.sync_token.is_some() {
            badge("ok", "synced")
        } else {
            badge("warn", "not synced yet")
        };
        let running = match a {
            Some(a) if a.running => format!(" {}", badge("warn", "syncing")),
            Some(a) if a.pending => format!(" {}", badge("warn", "queued")),
            _ if c.dirty_at.is_some() => format!(" {}", badge("warn", "waiting")),
            _ => String::new(),
        };
        let full = if c.needs_full_sync {
            badge("warn", "needed")
        } else {
            badge("none", "no")
        };
        let (last, lag) = match c.last_sync_at {
            Some(t) => (
                escape(&utc(t)),
                escape(&format!("{} ago", human_duration(now - t))),
            ),
            None => ("never".to_owned(), "&mdash;".to_owned()),
        };
        let failures = match (c.sync_failures, c.retry_at) {
            (0, _) => "0".to_owned(),
            (n, Some(at)) => format!("{n} <small>(next try {})</small>", escape(&utc(at))),
            (n, None) => format!("{n} <small>(waits for a trigger)</small>"),
        };
        let error = c
            .last_error
            .clone()
            .or_else(|| a.and_then(|a| a.last_error.clone()))
            .unwrap_or_default();
        let channel = match shown
            .channels
            .binary_search_by(|(id, _)| id.as_str().cmp(&c.calendar_id))
        {
            Ok(i) => {
                let exp = shown.channels[i].1;
                format!(
                    "expires in {} <small>({})</small>",
                    escape(&human_duration(exp - now)),
                    escape(&utc(exp))
                )
            }
            Err(_) => badge("none", "no channel"),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{synced}{running}</td><td>{full}</td><td>{last}</td><td>{lag}</td><td>{failures}</td><td class=\"err\">{}</td><td>{channel}</td></tr>",
            escape(&c.calendar_id),
            escape(&error),
        );
    }
    h.push_str("</tbody></table>");
}

async fn render(
    service: &Service,
    page: &CalendarPage,
) -> Result<String, confsync_store::StoreError> {
    let store = &service.store;
    let now = chrono::Utc::now().timestamp_millis();
    let worst = WORST as i64;
    let rows = ROWS as i64;
    let (summary, mut calendars, lagging, failing, needing_reauth, (expiring, live_channels)) = tokio::try_join!(
        store.calendar_summary(),
        store.calendars_page(&page.after, &page.search, page.limit + 1),
        store.calendars_ranked(Worst::Lagging, worst),
        store.calendars_ranked(Worst::Failing, worst),
        store.calendars_ranked(Worst::NeedingReauth, worst),
        store.channels_expiring_first(now, rows),
    )?;
    let (depth, failed_count, failures, pending, recent) = tokio::try_join!(
        store.outbox_depth(),
        store.failed_count(),
        store.failures(rows),
        store.outbox_pending(rows),
        store.outbox_recent(rows),
    )?;
    let next_after = (calendars.len() as i64 > page.limit).then(|| {
        calendars.truncate(page.limit as usize);
        calendars.last().map(|c| c.calendar_id.clone())
    });
    let mut ids: Vec<&str> = calendars
        .iter()
        .chain(&lagging)
        .chain(&failing)
        .chain(&needing_reauth)
        .map(|c| c.calendar_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (reauth, channels) = tokio::try_join!(
        store.calendars_needing_reauth_among(&ids),
        store.channels_newest_among(now, &ids),
    )?;
    let shown = Shown {
        now,
        activity: service.scheduler.activity_of(ids.iter().copied()),
        reauth,
        channels,
    };

    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>confsync status</title><style>{STYLE}</style></head><body>\
         <header><h1>confsync status</h1><p>Generated {} &middot; refreshes every 10 s</p></header>",
        escape(&utc(now))
    );
    let total = |h: &mut String, n: i64, label: &str, bad: bool| {
        let _ = write!(
            h,
            "<div class=\"total{}\"><b>{n}</b><span>{}</span></div>",
            if bad { " bad" } else { "" },
            escape(label)
        );
    };
    h.push_str("<div class=\"totals\">");
    total(&mut h, summary.calendars, "calendars", false);
    total(&mut h, summary.synced, "synced", false);
    total(
        &mut h,
        summary.failing,
        "failing to sync",
        summary.failing > 0,
    );
    total(&mut h, summary.dirty, "waiting for a sync", false);
    if summary.needing_reauth > 0 {
        total(
            &mut h,
            summary.needing_reauth,
            "calendars need re-authorisation",
            true,
        );
    }
    total(&mut h, live_channels, "live channels", false);
    total(&mut h, depth, "outbox depth", false);
    total(&mut h, failed_count, "failed actions", failed_count > 0);
    h.push_str("</div>");

    // The worst calendars.
    h.push_str(
        "<section id=\"worst\"><h2>Calendars needing attention</h2>\
         <h3 id=\"lagging\">Synced longest ago</h3>",
    );
    if lagging.is_empty() {
        h.push_str("<p class=\"empty\">No calendars yet: a calendar starts syncing with its first conference.</p>");
    } else {
        calendar_rows(&mut h, &lagging, &shown);
    }
    h.push_str("<h3 id=\"failing\">Failing to sync</h3>");
    if failing.is_empty() {
        h.push_str("<p class=\"empty\">No calendar is failing to sync.</p>");
    } else {
        if summary.failing > worst {
            let _ = write!(
                h,
                "<p class=\"empty\">The {WORST} failing longest of {}.</p>",
                summary.failing
            );
        }
        calendar_rows(&mut h, &failing, &shown);
    }
    h.push_str("<h3 id=\"reauth\">Needing re-authorisation</h3>");
    if needing_reauth.is_empty() {
        h.push_str("<p class=\"empty\">No calendar needs its owner to connect again.</p>");
    } else {
        if summary.needing_reauth > worst {
            let _ = write!(
                h,
                "<p class=\"empty\">The first {WORST} by id of {}.</p>",
                summary.needing_reauth
            );
        }
        calendar_rows(&mut h, &needing_reauth, &shown);
    }
    h.push_str("</section>");

    // One page of calendars, with the search form.
    let _ = write!(
        h,
        "<section id=\"calendars\"><h2>Calendars</h2>\
         <form method=\"get\" class=\"search\" role=\"search\">\
         <label>Calendar id contains <input type=\"search\" name=\"search\" value=\"{}\" maxlength=\"256\"></label> \
         <label>Per page <input type=\"number\" name=\"limit\" value=\"{}\" min=\"1\" max=\"1000\"></label> \
         <button type=\"submit\">Search</button></form>",
        escape(&page.search),
        page.limit
    );
    let what = match (page.search.is_empty(), page.after.is_empty()) {
        (true, true) => format!("{} calendars by id", summary.calendars),
        (true, false) => format!("Calendars after {} by id", page.after),
        (false, true) => format!(
            "Calendars whose id contains \u{201c}{}\u{201d}",
            page.search
        ),
        (false, false) => format!(
            "Calendars whose id contains \u{201c}{}\u{201d}, after {}",
            page.search, page.after
        ),
    };
    let _ = write!(
        h,
        "<p class=\"empty\">{}: showing {}.</p>",
        escape(&what),
        calendars.len()
    );
    if calendars.is_empty() {
        h.push_str(if page.search.is_empty() && page.after.is_empty() {
            "<p class=\"empty\">No calendars yet: a calendar starts syncing with its first conference.</p>"
        } else {
            "<p class=\"empty\">No calendar matches.</p>"
        });
    } else {
        calendar_rows(&mut h, &calendars, &shown);
    }
    h.push_str("<nav class=\"pages\">");
    if !page.after.is_empty() {
        let _ = write!(
            h,
            "<a href=\"{}\">First page</a> ",
            page_link(None, &page.search, page.limit)
        );
    }
    if let Some(Some(next)) = &next_after {
        let _ = write!(
            h,
            "<a rel=\"next\" href=\"{}\">Next page</a>",
            page_link(Some(next), &page.search, page.limit)
        );
    }
    h.push_str("</nav></section>");

    // Push channels expiring first.
    let _ = write!(
        h,
        "<section id=\"channels\"><h2>Push channels expiring first ({live_channels} live)</h2>"
    );
    if expiring.is_empty() {
        h.push_str("<p class=\"empty\">No live push channels.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Calendar</th><th>Expires</th></tr></thead><tbody>");
        for c in &expiring {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>in {} <small>({})</small></td></tr>",
                escape(&c.calendar_id),
                escape(&human_duration(c.expiration_ms - now)),
                escape(&utc(c.expiration_ms)),
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");

    // Pending actions.
    let _ = write!(
        h,
        "<section id=\"pending\"><h2>Pending actions ({} in the outbox)</h2>",
        depth
    );
    if pending.is_empty() {
        h.push_str("<p class=\"empty\">Nothing pending.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Action</th><th>What</th><th>Conference</th><th>Calendar</th><th>Event</th><th>Attempts</th><th>Not before</th><th>Last error</th></tr></thead><tbody>");
        for r in pending.iter().take(ROWS) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                escape(r.action.kind()),
                escape(&describe(&r.action)),
                escape(&r.conference_id),
                escape(&r.calendar_id),
                escape(&r.event_id),
                r.attempts,
                escape(&utc(r.not_before)),
                escape(r.last_error.as_deref().unwrap_or("")),
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");

    // Failed actions.
    h.push_str("<section id=\"failed\"><h2>Failed actions</h2>");
    if failures.is_empty() {
        h.push_str("<p class=\"empty\">No failed actions.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Failed at</th><th>Action</th><th>What</th><th>Conference</th><th>Calendar</th><th>Event</th><th>Attempts</th><th>Error</th></tr></thead><tbody>");
        for f in &failures {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                escape(&utc(f.failed_at)),
                escape(&f.kind),
                escape(&describe(&f.action)),
                escape(&f.conference_id),
                escape(&f.calendar_id),
                escape(&f.event_id),
                f.attempts,
                escape(&f.error),
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");

    // Recent changes.
    h.push_str("<section id=\"recent\"><h2>Recent changes</h2>");
    if recent.is_empty() {
        h.push_str("<p class=\"empty\">No changes yet.</p>");
    } else {
        h.push_str("<table><thead><tr><th>When</th><th>Action</th><th>State</th><th>What was done</th><th>Conference</th><th>Calendar</th><th>Event</th></tr></thead><tbody>");
        for r in &recent {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&utc(r.updated_at)),
                escape(r.action.kind()),
                state_badge(r.state),
                escape(&describe(&r.action)),
                escape(&r.conference_id),
                escape(&r.calendar_id),
                escape(&r.event_id),
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section></body></html>");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_human_units() {
        assert_eq!(human_duration(-5), "0 s");
        assert_eq!(human_duration(42_000), "42 s");
        assert_eq!(human_duration(5 * 60_000 + 10), "5 min");
        assert_eq!(human_duration(3 * 3_600_000), "3 h");
        assert_eq!(human_duration(3 * 3_600_000 + 20 * 60_000), "3 h 20 min");
        assert_eq!(human_duration(6 * 86_400_000 + 23 * 3_600_000), "6 d 23 h");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_write_back_is_described_without_its_join_link() {
        let action = Action::WriteBack {
            join_url: "https://meet.example/j/1?pwd=secret".into(),
        };
        assert!(!describe(&action).contains("secret"));
    }
}
