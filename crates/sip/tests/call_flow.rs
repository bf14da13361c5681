//! Two front-ends and two UAs, all sans-IO on a virtual clock, joined by the in-process
//! overlay: REGISTER, the full call (INVITE/180/200/ACK/BYE) with SDP passed unchanged,
//! 404 for unknown AoRs, unregister, the owner rule, UDP loss survived by retransmission.
#![allow(clippy::unwrap_used)]

use overlay::secure::{Ed25519Registry, Ed25519Signer};
use overlay::{NodeId, Time};
use sip::ua::{UaConfig, UaEvent, UserAgent};
use sip::{FrontEnd, FrontEndConfig, LoopbackNet, LoopbackOverlay, Peer, SipTransmit, Transport};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = "p2psip.test";
const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

struct Node {
    fe: FrontEnd,
    ov: LoopbackOverlay,
    addr: SocketAddr,
}

struct World {
    net: LoopbackNet,
    nodes: Vec<Node>,
    uas: Vec<(UserAgent, Peer)>,
    wire: VecDeque<(Peer, SipTransmit)>,
    events: Vec<(usize, UaEvent)>,
    now: Time,
    /// Drop the next datagram whose text starts with this.
    drop_next: Option<&'static str>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl World {
    fn new(peers: usize, transport: Transport) -> World {
        let mut keys = Ed25519Registry::default();
        let mut signers = Vec::new();
        for i in 0..peers {
            let (s, _) = Ed25519Signer::generate().unwrap();
            keys.insert(NodeId(100 + i as u128), s.public_key());
            signers.push(s);
        }
        let keys = Arc::new(keys);
        let net = LoopbackNet::new(keys.clone(), 1_700_000_000_000);
        let mut nodes = Vec::new();
        for (i, s) in signers.into_iter().enumerate() {
            let a = addr(&format!("127.0.0.{}:5060", i + 1));
            let mut cfg = FrontEndConfig::new(DOMAIN, a);
            cfg.unix_offset_ms = 1_700_000_000_000;
            let id = NodeId(100 + i as u128);
            nodes.push(Node {
                fe: FrontEnd::new(cfg, id, Box::new(s), keys.clone()),
                ov: net.join(id),
                addr: a,
            });
        }
        let mut uas = Vec::new();
        for (i, (user, sdp)) in [("alice", OFFER), ("bob", ANSWER)].into_iter().enumerate() {
            let fe = nodes[i.min(peers - 1)].addr;
            let local = Peer {
                transport,
                addr: addr(&format!("127.0.0.{}:6000", i + 1)),
            };
            let cfg = UaConfig {
                user: user.into(),
                domain: DOMAIN.into(),
                local,
                proxy: Peer {
                    transport,
                    addr: fe,
                },
                sdp_answer: sdp.to_vec(),
                auto_answer: true,
                timers: sipx_sip::Timers::default(),
            };
            uas.push((UserAgent::new(cfg, i as u64 + 1), local));
        }
        World {
            net,
            nodes,
            uas,
            wire: VecDeque::new(),
            events: Vec::new(),
            now: Time::from_millis(1),
            drop_next: None,
        }
    }

