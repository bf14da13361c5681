//! The secure call flow with real Ed25519 signatures, driven by a minimal in-test driver:
//! intermediate peers never carry the INVITE, a dropping hop is routed around, a tampered
//! PingRequest is refused and reported.
#![allow(clippy::unwrap_used)]

use overlay::secure::{
    Directory, Ed25519Registry, Ed25519Signer, FirstHops, LayerArcs, Outcome, OverlayContext,
    RecordAction, RecordValidator, Role, Routing, SecureConfig, SecureEvent, SecureNode,
};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

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
    /// A link (from, to) whose send queue is full: what `from` forwards on it is handed back
    /// to `from` as not sent, as the runtime does.
    congested: Option<(NodeId, NodeId)>,
    /// PingRequest copies forwarded, (hop, next), in order.
    forwarded: Vec<(NodeId, NodeId)>,
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
                    sparse_seed(*id),
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
            congested: None,
            forwarded: Vec::new(),
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
            if forwarding && self.congested == Some((id, t.to.id)) {
                node.handle_not_sent(self.now, t.to.id, &msg);
                continue;
            }
            if forwarding {
                self.forwarded.push((id, t.to.id));
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

/// A seed of the form the demo and tests use: the Node-ID, then zeros.
fn sparse_seed(id: NodeId) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&id.0.to_le_bytes());
    seed
}

#[test]
fn back_to_back_calls_through_one_csp_ring_at_once_and_nobody_is_blamed() {
    // A CSP's PingRequests must carry distinct nonces whatever its seed: with a repeated
    // nonce, honest hops take the second call's copies for replays of the first, drop them
    // and report their neighbour, and the call only rings on the caller's retry.
    let mut net = Net::new();
    net.call(600, 450);
    net.call(550, 450);
    net.call(600, 400);
    let setups: Vec<(NodeId, Duration)> = net
        .events
        .iter()
        .filter_map(|(id, e)| match e {
            SecureEvent::CallRinging { setup, .. } => Some((*id, *setup)),
            _ => None,
        })
        .collect();
    assert_eq!(setups.len(), 3, "{:?}", net.events);
    for (caller, setup) in setups {
        assert!(
            setup < SecureConfig::default().call_timeout,
            "{caller:?} rang on a retry after {setup:?}"
        );
    }
    let replays: Vec<_> = net
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                SecureEvent::Report {
                    outcome: Outcome::Replayed,
                    ..
                }
            )
        })
        .collect();
    assert!(replays.is_empty(), "honest hops blamed: {replays:?}");
}

/// Reports of one kind in `events`.
fn reports(events: &[(NodeId, SecureEvent)], kind: Outcome) -> Vec<NodeId> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            SecureEvent::Report { subject, outcome } if *outcome == kind => Some(*subject),
            _ => None,
        })
        .collect()
}

