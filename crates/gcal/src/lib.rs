//! Google Calendar v3 for confsync: wire types, the REST client, retries and errors.
//!
//! - [`model`]: the JSON resources (`Event`, `Events`, `Channel`), every unknown field preserved.
//! - [`error`]: Google's error envelope and [`GcalError`], classified from status and reason.
//! - [`client`]: [`Client`], one method per API call the sync engine makes, with retries.
//! - [`retry`]: [`RetryPolicy`], the backoff decision, and the [`Sleeper`] seam.
//! - [`token`]: [`TokenSource`], where bearer tokens come from.
//! - [`auth`]: Google OAuth: service accounts (JWT-bearer grant, domain-wide delegation),
//!   refresh tokens, the authorization-code flow with PKCE, and [`TokenCipher`] for refresh
//!   tokens at rest.
//!
//! This crate must not know about links, plans, stores or providers: it speaks Calendar v3 and
//! nothing else, and it must never depend on the emulator (only its tests do).
//!
//! ```no_run
//! # async fn demo() -> Result<(), confsync_gcal::GcalError> {
//! use std::sync::Arc;
//! use confsync_gcal::{Client, ListParams, RetryPolicy, StaticToken};
//!
//! let client = Client::new(
//!     "https://www.googleapis.com/",
//!     Arc::new(StaticToken("ya29....".into())),
//!     RetryPolicy::default(),
//! )?;
//! let page = client.list_events("primary", &ListParams::default()).await?;
//! println!("{} events, more: {}", page.items.len(), page.next_page_token.is_some());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::future::Future;
use std::pin::Pin;

pub mod auth;
pub mod client;
pub mod error;
pub mod model;
pub mod retry;
pub mod token;

pub use auth::{
    AuthCodeFlow, AuthError, CipherError, Grant, PkceVerifier, RefreshTokenTokens,
    ServiceAccountKey, ServiceAccountTokens, TokenCipher, is_invalid_grant,
};
pub use client::{
    ApiMethod, Client, ClientBuilder, EVENTS_SYNC_FIELDS, ListParams, USER_AGENT, encode_segment,
};
pub use error::{ErrorContext, GcalError, GoogleError};
pub use model::{
    Attendee, Channel, ConferenceData, EntryPoint, Event, EventDateTime, Events, RawEvents,
    WatchRequest,
};
pub use retry::{Jitter, RetryPolicy, Sleeper, TokioSleeper};
pub use token::{StaticToken, TokenSource};

/// A boxed, sendable future: the dyn-compatible way to put an async method in a trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
