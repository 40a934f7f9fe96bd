//! Writing a new join link into the event's conference data ([`Engine::write_back`]): a PATCH
//! of `conferenceData` only, with If-Match of a fresh read and conferenceDataVersion=1.
//!
//! The event is written where it lives now: when it moved to another synced calendar after the
//! write-back was queued, it is found there (as the delete guard finds it), never skipped.
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
        // Where the event is: at the row's place, or, when it moved to another synced calendar
        // since the write-back was queued, where it lives now with our conference.
        let mut calendar_id = item.calendar_id.clone();
        let mut looked_elsewhere = false;
        for _ in 0..3 {
            let event = match self.calendar.get(&calendar_id, &item.event_id).await {
                Ok(event) => event,
                Err(e) => return Ok(Err(e)),
            };
            let snapshot = event.as_ref().and_then(|e| Snapshot::from_json(e).ok());
            let here = snapshot.as_ref().is_some_and(|s| {
                !s.is_cancelled()
                    && s.conference
                        .as_ref()
                        .and_then(|c| c.conference_id.as_deref())
                        == Some(item.conference_id.as_str())
            });
            if !here {
                if looked_elsewhere {
                    return Ok(Ok(()));
                }
                looked_elsewhere = true;
                match self.event_lives(item).await {
                    Ok(Some((elsewhere, _))) if elsewhere != calendar_id => {
                        calendar_id = elsewhere;
                        continue;
                    }
                    // Gone, cancelled, or showing another conference: nothing to write.
                    Ok(_) => return Ok(Ok(())),
                    Err(EngineError::Calendar { source, .. }) => return Ok(Err(source)),
                    Err(e) => return Err(e),
                }
            }
            let (Some(event), Some(snapshot)) = (event, snapshot) else {
                return Ok(Ok(()));
            };
            let conference_data = snapshot.conference.as_ref();
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
                .patch(&calendar_id, &item.event_id, &body, &etag)
                .await
            {
                Ok(written) => {
                    if let Some(etag) = written.get("etag").and_then(Value::as_str) {
                        self.store
                            .record_written_etag(&item.conference_id, etag)
                            .await?;
                    }
                    info!(conference_id = %item.conference_id, calendar_id = %calendar_id, "join link written back to the event");
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
