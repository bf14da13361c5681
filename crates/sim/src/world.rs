//! The simulated world: Chord peers, a virtual clock and a network between them.
//!
//! [`World`] is the discrete-event driver of [`overlay::ChordNode`]: it pops the earliest
//! event, feeds it to the peer it concerns, drains the peer's transmits into the network
//! model (latency, loss) and its events into the metrics, and schedules the peer's next
//! timeout. Peers come and go through churn; lookups are checked against the true owner
//! computed from global knowledge of which peers are live.

use crate::metrics::Samples;
use crate::models::{GeoPoint, GeoRad, LatencyModel, SessionModel};
use crate::packet::Packet;
use crate::queue::{EventQueue, INLINE_CLASS, Item, NO_HINT};
use crate::shard::Shard;
use crate::slots::{LATER_UNKNOWN, SlotIndex, SlotMeta};
use overlay::{
    ChordConfig, ChordNode, Contact, Event, IdSpace, LookupFailure, NodeId, RingSpan, Time,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// Hasher for Node-IDs, which are already uniformly distributed: fold the 128 bits.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
        self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = ((v as u64) ^ ((v >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Node-ID → V, hashed with [`IdHasher`] (the lookups a caller watches).
// The sans-IO ban on hash types (clippy.toml) is about iteration order: this map is only
// looked up (iterating it would still trip the ban on HashMap's iteration methods), and its
// hasher has no random state.
#[allow(clippy::disallowed_types)]
type IdMap<V> = std::collections::HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// The state a converged ring gives `sorted[i]`: predecessor, `r` successors and the
/// distinct fingers, computed from global knowledge of the sorted member IDs.
pub(crate) fn converged_tables(
    sorted: &[NodeId],
    i: usize,
    span: RingSpan,
    r: usize,
) -> (Option<Contact>, Vec<Contact>, Vec<Contact>) {
    let n = sorted.len();
    let id = sorted[i];
    let pred = (n > 1).then(|| Contact::id_only(sorted[(i + n - 1) % n]));
    let succs: Vec<Contact> = (1..=r.min(n.saturating_sub(1)))
        .map(|k| Contact::id_only(sorted[(i + k) % n]))
        .collect();
    let mut fingers = Vec::new();
    if n > 1 {
        let gap = span.distance(id, sorted[(i + 1) % n]);
        let first = 128 - gap.leading_zeros();
        // Only about log2 N of the fingers are distinct: a finger whose start lies after the
        // previous finger's start and at or before that finger's owner has the same owner
        // (no peer lies between), without a search.
        let mut last: Option<(u128, u128, NodeId)> = None;
        for k in first.saturating_sub(1)..span.bits() {
            let start = span.finger_start(id, k);
            let ds = span.distance(id, start);
            let owner = match last {
                Some((prev_ds, d, o)) if prev_ds < ds && ds <= d => o,
                // The ring is not empty (it holds `id`), so every key has an owner.
                _ => start.owner_in(sorted).unwrap_or(id),
            };
            last = Some((ds, span.distance(id, owner), owner));
            fingers.push(Contact::id_only(owner));
        }
    }
    (pred, succs, fingers)
}

/// Peers sorted by Node-ID with their positions (the last position given for an ID wins),
/// rather than through an ID → position map: at 10^7 peers that map alone is 0.5 GB.
pub(crate) fn sorted_placement(ids: &[NodeId], geos: &[GeoPoint]) -> (Vec<NodeId>, Vec<GeoPoint>) {
    let mut placed: Vec<(NodeId, GeoPoint)> = ids
        .iter()
        .copied()
        .zip(
            geos.iter()
                .copied()
                .chain(std::iter::repeat(GeoPoint::default())),
        )
        .collect();
    // Reversed, then a stable sort and dedup keep the last position given for an ID.
    placed.reverse();
    placed.sort_by_key(|(id, _)| *id);
    placed.dedup_by_key(|(id, _)| *id);
    placed.into_iter().unzip()
}

/// How peers come and go during a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Session-time distribution of each peer.
    pub session: SessionModel,
    /// Fraction of departures that are graceful leaves (the rest are crashes).
    pub graceful: f64,
}

/// How a run builds its ring before measuring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Start every peer with the converged state of a stable ring (OverSim's init phase).
    Converged,
    /// Grow the ring by real joins, one peer every `interval`, then let it settle.
    Joins {
        /// Time between two joins.
        interval: Duration,
    },
}

/// Everything a world needs to start.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Chord parameters (the ID space lives here).
    pub chord: ChordConfig,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// One-way latency model.
    pub latency: LatencyModel,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Churn, if any.
    pub churn: Option<Churn>,
}

impl WorldConfig {
    /// A world with m-bit IDs, defaults elsewhere.
    pub fn new(space: IdSpace, seed: u64) -> Self {
        WorldConfig {
            chord: ChordConfig::new(space),
            seed,
            latency: LatencyModel::geographic(),
            loss: 0.0,
            churn: None,
        }
    }
}

/// What the world observed about lookups started through [`World::start_lookup`].
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Lookups started.
    pub issued: u64,
    /// Answered with the right owner.
    pub succeeded: u64,
    /// Given up after all retries.
    pub timed_out: u64,
    /// Answered by a peer that is not the owner.
    pub wrong_owner: u64,
    /// The origin went away before the answer.
    pub origin_lost: u64,
    /// Hops per successful lookup (origin to the owner's predecessor).
    pub hops: Samples,
    /// Latency per successful lookup, milliseconds.
    pub latency_ms: Samples,
}

