//! Inbound fairness: a per-link frame budget, a per-source share of the set-up slots, and a
//! rate-limited warning so that a hostile peer cannot flood the log either.
//!
//! One enrolled peer that floods valid frames must not take the loop from the other links
//! (its neighbours would miss their stabilize answers and evict the node), and one host that
//! opens connections and never finishes TLS must not hold every inbound slot (newcomers
//! would be locked out). See `Limits::frames_per_sec` and `Limits::max_setups_per_source`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket over one link's inbound frames: `rate` frames per second on average,
/// up to `burst` at once. A reader that runs out waits ([`FrameBudget::take`] says how
/// long) instead of reading on, so the excess stays in the sender's TCP buffers.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl FrameBudget {
    /// A full bucket; `rate == 0` means no budget (never waits).
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        let burst = f64::from(burst.max(1));
        FrameBudget {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one frame's token. `None`: go on; `Some(d)`: the link is over its budget, wait
    /// `d` before handing the frame on (the token is already taken). With `enforce` false
    /// (the loop keeps up) the frame goes on and the bucket runs empty but builds no debt.
    pub(crate) fn take(&mut self, now: Instant, enforce: bool) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if !enforce {
            self.tokens = self.tokens.max(0.0);
            return None;
        }
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

/// Unfinished inbound set-ups per source IP, shared by the loop (which takes a slot before
/// spawning the set-up) and the connection tasks (which give it back when set-up ends).
/// Holds at most one entry per unfinished set-up, which the inbound cap bounds.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceSlots {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One unfinished set-up from `ip`; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    slots: SourceSlots,
    ip: IpAddr,
}

impl SourceSlots {
    /// A slot for a set-up from `ip` if that source holds fewer than `max`.
    pub(crate) fn try_take(&self, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut held = self.held.lock().ok()?;
        let n = held.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Set-ups in progress from `ip` (for tests and logs).
    #[cfg(test)]
    pub(crate) fn held(&self, ip: IpAddr) -> usize {
        self.held
            .lock()
            .map(|h| h.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.slots.held.lock()
            && let Some(n) = held.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Lets one warning of a kind through per interval and counts the ones held back, so a flood
/// of refusals is visible in the log without flooding it.
#[derive(Debug)]
pub(crate) struct RateLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// At most one line per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        RateLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged now (`n` similar lines were held back since the
    /// last one); `None` if this one is held back.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Take `n` frames from `b` at `at`, each of which must pass; the wait the next one is
    /// asked for (`None`: it passes too).
    fn pass(b: &mut FrameBudget, at: Instant, n: usize) -> Option<Duration> {
        for _ in 0..n {
            assert_eq!(b.take(at, true), None);
        }
        b.take(at, true)
    }

    #[test]
    fn budget_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(100, 10, t0);
        let wait = pass(&mut b, t0, 10).unwrap();
        assert!(wait > Duration::from_millis(9) && wait <= Duration::from_millis(11));
        // 1 s later the bucket is full again (capped at the burst).
        assert!(pass(&mut b, t0 + Duration::from_secs(1), 10).is_some());
    }

    #[test]
    fn unenforced_budget_builds_no_debt() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(100, 10, t0);
        for _ in 0..1000 {
            assert_eq!(b.take(t0, false), None);
        }
        // Empty, not in debt: 10 ms later one frame's worth is back.
        assert!(pass(&mut b, t0 + Duration::from_millis(10), 1).is_some());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(0, 1, t0);
        assert_eq!(pass(&mut b, t0, 100_000), None);
    }

    #[test]
    fn source_slots_cap_each_ip_and_come_back() {
        let s = SourceSlots::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| s.try_take(a, 3).unwrap()).collect();
        assert!(s.try_take(a, 3).is_none());
        let other = s.try_take(b, 3).unwrap();
        assert_eq!(s.held(a), 3);
        drop(held);
        assert_eq!(s.held(a), 0);
        assert!(s.try_take(a, 3).is_some());
        drop(other);
        assert_eq!(s.held(b), 0);
    }

    #[test]
    fn rate_log_counts_what_it_holds_back() {
        let t0 = Instant::now();
        let mut l = RateLog::new(Duration::from_secs(1));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), Some(2));
    }
}