    fn collect(&mut self) {
        for n in &mut self.nodes {
            while let Some(t) = n.fe.poll_transmit() {
                let from = Peer {
                    transport: t.to.transport,
                    addr: n.addr,
                };
                self.wire.push_back((from, t));
            }
        }
        for (i, (ua, local)) in self.uas.iter_mut().enumerate() {
            while let Some(t) = ua.poll_transmit() {
                self.wire.push_back((*local, t));
            }
            while let Some(e) = ua.poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// Deliver everything, overlay events included, until quiet; then advance `ms`.
    fn run(&mut self, ms: u64) {
        for _ in 0..200 {
            self.collect();
            let mut busy = false;
            while let Some((from, t)) = self.wire.pop_front() {
                busy = true;
                if let Some(p) = self.drop_next
                    && t.bytes.starts_with(p.as_bytes())
                {
                    self.drop_next = None;
                    continue;
                }
                let now = self.now;
                if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == t.to.addr) {
                    let m = sip::msg::parse_datagram(&t.bytes).unwrap();
                    let mut ov = n.ov.clone();
                    n.fe.handle_message(
                        now,
                        Peer {
                            transport: t.to.transport,
                            addr: from.addr,
                        },
                        m,
                        &mut ov,
                    );
                } else if let Some((ua, _)) = self.uas.iter_mut().find(|(_, l)| l.addr == t.to.addr)
                {
                    ua.handle_datagram(now, from, &t.bytes);
                }
                self.collect();
            }
            for n in &mut self.nodes {
                let mut ov = n.ov.clone();
                while let Some(ev) = n.ov.poll_event() {
                    busy = true;
                    n.fe.handle_overlay_event(self.now, ev, &mut ov);
                }
            }
            if !busy {
                break;
            }
        }
        self.now = self.now + Duration::from_millis(ms);
        for n in &mut self.nodes {
            let mut ov = n.ov.clone();
            n.fe.handle_timeout(self.now, &mut ov);
        }
        for (ua, _) in &mut self.uas {
            ua.handle_timeout(self.now);
        }
    }

    fn settle(&mut self, ms: u64) {
        for _ in 0..(ms / 50).max(1) {
            self.run(50);
        }
    }

    fn has(&self, ua: usize, f: impl Fn(&UaEvent) -> bool) -> bool {
        self.events.iter().any(|(i, e)| *i == ua && f(e))
    }

    fn register_both(&mut self) {
        let now = self.now;
        self.uas[0].0.register(now, 300).unwrap();
        self.uas[1].0.register(now, 300).unwrap();
        self.settle(100);
        assert!(
            self.has(0, |e| *e == UaEvent::Registered { code: 200 }),
            "{:?}",
            self.events
        );
        assert!(
            self.has(1, |e| *e == UaEvent::Registered { code: 200 }),
            "{:?}",
            self.events
        );
    }

    fn full_call(&mut self) {
        self.register_both();
        let now = self.now;
        let call = self.uas[0].0.invite(now, "bob", OFFER).unwrap();
        self.settle(1500);
        assert!(
            self.has(
                0,
                |e| matches!(e, UaEvent::Ringing { call: c } if *c == call)
            ),
            "{:?}",
            self.events
        );
        assert!(
            self.has(
                0,
                |e| matches!(e, UaEvent::Answered { call: c, sdp } if *c == call && sdp == ANSWER)
            ),
            "{:?}",
            self.events
        );
        assert!(
            self.has(
                1,
                |e| matches!(e, UaEvent::Incoming { call: c, sdp } if *c == call && sdp == OFFER)
            ),
            "{:?}",
            self.events
        );
        let now = self.now;
        self.uas[0].0.bye(now, &call).unwrap();
        self.settle(200);
        assert!(
            self.has(0, |e| matches!(e, UaEvent::Ended { call: c } if *c == call)),
            "{:?}",
            self.events
        );
        assert!(
            self.has(1, |e| matches!(e, UaEvent::Ended { call: c } if *c == call)),
            "{:?}",
            self.events
        );
        // Both front-ends forgot the call once BYE was answered.
        self.settle(40_000);
        assert_eq!(self.nodes[0].fe.calls(), 0);
        assert_eq!(self.nodes[1].fe.calls(), 0);
        assert_eq!(
            self.net.tracked_call_ends(),
            0,
            "the overlay was told the call ended"
        );
    }
}

#[test]
fn full_call_over_udp_and_tcp() {
    World::new(2, Transport::Udp).full_call();
    World::new(2, Transport::Tcp).full_call();
}

#[test]
fn lost_invite_and_lost_ringing_are_retransmitted_over_udp() {
    let mut w = World::new(2, Transport::Udp);
    w.drop_next = Some("INVITE");
    w.full_call();
    let mut w = World::new(2, Transport::Udp);
    w.register_both();
    w.drop_next = Some("SIP/2.0 200 OK");
    let now = w.now;
    let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
    w.settle(3000);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call)
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn unknown_aor_is_404_and_unregistered_aor_too() {
    let mut w = World::new(2, Transport::Udp);
    w.register_both();
    let now = w.now;
    let call = w.uas[0].0.invite(now, "carol", OFFER).unwrap();
    w.settle(200);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Failed { call: c, code: 404 } if *c == call)
        ),
        "{:?}",
        w.events
    );
    assert_eq!(w.nodes[0].fe.stats().not_found, 1);
    // Bob unregisters: calls to him are 404 now.
    let now = w.now;
    w.uas[1].0.register(now, 0).unwrap();
    w.settle(100);
    let now = w.now;
    let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
    w.settle(200);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Failed { call: c, code: 404 } if *c == call)
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn registration_lapses_without_refresh() {
    let mut w = World::new(2, Transport::Udp);
    let now = w.now;
    w.uas[1].0.register(now, 2).unwrap();
    w.settle(100);
    w.settle(2500);
    let now = w.now;
    let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
    w.settle(200);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Failed { call: c, code: 404 } if *c == call)
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn another_peer_cannot_take_over_a_live_aor() {
    // Both UAs at peer 0 first; then "bob" at peer 1 registers the AoR "alice" owned by peer 0.
    let mut w = World::new(2, Transport::Udp);
    w.register_both();
    let local = Peer {
        transport: Transport::Udp,
        addr: addr("127.0.0.9:6000"),
    };
    let cfg = UaConfig {
        user: "alice".into(),
        domain: DOMAIN.into(),
        local,
        proxy: Peer {
            transport: Transport::Udp,
            addr: w.nodes[1].addr,
        },
        sdp_answer: ANSWER.to_vec(),
        auto_answer: true,
        timers: sipx_sip::Timers::default(),
    };
    w.uas.push((UserAgent::new(cfg, 9), local));
    let now = w.now;
    w.uas[2].0.register(now, 300).unwrap();
    w.settle(100);
    assert!(
        w.has(2, |e| *e == UaEvent::Registered { code: 403 }),
        "{:?}",
        w.events
    );
}

