//! confsync's persistence: what survives a restart, and the transaction that makes sync
//! crash-safe.
//!
//! The store owns five tables (schema in `migrations/sqlite/`):
//! - `calendars`: per calendar, its sync token and whether it needs a full sync;
//! - `links`: per conference, the [`Link`](confsync_core::plan::Link) the planner works from,
//!   plus what only the executor knows (the fingerprint that landed, the etag we wrote);
//! - `outbox`: the provider calls still to make, in order per conference;
//! - `dead_letters`: events that could not be understood, counted;
//! - `meetings`: the built-in local provider's meetings.
//!
//! The rule everything else rests on: [`Store::commit_page`] writes a page's links, its outbox
//! rows, its dead letters and (on the last page) the calendar's new sync token in ONE
//! transaction. A crash therefore either redoes a page from the old token (replanning it is a
//! no-op, its links are committed) or resumes the outbox; a change is never lost.
//!
//! [`Store::swap_link`] is the recreate path's transaction: the old link deleted, the new one
//! stored, the old conference's pending work handed over and its delete queued, all or nothing.
//!
//! The outbox is at-least-once: [`Store::due`] hands out, per conference, only its oldest
//! pending row (an old update never lands after a delete), and the executor reports each attempt
//! with [`Store::complete`], [`Store::retry_later`] or [`Store::fail`].
//!
//! Conventions: timestamps are unix milliseconds (`i64`, `*_ms`), passed in by the caller
//! where the brief names them and otherwise read from the store's clock ([`Store::with_clock`]),
//! so a simulation can drive time. Statements are portable SQL (`$N` placeholders, `ON
//! CONFLICT`, no database-specific functions); the few SQLite-only spots are marked `SQLite:`.
//! SQLite (WAL, `synchronous=NORMAL`, foreign keys on, busy timeout) is the embedded default;
//! Postgres can follow with its own DDL and the same statements.
//!
//! This crate knows the core's types and SQL; it knows nothing of HTTP, Calendar or providers.

#![warn(missing_docs)]

mod admin;
mod api_keys;
mod calendars;
mod channels;
mod conns;
pub use conns::round_trips as sqlite_round_trips;
mod db;
mod dead_letters;
mod doctor;
mod error;
mod group;
mod intents;
mod leases;
mod links;
mod meetings;
mod migration;
mod outbox;
mod page;
mod sqlite_memory;
mod store;
pub mod testing;
mod users;

pub use admin::Forgotten;
pub use api_keys::{ApiKey, SCOPES};
pub use calendars::{CalendarLag, CalendarState, CalendarSummary, Worst};
pub use channels::{Channel, PushMessage, Quiet};
pub use dead_letters::{DeadLetter, DeadLetterRecord, Pruned};
pub use doctor::{MigrationReport, inspect_migrations};
pub use error::StoreError;
pub use intents::{CreateIntent, CreateStart};
pub use leases::{Listener, worker_id};
pub use links::{LinkBase, PageLinks, StoredLink};
pub use meetings::Meeting;
pub use migration::{ProviderMoves, QueuedMove};
pub use outbox::{
    Claimed, ClaimedBatch, FailedAction, OutboxEntry, OutboxItem, OutboxState, PARK_UNREADABLE_MS,
    queued_generation,
};
pub use page::{PassEnd, PlannedChange};
pub use store::Store;
pub use store::redact as redact_location;
pub use users::{GoogleUser, OAuthRequest};
