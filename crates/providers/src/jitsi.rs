//! The `jitsi` adapter (in progress).