impl LookupStats {
    /// Add another world's outcomes to these (a run split over threads).
    pub(crate) fn absorb(&mut self, other: LookupStats) {
        self.issued += other.issued;
        self.succeeded += other.succeeded;
        self.timed_out += other.timed_out;
        self.wrong_owner += other.wrong_owner;
        self.origin_lost += other.origin_lost;
        self.hops.absorb(other.hops);
        self.latency_ms.absorb(other.latency_ms);
    }
}

/// A finished lookup that a caller asked to keep (see [`World::watch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedLookup {
    /// The key.
    pub key: NodeId,
    /// The owner that answered.
    pub owner: NodeId,
    /// Hop path, origin first.
    pub path: Vec<NodeId>,
}

/// A message on its way: the only event with a payload. Timers, departures and arrivals
/// are inline events (a code and a slot in the queue's key, see [`EventQueue::push_inline`]).
struct Ev {
    /// Where the receiver lived when the message was sent ([`NO_HINT`]: nowhere).
    slot: u32,
    /// That slot's generation then: the message is delivered only if the slot still holds
    /// the same peer (it may have left, and the slot been given to a newcomer).
    generation: u32,
    /// Where the sender lived: an answer to it (an acknowledgement, a pong, a neighbour
    /// list) finds its slot here instead of in the index.
    from_slot: u32,
    /// The message and its sender.
    packet: Packet,
}

/// A message whose receiver was not the sender of the message being handled: its slot and
/// position are found in a batch (see [`World::file_sends`]) rather than one at a time. A
/// message to a peer of another shard travels in this form too (see [`crate::shard`]).
pub(crate) struct Outgoing {
    /// The receiver.
    to: NodeId,
    /// Its slot, once looked up.
    to_slot: Option<u32>,
    /// The sender's slot ([`NO_HINT`] once it crossed to another shard).
    from_slot: u32,
    /// Where the sender is (the receiver's position completes the delay).
    from_geo: GeoRad,
    /// When it was sent.
    sent: Time,
    /// The random part of its delay ([`LatencyModel::draw`]).
    drawn: u64,
    /// Its place among events due at the same time ([`EventQueue::reserve_seq`]).
    seq: u64,
    /// The message and its sender.
    packet: Packet,
}

/// Messages held for [`World::file_sends`] at most: the receivers of that many are looked up
/// together.
const SEND_BATCH: usize = 16;

/// `timer_at` of a slot without a pending timer (8 bytes a peer where `Option` took 16).
const NO_TIMER: Time = Time(u64::MAX);

/// Events whose data [`World::touch_batch`] loads together, every that many events.
const TOUCH_BATCH: usize = 8;

/// [`World::touch_batch`]'s class of a message that only settles what its receiver waits
/// for ([`Packet::is_answer`]).
const ANSWER: u8 = 1;

/// Inline event: the peer in the hint's slot has a timer due at the event's time.
const TIMER: u8 = 0;
/// Inline event: the peer in the hint's slot leaves (churn).
const DEPART: u8 = 1;
/// Inline event: a newcomer arrives (churn).
const ARRIVE: u8 = 2;

/// The simulated overlay. See the module documentation.
pub struct World {
    chord: Arc<ChordConfig>,
    /// Each slot's Chord peer (a departed one stays until a newcomer takes the slot).
    peers: Vec<ChordNode>,
    /// Each slot's Node-ID, liveness, position (for the latency model) and pending timer,
    /// one cache line a slot apart from `peers`: every message reads its sender's and its
    /// receiver's, and a superseded timer event is recognised without touching its peer.
    meta: Vec<SlotMeta>,
    free_slots: Vec<u32>,
    /// Slot of every live peer, by Node-ID.
    index: SlotIndex,
    live_slots: Vec<u32>,
    live_ids: BTreeSet<NodeId>,
    queue: EventQueue<Ev>,
    /// Messages sent but not yet filed in the queue (see [`Outgoing`]). They are filed before
    /// the clock can reach them and before any peer comes or goes (which would change what
    /// the index answers), so they run exactly as if filed when sent.
    sends: Vec<Outgoing>,
    /// The earliest time any of `sends` can be due.
    sends_due: Time,
    /// How many messages `sends` holds before they are filed ([`SEND_BATCH`]; 1 files
    /// each one as it is sent).
    send_batch: usize,
    now: Time,
    rng: Xoshiro256PlusPlus,
    latency: LatencyModel,
    loss: f64,
    churn: Option<Churn>,
    /// The arc of the ring this world simulates when a run is split over threads (see
    /// [`crate::shard`]); `None`: the whole ring.
    pub(crate) shard: Option<Shard>,
    /// Messages handed to the network.
    pub messages: u64,
    /// Encoded bytes of those messages.
    pub bytes: u64,
    /// Events processed: messages delivered (or found their receiver gone), timers that
    /// woke their peer, departures and arrivals.
    pub events: u64,
    /// Items taken from the queue (events, and timer entries that were superseded or
    /// moved on).
    pops: u64,
    /// Peers that joined after the start.
    pub joins: u64,
    /// Peers that left or crashed.
    pub departures: u64,
    /// Peers that lost the ring and joined again with fresh bootstrap peers.
    pub rejoins: u64,
    /// Lookup outcomes.
    pub stats: LookupStats,
    watched: IdMap<Vec<(u64, WatchedLookup)>>,
}

