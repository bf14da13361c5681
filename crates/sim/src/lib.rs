//! Discrete-event simulator for the p2psip overlay.
//!
//! The simulator is one of the two drivers of the sans-IO core in `overlay` (the tokio
//! runtime is the other). It keeps a virtual clock and an event queue, draws every random
//! choice from seeded RNGs (same seed, same run, bit for bit), and models the
//! network between peers: latency (constant, uniform or geographic with jitter), loss, and
//! churn (exponential or Pareto session times). Metrics cover lookup success, hops, latency
//! percentiles, messages and bytes per peer, and bytes of state per peer.
//!
//! A ring can start converged (every peer given the state a stable ring would have, as
//! OverSim's init phase does) or be grown by real joins. A fixed ring can be split over
//! threads, each simulating one arc of it (`shard`): the same seed and thread count give the
//! same run bit for bit.
#![warn(missing_docs, unreachable_pub)]

mod calls;
mod lookups;
mod metrics;
mod models;
mod packet;
mod queue;
mod shard;
mod slots;
mod world;

pub use calls::{
    Behaviour, CallError, CallOutcome, CallProgress, CallReport, CallRun, CallSeries, CallWorld,
    ON_OFF_TRUSTED, PaperReport, SimKeys, TracedCall, TrustSample, paper, run_calls,
    run_calls_traced, run_paper,
};
pub use lookups::{LookupRun, Progress, RunError, build_world, run_lookups};
pub use metrics::{LookupReport, Samples};
pub use models::{GeoPoint, GeoRad, LatencyModel, SessionModel};
pub use queue::{EventQueue, NO_HINT};
pub use world::{Churn, Init, LookupStats, WatchedLookup, World, WorldConfig};
