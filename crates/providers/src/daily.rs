//! The `daily` adapter (in progress).
