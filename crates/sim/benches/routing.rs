//! Routing hot path: one Chord routing decision and one simulated lookup on a converged ring.

use criterion::{Criterion, criterion_group, criterion_main};
use overlay::{IdSpace, NodeId};
use sim::{Init, LatencyModel, LookupRun, World, WorldConfig, build_world};
use std::hint::black_box;
use std::time::Duration;

fn converged(peers: usize) -> World {
    let mut cfg = WorldConfig::new(IdSpace::new(128).expect("valid width"), 1);
    cfg.latency = LatencyModel::Constant(Duration::from_millis(10));
    let mut run = LookupRun::new(peers, 0, cfg);
    run.init = Init::Converged;
    run.warmup = Duration::from_secs(1);
    build_world(&run, &mut |_| {}).expect("valid run")
}

fn bench(c: &mut Criterion) {
    let world = converged(10_000);
    let ids: Vec<NodeId> = world.live_ids().collect();
    let node = world.node(ids[0]).expect("live");
    let space = world.space();
    let mut k = 0u128;
    c.bench_function("next_hop (10^4 ring, m=128)", |b| {
        b.iter(|| {
            k = k.wrapping_add(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834);
            black_box(node.next_hop(space.wrap(k)))
        })
    });
    let mut world = converged(10_000);
    c.bench_function("simulated lookup end-to-end (10^4 ring)", |b| {
        b.iter(|| {
            k = k.wrapping_add(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834);
            world.start_random_lookup(space.wrap(k));
            let until = world.now() + Duration::from_millis(500);
            world.run_until(until, &mut |_| {});
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
