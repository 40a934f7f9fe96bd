//! Conferencing providers behind one trait.
//!
//! A provider creates, updates and deletes meetings; [`Capabilities`] say which changes it can
//! make in place, so the planner never calls it for a change it cannot act on. Every operation
//! takes the action's idempotency key: providers that support keys pass it on, the others use
//! it to find a meeting they already made (deterministic names, a marker, a lookup).
//!
//! Adapters here must not know about Calendar, the store's tables or the engine: they get a
//! [`MeetingSpec`] and answer with a [`Meeting`] or a classified [`ProviderError`].

pub mod bigbluebutton;
pub mod daily;
pub mod http;
pub mod jitsi;
pub mod keys;
pub mod local;
pub mod memory;
pub mod teams;
pub mod webex;
pub mod webhook;
pub mod zoom;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use confsync_core::model::{MeetingSpec, When};
pub use confsync_core::plan::Capabilities;

/// A boxed future, so providers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A meeting as the provider made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// The provider's id; it becomes the event's `conferenceId`.
    pub meeting_id: String,
    /// What guests click (goes into conferenceData). Never a host secret.
    pub join_url: String,
}

/// A provider failure, classified so the outbox knows what to do with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Retry later; `retry_after` when the provider said how long.
    #[error("{provider}: temporary failure ({detail})")]
    Transient {
        provider: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// Retry after the limit resets.
    #[error("{provider}: rate limited ({detail})")]
    RateLimited {
        provider: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The meeting is gone (for a delete: done).
    #[error("{provider}: meeting not found")]
    NotFound { provider: String },
    #[error("{provider}: conflict ({detail})")]
    Conflict { provider: String, detail: String },
    /// Retrying cannot help; recorded as a visible failure.
    #[error("{provider}: permanent failure ({detail})")]
    Permanent { provider: String, detail: String },
    /// Credentials were revoked or expired for good.
    #[error("{provider}: re-authorisation needed ({detail})")]
    Reauth { provider: String, detail: String },
    /// This change cannot be made in place (the meeting expired, the host changed, the provider
    /// cannot express the new recurrence): a new meeting is needed. Not retryable; the engine
    /// answers it by recreating the meeting and pointing the event at the new one.
    #[error("{provider}: the change cannot be made in place, a new meeting is needed ({detail})")]
    Recreate { provider: String, detail: String },
}

impl ProviderError {
    /// Whether the outbox should try again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient { .. } | ProviderError::RateLimited { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. }
            | ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Who opens a join link that confsync serves (see [`ConferenceProvider::join`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRequest {
    /// The link carried the meeting's host signature (the organizer's link, never in
    /// conferenceData): join as moderator.
    pub host: bool,
    /// A display name the guest gave (`?name=`), if any.
    pub name: Option<String>,
}

/// What confsync does with a click on a join link it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAnswer {
    /// Send the browser there (a signed, short-lived URL: never cached, never logged).
    Redirect(String),
    /// Refuse with this reason (cancelled, ended, not open yet): shown to the guest.
    Refused(String),
}

/// A conferencing system confsync can drive.
pub trait ConferenceProvider: Send + Sync {
    /// The name links record (`local`, `zoom`, ...).
    fn name(&self) -> &str;

    fn capabilities(&self) -> Capabilities;

    /// Creates a meeting; the same `key` again must not create a second one.
    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>>;

    /// Brings a meeting (a whole series) in line with `spec`. Answers the meeting's join link
    /// after the update when the provider reports one: if it is not the link the event shows
    /// (the provider had to recreate the meeting), the engine writes it back into the event.
    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>>;

    /// Moves or renames one occurrence (only called when `capabilities().occurrences`).
    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Cancels one occurrence (only called when `capabilities().occurrences`).
    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Deletes a meeting; an already deleted meeting counts as done.
    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// A harmless read that proves the configuration works (`confsync doctor`): the
    /// credentials are accepted and the account or user the adapter acts for is there. Answers
    /// a short description of what was checked (no secret in it); a failure is classified like
    /// any other call's (a refused credential is [`ProviderError::Reauth`] or
    /// [`ProviderError::Permanent`]). Never creates, changes or deletes anything. The default,
    /// for adapters with nothing to ask, says so.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            Ok(format!(
                "{}: nothing to ask (no remote account to check)",
                self.name()
            ))
        })
    }

    /// For providers whose join link points at confsync (`{public_url}join/{meeting_id}`):
    /// what to do when someone opens it. `None` (the default): confsync does not serve this
    /// provider's links.
    fn join<'a>(
        &'a self,
        meeting_id: &'a str,
        request: &'a JoinRequest,
    ) -> BoxFuture<'a, Result<Option<JoinAnswer>, ProviderError>> {
        let _ = (meeting_id, request);
        Box::pin(async { Ok(None) })
    }
}
