//! Hostile traffic costs nothing: what an attacker-style probe of `confsync serve` sends (made-up
//! push notifications, oversized headers, dripping connections, hostile ids, malformed message
//! numbers, requests the framework refuses) is answered cheaply, with a JSON error, without an
//! outbound call, a store row or memory kept per request. Everything runs over real HTTP against
//! the server `confsync serve` runs ([`confsync_service::serve`]).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use confsync_service::ServerLimits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: &str = "alice@example.com";
const KEY: &str = "cs_hostile-test-key";

struct Harness {
    r: common::Running,
}

async fn start(push: bool, limits: ServerLimits) -> Harness {
    let push = push.then(|| common::Push {
        ttl_seconds: None,
        renew_check: Duration::from_secs(60),
    });
    Harness {
        r: common::start_with(KEY, push, limits).await,
    }
}

impl Harness {
    fn addr(&self) -> SocketAddr {
        self.r
            .service
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap()
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}: not JSON: {text:?}"));
        (status, body, content_type)
    }

    async fn stats(&self, method: &str) -> u64 {
        let v: Value = self
            .r
            .http
            .get(format!("{}emulator/stats", self.r.calendar))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["requests"][method].as_u64().unwrap_or(0)
    }

    async fn webhooks(&self) -> Value {
        let status: Value = self
            .r
            .http
            .get(format!("{}v1/status", self.r.service))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["webhooks"].clone()
    }

    async fn until<T>(&self, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        for _ in 0..400 {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition never met");
    }

    async fn create_conference(&self, event_id: &str) -> Value {
        self.r
            .http
            .post(format!("{}v1/conferences", self.r.service))
            .bearer_auth(KEY)
            .json(&json!({"calendarId": ALICE, "eventId": event_id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Our live channel on the emulator (id, resource id, token, last message number).
    async fn live_channel(&self) -> Value {
        self.until(async || {
            let v: Value = self
                .r
                .http
                .get(format!("{}emulator/channels", self.r.calendar))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let channel = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["active"] == true && c["lastMessageNumber"].as_i64() >= Some(1))
                .cloned()?;
            // ... and the service has taken its `sync` message.
            let id = channel["id"].as_str().unwrap();
            let highest = self.r.store.channel_highest_message(id).await.unwrap();
            (highest == channel["lastMessageNumber"].as_i64()).then_some(channel)
        })
        .await
    }

    fn notify(&self, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut request = self
            .r
            .http
            .post(format!("{}webhooks/google", self.r.service));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request
    }

    /// Puts an event with our conference on Alice's calendar; answers when the meeting took
    /// its title (through the push notification the change causes).
    async fn change_reaches_meeting(&self, conference: &Value, event_id: &str, title: &str) {
        let id = conference["conferenceId"].as_str().unwrap().to_owned();
        let e = json!({"id": event_id, "summary": title, "start": {"dateTime": "2026-12-03T10:00:00Z"}, "end": {"dateTime": "2026-12-03T11:00:00Z"}, "conferenceData": conference});
        let response = self
            .r
            .http
            .post(format!(
                "{}calendar/v3/calendars/primary/events?conferenceDataVersion=1",
                self.r.calendar
            ))
            .bearer_auth(format!("dev:{ALICE}"))
            .json(&e)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        self.until(async || {
            let m = self.r.store.meeting(&id).await.unwrap()?;
            let spec: confsync_core::model::MeetingSpec =
                serde_json::from_str(&m.spec_json).unwrap();
            (spec.title == title).then_some(())
        })
        .await;
    }
}

/// (a) A flood of notifications with made-up channel ids: no channels.stop, no store row, no
/// memory per id, and a real change still arrives at once.
#[tokio::test]
async fn forged_notifications_cost_no_outbound_call_no_store_row_and_no_memory() {
    let h = start(true, ServerLimits::default()).await;
    let conference = h.create_conference("flood00001").await;
    let channel = h.live_channel().await;
    let resource = channel["resourceId"].as_str().unwrap();
    let stops_before = h.stats("calendar.channels.stop").await;
    let rows_before = h.r.store.channel_count().await.unwrap();

    let forged: Vec<String> = (0..600)
        .map(|i| format!("cs1-{i:0>60}")[..64].to_owned())
        .chain((0..200).map(|i| format!("cs-made-up-{i}")))
        .collect();
    let mut tasks = Vec::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for (i, id) in forged.into_iter().enumerate() {
        let gate = gate.clone();
        let request = h.notify(&[
            ("X-Goog-Channel-ID", &id),
            ("X-Goog-Resource-ID", resource),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Channel-Token", "guess"),
            ("X-Goog-Message-Number", &(i + 10).to_string()),
        ]);
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }));
    }
    let started = Instant::now();
    h.change_reaches_meeting(&conference, "flood00001", "Flooded")
        .await;
    let latency = started.elapsed();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], 400, "{body}");
    }
    assert!(
        latency < Duration::from_secs(10),
        "a real change waited {latency:?} behind the flood"
    );
    assert_eq!(
        h.stats("calendar.channels.stop").await,
        stops_before,
        "no outbound call for made-up ids"
    );
    assert_eq!(h.r.store.channel_count().await.unwrap(), rows_before);
    let channels = h.r.channels.as_ref().unwrap();
    assert_eq!(channels.remembered_ids(), 0, "no memory per made-up id");
    let webhooks = h.webhooks().await;
    assert!(webhooks["rejected"].as_u64().unwrap() >= 800, "{webhooks}");
    assert_eq!(webhooks["orphans"], 0);
    assert_eq!(webhooks["orphanStops"], 0);
}

