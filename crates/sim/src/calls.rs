//! Call experiments: the secure overlay (three layers, CSP/CSPG, PingRequest multicast, SOS)
//! against plain Chord, with malicious peers, in the discrete-event simulator.
//!
//! Every peer runs [`overlay::secure::SecureNode`]. A fraction of ordinary peers is
//! malicious: it runs the same code but tampers with what it forwards (drop, misroute,
//! modify, replay), or plays a strategy (on-off, colluding group, bad-mouthing with
//! ballot-stuffing, slander from a good forwarding record, an eclipse of the arcs after the
//! CSPs); what its own code would report is never given to the SOS, only the lies its
//! strategy tells. CSPs and CSPGs are trusted infrastructure. An in-process SOS built on the
//! `trust` crate answers route rankings and turns the peers' evidence reports into opinions:
//! a CSP's report rests on signed hand-overs and counts fully (proven evidence); an ordinary
//! peer's is held against the proven view of its subject and weighed by the reporter's
//! referral record ([`trust::OpinionBook::record_referred`]); all evidence ages. Every two
//! seconds the SOS publishes the peers it distrusts (disbelief above belief, or caught
//! lying: [`trust::PeerTrust::distrusted`]), and peers
//! route around them — the closed loop.
//!
//! Signatures here use a keyed-hash stand-in (see [`SimKeys`]): unforgeable inside the
//! simulation because a peer's key is known only to the simulator, and cheap enough for
//! 10^5 peers. The runtime and the overlay's tests use Ed25519.

use crate::metrics::Samples;
use crate::models::{GeoPoint, LatencyModel};
use crate::queue::EventQueue;
use crate::world::converged_tables;
use overlay::secure::{
    Directory, FirstHops, Layer, LayerArcs, OverlayContext, Role, Routing, SecureConfig,
    SecureEvent, SecureNode, SigVerifier, Signer,
};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trust::{Ageing, Discounting, Opinion, OpinionBook, TrustPolicy};

/// What malicious peers do to traffic they forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Behaviour {
    /// Swallow it.
    Drop,
    /// Send it to a wrong peer.
    Misroute,
    /// Alter it, then forward.
    Modify,
    /// Hold it and send it a minute later.
    Replay,
    /// Each malicious peer picks one of the above.
    Mixed,
    /// On-off: forward honestly until the SOS trusts the peer (belief above disbelief and at
    /// least [`ON_OFF_TRUSTED`]), then drop until it no longer does; and again.
    OnOff,
    /// Colluding group: pass copies to a fellow attacker that is closer to the target
    /// whenever one is known (so the copy stays with the group), drop when none is, and
    /// praise one another to the SOS (ballot-stuffing).
    Collude,
    /// Drop, blame the honest next hop for every dropped copy (bad-mouthing) and praise the
    /// attackers already on the copy's path (ballot-stuffing).
    BadMouth,
    /// Bad-mouthing from a good record: half the group (even IDs) forwards honestly, so the
    /// SOS comes to believe it, and the other half drops. Every attacker that handles a copy
    /// tells the SOS that the honest peers before and after it on the copy's path dropped
    /// it, and praises the attackers on the path and one dropping fellow (ballot-stuffing).
    Slander,
    /// Eclipse of the arcs around the CSPs: the attackers are not spread at random but are
    /// the ordinary peers right after each CSP (IDs bought by claiming locations next to
    /// it), the same number after every CSP, and drop what they forward. A CSP's successors
    /// are then all attackers, and so is every peer between it and the callees nearest it.
    Eclipse,
}

/// The belief at which an on-off attacker takes itself for trusted and starts dropping.
pub const ON_OFF_TRUSTED: f64 = 0.5;

/// Signature stand-in for the simulator: a keyed 64-bit hash with a per-peer secret.
pub struct SimKeys {
    master: u64,
}

