//! The three layers and the directory of CSPs and CSPGs.
//!
//! A layer is a sub-ring over a contiguous arc of the one ID space; peers keep Chord state
//! for their own layer only. The directory (from enrollment data or a signed file) tells every
//! peer which CSPs and CSPGs serve each layer.

use crate::{IdSpace, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A layer number: 1 = stable with a public IP, 2 = stable behind NAT, 3 = unstable/mobile.
///
/// Only layers 1..=3 exist: [`Layer::new`], `TryFrom<u8>` and deserialization (a bare number
/// in JSON and postcard, as in certificates and the E&A API) refuse anything else, so code
/// holding a `Layer` never has to clamp or check it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Layer(u8);

/// A layer number outside 1..=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("layer {0} does not exist (1..=3)")]
pub struct LayerError(pub u8);

impl Layer {
    /// Layer 1: stable, strong peers with public IPs.
    pub const ONE: Layer = Layer(1);
    /// Layer 2: stable peers behind NAT.
    pub const TWO: Layer = Layer(2);
    /// Layer 3: unstable / mobile peers.
    pub const THREE: Layer = Layer(3);
    /// The three layers, top first.
    pub const ALL: [Layer; 3] = [Layer::ONE, Layer::TWO, Layer::THREE];

    /// Layer `n`, if it exists (1..=3).
    pub fn new(n: u8) -> Result<Self, LayerError> {
        if (1..=3).contains(&n) {
            Ok(Layer(n))
        } else {
            Err(LayerError(n))
        }
    }

    /// The layer number, 1..=3.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Index 0..3 for arrays.
    pub fn index(self) -> usize {
        usize::from(self.0 - 1)
    }

    /// Layers 1 and 2 keep a contact cache; layer 3 (churning peers) does not.
    pub fn caches_contacts(self) -> bool {
        self.0 <= 2
    }
}

impl TryFrom<u8> for Layer {
    type Error = LayerError;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Layer::new(n)
    }
}

impl From<Layer> for u8 {
    fn from(l: Layer) -> u8 {
        l.0
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where one layer's peers live: the arc its ring's fingers span (see [`crate::RingSpan`]).
pub type LayerArc = crate::chord::RingArc;

/// The arcs of the three layers: layer i covers `[starts[i], starts[i+1])`, the last wraps
/// to `starts[0]`. E&A deployments start layer 1 at 0 ([`LayerArcs::from_bounds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerArcs {
    space: IdSpace,
    starts: [NodeId; 3],
}

/// Layer arcs that do not fit the space (local misconfiguration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer arcs must start at increasing IDs inside the space, got {0:?}")]
pub struct LayerArcsError(pub [u128; 3]);

impl LayerArcs {
    /// Arcs starting at the given IDs (strictly increasing, within the space).
    pub fn new(space: IdSpace, starts: [u128; 3]) -> Result<Self, LayerArcsError> {
        let ok = starts[0] < starts[1] && starts[1] < starts[2] && starts[2] <= space.max();
        if !ok {
            return Err(LayerArcsError(starts));
        }
        Ok(LayerArcs {
            space,
            starts: starts.map(NodeId),
        })
    }

    /// Layer 1 is `[0, b1)`, layer 2 `[b1, b2)`, layer 3 `[b2, 2^m)`: the E&A server's
    /// boundaries (`0 < b1 < b2 <= 2^m - 1`).
    pub fn from_bounds(space: IdSpace, b1: u128, b2: u128) -> Result<Self, LayerArcsError> {
        Self::new(space, [0, b1, b2])
    }

    /// Three equal arcs from 0: `b1 = ⌊(2^m − 1)/3⌋ + 1`, `b2 = 2·b1` (m ≥ 2). The E&A server
    /// pins these boundaries in its database, so they must not change.
    pub fn thirds(space: IdSpace) -> Result<Self, LayerArcsError> {
        let third = space.max() / 3 + 1;
        Self::from_bounds(space, third, third.saturating_mul(2).min(space.max()))
    }

    /// The ID space.
    pub fn space(&self) -> IdSpace {
        self.space
    }

    /// Where each layer's arc starts, layer 1 first.
    pub fn starts(&self) -> [u128; 3] {
        self.starts.map(|s| s.0)
    }

    /// Which layer's arc holds `id`.
    pub fn layer_of(&self, id: NodeId) -> Layer {
        let s = self.space;
        for (i, layer) in Layer::ALL.into_iter().enumerate() {
            let start = self.starts[i];
            let end = self.starts[(i + 1) % 3];
            if s.distance(start, id) < s.distance(start, end) {
                return layer;
            }
        }
        // Unreachable for valid arcs (they partition the ring); the last layer otherwise.
        Layer::THREE
    }

    /// The arc of a layer.
    pub fn arc(&self, layer: Layer) -> LayerArc {
        let i = layer.index();
        let start = self.starts[i];
        let end = self.starts[(i + 1) % 3];
        LayerArc {
            start,
            len: self.space.distance(start, end),
        }
    }
}

/// Who serves each layer: CSPs (sorted) and CSPGs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// CSPs per layer (index 0 = layer 1), sorted by ID.
    pub csps: [Vec<NodeId>; 3],
    /// CSPGs per layer.
    pub cspgs: [Vec<NodeId>; 3],
}

