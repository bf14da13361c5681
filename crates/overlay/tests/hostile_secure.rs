//! Hostile peers at the sans-IO level, with real Ed25519 signatures: replayed, forged and
//! stripped PingRequests against `SecureNode`, and a peer lying in its stabilize answers
//! against `ChordNode`. Each case checks what the receiving honest peer does (drop, and
//! negative evidence for the SOS as `SecureEvent::Report` about the right peer) and that the
//! ring and the call flow still work afterwards.
#![allow(clippy::unwrap_used)]

use overlay::secure::{CallFailure, Outcome, SecureEvent, SecureNode, Signer, record_bytes};
use overlay::wire::{HopRecord, PingRequest};
use overlay::{ChordConfig, ChordNode, Contact, Event, Message, NodeId, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use testkit::adversary::Action;
use testkit::{Network, SecureRing, UNIX_EPOCH_MS, converged_ring};

const CSP: u128 = 150;
const CALLER: u128 = 600;
const CALLEE: u128 = 450;

/// The secure overlay, with the ring kept so a test can sign as any peer (a compromised one).
struct Net {
    net: Network<SecureNode>,
    ring: SecureRing,
}

impl Net {
    fn new() -> Net {
        Net::with_clocks(|_| 0)
    }

    /// Peers whose Unix clocks are off by `skew_ms(id)` milliseconds.
    fn with_clocks(skew_ms: impl Fn(u128) -> i64) -> Net {
        let ring = SecureRing::twelve();
        let nodes = ring.nodes(
            |id| UNIX_EPOCH_MS.saturating_add_signed(skew_ms(id.0)),
            |_| [7; 32],
        );
        Net {
            net: Network::new(nodes, Time::from_millis(10), 1),
            ring,
        }
    }

    /// Deliver one message now (as the runtime would, from an authenticated sender).
    /// Deliver the PingRequest copy `p` to `to` as if `from` sent it. Returns the event
    /// and delivery counts from before, for [`Net::reports_by`] and [`Net::forwarded_ping`].
    fn inject(&mut self, from: Contact, to: NodeId, p: PingRequest) -> (usize, usize) {
        let since = (self.events().len(), self.net.captured().len());
        self.net.deliver(from.id, to, Message::PingRequest(p));
        since
    }

    fn run(&mut self) {
        self.net.run_for(testkit::CALL_RUN);
    }

    fn call(&mut self, from: u128, to: u128) {
        self.net.call(NodeId(from), NodeId(to));
    }

    fn rang(&self, caller: u128) -> usize {
        self.net.rang(NodeId(caller))
    }

    fn incoming(&self, callee: u128) -> usize {
        self.net.incoming(NodeId(callee))
    }

    fn events(&self) -> &[(NodeId, SecureEvent)] {
        self.net.events()
    }

    /// Reports emitted by `by` since event index `since`.
    fn reports_by(&self, by: u128, since: usize) -> Vec<(NodeId, Outcome)> {
        self.net
            .reports_since(since)
            .into_iter()
            .filter(|(reporter, _, _)| reporter.0 == by)
            .map(|(_, subject, outcome)| (subject, outcome))
            .collect()
    }

    /// PingRequests delivered, with their sender and receiver.
    fn ping_hops(&self) -> Vec<(Contact, NodeId, PingRequest)> {
        self.net
            .captured()
            .iter()
            .filter_map(|f| match &f.msg {
                Message::PingRequest(p) => Some((f.from, f.to, p.clone())),
                _ => None,
            })
            .collect()
    }

    /// Did `id` forward a PingRequest since delivery index `since`?
    fn forwarded_ping(&self, id: u128, since: usize) -> bool {
        self.net
            .in_flight()
            .chain(self.net.captured()[since..].iter())
            .any(|f| f.from.id.0 == id && matches!(f.msg, Message::PingRequest(_)))
    }

    /// The ring is intact: every peer still has its true successor and predecessor.
    fn ring_intact(&self) {
        let ids = &self.ring.ids;
        let n = ids.len();
        for (i, id) in ids.iter().enumerate() {
            let c = self.net.peer(*id).chord();
            assert_eq!(c.successor().map(|s| s.id), Some(ids[(i + 1) % n]));
            assert_eq!(c.predecessor().map(|s| s.id), Some(ids[(i + n - 1) % n]));
        }
    }
}

/// A clean call, keeping what the PingRequest copies looked like on the way.
fn clean_run() -> Net {
    let mut net = Net::new();
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    assert_eq!(net.incoming(CALLEE), 1);
    net
}

/// A copy delivered to an intermediate hop (not the target), with at least one hop record.
fn mid_copy(net: &Net) -> (Contact, NodeId, PingRequest) {
    net.ping_hops()
        .into_iter()
        .find(|(_, to, p)| to.0 != CALLEE && !p.hops.is_empty())
        .expect("a copy between two hops")
}

/// A copy as it arrived at the target.
fn last_copy(net: &Net) -> (Contact, NodeId, PingRequest) {
    net.ping_hops()
        .into_iter()
        .find(|(_, to, _)| to.0 == CALLEE)
        .expect("a copy at the target")
}

/// A clean call, then the copy `pick` chooses sent again by its sender, and the network run:
/// the net, the copy's sender and receiver, and the event count from before the replay.
fn replayed(pick: fn(&Net) -> (Contact, NodeId, PingRequest)) -> (Net, Contact, NodeId, usize) {
    let mut net = clean_run();
    let (from, to, p) = pick(&net);
    let (ev0, _) = net.inject(from, to, p);
    net.run();
    (net, from, to, ev0)
}

/// Deliver `bad` to `to` from `from` and check: not forwarded, one report about `from` with
/// `want`, and a later clean call still rings.
fn expect_refused(mut net: Net, from: Contact, to: NodeId, bad: PingRequest, want: Outcome) {
    let (ev0, d0) = net.inject(from, to, bad);
    let reports = net.reports_by(to.0, ev0);
    assert_eq!(reports, vec![(from.id, want)], "reports by {to:?}");
    assert!(
        !net.forwarded_ping(to.0, d0 + 1),
        "{to:?} forwarded a bad copy"
    );
    net.run();
    net.ring_intact();
    let rang = net.rang(CALLER);
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), rang + 1, "a later clean call rings");
}