impl SimKeys {
    fn key(&self, id: NodeId) -> u64 {
        mix(self.master ^ (id.0 as u64) ^ ((id.0 >> 64) as u64).rotate_left(17))
    }
    fn tag(key: u64, data: &[u8]) -> Vec<u8> {
        let h = data.iter().fold(key, |h, b| mix(h ^ u64::from(*b)));
        h.to_le_bytes().to_vec()
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl SigVerifier for SimKeys {
    fn verify(&self, signer: NodeId, data: &[u8], sig: &[u8]) -> bool {
        Self::tag(self.key(signer), data) == sig
    }
}

struct SimSigner(u64);
impl Signer for SimSigner {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        SimKeys::tag(self.0, data)
    }
}

/// Parameters of a call run.
#[derive(Clone, Debug)]
pub struct CallRun {
    /// Peers, CSPs and CSPGs included.
    pub peers: usize,
    /// Calls measured.
    pub calls: u64,
    /// Calls placed before measuring, to let the SOS learn (0 = cold).
    pub warmup_calls: u64,
    /// ID width.
    pub bits: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Secure overlay or plain Chord.
    pub routing: Routing,
    /// Fraction of ordinary peers that are malicious.
    pub malicious: f64,
    /// What they do.
    pub behaviour: Behaviour,
    /// Callee popularity: `Some(s)` for Zipf(s), `None` for uniform.
    pub zipf: Option<f64>,
    /// Calls per simulated second.
    pub call_rate: f64,
    /// One-way latency model.
    pub latency: LatencyModel,
    /// Secure-layer parameters.
    pub secure: SecureConfig,
    /// Successor-list length.
    pub successors: usize,
    /// Successor-list length of the CSPs (at least [`CallRun::successors`]): a CSP knows the
    /// peers of its own arc directly, so an eclipse of the peers right after it does not cut
    /// it off from the callees behind them.
    pub csp_successors: usize,
    /// Feed evidence to the SOS and route around distrusted peers.
    pub closed_loop: bool,
    /// Weigh each report by the SOS's belief in its reporter (classic discounting: a peer
    /// nobody vouched for yet says nothing; CSPs and CSPGs count fully). Off: every report
    /// counts 1.
    pub weigh_reporters: bool,
    /// With [`CallRun::weigh_reporters`]: weigh an ordinary peer's report by its referral
    /// record instead of its forwarding record, and hold it against what the CSPs proved
    /// about its subject ([`OpinionBook::record_referred`]): a report that contradicts a
    /// confident proven view does not count and costs its reporter its voice. Off: a
    /// report counts as much as the SOS believes its reporter forwards.
    pub check_reports: bool,
    /// Half-life of evidence at the SOS (`None`: evidence never fades).
    pub evidence_half_life: Option<Duration>,
}

impl CallRun {
    /// Defaults: m = 128, 100 calls/s, geographic latency, closed loop on.
    pub fn new(peers: usize, calls: u64, routing: Routing) -> Self {
        CallRun {
            peers,
            calls,
            warmup_calls: 0,
            bits: 128,
            seed: 1,
            routing,
            malicious: 0.0,
            behaviour: Behaviour::Drop,
            zipf: None,
            call_rate: 100.0,
            latency: LatencyModel::geographic(),
            secure: SecureConfig::default(),
            successors: 8,
            csp_successors: 32,
            closed_loop: true,
            weigh_reporters: true,
            check_reports: true,
            evidence_half_life: Some(Duration::from_secs(60)),
        }
    }
}

/// What a call run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallReport {
    /// Peers in the overlay.
    pub peers: usize,
    /// "secure" or "chord".
    pub routing: String,
    /// Malicious fraction.
    pub malicious: f64,
    /// Malicious behaviour.
    pub behaviour: String,
    /// Calls measured.
    pub calls: u64,
    /// Calls placed before measuring.
    pub warmup_calls: u64,
    /// Calls that rang with the request intact.
    pub succeeded: u64,
    /// succeeded / calls.
    pub success_rate: f64,
    /// Mean hops of the route the request (or the chosen PingRequest copy) took.
    pub hops_mean: f64,
    /// Session request delay percentiles (virtual), milliseconds.
    pub setup_ms_p50: f64,
    /// 99th percentile of the session request delay, milliseconds.
    pub setup_ms_p99: f64,
    /// Call-traffic messages per measured call.
    pub messages_per_call: f64,
    /// Fraction of measured calls served from the contact cache.
    pub cache_hit_rate: f64,
    /// Malicious peers the SOS distrusted at the end.
    pub distrusted_malicious: usize,
    /// Honest peers the SOS distrusted at the end.
    pub distrusted_honest: usize,
    /// Honest ordinary peers.
    pub honest_peers: usize,
    /// Malicious peers.
    pub malicious_peers: usize,
    /// distrusted_honest / honest_peers: the SOS's false-positive rate at the end.
    pub false_positive_rate: f64,
    /// Malicious peers the SOS did not distrust at the end, over malicious_peers: its
    /// false-negative rate.
    pub false_negative_rate: f64,
    /// Malicious peers some evidence report named during the run: the only ones the SOS
    /// could have learnt anything about (the others were never on a watched path).
    pub malicious_observed: usize,
    /// Of [`CallReport::malicious_observed`], the share the SOS did not distrust at the end:
    /// the false negatives that are the trust model's, not the traffic's.
    pub false_negative_rate_observed: f64,
    /// Evidence reports the SOS took.
    pub reports: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Seed.
    pub seed: u64,
}

enum Ev {
    Deliver {
        to: NodeId,
        from: Contact,
        msg: Box<Message>,
    },
    Timer {
        slot: u32,
        at: Time,
    },
    Ranked {
        slot: u32,
        query: u64,
        best: Option<usize>,
    },
    Call,
    TrustRefresh,
}

struct Peer {
    node: SecureNode,
    bad: Option<Behaviour>,
    timer_at: Option<Time>,
    geo: GeoPoint,
}

/// The result of one traced call (paper scenario).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TracedCall {
    /// Did it ring?
    pub delivered: bool,
    /// Peers the request passed (plain Chord), caller first.
    pub path: Vec<u128>,
    /// Routes the callee collected (secure).
    pub routes: Vec<Vec<u128>>,
    /// The route the SOS ranked first (secure).
    pub chosen_route: Vec<u128>,
    /// Its opinion (b, d, u, a).
    pub opinion: Option<[f64; 4]>,
    /// Its expectation.
    pub expectation: Option<f64>,
}

/// A simulated secure overlay with callers, malicious peers and an in-process SOS.
pub struct CallWorld {
    peers: Vec<Peer>,
    index: BTreeMap<NodeId, u32>,
    ordinary: Vec<NodeId>,
    queue: EventQueue<Ev>,
    now: Time,
    rng: Xoshiro256PlusPlus,
    latency: LatencyModel,
    sos: OpinionBook<u128>,
    reported: BTreeSet<u128>,
    closed_loop: bool,
    weigh_reporters: bool,
    check_reports: bool,
    distrusted: Arc<BTreeSet<NodeId>>,
    /// The dropping half of the slanderers ([`Behaviour::Slander`]), whom the other half
    /// praises.
    slander_droppers: Vec<NodeId>,
    /// Call-traffic messages sent.
    pub call_messages: u64,
    /// Evidence reports received.
    pub reports: u64,
    outcomes: Vec<(NodeId, u64, bool, f64, usize, bool, u64)>,
    /// Record a [`TrustSample`] at every trust refresh (for [`run_calls_traced`]).
    sample_trust: bool,
    trust_samples: Vec<TrustSample>,
    trace: Option<(NodeId, u64)>,
    traced_callee_id: Option<NodeId>,
    traced: TracedCall,
    measured: BTreeSet<(NodeId, u64)>,
}

/// The paper's layout: m = 11, layers [0,512) [512,1024) [1024,2048), CSPGs 1, 600, 1030.
pub mod paper {
    use overlay::NodeId;
    use rand::RngExt;
    use std::collections::BTreeSet;