/// (a) Our own channels that we no longer know are stopped, but through a budget of their own:
/// a few stops a minute, each id once.
#[tokio::test]
async fn genuine_orphans_are_stopped_through_their_own_small_budget() {
    let h = start(true, ServerLimits::default()).await;
    let conference = h.create_conference("orphan0001").await;
    h.live_channel().await;
    let stops_before = h.stats("calendar.channels.stop").await;
    let key = common::channel_key();
    let orphans: Vec<String> = (0..40).map(|_| key.new_id()).collect();
    for id in orphans.iter().chain(orphans.iter()) {
        let response = h
            .notify(&[
                ("X-Goog-Channel-ID", id),
                ("X-Goog-Resource-ID", "some-resource"),
                ("X-Goog-Resource-State", "exists"),
                ("X-Goog-Message-Number", "7"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "orphans are acknowledged");
    }
    // The five of the budget go out (in the background), no more.
    h.until(async || (h.stats("calendar.channels.stop").await == stops_before + 5).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats("calendar.channels.stop").await, stops_before + 5);
    let webhooks = h.webhooks().await;
    assert_eq!(webhooks["orphans"], 80, "{webhooks}");
    assert_eq!(webhooks["orphanStops"], 5, "{webhooks}");
    assert!(h.r.channels.as_ref().unwrap().remembered_ids() <= 5 + 1);
    // Syncs were not held up.
    let started = Instant::now();
    h.change_reaches_meeting(&conference, "orphan0001", "Still fast")
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// (a) Push headers longer than Google's are refused before any work.
#[tokio::test]
async fn oversized_push_headers_are_refused_before_any_work() {
    let h = start(true, ServerLimits::default()).await;
    h.create_conference("sizes00001").await;
    let channel = h.live_channel().await;
    let id = channel["id"].as_str().unwrap();
    let resource = channel["resourceId"].as_str().unwrap();
    let token = channel["token"].as_str().unwrap();
    let number = (channel["lastMessageNumber"].as_u64().unwrap() + 1).to_string();
    let long_id = format!("{id}{}", "a".repeat(65 - id.len()));
    let long_resource = "r".repeat(257);
    let long_token = "t".repeat(257);
    for headers in [
        vec![
            ("X-Goog-Channel-ID", long_id.as_str()),
            ("X-Goog-Resource-ID", resource),
        ],
        vec![
            ("X-Goog-Channel-ID", id),
            ("X-Goog-Resource-ID", long_resource.as_str()),
        ],
        vec![
            ("X-Goog-Channel-ID", id),
            ("X-Goog-Resource-ID", resource),
            ("X-Goog-Channel-Token", long_token.as_str()),
        ],
        vec![
            ("X-Goog-Channel-ID", "cs1-a b"),
            ("X-Goog-Resource-ID", resource),
        ],
    ] {
        let mut all = headers.clone();
        all.push(("X-Goog-Resource-State", "exists"));
        all.push(("X-Goog-Message-Number", &number));
        if !headers.iter().any(|(k, _)| *k == "X-Goog-Channel-Token") {
            all.push(("X-Goog-Channel-Token", token));
        }
        let (status, body, _) = h.json(h.notify(&all)).await;
        assert_eq!(status, 400, "{body}");
    }
    // A 200 KiB id does not even reach the router: the header limit answers 431, in JSON.
    let huge = "c".repeat(200 * 1024);
    let (status, body, content_type) = h.json(h.notify(&[("X-Goog-Channel-ID", &huge)])).await;
    assert_eq!((status, content_type.as_str()), (431, "application/json"));
    assert_eq!(body["error"]["code"], 431);
    assert_eq!(
        h.r.store.channel_highest_message(id).await.unwrap(),
        Some(channel["lastMessageNumber"].as_i64().unwrap()),
        "nothing was accepted"
    );
    assert_eq!(h.r.channels.as_ref().unwrap().remembered_ids(), 0);
}

/// (e) X-Goog-Message-Number is a decimal integer of at least 1, else 400 without effect; the
/// highest one accepted is the store's, so a replay is caught whatever the process remembers.
#[tokio::test]
async fn message_numbers_are_strict_and_replays_are_caught_by_the_store() {
    let h = start(true, ServerLimits::default()).await;
    h.create_conference("numbers001").await;
    let channel = h.live_channel().await;
    let id = channel["id"].as_str().unwrap();
    let resource = channel["resourceId"].as_str().unwrap();
    let token = channel["token"].as_str().unwrap();
    let highest =
        h.r.store
            .channel_highest_message(id)
            .await
            .unwrap()
            .unwrap();
    assert!(highest >= 1, "the sync message was recorded");
    let notify = |number: &str| {
        let mut headers = vec![
            ("X-Goog-Channel-ID", id),
            ("X-Goog-Resource-ID", resource),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Channel-Token", token),
        ];
        if !number.is_empty() {
            headers.push(("X-Goog-Message-Number", number));
        }
        h.notify(&headers)
    };
    let before = h.webhooks().await;
    for bad in [
        "",
        "0",
        "-1",
        "abc",
        "+5",
        "1.5",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let (status, body, _) = h.json(notify(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Message-Number"),
            "{body}"
        );
    }
    let after = h.webhooks().await;
    assert_eq!(after["received"], before["received"], "no side effect");
    assert_eq!(after["duplicates"], before["duplicates"]);
    assert_eq!(
        h.r.store.channel_highest_message(id).await.unwrap(),
        Some(highest)
    );

    // A new number is accepted once; the same again is a replay.
    let next = (highest + 10).to_string();
    assert_eq!(notify(&next).send().await.unwrap().status(), 200);
    assert_eq!(
        h.r.store.channel_highest_message(id).await.unwrap(),
        Some(highest + 10)
    );
    let replays = h.webhooks().await["duplicates"].as_u64().unwrap();
    assert_eq!(notify(&next).send().await.unwrap().status(), 200);
    assert_eq!(
        h.webhooks().await["duplicates"].as_u64().unwrap(),
        replays + 1
    );
    // What the store accepted (another delivery, a previous run) counts, not memory.
    assert!(
        h.r.store
            .channel_message_accept(id, highest + 1000, 0)
            .await
            .unwrap()
    );
    assert_eq!(
        notify(&(highest + 500).to_string())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        h.webhooks().await["duplicates"].as_u64().unwrap(),
        replays + 2
    );
    // Concurrent deliveries of one new number: one is acted on.
    let number = (highest + 2000).to_string();
    let answers = futures_join((0..8).map(|_| notify(&number).send()).collect::<Vec<_>>()).await;
    assert!(answers.iter().all(|s| *s == 200));
    assert_eq!(
        h.webhooks().await["duplicates"].as_u64().unwrap(),
        replays + 2 + 7
    );
}

async fn futures_join(
    requests: Vec<
        impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
    >,
) -> Vec<u16> {
    let tasks: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap().status().as_u16());
    }
    out
}

/// Opens a connection that starts a request and then sends a header byte every 100 ms.
async fn dripping(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confsync\r\n")
        .await
        .unwrap();
    stream
}

/// Whether the server closed `stream` (EOF or reset) within `wait`, dripping meanwhile.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if stream.write_all(b"X").await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // an answer (e.g. 408/400): keep reading for the close
            Err(_) => {}
        }
    }
    false
}