/// A mid-route copy of a clean call, changed by `tamper` and sent on by its sender: dropped
/// and reported as modified.
fn a_tampered_copy_is_refused(tamper: impl FnOnce(&mut PingRequest)) {
    let net = clean_run();
    let (from, to, mut p) = mid_copy(&net);
    tamper(&mut p);
    expect_refused(net, from, to, p, Outcome::Modified);
}

#[test]
fn a_forged_csp_signature_is_dropped_and_reported() {
    a_tampered_copy_is_refused(|p| p.csp_sig[3] ^= 0x40);
}

#[test]
fn a_stripped_csp_signature_is_dropped_and_reported() {
    a_tampered_copy_is_refused(|p| p.csp_sig.clear());
}

#[test]
fn a_stripped_hop_signature_is_dropped_and_reported() {
    a_tampered_copy_is_refused(|p| p.hops.last_mut().unwrap().sig.clear());
}

#[test]
fn a_re_signed_body_with_a_changed_target_is_dropped_and_reported() {
    // The sender changes the target and signs its own hop record correctly over the new
    // body: the CSP's signature no longer matches.
    let net = clean_run();
    let (from, to, mut p) = mid_copy(&net);
    p.body.target = NodeId(CALLEE + 50);
    p.hops.pop();
    let prev = p
        .hops
        .last()
        .map(|h| h.sig.clone())
        .unwrap_or_else(|| p.csp_sig.clone());
    let sig = net
        .ring
        .signer(from.id)
        .sign(&record_bytes(&p.body, &prev, from.id));
    p.hops.push(HopRecord { hop: from.id, sig });
    expect_refused(net, from, to, p, Outcome::Modified);
}

#[test]
fn a_hop_record_forged_in_another_peers_name_is_dropped_and_reported() {
    // The sender adds a record for a peer that never saw the copy, signed with its own key.
    let net = clean_run();
    let (from, to, mut p) = mid_copy(&net);
    let prev = p.hops.last().unwrap().sig.clone();
    let other = net
        .ring
        .ids
        .iter()
        .map(|i| i.0)
        .find(|i| *i != from.id.0 && *i != to.0 && *i != CALLEE)
        .unwrap();
    let sig = net
        .ring
        .signer(from.id)
        .sign(&record_bytes(&p.body, &prev, NodeId(other)));
    p.hops.push(HopRecord {
        hop: NodeId(other),
        sig,
    });
    // The copy now claims to come from `other`, but `from` sent it.
    expect_refused(net, from, to, p, Outcome::Modified);
}

