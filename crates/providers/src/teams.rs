//! The `teams` adapter (in progress).
