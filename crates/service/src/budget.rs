//! Rate budgets for Calendar API calls: one per user (Google allows about 600 requests per
//! minute per user) and one for the project. A call waits for a token from both instead of
//! drawing a 403 rateLimitExceeded that would cost a retry; the budgets are paced, never failed.
//!
//! Each budget is a token bucket holding at most one minute's allowance, refilled continuously.
//! The user is the calendar's owner as the deployment sees it (see [`BudgetedCalendar::new`]).
//!
//! Several workers sharing a store share Google's quotas too: each takes an even share of
//! every budget ([`Budgets::set_share`], the number of live workers, which `confsync serve`
//! refreshes from the store). A worker that dies gives its share back to the others at the
//! next refresh; until then the deployment runs below its quota, never above it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_engine::calendar::{CalendarApi, CalendarError, Route};
use tokio::time::Instant;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Requests per minute; 0 turns a budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    pub user_per_minute: u32,
    pub project_per_minute: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            user_per_minute: 600,
            project_per_minute: 10_000,
        }
    }
}

/// A token bucket: `per_minute` tokens, refilled evenly, at most a minute's worth banked.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Takes one token from `bucket`, answering how long the caller must wait for it (the token is
/// reserved: the bucket may go negative, so waiters queue in arrival order).
fn reserve(bucket: &mut Bucket, per_minute: u32, now: Instant) -> Duration {
    let rate = f64::from(per_minute) / 60.0;
    let capacity = f64::from(per_minute);
    bucket.tokens = (bucket.tokens + (now - bucket.at).as_secs_f64() * rate).min(capacity);
    bucket.at = now;
    bucket.tokens -= 1.0;
    if bucket.tokens >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(-bucket.tokens / rate)
    }
}

