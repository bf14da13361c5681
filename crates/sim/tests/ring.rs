//! Ring-level properties of Chord driven through the simulator's virtual clock.
#![allow(clippy::unwrap_used)]

use overlay::{IdSpace, NodeId};
use proptest::prelude::*;
use sim::{Churn, Init, LatencyModel, LookupRun, SessionModel, World, WorldConfig, run_lookups};
use std::time::Duration;

fn world(bits: u32, seed: u64) -> World {
    World::new(world_config(bits, seed))
}

fn world_config(bits: u32, seed: u64) -> WorldConfig {
    let mut cfg = WorldConfig::new(IdSpace::new(bits).unwrap(), seed);
    cfg.latency = LatencyModel::Uniform {
        min: Duration::from_millis(5),
        max: Duration::from_millis(40),
    };
    cfg.chord.stabilize_every = Duration::from_millis(500);
    cfg.chord.fix_fingers_every = Duration::from_millis(250);
    cfg.chord.check_predecessor_every = Duration::from_secs(1);
    cfg.chord.ring_check_every = Duration::from_secs(5);
    cfg
}

/// The same world, with stabilize and finger refresh backing off to 4 s while quiet.
fn backoff_world(bits: u32, seed: u64) -> World {
    let mut cfg = world_config(bits, seed);
    cfg.chord.stabilize_max = Some(Duration::from_secs(4));
    cfg.chord.fix_fingers_max = Some(Duration::from_secs(4));
    World::new(cfg)
}

/// Add `n` peers by real joins, one every 100 ms.
fn grow(w: &mut World, n: usize) {
    for _ in 0..n {
        let id = w.fresh_id();
        let g = w.random_geo();
        w.add_peer(id, g);
        let t = w.now() + Duration::from_millis(100);
        w.run_until(t, &mut |_| {});
    }
}

fn settle(w: &mut World, secs: u64) {
    let until = w.now() + Duration::from_secs(secs);
    w.run_until(until, &mut |_| {});
}