    /// Layer starts.
    pub const ARCS: [u128; 3] = [0, 512, 1024];
    /// CSPGs per layer.
    pub const CSPGS: [u128; 3] = [1, 600, 1030];
    /// The 13 CSPs.
    pub const CSPS: [u128; 13] = [
        128, 256, 384, 480, 640, 768, 896, 1000, 1100, 1300, 1536, 1800, 1950,
    ];
    /// Peers the paper names, plus 1597: with r = 3 it is the CSP's successor whose copy
    /// meets 1617, the route the paper says "will be interfered".
    pub const NAMED: [u128; 8] = [80, 1331, 1593, 1597, 1600, 1609, 1617, 1618];
    /// Around the callee only the named peers live (as in the paper's figure).
    pub const QUIET: std::ops::RangeInclusive<u128> = 1537..=1624;

    /// `peers` Node-IDs in the paper's 11-bit space, sorted: the CSPGs, CSPs and named
    /// peers, then random ones drawn from `rng` outside [`QUIET`].
    pub fn ids(peers: usize, rng: &mut impl RngExt) -> Vec<NodeId> {
        let mut ids: BTreeSet<NodeId> = CSPS
            .iter()
            .chain(&CSPGS)
            .chain(&NAMED)
            .map(|i| NodeId(*i))
            .collect();
        while ids.len() < peers {
            let id = rng.random_range(0..2048u128);
            if !QUIET.contains(&id) {
                ids.insert(NodeId(id));
            }
        }
        ids.into_iter().collect()
    }
}

