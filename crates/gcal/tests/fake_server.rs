//! The client against servers that misbehave in ways the emulator does not: HTML error pages,
//! garbage and truncated JSON. Every answer must become a classified error, never a panic.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::fast_retry;
use confsync_gcal::{ApiMethod, Client, GcalError, ListParams, RetryPolicy, StaticToken};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BAD_GATEWAY_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1><p>The upstream server did not answer.</p></body></html>";

/// Serves `answers` in order (the last one repeats) on a free port; returns its base URL.
async fn serve(
    answers: Vec<(StatusCode, &'static str, &'static str)>,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let answers = answers.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, content_type, body) = answers[n.min(answers.len() - 1)];
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), hits)
}

fn client(base: &str, retry: RetryPolicy) -> Client {
    Client::new(base, Arc::new(StaticToken("secret-token".into())), retry).unwrap()
}

#[tokio::test]
async fn an_html_502_is_retried_and_garbage_json_after_it_is_a_decode_error() {
    let (base, hits) = serve(vec![
        (StatusCode::BAD_GATEWAY, "text/html", BAD_GATEWAY_PAGE),
        (StatusCode::OK, "application/json", "{\"items\": ["),
    ])
    .await;
    let client = client(&base, fast_retry());
    let error = client
        .list_events("alice@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Decode { .. }), "{error:?}");
    assert_eq!(error.status(), Some(200));
    assert_eq!(error.method(), Some("calendar.events.list"));
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the 502 was retried once");
    assert_eq!(client.request_count(ApiMethod::EventsList), 2);
    let text = error.to_string();
    assert!(text.contains("calendar#events"), "{text}");
    assert!(!text.contains("secret-token"), "{text}");
}

#[tokio::test]
async fn an_html_502_that_persists_is_transient_with_a_readable_message() {
    let (base, hits) = serve(vec![(
        StatusCode::BAD_GATEWAY,
        "text/html",
        BAD_GATEWAY_PAGE,
    )])
    .await;
    let client = client(
        &base,
        RetryPolicy {
            max_attempts: 2,
            ..fast_retry()
        },
    );
    let error = client
        .get_event("alice@example.com", "e1")
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!((error.status(), error.reason()), (Some(502), None));
    assert!(
        error
            .context()
            .unwrap()
            .message
            .contains("502 Bad Gateway Bad Gateway The upstream"),
        "{error}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn html_empty_and_mistyped_success_bodies_are_decode_errors() {
    for body in ["<html>maintenance</html>", "", "null", "[1]", "{\"id\": 5}"] {
        let (base, _) = serve(vec![(StatusCode::OK, "text/html", body)]).await;
        let error = client(&base, fast_retry())
            .get_event("alice@example.com", "e1")
            .await
            .unwrap_err();
        assert!(
            matches!(error, GcalError::Decode { .. }),
            "{body:?}: {error:?}"
        );
    }
    for body in ["<html>maintenance</html>", "", "null", "{\"items\": 5}"] {
        let (base, hits) = serve(vec![(StatusCode::OK, "application/json", body)]).await;
        let error = client(&base, fast_retry())
            .list_events("alice@example.com", &ListParams::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, GcalError::Decode { .. }),
            "{body:?}: {error:?}"
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "decode errors are not retried"
        );
    }
}

#[tokio::test]
async fn non_envelope_client_errors_are_classified_by_status() {
    let (base, hits) = serve(vec![(
        StatusCode::UNAUTHORIZED,
        "text/html",
        "<html>login required</html>",
    )])
    .await;
    let error = client(&base, fast_retry())
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Unauthorized { .. }), "{error:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one retry after invalidating the token"
    );

    let (base, hits) = serve(vec![(
        StatusCode::PAYLOAD_TOO_LARGE,
        "application/json",
        "{\"error\": {\"code\": 413}}",
    )])
    .await;
    let error = client(&base, fast_retry())
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Unexpected { .. }), "{error:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Answers every connection with `response` verbatim, then closes it.
async fn raw_server(response: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn a_body_cut_off_mid_transfer_is_transient() {
    let base = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"items\": [{\"id\": \"a\"",
    )
    .await;
    let client = client(
        &base,
        RetryPolicy {
            max_attempts: 2,
            ..fast_retry()
        },
    );
    let error = client
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!(client.request_count(ApiMethod::EventsList), 2);
}

#[tokio::test]
async fn a_server_that_is_not_http_is_a_classified_error() {
    let base = raw_server(b"\x00\x01garbage that is not HTTP\r\n\r\n").await;
    let client = client(&base, RetryPolicy::never());
    let error = client
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(&format!("http://{addr}/"), RetryPolicy::never());
    let error = client
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(error, GcalError::Transient { .. }), "{error:?}");
    assert_eq!(error.status(), None);
}

