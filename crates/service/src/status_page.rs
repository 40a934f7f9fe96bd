//! `GET /`: the operator's status page, server-rendered HTML with inline CSS and no JavaScript.
//!
//! It shows the totals (calendars, live push channels, outbox depth, failed actions), each
//! calendar's sync state (last sync and lag, last error, channel expiry), the pending actions,
//! the recent permanent failures and the recent changes made to conferences.
//!
//! The page needs no API key, so it shows no secrets: no API keys, no channel tokens or resource
//! ids, no join links (they may carry a host's passcode), no idempotency keys. Calendar ids, event
//! ids and conference ids are the operator's own data. Every value is HTML-escaped.
//!
//! Calendars whose owner must connect their Google account again are flagged. Pending actions,
//! recent changes and failures each come from one store query across all conferences
//! (`outbox_pending`, `outbox_recent`, `failures`), [`ROWS`] rows each.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use confsync_core::plan::Action;
use confsync_store::OutboxState;

use crate::Service;

/// How many rows the recent changes, pending actions and failures show.
pub const ROWS: usize = 20;

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
p.empty{color:#56657a;font-size:13px;margin:4px 0}";

/// `GET /`: the status page.
pub async fn page(State(service): State<Arc<Service>>) -> Response {
    match render(&service).await {
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

async fn render(service: &Service) -> Result<String, confsync_store::StoreError> {
    let store = &service.store;
    let now = chrono::Utc::now().timestamp_millis();
    let calendars = store.calendars().await?;
    let channels = store.live_channels(now).await?;
    let depth = store.outbox_depth().await?;
    let failures = store.failures(ROWS as i64).await?;
    let activity = service.scheduler.activity();

    let pending = store.outbox_pending(ROWS as i64).await?;
    let recent = store.outbox_recent(ROWS as i64).await?;
    let reauth = store.calendars_needing_reauth().await?;

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>confsync status</title><style>{STYLE}</style></head><body>\
         <header><h1>confsync status</h1><p>Generated {} &middot; refreshes every 10 s</p></header>",
        escape(&utc(now))
    );
    let total = |h: &mut String, n: String, label: &str, bad: bool| {
        let _ = write!(
            h,
            "<div class=\"total{}\"><b>{}</b><span>{}</span></div>",
            if bad { " bad" } else { "" },
            escape(&n),
            escape(label)
        );
    };
    h.push_str("<div class=\"totals\">");
    total(&mut h, calendars.len().to_string(), "calendars", false);
    total(&mut h, channels.len().to_string(), "live channels", false);
    total(&mut h, depth.to_string(), "outbox depth", false);
    let failed_label = store.failed_count().await?.to_string();
    total(&mut h, failed_label, "failed actions", !failures.is_empty());
    if !reauth.is_empty() {
        total(
            &mut h,
            reauth.len().to_string(),
            "calendars need re-authorisation",
            true,
        );
    }
    h.push_str("</div>");

    // Calendars.
    h.push_str("<section id=\"calendars\"><h2>Calendars</h2>");
    if calendars.is_empty() {
        h.push_str("<p class=\"empty\">No calendars yet: a calendar starts syncing with its first conference.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Calendar</th><th>Sync state</th><th>Full sync</th><th>Last sync</th><th>Lag</th><th>Last error</th><th>Push channel</th></tr></thead><tbody>");
        for c in &calendars {
            let a = activity.iter().find(|a| a.calendar_id == c.calendar_id);
            let synced = if reauth.contains(&c.calendar_id) {
                badge("bad-badge", "needs re-authorisation")
            } else if c.sync_token.is_some() {
                badge("ok", "synced")
            } else {
                badge("warn", "not synced yet")
            };
            let running = match a {
                Some(a) if a.running => format!(" {}", badge("warn", "syncing")),
                Some(a) if a.pending => format!(" {}", badge("warn", "queued")),
                _ => String::new(),
            };
            let full = if c.needs_full_sync {
                badge("warn", "needed")
            } else {
                badge("none", "no")
            };
            let (last, lag) = match c.last_sync_at {
                Some(t) => (utc(t), format!("{} ago", human_duration(now - t))),
                None => ("never".to_owned(), "&mdash;".to_owned()),
            };
            let error = c
                .last_error
                .clone()
                .or_else(|| a.and_then(|a| a.last_error.clone()))
                .unwrap_or_default();
            let channel = channels
                .iter()
                .filter(|ch| ch.calendar_id == c.calendar_id)
                .map(|ch| ch.expiration_ms)
                .max();
            let channel = match channel {
                Some(exp) => format!(
                    "expires in {} <small>({})</small>",
                    escape(&human_duration(exp - now)),
                    escape(&utc(exp))
                ),
                None => badge("none", "no channel"),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{synced}{running}</td><td>{full}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td><td>{channel}</td></tr>",
                escape(&c.calendar_id),
                escape(&last),
                if c.last_sync_at.is_some() {
                    escape(&lag)
                } else {
                    lag
                },
                escape(&error),
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