impl World {
    /// An empty world.
    pub fn new(cfg: WorldConfig) -> Self {
        World {
            chord: Arc::new(cfg.chord),
            peers: Vec::new(),
            meta: Vec::new(),
            free_slots: Vec::new(),
            index: SlotIndex::default(),
            live_slots: Vec::new(),
            live_ids: BTreeSet::new(),
            queue: EventQueue::default(),
            sends: Vec::with_capacity(SEND_BATCH),
            sends_due: NO_TIMER,
            send_batch: SEND_BATCH,
            now: Time::ZERO,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            latency: cfg.latency,
            loss: cfg.loss.clamp(0.0, 1.0),
            churn: cfg.churn,
            shard: None,
            messages: 0,
            bytes: 0,
            events: 0,
            pops: 0,
            joins: 0,
            departures: 0,
            rejoins: 0,
            stats: LookupStats::default(),
            watched: IdMap::default(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The ID space.
    pub fn space(&self) -> IdSpace {
        self.chord.space
    }

    /// Peers alive and joined.
    pub fn live_count(&self) -> usize {
        self.live_ids.len()
    }

    /// Node-IDs of live, joined peers, ascending.
    pub fn live_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.live_ids.iter().copied()
    }

    /// The peer with this ID, if alive.
    pub fn node(&self, id: NodeId) -> Option<&ChordNode> {
        self.index
            .get(id, &self.meta)
            .map(|s| &self.peers[s as usize])
    }

    /// The true owner of `key`: the first live peer at or after it.
    pub fn owner_of(&self, key: NodeId) -> Option<NodeId> {
        if let Some(shard) = &self.shard {
            return shard.owner_of(key);
        }
        self.live_ids
            .range(key..)
            .next()
            .or_else(|| self.live_ids.iter().next())
            .copied()
    }

    /// A fresh random Node-ID not in use.
    pub fn fresh_id(&mut self) -> NodeId {
        loop {
            let id = self.chord.space.wrap(self.rng.random::<u128>());
            if !self.index.contains(id, &self.meta) {
                return id;
            }
        }
    }

    /// A random point for a new peer.
    pub fn random_geo(&mut self) -> GeoPoint {
        GeoPoint::random(&mut self.rng)
    }

    fn seed_for(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill(&mut s);
        s
    }

    fn alloc_slot(&mut self, node: ChordNode, geo: GeoPoint) -> u32 {
        self.file_sends();
        let id = node.id();
        let mut meta = SlotMeta {
            id,
            geo: GeoRad::from(geo),
            timer_at: NO_TIMER,
            timer_later: 0,
            alive: true,
            generation: 0,
            joined: false,
            live_pos: u32::MAX,
            outstanding: 0,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.peers[s as usize] = node;
                meta.generation = self.meta[s as usize].generation.wrapping_add(1);
                self.meta[s as usize] = meta;
                s
            }
            None => {
                self.peers.push(node);
                self.meta.push(meta);
                (self.peers.len() - 1) as u32
            }
        };
        self.index.insert(slot, &self.meta);
        slot
    }

    fn mark_joined(&mut self, slot: u32) {
        let pos = self.live_slots.len() as u32;
        let p = &mut self.meta[slot as usize];
        if !p.alive || p.joined {
            return;
        }
        p.joined = true;
        p.live_pos = pos;
        let id = p.id;
        self.live_slots.push(slot);
        self.live_ids.insert(id);
    }

    fn unmark_live(&mut self, slot: u32) {
        let p = &mut self.meta[slot as usize];
        if !p.joined {
            return;
        }
        p.joined = false;
        let pos = p.live_pos as usize;
        let id = p.id;
        self.live_slots.swap_remove(pos);
        if let Some(&moved) = self.live_slots.get(pos) {
            self.meta[moved as usize].live_pos = pos as u32;
        }
        self.live_ids.remove(&id);
    }

    /// Place peers with the converged state of a stable ring, computed from global knowledge.
    pub fn init_converged(&mut self, ids: &[NodeId], geos: &[GeoPoint]) {
        let (sorted, geos) = sorted_placement(ids, geos);
        self.place_converged(&sorted, &geos, 0..sorted.len());
    }

    /// Place the peers `sorted[range]` (at `geos[range]`) with the converged state of the
    /// stable ring `sorted` (ascending, distinct): a shard places its own arc of the ring.
    pub(crate) fn place_converged(
        &mut self,
        sorted: &[NodeId],
        geos: &[GeoPoint],
        range: std::ops::Range<usize>,
    ) {
        let n = range.len();
        if n == 0 {
            return;
        }
        // Room for everyone up front: grown by doubling, the peer table (~1 KB a peer) and
        // the index would briefly exist twice and overshoot by up to half.
        self.peers.reserve_exact(n);
        self.meta.reserve_exact(n);
        self.live_slots.reserve_exact(n);
        self.index.reserve(self.peers.len() + n, &self.meta);
        let space = self.chord.space;
        let r = self.chord.successors;
        for i in range {
            let id = sorted[i];
            let (pred, succs, fingers) = converged_tables(sorted, i, RingSpan::whole(space), r);
            let seed = self.seed_for();
            let node = ChordNode::converged(
                self.chord.clone(),
                Contact::id_only(id),
                seed,
                self.now,
                pred,
                succs,
                fingers,
            );
            let geo = geos.get(i).copied().unwrap_or_default();
            let slot = self.alloc_slot(node, geo);
            self.mark_joined(slot);
            self.after_input(slot, NO_HINT);
            self.schedule_departure(slot);
        }
    }

    /// Add one peer now: the first creates the ring, later ones join via a random live peer.
    pub fn add_peer(&mut self, id: NodeId, geo: GeoPoint) -> bool {
        if self.index.contains(id, &self.meta) {
            return false;
        }
        let seed = self.seed_for();
        let node = ChordNode::new(self.chord.clone(), Contact::id_only(id), seed);
        let bootstrap = self.random_live();
        let slot = self.alloc_slot(node, geo);
        let now = self.now;
        self.join_via(slot, bootstrap, now);
        self.after_input(slot, NO_HINT);
        self.schedule_departure(slot);
        true
    }

    /// Join through `bootstrap` plus a few more random live peers to fall back on (as an
    /// enrollment answer would list them), or create a ring when nobody is live.
    fn join_via(&mut self, slot: u32, bootstrap: Option<u32>, now: Time) {
        match bootstrap {
            Some(b) => {
                let b = self.peers[b as usize].contact();
                for _ in 0..2 * overlay::MAX_BOOTSTRAPS {
                    if let Some(extra) = self.random_live() {
                        let c = self.peers[extra as usize].contact();
                        self.peers[slot as usize].add_bootstrap(c);
                    }
                }
                self.peers[slot as usize].join(now, b);
            }
            None => self.peers[slot as usize].create(now),
        }
    }

    fn random_live(&mut self) -> Option<u32> {
        if self.live_slots.is_empty() {
            None
        } else {
            let i = self.rng.random_range(0..self.live_slots.len());
            Some(self.live_slots[i])
        }
    }

    fn schedule_departure(&mut self, slot: u32) {
        if let Some(churn) = self.churn {
            let life = churn.session.sample(&mut self.rng);
            self.queue.push_inline(self.now + life, DEPART, slot);
        }
    }

    /// Remove a peer: gracefully (it tells its neighbours) or by crashing.
    pub fn remove_peer(&mut self, id: NodeId, graceful: bool) {
        let Some(slot) = self.index.get(id, &self.meta) else {
            return;
        };
        self.depart(slot, graceful);
    }

    fn depart(&mut self, slot: u32, graceful: bool) {
        if !self.meta[slot as usize].alive {
            return;
        }
        if graceful {
            let now = self.now;
            self.peers[slot as usize].leave(now);
            self.after_input(slot, NO_HINT);
        }
        self.file_sends();
        self.unmark_live(slot);
        let p = &mut self.meta[slot as usize];
        self.stats.origin_lost += u64::from(p.outstanding);
        p.outstanding = 0;
        let id = p.id;
        self.index.remove(id, &self.meta);
        let m = &mut self.meta[slot as usize];
        m.alive = false;
        m.timer_at = NO_TIMER;
        self.watched.remove(&id);
        self.free_slots.push(slot);
        self.departures += 1;
    }

    /// Store a record at peer `at` directly (tests and scenarios that place data).
    pub fn put_record(&mut self, at: NodeId, key: NodeId, value: Vec<u8>) -> bool {
        let Some(slot) = self.index.get(at, &self.meta) else {
            return false;
        };
        self.peers[slot as usize].put_local(key, value)
    }

    /// How many peers a lookup's origin is drawn from ([`Self::start_lookup_from`]): the
    /// live peers, or every peer of the ring when the ring is split over threads (its
    /// population is fixed then).
    pub(crate) fn origin_choices(&self) -> usize {
        match &self.shard {
            Some(shard) => shard.ring_len(),
            None => self.live_slots.len(),
        }
    }

    /// Start a lookup for `key` from origin number `choice` (below [`Self::origin_choices`]);
    /// false if that origin is not live here (a shard starts only its own peers' lookups).
    pub(crate) fn start_lookup_from(&mut self, choice: usize, key: NodeId) -> bool {
        let slot = match &self.shard {
            Some(shard) => shard
                .own_peer(choice)
                .and_then(|id| self.index.get(id, &self.meta)),
            None => self.live_slots.get(choice).copied(),
        };
        match slot {
            Some(slot) => {
                self.start_lookup_at(slot, key);
                true
            }
            None => false,
        }
    }

    /// File messages sent to this shard's peers by peers of other shards, in the order
    /// given, as [`Self::file_sends`] files this shard's own. Each is due after the window
    /// in which it was sent.
    pub(crate) fn accept_crossings(&mut self, batch: &mut Vec<Outgoing>) {
        for mut s in batch.drain(..) {
            s.seq = self.queue.reserve_seq();
            s.from_slot = NO_HINT;
            self.sends.push(s);
        }
        self.file_sends();
    }

    /// Start a lookup for `key` from a random origin ([`Self::start_lookup_from`], drawn
    /// from this world's stream); returns false if there is none here.
    pub fn start_random_lookup(&mut self, key: NodeId) -> bool {
        let n = self.origin_choices();
        if n == 0 {
            return false;
        }
        let choice = self.rng.random_range(0..n);
        self.start_lookup_from(choice, key)
    }

    /// Start a lookup for `key` at the peer `origin`; keep its result for [`Self::watched`].
    pub fn watch(&mut self, origin: NodeId, key: NodeId) -> Option<u64> {
        let slot = self.index.get(origin, &self.meta)?;
        // Register first: a lookup the origin can answer itself completes at once.
        self.watched.entry(origin).or_default();
        Some(self.start_lookup_at(slot, key))
    }

    /// The result of a watched lookup, once it finished.
    pub fn watched(&self, origin: NodeId, handle: u64) -> Option<&WatchedLookup> {
        self.watched
            .get(&origin)?
            .iter()
            .find(|(h, _)| *h == handle)
            .map(|(_, r)| r)
    }

    fn start_lookup_at(&mut self, slot: u32, key: NodeId) -> u64 {
        self.stats.issued += 1;
        let m = &mut self.meta[slot as usize];
        m.outstanding = m.outstanding.saturating_add(1);
        let now = self.now;
        let h = self.peers[slot as usize].lookup(now, key);
        self.after_input(slot, NO_HINT);
        h
    }

    /// File the messages held in `sends`: look up their receivers' slots and positions all
    /// together (first the index buckets, then the slot lines: the loads of each round do
    /// not depend on one another, so their cache misses overlap, where one message at a
    /// time they came one after another), then finish their delays and queue them with the
    /// places they took among same-time events when they were sent.
    fn file_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let mut sends = std::mem::take(&mut self.sends);
        let acc = sends
            .iter()
            .fold(0u32, |acc, s| acc ^ self.index.touch(s.to));
        std::hint::black_box(acc);
        for s in &mut sends {
            s.to_slot = self.index.get(s.to, &self.meta);
        }
        for s in sends.drain(..) {
            let (to_slot, generation, to_geo) = match s.to_slot {
                Some(t) => {
                    let m = &self.meta[t as usize];
                    (t, m.generation, &m.geo)
                }
                None => (NO_HINT, 0, &GeoRad::ORIGIN),
            };
            let delay = self.latency.finish(s.drawn, &s.from_geo, to_geo);
            self.queue.push_reserved(
                s.sent + delay,
                s.seq,
                Ev {
                    slot: to_slot,
                    generation,
                    from_slot: s.from_slot,
                    packet: s.packet,
                },
                to_slot,
            );
        }
        self.sends = sends;
        self.sends_due = NO_TIMER;
    }