#[test]
fn callee_peer_gone_gives_480() {
    let mut w = World::new(2, Transport::Udp);
    w.register_both();
    w.nodes[1].ov.leave();
    let now = w.now;
    let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
    w.settle(200);
    assert!(
        w.has(
            0,
            |e| matches!(e, UaEvent::Failed { call: c, code: 480 } if *c == call)
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn caller_cancels_a_ringing_call() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut w = World::new(2, transport);
        w.register_both();
        // Bob's phone rings and nobody picks up.
        let bob = &mut w.uas[1].0;
        let cfg_answer = false;
        bob.set_auto_answer(cfg_answer);
        let now = w.now;
        let call = w.uas[0].0.invite(now, "bob", OFFER).unwrap();
        w.settle(200);
        assert!(
            w.has(
                0,
                |e| matches!(e, UaEvent::Ringing { call: c } if *c == call)
            ),
            "{:?}",
            w.events
        );
        let now = w.now;
        w.uas[0].0.cancel(now, &call);
        w.settle(500);
        assert!(
            w.has(
                0,
                |e| matches!(e, UaEvent::Failed { call: c, code: 487 } if *c == call)
            ),
            "{:?}",
            w.events
        );
        assert!(
            w.has(1, |e| matches!(e, UaEvent::Ended { call: c } if *c == call)),
            "{:?}",
            w.events
        );
        w.settle(40_000);
        assert_eq!(w.nodes[0].fe.calls(), 0);
        assert_eq!(w.nodes[1].fe.calls(), 0);
    }
}