/// What a request carried: path and query, and its headers (lowercase names).
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<String> {
        let query = self.uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Records every request and answers `body`, gzip-encoded when the request asked for it the way
/// Google wants (`Accept-Encoding: gzip` and `gzip` in the user agent).
async fn recording_gzip_server(body: &'static str) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            let headers = request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            log.lock().unwrap().push(Seen {
                uri: request.uri().to_string(),
                headers,
            });
            if confsync_emulator::response::wants_gzip(request.headers()) {
                (
                    StatusCode::OK,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    confsync_emulator::response::compress(body.as_bytes(), 6),
                )
                    .into_response()
            } else {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), seen)
}

const MASKED_PAGE: &str = r#"{"nextSyncToken":"s1","items":[{"id":"a","etag":"\"1\"","status":"confirmed"},{"id":"b","status":"cancelled"}]}"#;

#[tokio::test]
async fn requests_ask_for_gzip_and_listings_carry_the_fields_mask() {
    let (base, seen) = recording_gzip_server(MASKED_PAGE).await;
    let client = client(&base, RetryPolicy::never());
    let mask = "nextPageToken,nextSyncToken,items(id,etag,status,start/dateTime)";
    let page = client
        .list_events_raw(
            "a@example.com",
            &ListParams {
                max_results: Some(2500),
                fields: Some(mask.into()),
                ..ListParams::default()
            },
        )
        .await
        .expect("the gzip answer decodes");
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[1].get(), r#"{"id":"b","status":"cancelled"}"#);
    assert_eq!(page.next_sync_token.as_deref(), Some("s1"));
    // The typed listing and events.get decode gzip too.
    let typed = client
        .list_events("a@example.com", &ListParams::default())
        .await
        .unwrap();
    assert_eq!(typed.items[0].etag.as_deref(), Some("\"1\""));
    let (base_event, seen_event) =
        recording_gzip_server(r#"{"id":"e1","etag":"\"7\"","summary":"S"}"#).await;
    let event = client_for(&base_event)
        .get_event("a@example.com", "e1")
        .await
        .unwrap();
    assert_eq!(event.summary.as_deref(), Some("S"));

    let seen = seen.lock().unwrap().clone();
    let requests = seen
        .iter()
        .chain(seen_event.lock().unwrap().iter())
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(
            request.header("accept-encoding"),
            Some("gzip"),
            "{request:?}"
        );
        assert_eq!(
            request.header("user-agent"),
            Some(confsync_gcal::USER_AGENT),
            "{request:?}"
        );
    }
    assert!(confsync_gcal::USER_AGENT.starts_with("confsync/"));
    assert!(confsync_gcal::USER_AGENT.ends_with(" (gzip)"));
    assert_eq!(requests[0].param("fields").as_deref(), Some(mask));
    assert_eq!(requests[0].param("maxResults").as_deref(), Some("2500"));
    // Without a mask (the typed listing) and on events.get (the write-back's read): no `fields`.
    assert_eq!(requests[1].param("fields"), None);
    assert_eq!(requests[2].param("fields"), None);
    assert!(
        requests[2].uri.ends_with("/events/e1"),
        "{}",
        requests[2].uri
    );
}

fn client_for(base: &str) -> Client {
    client(base, RetryPolicy::never())
}

#[tokio::test]
async fn a_custom_user_agent_gets_gzip_appended_and_gzip_can_be_turned_off() {
    let (base, seen) = recording_gzip_server(MASKED_PAGE).await;
    let custom = Client::builder(&base, Arc::new(StaticToken("t".into())))
        .retry(RetryPolicy::never())
        .user_agent("my-tool/2")
        .build()
        .unwrap();
    custom
        .list_events_raw("a@example.com", &ListParams::default())
        .await
        .unwrap();
    let plain = Client::builder(&base, Arc::new(StaticToken("t".into())))
        .retry(RetryPolicy::never())
        .user_agent("my-tool/2")
        .gzip(false)
        .build()
        .unwrap();
    let page = plain
        .list_events_raw("a@example.com", &ListParams::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].header("user-agent"), Some("my-tool/2 (gzip)"));
    assert_eq!(seen[0].header("accept-encoding"), Some("gzip"));
    assert_eq!(seen[1].header("user-agent"), Some("my-tool/2"));
    assert_eq!(seen[1].header("accept-encoding"), None);
}
