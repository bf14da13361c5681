//! The Chord state machine of one peer.

use super::config::ChordConfig;
use super::contacts::Contacts;
use super::fingers::Fingers;
use crate::wire::{Message, Record, Route, RouteReply};
use crate::{Contact, NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How many bootstrap peers a node remembers.
pub const MAX_BOOTSTRAPS: usize = 4;

/// A message to send: the driver delivers `msg` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination peer.
    pub to: Contact,
    /// What to send.
    pub msg: Message,
}

/// Why a lookup gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    /// No answer within the lookup timeout, after all retries.
    TimedOut,
    /// Too many lookups in flight at this peer.
    Overloaded,
    /// The peer is not (or no longer) part of a ring.
    NotJoined,
}

/// What a node reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The join completed: the node has a successor.
    Joined {
        /// Its first successor.
        successor: NodeId,
    },
    /// The join could not complete (bootstrap unreachable or ID taken).
    JoinFailed {
        /// Human-readable cause.
        reason: &'static str,
    },
    /// A lookup started with [`ChordNode::lookup`] found the owner of its key.
    LookupDone {
        /// The handle returned by [`ChordNode::lookup`].
        lookup: u64,
        /// The key.
        key: NodeId,
        /// The peer responsible for it.
        owner: Contact,
        /// Hop path, origin first, owner last.
        path: Vec<NodeId>,
        /// Time from start to answer (including retries).
        latency: Duration,
        /// Attempts used (1 = first try).
        attempts: u8,
    },
    /// A lookup gave up.
    LookupFailed {
        /// The handle returned by [`ChordNode::lookup`].
        lookup: u64,
        /// The key.
        key: NodeId,
        /// Why.
        reason: LookupFailure,
    },
    /// A peer stopped answering and was removed from the routing state.
    PeerFailed {
        /// The peer.
        peer: NodeId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    User,
    Join,
    FixFinger(u32),
    /// Ask the ring through a bootstrap peer who our successor is: heals partitions.
    RingCheck,
}

#[derive(Clone, Debug)]
struct Lookup {
    id: u64,
    key: NodeId,
    purpose: Purpose,
    started: Time,
    deadline: Time,
    attempts: u8,
    via: Option<Contact>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RpcKind {
    Stabilize,
    CheckPredecessor,
    /// Asks the last entry of a successor list shorter than configured for its successors,
    /// to make the list longer than the successor's own (a peer configured with a longer
    /// list than its neighbours, such as a CSP that must know its arc).
    Extend,
    /// Asks finger `i` itself for its neighbours: its predecessor tells whether a peer has
    /// joined between the finger's start and the finger (then a lookup repairs it). Two
    /// messages on a link that is open anyway, where a lookup costs a routed round.
    FingerCheck(u32),
    /// A ping to a neighbour whose link just closed: it may have crashed.
    Probe,
}

impl RpcKind {
    /// The request that asks for this kind of answer.
    fn request(self, token: u64) -> Message {
        match self {
            RpcKind::Stabilize | RpcKind::Extend | RpcKind::FingerCheck(_) => {
                Message::GetNeighbours { token }
            }
            RpcKind::CheckPredecessor | RpcKind::Probe => Message::Ping { token },
        }
    }
}

#[derive(Clone, Debug)]
struct Rpc {
    token: u64,
    to: Contact,
    deadline: Time,
    kind: RpcKind,
    /// When the request is given up even if links to `to` keep closing under it (see
    /// [`RESEND_WINDOW`]).
    give_up: Time,
}

#[derive(Clone, Debug)]
struct Forward {
    token: u64,
    next: Contact,
    deadline: Time,
    route: Route,
    tries: u8,
    /// When the route is given up even if links to `next` keep closing under it (see
    /// [`RESEND_WINDOW`]).
    give_up: Time,
}

/// A request or a routed message still awaiting its answer is sent again whenever the link
/// it went out on closes (see [`ChordNode::handle_link_down`]), each time with a new RPC
/// timeout, but within this many RPC timeouts of its first sending: a peer that keeps
/// closing its links under our requests is still declared failed, at most this many times
/// later than one that does not answer at all.
const RESEND_WINDOW: u32 = 3;

/// Push onto one of a peer's transient queues (`forwards`, `rpcs`, `lookups`), which are
/// released whenever they empty and usually hold one entry: a first push allocates room for
/// exactly one (a `Vec` would take four; with 10^7 simulated peers, millions of which have a
/// hop awaiting its acknowledgement at any moment, that is gigabytes).
fn push_one<T>(v: &mut Vec<T>, x: T) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
    v.push(x);
}

/// Most doublings of a maintenance interval (2^6 = 64 times the base; the configured
/// maximum usually caps it sooner).
const MAX_BACKOFF: u8 = 6;

/// `base` doubled `backoff` times, never above `max` (nor below `base`); `base` when there
/// is no maximum (back-off off).
fn backed_off(base: Duration, max: Option<Duration>, backoff: u8) -> Duration {
    match max {
        Some(max) => base
            .saturating_mul(1u32 << backoff.min(MAX_BACKOFF))
            .min(max)
            .max(base),
        None => base,
    }
}

/// The periodic maintenance timers, in the order [`ChordNode::handle_timeout`] runs them.
#[derive(Clone, Copy, Debug)]
enum Periodic {
    Stabilize,
    CheckPredecessor,
    FixFingers,
    RingCheck,
}

impl Periodic {
    const ALL: [Periodic; 4] = [
        Periodic::Stabilize,
        Periodic::CheckPredecessor,
        Periodic::FixFingers,
        Periodic::RingCheck,
    ];
}

/// A Chord peer (Stoica et al.) as a sans-IO state machine.
///
/// # Driving contract
/// - Inputs: [`handle_message`](Self::handle_message) for every message delivered to this
///   peer (with the authenticated sender), [`handle_timeout`](Self::handle_timeout) when the
///   time returned by [`poll_timeout`](Self::poll_timeout) is reached, and the commands
///   [`create`](Self::create), [`join`](Self::join), [`lookup`](Self::lookup),
///   [`leave`](Self::leave).
/// - Outputs: after any input, drain [`poll_transmit`](Self::poll_transmit) and
///   [`poll_event`](Self::poll_event) until both return `None`, then ask
///   [`poll_timeout`](Self::poll_timeout) for the next deadline.
/// - Time only moves forward; a timeout may be delivered late or early (early is a no-op).
///
/// Routing is recursive with hop-by-hop acknowledgements: each hop acknowledges a
/// [`Route`] at once and forwards it to the farthest known peer that precedes the key; a hop
/// that does not acknowledge within the RPC timeout is removed from the tables and the
/// message is re-forwarded. The owner answers the origin directly with the full path.
///
/// # Layout
/// A simulation of 10^5 peers and more is bound by cache misses: every event reads one
/// random peer. The fields are laid out in the order a message reads them, so that an
/// answer (a hop acknowledgement, a pong, a lookup's answer) reads the first four cache
/// lines only, any other message or timer the first seven, and what is rarely read (the
/// RNG, bootstrap peers, stored records) comes last. Compiler-chosen order spread the hot
/// fields over all eight lines.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct ChordNode {
    // Line 0-1: what every input reads: the transient queues, the deadlines, the state.
    rpcs: Vec<Rpc>,
    forwards: Vec<Forward>,
    lookups: Vec<Lookup>,
    /// When unacknowledged hops are next checked. One sweep timer covers all of them (a
    /// timer per hop would mostly fire after its ack arrived): a dead hop is noticed between
    /// one and one and a half RPC timeouts after the send.
    ack_sweep_at: Option<Time>,
    stabilize_at: Time,
    fix_fingers_at: Time,
    check_pred_at: Time,
    ring_check_at: Time,
    active: bool,
    /// The last ring check got no answer: the next one goes through another bootstrap
    /// peer. While they are answered the same one is used, so its link stays open.
    ring_check_missed: bool,
    /// The successor hinted at a change while a stabilize was in flight: stabilize again
    /// when its answer comes.
    stabilize_again: bool,
    /// Quiet stabilize rounds in a row: the interval is `stabilize_every` doubled this many
    /// times, capped at `stabilize_max` (see [`ChordConfig::stabilize_max`]).
    stabilize_backoff: u8,
    /// Finger refreshes in a row that changed nothing, likewise for `fix_fingers_every`.
    fingers_backoff: u8,
    /// Ring checks in a row that confirmed the successor, likewise for `ring_check_every`.
    /// Kept apart from stabilize's: a peer cut off into a separate ring stabilizes quietly
    /// on its side of the cut, yet only a ring check that crosses the cut heals it, so a
    /// check that goes unanswered (or any change near the peer) keeps the base pace.
    ring_check_backoff: u8,
    // Line 2: the outputs the driver drains after every input.
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    // Line 3: every message checks whether it came from the predecessor.
    pred: Option<Contact>,
    /// When the predecessor was last heard from (any message): a predecessor that talks
    /// to us is not probed.
    pred_heard: Time,
    next_token: u64,
    // Line 4-6: routing (the fingers end in line 6).
    me: Contact,
    cfg: Arc<ChordConfig>,
    next_finger: u32,
    succs: Contacts,
    fingers: Fingers,
    // The rest of line 6, and line 7: rarely read.
    rng: Xoshiro256PlusPlus,
    /// Peers to (re)join through: the way back in if every successor is lost.
    bootstraps: Vec<Contact>,
    records: BTreeMap<NodeId, Vec<u8>>,
}

