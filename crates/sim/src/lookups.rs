//! The lookup experiment behind `p2psip sim`: build a ring, issue random lookups, report.

use crate::metrics::LookupReport;
use crate::models::GeoPoint;
use crate::world::{Init, World, WorldConfig};
use overlay::NodeId;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

/// Parameters of a lookup run.
#[derive(Clone, Debug)]
pub struct LookupRun {
    /// Peers in the ring.
    pub peers: usize,
    /// Lookups to issue (from random live peers to random keys).
    pub lookups: u64,
    /// Network, churn and Chord parameters.
    pub world: WorldConfig,
    /// How the ring is built before measuring.
    pub init: Init,
    /// Lookups each peer issues per simulated second (sets the measurement window).
    pub lookup_rate_per_peer: f64,
    /// Quiet time between building the ring and the first lookup.
    pub warmup: Duration,
    /// Node-IDs that must be present (e.g. the paper's named peers); the rest are random.
    pub fixed_ids: Vec<NodeId>,
}

impl LookupRun {
    /// A run with defaults: converged start, 1 lookup per peer per second, 5 s warm-up.
    pub fn new(peers: usize, lookups: u64, world: WorldConfig) -> Self {
        LookupRun {
            peers,
            lookups,
            world,
            init: Init::Converged,
            lookup_rate_per_peer: 1.0,
            warmup: Duration::from_secs(5),
            fixed_ids: Vec::new(),
        }
    }
}

/// Where a long run is, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// What the run is doing.
    pub phase: &'static str,
    /// Units done in this phase.
    pub done: u64,
    /// Units in this phase.
    pub total: u64,
}

/// Errors of a run's parameters.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Fewer than one peer.
    #[error("a run needs at least one peer")]
    NoPeers,
    /// More peers than IDs.
    #[error("{peers} peers do not fit in an ID space of m = {bits} bits")]
    SpaceTooSmall {
        /// Peers asked for.
        peers: usize,
        /// Width of the space.
        bits: u32,
    },
    /// Rate must be positive.
    #[error("lookup rate must be positive, got {0}")]
    BadRate(f64),
}

/// Build the world for a run (peers placed, ring built and warmed up) without issuing lookups.
pub fn build_world(run: &LookupRun, progress: &mut dyn FnMut(Progress)) -> Result<World, RunError> {
    build_world_timed(run, progress).map(|(world, _)| world)
}

