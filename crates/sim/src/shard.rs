//! One run split over threads: each thread simulates the peers of one arc of the ring.
//!
//! A large lookup run is bound by memory latency, one event after another on one core. The
//! ring splits into arcs of equal population (shards), each a [`World`] of its own with its
//! own clock, queue and random stream, run on its own thread. They meet every *lookahead*
//! of simulated time: the shortest delay the network model can give a message
//! ([`LatencyModel::min_delay`]). A message a peer sends during the window `(t, t + L]` to a
//! peer of another shard cannot arrive before `t + L` ends, so it waits in an outbox and is
//! handed over when all shards have reached `t + L`; no shard ever receives a message for
//! its past (conservative, window-synchronous parallel simulation). Hand-overs happen in
//! shard order and every shard's own events in its queue's order, so a run is the same bit
//! for bit for a given seed and number of shards; runs with different numbers of shards
//! draw different random streams and differ like runs with different seeds.
//!
//! The threads belong to this driver, as sockets and tasks belong to the tokio runtime:
//! each [`World`] is run by one thread at a time, and the peers inside it still see only
//! `now` and messages.
//!
//! The population must be fixed (a converged start, no churn): which shard a message goes
//! to is told by its receiver's Node-ID alone, and lookups are checked against the ring the
//! run started with.

use crate::world::{Outgoing, World};
use overlay::{NodeId, Time};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The arc of the ring one [`World`] simulates.
pub(crate) struct Shard {
    /// This shard's number.
    index: usize,
    /// The first Node-ID of shards 1, 2, …: shard `k` holds the IDs from `starts[k - 1]`
    /// (0 for shard 0) up to the next start.
    starts: Arc<[NodeId]>,
    /// Every peer of the run, ascending: the truth lookups are checked against, and the
    /// list lookup origins are drawn from.
    ring: Arc<[NodeId]>,
    /// Messages for the peers of each other shard, in the order they were sent (a message
    /// crossing to another shard is held as one held for [`World`]'s batched filing is).
    outbox: Vec<Vec<Outgoing>>,
}

impl Shard {
    /// Shard `index` of a ring split at `starts`.
    pub(crate) fn new(index: usize, starts: Arc<[NodeId]>, ring: Arc<[NodeId]>) -> Shard {
        let shards = starts.len() + 1;
        Shard {
            index,
            starts,
            ring,
            outbox: (0..shards).map(|_| Vec::new()).collect(),
        }
    }

    /// The shard that holds `id`.
    fn of(&self, id: NodeId) -> usize {
        self.starts.partition_point(|s| *s <= id)
    }

    /// The outbox for a message to `id`, or `None` if `id` is this shard's.
    pub(crate) fn outbox_for(&mut self, id: NodeId) -> Option<&mut Vec<Outgoing>> {
        let k = self.of(id);
        (k != self.index).then(|| &mut self.outbox[k])
    }

    /// The run's true owner of `key`: the first peer at or after it, round the ring.
    pub(crate) fn owner_of(&self, key: NodeId) -> Option<NodeId> {
        let i = self.ring.partition_point(|id| *id < key);
        self.ring.get(i).or_else(|| self.ring.first()).copied()
    }

    /// Peers in the whole run.
    pub(crate) fn ring_len(&self) -> usize {
        self.ring.len()
    }

    /// Peer number `choice` of the ring, if it is this shard's.
    pub(crate) fn own_peer(&self, choice: usize) -> Option<NodeId> {
        let id = *self.ring.get(choice)?;
        (self.of(id) == self.index).then_some(id)
    }
}

/// Where the ring splits into `shards` arcs of equal population: the first ID of each arc
/// but the first.
pub(crate) fn split_points(ring: &[NodeId], shards: usize) -> Vec<NodeId> {
    (1..shards)
        .filter_map(|k| ring.get(k * ring.len() / shards).copied())
        .collect()
}

/// Where the shards wait for each other at the end of a window. A window holds a
/// millisecond or so of work, so a shard that is done first spins a little before it
/// yields its core: sleeping and being woken by the kernel would cost tens of
/// microseconds at every meeting.
struct Gate {
    shards: usize,
    /// Shards at the gate in this round.
    arrived: AtomicUsize,
    /// Rounds completed.
    round: AtomicUsize,
}

/// Spins at the gate before a waiting shard starts yielding its core.
const SPINS: u32 = 1 << 14;

impl Gate {
    fn new(shards: usize) -> Gate {
        Gate {
            shards,
            arrived: AtomicUsize::new(0),
            round: AtomicUsize::new(0),
        }
    }

