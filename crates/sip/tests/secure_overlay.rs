//! The front-ends over real `SecureNode`s (12 peers, one CSP and one CSPG, real Ed25519
//! signatures), driven in memory: REGISTER stores a signed record at hash(AoR) under the
//! `RegistrationValidator`; alice's INVITE takes the secure call flow (CSP, PingRequest
//! multicast, fetch) to bob's peer; 180/200/ACK/BYE travel as dialog messages; SDP arrives
//! unchanged. A third peer cannot take over bob's AoR.
#![allow(clippy::unwrap_used)]

use overlay::secure::{
    Directory, Ed25519Registry, Ed25519Signer, FirstHops, LayerArcs, OverlayContext, Role, Routing,
    SecureConfig, SecureEvent, SecureNode,
};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time};
use sip::secure_overlay::SecureAdapter;
use sip::ua::{UaConfig, UaEvent, UserAgent};
use sip::{FrontEnd, FrontEndConfig, Peer, RegistrationValidator, SipTransmit, Transport};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const IDS: [u128; 12] = [100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650];
const CSP: u128 = 150;
const CSPG: u128 = 100;
const UNIX: u64 = 1_700_000_000_000;
const OFFER: &[u8] =
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &[u8] =
    b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

struct Fe {
    fe: FrontEnd,
    ad: SecureAdapter,
    addr: SocketAddr,
}

