//! The event queue: a calendar queue ordered by (virtual time, insertion sequence).
//!
//! The sequence number breaks ties in insertion order, so equal-time events run in a fixed
//! order and a seeded run is reproducible bit for bit.
//!
//! Almost every event lands within a few seconds of the clock (message latencies, protocol
//! timers), so events are filed into one-millisecond buckets on a wheel covering
//! [`HORIZON_BUCKETS`] milliseconds; only the bucket being drained is sorted. Events beyond
//! the wheel wait in a binary heap and move onto the wheel as the clock approaches. The
//! events themselves stay put in a slab; buckets and heap hold 24-byte keys. With 10^5 peers
//! this is several times faster than one binary heap of all pending events.
//!
//! Small events (a peer's timer, a departure) need no slab entry: [`EventQueue::push_inline`]
//! files a code and a peer slot in the key itself. With 10^7 peers, each with a pending
//! timer, that is most of the queue, and a slab entry per timer would cost gigabytes.
//!
//! Drained buckets hand their buffers to a small pool that buckets filling up take from, so
//! the thousands of keys a bucket holds at 10^5 peers are not regrown (and their pages
//! zeroed again by the kernel) every millisecond of virtual time.
//!
//! A key may carry a hint (the slot of the peer its event concerns). A large simulation is
//! bound by cache misses: each event touches a random peer. [`EventQueue::touch_ahead`]
//! loads the payloads of a batch of coming events and hands out their hints so that the
//! driver can load those peers too, all at once, so the misses overlap.

use overlay::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Bucket width in microseconds.
const BUCKET_US: u64 = 1000;
/// Buckets on the wheel (16.384 s of virtual time).
pub(crate) const HORIZON_BUCKETS: usize = 16_384;

/// (time, sequence, slab slot or inline code, hint).
type Key = (Time, u64, u32, u32);

/// Bits of a sequence number [`sort_descending`] packs below a key's time offset in its
/// bucket (2^54: 570 years of 10^6 events a second; larger ones sort the slow way).
const SEQ_BITS: u32 = 54;
/// Largest sequence number [`sort_descending`] packs.
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
// A time offset within a bucket fits in the bits above the sequence number.
const _: () = assert!(BUCKET_US <= 1 << (64 - SEQ_BITS));

/// The hint of events that concern no particular peer.
pub const NO_HINT: u32 = u32::MAX;

/// The class [`EventQueue::touch_ahead`] gives an inline event.
pub(crate) const INLINE_CLASS: u8 = u8::MAX;

/// Codes of inline events live at the top of the slot range, above any slab slot.
const INLINE_BASE: u32 = u32::MAX - 255;

/// Buckets this close to the clock (in milliseconds) take pooled buffers: message latencies
/// put most keys there.
const NEAR_BUCKETS: u64 = 256;

/// Drained bucket buffers kept for reuse (a bucket holds ~2 000 keys at 10^5 peers).
const POOL_MAX: usize = 64;

/// Sort a bucket's keys by (time, sequence), latest first. Keys due within [`BUCKET_US`] of
/// the bucket's `start` (all of them, unless one was filed for a time already past) sort
/// by one integer made of the two, which is several times cheaper to compare than the pair.
fn sort_descending(keys: &mut [Key], start: u64) {
    let packable = keys
        .iter()
        .all(|k| (start..start + BUCKET_US).contains(&k.0.as_micros()) && k.1 <= SEQ_MASK);
    if packable {
        keys.sort_unstable_by_key(|k| Reverse(((k.0.as_micros() - start) << SEQ_BITS) | k.1));
    } else {
        keys.sort_unstable_by_key(|k| Reverse((k.0, k.1)));
    }
}

/// What [`EventQueue::pop_item`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<E> {
    /// An event pushed with [`EventQueue::push`] or [`EventQueue::push_hinted`].
    Event(E),
    /// An event pushed with [`EventQueue::push_inline`]: its code and hint.
    Inline {
        /// The code given to `push_inline` (0..=255).
        code: u8,
        /// The hint given to `push_inline`.
        hint: u32,
    },
}

