//! The status page at `/`: its content after a real sync, and how headless Chromium renders it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confsync_core::model::MeetingSpec;
use confsync_service::hash_api_key;
use confsync_store::Store;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const KEY: &str = "cs_status-page-key-0123456789";
const EVENT: &str = "statuspage01";

struct Harness {
    http: reqwest::Client,
    calendar: String,
    service: String,
    store: Store,
}

async fn start() -> Harness {
    let r = common::start(KEY, None).await;
    Harness {
        http: r.http,
        calendar: r.calendar,
        service: r.service,
        store: r.store,
    }
}

impl Harness {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.service))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn page(&self) -> (u16, String, String) {
        let response = self.http.get(&self.service).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.unwrap())
    }

    /// A conference created through the API, its event saved in the emulator, a sync triggered
    /// and the meeting brought in line: the outbox holds one done `update`.
    async fn conference_synced(&self) -> String {
        let (status, conference) = self
            .api(
                reqwest::Method::POST,
                "v1/conferences",
                Some(json!({"calendarId": ALICE, "eventId": EVENT, "requestId": "r-1"})),
            )
            .await;
        assert_eq!(status, 200, "{conference}");
        let id = conference["conferenceId"].as_str().unwrap().to_owned();
        let event = json!({
            "id": EVENT,
            "summary": "Status review",
            "start": {"dateTime": "2026-12-03T10:00:00Z"},
            "end": {"dateTime": "2026-12-03T11:00:00Z"},
            "conferenceData": conference,
        });
        let response = self
            .http
            .post(format!(
                "{}calendar/v3/calendars/primary/events?conferenceDataVersion=1",
                self.calendar
            ))
            .bearer_auth(format!("dev:{ALICE}"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let (status, _) = self
            .api(
                reqwest::Method::POST,
                &format!("v1/calendars/{ALICE}/sync"),
                None,
            )
            .await;
        assert_eq!(status, 202);
        for _ in 0..400 {
            let m = self.store.meeting(&id).await.unwrap().unwrap();
            let spec: MeetingSpec = serde_json::from_str(&m.spec_json).unwrap();
            let done = self
                .store
                .outbox_of(&id)
                .await
                .unwrap()
                .iter()
                .any(|r| r.action.kind() == "update" && r.state.as_str() == "done");
            if spec.title == "Status review" && done {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("meeting {id} was never updated");
    }
}

#[tokio::test]
async fn the_status_page_shows_calendars_and_recent_changes_without_secrets() {
    let h = start().await;
    let id = h.conference_synced().await;
    let (status, content_type, html) = h.page().await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.contains(ALICE), "the calendar id is shown");
    assert!(html.contains(">synced<"), "the calendar is synced: {html}");
    assert!(html.contains("no channel"), "no push channel is configured");
    assert!(
        html.contains("<meta http-equiv=\"refresh\" content=\"10\">"),
        "the page refreshes itself"
    );
    // The recent update: its kind, state and what it did, with the conference and event.
    let recent = &html[html
        .find("id=\"recent\"")
        .expect("a recent changes section")..];
    assert!(recent.contains("<td>update</td>"), "{recent}");
    assert!(recent.contains(">done<"), "{recent}");
    assert!(recent.contains("Retitled"), "{recent}");
    assert!(recent.contains(&id) && recent.contains(EVENT), "{recent}");
    // No secrets: the API key (or its hash), join links, scripts.
    assert!(!html.contains(KEY));
    assert!(!html.contains(&hash_api_key(KEY)));
    assert!(!html.contains("/join/"), "join links are not shown");
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "no JavaScript"
    );

    // Alice's grant is revoked (per-user OAuth): the calendar is flagged, the sealed token is
    // not shown.
    h.store
        .user_connect(ALICE, "sealed-refresh-token", None, 0)
        .await
        .unwrap();
    assert!(
        h.store
            .user_needs_reauth(ALICE, "the grant was revoked", 1)
            .await
            .unwrap()
    );
    let (_, _, html) = h.page().await;
    assert!(html.contains("needs re-authorisation"), "{html}");
    assert!(html.contains("calendars need re-authorisation"));
    assert!(!html.contains("sealed-refresh-token"));
}

/// The calendar ids in a section's tables (first cell of each body row), unescaped.
fn row_ids(section: &str) -> Vec<String> {
    section
        .split("<tr><td>")
        .skip(1)
        .map(|row| unescape(&row[..row.find("</td>").expect("a closed cell")]))
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The part of the page from `start` to the next `end` after it.
fn part<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {html}"));
    let rest = &html[from..];
    &rest[..rest[start.len()..]
        .find(end)
        .map_or(rest.len(), |i| i + start.len())]
}

impl Harness {
    async fn page_at(&self, query: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("{}{query}", self.service))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.unwrap())
    }
}

