//! The finger table, stored compactly.
//!
//! Finger i of node n is successor(n + 2^i). With m = 128 and N peers, only about log2 N of
//! the m fingers are distinct, so the table keeps just the distinct peers sorted by clockwise
//! distance from n: finger i is the first entry at distance ≥ 2^i. Routing needs only "the
//! farthest known peer that precedes the key", a binary search.

use super::contacts::Contacts;
use super::span::RingSpan;
use crate::{Contact, NodeId};

/// Distinct finger peers, sorted by clockwise distance from the owner, bounded in length.
///
/// The owner's ID and the ring's span are not stored here (the owning node passes them in):
/// memory per simulated peer matters more than two extra arguments. For the same reason the
/// entries are bare Node-IDs (16 bytes, where a [`Contact`] takes 48): the simulator's peers
/// have no socket addresses, and a runtime peer's addresses sit in a short side table. At
/// 10^7 simulated peers with ~24 fingers each that is 7 GB less.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fingers {
    /// Sorted by clockwise distance from the owner (distances are recomputed, not stored:
    /// memory per simulated peer matters more than a subtraction).
    list: Contacts,
}

impl Fingers {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    fn contact(&self, id: NodeId) -> Contact {
        self.list.contact(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Contact> + '_ {
        self.list.iter()
    }

    /// The table's own fields, not its heap (see [`super::ChordNode::touch_fields`]).
    pub(crate) fn touch_fields(&self) -> u64 {
        self.list.touch_fields()
    }

    /// A word from each cache line of the table (see [`super::ChordNode::touch_lists`]).
    pub(crate) fn touch(&self) -> u64 {
        self.list.touch()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.list.heap_bytes()
    }

    /// Replace everything (converged start).
    pub(crate) fn set(
        &mut self,
        span: RingSpan,
        me: NodeId,
        peers: impl IntoIterator<Item = Contact>,
    ) {
        let mut entries: Vec<Contact> = peers.into_iter().filter(|c| c.id != me).collect();
        entries.sort_by_key(|c| span.distance(me, c.id));
        entries.dedup_by_key(|c| c.id);
        self.list = Contacts::from_contacts(entries);
        self.list.shrink_to_fit();
    }

    /// Record that finger `i` (start at distance 2^i) is `owner` at distance `d`: peers that
    /// sat in `[2^i, d)` cannot be live fingers any more and are dropped. Peers after the
    /// owner but before finger i+1's start (an earlier owner that a newcomer now precedes)
    /// are no finger either, but they stay as extra ways forward while there is room: when a
    /// finger is slow or dead they are what routing falls back on. Once the table is full they
    /// go first, before the cap's eviction, which otherwise threw the fresh owner out again
    /// and made every refresh look like a change. Returns whether the table changed (false:
    /// it already held exactly these peers; a new address for the same peer is no change).
    pub(crate) fn update(
        &mut self,
        span: RingSpan,
        me: NodeId,
        i: u32,
        owner: Contact,
        d: u128,
        cap: usize,
    ) -> bool {
        let start = 1u128 << i;
        let dist = |id: &NodeId| span.distance(me, *id);
        let had_owner = self.list.contains(owner.id);
        let before = self.list.len();
        self.list
            .retain(|c| !(dist(&c) >= start && dist(&c) < d) && c != owner.id);
        if d == 0 {
            return before != self.list.len();
        }
        // Full: make room from this finger's own range first. Only an owner inside the range
        // (not one that wrapped around) speaks for the rest of it.
        if self.list.len() >= cap && d >= start {
            let next_start = if i + 1 >= span.bits() {
                u128::MAX
            } else {
                1u128 << (i + 1)
            };
            self.list
                .retain(|c| !(dist(&c) > d && dist(&c) < next_start));
        }
        let removed = before - self.list.len();
        let changed = !(had_owner && removed == 1);
        let pos = self.list.ids().partition_point(|c| dist(c) < d);
        self.list.insert(pos, owner);
        let full = self.list.len() > cap;
        if full {
            // Keep the far end (long jumps) and the near end; drop from the middle.
            self.list.remove(cap / 2);
        }
        full || changed
    }

    /// Forget a peer (it failed or left).
    pub(crate) fn remove(&mut self, id: NodeId) -> bool {
        let before = self.list.len();
        self.list.retain(|c| c != id);
        before != self.list.len()
    }

    /// The nearest finger at clockwise distance `d` or more: finger i's current peer when
    /// `d` is 2^i.
    pub(crate) fn at_or_after(&self, span: RingSpan, me: NodeId, d: u128) -> Option<Contact> {
        let pos = self
            .list
            .ids()
            .partition_point(|c| span.distance(me, *c) < d);
        self.list.get(pos)
    }

