//! Fault injection and quota emulation: what tests use to make the emulator misbehave like Google.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::error::ApiError;
use crate::ids::IdGen;

/// A fault as the admin API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// HTTP status to answer with; without it the fault only adds latency.
    pub status: Option<u16>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    /// Apply to the next `count` matching requests, then disappear.
    #[serde(default)]
    pub count: Option<u64>,
    /// Apply to each matching request with this probability (seeded, so reproducible).
    #[serde(default)]
    pub probability: Option<f64>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// An API method id (`calendar.events.list`) or an HTTP method (`PATCH`).
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
    #[serde(default)]
    pub retry_after: Option<u64>,
}

impl FaultSpec {
    pub fn check(&self) -> Result<(), String> {
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(format!(
                "status {status} is not an HTTP error status (400-599)"
            ));
        }
        if self.status.is_none() && self.latency_ms.is_none() {
            return Err("a fault needs a status, a latencyMs, or both".into());
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("probability {p} is not between 0 and 1"));
        }
        if self.count == Some(0) {
            return Err("count must be at least 1".into());
        }
        if let Some(ms) = self.latency_ms
            && ms > MAX_LATENCY_MS
        {
            return Err(format!(
                "latencyMs {ms} is more than {MAX_LATENCY_MS} (ten minutes)"
            ));
        }
        if let Some(secs) = self.retry_after
            && secs > MAX_RETRY_AFTER_SECONDS
        {
            return Err(format!(
                "retryAfter {secs} is more than {MAX_RETRY_AFTER_SECONDS} seconds (a day)"
            ));
        }
        Ok(())
    }
}

/// The longest latency a fault may add to a request: ten minutes.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// The longest `Retry-After` a fault may send: a day.
pub const MAX_RETRY_AFTER_SECONDS: u64 = 86_400;
/// At most this many faults are active at once (each request is judged against all of them).
pub const MAX_FAULTS: usize = 10_000;

struct Fault {
    id: u64,
    spec: FaultSpec,
    remaining: Option<u64>,
}

/// What a request should suffer.
#[derive(Debug, Default)]
pub struct Verdict {
    pub latency_ms: u64,
    pub error: Option<ApiError>,
}

/// Active faults.
pub struct Faults {
    faults: Vec<Fault>,
    next_id: u64,
    rng: IdGen,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            faults: Vec::new(),
            next_id: 1,
            rng: IdGen::new(seed ^ 0x5eed),
        }
    }

    /// Adds a fault (checked with [`FaultSpec::check`]); refused when [`MAX_FAULTS`] are active.
    pub fn add(&mut self, spec: FaultSpec) -> Result<u64, String> {
        if self.faults.len() >= MAX_FAULTS {
            return Err(format!(
                "{MAX_FAULTS} faults are active already; DELETE /emulator/faults first"
            ));
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let remaining = spec.count;
        self.faults.push(Fault {
            id,
            spec,
            remaining,
        });
        Ok(id)
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    /// Decides the fate of one request (`api_method` like `calendar.events.list`).
    pub fn judge(&mut self, api_method: &str, http_method: &str, path: &str) -> Verdict {
        let mut verdict = Verdict::default();
        for fault in &mut self.faults {
            let spec = &fault.spec;
            let method_matches = spec
                .method
                .as_deref()
                .is_none_or(|m| m == api_method || m.eq_ignore_ascii_case(http_method));
            let path_matches = spec
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p));
            if !method_matches || !path_matches || fault.remaining == Some(0) {
                continue;
            }
            if let Some(p) = spec.probability
                && self.rng.next_f64() >= p
            {
                continue;
            }
            if let Some(n) = fault.remaining.as_mut() {
                *n -= 1;
            }
            verdict.latency_ms = verdict
                .latency_ms
                .saturating_add(spec.latency_ms.unwrap_or(0))
                .min(MAX_LATENCY_MS);
            if verdict.error.is_none()
                && let Some(status) = spec.status
            {
                let reason = spec
                    .reason
                    .clone()
                    .unwrap_or_else(|| default_reason(status).to_owned());
                let domain = match spec.domain.as_deref() {
                    Some("usageLimits") => "usageLimits",
                    Some("calendar") => "calendar",
                    Some(_) | None if reason.contains("ateLimit") => "usageLimits",
                    _ => "global",
                };
                let message = spec
                    .message
                    .clone()
                    .unwrap_or_else(|| default_message(status).to_owned());
                let mut error = ApiError::new(status, domain, &reason, message);
                error.retry_after = spec.retry_after;
                verdict.error = Some(error);
            }
        }
        self.faults.retain(|f| f.remaining != Some(0));
        verdict
    }

    pub fn ids(&self) -> Vec<u64> {
        self.faults.iter().map(|f| f.id).collect()
    }
}