    /// The next item due by `until`, once every held message that could come first is
    /// filed.
    fn next_item(&mut self, until: Time) -> Option<(Time, Item<Ev>)> {
        if !self.sends.is_empty() && self.queue.peek_time().is_none_or(|t| t >= self.sends_due) {
            self.file_sends();
        }
        self.queue.pop_due_item(until)
    }

    /// Drain a peer's outputs into the network and metrics, then reschedule its timer.
    /// `reply_to`: the slot of the peer whose message this one is handling ([`NO_HINT`]
    /// when none).
    fn after_input(&mut self, slot: u32, reply_to: u32) {
        let now = self.now;
        while let Some(t) = self.peers[slot as usize].poll_transmit() {
            self.messages += 1;
            self.bytes += (overlay::wire::HEADER_LEN + overlay::wire::body_len(&t.msg)) as u64;
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                continue;
            }
            let drawn = self.latency.draw(&mut self.rng);
            let packet = Packet::new(self.peers[slot as usize].contact(), t.msg);
            match self.meta.get(reply_to as usize) {
                Some(m) if m.alive && m.id == t.to.id => {
                    let delay = self
                        .latency
                        .finish(drawn, &self.meta[slot as usize].geo, &m.geo);
                    let generation = m.generation;
                    self.queue.push_hinted(
                        now + delay,
                        Ev {
                            slot: reply_to,
                            generation,
                            from_slot: slot,
                            packet,
                        },
                        reply_to,
                    );
                }
                _ => {
                    let mut send = Outgoing {
                        to: t.to.id,
                        to_slot: None,
                        from_slot: slot,
                        from_geo: self.meta[slot as usize].geo,
                        sent: now,
                        drawn,
                        seq: 0,
                        packet,
                    };
                    if let Some(shard) = &mut self.shard
                        && let Some(out) = shard.outbox_for(send.to)
                    {
                        out.push(send);
                        continue;
                    }
                    send.seq = self.queue.reserve_seq();
                    self.sends_due = self.sends_due.min(now + self.latency.at_least(drawn));
                    self.sends.push(send);
                    if self.sends.len() >= self.send_batch {
                        self.file_sends();
                    }
                }
            }
        }
        while let Some(ev) = self.peers[slot as usize].poll_event() {
            self.on_node_event(slot, ev);
        }
        if !self.meta[slot as usize].alive {
            return;
        }
        let due = self.peers[slot as usize].poll_timeout().map(|t| t.max(now));
        self.note_deadline(slot, due);
    }

    /// The peer in `slot` next needs waking at `due`: queue a timer event for it if none is
    /// queued that early, else note how much later than the queued one it is due (so the
    /// queued event moves on by itself, see [`SlotMeta::timer_later`]).
    fn note_deadline(&mut self, slot: u32, due: Option<Time>) {
        let m = &mut self.meta[slot as usize];
        match due {
            Some(t) if t < m.timer_at => {
                m.timer_at = t;
                m.timer_later = 0;
                self.queue.push_inline(t, TIMER, slot);
            }
            Some(t) => {
                m.timer_later = u32::try_from((t - m.timer_at).as_micros())
                    .ok()
                    .filter(|&l| l != LATER_UNKNOWN)
                    .unwrap_or(LATER_UNKNOWN);
            }
            None => m.timer_later = LATER_UNKNOWN,
        }
    }

    fn on_node_event(&mut self, slot: u32, ev: Event) {
        match ev {
            Event::Joined { .. } => self.mark_joined(slot),
            Event::JoinFailed { .. } => {
                // Like a peer going back to the E&A server for fresh bootstrap peers.
                self.unmark_live(slot);
                let bootstrap = self.random_live();
                let now = self.now;
                self.join_via(slot, bootstrap, now);
                self.rejoins += 1;
            }
            Event::LookupDone {
                lookup,
                key,
                owner,
                path,
                latency,
                ..
            } => {
                let p = &mut self.meta[slot as usize];
                p.outstanding = p.outstanding.saturating_sub(1);
                let origin = p.id;
                let correct = self.owner_of(key) == Some(owner.id);
                if correct {
                    self.stats.succeeded += 1;
                    // Overlay hops from the origin to the owner (path holds both ends).
                    let hops = path.len().saturating_sub(1) as f64;
                    self.stats.hops.push(hops);
                    self.stats.latency_ms.push(latency.as_secs_f64() * 1e3);
                } else {
                    self.stats.wrong_owner += 1;
                }
                if let Some(list) = self.watched.get_mut(&origin) {
                    list.push((
                        lookup,
                        WatchedLookup {
                            key,
                            owner: owner.id,
                            path,
                        },
                    ));
                }
            }
            Event::LookupFailed { reason, .. } => {
                let p = &mut self.meta[slot as usize];
                p.outstanding = p.outstanding.saturating_sub(1);
                match reason {
                    LookupFailure::TimedOut | LookupFailure::Overloaded => {
                        self.stats.timed_out += 1
                    }
                    LookupFailure::NotJoined => self.stats.origin_lost += 1,
                }
            }
            Event::PeerFailed { .. } => {}
        }
    }

    /// Process events until the clock passes `until` or nothing is left; calls `tick`
    /// every 65 536 events (for progress reporting).
    pub fn run_until(&mut self, until: Time, tick: &mut dyn FnMut(&World)) {
        while let Some((at, ev)) = self.next_item(until) {
            self.step(at, ev);
            if self.pops.is_multiple_of(65_536) {
                tick(self);
            }
        }
        self.file_sends();
        self.now = self.now.max(until);
    }

    /// Handle one item taken from the queue.
    fn step(&mut self, at: Time, ev: Item<Ev>) {
        self.now = at;
        self.pops += 1;
        if self.pops.is_multiple_of(TOUCH_BATCH as u64) {
            self.touch_batch();
        }
        if self.dispatch(ev) {
            self.events += 1;
        }
    }

    /// Load what coming events will read, in three rounds a batch of [`TOUCH_BATCH`] events
    /// apart, so that each round's loads depend only on what an earlier round already
    /// brought into cache: the events three batches ahead have their payloads loaded; two
    /// ahead, the lists their payloads carry, their senders' and receivers' slot lines and
    /// their peers' fields ([`ChordNode::touch_fields`]); one ahead, the heap behind those
    /// peers' lists ([`ChordNode::touch_lists`]). The loads of one round do not depend on one
    /// another, so their cache misses overlap, where one event at a time (or one chain of
    /// pointers at a time) they came one after another. By the time those events come up
    /// their lines are in cache.
    fn touch_batch(&self) {
        let meta = &self.meta;
        let class_of = |ev: &Ev| if ev.packet.is_answer() { ANSWER } else { 0 };
        let mut ahead = [(NO_HINT, INLINE_CLASS); TOUCH_BATCH];
        let mut acc = 0u64;
        // Round 1: payloads, three batches ahead.
        self.queue.touch_ahead(3 * TOUCH_BATCH, &mut ahead, |ev| {
            (u64::from(ev.from_slot), 0)
        });
        // Round 2: two batches ahead.
        let n = self.queue.touch_ahead(2 * TOUCH_BATCH, &mut ahead, |ev| {
            // The sender's line: most answers go back to it (see `after_input`).
            let sender = meta.get(ev.from_slot as usize).map_or(0, |m| m.id.0 as u64);
            (sender ^ ev.packet.touch(), class_of(ev))
        });
        for &(h, class) in &ahead[..n] {
            if let (Some(m), Some(p)) = (meta.get(h as usize), self.peers.get(h as usize)) {
                acc ^= u64::from(m.timer_later) ^ p.touch_fields(class == ANSWER);
            }
        }
        // Round 3: one batch ahead.
        let n = self
            .queue
            .touch_ahead(TOUCH_BATCH, &mut ahead, |ev| (0, class_of(ev)));
        for &(h, class) in &ahead[..n] {
            if let (Some(m), Some(p)) = (meta.get(h as usize), self.peers.get(h as usize)) {
                acc ^= match class {
                    // A timer event that will move on does not wake its peer.
                    INLINE_CLASS if m.timer_later != 0 => 0,
                    ANSWER => p.touch_lists(true),
                    _ => p.touch_lists(false),
                };
            }
        }
        std::hint::black_box(acc);
    }

    /// Handle one queued item; false if it was no event (a timer event that was superseded,
    /// or that moved on because its peer no longer needs waking then).
    fn dispatch(&mut self, ev: Item<Ev>) -> bool {
        let now = self.now;
        match ev {
            Item::Event(Ev {
                slot,
                generation,
                from_slot,
                packet,
            }) => {
                // The slot found at send time is still right unless that peer went away (and
                // the slot may have been reused) in the meantime: saves an index lookup.
                let here = self
                    .meta
                    .get(slot as usize)
                    .is_some_and(|m| m.alive && m.generation == generation);
                if here {
                    let (from, msg) = packet.unpack();
                    self.peers[slot as usize].handle_message(now, from, msg);
                    self.after_input(slot, from_slot);
                }
            }
            Item::Inline {
                code: TIMER,
                hint: slot,
            } => {
                let m = &mut self.meta[slot as usize];
                // Superseded by an earlier event for the same peer, or the peer departed
                // (its `timer_at` is cleared): nothing happens, so no event is counted.
                if m.timer_at != now {
                    return false;
                }
                m.timer_at = NO_TIMER;
                let due = match m.timer_later {
                    0 => Some(now),
                    LATER_UNKNOWN => self.peers[slot as usize].poll_timeout(),
                    later => Some(now + Duration::from_micros(u64::from(later))),
                };
                if due.is_none_or(|t| t > now) {
                    // The peer's deadline moved on since this event was queued: file it
                    // again for then, without waking the peer (no event either).
                    self.note_deadline(slot, due);
                    return false;
                }
                self.peers[slot as usize].handle_timeout(now);
                self.after_input(slot, NO_HINT);
            }
            Item::Inline {
                code: DEPART,
                hint: slot,
            } => {
                let graceful = match self.churn {
                    Some(c) => self.rng.random_bool(c.graceful.clamp(0.0, 1.0)),
                    None => false,
                };
                if self.meta[slot as usize].alive {
                    self.depart(slot, graceful);
                    // Keep the population steady: a newcomer arrives shortly after.
                    let delay = Duration::from_millis(self.rng.random_range(0..1000));
                    self.queue.push_inline(now + delay, ARRIVE, NO_HINT);
                }
            }
            Item::Inline { code: ARRIVE, .. } => {
                let id = self.fresh_id();
                let geo = self.random_geo();
                if self.add_peer(id, geo) {
                    self.joins += 1;
                }
            }
            Item::Inline { .. } => {}
        }
        true
    }

    /// Is every live peer's successor the next live ID, and its predecessor the previous?
    pub fn ring_is_consistent(&self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.live_ids.iter().copied().collect();
        let n = ids.len();
        for (i, id) in ids.iter().enumerate() {
            let node = self.node(*id).ok_or_else(|| format!("{id:?} missing"))?;
            let want_succ = ids[(i + 1) % n];
            let got = node.successor().map(|c| c.id);
            if n > 1 && got != Some(want_succ) {
                return Err(format!("{id:?}: successor {got:?}, want {want_succ:?}"));
            }
            let want_pred = ids[(i + n - 1) % n];
            let got = node.predecessor().map(|c| c.id);
            if n > 1 && got != Some(want_pred) {
                return Err(format!("{id:?}: predecessor {got:?}, want {want_pred:?}"));
            }
        }
        Ok(())
    }

    /// Mean Chord state bytes over live peers.
    pub fn state_bytes_per_peer(&self) -> f64 {
        let n = self.live_slots.len();
        if n == 0 {
            return 0.0;
        }
        let total: usize = self
            .live_slots
            .iter()
            .map(|s| self.peers[*s as usize].state_bytes())
            .sum();
        total as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::IdSpace;

    /// Everything a run reports, and the order of what happened in it (the values each
    /// sample list holds, in the order they were taken).
    type Outcome = (Vec<u64>, Vec<f64>, Vec<f64>);

    /// A ring grown by joins under churn (graceful leaves and crashes, newcomers) and loss,
    /// then a burst of lookups; the message receivers are looked up `batch` at a time.
    fn churning_run(latency: &LatencyModel, batch: usize) -> Outcome {
        let space = IdSpace::new(32).unwrap_or_else(|e| panic!("32-bit space: {e}"));
        let mut cfg = WorldConfig::new(space, 11);
        cfg.loss = 0.01;
        cfg.latency = latency.clone();
        cfg.churn = Some(Churn {
            session: SessionModel::Exponential {
                median: Duration::from_secs(40),
            },
            graceful: 0.5,
        });
        let mut w = World::new(cfg);
        w.send_batch = batch;
        for _ in 0..300 {
            let (id, geo) = (w.fresh_id(), w.random_geo());
            w.add_peer(id, geo);
            let t = w.now() + Duration::from_millis(20);
            w.run_until(t, &mut |_| {});
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for _ in 0..3000 {
            w.start_random_lookup(space.wrap(rng.random::<u128>()));
            let t = w.now() + Duration::from_millis(5);
            w.run_until(t, &mut |_| {});
        }
        let end = w.now() + Duration::from_secs(20);
        w.run_until(end, &mut |_| {});
        let s = &w.stats;
        let counts = vec![
            w.events,
            w.pops,
            w.messages,
            w.bytes,
            w.joins,
            w.departures,
            w.rejoins,
            s.issued,
            s.succeeded,
            s.timed_out,
            s.wrong_owner,
            s.origin_lost,
        ];
        (
            counts,
            s.hops.values().to_vec(),
            s.latency_ms.values().to_vec(),
        )
    }

    /// The converged fingers skip searches whose owner they already know; they are exactly
    /// the owners a search for every finger start finds, on the whole circle and on layer
    /// arcs (one of them across the circle's zero).
    #[test]
    fn converged_fingers_are_the_owners_of_every_finger_start() {
        let space = IdSpace::new(32).unwrap_or_else(|e| panic!("32-bit space: {e}"));
        let arcs = [
            None,
            Some(overlay::RingArc {
                start: NodeId(1 << 30),
                len: 1 << 29,
            }),
            Some(overlay::RingArc {
                start: NodeId((1 << 32) - (1 << 20)),
                len: 3 << 20,
            }),
        ];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for arc in arcs {
            let span = RingSpan::new(space, arc);
            for n in [2usize, 3, 50, 700] {
                let mut ring: Vec<NodeId> = (0..n)
                    .map(|_| match arc {
                        Some(a) => a.at(space, rng.random_range(0..a.len)),
                        None => space.wrap(rng.random::<u128>()),
                    })
                    .collect();
                ring.sort();
                ring.dedup();
                for i in 0..ring.len() {
                    let (_, _, fingers) = converged_tables(&ring, i, span, 4);
                    let id = ring[i];
                    let gap = span.distance(id, ring[(i + 1) % ring.len()]);
                    let first = 128 - gap.leading_zeros();
                    let searched: Vec<Contact> = (first.saturating_sub(1)..span.bits())
                        .map(|k| {
                            let owner = span.finger_start(id, k).owner_in(&ring);
                            Contact::id_only(owner.unwrap_or(id))
                        })
                        .collect();
                    assert_eq!(fingers, searched, "{arc:?}, {n} peers, member {i}");
                }
            }
        }
    }

    /// Holding sent messages back to look their receivers up in batches changes nothing:
    /// the same events happen in the same order as when each message is filed as it is
    /// sent, also while peers come and go and messages are lost. With geographic latency
    /// the delays depend on where the receivers are; with a constant one, many messages
    /// are due at the same time and run in the order they were sent.
    #[test]
    fn batched_receiver_lookups_change_nothing() {
        for latency in [
            LatencyModel::geographic(),
            LatencyModel::Constant(Duration::from_millis(10)),
        ] {
            let one = churning_run(&latency, 1);
            assert!(
                one.0[4] > 0 && one.0[5] > 0,
                "the run has churn: {:?}",
                one.0
            );
            assert!(one.0[8] > 1000, "lookups succeed: {:?}", one.0);
            assert_eq!(one, churning_run(&latency, SEND_BATCH), "{latency:?}");
        }
    }
}