/// A min-queue of timed events with deterministic tie-breaking.
pub struct EventQueue<E> {
    /// `wheel[i]` holds keys whose bucket number ≡ i (mod HORIZON_BUCKETS) within the window.
    wheel: Vec<Vec<Key>>,
    /// Bucket number (time / BUCKET_US) of the bucket being drained.
    cur: u64,
    /// Is `wheel[cur]` sorted (descending, so the earliest is last)?
    cur_sorted: bool,
    /// Keys on the wheel.
    on_wheel: usize,
    /// Keys beyond the wheel's window.
    far: BinaryHeap<Reverse<Key>>,
    /// Empty bucket buffers with capacity, for buckets that start filling.
    pool: Vec<Vec<Key>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            wheel: (0..HORIZON_BUCKETS).map(|_| Vec::new()).collect(),
            cur: 0,
            cur_sorted: true,
            on_wheel: 0,
            far: BinaryHeap::new(),
            pool: Vec::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedule `event` at `at` (times before the current bucket are filed into it).
    pub fn push(&mut self, at: Time, event: E) {
        self.push_hinted(at, event, NO_HINT);
    }

    /// [`Self::push`] with a hint for [`Self::touch_ahead`].
    pub fn push_hinted(&mut self, at: Time, event: E, hint: u32) {
        let seq = self.reserve_seq();
        self.push_reserved(at, seq, event, hint);
    }