async fn healthz_time(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    started.elapsed()
}

/// (c) Slowloris: connections dripping their headers do not starve anyone, and each is cut
/// once its headers are late.
#[tokio::test]
async fn dripping_headers_are_cut_and_do_not_starve_other_clients() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 256,
        ..ServerLimits::default()
    };
    let h = start(false, limits).await;
    let addr = h.addr();
    let mut drips = Vec::new();
    for _ in 0..150 {
        drips.push(dripping(addr).await);
    }
    for _ in 0..5 {
        let t = healthz_time(addr).await;
        assert!(t < Duration::from_millis(800), "/healthz took {t:?}");
    }
    let checks: Vec<_> = drips
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(4)).await })
        })
        .collect();
    for c in checks {
        assert!(
            c.await.unwrap(),
            "a dripping connection outlived its header deadline"
        );
    }
}

/// (c) At most `max_connections` are served at once; the next waits until a slow one is cut.
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(1500),
        max_connections: 16,
        ..ServerLimits::default()
    };
    let h = start(false, limits).await;
    let addr = h.addr();
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(dripping(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waited = healthz_time(addr).await;
    assert!(
        waited >= Duration::from_millis(700),
        "the 17th connection was served at once ({waited:?}): no limit"
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    drop(idle);
}

/// (c) A keep-alive connection with nothing to do is closed after the idle timeout.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(600),
        ..ServerLimits::default()
    };
    let h = start(false, limits).await;
    let mut stream = TcpStream::connect(h.addr()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confsync\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the idle connection was never closed");
    assert!(matches!(closed, Ok(0) | Err(_)));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(3),
        "{after:?}"
    );
}

