//! The secure call flow with real Ed25519 signatures on the test network: intermediate peers
//! never carry the INVITE, a dropping hop is routed around, a tampered PingRequest is
//! refused and reported.
#![allow(clippy::unwrap_used)]

use overlay::secure::{
    Outcome, RecordAction, RecordValidator, SecureConfig, SecureEvent, SecureNode,
};
use overlay::{Message, NodeId};
use std::sync::Arc;
use std::time::Duration;
use testkit::adversary::{self, forwarded_ping};
use testkit::{CALL_RUN, Network, SecureRing, sparse_seed};

const CSP: NodeId = NodeId(150);
const CALLER: NodeId = NodeId(600);
const CALLEE: NodeId = NodeId(450);

fn net() -> Network<SecureNode> {
    SecureRing::twelve().network(sparse_seed)
}

/// PingRequest copies forwarded by intermediate peers, (hop, next), in delivery order.
fn forwarded(net: &Network<SecureNode>) -> Vec<(NodeId, NodeId)> {
    net.captured()
        .iter()
        .filter(|f| forwarded_ping(f.from.id, &f.msg))
        .map(|f| (f.from.id, f.to))
        .collect()
}

/// The set-up delay of the first call that rang.
fn first_setup(net: &Network<SecureNode>) -> Duration {
    net.events()
        .iter()
        .find_map(|(_, e)| match e {
            SecureEvent::CallRinging { setup, .. } => Some(*setup),
            _ => None,
        })
        .unwrap()
}

/// The call rang, on the caller's retry (at least one call timeout after it was placed).
fn assert_rang_on_the_retry(net: &Network<SecureNode>) {
    let setup = first_setup(net);
    assert!(
        setup >= SecureConfig::default().call_timeout,
        "rang before the retry: {setup:?}"
    );
}

#[test]
fn back_to_back_calls_through_one_csp_ring_at_once_and_nobody_is_blamed() {
    // A CSP's PingRequests must carry distinct nonces whatever its seed: with a repeated
    // nonce, honest hops take the second call's copies for replays of the first, drop them
    // and report their neighbour, and the call only rings on the caller's retry.
    let mut net = net();
    net.call(CALLER, CALLEE);
    net.call(NodeId(550), CALLEE);
    net.call(CALLER, NodeId(400));
    let setups: Vec<(NodeId, Duration)> = net
        .events()
        .iter()
        .filter_map(|(id, e)| match e {
            SecureEvent::CallRinging { setup, .. } => Some((*id, *setup)),
            _ => None,
        })
        .collect();
    assert_eq!(setups.len(), 3, "{:?}", net.events());
    for (caller, setup) in setups {
        assert!(
            setup < SecureConfig::default().call_timeout,
            "{caller:?} rang on a retry after {setup:?}"
        );
    }
    let replays = net.reported(Outcome::Replayed);
    assert!(replays.is_empty(), "honest hops blamed: {replays:?}");
}

#[test]
fn a_copy_stuck_behind_a_congested_link_is_re_routed_and_nobody_is_blamed() {
    // Where a clean call's copies go: pick a hop that passed one to a peer other than the
    // callee.
    let mut clean = net();
    clean.call(CALLER, CALLEE);
    assert!(clean.rang(CALLER) > 0);
    assert!(clean.reported(Outcome::Dropped).is_empty());
    let (hop, next) = *forwarded(&clean)
        .iter()
        .find(|(_, n)| *n != CALLEE)
        .expect("a copy passed between two intermediate peers");

    // Now that hop's link to `next` is full when the copy is to leave.
    let mut net = net();
    net.set_behaviour(
        hop,
        adversary::bounce_if(move |me, to, m| to == next && forwarded_ping(me, m)),
    );
    net.call(CALLER, CALLEE);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    let dropped = net.reported(Outcome::Dropped);
    assert!(
        dropped.is_empty(),
        "reported for a copy that never left {hop:?}: {dropped:?}"
    );
    let forwarded = forwarded(&net);
    assert!(
        forwarded.iter().any(|(h, n)| *h == hop && *n != next),
        "{hop:?} did not re-route: {forwarded:?}"
    );
    assert!(net.reported(Outcome::Misrouted).is_empty());
}

