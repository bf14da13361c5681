//! A ring whose members all sit in one arc of the circle (a layer's) spreads its fingers
//! over that arc.
//!
//! Forty peers of the upper half of a 16-bit circle, clustered as location-aware IDs are,
//! form a ring by joining one after another on the deterministic network and run their
//! maintenance. On the whole circle every finger that starts past the arc's end belongs to
//! the arc's first member, so nearly every member keeps a link to that one peer; spread over
//! the arc, no peer is needed by more than a fraction of the ring, every member ends with
//! exactly its true fingers on the arc, and lookups still find every owner.
#![allow(clippy::unwrap_used)]

use overlay::{ChordConfig, ChordNode, Contact, NodeId, RingArc, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use testkit::{Network, assert_lookups_find_owners, demo_chord, owner};

const ARC: RingArc = RingArc {
    start: NodeId(32_768),
    len: 32_768,
};

/// Forty IDs in the arc, in four clusters (cities) a quarter of the arc apart.
fn ids() -> Vec<NodeId> {
    let mut v: Vec<NodeId> = (0..40u128)
        .map(|i| NodeId(32_768 + (i / 10) * 8_192 + (i % 10) * 97 + (i * i) % 13))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn config(arc: Option<RingArc>) -> ChordConfig {
    let mut c = demo_chord();
    c.arc = arc;
    c
}

/// Peers `ids` on `cfg`, not yet in a ring, on a network seeded with `seed`; the first
/// has created the ring.
fn created(cfg: ChordConfig, ids: &[NodeId], seed: u64) -> Network<ChordNode> {
    let cfg = Arc::new(cfg);
    let nodes = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ChordNode::new(cfg.clone(), Contact::id_only(*id), [i as u8 + 1; 32]));
    let mut net = Network::new(nodes, Time::ZERO, seed);
    net.act(ids[0], |n, now| n.create(now));
    net
}

/// The ring formed by joins (each through the member that joined before it), after
/// `settle` of maintenance.
fn formed(arc: Option<RingArc>, settle: Duration) -> Network<ChordNode> {
    let ids = ids();
    let mut net = created(config(arc), &ids, 11);
    for pair in ids.windows(2) {
        let via = Contact::id_only(pair[0]);
        net.act(pair[1], |n, now| n.join(now, via));
        net.run_for(Duration::from_millis(500));
    }
    net.run_for(settle);
    net
}

/// How many other members keep a link to each member (as predecessor, successor, finger
/// or bootstrap).
fn kept_by(net: &Network<ChordNode>) -> BTreeMap<NodeId, usize> {
    let ids: Vec<NodeId> = net.peers().map(|(id, _)| id).collect();
    ids.iter()
        .map(|target| {
            let n = net
                .peers()
                .filter(|(id, p)| id != target && p.keeps_link(*target))
                .count();
            (*target, n)
        })
        .collect()
}

#[test]
fn a_layer_rings_fingers_spread_over_its_arc_not_onto_its_first_member() {
    let ids = ids();
    let settle = Duration::from_secs(60);
    let whole = kept_by(&formed(None, settle));
    let mut spread_net = formed(Some(ARC), settle);
    let spread = kept_by(&spread_net);
    let (w_max, s_max) = (
        whole.values().copied().max().unwrap(),
        spread.values().copied().max().unwrap(),
    );
    eprintln!(
        "most links to one member: {w_max} of {} on the whole circle (member {}), {s_max} spread over the arc",
        ids.len() - 1,
        whole.iter().max_by_key(|(_, n)| **n).unwrap().0
    );
    // The whole circle: the arc's first member is everyone's wrap-around finger.
    assert!(whole[&ids[0]] >= ids.len() - 3, "{whole:?}");
    // Over the arc the first member is one finger among others, and nobody is needed by
    // more than half the ring (the members right after the gaps between clusters are
    // fingers of many, as on any ring with uneven IDs).
    let first_of_cluster = |c: usize| spread[&ids[c * 10]];
    assert!(
        first_of_cluster(0) <= (1..4).map(first_of_cluster).max().unwrap() + 2,
        "{spread:?}"
    );
    assert!(s_max * 2 <= ids.len(), "{spread:?}");

    // Every member holds exactly its true fingers on the arc (and its successors).
    let span = config(Some(ARC)).span();
    assert_eq!(span.bits(), 15);
    for id in &ids {
        let p = spread_net.peer(*id);
        let held: Vec<NodeId> = p.fingers().map(|c| c.id).collect();
        for k in 0..span.bits() {
            let want = owner(&ids, span.finger_start(*id, k));
            if want != *id && !p.successors().any(|s| s.id == want) {
                assert!(
                    held.contains(&want),
                    "{id:?} lacks finger {k} = {want:?}: {held:?}"
                );
            }
        }
    }

    // Lookups from every member for keys across the arc find the true owners.
    let keys: Vec<NodeId> = (0..8u128).map(|k| NodeId(32_768 + k * 4_096 + 5)).collect();
    assert_lookups_find_owners(&mut spread_net, &ids, &keys);
}

/// Peers that all join at once (a whole site powering up) through members that are
/// themselves still joining end up on one whole ring with their true fingers.
#[test]
fn a_ring_of_peers_joining_all_at_once_converges() {
    let mut cfg = demo_chord();
    cfg.arc = Some(ARC);
    cfg.stabilize_max = Some(Duration::from_secs(16));
    cfg.fix_fingers_max = Some(Duration::from_secs(16));
    cfg.ring_check_max = Some(Duration::from_secs(64));
    let ids: Vec<NodeId> = (0..120u128)
        .map(|i| NodeId(32_768 + (i * 7_919 + i * i * 31) % 32_768))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut net = created(cfg, &ids, 5);
    // In waves of sixteen 300 ms apart, each through any peer asked to join before it,
    // most of them still joining themselves.
    for (k, id) in ids.iter().enumerate().skip(1) {
        let via = Contact::id_only(ids[(k * 13) % k]);
        net.act(*id, |n, now| n.join(now, via));
        if k % 16 == 0 {
            net.run_for(Duration::from_millis(300));
        }
    }
    net.run_for(Duration::from_secs(120));
    let n = ids.len();
    let wrong: Vec<NodeId> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            let p = net.peer(**id);
            p.successor().map(|s| s.id) != Some(ids[(i + 1) % n])
                || p.predecessor().map(|s| s.id) != Some(ids[(i + n - 1) % n])
        })
        .map(|(_, id)| *id)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {n} peers off the ring: {wrong:?}",
        wrong.len()
    );
}
