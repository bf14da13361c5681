//! Peers that join by the hundred must find their place in the ring within round trips, not
//! stabilize intervals.
//!
//! While a ring grows fast, a join lookup can cross peers that have not yet learnt of the
//! latest newcomers and place the new peer far beyond its true successor. Stabilization
//! walks it back one peer at a time (each answer names the successor's predecessor, one
//! step closer); at one step per stabilize interval, a newcomer placed fifty peers too far
//! took over ten seconds, and the lookups that crossed it misplaced others. Here a newcomer
//! starts with a successor ten peers beyond its true one on a converged ring, and forty
//! peers join a ring in waves of eight at once; both must settle within a small multiple of
//! the stabilize interval.
#![allow(clippy::unwrap_used)]

use overlay::{ChordNode, Contact, Event, NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use testkit::{Network, converged_ring, demo_chord, ring_whole, spread_ids};

/// Run `net` in 10 ms steps until the ring of `ids` is whole, at most `limit`; how long it
/// took.
fn until_whole(net: &mut Network<ChordNode>, ids: &[NodeId], limit: Duration) -> Option<Duration> {
    let t0 = net.now();
    while net.now().saturating_since(t0) <= limit {
        if ring_whole(net, ids) {
            return Some(net.now().saturating_since(t0));
        }
        net.run_for(Duration::from_millis(10));
    }
    None
}

#[test]
fn a_newcomer_placed_ten_peers_too_far_walks_back_within_round_trips() {
    let cfg = Arc::new(demo_chord());
    let ring = spread_ids(48);
    // The newcomer sits between ring[20] and ring[21]; its join went wrong and named
    // ring[31] as its successor.
    let me = NodeId((ring[20].0 + ring[21].0) / 2);
    let mut nodes = converged_ring(cfg.clone(), &ring, |i| [i as u8 + 1; 32]);
    let far = Contact::id_only(ring[31]);
    nodes.push(ChordNode::converged(
        cfg.clone(),
        Contact::id_only(me),
        [99; 32],
        Time::ZERO,
        None,
        vec![far],
        [far],
    ));
    let mut net = Network::new(nodes, Time::ZERO, 5);
    let mut all = ring.clone();
    all.push(me);
    all.sort();
    let took = until_whole(&mut net, &all, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the newcomer did not find its place in 10 s"));
    eprintln!("the newcomer walked back ten peers in {took:?}");
    // One stabilize interval (250 ms) to start, then a round trip (2 ms) per peer, and
    // the notifications that make its new neighbours take it in.
    assert!(took <= Duration::from_millis(800), "{took:?}");
}

#[test]
fn peers_joining_eight_at_a_time_form_the_ring_within_seconds() {
    let cfg = Arc::new(demo_chord());
    let all = spread_ids(48);
    let nodes = all
        .iter()
        .enumerate()
        .map(|(i, id)| ChordNode::new(cfg.clone(), Contact::id_only(*id), [i as u8 + 1; 32]));
    let mut net = Network::new(nodes, Time::ZERO, 9);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let mut order: Vec<NodeId> = all[1..].to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    net.act(all[0], |n, now| n.create(now));
    let mut inside = vec![all[0]];
    let t0 = net.now();
    for wave in order.chunks(8) {
        for id in wave {
            let via = Contact::id_only(inside[rng.random_range(0..inside.len())]);
            net.act(*id, |n, now| n.join(now, via));
        }
        // The wave is in once each of its peers has a successor.
        for _ in 0..500 {
            net.run_for(Duration::from_millis(2));
            if wave.iter().all(|id| net.peer(*id).successor().is_some()) {
                break;
            }
        }
        inside.extend_from_slice(wave);
    }
    let joined = net.now().saturating_since(t0);
    let settled = until_whole(&mut net, &all, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the ring did not form within 30 s of the last join"));
    eprintln!("joined in {joined:?}, the ring whole {settled:?} later");
    assert!(
        !net.events()
            .iter()
            .any(|(_, e)| matches!(e, Event::PeerFailed { .. } | Event::JoinFailed { .. })),
        "nobody failed"
    );
    assert!(settled <= Duration::from_secs(2), "{settled:?}");
}