/// The callee's CSP is down: the caller's first attempt goes unanswered, and its retry goes
/// through the layer's other CSP, whose copies reach the callee over the longer arc.
#[test]
fn a_call_whose_csp_is_down_rings_through_another_csp_on_the_retry() {
    let second = NodeId(400);
    let mut net = SecureRing::twelve().with_csp(second).network(sparse_seed);
    // Peer 450's nearest CSP is 400; with it gone only the retry can ring.
    assert!(net.remove(second).is_some());
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let calls_to: Vec<NodeId> = net
        .captured()
        .iter()
        .filter(|f| f.kind() == "call")
        .map(|f| f.to)
        .collect();
    // The first attempt's request to the dead CSP arrives nowhere; the retry's reaches 150.
    assert_eq!(calls_to, vec![CSP]);
    assert_rang_on_the_retry(&net);
}

/// The callee's first Ringing is lost on its way back through the CSP: the caller retries
/// the same call, and the callee rings again
/// without handing the application the same INVITE twice (a SIP front-end would refuse the
/// second as a loop, and the caller would take that for the call's answer).
#[test]
fn a_retry_of_a_call_delivered_already_rings_again_without_a_second_incoming_call() {
    let mut net = net();
    let mut lost = 0;
    net.set_behaviour(
        CALLEE,
        adversary::drop_if(move |_, _, m| {
            let first = matches!(m, Message::Ringing { .. }) && lost < 1;
            lost += usize::from(first);
            first
        }),
    );
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    assert_eq!(net.incoming(CALLEE), 1, "{:?}", net.events());
    // The Ringing the caller got answered its retry.
    assert_rang_on_the_retry(&net);
}

/// The callee's Ringing goes back along the request's path, through the CSP that holds
/// links to both, and rings the call on its first attempt; nothing goes straight from the
/// callee to the caller (a link they rarely share: a TLS handshake on every call's path).
#[test]
fn the_ringing_goes_back_through_the_csp_and_not_straight_to_the_caller() {
    let mut net = net();
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let back: Vec<(NodeId, NodeId)> = net
        .captured()
        .iter()
        .filter(|f| f.kind() == "ringing")
        .map(|f| (f.from.id, f.to))
        .collect();
    assert_eq!(back, vec![(CALLEE, CSP), (CSP, CALLER)]);
    let setup = first_setup(&net);
    assert!(setup < SecureConfig::default().call_timeout, "{setup:?}");
}