struct World {
    nodes: BTreeMap<NodeId, SecureNode>,
    fes: BTreeMap<NodeId, Fe>,
    uas: Vec<(UserAgent, Peer)>,
    queue: VecDeque<(Contact, NodeId, Message)>,
    wire: VecDeque<(Peer, SipTransmit)>,
    events: Vec<(usize, UaEvent)>,
    /// Overlay messages delivered: (to, kind).
    seen: Vec<(NodeId, &'static str)>,
    now: Time,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl World {
    /// Front-ends on peers 600 (alice), 450 (bob) and 300 (mallory).
    fn new() -> World {
        World::with_users(["alice", "bob", "bob"])
    }

    /// One UA per front-end, on peers 600, 450 and 300 in that order.
    fn with_users(users: [&str; 3]) -> World {
        let space = IdSpace::new(10).unwrap();
        let arcs = LayerArcs::new(space, [0, 1, 1000]).unwrap();
        let mut reg = Ed25519Registry::default();
        let mut pkcs = BTreeMap::new();
        for id in IDS {
            let (s, doc) = Ed25519Signer::generate().unwrap();
            reg.insert(NodeId(id), s.public_key());
            pkcs.insert(id, doc);
        }
        let reg = Arc::new(reg);
        let mut dir = Directory::default();
        dir.csps[1] = vec![NodeId(CSP)];
        dir.cspgs[1] = vec![NodeId(CSPG)];
        let cfg = SecureConfig {
            fanout: 3,
            first_hops: FirstHops::Diverse,
            ..SecureConfig::default()
        };
        let ctx = OverlayContext {
            cfg: Arc::new(cfg),
            arcs,
            directory: Arc::new(dir),
            infrastructure: Arc::new(vec![
                Contact::id_only(NodeId(CSP)),
                Contact::id_only(NodeId(CSPG)),
            ]),
            verifier: reg.clone(),
        };
        let mut chord = ChordConfig::new(space);
        chord.successors = 3;
        chord.successor_shortcut = true;
        let chord = Arc::new(chord);
        let sorted: Vec<NodeId> = IDS.iter().map(|i| NodeId(*i)).collect();
        let n = sorted.len();
        let mut nodes = BTreeMap::new();
        let validator = Arc::new(RegistrationValidator {
            verifier: reg.clone(),
            space,
        });
        for (i, id) in sorted.iter().enumerate() {
            let pred = Some(Contact::id_only(sorted[(i + n - 1) % n]));
            let succs: Vec<Contact> = (1..=3)
                .map(|k| Contact::id_only(sorted[(i + k) % n]))
                .collect();
            let fingers: Vec<Contact> = (0..10)
                .map(|k| {
                    let start = space.finger_start(*id, k);
                    let j = sorted.partition_point(|x| *x < start);
                    Contact::id_only(sorted[j % n])
                })
                .collect();
            let c = ChordNode::converged(
                chord.clone(),
                Contact::id_only(*id),
                [i as u8; 32],
                Time::ZERO,
                pred,
                succs,
                fingers,
            );
            let role = match id.0 {
                CSP => Role::Csp,
                CSPG => Role::Cspg,
                _ => Role::Peer,
            };
            let signer = Box::new(Ed25519Signer::from_pkcs8(pkcs[&id.0].as_ref()).unwrap());
            let mut node =
                SecureNode::new(c, ctx.clone(), role, Routing::Secure, signer, UNIX, [7; 32]);
            node.set_record_validator(validator.clone());
            nodes.insert(*id, node);
        }
        let mut fes = BTreeMap::new();
        for (id, ip) in [
            (600u128, "127.0.0.1"),
            (450, "127.0.0.2"),
            (300, "127.0.0.3"),
        ] {
            let a = addr(&format!("{ip}:5060"));
            let mut cfg = FrontEndConfig::new("p2psip.test", a);
            cfg.unix_offset_ms = UNIX;
            let signer = Box::new(Ed25519Signer::from_pkcs8(pkcs[&id].as_ref()).unwrap());
            fes.insert(
                NodeId(id),
                Fe {
                    fe: FrontEnd::new(cfg, NodeId(id), signer, reg.clone()),
                    ad: SecureAdapter::new(NodeId(id), space),
                    addr: a,
                },
            );
        }
        let mut uas = Vec::new();
        for (i, (user, fe_ip)) in users
            .into_iter()
            .zip(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
            .enumerate()
        {
            let local = Peer {
                transport: Transport::Udp,
                addr: addr(&format!("127.0.1.{}:6000", i + 1)),
            };
            let cfg = UaConfig {
                user: user.into(),
                domain: "p2psip.test".into(),
                local,
                proxy: Peer {
                    transport: Transport::Udp,
                    addr: addr(&format!("{fe_ip}:5060")),
                },
                sdp_answer: ANSWER.to_vec(),
                auto_answer: true,
                timers: sipx_sip::Timers::default(),
            };
            uas.push((UserAgent::new(cfg, i as u64 + 1), local));
        }
        World {
            nodes,
            fes,
            uas,
            queue: VecDeque::new(),
            wire: VecDeque::new(),
            events: Vec::new(),
            seen: Vec::new(),
            now: Time::from_millis(10),
        }
    }

    /// Drain node `id`: transmits to the overlay queue, events to its front-end.
    fn drain_node(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let me = node.chord().contact();
            let mut busy = false;
            while let Some(t) = node.poll_transmit() {
                self.queue.push_back((me, t.to.id, t.msg));
            }
            while let Some(ev) = node.poll_event() {
                busy = true;
                if let SecureEvent::RankRoutes { query, .. } = ev {
                    node.handle_ranking(self.now, query, Some(0));
                } else if let Some(f) = self.fes.get_mut(&id)
                    && let Some(oe) = f.ad.translate(ev)
                {
                    f.fe.handle_overlay_event(self.now, oe, &mut f.ad.with(node));
                }
            }
            if !busy {
                break;
            }
        }
        if let Some(f) = self.fes.get_mut(&id) {
            while let Some(t) = f.fe.poll_transmit() {
                let from = Peer {
                    transport: t.to.transport,
                    addr: f.addr,
                };
                self.wire.push_back((from, t));
            }
        }
    }

    fn step(&mut self, ms: u64) {
        for _ in 0..500 {
            let mut busy = false;
            for (ua, local) in &mut self.uas {
                while let Some(t) = ua.poll_transmit() {
                    self.wire.push_back((*local, t));
                }
            }
            for (i, (ua, _)) in self.uas.iter_mut().enumerate() {
                while let Some(e) = ua.poll_event() {
                    self.events.push((i, e));
                }
            }
            if let Some((from, t)) = self.wire.pop_front() {
                busy = true;
                let now = self.now;
                let target = self
                    .fes
                    .iter()
                    .find(|(_, f)| f.addr == t.to.addr)
                    .map(|(id, _)| *id);
                if let Some(id) = target {
                    let m = sip::msg::parse_datagram(&t.bytes).unwrap();
                    let node = self.nodes.get_mut(&id).unwrap();
                    let f = self.fes.get_mut(&id).unwrap();
                    f.fe.handle_message(now, from, m, &mut f.ad.with(node));
                    self.drain_node(id);
                } else if let Some((ua, _)) = self.uas.iter_mut().find(|(_, l)| l.addr == t.to.addr)
                {
                    ua.handle_datagram(now, from, &t.bytes);
                }
            }
            if let Some((from, to, msg)) = self.queue.pop_front() {
                busy = true;
                self.seen.push((to, msg.name()));
                self.now = Time(self.now.0 + 200);
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.handle_message(self.now, from, msg);
                    self.drain_node(to);
                }
            }
            if !busy {
                break;
            }
        }
        self.now = self.now + Duration::from_millis(ms);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let now = self.now;
            self.nodes.get_mut(&id).unwrap().handle_timeout(now);
            if let Some(f) = self.fes.get_mut(&id) {
                let node = self.nodes.get_mut(&id).unwrap();
                f.fe.handle_timeout(now, &mut f.ad.with(node));
            }
            self.drain_node(id);
        }
        for (ua, _) in &mut self.uas {
            ua.handle_timeout(self.now);
        }
    }

