//! Converged rings to start a test from: plain Chord, and the twelve-peer secure overlay
//! with real Ed25519 keys that the secure call-flow tests share.

use crate::network::Network;
use overlay::secure::{
    Directory, Ed25519Registry, Ed25519Signer, FirstHops, LayerArcs, OverlayContext, Role, Routing,
    SecureConfig, SecureNode,
};
use overlay::{ChordConfig, ChordNode, Contact, Event, IdSpace, NodeId, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Chord with the demo's base timers on a 16-bit circle (stabilize every 250 ms, a finger
/// every 60 ms, three successors, answers from the successor list), without back-off: the
/// ring tests on virtual time start from it and add what they study.
pub fn demo_chord() -> ChordConfig {
    let ms = Duration::from_millis;
    let mut c = timed_chord(16, [ms(250), ms(60), ms(1000), ms(5000), ms(500), ms(2000)]);
    c.successors = 3;
    c.successor_shortcut = true;
    c
}

/// Chord timers fast enough for a test on real sockets over loopback (stabilize every
/// 100 ms, a 300 ms RPC timeout, a 1 s lookup timeout) on a `bits`-bit circle; a test that
/// needs slower ones changes them.
pub fn fast_chord(bits: u32) -> ChordConfig {
    let ms = Duration::from_millis;
    timed_chord(
        bits,
        [ms(100), ms(50), ms(200), ms(1000), ms(300), ms(1000)],
    )
}

/// Chord on a `bits`-bit circle with its timers: stabilize, fix-fingers, check-predecessor,
/// ring check, RPC timeout, lookup timeout.
fn timed_chord(bits: u32, timers: [Duration; 6]) -> ChordConfig {
    let space = match IdSpace::new(bits) {
        Ok(s) => s,
        Err(e) => panic!("a {bits}-bit space: {e}"),
    };
    let [
        stabilize,
        fix_fingers,
        check_predecessor,
        ring_check,
        rpc,
        lookup,
    ] = timers;
    let mut c = ChordConfig::new(space);
    c.stabilize_every = stabilize;
    c.fix_fingers_every = fix_fingers;
    c.check_predecessor_every = check_predecessor;
    c.ring_check_every = ring_check;
    c.rpc_timeout = rpc;
    c.lookup_timeout = lookup;
    c
}

/// Up to `n` distinct IDs spread unevenly over the 16-bit circle of [`demo_chord`] (so
/// fingers differ from peer to peer), sorted.
pub fn spread_ids(n: u128) -> Vec<NodeId> {
    (0..n)
        .map(|i| NodeId((i * 2039 + i * i * 7) % 65_536))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Is the ring of `ids` (sorted) whole: every peer's successor and predecessor the true
/// ones?
pub fn ring_whole(net: &Network<ChordNode>, ids: &[NodeId]) -> bool {
    let n = ids.len();
    ids.iter().enumerate().all(|(i, id)| {
        let p = net.peer(*id);
        p.successor().map(|s| s.id) == Some(ids[(i + 1) % n])
            && p.predecessor().map(|s| s.id) == Some(ids[(i + n - 1) % n])
    })
}

/// The owner of `key` on the ring of `ids` (sorted): the first peer at or after it,
/// wrapping to the first.
/// Panics on an empty ring, which owns nothing.
pub fn owner(ids: &[NodeId], key: NodeId) -> NodeId {
    match key.owner_in(ids) {
        Some(o) => o,
        None => panic!("an empty ring owns no key ({key:?})"),
    }
}

/// Every peer of the ring `ids` (sorted) looks up every key of `keys`; within 10 s of
/// virtual time each lookup must have answered with the key's true [`owner`] among `ids`.
pub fn assert_lookups_find_owners(net: &mut Network<ChordNode>, ids: &[NodeId], keys: &[NodeId]) {
    let before = net.events().len();
    for p in ids {
        for k in keys {
            net.act(*p, |n, now| n.lookup(now, *k));
        }
    }
    net.run_for(Duration::from_secs(10));
    let mut done = 0;
    for (who, e) in &net.events()[before..] {
        match e {
            Event::LookupDone { key, owner: o, .. } => {
                assert_eq!(o.id, owner(ids, *key), "{who:?} looked up {key:?}");
                done += 1;
            }
            Event::LookupFailed { key, .. } => panic!("{who:?}'s lookup of {key:?} failed"),
            _ => {}
        }
    }
    assert_eq!(done, ids.len() * keys.len());
}

/// Chord peers `ids` (sorted, distinct) with the state a stable ring gives them: predecessor,
/// `cfg.successors` successors and one finger per bit. `seed(i)` seeds the i-th peer.
pub fn converged_ring(
    cfg: Arc<ChordConfig>,
    ids: &[NodeId],
    seed: impl Fn(usize) -> [u8; 32],
) -> Vec<ChordNode> {
    let n = ids.len();
    let span = cfg.span();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let pred = Some(Contact::id_only(ids[(i + n - 1) % n]));
            let succs: Vec<Contact> = (1..=cfg.successors)
                .map(|k| Contact::id_only(ids[(i + k) % n]))
                .collect();
            let fingers: Vec<Contact> = (0..span.bits())
                .map(|k| Contact::id_only(owner(ids, span.finger_start(*id, k))))
                .collect();
            ChordNode::converged(
                cfg.clone(),
                Contact::id_only(*id),
                seed(i),
                Time::ZERO,
                pred,
                succs,
                fingers,
            )
        })
        .collect()
}

