//! Token-bucket rate limit per key with a bounded table (time comes in as an argument).
//!
//! Each key — a source IP for every POST, an enrollment token's hash for enrollments — has a
//! bucket of `burst` requests refilled at `per_sec`. The table holds at most `max_sources`
//! entries; idle entries older than `idle` are dropped first, and if the table is still
//! full the least recently seen key is evicted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Rate-limit settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key (0 disables the limit).
    pub per_sec: f64,
    /// Burst size per key.
    pub burst: f64,
    /// Table capacity.
    pub max_sources: usize,
    /// Idle time after which a source's entry may be dropped.
    pub idle: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_sec: 5.0,
            burst: 20.0,
            max_sources: 10_000,
            idle: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Burst of enrollments one token may make at once by default: the demo's 512 peers, or
/// a fleet of that size rolled out with one token, enroll without waiting.
pub const TOKEN_BURST: f64 = 512.0;
/// Enrollments per second one token may sustain by default after its burst (3 600 an
/// hour, for a rollout bigger than the burst).
pub const TOKEN_PER_SEC: f64 = 1.0;

impl RateLimitConfig {
    /// No limit at all.
    pub fn off() -> Self {
        Self {
            per_sec: 0.0,
            ..Self::default()
        }
    }

    /// The per-token enrollment limit a server gets unless its operator sets another:
    /// [`TOKEN_BURST`] at once, then [`TOKEN_PER_SEC`]. Legitimate enrollment (one token
    /// per peer, or one per rollout of up to 512 peers) never meets it; a leaked multi-use
    /// token yields at most 572 identities in its first minute and 60 a minute after
    /// that, not thousands, until the operator revokes it.
    pub fn per_token() -> Self {
        Self {
            per_sec: TOKEN_PER_SEC,
            burst: TOKEN_BURST,
            ..Self::default()
        }
    }
}

/// The table, keyed by source address unless told otherwise.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    config: RateLimitConfig,
    table: BTreeMap<K, Bucket>,
}

impl<K: Ord + Clone> RateLimiter<K> {
    /// An empty table.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            table: BTreeMap::new(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Is the table empty?
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// May `source` make a request at `now`? Takes one token if so.
    pub fn check(&mut self, source: K, now: Instant) -> bool {
        let c = self.config;
        if c.per_sec <= 0.0 {
            return true;
        }
        if !self.table.contains_key(&source) && self.table.len() >= c.max_sources.max(1) {
            self.table
                .retain(|_, b| now.saturating_duration_since(b.last) < c.idle);
            if self.table.len() >= c.max_sources.max(1)
                && let Some(oldest) = self
                    .table
                    .iter()
                    // Ties go to the smallest key: the map iterates in key order and
                    // `min_by_key` keeps the first minimum.
                    .min_by_key(|(_, b)| b.last)
                    .map(|(key, _)| key.clone())
            {
                self.table.remove(&oldest);
            }
        }
        let b = self.table.entry(source).or_insert(Bucket {
            tokens: c.burst,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * c.per_sec).min(c.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_and_bounded_table() {
        let mut r = RateLimiter::new(RateLimitConfig {
            per_sec: 2.0,
            burst: 3.0,
            max_sources: 4,
            idle: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| r.check(a, t0)));
        assert!(!r.check(a, t0));
        assert!(r.check(a, t0 + Duration::from_millis(500)));
        assert!(!r.check(a, t0 + Duration::from_millis(500)));
        for i in 0..100u8 {
            r.check(IpAddr::from([10, 1, 0, i]), t0 + Duration::from_secs(1));
            assert!(r.len() <= 4);
        }
        let mut off = RateLimiter::new(RateLimitConfig {
            per_sec: 0.0,
            ..RateLimitConfig::default()
        });
        assert!((0..1000).all(|_| off.check(a, t0)));
        assert!(off.is_empty());
    }

    /// The default per-token limit, in virtual time: a rollout of 512 enrolls at once, and
    /// a leaked token hammered every 10 ms mints 572 identities in its first minute and 60
    /// a minute after that.
    #[test]
    fn the_default_token_limit_lets_a_rollout_through_and_holds_a_sybil_back() {
        let t0 = Instant::now();
        let mut r = RateLimiter::<String>::new(RateLimitConfig::per_token());
        assert!((0..512).all(|_| r.check("rollout".into(), t0)));
        let mut minted = 0u32;
        let mut per_minute = Vec::new();
        for tick in 1..=6_000u64 {
            let now = t0 + Duration::from_millis(10 * tick);
            minted += u32::from(r.check("leaked".into(), now));
            if tick % 6_000 == 0 {
                per_minute.push(minted);
            }
        }
        // 512 at once, then one a second for the 60 s.
        assert!(
            (571..=573).contains(&minted),
            "{minted} in the first minute"
        );
        let mut later = 0u32;
        for tick in 6_001..=12_000u64 {
            let now = t0 + Duration::from_millis(10 * tick);
            later += u32::from(r.check("leaked".into(), now));
        }
        assert!((59..=61).contains(&later), "{later} in the second minute");
        assert!(RateLimitConfig::per_token().per_sec > 0.0);
    }
}
