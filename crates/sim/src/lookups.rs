//! The lookup experiment behind `p2psip sim`: build a ring, issue random lookups, report.

use crate::metrics::LookupReport;
use crate::models::GeoPoint;
use crate::shard::{Shard, Windows, run_windows, split_points};
use crate::world::{Init, LookupStats, World, WorldConfig, sorted_placement};
use overlay::{NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
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
    /// Threads the ring is split over (see [`crate::shard`]): the same run bit for bit for a
    /// given seed and thread count; more than one needs a converged start, no churn and a
    /// latency model with a least delay.
    pub threads: usize,
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
            threads: 1,
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
    /// The run cannot be split over threads.
    #[error("a run split over {threads} threads needs {needs}")]
    CannotSplit {
        /// Threads asked for.
        threads: usize,
        /// What the run lacks.
        needs: &'static str,
    },
}

/// Build the world for a run (peers placed, ring built and warmed up) without issuing
/// lookups: the whole ring in one world, whatever [`LookupRun::threads`] says.
pub fn build_world(run: &LookupRun, progress: &mut dyn FnMut(Progress)) -> Result<World, RunError> {
    let mut one = run.clone();
    one.threads = 1;
    let (mut worlds, _) = build_shards(&one, progress)?;
    worlds.pop().ok_or(RunError::NoPeers)
}