impl ChordNode {
    /// A node that is not yet part of any ring; call [`create`](Self::create) or
    /// [`join`](Self::join) next.
    pub fn new(cfg: Arc<ChordConfig>, me: Contact, seed: [u8; 32]) -> Self {
        ChordNode {
            cfg,
            me,
            active: false,
            bootstraps: Vec::new(),
            pred: None,
            succs: Contacts::default(),
            fingers: Fingers::default(),
            next_finger: 0,
            next_token: 1,
            stabilize_at: Time::ZERO,
            fix_fingers_at: Time::ZERO,
            check_pred_at: Time::ZERO,
            ring_check_at: Time::ZERO,
            stabilize_backoff: 0,
            fingers_backoff: 0,
            ring_check_backoff: 0,
            pred_heard: Time::ZERO,
            ring_check_missed: false,
            stabilize_again: false,
            rpcs: Vec::new(),
            forwards: Vec::new(),
            ack_sweep_at: None,
            lookups: Vec::new(),
            records: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng: Xoshiro256PlusPlus::from_seed(seed),
        }
    }

    /// A node that already holds the converged state of a stable ring (as the simulator's
    /// initialisation phase computes it from global knowledge).
    pub fn converged(
        cfg: Arc<ChordConfig>,
        me: Contact,
        seed: [u8; 32],
        now: Time,
        pred: Option<Contact>,
        succs: Vec<Contact>,
        fingers: impl IntoIterator<Item = Contact>,
    ) -> Self {
        let mut node = ChordNode::new(cfg, me, seed);
        node.pred = pred.filter(|p| p.id != me.id);
        node.succs = Contacts::from_contacts(succs.into_iter().filter(|s| s.id != me.id));
        node.succs.truncate(node.cfg.successors);
        node.succs.shrink_to_fit();
        node.fingers.set(node.cfg.span(), me.id, fingers);
        node.active = true;
        node.next_finger = node.first_finger_index();
        node.pred_heard = now;
        node.schedule_all(now);
        node.settle_maintenance(now);
        node
    }

    /// A converged ring is at rest. Where maintenance backs off while nothing changes
    /// (`stabilize_max`, `fix_fingers_max`, `ring_check_max`), start this peer as a settled one runs: its
    /// intervals at their longest, each timer at a random point of its period (where a
    /// settled ring's timers are at any moment), rather than every peer of a ring at rest
    /// going through the quick rounds of a freshly joined one together. Any change near the
    /// peer drops the intervals back at once, as for a peer that settled by itself. Without
    /// back-off nothing changes.
    fn settle_maintenance(&mut self, now: Time) {
        if self.cfg.stabilize_max.is_none()
            && self.cfg.fix_fingers_max.is_none()
            && self.cfg.ring_check_max.is_none()
        {
            return;
        }
        if self.cfg.stabilize_max.is_some() {
            self.stabilize_backoff = MAX_BACKOFF;
        }
        if self.cfg.fix_fingers_max.is_some() {
            self.fingers_backoff = MAX_BACKOFF;
        }
        if self.cfg.ring_check_max.is_some() {
            self.ring_check_backoff = MAX_BACKOFF;
        }
        for timer in Periodic::ALL {
            let phase: f64 = self.rng.random_range(0.0..1.0);
            let at = now + self.periodic_every(timer).mul_f64(phase);
            *self.periodic_at(timer) = at;
        }
    }

    /// Start a new ring with this node alone on it.
    pub fn create(&mut self, now: Time) {
        self.active = true;
        self.schedule_all(now);
        self.events.push_back(Event::Joined {
            successor: self.me.id,
        });
    }

    /// Join the ring that `bootstrap` belongs to.
    pub fn join(&mut self, now: Time, bootstrap: Contact) {
        self.active = true;
        self.add_bootstrap(bootstrap);
        self.pred = None;
        self.succs.clear();
        self.schedule_all(now);
        self.start_join(now, bootstrap);
    }

    /// Remember another peer to (re)join through (at most [`MAX_BOOTSTRAPS`] are kept).
    pub fn add_bootstrap(&mut self, peer: Contact) {
        if peer.id == self.me.id || self.bootstraps.iter().any(|b| b.id == peer.id) {
            return;
        }
        if self.bootstraps.len() >= MAX_BOOTSTRAPS {
            self.bootstraps.remove(0);
        }
        self.bootstraps.push(peer);
    }

    fn start_join(&mut self, now: Time, bootstrap: Contact) {
        if self.lookups.iter().any(|l| l.purpose == Purpose::Join) {
            return;
        }
        let id = self.token();
        push_one(
            &mut self.lookups,
            Lookup {
                id,
                key: self.cfg.space.add(self.me.id, 1),
                purpose: Purpose::Join,
                started: now,
                deadline: now + self.cfg.lookup_timeout,
                attempts: 1,
                via: Some(bootstrap),
            },
        );
        self.send_join_request(now, id, bootstrap);
    }

    /// Leave gracefully: hand records to the successor and tell both neighbours.
    pub fn leave(&mut self, _now: Time) {
        if !self.active {
            return;
        }
        if let Some(succ) = self.successor() {
            let records: Vec<Record> = std::mem::take(&mut self.records)
                .into_iter()
                .map(|(key, value)| Record { key, value })
                .collect();
            self.send(
                succ,
                Message::Leaving {
                    pred: self.pred,
                    succs: self.succs.to_vec(),
                },
            );
            if !records.is_empty() {
                self.send(succ, Message::Records { records });
            }
        }
        if let Some(pred) = self.pred
            && Some(pred.id) != self.successor().map(|s| s.id)
        {
            self.send(
                pred,
                Message::Leaving {
                    pred: self.pred,
                    succs: self.succs.to_vec(),
                },
            );
        }
        self.active = false;
        self.pred = None;
        self.succs.clear();
        self.fingers = Fingers::default();
        self.rpcs.clear();
        self.forwards.clear();
        let failed: Vec<_> = self.lookups.drain(..).collect();
        for l in failed {
            if l.purpose == Purpose::User {
                self.events.push_back(Event::LookupFailed {
                    lookup: l.id,
                    key: l.key,
                    reason: LookupFailure::NotJoined,
                });
            }
        }
    }

    /// Start looking up the owner of `key`; the answer comes as [`Event::LookupDone`] or
    /// [`Event::LookupFailed`] carrying the returned handle.
    pub fn lookup(&mut self, now: Time, key: NodeId) -> u64 {
        let id = self.token();
        if !self.active {
            self.events.push_back(Event::LookupFailed {
                lookup: id,
                key,
                reason: LookupFailure::NotJoined,
            });
            return id;
        }
        if self.lookups.len() >= self.cfg.max_lookups {
            self.events.push_back(Event::LookupFailed {
                lookup: id,
                key,
                reason: LookupFailure::Overloaded,
            });
            return id;
        }
        self.start_lookup(now, id, key, Purpose::User);
        id
    }

    /// Feed a message from `from` (authenticated by the driver).
    pub fn handle_message(&mut self, now: Time, from: Contact, msg: Message) {
        if !self.active {
            return;
        }
        if self.pred.is_some_and(|p| p.id == from.id) {
            self.pred_heard = now;
        }
        match msg {
            Message::Route(route) => {
                if self.is_joining() {
                    return; // no ack: the sender will route around us
                }
                if from.id != self.me.id {
                    self.send(from, Message::RouteAck { token: route.token });
                }
                self.route_step(now, route);
            }
            Message::RouteAck { token } => {
                self.forwards
                    .retain(|f| !(f.token == token && f.next.id == from.id));
                self.skip_idle_sweep();
            }
            Message::RouteReply(reply) => self.on_reply(now, from, reply),
            Message::GetNeighbours { token } => {
                let reply = Message::Neighbours {
                    token,
                    pred: self.pred,
                    succs: self.succs.to_vec(),
                };
                self.send(from, reply);
            }
            Message::Neighbours { token, pred, succs } => {
                self.on_neighbours(now, from, token, pred, succs);
            }
            Message::Notify => self.on_notify(now, from),
            Message::NeighbourChanged => {
                // Only our successor can have gained a predecessor between us; from anyone
                // else the hint is noise (and stabilize is rate-limited to one RPC anyway).
                // A hint that overtakes the answer to a stabilize in flight is not lost: the
                // answer may predate the change, so stabilize runs again when it comes.
                if self.successor().is_some_and(|s| s.id == from.id) {
                    if self.rpcs.iter().any(|r| r.kind == RpcKind::Stabilize) {
                        self.stabilize_again = true;
                    } else {
                        self.stabilize(now);
                    }
                }
            }
            Message::Ping { token } => self.send(from, Message::Pong { token }),
            Message::Pong { token } => {
                self.rpcs
                    .retain(|r| !(r.token == token && r.to.id == from.id));
            }
            Message::Leaving { pred, succs } => self.on_leaving(now, from, pred, succs),
            Message::Records { records } => self.store_records(records),
            // Call traffic belongs to the secure-routing layer above Chord.
            Message::Call(_)
            | Message::PingRequest(_)
            | Message::HopReceipt { .. }
            | Message::PingAck { .. }
            | Message::Fetch { .. }
            | Message::Deliver { .. }
            | Message::Ringing { .. }
            | Message::PlainInvite(_)
            | Message::Dialog { .. }
            | Message::Put { .. }
            | Message::PutReply { .. }
            | Message::Get { .. }
            | Message::GetReply { .. } => {}
        }
        // An acknowledged hop or an answered request may have emptied a queue: give its
        // memory back now rather than at the next timer (a burst of lookups through 10^7
        // simulated peers otherwise holds a forwarding buffer at most of them at once).
        self.release_idle_buffers();
    }