    /// Wait until every shard has come; what each did before it came is seen by all after.
    fn wait(&self) {
        let round = self.round.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.shards {
            self.arrived.store(0, Ordering::Relaxed);
            self.round.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0;
        while self.round.load(Ordering::Acquire) == round {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// What the shards share while they run: mailboxes and tallies, each kept twice and used
/// by alternate windows, so a shard that runs ahead never writes what a slower one has
/// still to read.
struct Meeting {
    shards: usize,
    gate: Gate,
    /// `mail[parity][from][to]`.
    mail: Vec<Mutex<Vec<Outgoing>>>,
    /// `tally[parity][shard]`.
    tally: Vec<AtomicU64>,
    /// A shard's work panicked.
    failed: AtomicBool,
}

impl Meeting {
    fn mailbox(&self, parity: usize, from: usize, to: usize) -> &Mutex<Vec<Outgoing>> {
        &self.mail[(parity * self.shards + from) * self.shards + to]
    }

    fn tally(&self, parity: usize, shard: usize) -> &AtomicU64 {
        &self.tally[parity * self.shards + shard]
    }
}

/// Runs a shard's world and its state to the end of a window.
pub(crate) type Step<S> = dyn Fn(&mut World, &mut S, Time) + Sync;

/// What a shard still has to do at the end of a window.
pub(crate) type Pending<S> = dyn Fn(&World, &S) -> u64 + Sync;

/// How a phase of a run advances each shard and when it ends.
pub(crate) struct Windows<'a, S> {
    /// The phase ends when the clock reaches this time, at the latest.
    pub(crate) until: Time,
    /// Simulated time between two meetings of the shards.
    pub(crate) lookahead: Duration,
    /// Run a shard's world and its state to the end of a window.
    pub(crate) step: &'a Step<S>,
    /// What a shard still has to do (summed over shards at each meeting; the phase ends
    /// early when the sum is 0); `None`: run until `until`.
    pub(crate) pending: Option<&'a Pending<S>>,
}

/// Run every shard window by window until the phase ends; `on_window` is called on this
/// thread (which runs shard 0) after each meeting with the window's end. Messages still on
/// their way between shards at the end stay queued at their receivers for the next phase.
pub(crate) fn run_windows<S: Send>(
    worlds: &mut [World],
    states: &mut [S],
    phase: &Windows<'_, S>,
    on_window: &mut dyn FnMut(Time),
) {
    let shards = worlds.len();
    let meeting = Meeting {
        shards,
        gate: Gate::new(shards),
        mail: (0..2 * shards * shards)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
        tally: (0..2 * shards).map(|_| AtomicU64::new(0)).collect(),
        failed: AtomicBool::new(false),
    };
    let meeting = &meeting;
    std::thread::scope(|scope| {
        let mut pairs = worlds.iter_mut().zip(states.iter_mut()).enumerate();
        let first = pairs.next();
        for (k, (world, state)) in pairs {
            scope.spawn(move || run_shard(k, world, state, phase, meeting, &mut |_| {}));
        }
        if let Some((k, (world, state))) = first {
            run_shard(k, world, state, phase, meeting, on_window);
        }
    });
}

/// One shard's side of [`run_windows`]. A shard whose work panics still comes to the
/// meeting, with the news: every shard then stops, and the panic goes on from its thread,
/// where otherwise the others would wait for it forever.
fn run_shard<S>(
    k: usize,
    world: &mut World,
    state: &mut S,
    phase: &Windows<'_, S>,
    meeting: &Meeting,
    on_window: &mut dyn FnMut(Time),
) {
    let shards = meeting.shards;
    let lookahead = if shards == 1 {
        // Nothing crosses: any window will do; meet every millisecond to check `pending`.
        phase.lookahead.max(Duration::from_millis(1))
    } else {
        phase.lookahead
    };
    let mut parity = 0;
    // The mail of the last window, and its end, once there was a window.
    let mut last: Option<(usize, Time)> = None;
    let mut failure = None;
    loop {
        let end = (world.now() + lookahead).min(phase.until);
        let work = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some((mail, at)) = last {
                on_window(at);
                accept(k, world, meeting, mail);
            }
            (phase.step)(world, state, end);
            post(k, world, meeting, parity);
            phase.pending.map_or(1, |p| p(world, state))
        }));
        let pending = work.unwrap_or_else(|panic| {
            meeting.failed.store(true, Ordering::Relaxed);
            failure = Some(panic);
            0
        });
        meeting.tally(parity, k).store(pending, Ordering::Relaxed);
        if shards > 1 {
            meeting.gate.wait();
        }
        if meeting.failed.load(Ordering::Relaxed) {
            break;
        }
        let left: u64 = (0..shards)
            .map(|s| meeting.tally(parity, s).load(Ordering::Relaxed))
            .sum();
        last = Some((parity, end));
        if end >= phase.until || left == 0 {
            on_window(end);
            accept(k, world, meeting, parity);
            break;
        }
        parity = 1 - parity;
    }
    if let Some(panic) = failure {
        std::panic::resume_unwind(panic);
    }
}

