//! The three layers and the directory of CSPs and CSPGs.
//!
//! A layer is a sub-ring over a contiguous arc of the one ID space; peers keep Chord state
//! for their own layer only. The directory (from enrollment data or a signed file) tells every
//! peer which CSPs and CSPGs serve each layer.

use crate::{IdSpace, NodeId};
use serde::{Deserialize, Serialize};

/// Layer number: 1 = stable with public IP, 2 = stable behind NAT, 3 = unstable/mobile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Layer(pub u8);

impl Layer {
    /// Index 0..3 for arrays.
    pub fn index(self) -> usize {
        usize::from(self.0.clamp(1, 3) - 1)
    }

    /// Layers 1 and 2 keep a contact cache; layer 3 (churning peers) does not.
    pub fn caches_contacts(self) -> bool {
        self.0 <= 2
    }
}

/// The arcs of the three layers: layer i covers `[starts[i], starts[i+1])`, the last wraps
/// to `starts[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerArcs {
    space: IdSpace,
    starts: [NodeId; 3],
}

/// Layer arcs that do not fit the space.
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

    /// Three equal arcs.
    pub fn thirds(space: IdSpace) -> Self {
        let third = space.max() / 3;
        LayerArcs {
            space,
            starts: [NodeId(0), NodeId(third), NodeId(third.saturating_mul(2))],
        }
    }

    /// The ID space.
    pub fn space(&self) -> IdSpace {
        self.space
    }

    /// Which layer's arc holds `id`.
    pub fn layer_of(&self, id: NodeId) -> Layer {
        let s = self.space;
        for i in 0..3 {
            let start = self.starts[i];
            let end = self.starts[(i + 1) % 3];
            let width = s.distance(start, end);
            if s.distance(start, id) < width {
                return Layer(i as u8 + 1);
            }
        }
        Layer(1)
    }

    /// First ID and width of a layer's arc.
    pub fn arc(&self, layer: Layer) -> (NodeId, u128) {
        let i = layer.index();
        let start = self.starts[i];
        (start, self.space.distance(start, self.starts[(i + 1) % 3]))
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
        self.csps[layer.index()]
            .iter()
            .copied()
            .min_by_key(|c| space.distance(*c, target))
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
        assert_eq!(arcs.layer_of(NodeId(80)), Layer(1));
        assert_eq!(arcs.layer_of(NodeId(600)), Layer(2));
        assert_eq!(arcs.layer_of(NodeId(1618)), Layer(3));
        assert_eq!(arcs.layer_of(NodeId(2047)), Layer(3));
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
        assert_eq!(dir.csp_for(s, Layer(3), NodeId(1618)), Some(NodeId(1536)));
        assert_eq!(dir.csp_for(s, Layer(3), NodeId(1050)), Some(NodeId(1800)));
        assert!(LayerArcs::new(s, [5, 5, 9]).is_err());
    }
}
