//! The `zoom` adapter (in progress).