/// The callee's first in-dialog messages (a SIP callee's 180 and 200) come straight, so they
/// can overtake its Ringing on the way back through the CSP: the caller keeps them and hands
/// them on right after the call rang, in order. The same from anyone but the callee is
/// refused.
#[test]
fn the_callee_s_messages_that_overtake_its_ringing_follow_it_in_order() {
    let mut net = net();
    let call = net.act(CALLER, |n, now| {
        n.call(now, CALLEE, testkit::TEST_INVITE.to_vec())
    });
    let dialog = |body: &[u8]| Message::Dialog {
        caller: CALLER,
        call,
        body: body.to_vec(),
    };
    assert!(net.deliver(CALLEE, CALLER, dialog(b"180")));
    assert!(net.deliver(NodeId(300), CALLER, dialog(b"forged 200")));
    assert!(net.deliver(CALLEE, CALLER, dialog(b"200")));
    assert!(
        !net.events()
            .iter()
            .any(|(id, e)| *id == CALLER && matches!(e, SecureEvent::Dialog { .. })),
        "handed on before the call rang"
    );
    net.run_for(testkit::CALL_RUN);
    let seen: Vec<String> = net
        .events()
        .iter()
        .filter(|(id, _)| *id == CALLER)
        .filter_map(|(_, e)| match e {
            SecureEvent::CallRinging { .. } => Some("rang".to_string()),
            SecureEvent::Dialog { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(seen, ["rang", "180", "200"]);
    assert_eq!(net.act(CALLER, |n, _| n.dialog_refused()), 1);
}

/// A CSP that alters the Ringing it passes back (here: the route, so the caller would
/// report the wrong peers) cannot pass it off as the callee's: the caller drops the copy,
/// and the call fails instead of ringing on forged words.
#[test]
fn a_ringing_altered_on_its_way_back_is_not_taken() {
    let mut net = net();
    net.set_behaviour(
        CSP,
        adversary::modify_if(
            |_, _, m| matches!(m, Message::Ringing { .. }),
            |m| {
                if let Message::Ringing(r) = m {
                    r.route = vec![NodeId(7), r.callee.id];
                }
            },
        ),
    );
    net.call(CALLER, CALLEE);
    net.run_for(SecureConfig::default().call_timeout * 3);
    assert!(
        net.captured()
            .iter()
            .any(|f| f.from.id == CSP && f.to == CALLER && f.kind() == "ringing"),
        "the altered copy reached the caller"
    );
    assert_eq!(net.rang(CALLER), 0, "{:?}", net.events());
    assert!(
        net.events()
            .iter()
            .any(|(id, e)| *id == CALLER && matches!(e, SecureEvent::CallFailed { .. })),
        "{:?}",
        net.events()
    );
}

/// A CSP passes a Ringing back only for a request it passed on, only from the peer it
/// passed it to, and only once: it is no relay for whatever a peer sends it.
#[test]
fn a_csp_passes_back_only_the_ringing_of_a_request_it_passed() {
    let mut net = net();
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let ringing = net
        .captured()
        .iter()
        .find_map(|f| match &f.msg {
            Message::Ringing(r) if f.to == CSP => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    let before = net.captured().len();
    // Again from the callee (passed once already), then from a peer it was never passed to.
    net.inject(CALLEE, CSP, Message::Ringing(ringing.clone()));
    net.inject(NodeId(300), CSP, Message::Ringing(ringing));
    net.run_for(Duration::from_secs(1));
    assert!(
        !net.captured()[before..]
            .iter()
            .any(|f| f.from.id == CSP && f.kind() == "ringing"),
        "{:?}",
        &net.captured()[before..]
    );
}

#[test]
fn only_csp_and_callee_see_the_invite() {
    let mut net = net();
    net.call(CALLER, CALLEE);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    for f in net.captured() {
        if f.kind() == "call" || f.kind() == "deliver" {
            assert!(
                [CSP, CALLEE].contains(&f.to),
                "{} reached {:?}",
                f.kind(),
                f.to
            );
        }
    }
    assert!(net.captured().iter().any(|f| f.kind() == "ping-request"));
}

#[test]
fn a_dropping_hop_is_survived_and_a_tampering_hop_is_reported() {
    // Find the peers that carry PingRequest copies in a clean run.
    let hops = carriers();
    assert!(hops.len() >= 2, "need two carriers, got {hops:?}");
    // Now one of them tampers and another drops.
    let mut net = net();
    net.set_behaviour(
        hops[0],
        adversary::modify_if(forwarded_ping_of, |m| {
            if let Message::PingRequest(p) = m {
                p.body.target = NodeId(999);
            }
        }),
    );
    net.set_behaviour(hops[1], adversary::drop_if(forwarded_ping_of));
    net.call(CALLER, CALLEE);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    assert!(
        net.reported(Outcome::Modified).contains(&hops[0]),
        "tampering by {:?} not reported: {:?}",
        hops[0],
        net.events()
    );
}

/// Peers that carried a PingRequest copy (callee excluded) in a clean call.
fn carriers() -> Vec<NodeId> {
    let mut clean = net();
    clean.call(CALLER, CALLEE);
    let mut hops: Vec<NodeId> = clean
        .captured()
        .iter()
        .filter(|f| f.kind() == "ping-request" && f.to != CALLEE)
        .map(|f| f.to)
        .collect();
    hops.sort();
    hops.dedup();
    hops
}

/// Dropped reports by peers other than `but`: (reporter, subject).
fn dropped_reports_not_by(net: &Network<SecureNode>, but: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    net.reports_since(0)
        .into_iter()
        .filter(|(by, _, o)| *o == Outcome::Dropped && !but.contains(by))
        .map(|(by, subject, _)| (by, subject))
        .collect()
}

#[test]
fn a_hop_that_acknowledges_a_copy_and_drops_it_is_blamed_alone() {
    // The dropper signs that it holds the copy (its acknowledgement reaches the CSP in the
    // previous hop's receipt), then swallows it: the CSP names it, and nobody else.
    let hops = carriers();
    let dropper = hops[0];
    let mut net = net();
    net.set_behaviour(dropper, adversary::drop_if(forwarded_ping_of));
    net.call(CALLER, CALLEE);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    let dropped = dropped_reports_not_by(&net, &[dropper]);
    assert!(
        dropped.iter().any(|(by, s)| *by == CSP && *s == dropper),
        "the CSP did not name {dropper:?}: {dropped:?}"
    );
    assert!(
        dropped.iter().all(|(_, s)| *s == dropper),
        "an honest peer was blamed with {dropper:?}: {dropped:?}"
    );
}

/// The network after one call from CALLER to CALLEE while `silent` swallows the copies and
/// acknowledgements it is handed.
fn call_past_a_black_hole(silent: NodeId) -> Network<SecureNode> {
    let mut net = net();
    net.set_behaviour(
        silent,
        adversary::drop_if(|_, _, m| {
            matches!(m, Message::PingRequest(_) | Message::PingAck { .. })
        }),
    );
    net.call(CALLER, CALLEE);
    net
}

#[test]
fn a_hop_that_never_acknowledges_is_routed_around_and_named_by_its_sender() {
    // A black hole for copies and acknowledgements alike: whoever passed it a copy hears
    // nothing back, reports it and passes the copy to another hop.
    let silent = carriers()[0];
    let net = call_past_a_black_hole(silent);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    let dropped = dropped_reports_not_by(&net, &[silent]);
    assert!(!dropped.is_empty(), "{:?}", net.events());
    assert!(
        dropped.iter().all(|(_, s)| *s == silent),
        "an honest peer was blamed with {silent:?}: {dropped:?}"
    );
    let around = net.captured().iter().any(|f| match &f.msg {
        Message::PingRequest(p) => {
            f.to != silent
                && p.hops.iter().all(|h| h.hop != silent)
                && net
                    .captured()
                    .iter()
                    .any(|g| g.to == silent && g.from.id == f.from.id && g.kind() == "ping-request")
        }
        _ => false,
    });
    assert!(around, "no sender of {silent:?} re-routed its copy");
}

#[test]
fn when_every_copy_stalls_the_csp_sends_a_round_around_the_peers_that_held_them() {
    // Every peer that carried a copy in a clean call now drops: the CSP sees each copy's
    // hand-overs stop short of the callee, signs those holders into a new round's bodies,
    // and the call rings before the caller's own retry.
    let droppers = carriers();
    let mut net = net();
    for d in &droppers {
        net.set_behaviour(*d, adversary::drop_if(forwarded_ping_of));
    }
    net.call(CALLER, CALLEE);
    let setup = net.events().iter().find_map(|(id, e)| match e {
        SecureEvent::CallRinging { setup, .. } if *id == CALLER => Some(*setup),
        _ => None,
    });
    assert!(
        setup.is_some_and(|s| s < SecureConfig::default().call_timeout),
        "{setup:?} {:?}",
        net.events()
    );
    let avoiding: Vec<Vec<NodeId>> = net
        .captured()
        .iter()
        .filter_map(|f| match &f.msg {
            Message::PingRequest(p) if !p.body.avoid.is_empty() => Some(p.body.avoid.clone()),
            _ => None,
        })
        .collect();
    assert!(!avoiding.is_empty(), "no second round");
    assert!(
        avoiding
            .iter()
            .all(|a| a.iter().all(|p| droppers.contains(p))),
        "an honest peer avoided: {avoiding:?} (droppers {droppers:?})"
    );
}

/// [`forwarded_ping`] in the shape a behaviour's filter takes.
fn forwarded_ping_of(me: NodeId, _to: NodeId, msg: &Message) -> bool {
    forwarded_ping(me, msg)
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

fn net_with_validators() -> Network<SecureNode> {
    let mut net = net();
    for (_, n) in net.peers_mut() {
        n.set_record_validator(Arc::new(PrefixValidator));
    }
    net
}

/// Start a record operation at `at`, run, and return what the event answering it carried.
fn record_op<R>(
    net: &mut Network<SecureNode>,
    at: u128,
    start: impl FnOnce(&mut SecureNode, overlay::Time) -> u64,
    answer: impl Fn(&SecureEvent, u64) -> Option<R>,
) -> R {
    let q = net.act(NodeId(at), start);
    net.run_for(CALL_RUN);
    net.events()
        .iter()
        .find_map(|(id, e)| if id.0 == at { answer(e, q) } else { None })
        .expect("no answer to the record operation")
}

fn put(net: &mut Network<SecureNode>, at: u128, key: u128, value: &[u8]) -> Result<(), String> {
    record_op(
        net,
        at,
        |n, now| n.put(now, NodeId(key), value.to_vec()),
        |e, q| match e {
            SecureEvent::Stored { query, result } if *query == q => Some(result.clone()),
            _ => None,
        },
    )
}

fn get(net: &mut Network<SecureNode>, at: u128, key: u128) -> Option<Vec<u8>> {
    record_op(
        net,
        at,
        |n, now| n.get(now, NodeId(key)),
        |e, q| match e {
            SecureEvent::Fetched { query, value } if *query == q => Some(value.clone()),
            _ => None,
        },
    )
}

/// Does peer `at` hold a record under `key`?
fn holds(net: &Network<SecureNode>, at: u128, key: u128) -> bool {
    net.peer(NodeId(at))
        .chord()
        .records()
        .contains_key(&NodeId(key))
}

#[test]
fn records_are_validated_by_the_responsible_peer_replicated_and_fetched() {
    let mut net = net_with_validators();
    // Key 420 belongs to 450 (successor of 420).
    assert_eq!(put(&mut net, 600, 420, b"ok alice"), Ok(()));
    assert!(holds(&net, 450, 420));
    // Copied to the owner's successors.
    assert!(holds(&net, 500, 420));
    assert_eq!(get(&mut net, 200, 420), Some(b"ok alice".to_vec()));
    // The validator decides.
    assert_eq!(
        put(&mut net, 600, 420, b"evil"),
        Err("refused by validator".into())
    );
    assert_eq!(get(&mut net, 650, 420), Some(b"ok alice".to_vec()));
    assert_eq!(put(&mut net, 600, 420, b"rm"), Ok(()));
    assert_eq!(get(&mut net, 650, 420), None);
    // Oversized records never leave the peer.
    let big = vec![b'o'; 10_000];
    assert_eq!(
        put(&mut net, 600, 421, &big),
        Err("record too large".into())
    );
}

#[test]
fn without_a_validator_no_peer_stores_for_others() {
    let mut net = net();
    assert_eq!(
        put(&mut net, 600, 420, b"ok alice"),
        Err("this peer stores no records".into())
    );
}

#[test]
fn in_dialog_messages_flow_between_the_two_ends_only() {
    let mut net = net();
    net.call(CALLER, CALLEE);
    let (caller, call) = net
        .events()
        .iter()
        .find_map(|(id, e)| match e {
            SecureEvent::IncomingCall { caller, call, .. } if *id == CALLEE => {
                Some((caller.id, *call))
            }
            _ => None,
        })
        .expect("callee saw no IncomingCall");
    assert_eq!(caller, CALLER);
    // Callee answers 200 OK, caller sends ACK.
    assert!(net.act(CALLEE, |n, _| n.send_dialog(
        caller,
        call,
        b"SIP/2.0 200 OK".to_vec()
    )));
    assert!(net.act(CALLER, |n, _| n.send_dialog(caller, call, b"ACK".to_vec())));
    net.run_for(CALL_RUN);
    let got = |at: NodeId| -> Vec<Vec<u8>> {
        net.events()
            .iter()
            .filter_map(|(id, e)| match e {
                SecureEvent::Dialog { body, .. } if *id == at => Some(body.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(got(CALLER), vec![b"SIP/2.0 200 OK".to_vec()]);
    assert_eq!(got(CALLEE), vec![b"ACK".to_vec()]);
    // Only dialog messages travelled outside the call set-up, and only between the ends.
    // A third peer cannot inject into the dialog.
    let before = net.events().len();
    net.inject(
        NodeId(500),
        CALLEE,
        Message::Dialog {
            caller,
            call,
            body: b"BYE".to_vec(),
        },
    );
    net.run_for(CALL_RUN);
    assert!(
        !net.events()[before..]
            .iter()
            .any(|(_, e)| matches!(e, SecureEvent::Dialog { .. })),
        "an outsider's in-dialog message was accepted"
    );
    // An unknown call has nowhere to go.
    assert!(!net.act(CALLEE, |n, _| n.send_dialog(
        caller,
        call + 1000,
        b"x".to_vec()
    )));
}

#[test]
fn replicas_are_taken_only_from_the_responsible_peer() {
    let mut net = net_with_validators();
    let replica = |value: &[u8]| Message::Put {
        query: 0,
        key: NodeId(420),
        value: value.to_vec(),
        replica: true,
    };
    // 650 is not between key 420 and 500 on the ring: its "replica" is refused.
    net.inject(NodeId(650), NodeId(500), replica(b"ok forged"));
    net.run_for(CALL_RUN);
    assert!(!holds(&net, 500, 420));
    // From 450, which owns 420, the same copy is kept.
    net.inject(NodeId(450), NodeId(500), replica(b"ok alice"));
    net.run_for(CALL_RUN);
    assert!(holds(&net, 500, 420));
}

/// When the callee's frames of `kind` were sent (from the callee) or arrived (to it).
fn callee_frames(net: &Network<SecureNode>, kind: &str, to_callee: bool) -> Vec<Duration> {
    net.captured()
        .iter()
        .filter(|f| {
            f.kind() == kind
                && (if to_callee {
                    f.to == CALLEE
                } else {
                    f.from.id == CALLEE
                })
        })
        .map(|f| Duration::from_micros(if to_callee { f.at.0 } else { f.sent.0 }))
        .collect()
}

#[test]
fn the_callee_fetches_as_soon_as_every_copy_is_in() {
    let mut net = net();
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let copies = callee_frames(&net, "ping-request", true);
    let fetches = callee_frames(&net, "fetch", false);
    assert_eq!(copies.len(), 3, "the demo ring's fan-out");
    assert_eq!(fetches.len(), 1);
    let last = copies.iter().max().copied().unwrap();
    assert_eq!(fetches[0], last, "the callee waited after the last copy");
}

#[test]
fn a_missing_copy_keeps_the_callee_waiting_only_as_long_again_as_the_first_took() {
    // A hop acknowledges its copy and drops it: the callee hears two copies out of three.
    // It waits for the third as long again as the first took from the CSP (here less than
    // the floor), not the whole collect window.
    let dropper = carriers()[0];
    let mut net = net();
    net.set_behaviour(dropper, adversary::drop_if(forwarded_ping_of));
    net.call(CALLER, CALLEE);
    assert!(net.rang(CALLER) > 0, "{:?}", net.events());
    let copies = callee_frames(&net, "ping-request", true);
    let fetches = callee_frames(&net, "fetch", false);
    assert_eq!(fetches.len(), 1);
    let first = copies.iter().min().copied().unwrap();
    let cfg = SecureConfig::default();
    assert!(cfg.collect_min < cfg.collect_window);
    assert_eq!(fetches[0] - first, cfg.collect_min, "copies at {copies:?}");
}

#[test]
fn a_copy_that_comes_after_the_fetch_is_not_taken_for_a_new_request() {
    // A black hole on one copy's path: its sender re-routes the copy after the
    // acknowledgement timeout, long after the callee fetched with the other copies. The
    // late copy is acknowledged, but the callee neither asks the SOS again nor fetches again.
    let net = call_past_a_black_hole(carriers()[0]);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let copies = callee_frames(&net, "ping-request", true);
    let fetches = callee_frames(&net, "fetch", false);
    assert_eq!(
        fetches.len(),
        1,
        "copies at {copies:?}, fetches at {fetches:?}"
    );
    assert!(
        copies.iter().any(|c| *c > fetches[0]),
        "no copy came after the fetch: {copies:?}, fetch at {fetches:?}"
    );
    assert_eq!(net.incoming(CALLEE), 1);
}

#[test]
fn the_callee_keeps_its_link_to_the_csp_it_fetched_from() {
    // The CSP's Deliver answers the fetch on that link: the runtime must not close it to
    // make room while the answer is on its way. A second CSP at 500 serves the caller's
    // arc, so the callee's CSP is not on the caller's standing call path.
    let mut net = SecureRing::twelve()
        .with_csp(NodeId(500))
        .network(sparse_seed);
    assert!(
        !net.peer(CALLEE).chord().keeps_link(CSP),
        "Chord alone keeps it"
    );
    assert!(
        net.peer(CALLEE).keeps_link(CSP),
        "the CSP of the callee's arc is on its call path"
    );
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    assert!(net.peer(CALLEE).keeps_link(CSP));
    let caller = net.peer(CALLER);
    assert!(!caller.standing_links().iter().any(|c| c.id == CSP));
    assert_eq!(
        caller.keeps_link(CSP),
        caller.chord().keeps_link(CSP),
        "the caller fetched nothing, and the CSP is not on its call path: only Chord's reasons count"
    );
}

#[test]
fn a_peer_holds_links_to_its_cspg_and_the_csp_of_its_arc() {
    // Every call to another layer leaves through the CSPG, and every call to a peer comes
    // in through the CSP of its arc: links a runtime holds open so that no call waits for a
    // TLS handshake on those legs. CSPs hold theirs to the CSPG, the CSPG to its CSPs.
    let net = SecureRing::twelve()
        .with_csp(NodeId(500))
        .network(sparse_seed);
    let standing = |id: u128| -> Vec<NodeId> {
        net.peer(NodeId(id))
            .standing_links()
            .iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(standing(450), vec![NodeId(100), CSP]);
    assert_eq!(standing(600), vec![NodeId(100), NodeId(500)]);
    assert_eq!(standing(150), vec![NodeId(100)]);
    assert_eq!(standing(500), vec![NodeId(100)]);
    assert_eq!(standing(100), vec![CSP, NodeId(500)]);
    for (peer, on_path) in [(450, CSP), (600, NodeId(500)), (100, CSP)] {
        assert!(net.peer(NodeId(peer)).keeps_link(on_path));
    }
}

/// A call to a peer of another arc of the caller's layer goes first to the layer's CSPG,
/// which passes it to the callee's CSP: two legs over links both ends hold standing, where
/// a request straight to that CSP waited for a TLS handshake. The Ringing comes back the
/// same way. A caller whose own arc's CSP serves the callee still goes straight to it.
#[test]
fn a_call_to_another_arc_goes_through_the_cspg_and_rings_back_the_same_way() {
    let mut net = SecureRing::twelve()
        .with_csp(NodeId(500))
        .network(sparse_seed);
    // 600 is in the arc of CSP 500, its callee 450 in the arc of CSP 150.
    net.call(CALLER, CALLEE);
    assert_eq!(net.rang(CALLER), 1, "{:?}", net.events());
    let legs = |net: &Network<SecureNode>, kind: &str| -> Vec<(NodeId, NodeId)> {
        net.captured()
            .iter()
            .filter(|f| f.kind() == kind)
            .map(|f| (f.from.id, f.to))
            .collect()
    };
    assert_eq!(
        legs(&net, "call"),
        vec![(CALLER, NodeId(100)), (NodeId(100), CSP)]
    );
    assert_eq!(
        legs(&net, "ringing"),
        vec![(CALLEE, CSP), (CSP, NodeId(100)), (NodeId(100), CALLER)]
    );
    assert!(first_setup(&net) < SecureConfig::default().call_timeout);

    // 300 is in the arc of CSP 150, as is its callee 450: straight to the CSP.
    let mut net = SecureRing::twelve()
        .with_csp(NodeId(500))
        .network(sparse_seed);
    net.call(NodeId(300), CALLEE);
    assert_eq!(net.rang(NodeId(300)), 1, "{:?}", net.events());
    assert_eq!(legs(&net, "call"), vec![(NodeId(300), CSP)]);
}
