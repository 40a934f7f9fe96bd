//! A fake provider server for the adapters' tests: a real HTTP server on 127.0.0.1:0 whose
//! behaviour is a model written from the provider's public API reference.
//!
//! Every request is recorded. The model's handler checks the request's shape and reports what is
//! wrong as a violation (and answers 400, as the provider would); each test ends with
//! [`Fake::assert_no_violations`]. Faults are queued per method and path prefix: a fault either
//! answers instead of the model ([`Fake::fail_next`]) or lets the model act and replaces its
//! answer, as when an answer is lost on the way back ([`Fake::lose_answer_next`]).
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::Value;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as `application/x-www-form-urlencoded` pairs.
    pub fn form(&self) -> BTreeMap<String, String> {
        decode_pairs(&String::from_utf8_lossy(&self.body))
            .into_iter()
            .collect()
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&value).unwrap(),
        }
    }

    /// A body sent as is (HTML error pages, truncated JSON).
    pub fn raw(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The model's request handler: model state, the request, where to report violations.
pub type Handler<S> = fn(&mut S, &Request, &mut Vec<String>) -> Reply;

enum Fault {
    Instead(Reply),
    After(Reply),
}

struct Shared<S> {
    model: S,
    requests: Vec<Request>,
    faults: VecDeque<(String, String, Fault)>,
    violations: Vec<String>,
}

struct Inner<S> {
    shared: Mutex<Shared<S>>,
    handler: Handler<S>,
}

/// A running fake server.
pub struct Fake<S> {
    inner: Arc<Inner<S>>,
    /// `http://127.0.0.1:port` (no trailing slash).
    pub url: String,
}

impl<S: Send + 'static> Fake<S> {
    pub async fn start(model: S, handler: Handler<S>) -> Fake<S> {
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared {
                model,
                requests: Vec::new(),
                faults: VecDeque::new(),
                violations: Vec::new(),
            }),
            handler,
        });
        let app = axum::Router::new()
            .fallback(serve::<S>)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { inner, url }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared<S>> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next request with this method and path prefix gets `reply`; the model never sees it.
    pub fn fail_next(&self, method: &str, path_prefix: &str, reply: Reply) {
        self.shared()
            .faults
            .push_back((method.into(), path_prefix.into(), Fault::Instead(reply)));
    }

    /// The next request with this method and path prefix reaches the model (which acts), but
    /// the client gets `reply` instead of the model's answer.
    pub fn lose_answer_next(&self, method: &str, path_prefix: &str, reply: Reply) {
        self.shared()
            .faults
            .push_back((method.into(), path_prefix.into(), Fault::After(reply)));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared().requests.clone()
    }

    /// Recorded requests with this method whose path starts with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .collect()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests_to(method, path_prefix).len()
    }

    pub fn clear_requests(&self) {
        self.shared().requests.clear();
    }

    /// Reads or changes the model.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.shared().model)
    }

    pub fn assert_no_violations(&self) {
        let violations = self.shared().violations.clone();
        assert!(
            violations.is_empty(),
            "the fake saw requests its API reference does not allow:\n{}",
            violations.join("\n")
        );
    }
}

async fn serve<S: Send + 'static>(
    State(inner): State<Arc<Inner<S>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method: method.as_str().to_owned(),
        path: percent_decode(uri.path()),
        query: uri.query().map(decode_pairs).unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let reply = {
        let mut guard = inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        let shared = &mut *guard;
        shared.requests.push(request.clone());
        let fault = shared
            .faults
            .iter()
            .position(|(m, p, _)| *m == request.method && request.path.starts_with(p.as_str()))
            .and_then(|i| shared.faults.remove(i))
            .map(|(_, _, f)| f);
        match fault {
            Some(Fault::Instead(reply)) => reply,
            Some(Fault::After(reply)) => {
                (inner.handler)(&mut shared.model, &request, &mut shared.violations);
                reply
            }
            None => (inner.handler)(&mut shared.model, &request, &mut shared.violations),
        }
    };
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response.body(Body::from(reply.body)).unwrap()
}

fn decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Checks a JSON object has only these keys; reports the others.
pub fn only_keys(value: &Value, allowed: &[&str], what: &str, violations: &mut Vec<String>) {
    match value.as_object() {
        Some(map) => {
            for key in map.keys() {
                if !allowed.contains(&key.as_str()) {
                    violations.push(format!("{what}: unexpected field {key:?}"));
                }
            }
        }
        None => violations.push(format!("{what}: not a JSON object: {value}")),
    }
}

/// A violation answered as the provider would: 400 with a message.
pub fn bad_request(violations: &mut Vec<String>, message: String) -> Reply {
    violations.push(message.clone());
    Reply::json(400, serde_json::json!({ "message": message }))
}
