//! An in-memory provider: the reference behaviour of a provider with every capability, for the
//! engine's tests, the deterministic simulation and benchmarks. It records every call and can be
//! told to fail the next calls, as a real provider would (timeouts, 429s).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

/// One meeting as the provider holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMeeting {
    pub spec: MeetingSpec,
    /// Occurrence key -> Some((start, end, title)) when moved, None when cancelled.
    pub occurrences: BTreeMap<String, Option<(When, When, String)>>,
    pub deleted: bool,
    pub join_url: String,
}

/// One call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: &'static str,
    pub meeting_id: String,
    pub key: String,
    /// Whether the call changed anything (a failed or repeated call did not).
    pub succeeded: bool,
}

#[derive(Default)]
struct State {
    meetings: BTreeMap<String, StoredMeeting>,
    by_key: BTreeMap<String, String>,
    calls: Vec<Call>,
    failures: VecDeque<ProviderError>,
    next_id: u64,
    /// The next this-many updates change the join link (as a provider that recreates does).
    rotate_join_url: u32,
    /// The next this-many updates answer `Recreate` (the change cannot be made in place).
    recreate: u32,
    /// Keys of every call so far (a repeated key is a replay, not a new request).
    seen_keys: HashSet<String>,
    /// Successful first-time updates that asked for the spec the meeting already had.
    wasted: u64,
}

/// Called when an update of a meeting starts (`false`) and when it succeeded (`true`).
pub type UpdateObserver = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// The in-memory provider.
pub struct MemoryProvider {
    name: String,
    capabilities: Capabilities,
    state: Mutex<State>,
    observer: Mutex<Option<UpdateObserver>>,
}

impl MemoryProvider {
    pub fn new(name: &str, capabilities: Capabilities) -> Self {
        MemoryProvider {
            name: name.to_owned(),
            capabilities,
            state: Mutex::new(State::default()),
            observer: Mutex::new(None),
        }
    }

    /// Successful updates that were not replays (a key seen before) and asked for the spec the
    /// meeting already had: a change that did not matter reached the provider.
    pub fn wasted_updates(&self) -> u64 {
        self.state().wasted
    }

