//! A Chord ring at rest must be quiet, and still repair itself when a peer crashes.
//!
//! Thirty-two peers start from a converged ring on the deterministic network and run for
//! minutes of virtual time with nothing to do. With back-off configured (stabilize, finger
//! refresh and ring check doubling while nothing changes; fingers checked by asking the
//! finger; the predecessor taken as alive while its stabilize requests arrive) the
//! maintenance traffic per peer must fall well below that of classic fixed timers, and a
//! crashed peer must still be routed around and dropped from its neighbours' state, both
//! with only timeouts to go by (the simulator) and faster when the driver reports the crashed
//! peer's links going down (the TLS runtime).
#![allow(clippy::unwrap_used)]

use overlay::{ChordConfig, ChordNode, Event, IdSpace, NodeId, Time};
use std::sync::Arc;
use std::time::Duration;
use testkit::{
    Network, assert_lookups_find_owners, converged_ring, demo_chord, owner, ring_whole, spread_ids,
};

const PEERS: u128 = 32;

/// The demo's base timers, with or without back-off while quiet.
fn config(quiet: bool) -> ChordConfig {
    let mut c = demo_chord();
    if quiet {
        c.stabilize_max = Some(Duration::from_secs(16));
        c.fix_fingers_max = Some(Duration::from_secs(16));
        c.ring_check_max = Some(Duration::from_secs(64));
    }
    c
}

fn ring(quiet: bool) -> Network<ChordNode> {
    let ids = spread_ids(PEERS);
    let mut nodes = converged_ring(Arc::new(config(quiet)), &ids, |i| [i as u8 + 1; 32]);
    // Every peer joined through the first: its ring checks go there.
    let first = nodes[0].contact();
    for n in &mut nodes[1..] {
        n.add_bootstrap(first);
    }
    Network::new(nodes, Time::ZERO, 7)
}

/// Overlay messages delivered per peer per second between `from` and the network's now.
fn rate_since(net: &Network<ChordNode>, from: Time) -> f64 {
    let n = net.captured().iter().filter(|f| f.at >= from).count();
    let secs = net.now().saturating_since(from).as_secs_f64();
    n as f64 / secs / net.peers().count() as f64
}

#[test]
fn a_quiet_ring_sends_a_fraction_of_the_classic_maintenance_and_stays_whole() {
    let mut classic = ring(false);
    let mut quiet = ring(true);
    for net in [&mut classic, &mut quiet] {
        net.run_for(Duration::from_secs(120));
    }
    let from = classic.now();
    for net in [&mut classic, &mut quiet] {
        net.run_for(Duration::from_secs(120));
    }
    let (c, q) = (rate_since(&classic, from), rate_since(&quiet, from));
    eprintln!("at rest: {q:.3} messages per peer per second with back-off, {c:.3} without");
    assert!(
        q <= 1.0 && q * 8.0 <= c,
        "at rest: {q:.2} messages per peer per second with back-off, {c:.2} without"
    );
    let ids = spread_ids(PEERS);
    assert!(ring_whole(&quiet, &ids));
    // The quiet ring answers lookups as correctly as ever.
    let before = quiet.events().len();
    for p in &ids {
        quiet.act(*p, |n, now| n.lookup(now, NodeId(p.0 ^ 0x5555)));
    }
    quiet.run_for(Duration::from_secs(5));
    let ok = quiet.events()[before..]
        .iter()
        .filter(|(_, e)| {
            matches!(e, Event::LookupDone { key, owner: o, .. } if o.id == owner(&ids, *key))
        })
        .count();
    assert_eq!(ok, ids.len());
}

/// Run the network in steps of 100 ms until the ring of `ids` is whole, for at most `cap_s`
/// seconds: how long it took, from now.
fn seconds_until_whole(net: &mut Network<ChordNode>, ids: &[NodeId], cap_s: u64) -> Option<f64> {
    let t0 = net.now();
    for _ in 0..cap_s * 10 {
        net.run_for(Duration::from_millis(100));
        if ring_whole(net, ids) {
            return Some(net.now().saturating_since(t0).as_secs_f64());
        }
    }
    None
}

/// Crash peer `dead` after the ring has been quiet for two minutes; `tell`: the driver
/// reports its links going down to its neighbours (what the TLS runtime sees). Returns the
/// seconds until the ring of the survivors is whole again.
fn repair_after_crash(tell: bool) -> f64 {
    let mut net = ring(true);
    net.run_for(Duration::from_secs(120));
    let ids = spread_ids(PEERS);
    let dead = ids[ids.len() / 2];
    let live: Vec<NodeId> = ids.iter().copied().filter(|i| *i != dead).collect();
    net.remove(dead);
    if tell {
        for p in &live {
            if net.peer(*p).keeps_link(dead) {
                net.act(*p, |n, now| n.handle_link_down(now, dead, false));
            }
        }
    }
    let secs = seconds_until_whole(&mut net, &live, 60)
        .unwrap_or_else(|| panic!("the ring did not close around {dead:?}"));
    // A key the dead peer used to own, and one further on: live peers own them now.
    let keys = [NodeId(dead.0.saturating_sub(1)), NodeId(dead.0 ^ 0x8000)];
    assert_lookups_find_owners(&mut net, &live, &keys);
    // Nobody keeps the dead peer as a neighbour for long.
    net.run_for(Duration::from_secs(60));
    for p in &live {
        let n = net.peer(*p);
        assert!(
            n.successors().all(|s| s.id != dead) && n.predecessor().map(|c| c.id) != Some(dead),
            "{p:?} still lists the dead peer"
        );
    }
    secs
}

