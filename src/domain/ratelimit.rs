//! Rate limits of the OAuth endpoints, per client and per client address, by the generic cell
//! rate algorithm (a steady rate with a burst allowance). In one process the state is local
//! (`governor`); with shared state configured (a Redis) it lives there, one charge per limit
//! and request, so every instance enforces the same limit.

use std::num::NonZeroU32;
use std::time::Duration;

use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::storage::StorageResult;
use crate::storage::shared::SharedState;

/// One limit: a steady rate and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub per_second: u32,
    pub burst: u32,
}

impl Rule {
    /// The rule, or none when its rate is 0 (unlimited).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then(|| Self { per_second, burst: burst.max(1) })
    }

    fn interval_us(self) -> u64 {
        1_000_000 / u64::from(self.per_second)
    }
}

/// Which key a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client,
    Ip,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Ip => "ip",
        }
    }
}

/// The state of the tightest limit after a request, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub scope: Scope,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the burst allowance is whole again.
    pub reset_secs: u64,
    /// Set when the request is refused: seconds until a retry can pass.
    pub retry_after_secs: Option<u64>,
}

type Local =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

enum Backend {
    Local { client: Option<Local>, ip: Option<Local> },
    Shared(Arc<dyn SharedState>),
}

/// The configured limits.
pub struct RateLimits {
    client: Option<Rule>,
    ip: Option<Rule>,
    backend: Backend,
}

fn local(rule: Option<Rule>) -> Option<Local> {
    let rule = rule?;
    let rate = NonZeroU32::new(rule.per_second)?;
    let burst = NonZeroU32::new(rule.burst)?;
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)).with_middleware())
}

fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl RateLimits {
    /// Limits kept in this process.
    pub fn local(client: Option<Rule>, ip: Option<Rule>) -> Self {
        Self { client, ip, backend: Backend::Local { client: local(client), ip: local(ip) } }
    }

    /// Limits kept in the shared state, the same for every instance that uses it.
    pub fn shared(client: Option<Rule>, ip: Option<Rule>, shared: Arc<dyn SharedState>) -> Self {
        Self { client, ip, backend: Backend::Shared(shared) }
    }

    /// Whether any limit is configured.
    pub fn enabled(&self) -> bool {
        self.client.is_some() || self.ip.is_some()
    }

    /// Counts a request to `route` against the limit of `scope` under `key` (a client id, or
    /// an address key). None when that limit is not configured. One limit per call, so a
    /// refusal never charges another limit: callers charge the address before authenticating
    /// and the client only after.
    pub async fn check(
        &self,
        route: &str,
        scope: Scope,
        key: &str,
    ) -> StorageResult<Option<Verdict>> {
        let rule = match scope {
            Scope::Client => self.client,
            Scope::Ip => self.ip,
        };
        let Some(rule) = rule else {
            return Ok(None);
        };
        let key = format!("{route}|{}|{key}", scope.as_str());
        match &self.backend {
            Backend::Local { client, ip } => {
                let limiter = match scope {
                    Scope::Client => client.as_ref(),
                    Scope::Ip => ip.as_ref(),
                };
                Ok(limiter.map(|limiter| local_verdict(limiter, scope, rule, &key)))
            }
            Backend::Shared(shared) => {
                let interval = rule.interval_us();
                let charge =
                    shared.charge(&key, interval, interval * u64::from(rule.burst)).await?;
                let wait = charge.slack_or_wait_us;
                Ok(Some(Verdict {
                    scope,
                    limit: rule.burst,
                    remaining: if charge.allowed {
                        u32::try_from(wait / interval).unwrap_or(u32::MAX)
                    } else {
                        0
                    },
                    reset_secs: secs_ceil(charge.until_full_us),
                    retry_after_secs: (!charge.allowed).then(|| secs_ceil(wait).max(1)),
                }))
            }
        }
    }

    /// Forgets local keys whose allowance is whole again, so memory follows the active keys.
    pub fn housekeeping(&self) {
        if let Backend::Local { client, ip } = &self.backend {
            for limiter in [client, ip].into_iter().flatten() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

fn local_verdict(limiter: &Local, scope: Scope, rule: Rule, key: &String) -> Verdict {
    let interval = Duration::from_micros(rule.interval_us());
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            Verdict {
                scope,
                limit: rule.burst,
                remaining,
                reset_secs: (interval * (rule.burst - remaining)).as_secs_f64().ceil() as u64,
                retry_after_secs: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Verdict {
                scope,
                limit: rule.burst,
                remaining: 0,
                reset_secs: (interval * rule.burst).as_secs_f64().ceil() as u64,
                retry_after_secs: Some((wait.as_secs_f64().ceil() as u64).max(1)),
            }
        }
    }
}

/// Of two verdicts, the one to report: a refusal wins; among passes, the one with the least
/// left.
pub fn tightest(a: Option<Verdict>, b: Option<Verdict>) -> Option<Verdict> {
    [a, b].into_iter().flatten().min_by_key(|v| (v.retry_after_secs.is_none(), v.remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn client(limits: &RateLimits, route: &str, id: &str) -> Option<Verdict> {
        limits.check(route, Scope::Client, id).await.ok().flatten()
    }

    #[tokio::test]
    async fn burst_then_refusal_with_retry_after() {
        let limits = RateLimits::local(Rule::new(1, 3), None);
        for left in [2, 1, 0] {
            let v = client(&limits, "/auth/token", "c").await.expect("a verdict");
            assert_eq!((v.remaining, v.retry_after_secs, v.limit), (left, None, 3));
        }
        let refused = client(&limits, "/auth/token", "c").await.expect("a verdict");
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.scope, Scope::Client);
        // Another client, and the same client on another route, have their own allowance.
        let other = client(&limits, "/auth/token", "d").await;
        assert_eq!(other.map(|v| v.retry_after_secs), Some(None));
        let route = client(&limits, "/auth/revoke", "c").await;
        assert_eq!(route.map(|v| v.retry_after_secs), Some(None));
    }

    #[tokio::test]
    async fn a_refusal_charges_no_other_limit_and_zero_rate_is_unlimited() {
        let limits = RateLimits::local(Rule::new(1, 1), Rule::new(1, 1));
        let ip = limits.check("/auth/token", Scope::Ip, "ip").await.ok().flatten();
        assert_eq!(ip.map(|v| v.remaining), Some(0));
        let refused = limits.check("/auth/token", Scope::Ip, "ip").await.ok().flatten();
        assert!(refused.is_some_and(|v| v.retry_after_secs.is_some()));
        // The client's allowance is untouched by the address's refusals.
        let c = client(&limits, "/auth/token", "c").await;
        assert_eq!(c.map(|v| v.retry_after_secs), Some(None));
        assert_eq!(tightest(ip, refused).map(|v| v.retry_after_secs.is_some()), Some(true));
        let none = RateLimits::local(Rule::new(0, 10), None);
        assert!(!none.enabled());
        assert_eq!(client(&none, "/auth/token", "c").await, None);
    }
}