    fn settle(&mut self, ms: u64) {
        for _ in 0..(ms / 50).max(1) {
            self.step(50);
        }
    }

    fn has(&self, ua: usize, f: impl Fn(&UaEvent) -> bool) -> bool {
        self.events.iter().any(|(i, e)| *i == ua && f(e))
    }
}

#[test]
fn sip_call_through_the_secure_overlay() {
    let mut w = World::new();
    let now = w.now;
    w.uas[0].0.register(now, 300).unwrap();
    w.uas[1].0.register(now, 300).unwrap();
    w.settle(500);
    assert!(
        w.has(0, |e| *e == UaEvent::Registered { code: 200 }),
        "{:?}",
        w.events
    );
    assert!(
        w.has(1, |e| *e == UaEvent::Registered { code: 200 }),
        "{:?}",
        w.events
    );
    // Mallory's peer cannot take bob's AoR while it is live.
    let now = w.now;
    w.uas[2].0.register(now, 300).unwrap();
    w.settle(500);
    assert!(
        w.has(2, |e| *e == UaEvent::Registered { code: 403 }),
        "{:?}",
        w.events
    );

    let now = w.now;
    let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
    w.settle(3000);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Ringing { call: c } if *c == call)
        ),
        "{:?}",
        w.events
    );
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Answered { call: c, sdp } if *c == call && sdp == ANSWER)
        ),
        "{:?}",
        w.events
    );
    assert!(
        w.has(
            1,
            |e| matches!(e, UaEvent::Incoming { call: c, sdp } if *c == call && sdp == OFFER)
        ),
        "{:?}",
        w.events
    );
    assert!(
        !w.has(2, |e| matches!(e, UaEvent::Incoming { .. })),
        "mallory's UA got the call"
    );
    let now = w.now;
    w.uas[0].0.bye(now, &call).unwrap();
    w.settle(1000);
    assert!(
        w.has(0, |e| matches!(e, UaEvent::Ended { call: c } if *c == call)),
        "{:?}",
        w.events
    );
    assert!(
        w.has(1, |e| matches!(e, UaEvent::Ended { call: c } if *c == call)),
        "{:?}",
        w.events
    );

    // The call took the secure flow: PingRequest copies, the CSP delivered the INVITE to
    // bob's peer only, and SIP went as dialog messages between 600 and 450 only.
    let kinds = |k: &str| w.seen.iter().filter(|(_, n)| *n == k).count();
    assert!(kinds("ping-request") >= 2, "{:?}", w.seen);
    assert!(kinds("put") >= 2 && kinds("get") >= 1, "{:?}", w.seen);
    for (to, k) in &w.seen {
        if *k == "deliver" {
            assert_eq!(to.0, 450);
        }
        if *k == "dialog" {
            assert!([450, 600].contains(&to.0), "dialog reached {to:?}");
        }
    }
    assert!(
        kinds("dialog") >= 5,
        "180, 200, ACK, BYE, 200: {:?}",
        w.seen
    );

    // Unknown AoR: 404.
    let now = w.now;
    let c2 = w.uas[0].0.invite(now, "carol", OFFER).unwrap();
    w.settle(1000);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Failed { call: c, code: 404 } if *c == c2)
        ),
        "{:?}",
        w.events
    );
}

/// `scripts/bench-sip` row 5: user41 and user42 (like user89 and user35) hash to the same
/// key of the 11-bit space (and of this 10-bit one), registered at different peers. The
/// second registration must not replace the first: each call reaches its own callee.
#[test]
fn aors_whose_hashes_collide_keep_their_own_registrations() {
    let space = IdSpace::new(10).unwrap();
    assert_eq!(
        sip::aor_key(space, "sip:user41@p2psip.test"),
        sip::aor_key(space, "sip:user42@p2psip.test")
    );
    let mut w = World::with_users(["alice", "user41", "user42"]);
    for ua in [1, 2] {
        let now = w.now;
        w.uas[ua].0.register(now, 300).unwrap();
        w.settle(500);
        assert!(
            w.has(ua, |e| *e == UaEvent::Registered { code: 200 }),
            "{:?}",
            w.events
        );
    }
    for (ua, user) in [(1, "user41"), (2, "user42")] {
        let now = w.now;
        let call = w.uas[0].0.invite(now, user, OFFER).unwrap();
        w.settle(3000);
        assert!(
            w.has(
                0,
                |e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call)
            ),
            "call to {user}: {:?}",
            w.events
        );
        assert!(
            w.has(
                ua,
                |e| matches!(e, UaEvent::Incoming { call: c, .. } if *c == call)
            ),
            "{user}'s UA did not get its call: {:?}",
            w.events
        );
        let now = w.now;
        w.uas[0].0.bye(now, &call).unwrap();
        w.settle(1000);
    }
}