#[test]
fn a_copy_whose_sender_removed_its_own_record_is_dropped_and_reported() {
    let net = clean_run();
    let (from, to, mut p) = mid_copy(&net);
    // Forwarded without signing: the last record names the previous hop, not the sender.
    p.hops.pop();
    // The CSP itself needs no record: stripping nothing would check nothing.
    assert!(
        !(p.hops.is_empty() && from.id.0 == CSP),
        "the chosen copy is the CSP's own, with no record to strip"
    );
    expect_refused(net, from, to, p, Outcome::Modified);
}

#[test]
fn a_stale_copy_replayed_after_the_window_is_dropped_and_reported() {
    let mut net = clean_run();
    let (from, to, p) = mid_copy(&net);
    // 31 s later (the window is 30 s) the sender replays its copy.
    net.net.run_for(Duration::from_secs(31));
    let (ev0, d0) = net.inject(from, to, p);
    assert_eq!(
        net.reports_by(to.0, ev0),
        vec![(from.id, Outcome::Replayed)]
    );
    assert!(!net.forwarded_ping(to.0, d0 + 1));
    assert_eq!(net.incoming(CALLEE), 1, "no second call from a replay");
    net.run();
    net.ring_intact();
}

/// The callee's Ringing carries SHA-256 of the request it received; a Ringing whose digest
/// names another request (the request was swapped on the way to the callee) fails the call
/// as tampered.
#[test]
fn a_ringing_for_another_request_fails_the_call_as_tampered() {
    let mut net = Net::new();
    // Whichever CSP or CSPG delivers the request swaps the INVITE in it: the callee rings for
    // (and signs the digest of) a request the caller never sent.
    for id in net.ring.ids.clone() {
        net.net.set_behaviour(
            id,
            testkit::adversary::modify_if(
                |_, _, m| matches!(m, Message::Deliver { .. }),
                |m| {
                    if let Message::Deliver { request, .. } = m {
                        request.invite = b"INVITE sip:mallory SIP/2.0".to_vec();
                    }
                },
            ),
        );
    }
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 0);
    assert!(
        net.events().iter().any(|(id, e)| id.0 == CALLER
            && matches!(
                e,
                SecureEvent::CallFailed {
                    callee,
                    reason: CallFailure::Tampered,
                    ..
                } if *callee == NodeId(CALLEE)
            )),
        "{:?}",
        net.events()
    );
}

#[test]
fn a_copy_replayed_to_the_target_is_dropped_and_reported() {
    let (net, from, _, ev0) = replayed(last_copy);
    assert_eq!(
        net.reports_by(CALLEE, ev0),
        vec![(from.id, Outcome::Replayed)]
    );
    assert_eq!(
        net.incoming(CALLEE),
        1,
        "the replay did not ring the callee again"
    );
    net.ring_intact();
}

/// A hop replays its (validly signed) copy to an honest next hop that is not the target. The
/// honest hop forwards it again (intermediate hops keep no replay memory), so the target sees
/// a duplicate from the honest hop and blames it, not the replaying one.
#[test]
fn a_replay_through_an_honest_hop_blames_the_replayer() {
    // A copy from hop X to hop H where H is not the target.
    let (net, x, h, ev0) = replayed(mid_copy);
    let blamed: Vec<(NodeId, NodeId, Outcome)> = net
        .net
        .reports_since(ev0)
        .into_iter()
        .filter(|(_, _, outcome)| !outcome.is_positive())
        .collect();
    eprintln!("replay by {x:?} via {h:?}: reports {blamed:?}");
    assert!(
        blamed.iter().all(|(_, s, _)| s.0 != h.0 || h.0 == CALLEE),
        "honest hop {h:?} was blamed for {x:?}'s replay: {blamed:?}"
    );
    assert!(
        blamed.iter().any(|(_, s, _)| *s == x.id),
        "the replaying hop {x:?} was not reported: {blamed:?}"
    );
}

// ---- a peer lying in its stabilize answers (plain Chord, sans-IO) ----

