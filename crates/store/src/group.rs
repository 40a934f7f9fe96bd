//! Group commit: writes made at about the same moment by different callers, committed
//! together in one transaction (the outbox's reports, SQLite's push notifications).
//!
//! Every caller queues its item, lets the others arriving with it queue too (one yield), then
//! waits for the flush lock. Whoever holds it takes every item queued by then and commits them
//! (the caller's `commit` decides how, and must answer each); a caller whose item an earlier
//! holder committed finds its answer at once. Every answer is sent after the commit, so a
//! caller that is answered knows its write is durable. A crash before the commit loses the
//! whole group, as it would lose writes not yet made.

use std::future::Future;

use tokio::sync::oneshot;

/// Items of type `T` waiting for the next group commit, each answered with an `R`.
pub(crate) struct Group<T, R> {
    queue: std::sync::Mutex<Vec<Queued<T, R>>>,
    flush: tokio::sync::Mutex<()>,
}

impl<T, R> Default for Group<T, R> {
    fn default() -> Self {
        Group {
            queue: std::sync::Mutex::new(Vec::new()),
            flush: tokio::sync::Mutex::new(()),
        }
    }
}

/// One queued item and where its answer goes.
pub(crate) struct Queued<T, R> {
    pub(crate) item: T,
    pub(crate) answer: oneshot::Sender<R>,
}

impl<T, R> Group<T, R> {
    /// Queues `item` and answers what `commit` answered for it: `commit` runs (in this caller
    /// or another) on every item queued by the time the flush lock was taken. None when the
    /// caller that took this item was cancelled before it answered.
    pub(crate) async fn submit<F, Fut>(&self, item: T, commit: F) -> Option<R>
    where
        F: FnOnce(Vec<Queued<T, R>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (answer, mut answered) = oneshot::channel();
        lock(&self.queue).push(Queued { item, answer });
        // Items made at the same moment (a drain's window finishing together, a burst of
        // notifications) queue first, so the holder below commits them together.
        tokio::task::yield_now().await;
        let flushing = self.flush.lock().await;
        match answered.try_recv() {
            Ok(result) => return Some(result),
            // Queued before this caller took the lock: the batch below holds it.
            Err(oneshot::error::TryRecvError::Empty) => {
                let batch = std::mem::take(&mut *lock(&self.queue));
                commit(batch).await;
            }
            // Taken by a holder that was cancelled before it answered.
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
        drop(flushing);
        answered.await.ok()
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
