//! The network itself: peers, links, the virtual clock, capture and behaviours.

use crate::adversary::{Action, Behaviour};
use crate::peer::Peer;
use overlay::{Contact, Message, NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Most inputs handled at one instant before the network gives up: a peer whose deadline
/// never moves past `now` would otherwise spin forever.
const MAX_STEPS_AT_ONE_INSTANT: u32 = 1_000_000;

/// One frame on the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// When it was sent.
    pub sent: Time,
    /// When it arrives (or arrived).
    pub at: Time,
    /// Sender.
    pub from: Contact,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

impl Frame {
    /// The message's kind, as [`Message::name`] spells it.
    pub fn kind(&self) -> &'static str {
        self.msg.name()
    }
}

/// What a one-way link does to frames. The delay is fixed per link, so a link keeps its
/// frames in order, as the TLS links between peers do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// One-way delay.
    pub latency: Duration,
    /// Probability that a frame is lost, 0.0..=1.0.
    pub loss: f64,
}

impl Default for Link {
    /// One millisecond, nothing lost.
    fn default() -> Self {
        Link {
            latency: Duration::from_millis(1),
            loss: 0.0,
        }
    }
}

/// N peers on a deterministic virtual network (the crate doc gives the driving contract).
pub struct Network<P: Peer> {
    peers: BTreeMap<NodeId, P>,
    now: Time,
    rng: Xoshiro256PlusPlus,
    /// Frames on the wire, by (arrival, sequence).
    in_flight: BTreeMap<(Time, u64), Frame>,
    seq: u64,
    default_link: Link,
    links: BTreeMap<(NodeId, NodeId), Link>,
    /// Pairs of sides that cannot reach each other.
    partitions: Vec<(BTreeSet<NodeId>, BTreeSet<NodeId>)>,
    behaviours: BTreeMap<NodeId, Box<dyn Behaviour>>,
    captured: Vec<Frame>,
    events: Vec<(NodeId, P::Event)>,
    lost: u64,
    steps_at_now: u32,
}

impl<P: Peer> Network<P> {
    /// A network of `peers` whose clock starts at `start`; `seed` feeds every random choice.
    pub fn new(peers: impl IntoIterator<Item = P>, start: Time, seed: u64) -> Self {
        Network {
            peers: peers.into_iter().map(|p| (p.contact().id, p)).collect(),
            now: start,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            in_flight: BTreeMap::new(),
            seq: 0,
            default_link: Link::default(),
            links: BTreeMap::new(),
            partitions: Vec::new(),
            behaviours: BTreeMap::new(),
            captured: Vec::new(),
            events: Vec::new(),
            lost: 0,
            steps_at_now: 0,
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The peer `id`. Panics if there is none (a test's own mistake).
    pub fn peer(&self, id: NodeId) -> &P {
        match self.peers.get(&id) {
            Some(p) => p,
            None => panic!("no peer {id:?} on the network"),
        }
    }

    /// All peers, in Node-ID order.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, &P)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    /// Every peer mutably, in Node-ID order, for set-up before the run (nothing is drained:
    /// use [`act`](Self::act) for inputs that make a peer send).
    pub fn peers_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut P)> {
        self.peers.iter_mut().map(|(id, p)| (*id, p))
    }

    /// Give peer `id` an input (`f` gets the peer and the clock), then drain it.
    pub fn act<R>(&mut self, id: NodeId, f: impl FnOnce(&mut P, Time) -> R) -> R {
        let now = self.now;
        let peer = match self.peers.get_mut(&id) {
            Some(p) => p,
            None => panic!("no peer {id:?} on the network"),
        };
        let r = f(peer, now);
        self.drain(id);
        r
    }

    /// Remove peer `id` (it crashed): frames to it are lost from now on.
    pub fn remove(&mut self, id: NodeId) -> Option<P> {
        self.peers.remove(&id)
    }

    /// Every link gets `link` unless [`set_link`](Self::set_link) says otherwise.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// The one-way link from `from` to `to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: Link) {
        self.links.insert((from, to), link);
    }

    /// From now on, no frame passes between a peer of `a` and a peer of `b` (either way).
    pub fn partition(
        &mut self,
        a: impl IntoIterator<Item = NodeId>,
        b: impl IntoIterator<Item = NodeId>,
    ) {
        self.partitions
            .push((a.into_iter().collect(), b.into_iter().collect()));
    }

    /// Remove every partition.
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// Peer `id` sends through `behaviour` from now on.
    pub fn set_behaviour(&mut self, id: NodeId, behaviour: impl Behaviour + 'static) {
        self.behaviours.insert(id, Box::new(behaviour));
    }

    /// Peer `id` is honest again.
    pub fn clear_behaviour(&mut self, id: NodeId) {
        self.behaviours.remove(&id);
    }

    /// Every frame delivered so far, in delivery order.
    pub fn captured(&self) -> &[Frame] {
        &self.captured
    }

    /// Frames sent and not yet delivered, in arrival order.
    pub fn in_flight(&self) -> impl Iterator<Item = &Frame> {
        self.in_flight.values()
    }

    /// Every event the peers reported so far, with the peer that reported it.
    pub fn events(&self) -> &[(NodeId, P::Event)] {
        &self.events
    }

    /// Take the oldest logged event `pick` selects out of the log (what a driver hands on,
    /// such as a peer's SIP messages for its phones).
    pub fn take_event(&mut self, pick: impl Fn(&P::Event) -> bool) -> Option<(NodeId, P::Event)> {
        let at = self.events.iter().position(|(_, e)| pick(e))?;
        Some(self.events.remove(at))
    }

    /// Frames lost to link loss, partitions or missing receivers.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The link between `a` and `b` closes, as a TLS link does when either end closes it
    /// (to make room, or idle): the frames in flight on it either way are lost, and both
    /// ends are told their link to the other went down (not unreachable: the next frame
    /// opens a new link). Returns how many frames were lost.
    pub fn close_link(&mut self, a: NodeId, b: NodeId) -> usize {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, f| !((f.from.id == a && f.to == b) || (f.from.id == b && f.to == a)));
        let dropped = before - self.in_flight.len();
        self.lost += dropped as u64;
        for (me, other) in [(a, b), (b, a)] {
            if self.peers.contains_key(&me) {
                self.act(me, |p, now| p.handle_link_down(now, other, false));
            }
        }
        dropped
    }

