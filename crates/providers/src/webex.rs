//! The `webex` adapter (in progress).