fn default_reason(status: u16) -> &'static str {
    match status {
        401 => "authError",
        403 => "rateLimitExceeded",
        404 => "notFound",
        409 => "duplicate",
        410 => "fullSyncRequired",
        412 => "conditionNotMet",
        429 => "rateLimitExceeded",
        500 | 503 => "backendError",
        _ => "badRequest",
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        403 | 429 => "Rate Limit Exceeded",
        500 | 503 => "Backend Error",
        _ => "Injected fault",
    }
}

/// Google's per-user quota: a sliding window of requests per minute.
#[derive(Default)]
pub struct Quota {
    windows: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl Quota {
    /// Records a request; false when the user is over `limit` in the last minute.
    pub fn admit(&mut self, user: &str, now: DateTime<Utc>, limit: u32) -> bool {
        let window = self.windows.entry(user.to_owned()).or_default();
        // The clock was moved back (admin API): requests "in the future" no longer count, or
        // the user would stay over quota until the clock caught up with them.
        if window.back().is_some_and(|t| *t > now) {
            window.retain(|t| *t <= now);
        }
        while window
            .front()
            .is_some_and(|t| now - *t >= Duration::minutes(1))
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return false;
        }
        window.push_back(now);
        true
    }

    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(status: u16, count: Option<u64>) -> FaultSpec {
        FaultSpec {
            status: Some(status),
            reason: None,
            message: None,
            domain: None,
            count,
            probability: None,
            latency_ms: None,
            method: Some("calendar.events.list".into()),
            path_contains: None,
            retry_after: Some(3),
        }
    }

    #[test]
    fn counted_faults_hit_the_next_n_matching_requests_only() {
        let mut faults = Faults::new(1);
        faults.add(spec(503, Some(2))).unwrap();
        assert!(
            faults
                .judge("calendar.events.get", "GET", "/x")
                .error
                .is_none()
        );
        let first = faults
            .judge("calendar.events.list", "GET", "/x")
            .error
            .unwrap();
        assert_eq!(
            (first.status, first.reason.as_str(), first.retry_after),
            (503, "backendError", Some(3))
        );
        assert!(
            faults
                .judge("calendar.events.list", "GET", "/x")
                .error
                .is_some()
        );
        assert!(
            faults
                .judge("calendar.events.list", "GET", "/x")
                .error
                .is_none()
        );
        assert!(faults.ids().is_empty());
    }

    #[test]
    fn rate_limit_faults_use_the_usage_limits_domain() {
        let mut faults = Faults::new(1);
        faults.add(spec(403, None)).unwrap();
        let err = faults
            .judge("calendar.events.list", "GET", "/")
            .error
            .unwrap();
        assert_eq!(
            (err.domain, err.reason.as_str()),
            ("usageLimits", "rateLimitExceeded")
        );
    }

    #[test]
    fn quota_is_a_sliding_minute() {
        let mut quota = Quota::default();
        let t0 = Utc::now();
        assert!(quota.admit("a", t0, 2));
        assert!(quota.admit("a", t0, 2));
        assert!(!quota.admit("a", t0, 2));
        assert!(quota.admit("b", t0, 2));
        assert!(quota.admit("a", t0 + Duration::seconds(61), 2));
    }

    #[test]
    fn quota_forgets_requests_after_the_clock_moves_back() {
        let mut quota = Quota::default();
        let t0 = Utc::now();
        assert!(quota.admit("a", t0, 1));
        assert!(!quota.admit("a", t0, 1));
        assert!(quota.admit("a", t0 - Duration::days(365), 1));
    }

    #[test]
    fn invalid_specs_are_refused() {
        assert!(spec(200, None).check().is_err());
        assert!(
            FaultSpec {
                status: None,
                ..spec(500, None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                probability: Some(1.5),
                ..spec(500, None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                latency_ms: Some(u64::MAX),
                ..spec(500, None)
            }
            .check()
            .is_err()
        );
        assert!(
            FaultSpec {
                retry_after: Some(u64::MAX),
                ..spec(500, None)
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn latencies_add_up_without_overflow_and_faults_are_bounded() {
        let mut faults = Faults::new(1);
        for _ in 0..3 {
            faults
                .add(FaultSpec {
                    status: None,
                    latency_ms: Some(u64::MAX / 2),
                    ..spec(500, None)
                })
                .unwrap();
        }
        let verdict = faults.judge("calendar.events.list", "GET", "/");
        assert_eq!(verdict.latency_ms, MAX_LATENCY_MS);
        faults.clear();
        for _ in 0..MAX_FAULTS {
            faults.add(spec(500, None)).unwrap();
        }
        assert!(faults.add(spec(500, None)).is_err());
    }
}
