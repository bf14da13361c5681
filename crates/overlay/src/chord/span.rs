//! Where a ring's members live on the identifier circle, and Chord's finger geometry there.
//!
//! A flat ring spreads over the whole circle. A layer ring's members all sit inside their
//! layer's arc, and on the whole circle every finger whose start `n + 2^i` falls past the
//! arc's end lands on the arc's first member: that one peer becomes a finger of nearly every
//! member, and each of them keeps a link to it (in a 512-peer demo, hundreds of links to one
//! peer, closed and dialled again over and over). Spread over the arc, finger `i` starts at
//! `n + 2^i` taken modulo the arc's length, for every `2^i` shorter than the arc, so the
//! fingers fall evenly again. Distances along the arc keep the clockwise order of the arc's
//! members, so routing picks the same peers it would on the whole circle.

use crate::{IdSpace, NodeId};

/// A clockwise arc `[start, start + len)` of the circle that a ring's members occupy (a
/// layer's, [`crate::secure::LayerArc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingArc {
    /// First ID of the arc.
    pub start: NodeId,
    /// Number of IDs in it (at least 1).
    pub len: u128,
}

impl RingArc {
    /// Does the arc contain `id`?
    pub fn contains(&self, space: IdSpace, id: NodeId) -> bool {
        space.distance(self.start, id) < self.len
    }

    /// The ID at `offset` (< len) from the start.
    pub fn at(&self, space: IdSpace, offset: u128) -> NodeId {
        space.add(self.start, offset)
    }
}

/// The stretch of the circle a ring's fingers span: the whole circle, or one arc of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSpan {
    space: IdSpace,
    /// `None`: the whole circle. Never empty and never the whole circle.
    arc: Option<RingArc>,
}

impl RingSpan {
    /// The whole circle of `space`.
    pub fn whole(space: IdSpace) -> Self {
        RingSpan { space, arc: None }
    }

    /// `arc` of `space`; an arc of fewer than two IDs, or of the whole circle, is the whole
    /// circle.
    pub fn new(space: IdSpace, arc: Option<RingArc>) -> Self {
        let arc = arc.filter(|a| a.len >= 2 && a.len <= space.max());
        RingSpan { space, arc }
    }

    /// The circle this span is part of.
    pub fn space(&self) -> IdSpace {
        self.space
    }

    /// How many fingers a member has: the `i` with `2^i` shorter than the span.
    pub fn bits(&self) -> u32 {
        match self.arc {
            None => self.space.bits(),
            Some(a) => 128 - (a.len - 1).leading_zeros(),
        }
    }

    /// Where `id` lies along the arc; an ID outside it counts as the arc's end (it precedes
    /// the first member, which owns it).
    fn offset(a: RingArc, space: IdSpace, id: NodeId) -> u128 {
        let d = space.distance(a.start, id);
        if d < a.len { d } else { a.len }
    }

    /// Clockwise distance from `from` to `to` along the span.
    pub fn distance(&self, from: NodeId, to: NodeId) -> u128 {
        match self.arc {
            None => self.space.distance(from, to),
            Some(a) => {
                let (f, t) = (
                    Self::offset(a, self.space, from) % a.len,
                    Self::offset(a, self.space, to),
                );
                if t >= f { t - f } else { a.len - (f - t) }
            }
        }
    }

    /// The start of finger `i` (below [`bits`](Self::bits)) of member `n`: `n + 2^i`, around
    /// the span.
    pub fn finger_start(&self, n: NodeId, i: u32) -> NodeId {
        match self.arc {
            None => self.space.finger_start(n, i),
            Some(a) => {
                let o = Self::offset(a, self.space, n) % a.len;
                let step = (1u128 << i.min(127)) % a.len;
                let left = a.len - o;
                let t = if step < left { o + step } else { step - left };
                self.space.add(a.start, t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer3() -> RingSpan {
        let space = IdSpace::new(11).unwrap();
        RingSpan::new(
            space,
            Some(RingArc {
                start: NodeId(1024),
                len: 1024,
            }),
        )
    }

    #[test]
    fn fingers_past_the_arc_wrap_inside_it_not_onto_its_first_member() {
        let s = layer3();
        assert_eq!(s.bits(), 10);
        assert_eq!(s.finger_start(NodeId(1593), 4), NodeId(1609));
        // On the whole circle finger 9 of 1593 starts at 57, outside the layer, whose owner
        // is the layer's first member; along the arc it starts at 1081.
        assert_eq!(s.finger_start(NodeId(1593), 9), NodeId(1081));
        assert_eq!(
            RingSpan::whole(s.space()).finger_start(NodeId(1593), 9),
            NodeId(57)
        );
        assert_eq!(s.finger_start(NodeId(2047), 0), NodeId(1024));
    }

    #[test]
    fn distances_along_the_arc_keep_the_clockwise_order_of_its_members() {
        let s = layer3();
        let whole = RingSpan::whole(s.space());
        let me = NodeId(1500);
        let members = [1501u128, 1600, 2047, 1024, 1100, 1499];
        let mut prev = 0;
        for m in members {
            let d = s.distance(me, NodeId(m));
            assert!(d > prev, "{m}: {d} after {prev}");
            assert!(d < 1024);
            prev = d;
        }
        assert_eq!(s.distance(me, NodeId(1100)), 624);
        assert_eq!(whole.distance(me, NodeId(1100)), 1648);
        assert_eq!(s.distance(me, me), 0);
        // A key outside the arc sits just before its first member.
        assert_eq!(s.distance(me, NodeId(300)), s.distance(me, NodeId(1024)));
        assert!(s.distance(me, NodeId(300)) > s.distance(me, NodeId(2047)));
    }

    #[test]
    fn an_arc_of_the_whole_circle_or_of_one_id_is_the_whole_circle() {
        let space = IdSpace::new(11).unwrap();
        for len in [0, 1, 2048, 4096] {
            let s = RingSpan::new(
                space,
                Some(RingArc {
                    start: NodeId(5),
                    len,
                }),
            );
            assert_eq!(s, RingSpan::whole(space));
            assert_eq!(s.bits(), 11);
        }
    }
}
