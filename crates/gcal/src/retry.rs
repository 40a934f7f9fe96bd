//! When to retry a failed call and how long to wait: truncated exponential backoff with full
//! jitter, at least the server's `Retry-After`.
//!
//! This module owns the decision only ([`RetryPolicy::next_delay`] is a pure function of the
//! attempt number, the error and a random number); the client does the sleeping through a
//! [`Sleeper`] so tests can record delays instead of waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::BoxFuture;
use crate::error::GcalError;

/// Where backoff jitter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The operating system's random generator (production).
    #[default]
    System,
    /// A SplitMix64 sequence from this seed: reproducible delays for tests and simulations.
    Seeded(u64),
    /// No jitter: always wait the full backoff ceiling.
    None,
}

/// How a client retries rate limits and transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per call, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles per retry.
    pub base: Duration,
    /// Upper bound of the backoff ceiling.
    pub cap: Duration,
    /// A `Retry-After` longer than this is not waited out inside the call: the error goes back
    /// to the caller (with [`GcalError::retry_after`]) to reschedule the work.
    pub max_retry_after: Duration,
    /// Jitter source.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(32),
            max_retry_after: Duration::from_secs(120),
            jitter: Jitter::System,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The backoff ceiling before retry number `retry` (1 for the first): `base * 2^(retry-1)`,
    /// at most `cap`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(63);
        let factor = 1u128 << doublings;
        let nanos = self.base.as_nanos().saturating_mul(factor);
        let capped = nanos.min(self.cap.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// The delay before the next attempt after `attempts_made` attempts ended in `error`, or
    /// None to give up.
    ///
    /// Only [`GcalError::is_retryable`] errors are retried, at most `max_attempts` attempts in
    /// all. The delay is uniform in `[0, ceiling]` (full jitter, drawn from `random`) and never
    /// shorter than the server's `Retry-After`; a `Retry-After` beyond `max_retry_after` gives
    /// up.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        error: &GcalError,
        random: u64,
    ) -> Option<Duration> {
        if !error.is_retryable() || attempts_made >= self.max_attempts {
            return None;
        }
        let retry_after = error.retry_after().unwrap_or(Duration::ZERO);
        if retry_after > self.max_retry_after {
            return None;
        }
        let ceiling = self.ceiling(attempts_made).as_nanos();
        let jittered = match self.jitter {
            Jitter::None => ceiling,
            Jitter::System | Jitter::Seeded(_) => u128::from(random) % (ceiling + 1),
        };
        let jittered = Duration::from_nanos(u64::try_from(jittered).unwrap_or(u64::MAX));
        Some(jittered.max(retry_after))
    }
}

/// The running state of a policy's [`Jitter`] (a client owns one).
#[derive(Debug)]
pub(crate) struct JitterSource {
    jitter: Jitter,
    state: AtomicU64,
    system: SystemRandom,
}

impl JitterSource {
    pub(crate) fn new(jitter: Jitter) -> Self {
        let seed = match jitter {
            Jitter::Seeded(seed) => seed,
            _ => 0,
        };
        JitterSource {
            jitter,
            state: AtomicU64::new(seed),
            system: SystemRandom::new(),
        }
    }

    /// The next random number.
    pub(crate) fn next(&self) -> u64 {
        match self.jitter {
            Jitter::None => 0,
            Jitter::Seeded(_) => {
                let state = self
                    .state
                    .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                    .wrapping_add(0x9e37_79b9_7f4a_7c15);
                splitmix(state)
            }
            Jitter::System => {
                let mut bytes = [0u8; 8];
                match self.system.fill(&mut bytes) {
                    Ok(()) => u64::from_le_bytes(bytes),
                    // The system generator does not fail in practice; a fixed value only loses
                    // the spreading of simultaneous retries.
                    Err(_) => u64::MAX / 2,
                }
            }
        }
    }
}

/// SplitMix64's output function.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How the client waits between attempts.
pub trait Sleeper: Send + Sync {
    /// Waits `delay`.
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()>;
}

/// Waits with `tokio::time::sleep` (so `tokio::time::pause()` applies).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorContext;

    fn error(status: u16, retry_after: Option<Duration>) -> GcalError {
        let mut context = ErrorContext::new("calendar.events.list", "");
        context.status = Some(status);
        context.reason = Some("x".into());
        GcalError::classify(context, retry_after)
    }

    fn fixed(base_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            jitter: Jitter::None,
            ..Default::default()
        }
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let policy = fixed(500, 32_000);
        let ceilings: Vec<u64> = (1..=9)
            .map(|r| policy.ceiling(r).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000]
        );
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(32));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        let policy = RetryPolicy {
            jitter: Jitter::Seeded(7),
            ..Default::default()
        };
        let source = JitterSource::new(policy.jitter);
        let transient = error(503, None);
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let delay = policy.next_delay(3, &transient, source.next()).unwrap();
            assert!(delay <= Duration::from_secs(2));
            distinct.insert(delay);
        }
        assert!(distinct.len() > 100, "jitter spreads delays");
        assert_eq!(policy.next_delay(1, &transient, 0), Some(Duration::ZERO));
        assert_eq!(
            policy.next_delay(1, &transient, u64::MAX),
            Some(Duration::from_nanos(u64::MAX % 500_000_001))
        );
    }

    #[test]
    fn seeded_jitter_repeats_exactly() {
        let a = JitterSource::new(Jitter::Seeded(42));
        let b = JitterSource::new(Jitter::Seeded(42));
        let c = JitterSource::new(Jitter::Seeded(43));
        let (xs, ys, zs): (Vec<u64>, Vec<u64>, Vec<u64>) = (
            (0..5).map(|_| a.next()).collect(),
            (0..5).map(|_| b.next()).collect(),
            (0..5).map(|_| c.next()).collect(),
        );
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn retry_after_is_the_minimum_delay() {
        let policy = fixed(1, 10);
        let limited = error(429, Some(Duration::from_secs(3)));
        assert_eq!(
            policy.next_delay(1, &limited, 0),
            Some(Duration::from_secs(3))
        );
        // A ceiling above Retry-After wins.
        let policy = fixed(10_000, 10_000);
        assert_eq!(
            policy.next_delay(1, &limited, 0),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn an_excessive_retry_after_goes_back_to_the_caller() {
        let policy = RetryPolicy::default();
        let limited = error(503, Some(Duration::from_secs(3600)));
        assert_eq!(policy.next_delay(1, &limited, 0), None);
    }

    #[test]
    fn only_rate_limits_and_transient_failures_are_retried() {
        let policy = fixed(1, 10);
        for status in [500, 502, 503, 504, 429] {
            assert!(policy.next_delay(1, &error(status, None), 0).is_some());
        }
        for status in [400, 401, 403, 404, 409, 410, 412, 413] {
            assert_eq!(policy.next_delay(1, &error(status, None), 0), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_sleeper_follows_paused_time() {
        let start = tokio::time::Instant::now();
        TokioSleeper.sleep(Duration::from_secs(30)).await;
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = fixed(1, 10);
        let transient = error(503, None);
        assert!(policy.next_delay(4, &transient, 0).is_some());
        assert_eq!(policy.next_delay(5, &transient, 0), None);
        assert_eq!(RetryPolicy::never().next_delay(1, &transient, 0), None);
    }
}
