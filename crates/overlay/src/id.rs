//! Node-IDs and ring arithmetic on an m-bit identifier circle.
//!
//! Every position on the overlay is an integer in `0..2^m` (m ≤ 128). All arithmetic is
//! modulo `2^m`; intervals are read clockwise and may wrap past zero. The paper's scenario
//! uses m = 11 (IDs 0..2047).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A position on the identifier circle (a peer's Node-ID or a key).
///
/// The value is always below `2^m` of the [`IdSpace`] it belongs to; [`IdSpace::id`]
/// is the checked way to make one from outside input.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The owner of this key on the ring of `sorted` (ascending IDs): the first at or after
    /// the key, wrapping to the first; `None` on an empty ring. The truth a lookup's answer
    /// is checked against, in tests and in the lab.
    pub fn owner_in(self, sorted: &[NodeId]) -> Option<NodeId> {
        let at = sorted.partition_point(|id| *id < self);
        sorted.get(at).or(sorted.first()).copied()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    /// Node-IDs are written as decimal strings (they can be 128-bit).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u128>().map(NodeId)
    }
}

/// Errors from building IDs or ID spaces out of outside input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// m must be between 1 and 128.
    #[error("identifier width m = {0} is out of range (1..=128)")]
    BadWidth(u32),
    /// The value does not fit in m bits.
    #[error("identifier {value} does not fit in m = {bits} bits")]
    OutOfRange {
        /// The offending value.
        value: u128,
        /// The width of the ID space.
        bits: u8,
    },
}

/// The m-bit identifier circle: width and modular arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdSpace {
    bits: u8,
}

impl IdSpace {
    /// An ID space of `bits` bits (1..=128).
    pub fn new(bits: u32) -> Result<Self, IdError> {
        if (1..=128).contains(&bits) {
            Ok(Self { bits: bits as u8 })
        } else {
            Err(IdError::BadWidth(bits))
        }
    }

    /// The width m.
    pub fn bits(&self) -> u32 {
        u32::from(self.bits)
    }

    /// The largest ID, `2^m - 1`.
    pub fn max(&self) -> u128 {
        if self.bits == 128 {
            u128::MAX
        } else {
            (1u128 << self.bits) - 1
        }
    }

    /// Checked constructor for an ID in this space.
    pub fn id(&self, value: u128) -> Result<NodeId, IdError> {
        if value <= self.max() {
            Ok(NodeId(value))
        } else {
            Err(IdError::OutOfRange {
                value,
                bits: self.bits,
            })
        }
    }

    /// Reduce any value modulo `2^m`.
    pub fn wrap(&self, value: u128) -> NodeId {
        NodeId(value & self.max())
    }

    /// `a + b (mod 2^m)`.
    pub fn add(&self, a: NodeId, b: u128) -> NodeId {
        self.wrap(a.0.wrapping_add(b))
    }

    /// Clockwise distance from `from` to `to`, in `0..2^m`.
    pub fn distance(&self, from: NodeId, to: NodeId) -> u128 {
        to.0.wrapping_sub(from.0) & self.max()
    }

    /// The start of finger `i` (0-based) of `n`: `n + 2^i`.
    pub fn finger_start(&self, n: NodeId, i: u32) -> NodeId {
        self.add(n, 1u128 << i)
    }

    /// Is `x` in the clockwise open interval `(a, b)`? When `a == b` the interval is the
    /// whole circle except `a`.
    pub fn in_open(&self, x: NodeId, a: NodeId, b: NodeId) -> bool {
        let dx = self.distance(a, x);
        let db = self.distance(a, b);
        if db == 0 { dx != 0 } else { dx > 0 && dx < db }
    }

    /// Is `x` in the clockwise half-open interval `(a, b]`? When `a == b` the interval is
    /// the whole circle.
    pub fn in_half_open(&self, x: NodeId, a: NodeId, b: NodeId) -> bool {
        let dx = self.distance(a, x);
        let db = self.distance(a, b);
        db == 0 || (dx > 0 && dx <= db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paper_space_wraps_at_2048() {
        let s = IdSpace::new(11).unwrap();
        assert_eq!(s.max(), 2047);
        assert_eq!(s.add(NodeId(2040), 10), NodeId(2));
        assert_eq!(s.distance(NodeId(1618), NodeId(80)), 2048 - 1618 + 80);
        assert!(s.id(2048).is_err());
        assert!(IdSpace::new(0).is_err());
        assert!(IdSpace::new(129).is_err());
    }

    #[test]
    fn intervals_wrap() {
        let s = IdSpace::new(11).unwrap();
        assert!(s.in_open(NodeId(5), NodeId(2000), NodeId(10)));
        assert!(!s.in_open(NodeId(10), NodeId(2000), NodeId(10)));
        assert!(s.in_half_open(NodeId(10), NodeId(2000), NodeId(10)));
        assert!(s.in_half_open(NodeId(7), NodeId(7), NodeId(7)));
        assert!(!s.in_open(NodeId(7), NodeId(7), NodeId(7)));
    }

    #[test]
    fn full_width_space() {
        let s = IdSpace::new(128).unwrap();
        assert_eq!(s.add(NodeId(u128::MAX), 1), NodeId(0));
        assert_eq!(s.distance(NodeId(u128::MAX), NodeId(0)), 1);
        assert_eq!(s.finger_start(NodeId(0), 127), NodeId(1 << 127));
    }

    #[test]
    fn the_owner_is_the_first_at_or_after_the_key_around_the_ring() {
        let ring = [NodeId(80), NodeId(1593), NodeId(1618)];
        assert_eq!(NodeId(80).owner_in(&ring), Some(NodeId(80)));
        assert_eq!(NodeId(81).owner_in(&ring), Some(NodeId(1593)));
        assert_eq!(NodeId(1600).owner_in(&ring), Some(NodeId(1618)));
        assert_eq!(NodeId(1619).owner_in(&ring), Some(NodeId(80)));
        assert_eq!(NodeId(0).owner_in(&ring), Some(NodeId(80)));
        assert_eq!(NodeId(5).owner_in(&[]), None);
    }

    proptest! {
        /// The owner is the peer at the least clockwise distance from the key.
        #[test]
        fn the_owner_is_the_nearest_peer_clockwise(ids: Vec<u16>, key: u16) {
            let s = IdSpace::new(16).unwrap();
            let mut ring: Vec<NodeId> = ids.into_iter().map(|i| NodeId(u128::from(i))).collect();
            ring.sort_unstable();
            ring.dedup();
            let key = NodeId(u128::from(key));
            let nearest = ring.iter().copied().min_by_key(|id| s.distance(key, *id));
            prop_assert_eq!(key.owner_in(&ring), nearest);
        }

        #[test]
        fn distance_round_trips(bits in 1u32..=128, a: u128, d: u128) {
            let s = IdSpace::new(bits).unwrap();
            let a = s.wrap(a);
            let d = d & s.max();
            prop_assert_eq!(s.distance(a, s.add(a, d)), d);
        }

        #[test]
        fn half_open_is_open_plus_end(bits in 1u32..=16, x: u128, a: u128, b: u128) {
            let s = IdSpace::new(bits).unwrap();
            let (x, a, b) = (s.wrap(x), s.wrap(a), s.wrap(b));
            if a != b {
                prop_assert_eq!(s.in_half_open(x, a, b), s.in_open(x, a, b) || x == b);
            }
        }
    }
}
