//! The `webhook` adapter (in progress).