impl Directory {
    /// The CSP of `layer` clockwise-nearest to `target`: the one with the shortest clockwise
    /// distance to it (the closest CSP at or before the target).
    pub fn csp_for(&self, space: IdSpace, layer: Layer, target: NodeId) -> Option<NodeId> {
        self.csp_for_except(space, layer, target, None)
    }

    /// [`csp_for`](Self::csp_for) passing over `except` (a CSP that did not answer) while
    /// the layer has another: a caller's retry goes through the next CSP counter-clockwise,
    /// whose PingRequest copies reach the target too, over a longer arc.
    pub fn csp_for_except(
        &self,
        space: IdSpace,
        layer: Layer,
        target: NodeId,
        except: Option<NodeId>,
    ) -> Option<NodeId> {
        let nearest = |skip: Option<NodeId>| {
            self.csps[layer.index()]
                .iter()
                .copied()
                .filter(|c| Some(*c) != skip)
                .min_by_key(|c| space.distance(*c, target))
        };
        nearest(except).or_else(|| nearest(None))
    }

    /// The gateway of `layer` (the first listed).
    pub fn cspg(&self, layer: Layer) -> Option<NodeId> {
        self.cspgs[layer.index()].first().copied()
    }

    /// Is `id` a CSP or CSPG?
    pub fn is_infrastructure(&self, id: NodeId) -> bool {
        self.csps
            .iter()
            .chain(self.cspgs.iter())
            .any(|l| l.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_layers_and_csp_choice() {
        let s = IdSpace::new(11).unwrap();
        let arcs = LayerArcs::new(s, [0, 512, 1024]).unwrap();
        assert_eq!(arcs.layer_of(NodeId(80)), Layer::ONE);
        assert_eq!(arcs.layer_of(NodeId(600)), Layer::TWO);
        assert_eq!(arcs.layer_of(NodeId(1618)), Layer::THREE);
        assert_eq!(arcs.layer_of(NodeId(2047)), Layer::THREE);
        let dir = Directory {
            csps: [
                vec![],
                vec![],
                vec![1100, 1300, 1536, 1800]
                    .into_iter()
                    .map(NodeId)
                    .collect(),
            ],
            cspgs: [vec![NodeId(1)], vec![NodeId(600)], vec![NodeId(1030)]],
        };
        assert_eq!(
            dir.csp_for(s, Layer::THREE, NodeId(1618)),
            Some(NodeId(1536))
        );
        assert_eq!(
            dir.csp_for(s, Layer::THREE, NodeId(1050)),
            Some(NodeId(1800))
        );
        assert!(LayerArcs::new(s, [5, 5, 9]).is_err());
    }

    #[test]
    fn paper_space_thirds() {
        let s = IdSpace::new(11).unwrap();
        let a = LayerArcs::thirds(s).unwrap();
        assert_eq!(a.starts(), [0, 683, 1366]);
        assert_eq!(a.arc(Layer::THREE).len, 2048 - 1366);
        assert_eq!(a.layer_of(NodeId(80)), Layer::ONE);
        assert_eq!(a.layer_of(NodeId(1618)), Layer::THREE);
        assert!(LayerArcs::from_bounds(s, 0, 5).is_err());
        assert!(LayerArcs::from_bounds(s, 5, 5).is_err());
        assert!(LayerArcs::from_bounds(s, 5, 2048).is_err());
        assert!(LayerArcs::thirds(IdSpace::new(1).unwrap()).is_err());
    }

    #[test]
    fn only_layers_one_to_three_exist() {
        assert_eq!(Layer::new(0), Err(LayerError(0)));
        assert_eq!(Layer::new(4), Err(LayerError(4)));
        assert_eq!(Layer::try_from(2), Ok(Layer::TWO));
        assert_eq!(u8::from(Layer::THREE), 3);
        // Deserialization checks too, in postcard (the wire) and JSON (the E&A API).
        assert_eq!(postcard::to_allocvec(&Layer::TWO).unwrap(), vec![2]);
        assert_eq!(postcard::from_bytes::<Layer>(&[3]).unwrap(), Layer::THREE);
        assert!(postcard::from_bytes::<Layer>(&[0]).is_err());
        assert!(postcard::from_bytes::<Layer>(&[4]).is_err());
        assert_eq!(serde_json::to_string(&Layer::ONE).unwrap(), "1");
        assert_eq!(serde_json::from_str::<Layer>("3").unwrap(), Layer::THREE);
        assert!(serde_json::from_str::<Layer>("0").is_err());
        assert!(serde_json::from_str::<Layer>("9").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arcs_partition_the_space(bits in 2u32..=128, x: u128) {
            let s = IdSpace::new(bits).unwrap();
            let arcs = LayerArcs::thirds(s).unwrap();
            let id = s.wrap(x);
            let hits: Vec<Layer> = Layer::ALL
                .into_iter()
                .filter(|&l| arcs.arc(l).contains(s, id))
                .collect();
            proptest::prop_assert_eq!(hits, vec![arcs.layer_of(id)]);
            let total = Layer::ALL.into_iter().fold(0u128, |t, l| t.wrapping_add(arcs.arc(l).len));
            proptest::prop_assert_eq!(total, s.max().wrapping_add(1));
        }
    }
}