    /// Reports each update's start and success (benchmarks time the provider's side with it).
    pub fn observe_updates(&self, observer: UpdateObserver) {
        *self.observer.lock().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    fn notify(&self, meeting_id: &str, done: bool) {
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(observer) = observer {
            observer(meeting_id, done);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next calls fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = ProviderError>) {
        self.state().failures.extend(errors);
    }

    /// The next `n` successful updates give the meeting a new join link.
    pub fn rotate_join_url_next(&self, n: u32) {
        self.state().rotate_join_url = n;
    }

    /// The next `n` updates of a live meeting answer [`ProviderError::Recreate`]: the change
    /// cannot be made in place (as a provider whose meetings expire, or that cannot move a
    /// meeting to another host, would answer).
    pub fn recreate_next(&self, n: u32) {
        self.state().recreate = n;
    }

    pub fn meeting(&self, id: &str) -> Option<StoredMeeting> {
        self.state().meetings.get(id).cloned()
    }

    pub fn meetings(&self) -> BTreeMap<String, StoredMeeting> {
        self.state().meetings.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Adds a meeting as if created earlier (fixtures).
    pub fn insert(&self, meeting_id: &str, spec: MeetingSpec) {
        let join_url = format!("https://meet.invalid/{meeting_id}");
        self.state().meetings.insert(
            meeting_id.to_owned(),
            StoredMeeting {
                spec,
                occurrences: BTreeMap::new(),
                deleted: false,
                join_url,
            },
        );
    }

    fn call<T>(
        &self,
        op: &'static str,
        meeting_id: &str,
        key: &str,
        apply: impl FnOnce(&mut State) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut state = self.state();
        let result = match state.failures.pop_front() {
            Some(error) => Err(error),
            None => apply(&mut state),
        };
        state.seen_keys.insert(key.to_owned());
        state.calls.push(Call {
            op,
            meeting_id: meeting_id.to_owned(),
            key: key.to_owned(),
            succeeded: result.is_ok(),
        });
        result
    }

    fn not_found(&self) -> ProviderError {
        ProviderError::NotFound {
            provider: self.name.clone(),
        }
    }

    fn live<'s>(
        &self,
        state: &'s mut State,
        id: &str,
    ) -> Result<&'s mut StoredMeeting, ProviderError> {
        match state.meetings.get_mut(id) {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(self.not_found()),
        }
    }
}

impl ConferenceProvider for MemoryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            self.call("create", "", key, |state| {
                if let Some(id) = state.by_key.get(key) {
                    let m = &state.meetings[id];
                    return Ok(Meeting {
                        meeting_id: id.clone(),
                        join_url: m.join_url.clone(),
                    });
                }
                state.next_id += 1;
                let id = format!("{}-{}", self.name, state.next_id);
                let join_url = format!("https://meet.invalid/{id}");
                state.meetings.insert(
                    id.clone(),
                    StoredMeeting {
                        spec: spec.clone(),
                        occurrences: BTreeMap::new(),
                        deleted: false,
                        join_url: join_url.clone(),
                    },
                );
                state.by_key.insert(key.to_owned(), id.clone());
                Ok(Meeting {
                    meeting_id: id,
                    join_url,
                })
            })
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            self.notify(meeting_id, false);
            let result = self.call("update", meeting_id, key, |state| {
                let rotate = state.rotate_join_url > 0;
                let replay = state.seen_keys.contains(key);
                let counter = state.next_id;
                self.live(state, meeting_id)?;
                if state.recreate > 0 {
                    state.recreate -= 1;
                    return Err(ProviderError::Recreate {
                        provider: self.name.clone(),
                        detail: format!("meeting {meeting_id} cannot be changed in place"),
                    });
                }
                let m = self.live(state, meeting_id)?;
                let unchanged = m.spec == *spec;
                if m.spec.recurrence != spec.recurrence || m.spec.start != spec.start {
                    // Like most providers: a new series time drops occurrence exceptions.
                    m.occurrences.clear();
                }
                m.spec = spec.clone();
                if !rotate {
                    let url = m.join_url.clone();
                    if unchanged && !replay {
                        state.wasted += 1;
                    }
                    return Ok(Some(url));
                }
                m.join_url = format!("https://meet.invalid/{meeting_id}/r{counter}");
                let url = m.join_url.clone();
                state.rotate_join_url -= 1;
                state.next_id += 1;
                if unchanged && !replay {
                    state.wasted += 1;
                }
                Ok(Some(url))
            });
            if result.is_ok() {
                self.notify(meeting_id, true);
            }
            result
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.call("update_occurrence", meeting_id, key, |state| {
                let m = self.live(state, meeting_id)?;
                m.occurrences
                    .insert(occurrence.key(), Some((start, end, title.to_owned())));
                Ok(())
            })
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.call("cancel_occurrence", meeting_id, key, |state| {
                let m = self.live(state, meeting_id)?;
                m.occurrences.insert(occurrence.key(), None);
                Ok(())
            })
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.call("delete", meeting_id, key, |state| {
                let m = self.live(state, meeting_id)?;
                m.deleted = true;
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(title: &str) -> MeetingSpec {
        MeetingSpec {
            title: title.into(),
            description: String::new(),
            start: When::At("2026-12-01T10:00:00Z".parse().unwrap()),
            end: When::At("2026-12-01T11:00:00Z".parse().unwrap()),
            time_zone: None,
            recurrence: vec![],
            attendees: vec![],
            organizer: None,
        }
    }

    #[tokio::test]
    async fn create_is_idempotent_per_key_and_delete_of_a_deleted_meeting_is_not_found() {
        let p = MemoryProvider::new("mem", Capabilities::ALL);
        let a = p.create(&spec("a"), "k1").await.unwrap();
        let again = p.create(&spec("a"), "k1").await.unwrap();
        assert_eq!(a, again);
        p.update(&a.meeting_id, &spec("b"), "k2").await.unwrap();
        assert_eq!(p.meeting(&a.meeting_id).unwrap().spec.title, "b");
        p.delete(&a.meeting_id, "k3").await.unwrap();
        assert!(matches!(
            p.delete(&a.meeting_id, "k3").await,
            Err(ProviderError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn recreate_answers_refuse_the_next_updates_and_change_nothing() {
        let p = MemoryProvider::new("mem", Capabilities::ALL);
        p.insert("m1", spec("a"));
        p.recreate_next(1);
        let err = p.update("m1", &spec("b"), "k1").await.unwrap_err();
        assert!(matches!(err, ProviderError::Recreate { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(p.meeting("m1").unwrap().spec.title, "a", "nothing changed");
        p.update("m1", &spec("b"), "k2").await.unwrap();
        assert_eq!(
            p.meeting("m1").unwrap().spec.title,
            "b",
            "only the next one"
        );
        assert_eq!(
            p.calls().iter().map(|c| c.succeeded).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[tokio::test]
    async fn injected_failures_come_first_and_are_recorded() {
        let p = MemoryProvider::new("mem", Capabilities::ALL);
        p.insert("m1", spec("a"));
        p.fail_next([ProviderError::RateLimited {
            provider: "mem".into(),
            detail: "429".into(),
            retry_after: Some(std::time::Duration::from_secs(3)),
        }]);
        let err = p.update("m1", &spec("b"), "k").await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
        p.update("m1", &spec("b"), "k").await.unwrap();
        let calls = p.calls();
        assert_eq!(
            calls.iter().map(|c| c.succeeded).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[tokio::test]
    async fn an_update_to_the_same_spec_is_wasted_unless_it_is_a_replay() {
        let p = MemoryProvider::new("m", Capabilities::ALL);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        p.observe_updates(Arc::new(move |id: &str, done: bool| {
            log.lock().unwrap().push((id.to_owned(), done))
        }));
        let m = p.create(&spec("a"), "c").await.unwrap();
        p.update(&m.meeting_id, &spec("b"), "u1").await.unwrap();
        assert_eq!(p.wasted_updates(), 0);
        p.update(&m.meeting_id, &spec("b"), "u1").await.unwrap(); // a replay
        assert_eq!(p.wasted_updates(), 0);
        p.update(&m.meeting_id, &spec("b"), "u2").await.unwrap(); // nothing changed
        assert_eq!(p.wasted_updates(), 1);
        p.fail_next([ProviderError::NotFound {
            provider: "m".into(),
        }]);
        assert!(p.update(&m.meeting_id, &spec("c"), "u3").await.is_err());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert_eq!(
            seen.last(),
            Some(&(m.meeting_id.clone(), false)),
            "no success reported for a failure"
        );
    }
}
