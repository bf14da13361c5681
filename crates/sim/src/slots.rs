//! Per-slot metadata of the simulated peers and the Node-ID → slot index over it.
//!
//! Every message the simulator sends needs the receiver's slot and position (for the
//! latency model), and every event checks that its peer is still the one it was meant for.
//! A large simulation is bound by cache misses, so what those checks read sits in one dense
//! array, one 64-byte line a slot ([`SlotMeta`]), apart from the peers' Chord state; and the
//! index holds nothing but slot numbers (4 bytes a bucket, open addressing with linear
//! probing), the Node-ID being compared in the slot's line. A lookup costs one probe into a
//! small table and one line that the message's latency needs anyway, where a general hash
//! map of IDs to slots and positions cost two misses of its own (its control bytes and its
//! entry) and more memory at 10^7 peers.

use crate::models::GeoRad;
use overlay::{NodeId, Time};

/// What the hot path needs to know about one slot, and the driver's bookkeeping of its
/// peer, in one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
pub(crate) struct SlotMeta {
    /// Node-ID of the peer in this slot (meaningless while `alive` is false).
    pub(crate) id: NodeId,
    /// Its position, prepared for the latency model.
    pub(crate) geo: GeoRad,
    /// When its queued timer event fires (`Time(u64::MAX)`: none queued).
    pub(crate) timer_at: Time,
    /// How much later than `timer_at` the peer's own next deadline is, in microseconds: 0
    /// when the queued event is due for the peer; more when the deadline moved on since the
    /// event was queued (an acknowledgement came in and the peer no longer needs waking
    /// then), so the event is filed again that much later without touching the peer;
    /// [`LATER_UNKNOWN`] when it is further than this field holds (or there is none): then
    /// the peer is asked.
    pub(crate) timer_later: u32,
    /// How many peers this slot has held before the current one: a message that names the
    /// slot and its generation is for the current peer.
    pub(crate) generation: u32,
    /// Its place in the list of live slots, while joined.
    pub(crate) live_pos: u32,
    /// Lookups it started that have no outcome yet (a peer caps its own lookups in flight
    /// far below this: `ChordConfig::max_lookups`).
    pub(crate) outstanding: u16,
    /// Is the slot's peer alive (not departed)?
    pub(crate) alive: bool,
    /// Has the peer joined (is it among the live peers lookups start from)?
    pub(crate) joined: bool,
}

/// [`SlotMeta::timer_later`] of a peer whose next deadline is too far (or absent) to note.
pub(crate) const LATER_UNKNOWN: u32 = u32::MAX;

/// Bucket without a slot.
const EMPTY: u32 = u32::MAX;
/// Bucket whose slot was removed (probing goes on past it).
const GONE: u32 = u32::MAX - 1;

/// Node-ID → slot, open addressing over slot numbers; the IDs live in the [`SlotMeta`]s.
#[derive(Debug, Default)]
pub(crate) struct SlotIndex {
    buckets: Vec<u32>,
    /// Live entries.
    len: usize,
    /// Buckets marked [`GONE`].
    gone: usize,
}

