//! The contact cache of layers 1 and 2: peer ID → contact, LRU with a time-to-live.

use crate::{Contact, NodeId, Time};
use std::collections::VecDeque;
use std::time::Duration;

/// Recently reached peers, so a repeat call can skip the overlay. Bounded; entries expire
/// after `ttl` and are dropped as soon as a contact fails.
#[derive(Clone, Debug)]
pub struct ContactCache {
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
        let (c, at) = self.entries.remove(pos)?;
        if now.saturating_since(at) > self.ttl {
            return None;
        }
        self.entries.push_back((c, at));
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
        self.entries.push_back((contact, now));
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
}
