//! The operator's dashboard and alert rules (deploy/grafana/confsync.json,
//! deploy/prometheus/alerts.yml) use only metrics the service exports: a service that has done
//! a little work (a conference, a push channel, a sync) is scraped, and every metric name in
//! their PromQL must be in the scrape, by its TYPE line or a sample, with the suffix its type
//! allows (`_bucket` of a histogram; `_sum` and `_count` of a histogram or a summary). Label
//! names in selectors are checked against the samples where the scrape has some. The alert
//! rules are checked against the default scrape (aggregates only: an alert must not depend on
//! the opt-in per-calendar series), the dashboard against a scrape with the per-calendar series
//! turned on. The rules' syntax and behaviour are promtool's to check (`promtool check rules`
//! and `promtool test rules` in .ci/run).
//!
//! The calendar gauges are aggregates whatever the number of calendars: their values over a
//! few hundred calendars, and per-calendar series only when opted in, capped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

const KEY: &str = "cs_observability-test-key";
const ALICE: &str = common::ALICE;

/// Labels Prometheus adds to every scraped series (the target's), not the service.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn deploy_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// What a scrape exports.
#[derive(Default, Debug)]
struct Exposition {
    /// Family name -> type, from `# TYPE` lines.
    types: BTreeMap<String, String>,
    /// Family names with a `# HELP` line.
    helps: BTreeSet<String>,
    /// Sample name -> the label names seen on its samples.
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                e.types.insert(name.to_owned(), kind.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                e.helps.insert(name.to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let labels = e.samples.entry(line[..end].to_owned()).or_default();
                if line[end..].starts_with('{') {
                    let close = line.rfind('}').expect("a closed label set");
                    for (label, _) in label_matchers(&line[end + 1..close]) {
                        labels.insert(label);
                    }
                }
            }
        }
        e
    }

    /// The label names the samples of `metric` (as PromQL names it) carry; None when the
    /// scrape has no sample of it yet.
    fn labels_of(&self, metric: &str) -> Option<&BTreeSet<String>> {
        self.samples.get(metric)
    }

    /// Why `metric`, as a PromQL expression names it, is not something this scrape exports.
    fn missing(&self, metric: &str) -> Option<String> {
        if self.samples.contains_key(metric) {
            return None;
        }
        match self.types.get(metric).map(String::as_str) {
            Some("histogram" | "summary") => {
                return Some(format!(
                    "{metric} is a {}: select its _sum, _count (or _bucket) series",
                    self.types[metric]
                ));
            }
            Some(_) => return None, // a counter or gauge with no sample yet
            None => {}
        }
        for (suffix, allowed) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = metric.strip_suffix(suffix)
                && let Some(kind) = self.types.get(base)
            {
                return (!allowed.contains(&kind.as_str()))
                    .then(|| format!("{metric}: {base} is a {kind}, which has no {suffix}"));
            }
        }
        Some(format!("{metric} is not exported"))
    }
}

/// `name op "value"` pairs of a label set (`a="x",b=~"y"`), values unescaped.
fn label_matchers(set: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = set.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() {
            return out;
        }
        // The operator: =, !=, =~, !~.
        while chars
            .peek()
            .is_some_and(|c| matches!(c, '=' | '!' | '~' | ' '))
        {
            chars.next();
        }
        let Some(quote) = chars.next() else {
            return out;
        };
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                c if c == quote => break,
                c => value.push(c),
            }
        }
        out.push((name, value));
    }
}

/// The metric names a PromQL expression selects, each with the label names of its selector's
/// matchers: identifiers starting `confsync_`, whole (not inside a longer identifier), outside
/// string literals and comments.
fn metrics_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if !ident.starts_with("confsync_") {
                continue;
            }
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let mut labels = Vec::new();
            if j < chars.len() && chars[j] == '{' {
                // The selector's matchers, up to the closing brace outside a string.
                let mut k = j + 1;
                let mut quote = None;
                while k < chars.len() {
                    match (quote, chars[k]) {
                        (None, '}') => break,
                        (None, q @ ('"' | '\'' | '`')) => quote = Some(q),
                        (Some(_), '\\') => k += 1,
                        (Some(q), c) if c == q => quote = None,
                        _ => {}
                    }
                    k += 1;
                }
                let set: String = chars[j + 1..k.min(chars.len())].iter().collect();
                labels = label_matchers(&set).into_iter().map(|(n, _)| n).collect();
                i = k + 1;
            }
            out.push((ident, labels));
        } else {
            i += 1;
        }
    }
    out
}

/// The alert rules' `expr:` values, inline or as block scalars (`|`, `>`), with their alert.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::from("(no alert)");
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some(name) = trimmed
            .strip_prefix("alert:")
            .or_else(|| trimmed.strip_prefix("record:"))
        {
            alert = name.trim().to_owned();
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push((alert.clone(), block.join("\n")));
        } else {
            let value = value.trim_matches(|c| c == '\'' || c == '"');
            out.push((alert.clone(), value.to_owned()));
        }
    }
    out
}

