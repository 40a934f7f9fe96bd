//! What becomes of an outbox row whose attempt failed: ONE pure function, [`dispose`], for
//! every failure of every action, whether the provider or a Calendar read or write failed.
//!
//! - credentials to renew (the provider's, or the calendar owner's revoked grant): the row is
//!   parked, put off without using an attempt, so it waits for the fix and is never lost;
//! - transient failures and rate limits: retried with backoff (never sooner than the server's
//!   Retry-After) until the attempts run out, then failed;
//! - a row that may not end yet (giving up would leave a meeting nothing owns): parked too;
//! - everything else (refused for good, a meeting gone while its event lives, a calendar error
//!   no retry fixes): failed at once, visible in the store and on the status page.

use std::time::Duration;

use confsync_providers::ProviderError;

use crate::backoff::Backoff;
use crate::calendar::CalendarError;

/// How long an action waiting for re-authorisation is put off before it is tried again.
pub const REAUTH_PARK: Duration = Duration::from_secs(15 * 60);

/// A failed attempt, as far as its disposition is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again (a timeout, a 5xx, a 429, a 412 race that outlasted its re-reads).
    Retryable { retry_after: Option<Duration> },
    /// Needs credentials renewed; retrying before that only wastes calls.
    Reauth,
    /// The row may not end yet: giving it up would leave something behind that nothing else
    /// owns (a recreate's new meeting whose need could not be checked). Parked like
    /// credentials: retried later without using up attempts.
    Unresolved,
    /// No retry fixes it.
    Permanent,
}

impl Failure {
    /// How a provider failure counts.
    pub fn of_provider(e: &ProviderError) -> Failure {
        match e {
            ProviderError::Transient { retry_after, .. }
            | ProviderError::RateLimited { retry_after, .. } => Failure::Retryable {
                retry_after: *retry_after,
            },
            ProviderError::Reauth { .. } => Failure::Reauth,
            ProviderError::NotFound { .. }
            | ProviderError::Conflict { .. }
            | ProviderError::Permanent { .. }
            | ProviderError::Recreate { .. } => Failure::Permanent,
        }
    }

    /// How a Calendar failure counts (the same whichever step of an action met it).
    pub fn of_calendar(e: &CalendarError) -> Failure {
        match e {
            CalendarError::Retryable { retry_after, .. } => Failure::Retryable {
                retry_after: *retry_after,
            },
            // A 412 that outlasted the re-reads, or a 410 where none is expected: try later.
            CalendarError::PreconditionFailed | CalendarError::FullSyncRequired => {
                Failure::Retryable { retry_after: None }
            }
            CalendarError::Reauth { .. } => Failure::Reauth,
            CalendarError::Fatal { .. } => Failure::Permanent,
        }
    }
}

/// What to do with the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again at this time, counting the attempt.
    Retry { not_before_ms: i64 },
    /// Put off until this time without counting an attempt.
    Park { not_before_ms: i64 },
    /// Give up: the row is failed.
    Fail,
}