    /// Is `id` finger i for some i (the nearest entry at distance 2^i or more), rather than
    /// an extra way forward kept while there is room? Some 2^i must lie in (distance of the
    /// entry before it, its own distance].
    pub(crate) fn is_finger(&self, span: RingSpan, me: NodeId, id: NodeId) -> bool {
        let Some(pos) = self.list.position(id) else {
            return false;
        };
        let d = span.distance(me, id);
        match pos
            .checked_sub(1)
            .and_then(|p| self.list.ids().get(p))
            .map(|prev| span.distance(me, *prev))
        {
            None | Some(0) => d > 0,
            Some(prev) => d.leading_zeros() < prev.leading_zeros(),
        }
    }

    /// Finger `i` was confirmed at distance `d`: drop the extra ways forward between it and
    /// finger i+1's start (earlier owners kept while the table formed), so a quiet table
    /// converges to the true fingers as one refreshed by lookups does.
    pub(crate) fn drop_extras(&mut self, span: RingSpan, me: NodeId, i: u32, d: u128) {
        let next_start = if i + 1 >= span.bits() {
            u128::MAX
        } else {
            1u128 << (i + 1)
        };
        self.list.retain(|c| {
            let dc = span.distance(me, c);
            !(dc > d && dc < next_start)
        });
    }

    /// Fingers strictly before `key_distance`, farthest first.
    pub(crate) fn preceding(
        &self,
        span: RingSpan,
        me: NodeId,
        key_distance: u128,
    ) -> impl Iterator<Item = (u128, Contact)> + '_ {
        let dist = move |c: &NodeId| span.distance(me, *c);
        let ids = self.list.ids();
        let pos = ids.partition_point(|c| dist(c) < key_distance);
        ids[..pos]
            .iter()
            .rev()
            .map(move |c| (dist(c), self.contact(*c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's 11-bit space, a peer at `me`, and its empty finger table.
    fn empty_table(me: u128) -> (RingSpan, NodeId, Fingers) {
        (
            RingSpan::whole(crate::IdSpace::new(11).unwrap()),
            NodeId(me),
            Fingers::default(),
        )
    }

    fn c(id: u128) -> Contact {
        Contact::id_only(NodeId(id))
    }

    #[test]
    fn closest_preceding_picks_farthest_before_key() {
        let (s, me, mut f) = empty_table(80);
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
        let (s, me, mut f) = empty_table(0);
        f.set(s, me, [c(1), c(5), c(9), c(40)]);
        // finger 3 (start 8) is now 20: 9 must have gone.
        f.update(s, me, 3, c(20), 20, 16);
        let ids: Vec<_> = f.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, vec![1, 5, 20, 40]);
    }

    #[test]
    fn only_true_fingers_count_as_fingers_not_extra_ways_forward() {
        let (s, me, mut f) = empty_table(0);
        // 10 is finger 3 (start 8), 14 an earlier owner kept as a way forward (no 2^i in
        // (10, 14]), 40 finger 4 and 5 (starts 16, 32).
        f.set(s, me, [c(1), c(5), c(10), c(14), c(40)]);
        let fingers: Vec<u128> = [1, 5, 10, 14, 40, 99]
            .into_iter()
            .filter(|id| f.is_finger(s, me, NodeId(*id)))
            .collect();
        assert_eq!(fingers, vec![1, 5, 10, 40]);
    }

    #[test]
    fn an_earlier_owner_stays_while_there_is_room_and_goes_first_when_full() {
        let (s, me, mut f) = empty_table(0);
        f.set(s, me, [c(1), c(5), c(14), c(40)]);
        // 10 joined: finger 3 (start 8) is 10 now; 14 (before finger 4's start, 16) is no
        // finger but stays as a way forward while the table has room.
        assert!(f.update(s, me, 3, c(10), 10, 16));
        let ids: Vec<_> = f.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, vec![1, 5, 10, 14, 40]);
        // With the table full, 14 goes instead of the cap evicting someone.
        let mut full = Fingers::default();
        full.set(s, me, [c(1), c(5), c(14), c(40)]);
        assert!(full.update(s, me, 3, c(10), 10, 4));
        let ids: Vec<_> = full.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, vec![1, 5, 10, 40]);
        // The same answer again changes nothing, even with a new address.
        let mut moved = c(10);
        moved.addr = Some("127.0.0.1:9".parse().unwrap());
        assert!(!full.update(s, me, 3, moved, 10, 4));
        assert_eq!(full.iter().find(|x| x.id.0 == 10).unwrap().addr, moved.addr);
        // An answer naming this peer, or one that wrapped around, drops nothing.
        assert!(!full.update(s, me, 3, c(0), 0, 4));
        assert!(!full.update(s, me, 5, c(5), 5, 4));
        assert_eq!(
            full.iter().map(|x| x.id.0).collect::<Vec<_>>(),
            vec![1, 5, 10, 40]
        );
    }
}
