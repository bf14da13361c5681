//! The contact cache of layers 1 and 2: peer ID → contact, LRU with a time-to-live.

use crate::{Contact, NodeId, Time};
use std::collections::VecDeque;
use std::time::Duration;

/// Recently reached peers, so a repeat call can skip the overlay. Bounded; entries expire
/// after `ttl` and are dropped as soon as a contact fails.
///
/// Each entry keeps its expiry instant (not its insertion instant), so entries carried over
/// a restart with [`ContactCache::restore`] keep their remaining life even though the new
/// driver's clock starts again near zero.
#[derive(Clone, Debug)]
pub struct ContactCache {
    /// Least recently used first; each with the instant it expires.
    entries: VecDeque<(Contact, Time)>,
    capacity: usize,
    ttl: Duration,
}

impl ContactCache {
    /// A cache of at most `capacity` entries living `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ContactCache {
            entries: VecDeque::new(),
            capacity,
            ttl,
        }
    }

    /// The cached contact for `id`, if fresh; marks it most recently used.
    pub fn get(&mut self, now: Time, id: NodeId) -> Option<Contact> {
        let pos = self.entries.iter().position(|(c, _)| c.id == id)?;
        let (c, expires) = self.entries.remove(pos)?;
        if now > expires {
            return None;
        }
        self.entries.push_back((c, expires));
        Some(c)
    }

    /// Remember `contact` as of `now`.
    pub fn insert(&mut self, now: Time, contact: Contact) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(c, _)| c.id != contact.id);
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((contact, now + self.ttl));
    }

    /// Forget `id` (it failed).
    pub fn remove(&mut self, id: NodeId) {
        self.entries.retain(|(c, _)| c.id != id);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most entries held (the bound the peer's database mirrors).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long an entry lives after it is cached.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fresh entries as of `now`, least recently used first, each with its remaining
    /// life: what the peer's database persists so a restarted peer comes back warm.
    pub fn entries(&self, now: Time) -> impl Iterator<Item = (Contact, Duration)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, expires)| now <= *expires)
            .map(move |(c, expires)| (*c, expires.saturating_since(now)))
    }

    /// Put entries back after a restart: `entries` least recently used first, each with its
    /// remaining life (capped at the cache's `ttl`). Later entries win over earlier ones for
    /// the same ID; the capacity bound holds as for [`ContactCache::insert`].
    pub fn restore(&mut self, now: Time, entries: impl IntoIterator<Item = (Contact, Duration)>) {
        if self.capacity == 0 {
            return;
        }
        for (contact, remaining) in entries {
            self.entries.retain(|(c, _)| c.id != contact.id);
            if self.entries.len() >= self.capacity {
                self.entries.pop_front();
            }
            self.entries
                .push_back((contact, now + remaining.min(self.ttl)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_ttl_and_removal() {
        let c = |i| Contact::id_only(NodeId(i));
        let mut cache = ContactCache::new(2, Duration::from_secs(10));
        cache.insert(Time(0), c(1));
        cache.insert(Time(0), c(2));
        assert!(cache.get(Time(1), NodeId(1)).is_some()); // 1 is now most recent
        cache.insert(Time(2), c(3)); // evicts 2
        assert!(cache.get(Time(3), NodeId(2)).is_none());
        assert!(cache.get(Time(3), NodeId(3)).is_some());
        assert!(cache.get(Time::from_millis(20_000), NodeId(1)).is_none()); // expired
        cache.remove(NodeId(3));
        assert!(cache.is_empty());
    }

    #[test]
    fn entries_restore_round_trip_keeps_order_and_remaining_life() {
        let c = |i| Contact::id_only(NodeId(i));
        let ttl = Duration::from_secs(10);
        let mut cache = ContactCache::new(3, ttl);
        cache.insert(Time::from_millis(0), c(1));
        cache.insert(Time::from_millis(4_000), c(2));
        cache.insert(Time::from_millis(5_000), c(3));
        assert!(cache.get(Time::from_millis(6_000), NodeId(1)).is_some()); // order 2, 3, 1
        let saved: Vec<_> = cache.entries(Time::from_millis(6_000)).collect();
        assert_eq!(
            saved,
            vec![
                (c(2), Duration::from_secs(8)),
                (c(3), Duration::from_secs(9)),
                (c(1), Duration::from_secs(4)),
            ]
        );
        // A restarted driver's clock starts again near zero.
        let mut back = ContactCache::new(2, ttl);
        back.restore(Time::from_millis(1), saved);
        assert_eq!(back.len(), 2); // capacity holds: the least recent (2) went
        assert!(back.get(Time::from_millis(2), NodeId(2)).is_none());
        assert!(back.get(Time::from_millis(4_001), NodeId(1)).is_some());
        assert!(back.get(Time::from_millis(4_002), NodeId(1)).is_none()); // 4 s left, gone
        assert!(back.get(Time::from_millis(4_002), NodeId(3)).is_some());
        assert!(back.get(Time::from_millis(9_002), NodeId(3)).is_none()); // 9 s left, gone
        // Expired entries are not exported; a remaining life above the TTL is capped.
        let mut capped = ContactCache::new(2, ttl);
        capped.restore(Time::ZERO, [(c(7), Duration::from_secs(3600))]);
        assert_eq!(capped.entries(Time::from_millis(10_001)).count(), 0);
        assert_eq!(capped.entries(Time::from_millis(10_000)).count(), 1);
    }
}