/// The secure overlay the call-flow tests run on: twelve peers 100, 150, …, 650 in a 10-bit
/// space, all in layer 2, peer 150 its CSP and peer 100 its CSPG, three successors, fanout 3
/// with diverse first hops, and a fresh Ed25519 key per peer.
pub struct SecureRing {
    /// The ID space.
    pub space: IdSpace,
    /// The peers, sorted.
    pub ids: Vec<NodeId>,
    /// The CSP.
    pub csp: NodeId,
    /// More CSPs of the layer ([`SecureRing::with_csp`]), none by default.
    pub more_csps: Vec<NodeId>,
    /// The CSPG.
    pub cspg: NodeId,
    /// Every peer's public key.
    pub registry: Arc<Ed25519Registry>,
    /// Every peer's private key (PKCS#8), so a test can sign as that peer.
    pkcs8: BTreeMap<NodeId, Vec<u8>>,
}

/// Unix milliseconds at the driver's epoch, for PingRequest timestamps.
pub const UNIX_EPOCH_MS: u64 = 1_700_000_000_000;

impl SecureRing {
    /// The twelve peers with fresh keys.
    pub fn twelve() -> SecureRing {
        let space = match IdSpace::new(10) {
            Ok(s) => s,
            Err(e) => panic!("a 10-bit space: {e}"),
        };
        let ids: Vec<NodeId> = (0..12).map(|i| NodeId(100 + 50 * i)).collect();
        let mut registry = Ed25519Registry::default();
        let mut pkcs8 = BTreeMap::new();
        for id in &ids {
            let Ok((signer, doc)) = Ed25519Signer::generate() else {
                panic!("no Ed25519 key from the system RNG");
            };
            registry.insert(*id, signer.public_key());
            pkcs8.insert(*id, doc);
        }
        SecureRing {
            space,
            ids,
            csp: NodeId(150),
            more_csps: Vec::new(),
            cspg: NodeId(100),
            registry: Arc::new(registry),
            pkcs8,
        }
    }

    /// The same ring with peer `id` a CSP too: a layer with more than one CSP.
    pub fn with_csp(mut self, id: NodeId) -> SecureRing {
        self.more_csps.push(id);
        self
    }

    /// Every CSP, sorted.
    fn csps(&self) -> Vec<NodeId> {
        let mut all = self.more_csps.clone();
        all.push(self.csp);
        all.sort();
        all.dedup();
        all
    }

    /// Peer `id`'s signing key.
    pub fn signer(&self, id: NodeId) -> Ed25519Signer {
        match self
            .pkcs8
            .get(&id)
            .map(|doc| Ed25519Signer::from_pkcs8(doc))
        {
            Some(Ok(s)) => s,
            _ => panic!("no key for {id:?}"),
        }
    }

    /// The context every peer shares: one layer holding everyone ([0, 1000) is layer 2).
    pub fn context(&self) -> OverlayContext {
        let arcs = match LayerArcs::new(self.space, [0, 1, 1000]) {
            Ok(a) => a,
            Err(e) => panic!("layer arcs: {e}"),
        };
        let mut dir = Directory::default();
        dir.csps[1] = self.csps();
        dir.cspgs[1] = vec![self.cspg];
        let cfg = SecureConfig {
            fanout: 3,
            first_hops: FirstHops::Diverse,
            ..SecureConfig::default()
        };
        OverlayContext {
            cfg: Arc::new(cfg),
            arcs,
            directory: Arc::new(dir),
            infrastructure: Arc::new(
                self.csps()
                    .into_iter()
                    .chain([self.cspg])
                    .map(Contact::id_only)
                    .collect(),
            ),
            verifier: self.registry.clone(),
        }
    }

    /// The converged peers. `unix_ms(id)` is peer `id`'s Unix clock at the driver's epoch
    /// (skew it to test timestamp windows); `seed(id)` seeds its RNG.
    pub fn nodes(
        &self,
        unix_ms: impl Fn(NodeId) -> u64,
        seed: impl Fn(NodeId) -> [u8; 32],
    ) -> Vec<SecureNode> {
        let ctx = self.context();
        let mut chord = ChordConfig::new(self.space);
        chord.successors = 3;
        chord.successor_shortcut = true;
        converged_ring(Arc::new(chord), &self.ids, |i| [i as u8; 32])
            .into_iter()
            .map(|c| {
                let id = c.id();
                let role = if self.csps().contains(&id) {
                    Role::Csp
                } else if id == self.cspg {
                    Role::Cspg
                } else {
                    Role::Peer
                };
                SecureNode::new(
                    c,
                    ctx.clone(),
                    role,
                    Routing::Secure,
                    Box::new(self.signer(id)),
                    unix_ms(id),
                    seed(id),
                )
            })
            .collect()
    }

    /// The peers on a network whose clock starts at 10 ms, every Unix clock right and every
    /// RNG seeded with `seed(id)`.
    pub fn network(&self, seed: impl Fn(NodeId) -> [u8; 32]) -> Network<SecureNode> {
        Network::new(
            self.nodes(|_| UNIX_EPOCH_MS, seed),
            Time::from_millis(10),
            1,
        )
    }
}

/// A seed of the form the demo and tests use: the Node-ID, then zeros.
pub fn sparse_seed(id: NodeId) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&id.0.to_le_bytes());
    seed
}