    /// Take the sequence number of an event that is filed later with
    /// [`Self::push_reserved`]: it runs, among events due at the same time, where an event
    /// pushed now would have run.
    pub(crate) fn reserve_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// [`Self::push_hinted`] with a sequence number from [`Self::reserve_seq`]. The caller
    /// files it before the clock reaches `at` (the queue cannot run it in the past).
    pub(crate) fn push_reserved(&mut self, at: Time, seq: u64, event: E, hint: u32) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(event);
                i
            }
            None => {
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        self.file((at, seq, slot, hint));
    }

    /// Schedule a small event that is nothing but a `code` and a `hint` (typically a peer's
    /// slot): it takes no slab entry. [`Self::pop_item`] returns it as [`Item::Inline`].
    pub fn push_inline(&mut self, at: Time, code: u8, hint: u32) {
        self.seq += 1;
        self.file((at, self.seq, INLINE_BASE + u32::from(code), hint));
    }

    fn file(&mut self, key: Key) {
        let bucket = (key.0.as_micros() / BUCKET_US).max(self.cur);
        if bucket >= self.cur + HORIZON_BUCKETS as u64 {
            self.far.push(Reverse(key));
            return;
        }
        let idx = (bucket % HORIZON_BUCKETS as u64) as usize;
        // Only buckets due soon fill up; a far one (a timer seconds ahead) holds a few keys.
        if bucket < self.cur + NEAR_BUCKETS
            && self.wheel[idx].capacity() == 0
            && let Some(v) = self.pool.pop()
        {
            self.wheel[idx] = v;
        }
        let b = &mut self.wheel[idx];
        if bucket == self.cur && self.cur_sorted {
            // Keep the drained bucket sorted descending: insert in place.
            let pos = b.partition_point(|k| (k.0, k.1) > (key.0, key.1));
            b.insert(pos, key);
        } else {
            b.push(key);
        }
        self.on_wheel += 1;
    }

    /// Move to the bucket holding the earliest key; false if the queue is empty.
    #[inline]
    fn settle(&mut self) -> bool {
        // Almost always the bucket being drained still holds keys: decided here without a
        // call, which the loop below (a few registers' worth of prologue) would cost on
        // every look at the queue.
        let idx = (self.cur % HORIZON_BUCKETS as u64) as usize;
        if self.cur_sorted && !self.wheel[idx].is_empty() {
            return true;
        }
        self.advance()
    }

    /// [`Self::settle`] once the bucket being drained is empty or not yet sorted.
    #[inline(never)]
    fn advance(&mut self) -> bool {
        loop {
            let idx = (self.cur % HORIZON_BUCKETS as u64) as usize;
            if !self.wheel[idx].is_empty() {
                if !self.cur_sorted {
                    sort_descending(&mut self.wheel[idx], self.cur * BUCKET_US);
                    self.cur_sorted = true;
                }
                return true;
            }
            if self.on_wheel == 0 {
                // Jump straight to the first far event's bucket.
                let Some(Reverse(first)) = self.far.peek() else {
                    return false;
                };
                self.cur = self.cur.max(first.0.as_micros() / BUCKET_US);
            } else {
                self.cur += 1;
            }
            self.cur_sorted = false;
            // Pull far events that are now within the window onto the wheel.
            let window_end = self.cur + HORIZON_BUCKETS as u64;
            while let Some(Reverse(k)) = self.far.peek() {
                if k.0.as_micros() / BUCKET_US >= window_end {
                    break;
                }
                let Some(Reverse(k)) = self.far.pop() else {
                    break;
                };
                let idx =
                    ((k.0.as_micros() / BUCKET_US).max(self.cur) % HORIZON_BUCKETS as u64) as usize;
                self.wheel[idx].push(k);
                self.on_wheel += 1;
            }
        }
    }

    /// Take the earliest event, boxed or inline.
    pub fn pop_item(&mut self) -> Option<(Time, Item<E>)> {
        if !self.settle() {
            return None;
        }
        let idx = (self.cur % HORIZON_BUCKETS as u64) as usize;
        let (at, _, slot, hint) = self.wheel[idx].pop()?;
        self.on_wheel -= 1;
        if self.wheel[idx].is_empty() && self.wheel[idx].capacity() > 64 {
            // A drained bucket is not needed for another 16 s: lend its buffer to the
            // buckets filling up now, or give its memory back.
            let v = std::mem::take(&mut self.wheel[idx]);
            if self.pool.len() < POOL_MAX {
                self.pool.push(v);
            }
        }
        if slot >= INLINE_BASE {
            let code = (slot - INLINE_BASE) as u8;
            return Some((at, Item::Inline { code, hint }));
        }
        let event = self.slab.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some((at, Item::Event(event)))
    }

    /// Take the earliest event (inline events are skipped: a queue that holds them is
    /// drained with [`Self::pop_item`]).
    pub fn pop(&mut self) -> Option<(Time, E)> {
        loop {
            match self.pop_item()? {
                (at, Item::Event(e)) => return Some((at, e)),
                (_, Item::Inline { .. }) => continue,
            }
        }
    }

    /// Take the earliest event if it is due at or before `until`; leave it queued otherwise.
    pub fn pop_due(&mut self, until: Time) -> Option<(Time, E)> {
        loop {
            match self.pop_due_item(until)? {
                (at, Item::Event(e)) => return Some((at, e)),
                (_, Item::Inline { .. }) => continue,
            }
        }
    }

    /// [`Self::pop_item`] if the earliest event is due at or before `until`.
    pub fn pop_due_item(&mut self, until: Time) -> Option<(Time, Item<E>)> {
        if self.peek_time()? > until {
            return None;
        }
        self.pop_item()
    }

    /// Load the payloads of the events `skip` to `skip + hints.len()` places after the next
    /// one (those already known without reorganising the queue), hand each payload to
    /// `touch` (which loads what the payload points to and classifies it), and write their
    /// hints to `hints` with the class `touch` gave ([`INLINE_CLASS`] for an inline event);
    /// returns how many were found. The loads are independent, so their cache misses
    /// overlap one another. Changes nothing.
    pub fn touch_ahead(
        &self,
        skip: usize,
        hints: &mut [(u32, u8)],
        mut touch: impl FnMut(&E) -> (u64, u8),
    ) -> usize {
        if !self.cur_sorted {
            return 0;
        }
        let idx = (self.cur % HORIZON_BUCKETS as u64) as usize;
        let b = &self.wheel[idx];
        let Some(end) = b.len().checked_sub(skip) else {
            return 0;
        };
        let mut acc = 0u64;
        let mut n = 0;
        for (key, h) in b[..end].iter().rev().zip(hints.iter_mut()) {
            let &(_, _, slot, hint) = key;
            let mut class = INLINE_CLASS;
            if slot < INLINE_BASE
                && let Some(Some(e)) = self.slab.get(slot as usize)
            {
                let (word, c) = touch(e);
                acc ^= word;
                class = c;
            }
            *h = (hint, class);
            n += 1;
        }
        std::hint::black_box(acc);
        n
    }

    /// Time of the earliest event.
    pub fn peek_time(&mut self) -> Option<Time> {
        if !self.settle() {
            return None;
        }
        let idx = (self.cur % HORIZON_BUCKETS as u64) as usize;
        self.wheel[idx].last().map(|k| k.0)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.on_wheel + self.far.len()
    }

    /// No events waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_fifo() {
        let mut q = EventQueue::default();
        q.push(Time(5), "b");
        q.push(Time(1), "a");
        q.push(Time(5), "c");
        assert_eq!(drain(&mut q), [(1, "a"), (5, "b"), (5, "c")]);
    }

    /// What is left in the queue, (time, event) in the order it comes out.
    fn drain<E>(q: &mut EventQueue<E>) -> Vec<(u64, E)> {
        std::iter::from_fn(|| q.pop())
            .map(|(t, e)| (t.0, e))
            .collect()
    }

    /// A key filed for a time already past lands in the bucket being drained and still
    /// comes out in (time, sequence) order with the bucket's own keys.
    #[test]
    fn a_key_for_a_past_time_sorts_before_the_bucket() {
        let mut q = EventQueue::default();
        q.push(Time(5_000), "first");
        q.push(Time(5_900), "bucket-late");
        assert_eq!(q.pop(), Some((Time(5_000), "first")));
        q.push(Time(5_300), "bucket-early");
        q.push(Time(1_000), "past");
        q.push(Time(5_300), "bucket-early-2");
        let want = [
            (1_000, "past"),
            (5_300, "bucket-early"),
            (5_300, "bucket-early-2"),
            (5_900, "bucket-late"),
        ];
        assert_eq!(drain(&mut q), want);
    }

    /// The packed sort and the pair sort agree, and a bucket holding a past key sorts by
    /// the pair.
    #[test]
    fn packed_bucket_sort_matches_the_pair_sort() {
        let start = 7_000;
        let mut keys: Vec<Key> = (0..200u64)
            .map(|i| (Time(start + (i * 7919) % BUCKET_US), 1_000 - i, i as u32, 0))
            .collect();
        let mut want = keys.clone();
        want.sort_by_key(|k| Reverse((k.0, k.1)));
        sort_descending(&mut keys, start);
        assert_eq!(keys, want);
        keys.push((Time(10), 5, 999, 0));
        want.push((Time(10), 5, 999, 0));
        sort_descending(&mut keys, start);
        assert_eq!(keys, want);
    }

    proptest::proptest! {
        /// The calendar queue pops exactly what a sorted list of (time, sequence) would,
        /// also when pushes interleave with pops and reach beyond the wheel.
        #[test]
        fn matches_a_sorted_reference(ops in proptest::collection::vec((0u64..40_000_000, proptest::bool::ANY), 1..400)) {
            let mut q = EventQueue::default();
            let mut reference: Vec<(Time, u64)> = Vec::new();
            let mut now = Time(0);
            let mut n = 0u64;
            for (dt, pop) in ops {
                if pop {
                    reference.sort();
                    let want = if reference.is_empty() { None } else { Some(reference.remove(0)) };
                    let got = q.pop();
                    proptest::prop_assert_eq!(got, want);
                    if let Some((t, _)) = want { now = t; }
                } else {
                    n += 1;
                    let at = Time(now.0 + dt);
                    q.push(at, n);
                    reference.push((at, n));
                }
            }
            reference.sort();
            for want in reference {
                proptest::prop_assert_eq!(q.pop(), Some(want));
            }
            proptest::prop_assert!(q.pop().is_none());
        }
    }
}