/// Every lookup from every live peer for a handful of keys ends at the true owner.
fn lookups_reach_owners(w: &mut World, keys: &[NodeId]) -> Result<(), String> {
    let origins: Vec<NodeId> = w.live_ids().collect();
    let mut handles = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let origin = origins[i % origins.len()];
        let h = w.watch(origin, *key).ok_or("origin vanished")?;
        handles.push((origin, h, *key));
    }
    settle(w, 20);
    for (origin, h, key) in handles {
        let got = w
            .watched(origin, h)
            .ok_or_else(|| format!("lookup {key:?} from {origin:?} unanswered"))?;
        let want = w.owner_of(key);
        if Some(got.owner) != want {
            return Err(format!(
                "lookup {key:?} from {origin:?} ended at {:?}, owner is {want:?}",
                got.owner
            ));
        }
        if got.path.first() != Some(&origin) || got.path.last() != Some(&got.owner) {
            return Err(format!("path {:?} does not run origin → owner", got.path));
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Join,
    Leave(prop::sample::Index),
    Fail(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Join),
        1 => any::<prop::sample::Index>().prop_map(Op::Leave),
        1 => any::<prop::sample::Index>().prop_map(Op::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any sequence of joins, graceful leaves and crashes followed by quiet time, the
    /// ring is consistent and lookups end at the owner.
    #[test]
    fn ring_heals_after_any_membership_changes(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..40),
        backoff in any::<bool>(),
    ) {
        let mut w = if backoff { backoff_world(16, seed) } else { world(16, seed) };
        for _ in 0..6 {
            let id = w.fresh_id();
            let g = w.random_geo();
            w.add_peer(id, g);
            settle(&mut w, 1);
        }
        for op in ops {
            let live: Vec<NodeId> = w.live_ids().collect();
            match op {
                Op::Join => {
                    let id = w.fresh_id();
                    let g = w.random_geo();
                    w.add_peer(id, g);
                }
                // Keep at least two peers so there is a ring to check.
                Op::Leave(i) if live.len() > 2 => w.remove_peer(live[i.index(live.len())], true),
                Op::Fail(i) if live.len() > 2 => w.remove_peer(live[i.index(live.len())], false),
                _ => {}
            }
            let step = w.now() + Duration::from_millis(300);
            w.run_until(step, &mut |_| {});
        }
        settle(&mut w, 60);
        prop_assert_eq!(w.ring_is_consistent(), Ok(()));
        let space = w.space();
        let keys: Vec<NodeId> = (0..16u128).map(|k| space.wrap(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u128::from(seed))).collect();
        prop_assert_eq!(lookups_reach_owners(&mut w, &keys), Ok(()));
    }
}

#[test]
fn grown_ring_converges_and_routes() {
    let mut w = world(32, 7);
    grow(&mut w, 64);
    settle(&mut w, 60);
    assert_eq!(w.live_count(), 64);
    assert_eq!(w.ring_is_consistent(), Ok(()));
    let keys: Vec<NodeId> = (0..64u128)
        .map(|k| NodeId(k * 67_108_864 + 12_345))
        .collect();
    assert_eq!(lookups_reach_owners(&mut w, &keys), Ok(()));
}

#[test]
fn lookup_survives_r_minus_one_consecutive_failures() {
    let mut w = world(20, 3);
    let cfg_r = 8;
    let ids: Vec<NodeId> = (0..100u128).map(|i| NodeId(i * 10_000 + 7)).collect();
    let geos = vec![sim::GeoPoint::default(); ids.len()];
    w.init_converged(&ids, &geos);
    settle(&mut w, 2);
    // Crash r − 1 consecutive peers after ids[10]; a lookup for a key they owned must end at
    // the next live peer.
    for id in &ids[11..11 + cfg_r - 1] {
        w.remove_peer(*id, false);
    }
    let h = w.watch(ids[10], NodeId(ids[12].0)).unwrap();
    settle(&mut w, 30);
    let got = w.watched(ids[10], h).expect("lookup answered");
    assert_eq!(got.owner, ids[11 + cfg_r - 1]);
    settle(&mut w, 30);
    assert_eq!(w.ring_is_consistent(), Ok(()));
}

#[test]
fn graceful_leave_hands_records_to_successor() {
    let mut w = world(16, 11);
    let ids: Vec<NodeId> = (1..=8u128).map(|i| NodeId(i * 1000)).collect();
    w.init_converged(&ids, &[sim::GeoPoint::default(); 8]);
    settle(&mut w, 1);
    // Peer 3000 owns key 2500.
    // (Records are placed by whoever owns the key; here we place it directly.)
    let _ = w.node(NodeId(3000)).unwrap();
    w.put_record(NodeId(3000), NodeId(2500), b"alice".to_vec());
    w.remove_peer(NodeId(3000), true);
    settle(&mut w, 5);
    let succ = w.node(NodeId(4000)).unwrap();
    assert_eq!(
        succ.records().get(&NodeId(2500)).map(|v| v.as_slice()),
        Some(&b"alice"[..])
    );
    assert_eq!(w.ring_is_consistent(), Ok(()));
}

#[test]
fn stable_ring_lookups_all_succeed_with_log_hops() {
    for (n, lookups) in [(512usize, 5_000u64), (2048, 5_000)] {
        let mut cfg = WorldConfig::new(IdSpace::new(128).unwrap(), 42);
        cfg.latency = LatencyModel::Constant(Duration::from_millis(20));
        let run = LookupRun::new(n, lookups, cfg);
        let r = run_lookups(&run, &mut |_| {}).unwrap();
        assert_eq!(r.success_rate, 1.0, "{r:?}");
        // The engine's rate leaves out placing the peers (no events), and only that.
        assert!(r.placing_s > 0.0 && r.placing_s < r.wall_s, "{r:?}");
        let rate = r.events as f64 / (r.wall_s - r.placing_s);
        assert!((r.events_per_s - rate).abs() <= 1e-6 * rate, "{r:?}");
        let want = 0.5 * (n as f64).log2();
        assert!(
            (r.hops_mean - want).abs() <= 0.1 * want,
            "N={n}: hops {} vs {want}",
            r.hops_mean
        );
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut cfg = WorldConfig::new(IdSpace::new(64).unwrap(), seed);
        cfg.churn = Some(exponential_churn(60));
        let mut r = LookupRun::new(200, 2_000, cfg);
        r.init = Init::Joins {
            interval: Duration::from_millis(20),
        };
        let rep = run_lookups(&r, &mut |_| {}).unwrap();
        // A ring grown by joins has no placing phase: its joins are events.
        assert_eq!(rep.placing_s, 0.0);
        (
            rep.succeeded,
            rep.timed_out,
            rep.wrong_owner,
            rep.events,
            rep.messages,
            rep.hops_mean.to_bits(),
        )
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

/// Exponential sessions of this median, half of them ending gracefully.
fn exponential_churn(median_secs: u64) -> Churn {
    Churn {
        session: SessionModel::Exponential {
            median: Duration::from_secs(median_secs),
        },
        graceful: 0.5,
    }
}

/// A ring split over threads runs the same lookups as one thread: the same keys from the
/// same origins, over the same converged fingers, so the same hops (only the random parts
/// of the delays differ, drawn from each shard's own stream); and a split run is the same
/// twice. A ring that is not fixed cannot be split.
#[test]
fn a_ring_split_over_threads_routes_every_lookup_as_one_thread_does() {
    let run = |threads| {
        let cfg = WorldConfig::new(IdSpace::new(128).unwrap(), 3);
        let mut run = LookupRun::new(3_000, 20_000, cfg);
        run.threads = threads;
        run.warmup = Duration::from_secs(2);
        let r = run_lookups(&run, &mut |_| {}).unwrap();
        assert_eq!(r.threads, threads);
        assert_eq!(r.peers, 3_000);
        assert_eq!((r.lookups, r.succeeded), (20_000, 20_000), "{r:?}");
        r
    };
    let one = run(1);
    let two = run(2);
    // Sums of whole hop counts are exact in any order.
    assert_eq!(one.hops_mean, two.hops_mean);
    assert_eq!(one.hops_p99, two.hops_p99);
    assert_eq!(run(3).hops_mean, one.hops_mean);
    assert_ne!(one.latency_ms_p50, two.latency_ms_p50);
    let again = run(2);
    assert_eq!(
        (again.events, again.messages, again.latency_ms_p50.to_bits()),
        (two.events, two.messages, two.latency_ms_p50.to_bits())
    );

    let mut cfg = WorldConfig::new(IdSpace::new(64).unwrap(), 3);
    cfg.churn = Some(exponential_churn(60));
    let mut churning = LookupRun::new(100, 100, cfg);
    churning.threads = 2;
    let err = run_lookups(&churning, &mut |_| {}).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("no churn"), "{err}");
}

#[test]
fn churn_with_successor_lists_keeps_lookups_succeeding() {
    let mut cfg = WorldConfig::new(IdSpace::new(128).unwrap(), 9);
    cfg.churn = Some(exponential_churn(600));
    let mut run = LookupRun::new(1000, 20_000, cfg);
    run.lookup_rate_per_peer = 0.1; // 200 s of churn
    let r = run_lookups(&run, &mut |_| {}).unwrap();
    assert!(r.departures > 100, "{r:?}");
    assert!(r.success_rate >= 0.99, "{r:?}");
}

/// Messages the world carries per second over `secs` of quiet.
fn quiet_rate(w: &mut World, secs: u64) -> f64 {
    let m0 = w.messages;
    settle(w, secs);
    (w.messages - m0) as f64 / secs as f64
}

#[test]
fn quiet_ring_backs_off_its_maintenance_and_heals_at_full_pace() {
    let grown = |mut w: World| {
        grow(&mut w, 64);
        settle(&mut w, 60);
        assert_eq!(w.ring_is_consistent(), Ok(()));
        w
    };
    let mut plain = grown(world(32, 21));
    let mut adaptive = grown(backoff_world(32, 21));
    let (plain_rate, adaptive_rate) = (quiet_rate(&mut plain, 30), quiet_rate(&mut adaptive, 30));
    // Base 500 ms / 250 ms, quiet maximum 4 s: at least four times fewer messages.
    assert!(
        adaptive_rate * 4.0 < plain_rate,
        "quiet ring: {adaptive_rate:.0} msg/s with back-off vs {plain_rate:.0} without"
    );
    // Crash three peers: their neighbours notice within one backed-off interval plus the RPC
    // timeout and the ring is whole again well within 15 s.
    let live: Vec<NodeId> = adaptive.live_ids().collect();
    for i in [5, 20, 40] {
        adaptive.remove_peer(live[i], false);
    }
    settle(&mut adaptive, 15);
    assert_eq!(adaptive.ring_is_consistent(), Ok(()));
    let space = adaptive.space();
    let keys: Vec<NodeId> = (0..32u128)
        .map(|k| space.wrap(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    assert_eq!(lookups_reach_owners(&mut adaptive, &keys), Ok(()));
}
