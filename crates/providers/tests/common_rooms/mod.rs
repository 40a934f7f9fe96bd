//! Fake-server scaffolding shared by the room and webhook adapters' tests (daily, jitsi,
//! bigbluebutton, webhook): a recorder of every request, canned fault answers, problem
//! reporting (a request that breaks the provider's API contract is answered 418 and listed, so a
//! test fails with the reason instead of a dropped connection), and meeting specs.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use confsync_providers::{MeetingSpec, When};
use serde_json::Value;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived, on tokio's clock (paused in the limiter tests).
    pub at: tokio::time::Instant,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `"POST /rooms"`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn new(status: u16, body: &str) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn json(status: u16, body: Value) -> Canned {
        Canned::new(status, &body.to_string()).header("content-type", "application/json")
    }

    pub fn html(status: u16) -> Canned {
        Canned::new(
            status,
            &format!("<html><head><title>{status} Bad Gateway</title></head><body><h1>{status}</h1></body></html>"),
        )
        .header("content-type", "text/html")
    }

    pub fn into_response(self) -> Response {
        let mut response = (
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            self.body,
        )
            .into_response();
        for (k, v) in self.headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        response
    }
}

/// What every fake server records.
#[derive(Clone, Default)]
pub struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Mutex<VecDeque<Canned>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    /// Records a request; answers the next queued fault, if any.
    pub fn record(
        &self,
        method: Method,
        uri: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (Seen, Option<Canned>) {
        let seen = Seen {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
            at: tokio::time::Instant::now(),
        };
        self.seen.lock().unwrap().push(seen.clone());
        (seen, self.faults.lock().unwrap().pop_front())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Seen::line).collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// The next requests get these answers, in order (after being recorded).
    pub fn fail_next(&self, answers: impl IntoIterator<Item = Canned>) {
        self.faults.lock().unwrap().extend(answers);
    }

    /// Notes a contract violation and answers 418 with it.
    pub fn problem(&self, what: String) -> Response {
        self.problems.lock().unwrap().push(what.clone());
        (StatusCode::IM_A_TEAPOT, what).into_response()
    }

    /// Fails the test if any request broke the contract.
    pub fn assert_clean(&self) {
        let problems = self.problems.lock().unwrap();
        assert!(problems.is_empty(), "contract violations: {problems:#?}");
    }
}

/// Serves `router` on 127.0.0.1 at a free port; answers its base URL (no trailing '/').
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

pub fn at(s: &str) -> When {
    When::At(s.parse().unwrap())
}

pub fn day(s: &str) -> When {
    When::Day(s.parse().unwrap())
}

/// A single meeting.
pub fn spec(title: &str, start: When, end: When) -> MeetingSpec {
    MeetingSpec {
        title: title.into(),
        description: "Agenda".into(),
        start,
        end,
        time_zone: Some("Europe/Berlin".into()),
        recurrence: vec![],
        attendees: vec!["a@example.com".into(), "b@example.com".into()],
        organizer: Some("o@example.com".into()),
    }
}

/// A weekly series.
pub fn series(title: &str, start: When, end: When) -> MeetingSpec {
    MeetingSpec {
        recurrence: vec!["RRULE:FREQ=WEEKLY;COUNT=10".into()],
        ..spec(title, start, end)
    }
}

/// Unix seconds of an instant.
pub fn unix(when: When) -> i64 {
    match when {
        When::At(t) => t.timestamp(),
        When::Day(_) => panic!("not an instant"),
    }
}