impl CallWorld {
    /// Build an overlay of `ids` with the given CSP/CSPG sets and malicious peers.
    #[allow(clippy::too_many_arguments)]
    fn build(
        run: &CallRun,
        arcs: LayerArcs,
        ids: &[NodeId],
        csps: &[NodeId],
        cspgs: &[NodeId],
        bad: &BTreeMap<NodeId, Behaviour>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<CallWorld, CallError> {
        let space = arcs.space();
        let mut dir = Directory::default();
        for c in csps {
            dir.csps[arcs.layer_of(*c).index()].push(*c);
        }
        for g in cspgs {
            dir.cspgs[arcs.layer_of(*g).index()].push(*g);
        }
        for l in dir.csps.iter_mut() {
            l.sort();
        }
        let infra: Vec<Contact> = csps
            .iter()
            .chain(cspgs)
            .map(|i| Contact::id_only(*i))
            .collect();
        let keys = Arc::new(SimKeys {
            master: rng.random(),
        });
        let ctx = OverlayContext {
            cfg: Arc::new(run.secure.clone()),
            arcs,
            directory: Arc::new(dir),
            infrastructure: Arc::new(infra),
            verifier: keys.clone(),
        };
        let mut chord = ChordConfig::new(space);
        chord.successors = run.successors;
        chord.successor_shortcut = true;
        let mut csp_chord = chord.clone();
        csp_chord.successors = run.csp_successors.max(run.successors);
        csp_chord.extend_successors = csp_chord.successors > run.successors;
        let chord = Arc::new(chord);
        let csp_chord = Arc::new(csp_chord);
        // Rings: one per layer (secure), or one flat ring (plain Chord).
        let mut rings: Vec<Vec<NodeId>> = vec![Vec::new(); 3];
        for id in ids {
            let r = match run.routing {
                Routing::Secure => arcs.layer_of(*id).index(),
                Routing::Chord => 0,
            };
            rings[r].push(*id);
        }
        let mut world = CallWorld {
            peers: Vec::with_capacity(ids.len()),
            index: BTreeMap::new(),
            ordinary: Vec::new(),
            queue: EventQueue::default(),
            now: Time::ZERO,
            rng: Xoshiro256PlusPlus::seed_from_u64(run.seed ^ 0xCA11),
            latency: run.latency.clone(),
            sos: OpinionBook::new(TrustPolicy::new(
                trust::paper::BASE_RATE,
                match run.evidence_half_life {
                    Some(h) => Ageing::half_life_ms((h.as_millis() as u64).max(1))?,
                    None => Ageing::never(),
                },
            )?),
            reported: BTreeSet::new(),
            closed_loop: run.closed_loop,
            weigh_reporters: run.weigh_reporters,
            check_reports: run.check_reports,
            distrusted: Arc::new(BTreeSet::new()),
            slander_droppers: bad
                .iter()
                .filter(|(id, b)| **b == Behaviour::Slander && !slanders_from_good_record(**id))
                .map(|(id, _)| *id)
                .collect(),
            call_messages: 0,
            reports: 0,
            outcomes: Vec::new(),
            sample_trust: false,
            trust_samples: Vec::new(),
            trace: None,
            traced_callee_id: None,
            traced: TracedCall::default(),
            measured: BTreeSet::new(),
        };
        for ring in rings.iter_mut() {
            ring.sort();
            ring.dedup();
            // A layer ring's fingers spread over its layer's arc, as a real peer's do.
            let arc = match (run.routing, ring.first()) {
                (Routing::Secure, Some(first)) => Some(arcs.arc(arcs.layer_of(*first))),
                _ => None,
            };
            let on_arc = |c: &Arc<ChordConfig>| {
                let mut c = (**c).clone();
                c.arc = arc;
                Arc::new(c)
            };
            let (chord, csp_chord) = (on_arc(&chord), on_arc(&csp_chord));
            let span = chord.span();
            for i in 0..ring.len() {
                let id = ring[i];
                let is_csp = run.routing == Routing::Secure && csps.contains(&id);
                let (config, r) = if is_csp {
                    (csp_chord.clone(), csp_chord.successors)
                } else {
                    (chord.clone(), run.successors)
                };
                let (pred, succs, fingers) = converged_tables(ring, i, span, r);
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                let node = ChordNode::converged(
                    config,
                    Contact::id_only(id),
                    seed,
                    Time::ZERO,
                    pred,
                    succs,
                    fingers,
                );
                let role = if csps.contains(&id) {
                    Role::Csp
                } else if cspgs.contains(&id) {
                    Role::Cspg
                } else {
                    Role::Peer
                };
                rng.fill(&mut seed);
                let signer = Box::new(SimSigner(keys.key(id)));
                let secure = SecureNode::new(node, ctx.clone(), role, run.routing, signer, 0, seed);
                let slot = world.peers.len() as u32;
                world.peers.push(Peer {
                    node: secure,
                    bad: bad.get(&id).copied(),
                    timer_at: None,
                    geo: GeoPoint::random(rng),
                });
                world.index.insert(id, slot);
                if role == Role::Peer {
                    world.ordinary.push(id);
                }
                world.after_input(slot);
            }
        }
        world.queue.push(Time::from_millis(2000), Ev::TrustRefresh);
        Ok(world)
    }

    fn after_input(&mut self, slot: u32) {
        let now = self.now;
        while let Some(mut t) = self.peers[slot as usize].node.poll_transmit() {
            let me = self.peers[slot as usize].node.chord().contact();
            let mut delay_extra = Duration::ZERO;
            if let Some(b) = self.peers[slot as usize].bad
                && is_forward(&t.msg, me.id)
            {
                match self.tamper(slot, b, &mut t) {
                    Tamper::Drop => continue,
                    Tamper::Later(d) => delay_extra = d,
                    Tamper::Send => {}
                }
            }
            if t.msg.is_call_traffic() {
                self.call_messages += 1;
            }
            if let (Some((caller, call)), Message::PlainInvite(inv)) = (self.trace, &t.msg)
                && inv.caller.id == caller
                && inv.call == call
            {
                self.traced.path = inv.path.iter().map(|n| n.0).collect();
                self.traced.path.push(t.to.id.0);
            }
            let from_geo = self.peers[slot as usize].geo;
            let to_geo = self
                .index
                .get(&t.to.id)
                .map(|s| self.peers[*s as usize].geo)
                .unwrap_or_default();
            let delay = self.latency.sample(&mut self.rng, &from_geo, &to_geo) + delay_extra;
            self.queue.push(
                now + delay,
                Ev::Deliver {
                    to: t.to.id,
                    from: me,
                    msg: Box::new(t.msg),
                },
            );
        }
        while let Some(ev) = self.peers[slot as usize].node.poll_event() {
            self.on_event(slot, ev);
        }
        let p = &mut self.peers[slot as usize];
        if let Some(t) = p.node.poll_timeout() {
            let t = t.max(now);
            if p.timer_at.is_none_or(|cur| t < cur) {
                p.timer_at = Some(t);
                self.queue.push(t, Ev::Timer { slot, at: t });
            }
        }
    }

    fn tamper(&mut self, slot: u32, b: Behaviour, t: &mut overlay::Transmit) -> Tamper {
        match b {
            Behaviour::OnOff => {
                let me = self.peers[slot as usize].node.chord().id();
                let (o, _) = self.sos.opinion(&me.0, self.now.as_micros() / 1000);
                let trusted = o.belief() > o.disbelief() && o.belief() >= ON_OFF_TRUSTED;
                return if trusted { Tamper::Drop } else { Tamper::Send };
            }
            Behaviour::Collude => {
                self.praise_path(slot, &t.msg);
                return match self.fellow_closer(slot, &t.msg) {
                    Some(c) => {
                        t.to = c;
                        Tamper::Send
                    }
                    None => Tamper::Drop,
                };
            }
            Behaviour::BadMouth => {
                self.praise_path(slot, &t.msg);
                if self.peers_bad(t.to.id).is_none() {
                    self.report_as(slot, t.to.id, false);
                }
                return Tamper::Drop;
            }
            Behaviour::Slander => {
                let me = self.peers[slot as usize].node.chord().id();
                self.slander(slot, &t.msg, t.to.id);
                return if slanders_from_good_record(me) {
                    Tamper::Send
                } else {
                    Tamper::Drop
                };
            }
            _ => {}
        }
        let b = match b {
            Behaviour::Mixed => [
                Behaviour::Drop,
                Behaviour::Misroute,
                Behaviour::Modify,
                Behaviour::Replay,
            ][(self.peers[slot as usize].node.chord().id().0 % 4) as usize],
            other => other,
        };
        match b {
            Behaviour::Drop
            | Behaviour::Mixed
            | Behaviour::OnOff
            | Behaviour::Collude
            | Behaviour::BadMouth
            | Behaviour::Slander
            | Behaviour::Eclipse => Tamper::Drop,
            Behaviour::Misroute => {
                let fingers: Vec<Contact> =
                    self.peers[slot as usize].node.chord().fingers().collect();
                if fingers.is_empty() {
                    return Tamper::Drop;
                }
                let pick = fingers[self.rng.random_range(0..fingers.len())];
                t.to = pick;
                Tamper::Send
            }
            Behaviour::Modify => {
                match &mut t.msg {
                    Message::PingRequest(p) => p.body.timestamp_ms ^= 1,
                    Message::PlainInvite(inv) => {
                        inv.invite.push(b'!');
                    }
                    _ => {}
                }
                Tamper::Send
            }
            Behaviour::Replay => Tamper::Later(Duration::from_secs(60)),
        }
    }

    /// What peer `id` does if malicious.
    fn peers_bad(&self, id: NodeId) -> Option<Behaviour> {
        self.index
            .get(&id)
            .and_then(|s| self.peers[*s as usize].bad)
    }

    /// Ballot-stuffing: the attacker at `slot` praises the attackers on a copy's path.
    fn praise_path(&mut self, slot: u32, msg: &Message) {
        let Message::PingRequest(p) = msg else {
            return;
        };
        let me = self.peers[slot as usize].node.chord().id();
        let fellows: Vec<NodeId> = p
            .hops
            .iter()
            .map(|h| h.hop)
            .filter(|h| *h != me && self.peers_bad(*h).is_some())
            .collect();
        for f in fellows {
            self.report_as(slot, f, true);
        }
    }

    /// The slanderer at `slot` handles a copy it passes to `next`: it reports the honest
    /// ordinary peers next to it on the copy's path as having dropped it and praises the
    /// attackers on the path and one of the group's droppers.
    fn slander(&mut self, slot: u32, msg: &Message, next: NodeId) {
        let Message::PingRequest(p) = msg else {
            return;
        };
        let me = self.peers[slot as usize].node.chord().id();
        let before = p
            .hops
            .iter()
            .rev()
            .map(|h| h.hop)
            .find(|h| *h != me)
            .unwrap_or(p.body.csp.id);
        for victim in [before, next] {
            if self.is_honest_ordinary(victim) {
                self.report_as(slot, victim, false);
            }
        }
        self.praise_path(slot, msg);
        if !self.slander_droppers.is_empty() {
            let i = self.rng.random_range(0..self.slander_droppers.len());
            let fellow = self.slander_droppers[i];
            if fellow != me {
                self.report_as(slot, fellow, true);
            }
        }
    }

    /// An ordinary peer that is not an attacker.
    fn is_honest_ordinary(&self, id: NodeId) -> bool {
        self.index.get(&id).is_some_and(|s| {
            let p = &self.peers[*s as usize];
            p.bad.is_none() && p.node.role() == Role::Peer
        })
    }

    /// A fellow attacker the colluder at `slot` knows that is closer to the copy's target
    /// than itself (the closest such), if any.
    fn fellow_closer(&self, slot: u32, msg: &Message) -> Option<Contact> {
        let Message::PingRequest(p) = msg else {
            return None;
        };
        let node = self.peers[slot as usize].node.chord();
        let space = node.config().space;
        let target = p.body.target;
        let mine = space.distance(node.id(), target);
        node.fingers()
            .chain(node.successors())
            .filter(|c| {
                c.id != target
                    && space.distance(c.id, target) < mine
                    && p.hops.iter().all(|h| h.hop != c.id)
                    && self.peers_bad(c.id) == Some(Behaviour::Collude)
            })
            .min_by_key(|c| space.distance(c.id, target))
    }

    /// The peer at `slot` tells the SOS that `subject` delivered (`positive`) or not.
    fn report_as(&mut self, slot: u32, subject: NodeId, positive: bool) {
        self.reports += 1;
        if !self.closed_loop {
            return;
        }
        let now_ms = self.now.as_micros() / 1000;
        let reporter = self.peers[slot as usize].node.chord().id();
        let infrastructure = self.peers[slot as usize].node.role() != Role::Peer;
        if infrastructure {
            // A CSP's or CSPG's evidence rests on signed hand-overs: proof.
            self.sos.record_proven(subject.0, positive, now_ms);
        } else if !self.weigh_reporters {
            self.sos.record(subject.0, positive, now_ms);
        } else if self.check_reports {
            let judged = self.sos.record_referred(
                subject.0,
                positive,
                now_ms,
                &reporter.0,
                Discounting::Classic,
            );
            if judged.checked() {
                // Its record as a reporter changed: a caught liar can be distrusted.
                self.reported.insert(reporter.0);
            }
        } else {
            let (trust_in_reporter, _) = self.sos.opinion(&reporter.0, now_ms);
            self.sos.record_reported(
                subject.0,
                positive,
                now_ms,
                &trust_in_reporter,
                Discounting::Classic,
            );
        }
        self.reported.insert(subject.0);
    }

    fn on_event(&mut self, slot: u32, ev: SecureEvent) {
        let now = self.now;
        match ev {
            SecureEvent::RankRoutes { query, routes } => {
                let ids: Vec<Vec<u128>> = routes
                    .iter()
                    .map(|r| r.iter().map(|n| n.0).collect())
                    .collect();
                let ranked = self
                    .sos
                    .rank(ids, now.as_micros() / 1000, Discounting::Classic)
                    .unwrap_or_default();
                let callee = self.peers[slot as usize].node.chord().id();
                if self.trace.is_some() && self.traced_callee_id == Some(callee) {
                    self.traced.routes = routes
                        .iter()
                        .map(|r| r.iter().map(|n| n.0).collect())
                        .collect();
                    if let Some(best) = ranked.first() {
                        self.traced.chosen_route = best.route.clone();
                        let o = best.opinion;
                        self.traced.opinion =
                            Some([o.belief(), o.disbelief(), o.uncertainty(), o.base_rate()]);
                        self.traced.expectation = Some(best.expectation);
                    }
                }
                let best = ranked.first().map(|r| r.index);
                // The SOS is a server somewhere: 10 ms there and back.
                self.queue.push(
                    now + Duration::from_millis(10),
                    Ev::Ranked { slot, query, best },
                );
            }
            SecureEvent::Report { subject, outcome } => {
                // A malicious peer tells the SOS nothing true: what it does say is its
                // behaviour's business (`tamper`), never its honest code's evidence.
                if self.peers[slot as usize].bad.is_some() {
                    return;
                }
                self.report_as(slot, subject, outcome.is_positive());
            }
            SecureEvent::CallRinging {
                call,
                setup,
                route,
                cached,
                ..
            } => {
                let caller = self.peers[slot as usize].node.chord().id();
                if self.trace == Some((caller, call)) {
                    self.traced.delivered = true;
                }
                let hops = if cached { 1 } else { route.len() };
                let at_ms = now.as_micros() / 1000;
                self.outcomes.push((
                    caller,
                    call,
                    true,
                    setup.as_secs_f64() * 1e3,
                    hops,
                    cached,
                    at_ms,
                ));
            }
            SecureEvent::CallFailed { call, .. } => {
                let caller = self.peers[slot as usize].node.chord().id();
                let at_ms = now.as_micros() / 1000;
                self.outcomes
                    .push((caller, call, false, 0.0, 0, false, at_ms));
            }
            SecureEvent::IncomingCall { .. }
            | SecureEvent::Chord(_)
            | SecureEvent::Dialog { .. }
            | SecureEvent::Stored { .. }
            | SecureEvent::Fetched { .. } => {}
        }
    }

    fn refresh_trust(&mut self) {
        if !self.closed_loop {
            return;
        }
        let now_ms = self.now.as_micros() / 1000;
        let set: BTreeSet<NodeId> = self
            .reported
            .iter()
            .filter(|p| self.sos.distrusted(p, now_ms))
            .map(|p| NodeId(*p))
            .collect();
        self.distrusted = Arc::new(set);
        for p in &mut self.peers {
            p.node.set_distrusted(self.distrusted.clone());
        }
    }

    /// Mean SOS expectation and distrusted share of honest and malicious ordinary peers now.
    fn sample_trust_now(&mut self) {
        let now_ms = self.now.as_micros() / 1000;
        // (sum of E, distrusted, count) for honest [0] and malicious [1].
        let mut acc = [(0.0f64, 0usize, 0usize); 2];
        for id in &self.ordinary {
            let Some(&slot) = self.index.get(id) else {
                continue;
            };
            let k = usize::from(self.peers[slot as usize].bad.is_some());
            let (o, _) = self.sos.opinion(&id.0, now_ms);
            acc[k].0 += o.expectation();
            acc[k].1 += usize::from(self.distrusted.contains(id));
            acc[k].2 += 1;
        }
        let mean =
            |(sum, _, n): (f64, usize, usize)| if n == 0 { f64::NAN } else { sum / n as f64 };
        let share = |(_, d, n): (f64, usize, usize)| {
            if n == 0 {
                f64::NAN
            } else {
                d as f64 / n as f64
            }
        };
        self.trust_samples.push(TrustSample {
            t_s: now_ms as f64 / 1e3,
            honest_expectation: mean(acc[0]),
            malicious_expectation: mean(acc[1]),
            honest_distrusted: share(acc[0]),
            malicious_distrusted: share(acc[1]),
            reports: self.reports,
        });
    }

    fn run_until(&mut self, until: Time, calls: &mut dyn FnMut(&mut CallWorld)) {
        while let Some((at, ev)) = self.queue.pop_due(until) {
            self.now = at;
            match ev {
                Ev::Deliver { to, from, msg } => {
                    if let Some(&slot) = self.index.get(&to) {
                        self.peers[slot as usize]
                            .node
                            .handle_message(at, from, *msg);
                        self.after_input(slot);
                    }
                }
                Ev::Timer { slot, at: t } => {
                    let p = &mut self.peers[slot as usize];
                    if p.timer_at != Some(t) {
                        continue;
                    }
                    p.timer_at = None;
                    p.node.handle_timeout(at);
                    self.after_input(slot);
                }
                Ev::Ranked { slot, query, best } => {
                    self.peers[slot as usize]
                        .node
                        .handle_ranking(at, query, best);
                    self.after_input(slot);
                }
                Ev::Call => calls(self),
                Ev::TrustRefresh => {
                    self.refresh_trust();
                    if self.sample_trust {
                        self.sample_trust_now();
                    }
                    self.queue
                        .push(at + Duration::from_secs(2), Ev::TrustRefresh);
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn place_call(&mut self, caller: NodeId, callee: NodeId) -> Option<u64> {
        let slot = *self.index.get(&caller)?;
        let now = self.now;
        let invite = format!("INVITE sip:{callee}@p2psip SIP/2.0").into_bytes();
        let id = self.peers[slot as usize].node.call(now, callee, invite);
        self.after_input(slot);
        Some(id)
    }

    /// Peers the SOS distrusts now.
    pub fn distrusted(&self) -> &BTreeSet<NodeId> {
        &self.distrusted
    }
}

enum Tamper {
    Drop,
    Later(Duration),
    Send,
}

/// Does this slanderer belong to the half that forwards honestly (to earn the SOS's
/// belief) rather than the half that drops?
fn slanders_from_good_record(id: NodeId) -> bool {
    id.0.is_multiple_of(2)
}

/// Is `msg`, sent by `me`, traffic it forwards for others (what a malicious hop tampers with)?
fn is_forward(msg: &Message, me: NodeId) -> bool {
    match msg {
        Message::PingRequest(p) => p.hops.last().is_some_and(|h| h.hop == me),
        Message::PlainInvite(inv) => inv.path.len() > 1 && inv.path.last() == Some(&me),
        _ => false,
    }
}

/// Errors of a call run's parameters.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Too few peers for three layers with CSPs and CSPGs.
    #[error("a call run needs at least 30 peers (three layers with CSPs and CSPGs), got {0}")]
    TooFewPeers(usize),
    /// More peers than IDs.
    #[error("{peers} peers do not fit in an ID space of m = {bits} bits")]
    SpaceTooSmall {
        /// Peers asked for.
        peers: usize,
        /// Width of the space.
        bits: u32,
    },
    /// Calls are placed between honest peers: at least two are needed.
    #[error("only {0} honest ordinary peers: calls need at least two (lower --malicious)")]
    TooFewHonest(usize),
    /// Fraction outside 0..1.
    #[error("malicious fraction must be in 0..1, got {0}")]
    BadFraction(f64),
    /// Zipf exponent not a finite number ≥ 0.
    #[error("Zipf exponent must be a finite number ≥ 0, got {0}")]
    BadZipf(f64),
    /// Non-positive rate.
    #[error("call rate must be positive, got {0}")]
    BadRate(f64),
    /// Trust parameters rejected.
    #[error("trust policy: {0}")]
    Trust(#[from] trust::EvidenceError),
    /// ID width rejected.
    #[error("ID space: {0}")]
    Space(#[from] overlay::IdError),
}

/// Where a long run is, for progress bars: (calls done, calls in all).
pub type CallProgress<'a> = &'a mut dyn FnMut(u64, u64);

/// Zipf(s) sampler over ranks 0..n.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let u: f64 = rng.random_range(0.0..=total);
        self.cdf
            .partition_point(|c| *c < u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

/// One measured call, as [`run_calls_traced`] records it.
#[derive(Clone, Debug, Serialize)]
pub struct CallOutcome {
    /// Layer (1..=3) of the caller's ID.
    pub caller_layer: u8,
    /// Did it ring with the request intact?
    pub succeeded: bool,
    /// Session request delay (virtual), milliseconds; 0 for a failed call.
    pub setup_ms: f64,
    /// Hops of the route taken (1 when served from the contact cache); 0 for a failed call.
    pub hops: usize,
    /// Served from the contact cache.
    pub cached: bool,
    /// Simulated time the outcome was known, seconds.
    pub t_s: f64,
}

/// What the SOS thinks of honest and malicious ordinary peers at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct TrustSample {
    /// Simulated time, seconds.
    pub t_s: f64,
    /// Mean expectation E = b + a·u over honest ordinary peers.
    pub honest_expectation: f64,
    /// Mean expectation over malicious peers.
    pub malicious_expectation: f64,
    /// Share of honest ordinary peers the SOS distrusts.
    pub honest_distrusted: f64,
    /// Share of malicious peers the SOS distrusts.
    pub malicious_distrusted: f64,
    /// Evidence reports taken so far.
    pub reports: u64,
}

/// The raw series behind a [`CallReport`], for plots and reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallSeries {
    /// Every measured call, in the order outcomes were known.
    pub calls: Vec<CallOutcome>,
    /// The SOS's view, sampled at every trust refresh (every 2 s of simulated time),
    /// warm-up included.
    pub trust: Vec<TrustSample>,
}

/// Run a call experiment and summarise it.
pub fn run_calls(run: &CallRun, progress: CallProgress<'_>) -> Result<CallReport, CallError> {
    run_calls_inner(run, false, progress).map(|(report, _)| report)
}

/// Like [`run_calls`], and also return the raw series: every measured call and the SOS's
/// view of honest and malicious peers over time.
pub fn run_calls_traced(
    run: &CallRun,
    progress: CallProgress<'_>,
) -> Result<(CallReport, CallSeries), CallError> {
    run_calls_inner(run, true, progress)
}

fn run_calls_inner(
    run: &CallRun,
    traced: bool,
    progress: CallProgress<'_>,
) -> Result<(CallReport, CallSeries), CallError> {
    // Wall-clock time of the whole run, reported as the simulator's own speed (`wall_s`);
    // it never reaches the simulated clock.
    #[allow(clippy::disallowed_methods)]
    let wall = Instant::now();
    if run.peers < 30 {
        return Err(CallError::TooFewPeers(run.peers));
    }
    if !(0.0..=1.0).contains(&run.malicious) {
        return Err(CallError::BadFraction(run.malicious));
    }
    if run.call_rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(CallError::BadRate(run.call_rate));
    }
    if let Some(z) = run.zipf
        && !(z.is_finite() && z >= 0.0)
    {
        return Err(CallError::BadZipf(z));
    }
    let space = IdSpace::new(run.bits)?;
    if run.bits < 64 && run.peers as u128 > space.max() / 2 {
        return Err(CallError::SpaceTooSmall {
            peers: run.peers,
            bits: run.bits,
        });
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(run.seed);
    let arcs = LayerArcs::thirds(space).map_err(|_| CallError::SpaceTooSmall {
        peers: run.peers,
        bits: run.bits,
    })?;
    let mut ids = BTreeSet::new();
    while ids.len() < run.peers {
        ids.insert(space.wrap(rng.random::<u128>()));
    }
    let ids: Vec<NodeId> = ids.into_iter().collect();
    // Per layer: one CSPG and one CSP per 40 peers (the paper: 13 CSPs, 3 CSPGs for 512).
    let mut csps = Vec::new();
    let mut cspgs = Vec::new();
    for layer in Layer::ALL {
        let mut members: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|i| arcs.layer_of(*i) == layer)
            .collect();
        if members.len() < 3 {
            continue;
        }
        let n_csp = (members.len() / 40).max(2).min(members.len() - 1);
        for _ in 0..=n_csp {
            let i = rng.random_range(0..members.len());
            let pick = members.swap_remove(i);
            if cspgs.len() < usize::from(layer.get()) {
                cspgs.push(pick);
            } else {
                csps.push(pick);
            }
        }
    }
    let infra: BTreeSet<NodeId> = csps.iter().chain(&cspgs).copied().collect();
    let mut bad = BTreeMap::new();
    let ordinary: Vec<NodeId> = ids.iter().copied().filter(|i| !infra.contains(i)).collect();
    if run.behaviour == Behaviour::Eclipse {
        // The same number of attackers right after every CSP, in the CSP's layer.
        let wanted = (run.malicious * ordinary.len() as f64).round() as usize;
        let per_csp = wanted.div_ceil(csps.len().max(1));
        for c in &csps {
            let Ok(at) = ids.binary_search(c) else {
                continue;
            };
            let layer = arcs.layer_of(*c);
            let mut taken = 0;
            for step in 1..ids.len() {
                let id = ids[(at + step) % ids.len()];
                if taken >= per_csp || bad.len() >= wanted || arcs.layer_of(id) != layer {
                    break;
                }
                if !infra.contains(&id) {
                    bad.insert(id, run.behaviour);
                    taken += 1;
                }
            }
        }
    } else {
        for id in &ordinary {
            if rng.random_bool(run.malicious) {
                bad.insert(*id, run.behaviour);
            }
        }
    }
    let honest: Vec<NodeId> = ordinary
        .iter()
        .copied()
        .filter(|i| !bad.contains_key(i))
        .collect();
    if honest.len() < 2 {
        return Err(CallError::TooFewHonest(honest.len()));
    }
    let mut world = CallWorld::build(run, arcs, &ids, &csps, &cspgs, &bad, &mut rng)?;
    world.sample_trust = traced;
    let mut popularity = honest.clone();
    // Shuffle who is popular.
    for i in (1..popularity.len()).rev() {
        let j = rng.random_range(0..=i);
        popularity.swap(i, j);
    }
    let zipf = run.zipf.map(|s| Zipf::new(popularity.len(), s));
    let total = run.warmup_calls + run.calls;
    let gap = Duration::from_secs_f64(1.0 / run.call_rate);
    let start = Time::from_millis(1000);
    let mut placed = 0u64;
    let mut next = start;
    let mut msgs_at_measure = 0u64;
    while placed < total {
        world.queue.push(next, Ev::Call);
        let measuring = placed >= run.warmup_calls;
        if placed == run.warmup_calls {
            msgs_at_measure = world.call_messages;
        }
        let caller = honest[rng.random_range(0..honest.len())];
        let callee = match &zipf {
            Some(z) => popularity[z.sample(&mut rng)],
            None => honest[rng.random_range(0..honest.len())],
        };
        let mut place = |w: &mut CallWorld| {
            if caller != callee
                && let Some(id) = w.place_call(caller, callee)
                && measuring
            {
                w.measured.insert((caller, id));
            }
        };
        world.run_until(next, &mut place);
        placed += 1;
        next = next + gap;
        if placed.is_multiple_of(512) {
            progress(placed, total);
        }
    }
    let drain = world.now + run.secure.call_timeout * 3 + Duration::from_secs(1);
    world.run_until(drain, &mut |_| {});
    progress(total, total);
    let mut setup = Samples::default();
    let mut hops = Samples::default();
    let (mut ok, mut n, mut cached) = (0u64, 0u64, 0u64);
    let mut series = CallSeries::default();
    for (caller, call, success, ms, h, from_cache, at_ms) in world.outcomes.iter().copied() {
        if !world.measured.contains(&(caller, call)) {
            continue;
        }
        if traced {
            series.calls.push(CallOutcome {
                caller_layer: arcs.layer_of(caller).get(),
                succeeded: success,
                setup_ms: ms,
                hops: h,
                cached: from_cache,
                t_s: at_ms as f64 / 1e3,
            });
        }
        n += 1;
        if success {
            ok += 1;
            setup.push(ms);
            hops.push(h as f64);
            cached += u64::from(from_cache);
        }
    }
    let distrusted_malicious = world
        .distrusted
        .iter()
        .filter(|d| bad.contains_key(d))
        .count();
    let distrusted_honest = world.distrusted.len() - distrusted_malicious;
    let observed: Vec<&NodeId> = bad
        .keys()
        .filter(|id| world.reported.contains(&id.0))
        .collect();
    let observed_distrusted = observed
        .iter()
        .filter(|id| world.distrusted.contains(**id))
        .count();
    let share = |part: usize, of: usize| {
        if of == 0 {
            0.0
        } else {
            part as f64 / of as f64
        }
    };
    series.trust = std::mem::take(&mut world.trust_samples);
    let report = CallReport {
        peers: run.peers,
        routing: match run.routing {
            Routing::Secure => "secure".into(),
            Routing::Chord => "chord".into(),
        },
        malicious: run.malicious,
        behaviour: format!("{:?}", run.behaviour).to_lowercase(),
        calls: n,
        warmup_calls: run.warmup_calls,
        succeeded: ok,
        success_rate: if n == 0 { 0.0 } else { ok as f64 / n as f64 },
        hops_mean: hops.mean(),
        setup_ms_p50: setup.percentile(50.0),
        setup_ms_p99: setup.percentile(99.0),
        messages_per_call: if n == 0 {
            0.0
        } else {
            (world.call_messages - msgs_at_measure) as f64 / n as f64
        },
        cache_hit_rate: if n == 0 {
            0.0
        } else {
            cached as f64 / n as f64
        },
        distrusted_malicious,
        distrusted_honest,
        honest_peers: honest.len(),
        malicious_peers: bad.len(),
        false_positive_rate: share(distrusted_honest, honest.len()),
        false_negative_rate: share(bad.len() - distrusted_malicious, bad.len()),
        malicious_observed: observed.len(),
        false_negative_rate_observed: share(observed.len() - observed_distrusted, observed.len()),
        reports: world.reports,
        wall_s: wall.elapsed().as_secs_f64(),
        seed: run.seed,
    };
    Ok((report, series))
}

/// The paper's scenario, both ways.
#[derive(Clone, Debug, Serialize)]
pub struct PaperReport {
    /// Plain Chord: the INVITE routed hop by hop.
    pub chord: TracedCall,
    /// The secure system.
    pub secure: TracedCall,
}

/// Reproduce the paper's scenario: m = 11, 512 peers (496 + 13 CSPs + 3 CSPGs) in three
/// layers, caller 80, callee 1618, peer 1617 malicious (drops), the paper's four opinions
/// set in the SOS by hand; once over plain Chord, once over the secure system.
pub fn run_paper(seed: u64) -> Result<PaperReport, CallError> {
    let space = IdSpace::new(11)?;
    let arcs = LayerArcs::new(space, paper::ARCS).map_err(|_| CallError::SpaceTooSmall {
        peers: 512,
        bits: 11,
    })?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let ids = paper::ids(512, &mut rng);
    let csps: Vec<NodeId> = paper::CSPS.iter().map(|i| NodeId(*i)).collect();
    let cspgs: Vec<NodeId> = paper::CSPGS.iter().map(|i| NodeId(*i)).collect();
    let bad: BTreeMap<NodeId, Behaviour> = [(NodeId(1617), Behaviour::Drop)].into_iter().collect();
    let mut out = Vec::new();
    for routing in [Routing::Chord, Routing::Secure] {
        let mut run = CallRun::new(512, 1, routing);
        run.bits = 11;
        run.successors = 3;
        run.csp_successors = 3;
        run.secure.fanout = 3;
        run.secure.first_hops = FirstHops::Successors;
        run.latency = LatencyModel::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x9A9E);
        let mut world = CallWorld::build(&run, arcs, &ids, &csps, &cspgs, &bad, &mut rng)?;
        for (peer, b, d, u) in trust::paper::OPINIONS {
            if let Ok(o) = Opinion::new(b, d, u, trust::paper::BASE_RATE) {
                world.sos.set_opinion(peer, o);
            }
        }
        world.closed_loop = false;
        world.run_until(Time::from_millis(500), &mut |_| {});
        let call = world.place_call(NodeId(80), NodeId(1618));
        world.trace = call.map(|c| (NodeId(80), c));
        world.traced_callee_id = Some(NodeId(1618));
        let until = world.now + Duration::from_secs(10);
        world.run_until(until, &mut |_| {});
        out.push(world.traced);
    }
    let secure = out.pop().unwrap_or_default();
    let chord = out.pop().unwrap_or_default();
    Ok(PaperReport { chord, secure })
}