/// The seed of shard `k`'s own random stream (shard 0 keeps the run's seed).
fn shard_seed(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The least simulated time between two meetings of the shards: the least delay a message
/// can take.
fn lookahead(run: &LookupRun) -> Duration {
    run.world.latency.min_delay()
}

/// Check a run's parameters.
fn check(run: &LookupRun) -> Result<(), RunError> {
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
    if run.threads > 1 {
        let needs = if run.init != Init::Converged {
            Some("a converged start (no --grow)")
        } else if run.world.churn.is_some() {
            Some("a fixed population (no churn)")
        } else if lookahead(run).is_zero() {
            Some("a latency model whose least delay is above zero")
        } else {
            None
        };
        if let Some(needs) = needs {
            return Err(RunError::CannotSplit {
                threads: run.threads,
                needs,
            });
        }
    }
    Ok(())
}

/// The worlds of a run, one per thread (peers placed, ring built and warmed up), and how
/// long (wall clock) placing peers with a converged state took: setting up data without a
/// single event, which an engine's events per second leave out (PeerSim's clock, too,
/// starts after its network and initialisers).
fn build_shards(
    run: &LookupRun,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<World>, Duration), RunError> {
    check(run)?;
    let space = run.world.chord.space;
    let threads = run.threads.max(1);
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
    let mut worlds: Vec<World> = (0..threads)
        .map(|k| {
            let mut cfg = run.world.clone();
            cfg.seed = shard_seed(cfg.seed, k);
            World::new(cfg)
        })
        .collect();
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
            let (sorted, sorted_geos) = sorted_placement(&ids, &geos);
            // The IDs and positions are sorted copies now: at 10^7 peers these two lists
            // alone are a quarter of a gigabyte, not to be held through the run.
            drop((ids, geos));
            let geos = sorted_geos;
            let ring: Arc<[NodeId]> = sorted.into();
            if threads > 1 {
                let starts: Arc<[NodeId]> = split_points(&ring, threads).into();
                for (k, world) in worlds.iter_mut().enumerate() {
                    world.shard = Some(Shard::new(k, starts.clone(), ring.clone()));
                }
            }
            let (ring, geos) = (&ring, &geos);
            std::thread::scope(|scope| {
                for (k, world) in worlds.iter_mut().enumerate() {
                    let range = k * ring.len() / threads..(k + 1) * ring.len() / threads;
                    scope.spawn(move || world.place_converged(ring, geos, range));
                }
            });
            progress(Progress {
                phase: "placing peers",
                done: 1,
                total: 1,
            });
            placing = t0.elapsed();
        }
        Init::Joins { interval } => {
            // One world: `check` refuses to split a ring grown by joins.
            if let Some(world) = worlds.first_mut() {
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
    }
    let settle = Windows {
        until: worlds.first().map_or(Time::ZERO, World::now) + run.warmup,
        lookahead: lookahead(run),
        step: &|world: &mut World, _: &mut (), end| world.run_until(end, &mut |_| {}),
        pending: None,
    };
    run_windows(&mut worlds, &mut vec![(); threads], &settle, &mut |_| {});
    Ok((worlds, placing))
}

/// The lookups of a run: one every `gap`, each to a random key from a random origin, drawn
/// from one stream that every shard follows (each starts the lookups of its own peers).
struct LookupStream {
    rng: Xoshiro256PlusPlus,
    /// When the last lookup was issued (the next one is due a gap later).
    last: Time,
    gap: Duration,
    /// Lookups not yet issued.
    left: u64,
}

impl LookupStream {
    /// Issue the lookups due by `end`, running `world` to each, then run it to `end`.
    fn run_to(&mut self, world: &mut World, end: Time) {
        while self.left > 0 && self.last + self.gap <= end {
            self.last = self.last + self.gap;
            self.left -= 1;
            world.run_until(self.last, &mut |_| {});
            let key = world.space().wrap(self.rng.random::<u128>());
            let n = world.origin_choices();
            if n > 0 {
                let choice = self.rng.random_range(0..n);
                world.start_lookup_from(choice, key);
            }
        }
        world.run_until(end, &mut |_| {});
    }

    /// Lookups not issued yet, plus those issued in `world` without an outcome yet.
    fn pending(&self, world: &World) -> u64 {
        let s = &world.stats;
        let done = s.succeeded + s.timed_out + s.wrong_owner + s.origin_lost;
        self.left + s.issued.saturating_sub(done)
    }
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
    let (mut worlds, placing) = build_shards(run, progress)?;
    let peers: usize = worlds.iter().map(World::live_count).sum();
    let start = worlds.first().map_or(Time::ZERO, World::now);
    let msgs0: u64 = worlds.iter().map(|w| w.messages).sum();
    let bytes0: u64 = worlds.iter().map(|w| w.bytes).sum();
    let rate = run.lookup_rate_per_peer * peers.max(1) as f64;
    let gap = Duration::from_secs_f64(1.0 / rate);
    // Every shard follows the same stream.
    let mut streams: Vec<LookupStream> = worlds
        .iter()
        .map(|_| LookupStream {
            rng: Xoshiro256PlusPlus::seed_from_u64(run.world.seed ^ 0x0100_C0F5),
            last: start,
            gap,
            left: run.lookups,
        })
        .collect();
    // Run until every lookup has an outcome (bounded by the longest a lookup can take after
    // the last is issued).
    let c = &run.world.chord;
    let drain = c.lookup_timeout * (u32::from(c.lookup_retries) + 1) + Duration::from_secs(1);
    // Each lookup is due a gap after the one before (the clock keeps whole microseconds, so
    // the sum of the gaps is at most this).
    let issuing = gap.as_nanos().saturating_mul(u128::from(run.lookups));
    let last = start + Duration::from_nanos(u64::try_from(issuing).unwrap_or(u64::MAX));
    let phase = Windows {
        until: last + drain,
        lookahead: lookahead(run),
        step: &|world: &mut World, stream: &mut LookupStream, end| stream.run_to(world, end),
        pending: Some(&|world: &World, stream: &LookupStream| stream.pending(world)),
    };
    let mut shown = 0;
    run_windows(&mut worlds, &mut streams, &phase, &mut |end| {
        let done = if end >= last {
            run.lookups
        } else {
            ((end - start).as_secs_f64() / gap.as_secs_f64()) as u64
        };
        if done >= shown + 4096 || done == run.lookups {
            shown = done;
            progress(Progress {
                phase: "lookups",
                done,
                total: run.lookups,
            });
        }
    });
    let now = worlds.first().map_or(start, World::now);
    let sim_s = (now - start).as_secs_f64();
    let wall_s = wall.elapsed().as_secs_f64();
    let placing_s = placing.as_secs_f64();
    let mut stats = LookupStats::default();
    let (mut messages, mut bytes, mut events, mut joins, mut departures) = (0, 0, 0, 0, 0);
    let mut state_bytes = 0.0;
    for w in &mut worlds {
        stats.absorb(std::mem::take(&mut w.stats));
        messages += w.messages;
        bytes += w.bytes;
        events += w.events;
        joins += w.joins;
        departures += w.departures;
        state_bytes += w.state_bytes_per_peer() * w.live_count() as f64;
    }
    let live: usize = worlds.iter().map(World::live_count).sum();
    let counted = stats.issued.saturating_sub(stats.origin_lost);
    let messages = messages - msgs0;
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
            (bytes - bytes0) as f64 / messages as f64
        },
        events,
        // Every event (the warm-up's too) over the wall time in which events ran: the
        // whole run but placing the peers.
        events_per_s: events as f64 / (wall_s - placing_s).max(1e-9),
        sim_s,
        wall_s,
        placing_s,
        state_bytes_per_peer: state_bytes / live.max(1) as f64,
        joins,
        departures,
        seed: run.world.seed,
        threads: worlds.len(),
    })
}