#[test]
fn a_copy_stuck_behind_a_congested_link_is_re_routed_and_nobody_is_blamed() {
    // Where a clean call's copies go: pick a hop that passed one to a peer other than the
    // callee.
    let mut clean = Net::new();
    clean.call(600, 450);
    assert!(clean.rang(600));
    assert!(reports(&clean.events, Outcome::Dropped).is_empty());
    let (hop, next) = *clean
        .forwarded
        .iter()
        .find(|(_, n)| n.0 != 450)
        .expect("a copy passed between two intermediate peers");

    // Now that hop's link to `next` is full when the copy is to leave.
    let mut net = Net::new();
    net.congested = Some((hop, next));
    net.call(600, 450);
    assert!(net.rang(600), "{:?}", net.events);
    let dropped = reports(&net.events, Outcome::Dropped);
    assert!(
        dropped.is_empty(),
        "reported for a copy that never left {hop:?}: {dropped:?}"
    );
    assert!(
        net.forwarded.iter().any(|(h, n)| *h == hop && *n != next),
        "{hop:?} did not re-route: {:?}",
        net.forwarded
    );
    assert!(reports(&net.events, Outcome::Misrouted).is_empty());
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

/// Accepts records that start with `ok`, removes on `rm`, refuses the rest.
struct PrefixValidator;

impl RecordValidator for PrefixValidator {
    fn validate(
        &self,
        _key: NodeId,
        _old: Option<&[u8]>,
        new: &[u8],
        _now_unix_ms: u64,
    ) -> Result<RecordAction, String> {
        if new.starts_with(b"ok") {
            Ok(RecordAction::Store)
        } else if new == b"rm" {
            Ok(RecordAction::Remove)
        } else {
            Err("refused by validator".into())
        }
    }
}

impl Net {
    fn with_validators(mut self) -> Net {
        for n in self.nodes.values_mut() {
            n.set_record_validator(Arc::new(PrefixValidator));
        }
        self
    }

    fn put(&mut self, at: u128, key: u128, value: &[u8]) -> Result<(), String> {
        let now = self.now;
        let q = self
            .nodes
            .get_mut(&NodeId(at))
            .unwrap()
            .put(now, NodeId(key), value.to_vec());
        self.drain(NodeId(at));
        self.run();
        self.events
            .iter()
            .find_map(|(id, e)| match e {
                SecureEvent::Stored { query, result } if id.0 == at && *query == q => {
                    Some(result.clone())
                }
                _ => None,
            })
            .expect("no Stored event")
    }

    fn get(&mut self, at: u128, key: u128) -> Option<Vec<u8>> {
        let now = self.now;
        let q = self
            .nodes
            .get_mut(&NodeId(at))
            .unwrap()
            .get(now, NodeId(key));
        self.drain(NodeId(at));
        self.run();
        self.events
            .iter()
            .find_map(|(id, e)| match e {
                SecureEvent::Fetched { query, value } if id.0 == at && *query == q => {
                    Some(value.clone())
                }
                _ => None,
            })
            .expect("no Fetched event")
    }
}

#[test]
fn records_are_validated_by_the_responsible_peer_replicated_and_fetched() {
    let mut net = Net::new().with_validators();
    // Key 420 belongs to 450 (successor of 420).
    assert_eq!(net.put(600, 420, b"ok alice"), Ok(()));
    assert!(
        net.nodes[&NodeId(450)]
            .chord()
            .records()
            .contains_key(&NodeId(420))
    );
    // Copied to the owner's successors.
    assert!(
        net.nodes[&NodeId(500)]
            .chord()
            .records()
            .contains_key(&NodeId(420))
    );
    assert_eq!(net.get(200, 420), Some(b"ok alice".to_vec()));
    // The validator decides.
    assert_eq!(
        net.put(600, 420, b"evil"),
        Err("refused by validator".into())
    );
    assert_eq!(net.get(650, 420), Some(b"ok alice".to_vec()));
    assert_eq!(net.put(600, 420, b"rm"), Ok(()));
    assert_eq!(net.get(650, 420), None);
    // Oversized records never leave the peer.
    let big = vec![b'o'; 10_000];
    assert_eq!(net.put(600, 421, &big), Err("record too large".into()));
}

#[test]
fn without_a_validator_no_peer_stores_for_others() {
    let mut net = Net::new();
    assert_eq!(
        net.put(600, 420, b"ok alice"),
        Err("this peer stores no records".into())
    );
}

#[test]
fn in_dialog_messages_flow_between_the_two_ends_only() {
    let mut net = Net::new();
    net.call(600, 450);
    let (caller, call) = net
        .events
        .iter()
        .find_map(|(id, e)| match e {
            SecureEvent::IncomingCall { caller, call, .. } if id.0 == 450 => {
                Some((caller.id, *call))
            }
            _ => None,
        })
        .expect("callee saw no IncomingCall");
    assert_eq!(caller, NodeId(600));
    // Callee answers 200 OK, caller sends ACK.
    assert!(net.nodes.get_mut(&NodeId(450)).unwrap().send_dialog(
        caller,
        call,
        b"SIP/2.0 200 OK".to_vec()
    ));
    net.drain(NodeId(450));
    assert!(
        net.nodes
            .get_mut(&NodeId(600))
            .unwrap()
            .send_dialog(caller, call, b"ACK".to_vec())
    );
    net.drain(NodeId(600));
    net.run();
    let got = |at: u128| -> Vec<Vec<u8>> {
        net.events
            .iter()
            .filter_map(|(id, e)| match e {
                SecureEvent::Dialog { body, .. } if id.0 == at => Some(body.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(got(600), vec![b"SIP/2.0 200 OK".to_vec()]);
    assert_eq!(got(450), vec![b"ACK".to_vec()]);
    // Only dialog messages travelled outside the call set-up, and only between the ends.
    // A third peer cannot inject into the dialog.
    let before = net.events.len();
    net.queue.push_back((
        Contact::id_only(NodeId(500)),
        NodeId(450),
        Message::Dialog {
            caller,
            call,
            body: b"BYE".to_vec(),
        },
    ));
    net.run();
    assert!(
        !net.events[before..]
            .iter()
            .any(|(_, e)| matches!(e, SecureEvent::Dialog { .. })),
        "an outsider's in-dialog message was accepted"
    );
    // An unknown call has nowhere to go.
    assert!(!net.nodes.get_mut(&NodeId(450)).unwrap().send_dialog(
        caller,
        call + 1000,
        b"x".to_vec()
    ));
}

#[test]
fn replicas_are_taken_only_from_the_responsible_peer() {
    let mut net = Net::new().with_validators();
    // 650 is not between key 420 and 500 on the ring: its "replica" is refused.
    net.queue.push_back((
        Contact::id_only(NodeId(650)),
        NodeId(500),
        Message::Put {
            query: 0,
            key: NodeId(420),
            value: b"ok forged".to_vec(),
            replica: true,
        },
    ));
    net.run();
    assert!(
        !net.nodes[&NodeId(500)]
            .chord()
            .records()
            .contains_key(&NodeId(420))
    );
    // From 450, which owns 420, the same copy is kept.
    net.queue.push_back((
        Contact::id_only(NodeId(450)),
        NodeId(500),
        Message::Put {
            query: 0,
            key: NodeId(420),
            value: b"ok alice".to_vec(),
            replica: true,
        },
    ));
    net.run();
    assert!(
        net.nodes[&NodeId(500)]
            .chord()
            .records()
            .contains_key(&NodeId(420))
    );
}