/// (d) Ids no Google calendar or event could have are refused with a JSON 400 before anything
/// is stored or logged.
#[tokio::test]
async fn hostile_ids_are_refused_with_a_json_400_and_nothing_stored() {
    let h = start(false, ServerLimits::default()).await;
    let long = "e".repeat(60_000);
    for (calendar, event) in [
        ("alice\0@example.com", "event00001"),
        ("alice@example.com\r\nINFO forged log line", "event00001"),
        (ALICE, "evt\r\nforged"),
        (ALICE, "evt\0"),
        (ALICE, long.as_str()),
        ("..", "event00001"),
        (ALICE, ".."),
        (ALICE, "."),
        ("", "event00001"),
        (ALICE, ""),
        ("primary", "event00001"),
        ("a/../b@example.com", "event00001"),
    ] {
        let (status, body, _) = h
            .json(
                h.r.http
                    .post(format!("{}v1/conferences", h.r.service))
                    .bearer_auth(KEY)
                    .json(&json!({"calendarId": calendar, "eventId": event})),
            )
            .await;
        assert_eq!(status, 400, "{calendar:?} {event:?}: {body}");
        assert_eq!(body["error"]["conferenceErrorType"], "PERMANENT");
        assert_eq!(body["error"]["code"], 400);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains('\n') && message.len() < 200, "{message}");
    }
    assert!(
        h.r.store.calendars().await.unwrap().is_empty(),
        "no calendar stored"
    );
    for path in [
        "v1/calendars/alice%0D%0Aforged@example.com/sync",
        "v1/calendars/%00/sync",
        "v1/calendars/primary/sync",
    ] {
        let (status, body, _) = h
            .json(
                h.r.http
                    .post(format!("{}{path}", h.r.service))
                    .bearer_auth(KEY),
            )
            .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["conferenceErrorType"], "PERMANENT");
    }
    let long_path = format!("v1/conferences/{}", "c".repeat(2000));
    for path in [
        "v1/conferences/a%0D%0Ab",
        "v1/conferences/%00",
        long_path.as_str(),
    ] {
        let (status, body, _) = h
            .json(
                h.r.http
                    .get(format!("{}{path}", h.r.service))
                    .bearer_auth(KEY),
            )
            .await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert!(h.r.store.calendars().await.unwrap().is_empty());
    // Google-shaped ids still work.
    let (status, body, _) = h
        .json(
            h.r.http
                .post(format!("{}v1/conferences", h.r.service))
                .bearer_auth(KEY)
                .json(&json!({"calendarId": ALICE, "eventId": "abcdefgh01_20261201T100000Z"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends raw bytes, answers the status and the parsed JSON body of the answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}")),
    )
}

/// (f) Every 4xx explains itself in JSON, the framework's own included.
#[tokio::test]
async fn framework_errors_have_json_bodies() {
    let h = start(true, ServerLimits::default()).await;
    let http = &h.r.http;
    let base = &h.r.service;
    // Unknown route, outside and inside /v1.
    let (status, body, _) = h.json(http.get(format!("{base}nowhere"))).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (404, Some(404)));
    let (status, body, _) = h
        .json(http.get(format!("{base}v1/nowhere")).bearer_auth(KEY))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["conferenceErrorType"], "PERMANENT");
    // Wrong method.
    let (status, body, _) = h.json(http.get(format!("{base}webhooks/google"))).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (405, Some(405)));
    let (status, body, _) = h
        .json(
            http.delete(format!("{base}v1/conferences"))
                .bearer_auth(KEY),
        )
        .await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], 405);
    // Body too large.
    let (status, body, _) = h
        .json(
            http.post(format!("{base}v1/conferences"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 100 * 1024]),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["conferenceErrorType"], "PERMANENT");
    assert_eq!(body["error"]["code"], 413);
    // Query and path rejections.
    let (status, body, _) = h
        .json(http.get(format!("{base}oauth/google/start?calendar=a&calendar=b")))
        .await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    let (status, body, _) = h
        .json(
            http.get(format!("{base}v1/conferences/%FF%FE"))
                .bearer_auth(KEY),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["conferenceErrorType"], "PERMANENT");
    // Missing API key (not a framework answer, but the same shape).
    let (status, body, _) = h.json(http.get(format!("{base}v1/status"))).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (401, Some(401)));
    // Webhook refusals.
    let (status, body, _) = h.json(http.post(format!("{base}webhooks/google"))).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    // hyper's own answers: headers too large, a request it cannot parse.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: confsync\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40 * 1024)
    );
    let (status, body) = raw(h.addr(), big.as_bytes()).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (431, Some(431)));
    let (status, body) = raw(h.addr(), b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    // Error pages for browsers stay HTML.
    let page = http.get(format!("{base}join/nope")).send().await.unwrap();
    assert_eq!(page.status(), 404);
}

/// (f) The error-body middleware on a route with axum's JSON extractor: 415 and a JSON rejection.
#[tokio::test]
async fn json_extractor_rejections_get_json_bodies() {
    use axum::routing::post;
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }
    let app = axum::Router::new()
        .route("/echo", post(|_: axum::Json<Body>| async { "ok" }))
        .layer(axum::middleware::from_fn(
            confsync_service::json_error_bodies,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    tokio::spawn(confsync_service::serve(
        listener,
        app,
        ServerLimits::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let response = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 415);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type"),
        "{body}"
    );
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 422);
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 400);
}