const RING: [u128; 8] = [40, 160, 290, 400, 530, 650, 780, 900];
const LIAR: u128 = 530;
/// IDs that do not exist; the liar offers them as neighbours.
const GHOSTS: [u128; 4] = [401, 402, 531, 532];

/// A plain Chord ring whose member `LIAR` answers every stabilize question with ghosts: a
/// predecessor between the asker and itself, and a successor list of peers that do not
/// exist. Frames to ghosts are lost.
struct ChordNet {
    net: Network<ChordNode>,
}

impl ChordNet {
    fn new() -> ChordNet {
        let mut cfg = ChordConfig::new(SecureRing::twelve().space);
        cfg.successors = 3;
        cfg.stabilize_every = Duration::from_millis(200);
        cfg.fix_fingers_every = Duration::from_millis(100);
        cfg.check_predecessor_every = Duration::from_millis(300);
        cfg.rpc_timeout = Duration::from_millis(100);
        cfg.lookup_timeout = Duration::from_secs(2);
        let ids: Vec<NodeId> = RING.iter().map(|i| NodeId(*i)).collect();
        let nodes = converged_ring(Arc::new(cfg), &ids, |i| [i as u8 + 1; 32]);
        let mut net = Network::new(nodes, Time::ZERO, 1);
        let mut lies = 0u64;
        net.set_behaviour(NodeId(LIAR), move |_now, _me, to, mut msg: Message| {
            if let Message::Neighbours { pred, succs, .. } = &mut msg {
                *pred = Some(Contact::id_only(NodeId(GHOSTS[(lies % 2) as usize])));
                *succs = GHOSTS
                    .iter()
                    .map(|g| Contact::id_only(NodeId(*g)))
                    .collect();
                lies += 1;
            }
            vec![Action::Send { to, msg }]
        });
        ChordNet { net }
    }

    /// Neighbour answers the liar sent.
    fn lies(&self) -> usize {
        self.net
            .captured()
            .iter()
            .chain(self.net.in_flight())
            .filter(|f| f.from.id.0 == LIAR && f.kind() == "neighbours")
            .count()
    }

    fn run(&mut self, ms: u64) {
        self.net.run_for(Duration::from_millis(ms));
    }

    fn honest(&self) -> impl Iterator<Item = u128> {
        RING.iter().copied().filter(|i| *i != LIAR)
    }

    fn owner(key: u128) -> u128 {
        RING.iter().copied().find(|&i| i >= key).unwrap_or(RING[0])
    }

    /// Finished lookups: (peer, lookup) → (key, owner).
    fn done(&self) -> BTreeMap<(NodeId, u64), (NodeId, Contact)> {
        self.net
            .events()
            .iter()
            .filter_map(|(id, e)| match e {
                Event::LookupDone {
                    lookup, key, owner, ..
                } => Some(((*id, *lookup), (*key, *owner))),
                _ => None,
            })
            .collect()
    }

    /// Lookups given up.
    fn failed(&self) -> usize {
        self.net
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::LookupFailed { .. }))
            .count()
    }

    /// Honest peers whose first successor or predecessor is currently a ghost.
    fn poisoned(&self) -> Vec<u128> {
        self.honest()
            .filter(|id| {
                let c = self.net.peer(NodeId(*id));
                let ghost = |x: Option<Contact>| x.is_some_and(|x| GHOSTS.contains(&x.id.0));
                ghost(c.successor()) || ghost(c.predecessor())
            })
            .collect()
    }
}

