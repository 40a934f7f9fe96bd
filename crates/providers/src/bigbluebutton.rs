//! The `bigbluebutton` adapter (in progress).