/// Bucket of `id` in a table of `mask + 1` buckets: IDs may be small integers (short ID
/// spaces), so the 128 bits are folded and mixed before the top bits are taken.
fn home(id: NodeId, mask: usize) -> usize {
    let folded = (id.0 as u64) ^ ((id.0 >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

impl SlotIndex {
    /// The slot of `id`, if it is indexed.
    #[inline]
    pub(crate) fn get(&self, id: NodeId, meta: &[SlotMeta]) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut i = home(id, mask);
        loop {
            match self.buckets[i] {
                EMPTY => return None,
                GONE => {}
                s => {
                    if meta.get(s as usize).is_some_and(|m| m.id == id) {
                        return Some(s);
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Load the bucket where a search for `id` starts (see [`Self::get`]); changes nothing.
    #[inline]
    pub(crate) fn touch(&self, id: NodeId) -> u32 {
        if self.buckets.is_empty() {
            return 0;
        }
        self.buckets[home(id, self.buckets.len() - 1)]
    }

    /// Is `id` indexed?
    pub(crate) fn contains(&self, id: NodeId, meta: &[SlotMeta]) -> bool {
        self.get(id, meta).is_some()
    }

    /// Room for `n` entries without regrowing.
    pub(crate) fn reserve(&mut self, n: usize, meta: &[SlotMeta]) {
        let want = (2 * n).next_power_of_two().max(16);
        if want > self.buckets.len() {
            self.rebuild(want, meta);
        }
    }

    /// Index `slot`, whose ID `meta[slot].id` must not be indexed yet.
    pub(crate) fn insert(&mut self, slot: u32, meta: &[SlotMeta]) {
        // At most half full, tombstones included: probes stay short.
        if 2 * (self.len + self.gone + 1) > self.buckets.len() {
            let want = (4 * (self.len + 1)).next_power_of_two().max(16);
            self.rebuild(want, meta);
        }
        self.place(slot, meta[slot as usize].id);
        self.len += 1;
    }

    /// Drop `id` from the index.
    pub(crate) fn remove(&mut self, id: NodeId, meta: &[SlotMeta]) {
        if self.buckets.is_empty() {
            return;
        }
        let mask = self.buckets.len() - 1;
        let mut i = home(id, mask);
        loop {
            match self.buckets[i] {
                EMPTY => return,
                GONE => {}
                s => {
                    if meta.get(s as usize).is_some_and(|m| m.id == id) {
                        self.buckets[i] = GONE;
                        self.len -= 1;
                        self.gone += 1;
                        return;
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn place(&mut self, slot: u32, id: NodeId) {
        let mask = self.buckets.len() - 1;
        let mut i = home(id, mask);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.buckets[i] = slot;
    }

    /// Re-file every live entry into `size` buckets (dropping tombstones).
    fn rebuild(&mut self, size: usize, meta: &[SlotMeta]) {
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; size]);
        self.gone = 0;
        for s in old {
            if s != EMPTY && s != GONE {
                self.place(s, meta[s as usize].id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u128) -> SlotMeta {
        SlotMeta {
            id: NodeId(id),
            geo: GeoRad::default(),
            timer_at: Time::ZERO,
            timer_later: 0,
            alive: true,
            generation: 0,
            joined: true,
            live_pos: 0,
            outstanding: 0,
        }
    }

    #[test]
    fn a_cache_line_a_slot() {
        assert_eq!(std::mem::size_of::<SlotMeta>(), 64);
    }

    proptest::proptest! {
        /// The index answers like a map of the live IDs, through inserts, removals and
        /// growth, for small IDs (short ID spaces) and large ones.
        #[test]
        fn matches_a_reference_map(ops in proptest::collection::vec((0u128..64, proptest::bool::ANY, proptest::bool::ANY), 1..300)) {
            let mut m: Vec<SlotMeta> = Vec::new();
            let mut idx = SlotIndex::default();
            let mut reference = std::collections::BTreeMap::new();
            for (raw, insert, big) in ops {
                let id = if big { raw.wrapping_mul(0x1234_5678_9ABC_DEF1_0FED_CBA9_8765_4321) } else { raw };
                if insert {
                    if let std::collections::btree_map::Entry::Vacant(e) = reference.entry(id) {
                        m.push(meta(id));
                        let slot = (m.len() - 1) as u32;
                        idx.insert(slot, &m);
                        e.insert(slot);
                    }
                } else if reference.remove(&id).is_some() {
                    idx.remove(NodeId(id), &m);
                }
                for (id, slot) in &reference {
                    proptest::prop_assert_eq!(idx.get(NodeId(*id), &m), Some(*slot));
                }
                proptest::prop_assert_eq!(idx.get(NodeId(id), &m), reference.get(&id).copied());
            }
        }
    }
}
