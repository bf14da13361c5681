//! A deadline queue: at most one deadline per key, earliest first, ties broken by the key.
//!
//! The front-end and the transactions keep thousands of timers (transaction timers, overlay
//! answers, bindings, idle calls). Scanning them all on every timeout costs O(n) and, over a
//! `HashMap`, fires the due ones in a different order on every run. Here a timeout costs
//! O(log n) per fired entry, the next deadline is the queue's first entry, and entries due
//! together come out in key order, the same on every run.

use overlay::Time;
use std::collections::{BTreeMap, BTreeSet};

/// One deadline per key, ordered by (deadline, key).
#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    /// Each armed key's deadline (to find its queue entry when it is re-armed or cleared).
    by_key: BTreeMap<K, Time>,
    /// The armed keys, earliest deadline first.
    queue: BTreeSet<(Time, K)>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            by_key: BTreeMap::new(),
            queue: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Deadlines<K> {
    /// Arm `key` for `at`, replacing its earlier deadline if it had one.
    pub(crate) fn set(&mut self, key: K, at: Time) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// Clear `key`; its deadline, if it was armed.
    pub(crate) fn remove(&mut self, key: &K) -> Option<Time> {
        let at = self.by_key.remove(key)?;
        self.queue.remove(&(at, key.clone()));
        Some(at)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Disarm and return the earliest key whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<K> {
        if self.next()? > now {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// Clear every key in `range` (one transaction's timers, say).
    pub(crate) fn remove_range(&mut self, range: impl std::ops::RangeBounds<K>) {
        let armed: Vec<(K, Time)> = self
            .by_key
            .range(range)
            .map(|(k, at)| (k.clone(), *at))
            .collect();
        for (key, at) in armed {
            self.by_key.remove(&key);
            self.queue.remove(&(at, key));
        }
    }

    /// Disarm and return the earliest key, due or not (to make room).
    pub(crate) fn pop_first(&mut self) -> Option<(Time, K)> {
        let (at, key) = self.queue.pop_first()?;
        self.by_key.remove(&key);
        Some((at, key))
    }

    /// Keys armed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.queue.len());
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_come_out_by_deadline_then_key() {
        let mut d = Deadlines::default();
        d.set("c", Time(5));
        d.set("a", Time(5));
        d.set("b", Time(1));
        d.set("z", Time(9));
        // Re-arming moves a key; clearing drops it.
        d.set("b", Time(7));
        d.set("y", Time(2));
        assert_eq!(d.remove(&"y"), Some(Time(2)));
        assert_eq!(d.remove(&"y"), None);
        assert_eq!(d.next(), Some(Time(5)));
        assert_eq!(d.pop_due(Time(4)), None);
        let due: Vec<_> = std::iter::from_fn(|| d.pop_due(Time(7))).collect();
        assert_eq!(due, vec!["a", "c", "b"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next(), Some(Time(9)));
        // A range clears what it covers and nothing else.
        d.set("m", Time(3));
        d.set("n", Time(4));
        d.remove_range("a".."n");
        assert_eq!(d.len(), 2);
        assert_eq!(d.pop_first(), Some((Time(4), "n")));
        assert_eq!(d.pop_first(), Some((Time(9), "z")));
        assert_eq!(d.pop_first(), None);
    }
}
