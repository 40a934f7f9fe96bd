//! Retry delays: truncated exponential backoff with jitter, never shorter than the provider's
//! Retry-After. The jitter is derived from the action's idempotency key and attempt (not from a
//! random source), so a simulated run replays exactly while different actions still spread out.

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts before an action is recorded as failed.
    pub max_attempts: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempts + 1`: a value in [d/2, d] with d = min(cap, base * 2^attempts),
    /// raised to `retry_after` when the server asked for longer.
    pub fn delay(&self, attempts: i64, retry_after: Option<Duration>, key: &str) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
            .min(self.cap);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain(attempts.to_le_bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let fraction = 0.5 + (hash % 1000) as f64 / 2000.0;
        let jittered = exp.mul_f64(fraction);
        match retry_after {
            Some(wait) if wait > jittered => wait,
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_attempts: 5,
        };
        let d0 = b.delay(0, None, "k");
        let d3 = b.delay(3, None, "k");
        assert!(
            d0 >= Duration::from_millis(500) && d0 <= Duration::from_secs(1),
            "{d0:?}"
        );
        assert!(
            d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8),
            "{d3:?}"
        );
        assert!(b.delay(30, None, "k") <= Duration::from_secs(10));
    }

    #[test]
    fn honours_retry_after_and_is_deterministic() {
        let b = Backoff::default();
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(30)), "k"),
            Duration::from_secs(30)
        );
        assert_eq!(b.delay(2, None, "k"), b.delay(2, None, "k"));
        assert_ne!(
            b.delay(2, None, "k"),
            b.delay(2, None, "other"),
            "different actions spread out"
        );
    }
}