    /// Put `msg` on the wire as if `from` sent it to `to` now, past `from`'s behaviour (the
    /// test acting as a compromised `from`).
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: Message) {
        self.transmit(Contact::id_only(from), to, msg);
    }

    /// Hand `msg` to `to` at once, as from an authenticated `from` (the test acting as a
    /// compromised `from`), capture it and drain `to`. Returns false if `to` does not exist.
    pub fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) -> bool {
        let frame = Frame {
            sent: self.now,
            at: self.now,
            from: Contact::id_only(from),
            to,
            msg,
        };
        self.hand_over(frame)
    }

    /// Handle the next input — a frame arrival or a peer deadline — if it falls at or before
    /// `deadline`, moving the clock to it. Returns false (the clock untouched) otherwise.
    pub fn step_until(&mut self, deadline: Time) -> bool {
        let frame_at = self.in_flight.keys().next().map(|(t, _)| *t);
        let timer = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.poll_timeout().map(|t| (t.max(self.now), *id)))
            .min();
        let next = match (frame_at, timer) {
            (Some(f), Some((t, _))) => f.min(t),
            (Some(f), None) => f,
            (None, Some((t, _))) => t,
            (None, None) => return false,
        };
        if next > deadline {
            return false;
        }
        self.advance_clock(next);
        if frame_at == Some(next) {
            if let Some((_, frame)) = self.in_flight.pop_first() {
                self.hand_over(frame);
            }
        } else if let Some((_, id)) = timer {
            let now = self.now;
            if let Some(p) = self.peers.get_mut(&id) {
                p.handle_timeout(now);
            }
            self.drain(id);
        }
        true
    }

    /// Run every input up to `deadline`, then set the clock to it.
    pub fn run_until(&mut self, deadline: Time) {
        while self.step_until(deadline) {}
        self.advance_clock(deadline);
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn advance_clock(&mut self, to: Time) {
        if to > self.now {
            self.now = to;
            self.steps_at_now = 0;
        } else {
            self.steps_at_now += 1;
            assert!(
                self.steps_at_now < MAX_STEPS_AT_ONE_INSTANT,
                "the network is stuck at {:?}: a peer's deadline does not move",
                self.now
            );
        }
    }

    /// Deliver a frame that has arrived (or is handed over directly).
    fn hand_over(&mut self, frame: Frame) -> bool {
        let cut = self.partitions.iter().any(|(a, b)| {
            (a.contains(&frame.from.id) && b.contains(&frame.to))
                || (b.contains(&frame.from.id) && a.contains(&frame.to))
        });
        let now = self.now;
        let to = frame.to;
        match self.peers.get_mut(&to) {
            Some(peer) if !cut => {
                let from = peer.authenticate(frame.from);
                peer.handle_message(now, &from, frame.msg.clone());
                self.captured.push(frame);
                self.drain(to);
                true
            }
            _ => {
                self.lost += 1;
                false
            }
        }
    }

    /// Drain peer `id` until idle: frames through its behaviour onto the links, events
    /// into the log.
    fn drain(&mut self, id: NodeId) {
        loop {
            let now = self.now;
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            let me = peer.contact();
            let mut out = Vec::new();
            while let Some(t) = peer.poll_transmit() {
                out.push((t.to.id, t.msg));
            }
            let mut busy = !out.is_empty();
            while let Some(ev) = peer.poll_event() {
                busy = true;
                if let Some(ev) = peer.answer(now, ev) {
                    self.events.push((id, ev));
                }
            }
            if !busy {
                return;
            }
            for (to, msg) in out {
                let actions = match self.behaviours.get_mut(&id) {
                    Some(b) => b.on_send(now, id, to, msg),
                    None => vec![Action::Send { to, msg }],
                };
                for action in actions {
                    match action {
                        Action::Send { to, msg } => self.transmit(me, to, msg),
                        Action::Bounce { to, msg } => {
                            if let Some(p) = self.peers.get_mut(&id) {
                                p.handle_not_sent(now, to, &msg);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Put a frame on the link from `from` to `to`.
    fn transmit(&mut self, from: Contact, to: NodeId, msg: Message) {
        let link = self
            .links
            .get(&(from.id, to))
            .copied()
            .unwrap_or(self.default_link);
        if link.loss > 0.0 && self.rng.random_bool(link.loss.min(1.0)) {
            self.lost += 1;
            return;
        }
        let at = self.now + link.latency;
        self.seq += 1;
        self.in_flight.insert(
            (at, self.seq),
            Frame {
                sent: self.now,
                at,
                from,
                to,
                msg,
            },
        );
    }
}
