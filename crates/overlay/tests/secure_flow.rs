//! The secure call flow with real Ed25519 signatures, driven by a minimal in-test driver:
//! intermediate peers never carry the INVITE, a dropping hop is routed around, a tampered
//! PingRequest is refused and reported.
#![allow(clippy::unwrap_used)]

use overlay::secure::{
    Directory, Ed25519Registry, Ed25519Signer, FirstHops, LayerArcs, Outcome, OverlayContext, Role,
    Routing, SecureConfig, SecureEvent, SecureNode,
};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

const IDS: [u128; 12] = [100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650];
const CSP: u128 = 150;
const CSPG: u128 = 100;

struct Net {
    nodes: BTreeMap<NodeId, SecureNode>,
    queue: VecDeque<(Contact, NodeId, Message)>,
    seen: Vec<(NodeId, &'static str)>,
    events: Vec<(NodeId, SecureEvent)>,
    now: Time,
    tamper: Option<NodeId>,
    drop_at: Option<NodeId>,
}

impl Net {
    fn new() -> Net {
        let space = IdSpace::new(10).unwrap();
        // One layer holds everyone (arcs: [0, 1000) is layer 2, nothing else in use).
        let arcs = LayerArcs::new(space, [0, 1, 1000]).unwrap();
        let mut reg = Ed25519Registry::default();
        let mut signers = BTreeMap::new();
        for id in IDS {
            let (s, _) = Ed25519Signer::generate().unwrap();
            reg.insert(NodeId(id), s.public_key());
            signers.insert(id, s);
        }
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
            verifier: Arc::new(reg),
        };
        let mut chord = ChordConfig::new(space);
        chord.successors = 3;
        chord.successor_shortcut = true;
        let chord = Arc::new(chord);
        let sorted: Vec<NodeId> = IDS.iter().map(|i| NodeId(*i)).collect();
        let n = sorted.len();
        let mut nodes = BTreeMap::new();
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
            let signer = Box::new(signers.remove(&id.0).unwrap());
            nodes.insert(
                *id,
                SecureNode::new(
                    c,
                    ctx.clone(),
                    role,
                    Routing::Secure,
                    signer,
                    1_700_000_000_000,
                    [7; 32],
                ),
            );
        }
        Net {
            nodes,
            queue: VecDeque::new(),
            seen: Vec::new(),
            events: Vec::new(),
            now: Time::from_millis(10),
            tamper: None,
            drop_at: None,
        }
    }

    fn drain(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let me = node.chord().contact();
        while let Some(t) = node.poll_transmit() {
            let mut msg = t.msg;
            let forwarding =
                matches!(&msg, Message::PingRequest(p) if p.hops.last().map(|h| h.hop) == Some(id));
            if forwarding && self.drop_at == Some(id) {
                continue;
            }
            if forwarding
                && self.tamper == Some(id)
                && let Message::PingRequest(p) = &mut msg
            {
                p.body.target = NodeId(999);
            }
            self.queue.push_back((me, t.to.id, msg));
        }
        while let Some(ev) = node.poll_event() {
            if let SecureEvent::RankRoutes { query, .. } = ev {
                // The SOS: take the first route.
                node.handle_ranking(self.now, query, Some(0));
                self.queue.extend(
                    std::iter::from_fn(|| node.poll_transmit()).map(|t| (me, t.to.id, t.msg)),
                );
            } else {
                self.events.push((id, ev));
            }
        }
    }

    fn run(&mut self) {
        for _ in 0..20 {
            while let Some((from, to, msg)) = self.queue.pop_front() {
                self.seen.push((to, msg.name()));
                self.now = Time(self.now.0 + 1000);
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.handle_message(self.now, from, msg);
                    self.drain(to);
                }
            }
            // Let collection windows and timers run.
            self.now = Time(self.now.0 + 200_000);
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.nodes.get_mut(&id).unwrap().handle_timeout(self.now);
                self.drain(id);
            }
        }
    }

    fn call(&mut self, from: u128, to: u128) {
        let now = self.now;
        self.nodes.get_mut(&NodeId(from)).unwrap().call(
            now,
            NodeId(to),
            b"INVITE sip:bob SIP/2.0".to_vec(),
        );
        self.drain(NodeId(from));
        self.run();
    }

    fn rang(&self, caller: u128) -> bool {
        self.events
            .iter()
            .any(|(id, e)| id.0 == caller && matches!(e, SecureEvent::CallRinging { .. }))
    }
}

#[test]
fn only_csp_and_callee_see_the_invite() {
    let mut net = Net::new();
    net.call(600, 450);
    assert!(net.rang(600), "{:?}", net.events);
    for (to, kind) in &net.seen {
        if *kind == "call" || *kind == "deliver" {
            assert!([CSP, 450].contains(&to.0), "{kind} reached {to:?}");
        }
    }
    assert!(net.seen.iter().any(|(_, k)| *k == "ping-request"));
}

#[test]
fn a_dropping_hop_is_survived_and_a_tampering_hop_is_reported() {
    // Find the peers that carry PingRequest copies in a clean run.
    let mut clean = Net::new();
    clean.call(600, 450);
    let mut hops: Vec<u128> = clean
        .seen
        .iter()
        .filter(|(to, k)| *k == "ping-request" && to.0 != 450)
        .map(|(to, _)| to.0)
        .collect();
    hops.sort();
    hops.dedup();
    assert!(hops.len() >= 2, "need two carriers, got {hops:?}");
    // Now one of them tampers and another drops.
    let mut net = Net::new();
    net.tamper = Some(NodeId(hops[0]));
    net.drop_at = Some(NodeId(hops[1]));
    net.call(600, 450);
    assert!(net.rang(600), "{:?}", net.events);
    let modified = net.events.iter().any(|(_, e)| {
        matches!(e, SecureEvent::Report { subject, outcome: Outcome::Modified } if subject.0 == hops[0])
    });
    assert!(
        modified,
        "tampering by {} not reported: {:?}",
        hops[0], net.events
    );
}
