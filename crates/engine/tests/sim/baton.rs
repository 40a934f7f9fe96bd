//! The baton: a deterministic scheduler for logical tasks (syncs, drains, add-on API calls)
//! polled together on the test's current-thread runtime.
//!
//! Every Calendar and provider call of the simulation goes through a gate ([`Baton::gate`]):
//! the calling task parks there, and the simulation's seeded scheduler decides which parked
//! task proceeds next ([`Tasks::advance`]). Only one task runs between two gates, so whatever a
//! task does with the store between gates (sqlx answers on its own thread) completes before the
//! next task moves: each seed replays exactly, whatever the threads' timing.
//!
//! Gates come in two kinds: before a call, and after a call returned but before the caller sees
//! the answer ([`Gate::After`]). The scheduler answers an after-gate with "lose it" or not: a lost
//! answer means the call took effect (the emulator's event was patched, the provider's meeting
//! created) and the caller gets a timeout.
//!
//! A call made outside any task (the harness's own setup and checks) passes its gates at once.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;

/// Where a parked task waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Before a call: nothing of it has happened yet.
    Before,
    /// After a call took effect, before its caller sees the answer (a lost answer lands here).
    After,
}

#[derive(Debug, Clone)]
pub struct Parked {
    pub gate: Gate,
    pub label: String,
}

#[derive(Default)]
struct State {
    /// The task being polled, if any.
    current: Option<u64>,
    parked: BTreeMap<u64, Parked>,
    /// Tasks allowed past their gate, with the answer for an after-gate (true: lose the answer).
    granted: HashMap<u64, bool>,
}

/// Shared between the scheduler and the gated calendar and provider.
#[derive(Default)]
pub struct Baton {
    state: Mutex<State>,
}

impl Baton {
    /// A gate: parks the current task until the scheduler lets it through. Answers true when the
    /// scheduler decided that the call's answer is lost (only for [`Gate::After`]).
    pub fn gate(&self, gate: Gate, label: String) -> impl Future<Output = bool> + Send + '_ {
        let mut first = true;
        let mut me = None;
        let mut label = Some(label);
        std::future::poll_fn(move |_cx| {
            let mut s = self.state.lock().unwrap();
            if first {
                first = false;
                let Some(id) = s.current else {
                    return Poll::Ready(false); // not inside a task: no gate
                };
                me = Some(id);
                s.parked.insert(
                    id,
                    Parked {
                        gate,
                        label: label.take().unwrap_or_default(),
                    },
                );
                // No waker is kept: the scheduler polls the task again when it grants it.
                return Poll::Pending;
            }
            let id = me.expect("a parked gate has its task");
            match s.granted.remove(&id) {
                Some(lose) => Poll::Ready(lose && gate == Gate::After),
                None => Poll::Pending,
            }
        })
    }

    fn is_parked(&self, id: u64) -> bool {
        self.state.lock().unwrap().parked.contains_key(&id)
    }
}

type TaskFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// One logical task.
pub struct Task<K, T> {
    pub id: u64,
    pub kind: K,
    future: TaskFuture<T>,
    /// Gates passed so far (0: not yet at its first call).
    pub gates_passed: u32,
    started: bool,
}

/// The tasks in flight, in the order they were spawned.
pub struct Tasks<K, T> {
    pub baton: std::sync::Arc<Baton>,
    tasks: Vec<Task<K, T>>,
    next_id: u64,
}

/// What one [`Tasks::advance`] did.
pub enum Advanced<K, T> {
    /// The task parked at its next gate.
    Parked { kind: K, at: Parked },
    /// The task finished.
    Done { kind: K, output: T },
}

impl<K: Clone, T> Tasks<K, T> {
    pub fn new(baton: std::sync::Arc<Baton>) -> Self {
        Tasks {
            baton,
            tasks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn spawn(&mut self, kind: K, future: impl Future<Output = T> + 'static) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tasks.push(Task {
            id,
            kind,
            future: Box::pin(future),
            gates_passed: 0,
            started: false,
        });
        id
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Task<K, T>> {
        self.tasks.iter()
    }

    /// Where task `index` waits (None: not started yet).
    pub fn parked_at(&self, index: usize) -> Option<Parked> {
        let id = self.tasks[index].id;
        self.baton.state.lock().unwrap().parked.get(&id).cloned()
    }

    /// Drops every task where it stands (a process restart). Answers their kinds.
    pub fn drop_all(&mut self) -> Vec<K> {
        let kinds = self.tasks.iter().map(|t| t.kind.clone()).collect();
        self.tasks.clear();
        let mut s = self.baton.state.lock().unwrap();
        s.parked.clear();
        s.granted.clear();
        s.current = None;
        kinds
    }

    /// Lets task `index` run to its next gate (or to its end). `lose` answers an after-gate.
    /// Store operations in between complete before this returns.
    pub async fn advance(&mut self, index: usize, lose: bool) -> Advanced<K, T> {
        let baton = self.baton.clone();
        let task = &mut self.tasks[index];
        let id = task.id;
        {
            let mut s = baton.state.lock().unwrap();
            s.current = Some(id);
            if task.started {
                s.parked.remove(&id);
                s.granted.insert(id, lose);
                task.gates_passed += 1;
            }
        }
        task.started = true;
        let future = &mut task.future;
        let result = std::future::poll_fn(|cx| {
            baton.state.lock().unwrap().current = Some(id);
            let poll = future.as_mut().poll(cx);
            baton.state.lock().unwrap().current = None;
            match poll {
                Poll::Ready(v) => Poll::Ready(Some(v)),
                // Parked at its next gate: this step is over.
                Poll::Pending if baton.is_parked(id) => Poll::Ready(None),
                // Waiting on the store (sqlx answers on its own thread): its waker wakes us.
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match result {
            Some(output) => {
                let task = self.tasks.remove(index);
                self.baton.state.lock().unwrap().granted.remove(&id);
                Advanced::Done {
                    kind: task.kind,
                    output,
                }
            }
            None => {
                let at = self.parked_at(index).expect("parked");
                Advanced::Parked {
                    kind: self.tasks[index].kind.clone(),
                    at,
                }
            }
        }
    }

    /// Runs task `index` to its end, never losing an answer.
    pub async fn finish(&mut self, index: usize) -> (K, T) {
        loop {
            if let Advanced::Done { kind, output } = self.advance(index, false).await {
                return (kind, output);
            }
        }
    }
}