/// Every PromQL text of the dashboard: panel targets' `expr` and query variables' queries.
fn dashboard_exprs(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let here = map
                .get("title")
                .or_else(|| map.get("name"))
                .and_then(Value::as_str)
                .map_or_else(|| path.to_owned(), |t| format!("{path}/{t}"));
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(s)) => {
                        out.push((here.clone(), s.clone()))
                    }
                    ("query", Value::String(s)) if s.contains("confsync_") => {
                        out.push((here.clone(), s.clone()))
                    }
                    _ => dashboard_exprs(value, &here, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, path, out)),
        _ => {}
    }
}

/// A service with something to report: a conference created, its calendar watched by a push
/// channel, the event saved in Calendar and synced, the outbox drained. Scraped as configured
/// by default, then with per-calendar series.
async fn scrape_after_some_work() -> (String, String) {
    let r = common::start(
        KEY,
        Some(common::Push {
            ttl_seconds: None,
            renew_check: Duration::from_secs(60),
        }),
    )
    .await;
    let post = |path: &str, body: Option<Value>| {
        let mut request = r.http.post(format!("{}{path}", r.service)).bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let response = post(
        "v1/conferences",
        Some(json!({"calendarId": ALICE, "eventId": "observe0001", "requestId": "r-1"})),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let conference: Value = response.json().await.unwrap();
    let mut event = json!({"id": "observe0001", "summary": "Observed", "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T11:00:00Z"}, "conferenceData": conference});
    event["conferenceData"]["conferenceId"] = conference["conferenceId"].clone();
    let saved = r
        .http
        .post(format!(
            "{}calendar/v3/calendars/primary/events?conferenceDataVersion=1",
            r.calendar
        ))
        .bearer_auth(format!("dev:{ALICE}"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert!(saved.status().is_success(), "{}", saved.status());
    let synced = post(&format!("v1/calendars/{ALICE}/sync"), None)
        .await
        .unwrap();
    assert_eq!(synced.status(), 202);

    let mut last = String::new();
    for _ in 0..400 {
        last = r
            .http
            .get(format!("{}metrics", r.service))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // A sync done, the outbox drained, the channel open.
        if !last.contains("confsync_sync_runs_total{outcome=\"ok\"} 0")
            && last.contains("confsync_outbox_depth 0")
            && last.contains("confsync_calendars_with_channel 1")
            && last.contains("confsync_actions_total{")
        {
            r.metrics.set_per_calendar(10);
            let opted_in = r
                .http
                .get(format!("{}metrics", r.service))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            return (last, opted_in);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the service never synced, drained and opened its channel:\n{last}");
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    let (scrape, opted_in) = scrape_after_some_work().await;
    let default = Exposition::parse(&scrape);
    let all = Exposition::parse(&opted_in);
    for exported in [&default, &all] {
        for family in exported.types.keys() {
            assert!(exported.helps.contains(family), "{family} has no # HELP");
        }
    }
    assert!(
        !scrape.contains("confsync_sync_lag_seconds{") && !scrape.contains("calendar_id="),
        "no per-calendar series by default:\n{scrape}"
    );
    assert!(
        opted_in.contains("confsync_sync_lag_seconds{calendar_id=\"alice@example.com\"}")
            && opted_in
                .contains("confsync_channel_expiry_seconds{calendar_id=\"alice@example.com\"}"),
        "per-calendar series when opted in:\n{opted_in}"
    );

    // Alerts against what every deployment exports; the dashboard may show the opt-in series.
    let alerts: Vec<(String, String)> = alert_exprs(&deploy_file("prometheus/alerts.yml"))
        .into_iter()
        .map(|(alert, expr)| (format!("alerts.yml {alert}"), expr))
        .collect();
    let alert_count = alerts.len();
    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/confsync.json")).expect("the dashboard is JSON");
    let mut panels = Vec::new();
    dashboard_exprs(&dashboard, "confsync.json", &mut panels);
    let panel_count = panels.len();
    assert!(alert_count >= 6, "alert expressions found: {alert_count}");
    assert!(
        panel_count >= 20,
        "dashboard expressions found: {panel_count}"
    );
    let sources: Vec<(String, String, &Exposition)> = alerts
        .into_iter()
        .map(|(place, expr)| (place, expr, &default))
        .chain(panels.into_iter().map(|(place, expr)| (place, expr, &all)))
        .collect();

    let mut problems = BTreeSet::new();
    let mut used = BTreeSet::new();
    for (place, expr, exported) in &sources {
        let metrics = metrics_in(expr);
        if metrics.is_empty() {
            problems.insert(format!("{place}: no confsync metric in `{expr}`"));
        }
        for (metric, labels) in metrics {
            used.insert(metric.clone());
            if let Some(why) = exported.missing(&metric) {
                problems.insert(format!("{place}: {why}"));
                continue;
            }
            let Some(known) = exported.labels_of(&metric) else {
                continue; // no sample yet: its labels cannot be seen
            };
            for label in labels {
                if !known.contains(&label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.insert(format!(
                        "{place}: {metric} has no label {label} (it has {known:?})"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "not exported by the service:\n{}\n\nthe scrape (per-calendar series on):\n{opted_in}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    // The metrics the issue's alerts need are among those used.
    for metric in [
        "confsync_sync_lag_seconds_max",
        "confsync_calendars_lagging",
        "confsync_calendars_sync_failing",
        "confsync_outbox_depth",
        "confsync_channel_expiry_seconds_min",
        "confsync_calendars_with_channel",
        "confsync_calendars_needing_reauth",
        "confsync_provider_request_duration_seconds_count",
    ] {
        assert!(
            used.contains(metric),
            "{metric} is used by no panel or alert"
        );
    }
}

/// Every alert says what is wrong and where to look: a `for:` duration, a severity, and
/// summary, description and runbook annotations; and the alerts the issue names are there.
#[test]
fn every_alert_has_a_duration_a_severity_and_a_runbook() {
    let yaml = deploy_file("prometheus/alerts.yml");
    let rules: Vec<&str> = yaml.split("- alert:").skip(1).collect();
    assert!(rules.len() >= 6, "{} alerts", rules.len());
    let mut names = BTreeSet::new();
    for rule in rules {
        let name = rule.lines().next().unwrap_or_default().trim();
        names.insert(name.to_owned());
        for key in [
            "expr:",
            "for:",
            "severity:",
            "summary:",
            "description:",
            "runbook:",
        ] {
            assert!(rule.contains(key), "alert {name} has no {key}");
        }
    }
    for name in [
        "ConfsyncSyncLagHigh",
        "ConfsyncCalendarsSyncFailing",
        "ConfsyncOutboxDepthGrowing",
        "ConfsyncPushChannelExpiringSoon",
        "ConfsyncReauthorisationNeeded",
        "ConfsyncProviderErrorRate",
    ] {
        assert!(names.contains(name), "no alert {name}: {names:?}");
    }
}

#[test]
fn the_tokenizer_finds_whole_metric_names_outside_strings() {
    let found = metrics_in(
        r#"sum by (op) (rate(confsync_a_count{job=~"$job", outcome="confsync_not_a_metric"}[5m]))
           / my_confsync_b + on() confsync_c # confsync_in_a_comment
           and confsync_d {le="+Inf", x=~'a}b'}"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "confsync_a_count".into(),
                vec!["job".into(), "outcome".into()]
            ),
            ("confsync_c".into(), vec![]),
            ("confsync_d".into(), vec!["le".into(), "x".into()]),
        ]
    );
    let e = Exposition::parse(
        "# HELP h_seconds h\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 1\nh_seconds_count 1\n# HELP s_seconds s\n# TYPE s_seconds summary\ns_seconds_sum 0\ns_seconds_count 0\n# HELP c_total c\n# TYPE c_total counter\n",
    );
    assert_eq!(e.missing("h_seconds_bucket"), None);
    assert_eq!(e.missing("s_seconds_count"), None);
    assert_eq!(e.missing("c_total"), None, "a counter with no sample yet");
    assert!(
        e.missing("s_seconds_bucket").is_some(),
        "a summary has no buckets"
    );
    assert!(
        e.missing("h_seconds").is_some(),
        "a histogram is selected by its series"
    );
    assert!(e.missing("c").is_some());
    assert_eq!(
        e.labels_of("h_seconds_bucket"),
        Some(&BTreeSet::from(["le".to_owned()]))
    );
}

/// The samples of a scrape: series (name and labels as written) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The calendar gauges are computed over every calendar by the store: counts, the longest lag
/// and counts over lag thresholds, push coverage and the first expiry; the scrape has the same
/// series whatever the number of calendars. Per-calendar series appear only when opted in, for
/// at most that many calendars: those synced longest ago and those whose channel expires first.
#[tokio::test]
async fn calendar_gauges_are_aggregates_and_per_calendar_series_are_opt_in_and_capped() {
    use confsync_store::testing::{CalendarFixture, insert_calendars};
    let r = common::start(KEY, None).await;
    let scrape = async || {
        r.http
            .get(format!("{}metrics", r.service))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let empty = samples(&scrape().await);

    let now = chrono::Utc::now().timestamp_millis();
    let minute = 60_000;
    // Lags are whole minutes plus 30 s: never within a test's duration of a threshold.
    let calendars: Vec<CalendarFixture> = (0..250i64)
        .map(|i| CalendarFixture {
            calendar_id: format!("cal{i:03}@example.com"),
            owner: (i % 40 == 3).then(|| "revoked@example.com".to_owned()),
            last_sync_at: (i % 25 != 0).then(|| now - (i * 397 % 3000) * minute - 30_000),
            sync_failures: if i % 30 == 1 { 2 } else { 0 },
            last_error: (i % 30 == 1).then(|| "503".to_owned()),
            // No retry time and no trigger: the test's scheduler leaves them alone.
            retry_at: None,
            dirty_at: None,
            channel_expires_at: (i % 3 != 0)
                .then(|| now + (i * 131 % 10_000) * minute + 30 * minute),
            stopped_channels: 1,
        })
        .collect();
    insert_calendars(&r.store, &calendars).await.unwrap();
    r.store
        .user_connect("revoked@example.com", "sealed", None, now)
        .await
        .unwrap();
    r.store
        .user_needs_reauth("revoked@example.com", "revoked", now)
        .await
        .unwrap();

    let text = scrape().await;
    let got = samples(&text);
    let count =
        |f: &dyn Fn(&CalendarFixture) -> bool| calendars.iter().filter(|c| f(c)).count() as f64;
    assert_eq!(got["confsync_calendars"], 250.0);
    assert_eq!(
        got["confsync_calendars_never_synced"],
        count(&|c| c.last_sync_at.is_none())
    );
    assert_eq!(
        got["confsync_calendars_sync_failing"],
        count(&|c| c.sync_failures > 0)
    );
    assert_eq!(
        got["confsync_calendars_needing_reauth"],
        count(&|c| c.owner.is_some())
    );
    assert_eq!(
        got["confsync_calendars_with_channel"],
        count(&|c| c.channel_expires_at.is_some())
    );
    for over in [900, 3600, 21_600, 86_400] {
        let expected = count(&|c| c.last_sync_at.is_some_and(|t| now - t > over * 1000));
        assert_eq!(
            got[&format!("confsync_calendars_lagging{{over_seconds=\"{over}\"}}")],
            expected,
            "over {over} s"
        );
    }
    let oldest = calendars
        .iter()
        .filter_map(|c| c.last_sync_at)
        .min()
        .unwrap();
    let lag_max = got["confsync_sync_lag_seconds_max"];
    let expected = (now - oldest) as f64 / 1000.0;
    assert!(
        (expected..expected + 60.0).contains(&lag_max),
        "{lag_max} for {expected}"
    );
    let first = calendars
        .iter()
        .filter_map(|c| c.channel_expires_at)
        .min()
        .unwrap();
    let expiry_min = got["confsync_channel_expiry_seconds_min"];
    let expected = (first - now) as f64 / 1000.0;
    assert!(
        (expected - 60.0..=expected).contains(&expiry_min),
        "{expiry_min} for {expected}"
    );
    // The same series as with no calendars at all (plus the two that need one to exist).
    let extra: Vec<&String> = got.keys().filter(|k| !empty.contains_key(*k)).collect();
    assert_eq!(
        extra,
        vec![
            "confsync_channel_expiry_seconds_min",
            "confsync_sync_lag_seconds_max"
        ],
        "{text}"
    );
    assert!(
        !text.contains("calendar_id="),
        "no per-calendar series by default"
    );

    // Opted in: seven of each, the worst.
    r.metrics.set_per_calendar(7);
    let text = scrape().await;
    let per_calendar = |family: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{family}{{calendar_id=\"")))
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };
    let mut synced: Vec<&CalendarFixture> = calendars
        .iter()
        .filter(|c| c.last_sync_at.is_some())
        .collect();
    synced.sort_by_key(|c| (c.last_sync_at, c.calendar_id.clone()));
    assert_eq!(
        per_calendar("confsync_sync_lag_seconds"),
        synced[..7]
            .iter()
            .map(|c| c.calendar_id.clone())
            .collect::<Vec<_>>()
    );
    let mut expiring: Vec<&CalendarFixture> = calendars
        .iter()
        .filter(|c| c.channel_expires_at.is_some())
        .collect();
    expiring.sort_by_key(|c| (c.channel_expires_at, c.calendar_id.clone()));
    assert_eq!(
        per_calendar("confsync_channel_expiry_seconds"),
        expiring[..7]
            .iter()
            .map(|c| c.calendar_id.clone())
            .collect::<Vec<_>>()
    );
    // The cap holds whatever is asked.
    r.metrics.set_per_calendar(usize::MAX);
    assert_eq!(
        r.metrics.per_calendar(),
        confsync_service::metrics::MAX_PER_CALENDAR
    );
    r.metrics.set_per_calendar(0);
    assert!(!scrape().await.contains("calendar_id="));
}
