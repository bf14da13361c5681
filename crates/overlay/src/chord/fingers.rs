//! The finger table, stored compactly.
//!
//! Finger i of node n is successor(n + 2^i). With m = 128 and N peers, only about log2 N of
//! the m fingers are distinct, so the table keeps just the distinct peers sorted by clockwise
//! distance from n: finger i is the first entry at distance ≥ 2^i. Routing needs only "the
//! farthest known peer that precedes the key", a binary search.

use crate::{Contact, IdSpace, NodeId};

/// Distinct finger peers, sorted by clockwise distance from the owner, bounded in length.
///
/// The owner's ID and the ID space are not stored here (the owning node passes them in):
/// memory per simulated peer matters more than two extra arguments.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fingers {
    /// Sorted by clockwise distance from the owner (distances are recomputed, not stored:
    /// memory per simulated peer matters more than a subtraction).
    entries: Vec<Contact>,
}

impl Fingers {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.entries.iter()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Contact>()
    }

    /// Replace everything (converged start).
    pub(crate) fn set(
        &mut self,
        space: IdSpace,
        me: NodeId,
        peers: impl IntoIterator<Item = Contact>,
    ) {
        self.entries.clear();
        self.entries
            .extend(peers.into_iter().filter(|c| c.id != me));
        self.entries.sort_by_key(|c| space.distance(me, c.id));
        self.entries.dedup_by_key(|c| c.id);
        self.entries.shrink_to_fit();
    }

    /// Record that finger `i` (start at distance 2^i) is `owner` at distance `d`. Every other
    /// peer in `[2^i, max(d, 2^(i+1)))` is no finger any more and is dropped: those before
    /// `d` are gone (`owner` is the first live peer from 2^i on), those after it are an
    /// earlier owner that a newcomer now precedes (finger i+1 starts at 2^(i+1)). Keeping the
    /// latter filled a growing ring's tables with stale entries up to the cap, and the cap's
    /// eviction then threw out the fresh owner again, so every refresh looked like a change. Returns whether the
    /// table changed (false: it already held exactly these peers; a new address for the
    /// same peer is taken but is no change).
    pub(crate) fn update(
        &mut self,
        space: IdSpace,
        me: NodeId,
        i: u32,
        owner: Contact,
        d: u128,
        cap: usize,
    ) -> bool {
        let start = 1u128 << i;
        let next_start = if i + 1 >= space.bits() {
            u128::MAX
        } else {
            1u128 << (i + 1)
        };
        let end = d.max(next_start);
        let dist = |c: &Contact| space.distance(me, c.id);
        let had_owner = self.entries.iter().any(|c| c.id == owner.id);
        let before = self.entries.len();
        self.entries
            .retain(|c| !(dist(c) >= start && dist(c) < end) && c.id != owner.id);
        let removed = before - self.entries.len();
        if d == 0 {
            return removed > 0;
        }
        let changed = !(had_owner && removed == 1);
        let pos = self.entries.partition_point(|c| dist(c) < d);
        self.entries.insert(pos, owner);
        if self.entries.len() > cap {
            // Keep the far end (long jumps) and the near end; drop from the middle.
            self.entries.remove(cap / 2);
            return true;
        }
        changed
    }

    /// Forget a peer (it failed or left).
    pub(crate) fn remove(&mut self, id: NodeId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|c| c.id != id);
        before != self.entries.len()
    }

    /// Fingers strictly before `key_distance`, farthest first.
    pub(crate) fn preceding(
        &self,
        space: IdSpace,
        me: NodeId,
        key_distance: u128,
    ) -> impl Iterator<Item = (u128, Contact)> + '_ {
        let dist = move |c: &Contact| space.distance(me, c.id);
        let pos = self.entries.partition_point(|c| dist(c) < key_distance);
        self.entries[..pos].iter().rev().map(move |c| (dist(c), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u128) -> Contact {
        Contact::id_only(NodeId(id))
    }

    #[test]
    fn closest_preceding_picks_farthest_before_key() {
        let s = IdSpace::new(11).unwrap();
        let me = NodeId(80);
        let mut f = Fingers::default();
        f.set(s, me, [c(1331), c(1593), c(96), c(200), c(80)]);
        assert_eq!(f.len(), 4);
        assert_eq!(
            f.preceding(s, me, s.distance(me, NodeId(1618)))
                .next()
                .unwrap()
                .1
                .id,
            NodeId(1593)
        );
        assert_eq!(
            f.preceding(s, me, s.distance(me, NodeId(1500)))
                .next()
                .unwrap()
                .1
                .id,
            NodeId(1331)
        );
        assert!(
            f.preceding(s, me, s.distance(me, NodeId(90)))
                .next()
                .is_none()
        );
    }

    #[test]
    fn update_drops_shadowed_entries() {
        let s = IdSpace::new(11).unwrap();
        let me = NodeId(0);
        let mut f = Fingers::default();
        f.set(s, me, [c(1), c(5), c(9), c(40)]);
        // finger 3 (start 8) is now 20: 9 must have gone.
        f.update(s, me, 3, c(20), 20, 16);
        let ids: Vec<_> = f.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, vec![1, 5, 20, 40]);
    }

    #[test]
    fn update_drops_an_earlier_owner_a_newcomer_precedes() {
        let s = IdSpace::new(11).unwrap();
        let me = NodeId(0);
        let mut f = Fingers::default();
        f.set(s, me, [c(1), c(5), c(14), c(40)]);
        // 10 joined: finger 3 (start 8) is 10 now, and 14 (between 10 and finger 4's start
        // 16) is no finger any more.
        assert!(f.update(s, me, 3, c(10), 10, 16));
        let ids: Vec<_> = f.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, vec![1, 5, 10, 40]);
        // The same answer again changes nothing, even with a new address.
        let mut moved = c(10);
        moved.addr = Some("127.0.0.1:9".parse().unwrap());
        assert!(!f.update(s, me, 3, moved, 10, 16));
        assert_eq!(f.iter().find(|x| x.id.0 == 10).unwrap().addr, moved.addr);
        // The last finger's range runs to the end of the circle.
        assert!(f.update(s, me, 10, c(1500), 1500, 16));
        assert!(!f.update(s, me, 10, c(1500), 1500, 16));
    }
}
