//! Links that close under requests must not get live peers declared failed.
//!
//! While hundreds of peers join, a TLS peer at its share of links closes the least recently
//! used link it opened (say, to answer a lookup) while the other end is still sending on
//! it, and the closing end stops reading at once: a request on that link, or its answer,
//! is lost with it. Before, a single such loss was held against a live peer at its RPC
//! timeout, which dropped it from its neighbours' successor and predecessor tables; the ring
//! took it back one peer at a time, seconds later. Here thirty-two peers form a ring by
//! joining one after another on the deterministic network (5 ms links) while, every
//! millisecond, links that carry a request, an answer or an acknowledgement close at random
//! (both ends are told, as the runtime tells them). The ring must form with nobody declared
//! failed. A crashed peer, whose links close and whose address then refuses new ones, must
//! still be failed within a fraction of a second.
#![allow(clippy::unwrap_used)]

use overlay::{ChordNode, Contact, Event, NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use testkit::{Link, Network, demo_chord, ring_whole, spread_ids};

const PEERS: u128 = 32;

/// Does `kind` await an answer, or answer or acknowledge something?
fn answered_or_answering(kind: &str) -> bool {
    matches!(
        kind,
        "route" | "route-ack" | "get-neighbours" | "neighbours" | "ping" | "pong"
    )
}

/// For `d` of virtual time in 1 ms steps, close each link that carries a frame of a kind
/// [`answered_or_answering`] with probability `p` per step; how many frames were lost.
fn run_closing(
    net: &mut Network<ChordNode>,
    rng: &mut Xoshiro256PlusPlus,
    d: Duration,
    p: f64,
) -> usize {
    let mut lost = 0;
    let end = net.now() + d;
    while net.now() < end {
        net.run_for(Duration::from_millis(1));
        let pairs: Vec<(NodeId, NodeId)> = net
            .in_flight()
            .filter(|f| answered_or_answering(f.kind()))
            .map(|f| (f.from.id, f.to))
            .collect();
        for (a, b) in pairs {
            if rng.random_bool(p) {
                lost += net.close_link(a, b);
            }
        }
    }
    lost
}

fn failures(net: &Network<ChordNode>) -> Vec<(NodeId, NodeId)> {
    net.events()
        .iter()
        .filter_map(|(who, e)| match e {
            Event::PeerFailed { peer } => Some((*who, *peer)),
            _ => None,
        })
        .collect()
}

/// The ring of [`ids`] formed by joins, one every 200 ms through a random member, while
/// links close under requests; the network and the frames lost to closing links.
fn formed_while_links_close(seed: u64) -> (Network<ChordNode>, usize) {
    let ids = spread_ids(PEERS);
    let cfg = Arc::new(demo_chord());
    let nodes = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ChordNode::new(cfg.clone(), Contact::id_only(*id), [i as u8 + 1; 32]));
    let mut net = Network::new(nodes, Time::ZERO, seed);
    net.set_default_link(Link {
        latency: Duration::from_millis(5),
        loss: 0.0,
    });
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    net.act(ids[0], |n, now| n.create(now));
    let mut lost = 0;
    for (k, id) in ids.iter().enumerate().skip(1) {
        let via = Contact::id_only(ids[rng.random_range(0..k)]);
        net.act(*id, |n, now| n.join(now, via));
        lost += run_closing(&mut net, &mut rng, Duration::from_millis(200), 0.002);
    }
    lost += run_closing(&mut net, &mut rng, Duration::from_secs(5), 0.002);
    (net, lost)
}

#[test]
fn a_ring_forms_with_nobody_failed_while_links_close_under_requests() {
    let ids = spread_ids(PEERS);
    let (mut net, lost) = formed_while_links_close(3);
    eprintln!("{lost} frames lost to closing links");
    assert!(
        lost >= 100,
        "the run closed too few links to mean much: {lost}"
    );
    assert_eq!(failures(&net), vec![], "live peers were declared failed");
    net.run_for(Duration::from_secs(5));
    assert!(ring_whole(&net, &ids), "the ring did not form");
    assert_eq!(failures(&net), vec![]);
}

#[test]
fn a_crashed_peer_is_still_failed_at_once_when_its_address_refuses_new_links() {
    let ids = spread_ids(PEERS);
    let (mut net, _) = formed_while_links_close(4);
    net.run_for(Duration::from_secs(5));
    assert!(ring_whole(&net, &ids));
    let dead = ids[ids.len() / 2];
    let live: Vec<NodeId> = ids.iter().copied().filter(|i| *i != dead).collect();
    net.remove(dead);
    // Its links close; what its neighbours send it again goes to an address that refuses
    // the connection, which the runtime reports 1 ms later.
    let t0 = net.now();
    let linked: Vec<NodeId> = live
        .iter()
        .copied()
        .filter(|p| net.peer(*p).keeps_link(dead))
        .collect();
    for p in &linked {
        net.close_link(*p, dead);
    }
    net.run_for(Duration::from_millis(1));
    for p in &linked {
        net.act(*p, |n, now| n.handle_link_down(now, dead, true));
    }
    let failed_by: Vec<NodeId> = failures(&net)
        .into_iter()
        .filter(|(_, peer)| *peer == dead)
        .map(|(who, _)| who)
        .collect();
    let (pred, succ) = {
        let i = ids.iter().position(|i| *i == dead).unwrap();
        (ids[i - 1], ids[i + 1])
    };
    assert!(
        failed_by.contains(&pred) && failed_by.contains(&succ),
        "1 ms after its links closed, its neighbours have not failed it: {failed_by:?}"
    );
    let mut repaired = None;
    for _ in 0..100 {
        net.run_for(Duration::from_millis(100));
        if ring_whole(&net, &live) {
            repaired = Some(net.now().saturating_since(t0));
            break;
        }
    }
    let repaired = repaired.unwrap_or_else(|| panic!("the ring did not close around {dead:?}"));
    eprintln!("the ring closed around the crashed peer in {repaired:?}");
    assert!(repaired <= Duration::from_secs(2), "{repaired:?}");
}
