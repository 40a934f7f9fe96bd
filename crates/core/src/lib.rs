//! confsync's sync engine core, sans IO.
//!
//! Everything here is a plain function or state machine: no HTTP, no SQL, no clock, no
//! randomness (time comes in as arguments). That is what lets the whole engine run under a
//! deterministic simulation, and it must stay that way: this crate depends on no async runtime
//! and no I/O crate.
//!
//! - [`model`]: what the engine reads from a Calendar event ([`model::Snapshot`],
//!   [`model::MeetingSpec`]);
//! - [`plan`]: event + [`plan::Link`] -> provider actions and the link's next state;
//! - [`session`]: one calendar's pass: requests out, pages in, decisions and the next sync token.

pub mod model;
pub mod plan;
pub mod session;