#[test]
fn a_quiet_ring_repairs_a_crash_by_timeouts_alone() {
    let secs = repair_after_crash(false);
    eprintln!("repaired by timeouts alone after {secs:.1} s");
    // The crashed peer's predecessor notices at its next stabilize (at most the 16 s cap,
    // jittered) plus the RPC timeout; its successor hears from the new predecessor.
    assert!(secs <= 25.0, "repaired after {secs:.1} s");
}

#[test]
fn a_quiet_ring_told_of_a_closed_link_repairs_within_seconds() {
    let secs = repair_after_crash(true);
    eprintln!("repaired after the closed link was reported in {secs:.1} s");
    assert!(secs <= 3.0, "repaired after {secs:.1} s");
}

#[test]
fn a_quiet_ring_takes_in_a_newcomer_and_its_fingers_follow() {
    let mut net = ring(true);
    net.run_for(Duration::from_secs(120));
    let ids = spread_ids(PEERS);
    let space = IdSpace::new(16).unwrap();
    // A newcomer exactly at the start of peer 3's finger 12: that finger must become it.
    let holder = ids[3];
    let newcomer = space.finger_start(holder, 12);
    assert!(!ids.contains(&newcomer));
    let now = net.now();
    let mut peers: Vec<ChordNode> = ids.iter().map(|id| net.remove(*id).unwrap()).collect();
    peers.push(ChordNode::new(
        Arc::new(config(true)),
        overlay::Contact::id_only(newcomer),
        [99; 32],
    ));
    let mut net = Network::new(peers, now, 8);
    let via = net.peer(ids[0]).contact();
    net.act(newcomer, |n, now| n.join(now, via));
    net.run_for(Duration::from_secs(30));
    let mut all = ids.clone();
    all.push(newcomer);
    all.sort();
    assert!(ring_whole(&net, &all), "the newcomer is not in the ring");
    // The holder's quiet finger checks find the newcomer in front of its old finger.
    net.run_for(Duration::from_secs(170));
    assert!(
        net.peer(holder).fingers().any(|f| f.id == newcomer),
        "{holder:?} did not take the newcomer as its finger 12: {:?}",
        net.peer(holder).fingers().map(|f| f.id).collect::<Vec<_>>()
    );
}

/// Cut the ring into the arc with the bootstrap peer (the first) and the arc without it for
/// three minutes; `local_last`: the last peer of the cut-off arc (the only one whose
/// successor wraps around to the arc's start while it is cut off) joined through the first
/// peer of its own arc instead, as a peer behind NAT joins through the relay beside it.
/// The ring must be whole within 15 s of the heal: the cut-off arc's ring checks go
/// unanswered, so they keep the base pace (5 s, jittered to at most 6.25 s) instead of
/// backing off to the 64 s cap, and the first of them to cross the healed cut tells the
/// peer that follows it on the other ring; stabilization merges the two rings.
fn heal_after_cut(local_last: bool) {
    let ids = spread_ids(PEERS);
    let half = ids.len() / 2;
    let mut nodes = converged_ring(Arc::new(config(true)), &ids, |i| [i as u8 + 1; 32]);
    let (first, local) = (nodes[0].contact(), nodes[half].contact());
    let last = nodes.len() - 1;
    for (i, n) in nodes.iter_mut().enumerate().skip(1) {
        n.add_bootstrap(if local_last && i == last {
            local
        } else {
            first
        });
    }
    let mut net = Network::new(nodes, Time::ZERO, 7);
    net.run_for(Duration::from_secs(120));
    let (with, without) = ids.split_at(half);
    net.partition(with.to_vec(), without.to_vec());
    // Long enough for each half to close on itself and then sit quiet at its longest
    // intervals, as a ring at rest does.
    net.run_for(Duration::from_secs(180));
    assert!(
        ring_whole(&net, with),
        "the half with the bootstrap peer did not close"
    );
    assert!(ring_whole(&net, without), "the cut-off half did not close");
    net.heal();
    let secs = seconds_until_whole(&mut net, &ids, 120)
        .unwrap_or_else(|| panic!("the ring was not whole 120 s after the cut healed"));
    eprintln!("whole again {secs:.1} s after the cut healed");
    assert!(
        secs <= 15.0,
        "whole again only {secs:.1} s after the cut healed"
    );
    // Peers whose first successors did not change stay backed off: the far ends of their
    // successor lists (lookups are answered from them) catch up at their next stabilize,
    // within the 16 s cap.
    net.run_for(Duration::from_secs(20));
    assert_lookups_find_owners(&mut net, &ids, &[NodeId(0x1234), NodeId(0xbeef)]);
}

#[test]
fn a_quiet_ring_cut_in_two_for_minutes_is_whole_again_soon_after_the_cut_heals() {
    heal_after_cut(false);
}

#[test]
fn a_cut_off_arc_whose_last_peer_joined_through_its_own_arc_merges_back() {
    heal_after_cut(true);
}
