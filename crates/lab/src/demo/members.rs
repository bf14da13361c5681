//! The demo's members: the paper's Node-IDs and one E&A certificate (Ed25519 key, the
//! operator-assigned ID, layer and role) per peer, issued directly by the E&A's CA.

use crate::{BoxError, LabError};
use enroll::cert::{Binding, Ca, Csr, KeyPair, csr_for_key, der_to_pem};
use net::Identity;
use overlay::NodeId;
use overlay::secure::LayerArcs;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use sim::paper;

/// One enrolled peer.
pub(crate) struct Enrolled {
    pub(crate) id: NodeId,
    pub(crate) role: enroll::Role,
    pub(crate) identity: Identity,
}

/// The paper's IDs plus random ones (as the simulator picks them), sorted.
pub(crate) fn paper_ids(peers: usize, seed: u64) -> Vec<NodeId> {
    sim::paper::ids(peers, &mut Xoshiro256PlusPlus::seed_from_u64(seed))
}

/// Issue peer `id` its certificate: a fresh Ed25519 key, the role the paper gives that ID,
/// the layer its arc says, valid for a day.
pub(crate) fn issue(ca: &Ca, arcs: &LayerArcs, id: NodeId) -> Result<Enrolled, LabError> {
    let role = if paper::CSPS.contains(&id.0) {
        enroll::Role::Csp
    } else if paper::CSPGS.contains(&id.0) {
        enroll::Role::Cspg
    } else {
        enroll::Role::Peer
    };
    let layer = arcs.layer_of(id);
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(LabError::peer(id, "generating its Ed25519 key"))?;
    let csr = csr_for_key(&key)
        .map_err(BoxError::from)
        .and_then(|pem| Csr::from_pem(&pem).map_err(BoxError::from))
        .map_err(LabError::peer(id, "writing its certificate request"))?;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| LabError::peer(id, "drawing a certificate serial")("no system randomness"))?;
    let t = enroll::server::unix_now();
    let der = ca
        .issue(
            &csr,
            &Binding {
                node_id: id,
                layer,
                role,
            },
            serial,
            t - 300,
            t + 24 * 3600,
        )
        .map_err(LabError::peer(id, "issuing its certificate at the E&A CA"))?;
    let chain = der_to_pem(&der, "CERTIFICATE") + ca.cert_pem();
    let identity = Identity::from_pem(&chain, &key.serialize_pem())
        .map_err(LabError::peer(id, "loading its TLS identity"))?;
    Ok(Enrolled { id, role, identity })
}

/// Fisher–Yates driven by the run's seeded RNG. The demo's join order and kill order are
/// part of its reproducible set-up: the paper's scenario needs the plain-Chord lookup from
/// 80 to meet 1617 (80 → 1104 → 1617), which depends on the finger tables a join order
/// leaves behind, so the order is fixed by this function rather than by a library's shuffle
/// that may change between versions.
pub(crate) fn seeded_shuffle<T>(rng: &mut Xoshiro256PlusPlus, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}