/// [`build_world`], also saying how long (wall clock) placing peers with a converged state
/// took: setting up data without a single event, which an engine's events per second
/// leave out (PeerSim's clock, too, starts after its network and initialisers).
fn build_world_timed(
    run: &LookupRun,
    progress: &mut dyn FnMut(Progress),
) -> Result<(World, Duration), RunError> {
    if run.peers == 0 {
        return Err(RunError::NoPeers);
    }
    let space = run.world.chord.space;
    if space.bits() < 64 && (run.peers as u128) > space.max() {
        return Err(RunError::SpaceTooSmall {
            peers: run.peers,
            bits: space.bits(),
        });
    }
    if run.lookup_rate_per_peer.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(RunError::BadRate(run.lookup_rate_per_peer));
    }
    let mut world = World::new(run.world.clone());
    let mut ids: Vec<NodeId> = Vec::with_capacity(run.peers);
    let mut seen = std::collections::BTreeSet::new();
    for id in run.fixed_ids.iter().take(run.peers) {
        if seen.insert(*id) {
            ids.push(*id);
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(run.world.seed ^ 0x05EE_D1D5);
    while ids.len() < run.peers {
        let id = space.wrap(rng.random::<u128>());
        if seen.insert(id) {
            ids.push(id);
        }
    }
    drop(seen);
    let geos: Vec<GeoPoint> = (0..ids.len()).map(|_| GeoPoint::random(&mut rng)).collect();
    let mut placing = Duration::ZERO;
    match run.init {
        Init::Converged => {
            // Wall-clock time of setting up, reported beside the events it leaves out; it
            // never reaches the simulated clock.
            #[allow(clippy::disallowed_methods)]
            let t0 = Instant::now();
            progress(Progress {
                phase: "placing peers",
                done: 0,
                total: 1,
            });
            world.init_converged(&ids, &geos);
            progress(Progress {
                phase: "placing peers",
                done: 1,
                total: 1,
            });
            placing = t0.elapsed();
        }
        Init::Joins { interval } => {
            for (i, (id, geo)) in ids.iter().zip(&geos).enumerate() {
                let at = world.now() + interval;
                world.run_until(at, &mut |_| {});
                world.add_peer(*id, *geo);
                if i % 256 == 0 {
                    progress(Progress {
                        phase: "joining",
                        done: i as u64,
                        total: ids.len() as u64,
                    });
                }
            }
        }
    }
    // The IDs and positions are in the world now: at 10^7 peers these two lists alone are
    // a quarter of a gigabyte, not to be held through the warm-up.
    drop((ids, geos));
    let settle = world.now() + run.warmup;
    world.run_until(settle, &mut |_| {});
    Ok((world, placing))
}

/// Run the experiment and summarise it.
pub fn run_lookups(
    run: &LookupRun,
    progress: &mut dyn FnMut(Progress),
) -> Result<LookupReport, RunError> {
    // Wall-clock time of the whole run, reported as the simulator's own speed (`wall_s`);
    // it never reaches the simulated clock.
    #[allow(clippy::disallowed_methods)]
    let wall = Instant::now();
    let (mut world, placing) = build_world_timed(run, progress)?;
    let peers = world.live_count();
    let space = world.space();
    let start = world.now();
    let (msgs0, bytes0) = (world.messages, world.bytes);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(run.world.seed ^ 0x0100_C0F5);
    let rate = run.lookup_rate_per_peer * peers.max(1) as f64;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut next = start;
    for i in 0..run.lookups {
        next = next + gap;
        world.run_until(next, &mut |_| {});
        let key = space.wrap(rng.random::<u128>());
        world.start_random_lookup(key);
        if i % 4096 == 0 {
            progress(Progress {
                phase: "lookups",
                done: i,
                total: run.lookups,
            });
        }
    }
    // Drain: run until every lookup has an outcome (bounded by the longest a lookup can take).
    let c = &run.world.chord;
    let drain = c.lookup_timeout * (u32::from(c.lookup_retries) + 1) + Duration::from_secs(1);
    world.run_while(next + drain, |w| {
        let s = &w.stats;
        s.succeeded + s.timed_out + s.wrong_owner + s.origin_lost < s.issued
    });
    progress(Progress {
        phase: "lookups",
        done: run.lookups,
        total: run.lookups,
    });
    let sim_s = (world.now() - start).as_secs_f64();
    let wall_s = wall.elapsed().as_secs_f64();
    let placing_s = placing.as_secs_f64();
    let stats = &mut world.stats;
    let counted = stats.issued.saturating_sub(stats.origin_lost);
    let messages = world.messages - msgs0;
    Ok(LookupReport {
        peers,
        lookups: stats.issued,
        succeeded: stats.succeeded,
        timed_out: stats.timed_out,
        wrong_owner: stats.wrong_owner,
        origin_lost: stats.origin_lost,
        success_rate: if counted == 0 {
            0.0
        } else {
            stats.succeeded as f64 / counted as f64
        },
        hops_mean: stats.hops.mean(),
        hops_p99: stats.hops.percentile(99.0),
        hops_expected: 0.5 * (peers.max(1) as f64).log2(),
        latency_ms_p50: stats.latency_ms.percentile(50.0),
        latency_ms_p99: stats.latency_ms.percentile(99.0),
        messages,
        messages_per_peer_per_s: messages as f64 / (peers.max(1) as f64 * sim_s.max(1e-9)),
        bytes_per_message: if messages == 0 {
            0.0
        } else {
            (world.bytes - bytes0) as f64 / messages as f64
        },
        events: world.events,
        // Every event (the warm-up's too) over the wall time in which events ran: the
        // whole run but placing the peers.
        events_per_s: world.events as f64 / (wall_s - placing_s).max(1e-9),
        sim_s,
        wall_s,
        placing_s,
        state_bytes_per_peer: world.state_bytes_per_peer(),
        joins: world.joins,
        departures: world.departures,
        seed: run.world.seed,
    })
}