/// Hand this shard's outboxes to the mailboxes of `parity`.
fn post(k: usize, world: &mut World, meeting: &Meeting, parity: usize) {
    let Some(shard) = &mut world.shard else {
        return;
    };
    for to in (0..meeting.shards).filter(|&to| to != k) {
        let mut mail = meeting
            .mailbox(parity, k, to)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if mail.is_empty() {
            std::mem::swap(&mut *mail, &mut shard.outbox[to]);
        } else {
            mail.append(&mut shard.outbox[to]);
        }
    }
}

/// File everything sent to this shard in the window whose mail is `parity`, from every
/// other shard in shard order: due after that window, so before the clock can reach it.
fn accept(k: usize, world: &mut World, meeting: &Meeting, parity: usize) {
    for from in (0..meeting.shards).filter(|&from| from != k) {
        let mut mail = meeting
            .mailbox(parity, from, k)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        world.accept_crossings(&mut mail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::WorldConfig;
    use overlay::IdSpace;

    /// A shard that panics in the middle of a phase stops every shard and the panic reaches
    /// the caller; the other shards do not wait for it at the next meeting forever.
    #[test]
    fn a_panicking_shard_stops_the_run_instead_of_hanging_it() {
        let space = IdSpace::new(32).unwrap_or_else(|e| panic!("32-bit space: {e}"));
        let mut worlds: Vec<World> = (0..3)
            .map(|k| World::new(WorldConfig::new(space, k)))
            .collect();
        let mut states = [0usize, 1, 2];
        let step = |world: &mut World, k: &mut usize, end: Time| {
            if *k == 1 && end >= Time(10_000) {
                panic!("shard 1 fails at {end:?}");
            }
            world.run_until(end, &mut |_| {});
        };
        let phase = Windows {
            until: Time(1_000_000),
            lookahead: Duration::from_millis(2),
            step: &step,
            pending: None,
        };
        let mut windows = 0;
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_windows(&mut worlds, &mut states, &phase, &mut |_| windows += 1)
        }));
        assert!(run.is_err(), "the panic reached the caller");
        assert_eq!(windows, 4, "shard 0 stopped at the meeting after the panic");
        assert!(worlds[0].now() < Time(1_000_000));
    }

    /// Arcs of equal population that cover the whole space: every ID, the ring's own and
    /// those between them (below the first peer, above the last), belongs to exactly the
    /// shard whose arc holds it, and owners wrap round the ring's zero.
    #[test]
    fn arcs_split_the_ring_evenly_and_cover_the_space() {
        let ring: Arc<[NodeId]> = (1..=10u128).map(|i| NodeId(i * 100)).collect();
        let starts: Arc<[NodeId]> = split_points(&ring, 3).into();
        assert_eq!(&starts[..], &[NodeId(400), NodeId(700)]);
        let shards: Vec<Shard> = (0..3)
            .map(|k| Shard::new(k, starts.clone(), ring.clone()))
            .collect();
        for (id, home) in [
            (0u128, 0),
            (100, 0),
            (399, 0),
            (400, 1),
            (699, 1),
            (700, 2),
            (u128::MAX, 2),
        ] {
            for (k, shard) in shards.iter().enumerate() {
                let mut shard = Shard::new(k, shard.starts.clone(), shard.ring.clone());
                assert_eq!(
                    shard.outbox_for(NodeId(id)).is_none(),
                    k == home,
                    "{id} in {k}"
                );
            }
        }
        let own: Vec<usize> = (0..3)
            .map(|k| (0..10).filter(|&c| shards[k].own_peer(c).is_some()).count())
            .collect();
        assert_eq!(own, [3, 3, 4]);
        assert_eq!(shards[1].owner_of(NodeId(450)), Some(NodeId(500)));
        assert_eq!(shards[1].owner_of(NodeId(500)), Some(NodeId(500)));
        assert_eq!(shards[1].owner_of(NodeId(1001)), Some(NodeId(100)));
        assert_eq!(shards[0].ring_len(), 10);
    }
}