/// With many calendars the page shows counts over all of them, the worst of each kind and one
/// page of calendars: following "Next page" visits every calendar once, the search form finds
/// a literal part of an id, bad parameters get a 400 page, values are escaped, no secrets.
#[tokio::test]
async fn the_status_page_pages_searches_and_ranks_many_calendars() {
    use confsync_store::testing::{CalendarFixture, insert_calendars};
    let h = start().await;
    let now = chrono::Utc::now().timestamp_millis();
    let minute = 60_000;
    let calendars: Vec<CalendarFixture> = (0..250usize)
        .map(|i| CalendarFixture {
            // One id full of markup (ids reach the store from Google and the API; the page
            // escapes whatever it holds).
            calendar_id: if i == 249 {
                "z<b>\"&'x@example.com".to_owned()
            } else {
                format!("cal{i:03}@example.com")
            },
            owner: (i % 50 == 7).then(|| "revoked@example.com".to_owned()),
            last_sync_at: (i != 42).then(|| now - ((i * 7) % 250) as i64 * minute),
            sync_failures: if i % 60 == 11 { 1 + (i / 60) as i64 } else { 0 },
            last_error: (i % 60 == 11).then(|| format!("<i>backend</i> & 503 on {i}")),
            // No retry time: the test's scheduler leaves them alone.
            retry_at: None,
            dirty_at: None,
            channel_expires_at: (i % 2 == 0).then(|| now + (i as i64 + 10) * minute),
            stopped_channels: 1,
        })
        .collect();
    insert_calendars(&h.store, &calendars).await.unwrap();
    h.store
        .user_connect("revoked@example.com", "sealed-refresh-token", None, now)
        .await
        .unwrap();
    h.store
        .user_needs_reauth("revoked@example.com", "revoked", now)
        .await
        .unwrap();
    let mut all: Vec<String> = calendars.iter().map(|c| c.calendar_id.clone()).collect();
    all.sort();

    let (status, content_type, html) = h.page().await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.contains("<b>250</b><span>calendars</span>"), "{html}");
    let reauth: Vec<&CalendarFixture> = calendars.iter().filter(|c| c.owner.is_some()).collect();
    assert!(
        html.contains(&format!(
            "<b>{}</b><span>calendars need re-authorisation</span>",
            reauth.len()
        )),
        "{html}"
    );
    // The first page: 100 calendars by id.
    let first = row_ids(part(&html, "<section id=\"calendars\">", "</section>"));
    assert_eq!(first, all[..100].to_vec());

    // The worst lists, ordered as the store ranks them, 10 at most.
    let mut lagging: Vec<&CalendarFixture> = calendars.iter().collect();
    lagging.sort_by_key(|c| (c.last_sync_at.unwrap_or(0), c.calendar_id.clone()));
    assert_eq!(
        row_ids(part(&html, "<h3 id=\"lagging\">", "<h3")),
        lagging[..10]
            .iter()
            .map(|c| c.calendar_id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        lagging[0].calendar_id, "cal042@example.com",
        "never synced first"
    );
    let mut failing: Vec<&CalendarFixture> =
        calendars.iter().filter(|c| c.sync_failures > 0).collect();
    failing.sort_by_key(|c| (-c.sync_failures, c.calendar_id.clone()));
    let failing_part = part(&html, "<h3 id=\"failing\">", "<h3");
    assert_eq!(
        row_ids(failing_part),
        failing
            .iter()
            .map(|c| c.calendar_id.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        failing_part.contains("&lt;i&gt;backend&lt;/i&gt; &amp; 503"),
        "errors are escaped: {failing_part}"
    );
    let mut reauth_ids: Vec<String> = reauth.iter().map(|c| c.calendar_id.clone()).collect();
    reauth_ids.sort();
    let reauth_part = part(&html, "<h3 id=\"reauth\">", "</section>");
    assert_eq!(row_ids(reauth_part), reauth_ids);
    assert!(reauth_part.contains("needs re-authorisation"));

    // Following "Next page" (limit 100) visits every calendar once.
    let mut seen = Vec::new();
    let mut query = String::new();
    let mut pages = 0;
    loop {
        let (status, _, html) = h.page_at(&query).await;
        assert_eq!(status, 200, "{query}: {html}");
        pages += 1;
        let section = part(&html, "<section id=\"calendars\">", "</section>");
        seen.extend(row_ids(section));
        // Every shown calendar's channel is looked up: even ones have a live channel.
        match section.find("rel=\"next\" href=\"") {
            Some(at) => {
                let rest = &section[at + "rel=\"next\" href=\"".len()..];
                query = unescape(&rest[..rest.find('"').unwrap()]);
                assert!(query.starts_with("?after="), "{query}");
            }
            None => break,
        }
        assert!(pages < 10, "the pages never end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every calendar once, in id order");

    // A smaller page keeps its limit in the next link; the markup id round-trips through it.
    let (_, _, html) = h.page_at("?limit=7&after=cal240%40example.com").await;
    let section = part(&html, "<section id=\"calendars\">", "</section>");
    assert_eq!(row_ids(section), all[241..248].to_vec());
    assert!(section.contains("limit=7"), "{section}");
    assert!(section.contains(">First page<"));
    let (_, _, html) = h.page_at("?limit=7&after=cal247%40example.com").await;
    let section = part(&html, "<section id=\"calendars\">", "</section>");
    assert_eq!(
        row_ids(section),
        vec!["cal248@example.com".to_owned(), all[249].clone()]
    );
    assert!(!section.contains("rel=\"next\""), "the last page");
    assert!(!html.contains("z<b>"), "ids are escaped");
    assert!(html.contains("z&lt;b&gt;&quot;&amp;&#39;x@example.com"));

    // Search: a literal part of the id (`_` is no wildcard); the form shows it escaped.
    let (_, _, html) = h.page_at("?search=cal12").await;
    let section = part(&html, "<section id=\"calendars\">", "</section>");
    assert_eq!(row_ids(section), all[120..130].to_vec());
    assert!(
        section.contains("name=\"search\" value=\"cal12\""),
        "{section}"
    );
    assert!(section.contains("<form method=\"get\""), "a GET form");
    let (_, _, html) = h.page_at("?search=cal_2").await;
    let section = part(&html, "<section id=\"calendars\">", "</section>");
    assert!(row_ids(section).is_empty());
    assert!(section.contains("No calendar matches."));
    let (status, _, html) = h.page_at("?search=%3Cb%3E%22").await;
    assert_eq!(status, 200);
    assert_eq!(
        row_ids(part(&html, "<section id=\"calendars\">", "</section>")),
        vec![all[249].clone()]
    );
    assert!(html.contains("value=\"&lt;b&gt;&quot;\""), "{html}");

    // Bad parameters: a 400 page saying what is allowed.
    for bad in [
        "?limit=0".to_owned(),
        "?limit=1001".to_owned(),
        "?limit=x".to_owned(),
        "?bogus=1".to_owned(),
        format!("?after={}", "a".repeat(1025)),
        format!("?search={}", "s".repeat(257)),
    ] {
        let (status, content_type, html) = h.page_at(&bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            content_type.starts_with("text/html"),
            "{bad}: {content_type}"
        );
        assert!(html.contains("limit must be 1 to 1000"), "{bad}: {html}");
    }

    // No secrets anywhere.
    for query in ["", "?search=cal", "?after=cal100%40example.com"] {
        let (_, _, html) = h.page_at(query).await;
        assert!(!html.contains("sealed-refresh-token"));
        assert!(!html.contains(KEY));
        assert!(!html.contains("fixture-"), "no channel ids");
        assert!(!html.to_ascii_lowercase().contains("<script"));
    }
}

/// Chromium, when installed (Debian's `chromium` package).
fn chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium with `args` after the common flags, stdout into `stdout`; killed after
/// 60 s. The runtime keeps serving the page while it waits.
async fn run_chromium(chromium: &Path, profile: &Path, args: &[String], stdout: &Path) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn headless_chromium_renders_the_status_page() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not installed; the status page was not rendered");
        return;
    };
    let h = start().await;
    h.conference_synced().await;

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "confsync-status-page-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status.png");

    run_chromium(
        &chromium,
        &dir.join("profile-shot"),
        &[
            "--window-size=1200,900".to_owned(),
            format!("--screenshot={}", png.display()),
            h.service.clone(),
        ],
        &dir.join("screenshot.out"),
    )
    .await;
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    // Measured with Debian's chromium 156 at 1200x900: `about:blank` and an empty HTML body
    // both give 5,063 bytes, a page holding one <h1> word 5,721 bytes; this status page (header
    // bar, totals cards, tables of text) about 73 KB. 10 KB sits between the two: a smaller file
    // means Chromium rendered (next to) nothing, not the status page.
    assert!(
        bytes.len() > 10 * 1024,
        "the screenshot is {} bytes: the page looks blank",
        bytes.len()
    );
    eprintln!(
        "status page screenshot: {} ({} bytes)",
        png.display(),
        bytes.len()
    );

    let dom = dir.join("dom.html");
    run_chromium(
        &chromium,
        &dir.join("profile-dom"),
        &["--dump-dom".to_owned(), h.service.clone()],
        &dom,
    )
    .await;
    let dom = std::fs::read_to_string(&dom).unwrap();
    assert!(
        dom.contains(ALICE),
        "the calendar id is in the rendered DOM: {dom}"
    );
    assert!(dom.contains("Recent changes"), "{dom}");

    // Keep the screenshot when asked (to look at it); else clean up.
    if std::env::var_os("CONFSYNC_KEEP_SCREENSHOT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