/// The budgets, shared by every calendar call of the process.
pub struct Budgets {
    config: BudgetConfig,
    project: Mutex<Bucket>,
    users: Mutex<HashMap<String, Bucket>>,
    /// Calls that had to wait, by budget.
    pub waited_user: AtomicU64,
    pub waited_project: AtomicU64,
    /// The workers sharing the quotas (each budget is divided by it; at least 1).
    share: std::sync::atomic::AtomicU32,
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Budgets {
        let now = Instant::now();
        Budgets {
            config,
            project: Mutex::new(Bucket {
                tokens: f64::from(config.project_per_minute),
                at: now,
            }),
            users: Mutex::new(HashMap::new()),
            waited_user: AtomicU64::new(0),
            waited_project: AtomicU64::new(0),
            share: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// This process is one of `workers` sharing the quotas: it takes 1/`workers` of each
    /// budget (at least one request per minute) from now on.
    pub fn set_share(&self, workers: u32) {
        self.share.store(workers.max(1), Ordering::Relaxed);
    }

    /// The number of workers the budgets are divided among.
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    fn per_minute(&self, total: u32) -> u32 {
        (total / self.share()).max(1)
    }

    /// Waits until `user` and the project may make one more request.
    pub async fn acquire(&self, user: &str) {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if self.config.user_per_minute > 0 {
            let user_per_minute = self.per_minute(self.config.user_per_minute);
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            // Buckets of idle users are full again after a minute: forget them.
            if users.len() > 10_000 {
                users.retain(|_, b| now - b.at < Duration::from_secs(60));
            }
            let bucket = users.entry(user.to_owned()).or_insert(Bucket {
                tokens: f64::from(user_per_minute),
                at: now,
            });
            let w = reserve(bucket, user_per_minute, now);
            if !w.is_zero() {
                self.waited_user.fetch_add(1, Ordering::Relaxed);
            }
            wait = wait.max(w);
        }
        if self.config.project_per_minute > 0 {
            let mut project = self.project.lock().unwrap_or_else(|p| p.into_inner());
            let w = reserve(
                &mut project,
                self.per_minute(self.config.project_per_minute),
                now,
            );
            if !w.is_zero() {
                self.waited_project.fetch_add(1, Ordering::Relaxed);
            }
            wait = wait.max(w);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Who a calendar's requests count against.
pub type UserOf = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A calendar whose every request first takes its budgets.
pub struct BudgetedCalendar {
    inner: Arc<dyn CalendarApi>,
    budgets: Arc<Budgets>,
    user_of: UserOf,
}

impl BudgetedCalendar {
    /// `user_of` names the user a calendar's requests are counted for (the owner for
    /// delegation and per-user OAuth: a primary calendar's id; the single token's user
    /// otherwise).
    pub fn new(inner: Arc<dyn CalendarApi>, budgets: Arc<Budgets>, user_of: UserOf) -> Self {
        BudgetedCalendar {
            inner,
            budgets,
            user_of,
        }
    }
}

/// Every call first takes its budgets, then goes to the inner calendar (wrap in
/// [`confsync_engine::calendar::Routed`] to use it as a calendar).
impl Route for BudgetedCalendar {
    fn route<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Arc<dyn CalendarApi>, CalendarError>> {
        Box::pin(async move {
            self.budgets
                .acquire(&(self.user_of)(calendar_id.unwrap_or("")))
                .await;
            Ok(self.inner.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_minute_of_requests_then_paces() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 600.0,
            at: start,
        };
        for _ in 0..600 {
            assert_eq!(reserve(&mut bucket, 600, start), Duration::ZERO);
        }
        // The 601st waits for one token at 10/s: 100 ms; the next one 200 ms.
        let w = reserve(&mut bucket, 600, start);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
        let w = reserve(&mut bucket, 600, start);
        assert!((w.as_secs_f64() - 0.2).abs() < 1e-9, "{w:?}");
        // Ten seconds later 100 tokens came back, 2 of which were already promised.
        let later = start + Duration::from_secs(10);
        for _ in 0..98 {
            assert_eq!(reserve(&mut bucket, 600, later), Duration::ZERO);
        }
        assert!(reserve(&mut bucket, 600, later) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn one_users_burst_waits_while_another_user_goes_on() {
        let budgets = Budgets::new(BudgetConfig {
            user_per_minute: 60,
            project_per_minute: 0,
        });
        let start = Instant::now();
        for _ in 0..60 {
            budgets.acquire("alice@example.com").await;
        }
        assert_eq!(Instant::now(), start, "a minute's allowance goes at once");
        budgets.acquire("bob@example.com").await;
        assert_eq!(Instant::now(), start, "bob has his own budget");
        budgets.acquire("alice@example.com").await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        assert_eq!(budgets.waited_user.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn workers_sharing_a_store_take_an_even_share_of_each_budget() {
        let budgets = Budgets::new(BudgetConfig {
            user_per_minute: 60,
            project_per_minute: 90,
        });
        budgets.set_share(3);
        let start = Instant::now();
        for _ in 0..20 {
            budgets.acquire("alice@example.com").await;
        }
        assert_eq!(Instant::now(), start, "a third of alice's minute at once");
        budgets.acquire("alice@example.com").await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(3),
            "then 20/min"
        );
        for i in 0..9 {
            budgets.acquire(&format!("user{i}@example.com")).await;
        }
        assert_eq!(
            budgets.waited_project.load(Ordering::Relaxed),
            0,
            "30 of the project's 90: 21 taken, 9 more"
        );
        budgets.set_share(0);
        assert_eq!(budgets.share(), 1, "never below one");
    }

    #[tokio::test(start_paused = true)]
    async fn the_project_budget_binds_every_user() {
        let budgets = Budgets::new(BudgetConfig {
            user_per_minute: 600,
            project_per_minute: 120,
        });
        let start = Instant::now();
        for i in 0..120 {
            budgets.acquire(&format!("user{i}@example.com")).await;
        }
        assert_eq!(Instant::now(), start);
        budgets.acquire("another@example.com").await;
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
        assert_eq!(budgets.waited_project.load(Ordering::Relaxed), 1);
    }
}