/// The disposition of a row that has had `attempts` attempts before this failed one.
pub fn dispose(
    failure: Failure,
    attempts: i64,
    backoff: &Backoff,
    key: &str,
    now_ms: i64,
) -> Disposition {
    match failure {
        Failure::Reauth | Failure::Unresolved => Disposition::Park {
            not_before_ms: now_ms + REAUTH_PARK.as_millis() as i64,
        },
        Failure::Retryable { retry_after } if attempts + 1 < backoff.max_attempts => {
            let delay = backoff.delay(attempts, retry_after, key);
            Disposition::Retry {
                not_before_ms: now_ms + delay.as_millis() as i64,
            }
        }
        Failure::Retryable { .. } | Failure::Permanent => Disposition::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 3,
        }
    }

    fn provider(kind: &str) -> ProviderError {
        let (provider, detail) = ("p".to_owned(), "d".to_owned());
        match kind {
            "transient" => ProviderError::Transient {
                provider,
                detail,
                retry_after: None,
            },
            "429" => ProviderError::RateLimited {
                provider,
                detail,
                retry_after: Some(Duration::from_secs(120)),
            },
            "reauth" => ProviderError::Reauth { provider, detail },
            "notfound" => ProviderError::NotFound { provider },
            "conflict" => ProviderError::Conflict { provider, detail },
            "permanent" => ProviderError::Permanent { provider, detail },
            _ => unreachable!(),
        }
    }

    fn calendar(kind: &str) -> CalendarError {
        match kind {
            "retryable" => CalendarError::Retryable {
                detail: "500".into(),
                retry_after: Some(Duration::from_secs(30)),
            },
            "412" => CalendarError::PreconditionFailed,
            "410" => CalendarError::FullSyncRequired,
            "reauth" => CalendarError::Reauth {
                detail: "invalid_grant".into(),
            },
            "fatal" => CalendarError::Fatal {
                detail: "403 forbidden".into(),
            },
            _ => unreachable!(),
        }
    }

    /// (failure, attempts so far, expected), with now = 0 and backoff 1 s .. 60 s, 3 attempts.
    #[test]
    fn every_failure_has_one_disposition() {
        let retry = |at_least_ms: i64| move |d: Disposition| matches!(d, Disposition::Retry { not_before_ms } if not_before_ms >= at_least_ms);
        let park = |d: Disposition| {
            d == Disposition::Park {
                not_before_ms: REAUTH_PARK.as_millis() as i64,
            }
        };
        let fail = |d: Disposition| d == Disposition::Fail;
        let b = backoff();
        type Expect = Box<dyn Fn(Disposition) -> bool>;
        let cases: Vec<(Failure, i64, Expect, &str)> = vec![
            (
                Failure::of_provider(&provider("transient")),
                0,
                Box::new(retry(500)),
                "transient, first attempt",
            ),
            (
                Failure::of_provider(&provider("transient")),
                1,
                Box::new(retry(1_000)),
                "transient, second attempt",
            ),
            (
                Failure::of_provider(&provider("transient")),
                2,
                Box::new(fail),
                "transient, out of attempts",
            ),
            (
                Failure::of_provider(&provider("429")),
                0,
                Box::new(retry(120_000)),
                "429 waits for Retry-After",
            ),
            (
                Failure::of_provider(&provider("429")),
                2,
                Box::new(fail),
                "429, out of attempts",
            ),
            (
                Failure::of_provider(&provider("reauth")),
                0,
                Box::new(park),
                "provider credentials",
            ),
            (
                Failure::of_provider(&provider("reauth")),
                99,
                Box::new(park),
                "parking never runs out",
            ),
            (
                Failure::of_provider(&provider("notfound")),
                0,
                Box::new(fail),
                "meeting gone",
            ),
            (
                Failure::of_provider(&provider("conflict")),
                0,
                Box::new(fail),
                "conflict",
            ),
            (
                Failure::of_provider(&provider("permanent")),
                0,
                Box::new(fail),
                "refused",
            ),
            (
                Failure::of_calendar(&calendar("retryable")),
                0,
                Box::new(retry(30_000)),
                "calendar 5xx honours Retry-After",
            ),
            (
                Failure::of_calendar(&calendar("412")),
                0,
                Box::new(retry(500)),
                "412 after re-reads",
            ),
            (
                Failure::of_calendar(&calendar("410")),
                0,
                Box::new(retry(500)),
                "410 on a row",
            ),
            (
                Failure::of_calendar(&calendar("reauth")),
                0,
                Box::new(park),
                "revoked grant",
            ),
            (
                Failure::Unresolved,
                99,
                Box::new(park),
                "a row that may not end never fails",
            ),
            // The executor used to retry a Fatal calendar error in one place and fail it in
            // another; there is one answer now.
            (
                Failure::of_calendar(&calendar("fatal")),
                0,
                Box::new(fail),
                "calendar fatal",
            ),
        ];
        for (failure, attempts, expected, name) in cases {
            let got = dispose(failure, attempts, &b, "key", 0);
            assert!(
                expected(got),
                "{name}: {failure:?} after {attempts} attempts gave {got:?}"
            );
        }
    }

    #[test]
    fn a_calendar_failure_and_the_same_provider_failure_are_disposed_alike() {
        let b = backoff();
        let from_calendar = dispose(Failure::of_calendar(&calendar("retryable")), 0, &b, "k", 0);
        let from_provider = dispose(
            Failure::of_provider(&ProviderError::Transient {
                provider: "calendar".into(),
                detail: "500".into(),
                retry_after: Some(Duration::from_secs(30)),
            }),
            0,
            &b,
            "k",
            0,
        );
        assert_eq!(from_calendar, from_provider);
    }
}
