//! Accepting connections: the HTTP/1 server `confsync serve` runs the router on, with the limits
//! a public endpoint needs (axum's own `serve` has none of them).
//!
//! - A connection limit: at most [`ServerLimits::max_connections`] are served at once; beyond
//!   that new connections wait in the kernel's accept backlog until one closes.
//! - A header-read timeout: a request's headers must arrive within
//!   [`ServerLimits::header_read_timeout`] of its first byte (of the connection's start for its
//!   first request), so a client dripping headers (slowloris) holds its slot that long at most.
//! - An idle timeout: a connection on which nothing happens for
//!   [`ServerLimits::idle_timeout`] while no request is being handled is closed (an idle
//!   keep-alive connection, or a client that stopped reading its answer). Handlers are bounded
//!   by the router's own request deadline.
//! - Header size: at most [`ServerLimits::max_header_bytes`] (request line included).
//!
//! hyper answers requests it cannot parse itself (400, 414, 431) with an empty body; those
//! answers are rewritten on the way out with the same JSON error body the router gives, so
//! every 4xx a client sees explains itself.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

/// What one server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// Longest a connection may sit without traffic while no request is being handled.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// How long a shutdown waits for requests in progress (longer than the router's deadline).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(35);

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in progress finish (up to [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            router.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it closes: all of them back means all closed.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max as u32)).await;
    Ok(())
}

/// A failed accept: a connection reset before we took it is nothing; running out of file
/// descriptors (or another resource) is waited out briefly instead of spinning.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    warn!(error = %e, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        max_header_bytes: limits.max_header_bytes,
        rewrite: None,
        linger: None,
    });
    let tower = TowerToHyperService::new(router);
    let counted = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let guard = counted.request_started();
        let call = hyper::service::Service::call(&tower, request);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The watchdog below enforces both timeouts; hyper's own is the backstop.
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let watchdog = watchdog(activity, limits);
    tokio::pin!(watchdog);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = &mut watchdog => {
            debug!("connection closed: headers too slow or idle too long");
            return; // dropping the connection closes the socket
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
    // Shutting down: finish the request in progress, take no other.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = &mut watchdog => {}
    }
}

const NONE: u64 = u64::MAX;

/// What happened on one connection, in milliseconds since it was accepted.
struct Activity {
    origin: Instant,
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// Requests handed to the router so far.
    requests: AtomicU64,
    /// When the first byte of the next request's head arrived (NONE: not yet).
    head_started: AtomicU64,
    /// When the last handler finished.
    last_done: AtomicU64,
    /// When bytes were last written.
    last_write: AtomicU64,
    changed: Notify,
}

/// Counts a request as in progress while it lives.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done.store(a.now(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            last_done: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(NONE, self.now(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_write.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Release);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When the connection must be closed if nothing changes (None: a request is in progress).
    fn deadline(&self, limits: &ServerLimits) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let header = limits.header_read_timeout.as_millis() as u64;
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some(header); // the first request's head, from the accept
        }
        match self.head_started.load(Ordering::Acquire) {
            NONE => {
                let quiet_since = self
                    .last_done
                    .load(Ordering::Relaxed)
                    .max(self.last_write.load(Ordering::Relaxed));
                Some(quiet_since + limits.idle_timeout.as_millis() as u64)
            }
            started => Some(started + header),
        }
    }
}

/// Completes when the connection has outstayed its limits.
async fn watchdog(activity: Arc<Activity>, limits: ServerLimits) {
    loop {
        let now = activity.now();
        match activity.deadline(&limits) {
            Some(deadline) if now >= deadline => return,
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                    () = activity.changed.notified() => {}
                }
            }
            None => activity.changed.notified().await,
        }
    }
}

/// The socket, watched: reads and writes are noted for the watchdog, and hyper's own empty
/// error answers are given a JSON body.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    max_header_bytes: usize,
    /// A replacement being written: the bytes and how many went out.
    rewrite: Option<(Vec<u8>, usize)>,
    /// After a rewritten error answer the connection closes; what the client sent and hyper
    /// did not read is drained first (for at most [`LINGER`]), else closing with unread data
    /// would reset the connection and could discard the answer before the client reads it.
    linger: Option<Linger>,
}

/// Longest a connection lingers after an error answer, and most bytes it drains.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

struct Linger {
    /// The write side was shut down (FIN sent).
    shut: bool,
    drained: usize,
    until: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none()
            && let Some(replacement) = automatic_error(buf, this.max_header_bytes)
        {
            this.rewrite = Some((replacement, 0));
        }
        if let Some((bytes, written)) = &mut this.rewrite {
            // hyper sees its head written whole once the replacement is.
            while *written < bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        *written += n;
                        this.activity.on_write();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            this.rewrite = None;
            this.linger = Some(Linger {
                shut: false,
                drained: 0,
                until: Box::pin(tokio::time::sleep(LINGER)),
            });
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(linger) = &mut this.linger else {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        };
        if !linger.shut {
            match Pin::new(&mut this.inner).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => linger.shut = true,
                other => return other,
            }
        }
        let mut scratch = [0u8; 4096];
        loop {
            if linger.drained >= LINGER_BYTES || linger.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => linger.drained += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// hyper's own answer to a request it could not parse is a bare head: a 4xx status,
/// `content-length: 0`, nothing else of note. (The router never sends an empty 4xx: its error
/// answers all have bodies, see `json_error_bodies`.) Answers the same status with a JSON body.
fn automatic_error(buf: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    if buf.len() > 512 || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let rest = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    let status = StatusCode::from_u16(rest.get(..3)?.parse().ok()?).ok()?;
    if !status.is_client_error()
        || !head
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let message = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            format!("the request's headers are too large (at most {max_header_bytes} bytes)")
        }
        StatusCode::URI_TOO_LONG => "the request's URI is too long".to_owned(),
        StatusCode::BAD_REQUEST => "malformed HTTP request".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let body = crate::json_error_body(status, &message).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let rewritten = String::from_utf8(automatic_error(bare, 1024).unwrap()).unwrap();
        assert!(rewritten.starts_with("HTTP/1.1 431 "), "{rewritten}");
        let (head, body) = rewritten.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], 431);
        assert!(json["error"]["message"].as_str().unwrap().contains("1024"));
        for kept in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            b"{\"HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(automatic_error(kept, 1024).is_none());
        }
    }
}