/// A member answering GetNeighbours with non-existent peers. Expected: honest peers try the
/// ghosts, time out and fall back; the ring stays correct and lookups from honest peers end
/// at the true owner.
#[test]
fn a_peer_lying_in_stabilize_answers_does_not_break_the_ring() {
    let mut net = ChordNet::new();
    net.run(5_000);
    assert!(net.lies() > 10, "the liar was never asked: {}", net.lies());
    // Sample over time how often an honest peer points at a ghost.
    let mut samples = 0;
    let mut poisoned = 0;
    for _ in 0..50 {
        net.run(97);
        samples += 1;
        if !net.poisoned().is_empty() {
            poisoned += 1;
        }
    }
    eprintln!(
        "liar told {} lies; an honest peer pointed at a ghost in {poisoned} of {samples} samples",
        net.lies()
    );
    // Lookups from every honest peer for every 16th key.
    let mut asked = BTreeMap::new();
    for from in net.honest().collect::<Vec<_>>() {
        for key in (0..1024u128).step_by(16) {
            let l = net
                .net
                .act(NodeId(from), |n, now| n.lookup(now, NodeId(key)));
            asked.insert((NodeId(from), l), (from, key));
        }
        net.run(300);
    }
    net.run(3_000);
    let done = net.done();
    let mut wrong = 0;
    for (l, (from, key)) in &asked {
        match done.get(l) {
            Some((k, owner)) => {
                assert_eq!(k.0, *key);
                if owner.id.0 != ChordNet::owner(*key) {
                    wrong += 1;
                    eprintln!("lookup from {from} for {key} ended at {}", owner.id.0);
                }
            }
            None => eprintln!("lookup from {from} for {key} did not complete"),
        }
    }
    let completed = asked.keys().filter(|l| done.contains_key(*l)).count();
    eprintln!(
        "{} lookups: {completed} completed, {wrong} wrong owner, {} failed",
        asked.len(),
        net.failed()
    );
    assert_eq!(wrong, 0, "lookups ended at a wrong owner");
    assert!(
        completed * 100 >= asked.len() * 99,
        "only {completed} of {} lookups completed",
        asked.len()
    );
    // No honest peer keeps a ghost as its successor or predecessor for good.
    net.run(2_000);
    let mut still = net.poisoned();
    for _ in 0..5 {
        if still.is_empty() {
            break;
        }
        net.run(50);
        still = net.poisoned();
    }
    eprintln!("ghost neighbours at the end: {still:?}");
    let n = RING.len();
    for (i, id) in RING.iter().enumerate() {
        if *id == LIAR {
            continue;
        }
        let c = net.net.peer(NodeId(*id));
        let succ = c.successor().map(|s| s.id.0);
        if !GHOSTS.contains(&succ.unwrap_or(0)) {
            assert_eq!(succ, Some(RING[(i + 1) % n]), "successor of {id}");
        }
    }
}

/// The network after one call from CALLER to CALLEE with the CSP's clock `skew` ms off
/// and every other clock right.
fn call_with_csp_skew(skew: i64) -> Net {
    let mut net = Net::with_clocks(|id| if id == CSP { skew } else { 0 });
    net.call(CALLER, CALLEE);
    net
}

/// Clock skew between a CSP and the peers on its routes: PingRequest timestamps are checked
/// against each hop's clock, allowed `timestamp_window_ms` (30 s) either way. A CSP whose
/// clock is 20 s behind or ahead still gets its calls through, with no evidence against
/// anyone; 40 s behind or ahead, the first hops refuse its copies (reported as `Replayed`
/// against the CSP itself, the peer that sent them) and the call does not ring. A hop whose
/// own clock is 20 s off forwards normally.
#[test]
fn clock_skew_within_the_window_works_and_beyond_it_is_refused() {
    for skew in [-20_000i64, 20_000] {
        let net = call_with_csp_skew(skew);
        assert_eq!(
            net.rang(CALLER),
            1,
            "CSP skewed {skew} ms: {:?}",
            net.events()
        );
        let reports: Vec<_> = net
            .net
            .reports_since(0)
            .into_iter()
            .filter(|(_, _, outcome)| *outcome != Outcome::Delivered)
            .collect();
        assert!(reports.is_empty(), "skew {skew} ms: {reports:?}");
    }
    // Every peer but the CSP 20 s off: the hops' clocks, not the CSP's.
    let mut net = Net::with_clocks(|id| if id == CSP { 0 } else { 20_000 });
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "hops skewed 20 s: {:?}", net.events());

    for skew in [-40_000i64, 40_000] {
        let net = call_with_csp_skew(skew);
        let rang = net.rang(CALLER);
        assert_eq!(rang, 0, "CSP skewed {skew} ms rang: {:?}", net.events());
        assert_eq!(net.incoming(CALLEE), 0);
        let refused = net.net.reported(Outcome::Replayed);
        assert!(!refused.is_empty(), "skew {skew} ms: nothing refused");
        assert!(
            refused.iter().all(|s| s.0 == CSP),
            "skew {skew} ms: evidence against an honest hop: {refused:?}"
        );
    }
}
