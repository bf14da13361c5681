//! The event queue: a binary heap ordered by (virtual time, insertion sequence).
//!
//! The sequence number breaks ties in insertion order, so equal-time events run in a fixed
//! order and a seeded run is reproducible bit for bit.

use overlay::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A min-queue of timed events with deterministic tie-breaking.
///
/// The heap orders only small keys `(time, seq, slot)`; the events themselves (overlay
/// messages are a few hundred bytes) sit still in a slab, so sifting the heap moves 32 bytes
/// per step instead of whole messages.
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(Time, u64, u32)>>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedule `event` at `at`.
    pub fn push(&mut self, at: Time, event: E) {
        self.seq += 1;
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
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// Take the earliest event.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let event = self.slab.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some((at, event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// No events waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
        assert_eq!(q.pop(), Some((Time(1), "a")));
        assert_eq!(q.pop(), Some((Time(5), "b")));
        assert_eq!(q.pop(), Some((Time(5), "c")));
        assert_eq!(q.pop(), None);
    }
}