    /// The driver could not hand `msg` for `to` to its link (this peer's own send queue to
    /// `to` was full): local congestion, not a sign that `to` failed. A routed message
    /// waiting for `to`'s acknowledgement, or a liveness request to `to`, is forgotten
    /// instead of being held against `to` when its timeout comes; the lookup it belonged to
    /// retries through its own timeout and stabilize asks again next round.
    pub fn handle_not_sent(&mut self, _now: Time, to: NodeId, msg: &Message) {
        match msg {
            Message::Route(route) => self
                .forwards
                .retain(|f| !(f.token == route.token && f.next.id == to)),
            Message::GetNeighbours { token } | Message::Ping { token } => {
                self.rpcs.retain(|r| !(r.token == *token && r.to.id == to))
            }
            _ => {}
        }
    }

    /// The driver's link to `peer` went down. `unreachable`: a connection to it could not
    /// be set up (refused, timed out), so whatever this peer sent it since is lost and is
    /// timed out now rather than at its deadline: routed messages go around it at once.
    ///
    /// Otherwise an open link closed. The side that closes a link stops reading it at once,
    /// so a request sent on it, or the answer to one, may have been lost with it: a peer at
    /// its share of links closes the link it opened to answer a lookup while the asker is
    /// still sending on it, as happens all the time while many peers join. Whatever still
    /// awaits an answer or an acknowledgement from `peer` is sent again (on a new link, with
    /// a new deadline, within [`RESEND_WINDOW`]) rather than held against a peer that
    /// is alive; a peer that is gone refuses the new link and is failed at once. A closed
    /// link is also how a crashed neighbour shows itself on a quiet ring (its stabilize
    /// traffic may be seconds away once backed off): the successor or predecessor is asked
    /// at once, and maintenance returns to its base pace. A link closed for idleness or
    /// room by the other side costs one question.
    pub fn handle_link_down(&mut self, now: Time, peer: NodeId, unreachable: bool) {
        if !self.active || peer == self.me.id {
            return;
        }
        if unreachable {
            let mut lost = false;
            for r in self.rpcs.iter_mut().filter(|r| r.to.id == peer) {
                r.deadline = now;
                lost = true;
            }
            for f in self.forwards.iter_mut().filter(|f| f.next.id == peer) {
                f.deadline = now;
                lost = true;
            }
            if lost {
                self.ack_sweep_at = Some(now);
                self.expire_rpcs(now);
                self.expire_forwards(now);
            }
            return;
        }
        self.resend_to(now, peer);
        if self.successor().is_some_and(|s| s.id == peer) {
            self.neighbourhood_changed(now);
            self.stabilize(now);
        } else if let Some(c) = self.pred.filter(|p| p.id == peer) {
            self.neighbourhood_changed(now);
            self.probe(now, c);
        }
        // A finger is not asked: a driver short of descriptors closes links to make room,
        // and a question to every finger whose link closed would open another link at once
        // and close one elsewhere. A dead finger is found by the next hop it misses or its
        // next check.
    }

    /// Send again what awaits an answer or an acknowledgement from `peer` and may have been
    /// lost with a closed link: the same token (an answer to either copy will do), a new
    /// deadline, but none past its [`RESEND_WINDOW`].
    fn resend_to(&mut self, now: Time, peer: NodeId) {
        let deadline = now + self.cfg.rpc_timeout;
        let mut again = Vec::new();
        for r in &mut self.rpcs {
            if r.to.id == peer && now < r.give_up {
                r.deadline = deadline.min(r.give_up);
                again.push((r.to, r.kind.request(r.token)));
            }
        }
        for f in &mut self.forwards {
            if f.next.id == peer && now < f.give_up {
                f.deadline = deadline.min(f.give_up);
                again.push((f.next, Message::Route(f.route.clone())));
            }
        }
        for (to, msg) in again {
            self.send(to, msg);
        }
    }

    /// Ping `peer` unless a request to it is already waiting for an answer.
    fn probe(&mut self, now: Time, peer: Contact) {
        if !self.rpcs.iter().any(|r| r.to.id == peer.id) {
            self.start_rpc(now, peer, RpcKind::Probe);
        }
    }

    /// Does this peer need its link to `peer`: its predecessor, a successor, a finger, or
    /// the bootstrap peer its ring checks go through, or a peer whose answer to a request
    /// or acknowledgement of a routed message it still awaits? The driver keeps such links
    /// open while they are quiet (they carry the maintenance traffic), and closes others
    /// first when it must make room: closing a link loses what the other side is sending on
    /// it, and while peers join by the hundred, links opened for one lookup were closed
    /// under their own answers and dialled again at once.
    pub fn keeps_link(&self, peer: NodeId) -> bool {
        self.active
            && (self.pred.is_some_and(|p| p.id == peer)
                || self.succs.contains(peer)
                || self.fingers.is_finger(self.cfg.span(), self.me.id, peer)
                || self.bootstraps.first().is_some_and(|b| b.id == peer)
                || self.rpcs.iter().any(|r| r.to.id == peer)
                || self.forwards.iter().any(|f| f.next.id == peer))
    }

