//! The built-in `local` provider: meetings live in confsync's own database and their join links
//! point at confsync (which serves them), so everything runs with no third party.
//!
//! It can change everything in place, occurrences included, and a join link never changes.

use std::collections::BTreeMap;

use confsync_store::{Store, StoreError};

use crate::{
    BoxFuture, Capabilities, ConferenceProvider, Meeting, MeetingSpec, ProviderError, When,
};

/// The local provider.
pub struct LocalProvider {
    store: Store,
    join_base_url: String,
}

/// Occurrence exceptions as the local provider stores them: key -> moved (start, end, title) or
/// cancelled (null).
pub type Occurrences = BTreeMap<String, Option<(When, When, String)>>;

impl LocalProvider {
    /// `join_base_url` ends with '/'; join links are `{join_base_url}join/{meeting_id}`.
    pub fn new(store: Store, join_base_url: &str) -> Self {
        LocalProvider {
            store,
            join_base_url: join_base_url.to_owned(),
        }
    }

    fn error(&self, e: StoreError) -> ProviderError {
        if e.is_not_found() {
            return ProviderError::NotFound {
                provider: "local".into(),
            };
        }
        // The database is ours: a failure is worth retrying (busy, I/O), never a lost action.
        ProviderError::Transient {
            provider: "local".into(),
            detail: e.to_string(),
            retry_after: None,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    async fn live(&self, meeting_id: &str) -> Result<confsync_store::Meeting, ProviderError> {
        match self
            .store
            .meeting(meeting_id)
            .await
            .map_err(|e| self.error(e))?
        {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(ProviderError::NotFound {
                provider: "local".into(),
            }),
        }
    }

    async fn edit_occurrences(
        &self,
        meeting_id: &str,
        edit: impl FnOnce(&mut Occurrences),
    ) -> Result<(), ProviderError> {
        let meeting = self.live(meeting_id).await?;
        let mut occurrences: Occurrences =
            serde_json::from_str(&meeting.occurrences_json).unwrap_or_default();
        edit(&mut occurrences);
        let json = serde_json::to_string(&occurrences).map_err(|e| ProviderError::Permanent {
            provider: "local".into(),
            detail: e.to_string(),
        })?;
        self.store
            .meeting_set_occurrences(meeting_id, &json)
            .await
            .map_err(|e| self.error(e))
    }

    /// The host resets the meeting's link (say it leaked): the meeting gets a new join URL,
    /// which its next update reports, so the engine writes it into the event.
    pub async fn reset_join_link(&self, meeting_id: &str) -> Result<String, ProviderError> {
        let meeting = self.live(meeting_id).await?;
        let generation = meeting
            .join_url
            .rsplit_once("?v=")
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .unwrap_or(1)
            + 1;
        let join_url = format!("{}join/{meeting_id}?v={generation}", self.join_base_url);
        self.store
            .meeting_set_join_url(meeting_id, &join_url, Self::now())
            .await
            .map_err(|e| self.error(e))?;
        Ok(join_url)
    }

    /// A meeting's id, from the idempotency key of the create: stable for retries, and not
    /// guessable without the key.
    fn meeting_id_for(key: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut out = String::from("cs");
        for round in 0..2u8 {
            for b in key.bytes().chain([round]) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            out.push_str(&format!("{hash:016x}"));
        }
        out
    }
}

fn spec_json(spec: &MeetingSpec) -> Result<String, ProviderError> {
    serde_json::to_string(spec).map_err(|e| ProviderError::Permanent {
        provider: "local".into(),
        detail: e.to_string(),
    })
}

impl ConferenceProvider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    /// Nothing remote: the meetings live in confsync's store, which must answer a read.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            self.store
                .meeting("confsync-doctor-check")
                .await
                .map_err(|e| self.error(e))?;
            Ok("local: built in; its meetings' store answers".to_owned())
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            let id = Self::meeting_id_for(key);
            let join_url = format!("{}join/{id}", self.join_base_url);
            let made = self
                .store
                .meeting_create(&id, key, &spec_json(spec)?, &join_url, Self::now())
                .await
                .map_err(|e| self.error(e))?;
            Ok(Meeting {
                meeting_id: made.meeting_id,
                join_url: made.join_url,
            })
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            let meeting = self.live(meeting_id).await?;
            self.store
                .meeting_update(meeting_id, &spec_json(spec)?, Self::now())
                .await
                .map_err(|e| self.error(e))?;
            Ok(Some(meeting.join_url)) // a local join link never changes
        })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.edit_occurrences(meeting_id, |o| {
                o.insert(occurrence.key(), Some((start, end, title.to_owned())));
            })
            .await
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.edit_occurrences(meeting_id, |o| {
                o.insert(occurrence.key(), None);
            })
            .await
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.live(meeting_id).await?;
            self.store
                .meeting_delete(meeting_id)
                .await
                .map_err(|e| self.error(e))
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
            recurrence: vec!["RRULE:FREQ=WEEKLY;COUNT=3".into()],
            attendees: vec![],
            organizer: None,
        }
    }

    #[tokio::test]
    async fn meetings_live_in_the_store_and_follow_updates() {
        let store = Store::memory().await.unwrap();
        let p = LocalProvider::new(store.clone(), "http://127.0.0.1:8080/");
        let m = p.create(&spec("a"), "key-1").await.unwrap();
        assert_eq!(
            p.create(&spec("a"), "key-1").await.unwrap(),
            m,
            "idempotent per key"
        );
        assert!(m.join_url.starts_with("http://127.0.0.1:8080/join/cs"));
        p.update(&m.meeting_id, &spec("b"), "k").await.unwrap();
        let when = When::At("2026-12-08T10:00:00Z".parse().unwrap());
        p.cancel_occurrence(&m.meeting_id, when, "k").await.unwrap();
        let stored = store.meeting(&m.meeting_id).await.unwrap().unwrap();
        assert!(stored.spec_json.contains("\"b\""));
        let occurrences: Occurrences = serde_json::from_str(&stored.occurrences_json).unwrap();
        assert_eq!(occurrences.get(&when.key()), Some(&None));
        p.delete(&m.meeting_id, "k").await.unwrap();
        assert!(matches!(
            p.delete(&m.meeting_id, "k").await,
            Err(ProviderError::NotFound { .. })
        ));
        assert!(matches!(
            p.update(&m.meeting_id, &spec("c"), "k").await,
            Err(ProviderError::NotFound { .. })
        ));
    }
}
