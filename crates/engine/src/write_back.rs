//! Writing a new join link into the event's conference data ([`Engine::write_back`]): a PATCH
//! of `conferenceData` only, with If-Match of a fresh read and conferenceDataVersion=1.
//!
//! On 412 (the user edited the event since our read) it re-reads and re-applies, at most three
//! times, then the outbox retries later; the user's edit is never overwritten and reaches the
//! provider through the next sync like any other change.
//!
//! Crash points (and lost answers): a PATCH whose answer is lost, or a crash before its etag is
//! recorded, runs again: the fresh read then shows the link already written and nothing is sent.
//! The echo of our own write is recognised by the recorded etag; if that record was lost, the
//! echo still plans nothing, since the meeting's spec did not change.

use confsync_core::model::Snapshot;
use confsync_store::OutboxItem;
use serde_json::Value;
use tracing::info;

use crate::{CalendarError, Engine, EngineError, conference};

impl Engine {
    /// See the module documentation. The outer error is the store's; the inner one the
    /// calendar's, for the row's disposition.
    pub(crate) async fn write_back(
        &self,
        item: &OutboxItem,
        join_url: &str,
    ) -> Result<Result<(), CalendarError>, EngineError> {
        for _ in 0..3 {
            let event = match self.calendar.get(&item.calendar_id, &item.event_id).await {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(Ok(())), // the event is gone: nothing to write
                Err(e) => return Ok(Err(e)),
            };
            let Ok(snapshot) = Snapshot::from_json(&event) else {
                return Ok(Ok(()));
            };
            let conference_data = snapshot.conference.as_ref();
            let ours = conference_data.and_then(|c| c.conference_id.as_deref())
                == Some(item.conference_id.as_str());
            if snapshot.is_cancelled() || !ours {
                return Ok(Ok(()));
            }
            if conference_data.and_then(|c| c.join_uri.as_deref()) == Some(join_url) {
                return Ok(Ok(()));
            }
            let Some(etag) = snapshot.etag.clone() else {
                return Ok(Ok(()));
            };
            let body = serde_json::json!({
                "conferenceData": conference::with_join_url(event.get("conferenceData"), join_url)
            });
            match self
                .calendar
                .patch(&item.calendar_id, &item.event_id, &body, &etag)
                .await
            {
                Ok(written) => {
                    if let Some(etag) = written.get("etag").and_then(Value::as_str) {
                        self.store
                            .record_written_etag(&item.conference_id, etag)
                            .await?;
                    }
                    info!(conference_id = %item.conference_id, calendar_id = %item.calendar_id, "join link written back to the event");
                    return Ok(Ok(()));
                }
                Err(CalendarError::PreconditionFailed) => continue,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Err(CalendarError::Retryable {
            detail: "the event changed during three write-back attempts (412)".into(),
            retry_after: None,
        }))
    }
}