    /// Run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        if !self.active {
            return;
        }
        self.expire_rpcs(now);
        self.expire_forwards(now);
        self.expire_lookups(now);
        for timer in Periodic::ALL {
            let every = self.periodic_every(timer);
            if !self.periodic_due(now, timer, every) {
                continue;
            }
            match timer {
                Periodic::Stabilize => self.stabilize(now),
                // Its own stabilize requests reach us: a predecessor heard from within the
                // interval is alive, and is asked only once it has been silent that long.
                Periodic::CheckPredecessor if now.saturating_since(self.pred_heard) < every => {
                    self.check_pred_at = self.check_pred_at.min(self.pred_heard + every);
                }
                Periodic::CheckPredecessor => self.check_predecessor(now),
                Periodic::FixFingers => self.fix_next_finger(now),
                Periodic::RingCheck => self.ring_check(now),
            }
        }
        self.release_idle_buffers();
    }

    /// How often `timer` runs now: its base interval, backed off while the neighbourhood is
    /// quiet (predecessor checks back off to twice the stabilize cap).
    fn periodic_every(&self, timer: Periodic) -> Duration {
        let c = &self.cfg;
        let (base, max, backoff) = match timer {
            Periodic::Stabilize => (c.stabilize_every, c.stabilize_max, self.stabilize_backoff),
            Periodic::CheckPredecessor => (
                c.check_predecessor_every,
                c.stabilize_max.map(|m| m.saturating_mul(2)),
                self.stabilize_backoff,
            ),
            Periodic::FixFingers => (c.fix_fingers_every, c.fix_fingers_max, self.fingers_backoff),
            Periodic::RingCheck => (
                c.ring_check_every,
                c.ring_check_max,
                self.ring_check_backoff,
            ),
        };
        backed_off(base, max, backoff)
    }

    /// When `timer` is next due.
    fn periodic_at(&mut self, timer: Periodic) -> &mut Time {
        match timer {
            Periodic::Stabilize => &mut self.stabilize_at,
            Periodic::CheckPredecessor => &mut self.check_pred_at,
            Periodic::FixFingers => &mut self.fix_fingers_at,
            Periodic::RingCheck => &mut self.ring_check_at,
        }
    }

    /// Is `timer` due? If so, re-arm it one jittered `every` from now.
    fn periodic_due(&mut self, now: Time, timer: Periodic, every: Duration) -> bool {
        if now < *self.periodic_at(timer) {
            return false;
        }
        let next = now + self.jitter(every);
        *self.periodic_at(timer) = next;
        true
    }

    /// Look up our own ID through a bootstrap peer: on a ring that holds us the answer is us.
    /// Any other answer means the bootstrap peer's ring does not know us (we were cut off
    /// into a separate ring): adopt the answer as successor when it lies between us and our
    /// successor, and notify it either way, so stabilization merges the two rings (plain
    /// Chord never heals a partition by itself).
    fn ring_check(&mut self, now: Time) {
        if self.bootstraps.is_empty()
            || self
                .lookups
                .iter()
                .any(|l| matches!(l.purpose, Purpose::Join | Purpose::RingCheck))
            || self.lookups.len() >= self.cfg.max_lookups
        {
            return;
        }
        if std::mem::take(&mut self.ring_check_missed) {
            self.bootstraps.rotate_left(1);
        }
        let via = self.bootstraps[0];
        let id = self.token();
        let key = self.me.id;
        push_one(
            &mut self.lookups,
            Lookup {
                id,
                key,
                purpose: Purpose::RingCheck,
                started: now,
                deadline: now + self.cfg.lookup_timeout,
                attempts: u8::MAX,
                via: Some(via),
            },
        );
        self.send_route_via(now, id, key, via);
    }

    /// Give back memory of transient queues that are empty: with 10^5–10^6 simulated peers
    /// their leftover capacity would dominate per-peer state.
    fn release_idle_buffers(&mut self) {
        if self.forwards.is_empty() {
            self.forwards = Vec::new();
            // Nothing awaits an acknowledgement: no sweep to run (it would wake the peer
            // for nothing; the next forward arms it again).
            self.ack_sweep_at = None;
        }
        if self.rpcs.is_empty() {
            self.rpcs = Vec::new();
        }
        if self.lookups.is_empty() {
            self.lookups = Vec::new();
        }
        if self.out.is_empty() {
            self.out = VecDeque::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }

    /// Next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.out.pop_front();
        if t.is_none() && self.out.capacity() > 0 {
            self.out = VecDeque::new(); // drained: keep idle peers small
        }
        t
    }

    /// Next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        e
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and the timer it belongs to.
    pub fn next_timer(&self) -> Option<(Time, &'static str)> {
        if !self.active {
            return None;
        }
        let mut best = (self.stabilize_at, "stabilize");
        let mut consider = |t: Time, why: &'static str| {
            if t < best.0 {
                best = (t, why);
            }
        };
        consider(self.fix_fingers_at, "fix_fingers");
        consider(self.check_pred_at, "check_predecessor");
        consider(self.ring_check_at, "ring_check");
        for r in &self.rpcs {
            consider(r.deadline, "rpc");
        }
        if let Some(t) = self.ack_sweep_at {
            consider(t, "hop-ack");
        }
        for l in &self.lookups {
            consider(l.deadline, "lookup");
        }
        Some(best)
    }

    // ---- read-only accessors ----

    /// This node's contact.
    pub fn contact(&self) -> Contact {
        self.me
    }

    /// This node's Node-ID.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// Is the node part of a ring (created or joined, not left)?
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// First successor, if any other peer is known.
    pub fn successor(&self) -> Option<Contact> {
        self.succs.first()
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> impl ExactSizeIterator<Item = Contact> + '_ {
        self.succs.iter()
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<Contact> {
        self.pred
    }

    /// Distinct finger peers, nearest first.
    pub fn fingers(&self) -> impl Iterator<Item = Contact> + '_ {
        self.fingers.iter()
    }

    /// Records this node holds.
    pub fn records(&self) -> &BTreeMap<NodeId, Vec<u8>> {
        &self.records
    }

    /// Store a record locally (the caller has established that this node owns `key`).
    pub fn put_local(&mut self, key: NodeId, value: Vec<u8>) -> bool {
        self.store_records(vec![Record { key, value }]);
        self.records.contains_key(&key)
    }

    /// Remove a locally stored record; returns it if there was one.
    pub fn remove_local(&mut self, key: NodeId) -> Option<Vec<u8>> {
        self.records.remove(&key)
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &ChordConfig {
        &self.cfg
    }

    /// Does this node own `key` by its own view (key in (predecessor, me])?
    pub fn owns(&self, key: NodeId) -> bool {
        match self.pred {
            Some(p) => self.cfg.space.in_half_open(key, p.id, self.me.id),
            None => self.succs.is_empty(),
        }
    }

    /// The best next hop toward `key` and whether that hop is the owner.
    pub fn next_hop(&self, key: NodeId) -> Option<(Contact, bool)> {
        self.next_hop_avoiding(key, |_| false)
    }

    /// The best next hop toward `key` that `avoid` does not rule out (trust-aware routing),
    /// and whether that hop is the owner. When the owner is in the successor list the
    /// message goes straight to it; otherwise to the farthest acceptable known peer that
    /// precedes the key (with [`ChordConfig::successor_shortcut`]; classic Chord otherwise,
    /// whose mean path is ½·log2 N). Avoided peers are used only when nothing else is known.
    pub fn next_hop_avoiding(
        &self,
        key: NodeId,
        avoid: impl Fn(NodeId) -> bool,
    ) -> Option<(Contact, bool)> {
        let space = self.cfg.space;
        let succ = self.successor()?;
        if space.in_half_open(key, self.me.id, succ.id) {
            return Some((succ, true));
        }
        if self.cfg.successor_shortcut {
            let mut prev = succ.id;
            for s in self.succs.ids().iter().skip(1) {
                if space.in_half_open(key, prev, *s) {
                    return Some((self.succs.contact(*s), true));
                }
                prev = *s;
            }
        }
        let span = self.cfg.span();
        let kd = span.distance(self.me.id, key);
        let mut best: Option<(u128, Contact)> = self
            .fingers
            .preceding(span, self.me.id, kd)
            .find(|(_, c)| !avoid(c.id));
        for s in self.succs.ids() {
            let d = span.distance(self.me.id, *s);
            if d > 0 && d < kd && !avoid(*s) && best.is_none_or(|(bd, _)| d > bd) {
                best = Some((d, self.succs.contact(*s)));
            }
        }
        Some((best.map(|(_, c)| c).unwrap_or(succ), false))
    }

    /// Read a word from each cache line of this node that handling the input reads (an
    /// answer, or anything else; see the layout on the type), without following any of its
    /// lists to the heap, and fold them together. A
    /// driver stepping many nodes in turn (the simulator, 10^5 peers and more) calls it for
    /// the nodes whose events come up a little later, then [`touch_lists`](Self::touch_lists)
    /// for those coming up next: the lists' addresses are then in cache, so the loads of
    /// each round do not depend on one another and their cache misses overlap instead of
    /// coming one after another while each event is handled. Changes nothing.
    pub fn touch_fields(&self, answer_only: bool) -> u64 {
        // One word from each cache line that the input reads (see the layout on the type).
        let answer = self.rpcs.len() as u64
            ^ self.ring_check_at.0
            ^ self.out.len() as u64
            ^ self.pred.map_or(0, |p| p.id.0 as u64)
            ^ self.next_token;
        if answer_only {
            return answer;
        }
        answer ^ self.me.id.0 as u64 ^ self.succs.touch_fields() ^ self.fingers.touch_fields()
    }

    /// The heap behind this node's lists (see [`touch_fields`](Self::touch_fields)): the
    /// requests, hops and lookups in flight; and unless `answer_only`, the successor list and
    /// the fingers, which a message that only settles what the node waits for (a hop
    /// acknowledgement, a pong, a lookup's answer, a routed message on its last hop) does
    /// not read: loading them would only keep the loads that matter waiting. Changes
    /// nothing.
    pub fn touch_lists(&self, answer_only: bool) -> u64 {
        let mut x = 0;
        for r in &self.rpcs {
            x ^= r.deadline.0;
        }
        for f in &self.forwards {
            x ^= f.deadline.0 ^ f.token;
        }
        for l in &self.lookups {
            x ^= l.deadline.0;
        }
        if !answer_only {
            x ^= self.succs.touch() ^ self.fingers.touch();
        }
        x
    }

    /// Bytes of routing state held by this node (struct plus heap), for memory reports.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.succs.heap_bytes()
            + self.fingers.heap_bytes()
            + self.rpcs.capacity() * std::mem::size_of::<Rpc>()
            + self.forwards.capacity() * std::mem::size_of::<Forward>()
            + self.lookups.capacity() * std::mem::size_of::<Lookup>()
            + self.out.capacity() * std::mem::size_of::<Transmit>()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self
                .records
                .values()
                .map(|v| v.capacity() + 48)
                .sum::<usize>()
    }

    // ---- internals ----

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        t
    }

    fn send(&mut self, to: Contact, msg: Message) {
        self.out.push_back(Transmit { to, msg });
    }

    fn jitter(&mut self, base: Duration) -> Duration {
        let f: f64 = self.rng.random_range(0.75..1.25);
        base.mul_f64(f)
    }

    fn schedule_all(&mut self, now: Time) {
        self.stabilize_backoff = 0;
        self.fingers_backoff = 0;
        self.ring_check_backoff = 0;
        self.stabilize_at = now + self.jitter(self.cfg.stabilize_every);
        self.fix_fingers_at = now + self.jitter(self.cfg.fix_fingers_every);
        self.check_pred_at = now + self.jitter(self.cfg.check_predecessor_every);
        self.ring_check_at = now + self.jitter(self.cfg.ring_check_every);
    }

    fn first_finger_index(&self) -> u32 {
        match self.successor() {
            Some(s) => {
                let span = self.cfg.span();
                let d = span.distance(self.me.id, s.id);
                (128 - d.leading_zeros()).min(span.bits().saturating_sub(1))
            }
            None => 0,
        }
    }

    fn start_lookup(&mut self, now: Time, id: u64, key: NodeId, purpose: Purpose) {
        push_one(
            &mut self.lookups,
            Lookup {
                id,
                key,
                purpose,
                started: now,
                deadline: now + self.cfg.lookup_timeout,
                attempts: 1,
                via: None,
            },
        );
        self.issue_route(now, id, key);
    }

    fn issue_route(&mut self, now: Time, lookup: u64, key: NodeId) {
        let route = self.new_route(lookup, key, Vec::new());
        self.route_step(now, route);
    }

    /// A fresh Route message of ours for `lookup` of `key`, with a new token, having
    /// passed `path` so far.
    fn new_route(&mut self, lookup: u64, key: NodeId, path: Vec<NodeId>) -> Route {
        Route {
            lookup,
            origin: self.me,
            key,
            token: self.token(),
            last_hop: false,
            path,
        }
    }

    fn send_join_request(&mut self, now: Time, lookup: u64, bootstrap: Contact) {
        // Ask for the owner of me + 1: our successor-to-be, even if peers still list us from
        // an earlier membership.
        let key = self.cfg.space.add(self.me.id, 1);
        self.send_route_via(now, lookup, key, bootstrap);
    }

    /// Joining and not yet placed: we must not answer lookups for keys we do not own.
    fn is_joining(&self) -> bool {
        self.succs.is_empty() && self.lookups.iter().any(|l| l.purpose == Purpose::Join)
    }

    /// Route a lookup that starts at another peer (we have no usable routing state for it).
    fn send_route_via(&mut self, now: Time, lookup: u64, key: NodeId, via: Contact) {
        let route = self.new_route(lookup, key, vec![self.me.id]);
        self.forward(now, via, route);
    }

    /// One routing step at this node: answer if we own the key, else pass it on.
    fn route_step(&mut self, now: Time, mut route: Route) {
        if route.path.len() >= self.cfg.max_path {
            return;
        }
        route.path.push(self.me.id);
        let owner_here = route.last_hop
            || (route.origin.id == self.me.id && route.path.len() == 1 && self.owns(route.key));
        let next = if owner_here {
            None
        } else {
            self.next_hop(route.key)
        };
        match next {
            None => {
                let reply = RouteReply {
                    lookup: route.lookup,
                    key: route.key,
                    owner: self.me,
                    path: route.path,
                };
                if route.origin.id == self.me.id {
                    let me = self.me;
                    self.on_reply(now, me, reply);
                } else {
                    self.send(route.origin, Message::RouteReply(reply));
                }
            }
            Some((hop, last)) => {
                route.last_hop = last;
                route.token = self.token();
                self.forward(now, hop, route);
            }
        }
    }

    fn forward(&mut self, now: Time, next: Contact, route: Route) {
        if self.forwards.len() >= self.cfg.max_pending_forwards {
            return;
        }
        let deadline = now + self.cfg.rpc_timeout;
        push_one(
            &mut self.forwards,
            Forward {
                token: route.token,
                next,
                deadline,
                route: route.clone(),
                tries: 0,
                give_up: now + self.cfg.rpc_timeout * RESEND_WINDOW,
            },
        );
        if self.ack_sweep_at.is_none() {
            self.ack_sweep_at = Some(deadline);
        }
        self.send(next, Message::Route(route));
    }

    fn on_reply(&mut self, now: Time, _from: Contact, reply: RouteReply) {
        let Some(pos) = self.lookups.iter().position(|l| l.id == reply.lookup) else {
            return;
        };
        if self.lookups[pos].key != reply.key {
            return;
        }
        let l = self.lookups.swap_remove(pos);
        match l.purpose {
            Purpose::User => self.events.push_back(Event::LookupDone {
                lookup: l.id,
                key: l.key,
                owner: reply.owner,
                path: reply.path,
                latency: now - l.started,
                attempts: l.attempts,
            }),
            Purpose::Join => {
                if reply.owner.id == self.me.id {
                    self.events.push_back(Event::JoinFailed {
                        reason: "Node-ID already present on the ring",
                    });
                    self.active = false;
                    return;
                }
                self.succs = Contacts::from_contacts([reply.owner]);
                self.events.push_back(Event::Joined {
                    successor: reply.owner.id,
                });
                self.stabilize_at = now;
                self.fix_fingers_at = now;
            }
            Purpose::RingCheck => {
                self.ring_check_missed = false;
                let o = reply.owner;
                if o.id == self.me.id {
                    // The ring answers our own ID with us: we are on it. The next check
                    // can wait longer, and as long as stabilize already waits when the
                    // neighbourhood is that quiet (a settled ring need not walk the
                    // doublings one check at a time).
                    if self.cfg.ring_check_max.is_some() {
                        self.ring_check_backoff = self
                            .ring_check_backoff
                            .saturating_add(1)
                            .max(self.stabilize_backoff)
                            .min(MAX_BACKOFF);
                    }
                    return;
                }
                // The bootstrap peer's ring does not know us: we were cut off from it (or
                // our predecessor there has not heard of us yet). `o` is the peer that
                // follows our ID on it.
                let closer = match self.successor() {
                    None => true,
                    Some(s) => self.cfg.space.in_open(o.id, self.me.id, s.id),
                };
                if closer {
                    self.neighbourhood_changed(now);
                    self.succs.insert(0, o);
                    self.succs.truncate(self.cfg.successors);
                } else {
                    // Our successor is nearer on our side of the cut; `o` may still take us
                    // for its predecessor, which pulls its old predecessor (and so that whole
                    // ring) towards us. Only the last peer of a cut-off arc finds a closer
                    // successor, and it may have no bootstrap peer across the cut (a peer
                    // behind NAT joins through a relay beside it): every peer of the arc
                    // reaching across is what heals the cut.
                    self.ring_check_soon(now);
                }
                self.send(o, Message::Notify);
            }
            Purpose::FixFinger(i) => {
                let (span, me) = (self.cfg.span(), self.me.id);
                let d = span.distance(me, reply.owner.id);
                let cap = span.bits() as usize + self.cfg.successors;
                if self.fingers.update(span, me, i, reply.owner, d, cap) {
                    self.fingers_changed(now);
                } else if self.cfg.fix_fingers_max.is_some() {
                    // A refresh that found the finger where it was: the table is settling.
                    self.fingers_backoff = self.fingers_backoff.saturating_add(1).min(MAX_BACKOFF);
                }
                self.advance_finger(i, d);
            }
        }
    }

    /// Finger `i` turned out to be at distance `d`: the next refresh is for the first finger
    /// beyond it (the ones in between are the same peer), or starts over.
    fn advance_finger(&mut self, i: u32, d: u128) {
        let next = if d == 0 { 0 } else { 128 - d.leading_zeros() };
        self.next_finger = if next >= self.cfg.span().bits() || next <= i {
            self.first_finger_index()
        } else {
            next
        };
    }

    /// Finger `i`'s answer to a [`RpcKind::FingerCheck`]: if its predecessor lies between
    /// the finger's start and the finger, someone joined there and a lookup finds the new
    /// finger; otherwise the finger stands and the refresh backs off.
    fn on_finger_check(&mut self, now: Time, from: Contact, i: u32, pred: Option<Contact>) {
        let space = self.cfg.span();
        let start = space.distance(self.me.id, space.finger_start(self.me.id, i));
        let d = space.distance(self.me.id, from.id);
        let stale = pred.is_some_and(|p| {
            let dp = space.distance(self.me.id, p.id);
            p.id != self.me.id && dp >= start && dp < d
        });
        if stale {
            self.fingers_changed(now);
            if self.lookups.len() < self.cfg.max_lookups {
                let id = self.token();
                let key = space.finger_start(self.me.id, i);
                self.start_lookup(now, id, key, Purpose::FixFinger(i));
            }
        } else {
            self.fingers.drop_extras(space, self.me.id, i, d);
            self.fingers_backoff = self.fingers_backoff.saturating_add(1).min(MAX_BACKOFF);
            self.advance_finger(i, d);
        }
    }

    fn stabilize(&mut self, now: Time) {
        if self.rpcs.iter().any(|r| r.kind == RpcKind::Stabilize) {
            return;
        }
        let Some(succ) = self.successor() else {
            return;
        };
        self.start_rpc(now, succ, RpcKind::Stabilize);
    }

    /// Send a request to `peer` that must be answered within the RPC timeout, or the peer
    /// is declared failed.
    fn start_rpc(&mut self, now: Time, peer: Contact, kind: RpcKind) {
        let token = self.token();
        push_one(
            &mut self.rpcs,
            Rpc {
                token,
                to: peer,
                deadline: now + self.cfg.rpc_timeout,
                kind,
                give_up: now + self.cfg.rpc_timeout * RESEND_WINDOW,
            },
        );
        self.send(peer, kind.request(token));
    }

    fn on_neighbours(
        &mut self,
        now: Time,
        from: Contact,
        token: u64,
        pred: Option<Contact>,
        succs: Vec<Contact>,
    ) {
        let Some(pos) = self.rpcs.iter().position(|r| {
            r.token == token
                && r.to.id == from.id
                && matches!(
                    r.kind,
                    RpcKind::Stabilize | RpcKind::Extend | RpcKind::FingerCheck(_)
                )
        }) else {
            return;
        };
        match self.rpcs.swap_remove(pos).kind {
            RpcKind::Extend => {
                self.on_extension(now, from, succs);
                return;
            }
            RpcKind::FingerCheck(i) => {
                self.on_finger_check(now, from, i, pred);
                return;
            }
            _ => {}
        }
        // The successor already takes us for its predecessor: a notify would change nothing.
        let known = pred.is_some_and(|p| p.id == self.me.id);
        let space = self.cfg.space;
        let mut list = Vec::with_capacity(self.cfg.successors);
        if let Some(x) = pred
            && x.id != self.me.id
            && space.in_open(x.id, self.me.id, from.id)
        {
            list.push(x);
        }
        list.push(from);
        // The successor's list reaches back to us: the ring is no longer than it, and
        // there is nothing beyond to extend into.
        let wrapped = succs.iter().any(|s| s.id == self.me.id);
        for s in succs.into_iter().take(self.cfg.successors) {
            if list.len() >= self.cfg.successors || s.id == self.me.id {
                break;
            }
            if !list.iter().any(|c| c.id == s.id) {
                list.push(s);
            }
        }
        // The successor's list ends where ours is meant to go on: keep what we had beyond
        // it, as long as it follows on in ring order, until the extension confirms it.
        let provided = list.last().copied();
        let short = self.cfg.extend_successors && !wrapped && list.len() < self.cfg.successors;
        let keep_from = provided.and_then(|last| self.succs.position(last.id));
        if short && let Some(i) = keep_from {
            for c in self.succs.iter().skip(i + 1) {
                if list.len() >= self.cfg.successors || list.iter().any(|l| l.id == c.id) {
                    break;
                }
                list.push(c);
            }
        }
        let same = list.len() == self.succs.len()
            && list.iter().zip(self.succs.ids()).all(|(a, b)| a.id == *b);
        self.succs = Contacts::from_contacts(list);
        if short && let Some(last) = provided {
            self.extend_successors(now, last);
        }
        if same {
            if self.cfg.stabilize_max.is_some() {
                self.stabilize_backoff = self.stabilize_backoff.saturating_add(1).min(MAX_BACKOFF);
            }
        } else {
            self.neighbourhood_changed(now);
        }
        if let Some(first) = self.successor()
            && !(known && first.id == from.id)
        {
            self.send(first, Message::Notify);
        }
        // The successor named a peer between us as its predecessor, or told us of a change
        // while this answer was on its way: ask again at once rather than a stabilize
        // interval later. A peer placed far beyond its true successor (its join lookup
        // crossed peers that had not yet learnt of the latest newcomers) walks back to it
        // one peer per round trip instead of one per interval, seconds instead of tens of
        // seconds while hundreds join.
        let closer = self.successor().is_some_and(|s| s.id != from.id);
        if closer || std::mem::take(&mut self.stabilize_again) {
            self.stabilize(now);
        }
    }

    /// A successor list that the successor's answer left shorter than configured: ask
    /// `from`, the last peer that answer named, for its successors (one request at a time).
    /// A peer whose neighbours keep lists as long as its own never needs this.
    fn extend_successors(&mut self, now: Time, from: Contact) {
        if from.id == self.me.id || self.rpcs.iter().any(|r| r.kind == RpcKind::Extend) {
            return;
        }
        self.start_rpc(now, from, RpcKind::Extend);
    }

    /// The answer to an extension request: `from`'s successors replace what our list held
    /// after `from`, in ring order, up to the configured length, and the next request goes
    /// out if the list is still short and this answer added to it.
    fn on_extension(&mut self, now: Time, from: Contact, succs: Vec<Contact>) {
        let Some(at) = self.succs.position(from.id) else {
            return;
        };
        let space = self.cfg.space;
        self.succs.truncate(at + 1);
        let mut last = from.id;
        for s in succs {
            if self.succs.len() >= self.cfg.successors || s.id == self.me.id {
                break;
            }
            // Only peers further on: a lying or stale answer cannot fold the list back.
            if !space.in_open(s.id, last, self.me.id) || self.succs.contains(s.id) {
                break;
            }
            self.succs.push(s);
            last = s.id;
        }
        if self.succs.len() < self.cfg.successors
            && self.succs.len() > at + 1
            && let Some(next) = self.succs.last()
        {
            self.extend_successors(now, next);
        }
    }

    /// Something changed near this peer (successors, predecessor, a failed or leaving
    /// peer): maintenance runs at its base pace again, starting now-ish rather than after a
    /// backed-off interval.
    fn neighbourhood_changed(&mut self, now: Time) {
        if self.stabilize_backoff > 0 {
            self.stabilize_backoff = 0;
            let soon = now + self.cfg.stabilize_every;
            self.stabilize_at = self.stabilize_at.min(soon);
        }
        // A lost neighbour may be the edge of a partition: ask the ring soon.
        self.ring_check_soon(now);
        self.fingers_changed(now);
    }

    /// The ring check runs at its base pace again, the next one within one base interval.
    fn ring_check_soon(&mut self, now: Time) {
        if self.ring_check_backoff > 0 {
            self.ring_check_backoff = 0;
            let soon = now + self.cfg.ring_check_every;
            self.ring_check_at = self.ring_check_at.min(soon);
        }
    }

    /// A finger changed or failed: the finger refresh runs at its base pace again.
    fn fingers_changed(&mut self, now: Time) {
        if self.fingers_backoff > 0 {
            self.fingers_backoff = 0;
            let soon = now + self.cfg.fix_fingers_every;
            self.fix_fingers_at = self.fix_fingers_at.min(soon);
        }
    }

    fn on_notify(&mut self, now: Time, from: Contact) {
        if from.id == self.me.id {
            return;
        }
        let space = self.cfg.space;
        let adopt = match self.pred {
            None => true,
            Some(p) => p.id == from.id || space.in_open(from.id, p.id, self.me.id),
        };
        if !adopt {
            return;
        }
        let old = self.pred.replace(from);
        self.pred_heard = now;
        if self.succs.is_empty() {
            self.succs.push(from);
        }
        if old.map(|o| o.id) == Some(from.id) {
            return;
        }
        self.neighbourhood_changed(now);
        // The old predecessor still takes us for its successor: tell it now rather than
        // letting it find out at its next stabilize (seconds away once backed off), so the
        // ring passes through the newcomer at once.
        if let Some(o) = old
            && o.id != self.me.id
            && o.id != from.id
        {
            self.send(o, Message::NeighbourChanged);
        }
        // Keys in (old predecessor, new predecessor] now belong to the new predecessor.
        let me = self.me.id;
        let moving: Vec<NodeId> = self
            .records
            .keys()
            .filter(|k| !space.in_half_open(**k, from.id, me))
            .copied()
            .collect();
        if !moving.is_empty() {
            let records = moving
                .into_iter()
                .filter_map(|key| self.records.remove(&key).map(|value| Record { key, value }))
                .collect();
            self.send(from, Message::Records { records });
        }
    }

    fn check_predecessor(&mut self, now: Time) {
        let Some(pred) = self.pred else { return };
        if self
            .rpcs
            .iter()
            .any(|r| r.kind == RpcKind::CheckPredecessor)
        {
            return;
        }
        self.start_rpc(now, pred, RpcKind::CheckPredecessor);
    }

    fn fix_next_finger(&mut self, now: Time) {
        if self.successor().is_none() {
            return;
        }
        let pending = self
            .lookups
            .iter()
            .any(|l| matches!(l.purpose, Purpose::FixFinger(_)));
        if pending || self.lookups.len() >= self.cfg.max_lookups {
            return;
        }
        let span = self.cfg.span();
        if self.next_finger >= span.bits() {
            self.next_finger = self.first_finger_index();
        }
        let i = self.next_finger;
        let key = span.finger_start(self.me.id, i);
        // While the fingers are quiet, ask the finger itself whether it still is one rather
        // than routing a lookup for it.
        if self.cfg.fix_fingers_max.is_some() && self.fingers_backoff > 0 {
            let start = span.distance(self.me.id, key);
            if let Some(f) = self.fingers.at_or_after(span, self.me.id, start) {
                if !self
                    .rpcs
                    .iter()
                    .any(|r| matches!(r.kind, RpcKind::FingerCheck(_)))
                {
                    self.start_rpc(now, f, RpcKind::FingerCheck(i));
                }
                return;
            }
        }
        let id = self.token();
        self.start_lookup(now, id, key, Purpose::FixFinger(i));
    }

    fn on_leaving(&mut self, now: Time, from: Contact, pred: Option<Contact>, succs: Vec<Contact>) {
        self.fingers.remove(from.id);
        self.neighbourhood_changed(now);
        if self.successor().map(|s| s.id) == Some(from.id) {
            let mut list: Vec<Contact> = Vec::with_capacity(self.cfg.successors);
            for s in succs {
                if s.id == self.me.id || list.len() >= self.cfg.successors {
                    break;
                }
                if s.id != from.id && !list.iter().any(|c| c.id == s.id) {
                    list.push(s);
                }
            }
            self.succs = Contacts::from_contacts(list);
            if let Some(first) = self.successor() {
                self.send(first, Message::Notify);
            }
            self.stabilize_at = now;
        } else {
            self.succs.retain(|s| s != from.id);
        }
        if self.pred.map(|p| p.id) == Some(from.id) {
            self.pred = pred.filter(|p| p.id != self.me.id && p.id != from.id);
        }
        self.rpcs.retain(|r| r.to.id != from.id);
    }

    fn store_records(&mut self, records: Vec<Record>) {
        for r in records {
            if r.value.len() > self.cfg.max_record_len {
                continue;
            }
            if self.records.len() >= self.cfg.max_records && !self.records.contains_key(&r.key) {
                continue;
            }
            self.records.insert(r.key, r.value);
        }
    }

    /// Forget a peer that stopped answering.
    fn fail_peer(&mut self, now: Time, peer: NodeId) {
        if peer == self.me.id {
            return;
        }
        let was_succ = self.successor().map(|s| s.id) == Some(peer);
        // Bootstrap peers are kept even when they fail to answer: they are the configured
        // way back into the ring, and the ring check needs one on the far side of a
        // partition once it heals (dropping them left the two halves apart for good).
        let mut known = self.fingers.remove(peer);
        let before = self.succs.len();
        self.succs.retain(|s| s != peer);
        known |= before != self.succs.len();
        if self.pred.map(|p| p.id) == Some(peer) {
            self.pred = None;
            known = true;
        }
        if self.succs.is_empty() {
            // Fall back on the nearest finger, then the predecessor; with neither, we are cut
            // off from the ring and join it again through the bootstrap peer.
            if let Some(f) = self.fingers.iter().next() {
                self.succs.push(f);
            } else if let Some(p) = self.pred {
                self.succs.push(p);
            } else if let Some(b) = self.bootstraps.iter().find(|b| b.id != peer).copied() {
                self.start_join(now, b);
            } else if !self.lookups.iter().any(|l| l.purpose == Purpose::Join) {
                // Cut off with nobody left to ask: the driver must find new bootstrap peers.
                self.active = false;
                self.events.push_back(Event::JoinFailed {
                    reason: "lost every successor and knows no bootstrap peer",
                });
            }
        }
        if was_succ {
            self.stabilize_at = now;
        }
        if known {
            self.neighbourhood_changed(now);
            self.events.push_back(Event::PeerFailed { peer });
        }
    }

    fn expire_rpcs(&mut self, now: Time) {
        let mut dead = Vec::new();
        self.rpcs.retain(|r| {
            if r.deadline <= now {
                dead.push(r.to.id);
                false
            } else {
                true
            }
        });
        for peer in dead {
            self.fail_peer(now, peer);
        }
    }

    fn expire_forwards(&mut self, now: Time) {
        if self.ack_sweep_at.is_none_or(|t| t > now) {
            return;
        }
        self.ack_sweep_at = None;
        self.rearm_ack_sweep(now);
        let due: Vec<Forward> = self
            .forwards
            .extract_if(.., |f| f.deadline <= now)
            .collect();
        for f in due {
            self.fail_peer(now, f.next.id);
            if f.tries >= self.cfg.forward_retries {
                continue;
            }
            let mut route = f.route;
            // Re-decide from this node: pop ourselves off the path, we are re-routing.
            if route.path.last() == Some(&self.me.id) {
                route.path.pop();
            }
            let lookup = route.lookup;
            let joining = route.origin.id == self.me.id
                && self.lookups.iter().any(|l| {
                    l.id == lookup && matches!(l.purpose, Purpose::Join | Purpose::RingCheck)
                });
            if joining {
                continue; // the join lookup retries through its own timeout
            }
            route.last_hop = false;
            let before = self.forwards.len();
            self.route_step(now, route);
            if let Some(nf) = self.forwards.get_mut(before) {
                nf.tries = f.tries + 1;
            }
        }
    }

    /// An acknowledgement may have settled every hop the armed sweep was for: the sweep then
    /// moves to where it would re-arm itself on finding nothing due ([`Self::rearm_ack_sweep`]:
    /// the earliest deadline still pending, but half an RPC timeout on at least), without
    /// waking for nothing first. A busy peer always has some hop in flight, so its sweep
    /// never went away and it woke every RPC timeout or so for nothing (about one wake-up
    /// per lookup in a simulation; a timer a phone pays for in battery). A hop that goes
    /// unacknowledged is still failed within half an RPC timeout of its deadline.
    fn skip_idle_sweep(&mut self) {
        if let (Some(at), Some(earliest)) = (self.ack_sweep_at, self.earliest_forward_deadline())
            && earliest > at
        {
            self.rearm_ack_sweep(at);
        }
    }

    /// Next sweep: the earliest pending deadline, but not sooner than half an RPC timeout.
    fn rearm_ack_sweep(&mut self, now: Time) {
        if let Some(earliest) = self.earliest_forward_deadline() {
            let floor = now + self.cfg.rpc_timeout / 2;
            self.ack_sweep_at = Some(earliest.max(floor));
        }
    }

    /// When the first hop still awaiting its acknowledgement times out.
    fn earliest_forward_deadline(&self) -> Option<Time> {
        self.forwards.iter().map(|f| f.deadline).min()
    }

    fn expire_lookups(&mut self, now: Time) {
        let due: Vec<Lookup> = self.lookups.extract_if(.., |l| l.deadline <= now).collect();
        for mut l in due {
            if l.attempts > self.cfg.lookup_retries {
                match l.purpose {
                    Purpose::User => self.events.push_back(Event::LookupFailed {
                        lookup: l.id,
                        key: l.key,
                        reason: LookupFailure::TimedOut,
                    }),
                    Purpose::Join => {
                        self.active = false;
                        self.events.push_back(Event::JoinFailed {
                            reason: "no answer from the bootstrap peer",
                        });
                        return;
                    }
                    Purpose::FixFinger(_) => {}
                    Purpose::RingCheck => {
                        // Unanswered: we may be cut off from the rest of the ring. Keep
                        // checking at the base pace (through the next bootstrap peer) so
                        // the partition heals soon after the cut does.
                        self.ring_check_missed = true;
                        self.ring_check_soon(now);
                    }
                }
                continue;
            }
            l.attempts += 1;
            l.deadline = now + self.cfg.lookup_timeout;
            let (id, key, via) = (l.id, l.key, l.via);
            let purpose = l.purpose;
            push_one(&mut self.lookups, l);
            match (purpose, via) {
                (Purpose::Join, Some(b)) => {
                    // Try the next bootstrap peer on each attempt.
                    let next = self
                        .bootstraps
                        .iter()
                        .position(|c| c.id == b.id)
                        .map(|i| self.bootstraps[(i + 1) % self.bootstraps.len()])
                        .unwrap_or(b);
                    if let Some(l) = self.lookups.last_mut() {
                        l.via = Some(next);
                    }
                    self.send_join_request(now, id, next)
                }
                _ => self.issue_route(now, id, key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdSpace;

    /// Peer B (30000) on a two-peer ring with A (1000), which this harness plays: it
    /// answers B's liveness and neighbour requests and hands back the routed messages.
    struct Harness {
        b: ChordNode,
        a: Contact,
    }

    impl Harness {
        fn new() -> Self {
            let cfg = Arc::new(ChordConfig::new(IdSpace::new(16).unwrap_or_else(|e| {
                panic!("16-bit space: {e}");
            })));
            let a = Contact::new(NodeId(1000), ([127, 0, 0, 1], 1).into());
            let b = Contact::new(NodeId(30000), ([127, 0, 0, 1], 2).into());
            let b = ChordNode::converged(cfg, b, [7; 32], Time::ZERO, Some(a), vec![a], [a]);
            Harness { b, a }
        }

        /// A harness whose B has run its first timers at 10 ms, and that time.
        fn stepped() -> (Self, Time) {
            let mut h = Harness::new();
            let t0 = Time::from_millis(10);
            h.step(t0);
            (h, t0)
        }

        /// A stepped harness whose B has routed a lookup to A, events and output drained:
        /// what follows is what B does about A's links.
        fn lookup_pending() -> (Self, Time) {
            let (mut h, t0) = Harness::stepped();
            events(&mut h.b);
            h.b.lookup(t0, NodeId(500));
            sent(&mut h.b);
            (h, t0)
        }

        /// Run B's timers at `now`; answer as A; return the routed messages B sent to A.
        fn step(&mut self, now: Time) -> Vec<Message> {
            self.b.handle_timeout(now);
            let mut routed = Vec::new();
            while let Some(t) = self.b.poll_transmit() {
                assert_eq!(t.to.id, self.a.id, "B knows only A");
                let answer = match t.msg {
                    Message::GetNeighbours { token } => Message::Neighbours {
                        token,
                        pred: Some(self.b.contact()),
                        succs: vec![self.b.contact()],
                    },
                    Message::Ping { token } => Message::Pong { token },
                    Message::Route(_) => {
                        routed.push(t.msg);
                        continue;
                    }
                    _ => continue,
                };
                self.b.handle_message(now, self.a, answer);
            }
            routed
        }

        /// B looks up a key A owns; the Route it sends A.
        fn lookup_via_a(&mut self, now: Time) -> Message {
            self.b.lookup(now, NodeId(500));
            let mut routed = self.step(now);
            assert_eq!(routed.len(), 1, "one Route to A: {routed:?}");
            routed.remove(0)
        }

        /// Step through `secs` seconds of B's timers.
        fn run(&mut self, from: Time, secs: u64) {
            for ms in (0..secs * 1000).step_by(50) {
                self.step(from + Duration::from_millis(ms));
            }
        }
    }

    #[test]
    fn a_hop_that_never_acknowledges_is_declared_failed() {
        let (mut h, t0) = Harness::stepped();
        h.lookup_via_a(t0);
        h.run(t0, 2);
        assert!(
            h.b.successors().all(|s| s.id != h.a.id),
            "A never acknowledged the Route and is still B's successor"
        );
    }

    #[test]
    fn an_acknowledged_hop_leaves_no_sweep_to_wake_for() {
        let (mut h, t0) = Harness::stepped();
        let Message::Route(route) = h.lookup_via_a(t0) else {
            panic!("B sent A something other than a Route");
        };
        assert_eq!(h.b.next_timer().map(|(_, why)| why), Some("hop-ack"));
        let t1 = t0 + Duration::from_millis(40);
        h.b.handle_message(t1, h.a, Message::RouteAck { token: route.token });
        let next = h.b.next_timer();
        assert!(
            next.is_some_and(|(at, why)| why != "hop-ack" && at > t0 + h.b.cfg.rpc_timeout),
            "nothing awaits an acknowledgement, yet B wants waking at {next:?}"
        );
    }

    /// The layout the type documents: what an answer reads lies in the first four cache
    /// lines, what routing reads in the first seven, and [`ChordNode::touch_fields`] reads
    /// those lines.
    #[test]
    fn hot_fields_lie_in_the_cache_lines_the_layout_names() {
        use std::mem::{offset_of, size_of};
        const LINE: usize = 64;
        let end = |offset: usize, size: usize| (offset + size).div_ceil(LINE);
        assert_eq!(std::mem::align_of::<ChordNode>(), LINE);
        let answer = [
            end(offset_of!(ChordNode, rpcs), size_of::<Vec<Rpc>>()),
            end(offset_of!(ChordNode, forwards), size_of::<Vec<Forward>>()),
            end(offset_of!(ChordNode, lookups), size_of::<Vec<Lookup>>()),
            end(
                offset_of!(ChordNode, ack_sweep_at),
                size_of::<Option<Time>>(),
            ),
            end(offset_of!(ChordNode, ring_check_at), size_of::<Time>()),
            end(offset_of!(ChordNode, ring_check_backoff), 1),
            end(offset_of!(ChordNode, events), size_of::<VecDeque<Event>>()),
            end(offset_of!(ChordNode, pred), size_of::<Option<Contact>>()),
            end(offset_of!(ChordNode, next_token), size_of::<u64>()),
        ];
        assert!(answer.iter().all(|&l| l <= 4), "{answer:?}");
        let routing = [
            end(offset_of!(ChordNode, me), size_of::<Contact>()),
            end(offset_of!(ChordNode, next_finger), size_of::<u32>()),
            end(offset_of!(ChordNode, succs), size_of::<Contacts>()),
            end(offset_of!(ChordNode, fingers), size_of::<Fingers>()),
        ];
        assert!(routing.iter().all(|&l| l <= 7), "{routing:?}");
        // touch_fields reads one word of each of those lines.
        let touched = [
            offset_of!(ChordNode, rpcs),
            offset_of!(ChordNode, ring_check_at),
            offset_of!(ChordNode, out),
            offset_of!(ChordNode, pred),
            offset_of!(ChordNode, me),
            offset_of!(ChordNode, succs),
            offset_of!(ChordNode, fingers),
        ]
        .map(|o| o / LINE);
        assert_eq!(touched, [0, 1, 2, 3, 4, 5, 5], "{touched:?}");
        assert_eq!(size_of::<ChordNode>(), 8 * LINE);
    }

    /// Two hops in flight, the first acknowledged: the sweep armed for the first moves to
    /// where it would have re-armed itself instead of waking for nothing, and the
    /// unacknowledged second hop is failed when that sweep comes.
    #[test]
    fn a_sweep_that_would_find_nothing_due_is_moved_on_without_waking() {
        let (mut h, t0) = Harness::stepped();
        let Message::Route(first) = h.lookup_via_a(t0) else {
            panic!("B sent A something other than a Route");
        };
        let timeout = h.b.cfg.rpc_timeout;
        let t1 = t0 + timeout / 4;
        let Message::Route(second) = h.lookup_via_a(t1) else {
            panic!("B sent A something other than a Route");
        };
        assert_ne!(first.token, second.token);
        assert_eq!(h.b.next_timer(), Some((t0 + timeout, "hop-ack")));
        h.b.handle_message(t1, h.a, Message::RouteAck { token: first.token });
        // The sweep at t0 + timeout would find nothing due and re-arm at the later of the
        // second hop's deadline and half a timeout on: t0 + 1.5 timeouts.
        let moved = t0 + timeout + timeout / 2;
        assert_eq!(h.b.next_timer(), Some((moved, "hop-ack")));
        h.b.handle_timeout(moved);
        assert!(
            events(&mut h.b)
                .iter()
                .any(|e| matches!(e, Event::PeerFailed { peer } if *peer == h.a.id)),
            "the hop A never acknowledged is held against it"
        );
    }

    #[test]
    fn a_route_the_driver_could_not_queue_is_not_held_against_the_next_hop() {
        let (mut h, t0) = Harness::stepped();
        let route = h.lookup_via_a(t0);
        h.b.handle_not_sent(t0, h.a.id, &route);
        h.run(t0, 2);
        assert_eq!(h.b.successor().map(|s| s.id), Some(h.a.id));
    }

    /// Everything B sends at `now`, drained.
    fn sent(b: &mut ChordNode) -> Vec<(NodeId, Message)> {
        std::iter::from_fn(|| b.poll_transmit().map(|t| (t.to.id, t.msg))).collect()
    }

    /// Every event B reported, drained.
    fn events(b: &mut ChordNode) -> Vec<Event> {
        std::iter::from_fn(|| b.poll_event()).collect()
    }

    /// The tokens of the Routes and of the requests in `out`, sorted.
    fn tokens(out: &[(NodeId, Message)]) -> std::collections::BTreeSet<(&'static str, u64)> {
        out.iter()
            .filter_map(|(_, m)| match m {
                Message::Route(r) => Some(("route", r.token)),
                Message::GetNeighbours { token } => Some(("get-neighbours", *token)),
                Message::Ping { token } => Some(("ping", *token)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn what_a_closed_link_lost_is_sent_again_and_the_live_peer_is_kept() {
        let (mut h, t0) = Harness::stepped();
        events(&mut h.b);
        // B routes a lookup to A; the link closes under it (A closed it to make room), and
        // the Route is lost with it.
        h.b.lookup(t0, NodeId(500));
        let first = sent(&mut h.b);
        let route: Vec<_> = tokens(&first).into_iter().collect();
        assert!(matches!(route.as_slice(), [("route", _)]), "{first:?}");
        // B hears the link went down: the Route goes again with its token, and B asks its
        // successor A how things stand. That link closes too, losing both.
        let t1 = t0 + Duration::from_millis(100);
        h.b.handle_link_down(t1, h.a.id, false);
        let second = tokens(&sent(&mut h.b));
        assert!(
            second.contains(&route[0]),
            "the Route is sent again: {second:?}"
        );
        assert!(
            second.iter().any(|(k, _)| *k == "get-neighbours"),
            "{second:?}"
        );
        // Over the third link both arrive and are answered.
        let t2 = t1 + Duration::from_millis(100);
        h.b.handle_link_down(t2, h.a.id, false);
        let third = sent(&mut h.b);
        assert_eq!(tokens(&third), second, "both sent again, same tokens");
        for (_, m) in third {
            let answer = match m {
                Message::Route(r) => Message::RouteAck { token: r.token },
                Message::GetNeighbours { token } => Message::Neighbours {
                    token,
                    pred: Some(h.b.contact()),
                    succs: vec![h.b.contact()],
                },
                _ => continue,
            };
            h.b.handle_message(t2, h.a, answer);
        }
        // Long past every deadline, A, alive all along, is still B's successor.
        h.run(t2, 3);
        assert_eq!(h.b.successor().map(|s| s.id), Some(h.a.id));
        let evs = events(&mut h.b);
        assert!(
            !evs.iter().any(|e| matches!(e, Event::PeerFailed { .. })),
            "{evs:?}"
        );
    }

    #[test]
    fn a_peer_gone_with_its_link_is_failed_as_soon_as_it_refuses_a_new_one() {
        let (mut h, t0) = Harness::lookup_pending();
        // A crashed: its link closes, and the new link for what B sends again is refused.
        let t1 = t0 + Duration::from_millis(100);
        h.b.handle_link_down(t1, h.a.id, false);
        assert!(!sent(&mut h.b).is_empty());
        let t2 = t1 + Duration::from_millis(5);
        h.b.handle_link_down(t2, h.a.id, true);
        assert!(h.b.successors().all(|s| s.id != h.a.id));
        assert!(
            events(&mut h.b).contains(&Event::PeerFailed { peer: h.a.id }),
            "A is failed 105 ms after its link closed, not at an RPC timeout"
        );
    }

    #[test]
    fn a_peer_that_keeps_closing_its_links_under_requests_is_still_failed() {
        let (mut h, t0) = Harness::lookup_pending();
        // Every link to A closes before anything on it is answered.
        let mut t = t0;
        let mut failed_at = None;
        for _ in 0..100 {
            t = t + Duration::from_millis(50);
            h.b.handle_timeout(t);
            if h.b.successors().all(|s| s.id != h.a.id) {
                failed_at = Some(t);
                break;
            }
            h.b.handle_link_down(t, h.a.id, false);
            sent(&mut h.b);
        }
        let rpc = h.b.config().rpc_timeout;
        let failed_at = failed_at.unwrap_or_else(|| panic!("A was never failed"));
        // Closing links postpone it by at most the resend window (plus the ack sweep's half
        // timeout).
        let bound = t0 + rpc * RESEND_WINDOW + rpc / 2;
        assert!(
            failed_at <= bound,
            "failed at {failed_at:?}, after {bound:?}"
        );
        assert!(events(&mut h.b).contains(&Event::PeerFailed { peer: h.a.id }));
    }

    #[test]
    fn a_link_is_kept_while_an_answer_on_it_is_awaited() {
        let h = Harness::new();
        // F (14464) is an extra way forward beyond A in B's table, no finger (no 2^i between
        // A's and its own distance from B): B's routing state alone does not need its link.
        let f = Contact::new(NodeId(14464), ([127, 0, 0, 1], 4).into());
        let p = Contact::new(NodeId(29000), ([127, 0, 0, 1], 5).into());
        let mut b = ChordNode::converged(
            h.b.cfg.clone(),
            h.b.contact(),
            [7; 32],
            Time::ZERO,
            Some(p),
            vec![h.a],
            [h.a, f],
        );
        let t0 = Time::from_millis(10);
        b.handle_timeout(t0);
        sent(&mut b);
        assert!(!b.keeps_link(f.id));
        // A lookup beyond F goes through F: its link is needed until F acknowledges.
        b.lookup(t0, NodeId(20000));
        let out = sent(&mut b);
        let Some((_, Message::Route(route))) = out.iter().find(|(to, _)| *to == f.id) else {
            panic!("the Route goes to F: {out:?}");
        };
        assert!(b.keeps_link(f.id));
        b.handle_message(t0, f, Message::RouteAck { token: route.token });
        assert!(!b.keeps_link(f.id));
    }

    #[test]
    fn a_peer_that_gains_a_predecessor_tells_the_old_one_at_once() {
        let (mut h, t0) = Harness::stepped();
        // N joins between A (1000) and B (30000) and notifies B.
        let n = Contact::new(NodeId(20000), ([127, 0, 0, 1], 3).into());
        h.b.handle_message(t0, n, Message::Notify);
        assert_eq!(h.b.predecessor().map(|p| p.id), Some(n.id));
        let out = sent(&mut h.b);
        assert!(
            out.iter()
                .any(|(to, m)| *to == h.a.id && matches!(m, Message::NeighbourChanged)),
            "A, the old predecessor, is told: {out:?}"
        );
        // The same notify again changes nothing and tells nobody.
        h.b.handle_message(t0, n, Message::Notify);
        assert!(sent(&mut h.b).is_empty());
    }

    #[test]
    fn a_hint_from_the_successor_starts_a_stabilize_and_from_others_nothing() {
        let (mut h, t0) = Harness::stepped();
        let stranger = Contact::new(NodeId(20000), ([127, 0, 0, 1], 3).into());
        h.b.handle_message(t0, stranger, Message::NeighbourChanged);
        assert!(
            sent(&mut h.b).is_empty(),
            "a hint from a non-successor is ignored"
        );
        h.b.handle_message(t0, h.a, Message::NeighbourChanged);
        let out = sent(&mut h.b);
        assert!(
            matches!(out.as_slice(), [(to, Message::GetNeighbours { .. })] if *to == h.a.id),
            "B asks its successor for the neighbourhood: {out:?}"
        );
    }
}
