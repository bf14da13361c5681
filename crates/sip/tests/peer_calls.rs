//! Calls between peers' own user agents, on the same `PeerCore` the runtime drives: the
//! INVITE takes the secure call flow (CSP, PingRequest multicast, the callee fetches it),
//! the dialog (180, 200, ACK, BYE, 200) travels as dialog messages between the two peers
//! only, and both ends forget the call once it ends.
#![allow(clippy::unwrap_used)]

use overlay::driver::SecureCore;
use overlay::{NodeId, Time};
use sip::ua::UaEvent;
use sip::{CallEvent, PeerCore, PeerEvent};
use std::time::Duration;
use testkit::{Network, SecureRing, UNIX_EPOCH_MS};

const CALLER: NodeId = NodeId(600);
const CALLEE: NodeId = NodeId(450);
const OFFER: &[u8] = b"v=0\r\no=600 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

fn network() -> Network<PeerCore> {
    let ring = SecureRing::twelve();
    let peers = ring
        .nodes(|_| UNIX_EPOCH_MS, |_| [7; 32])
        .into_iter()
        .map(PeerCore::new);
    Network::new(peers, Time::from_millis(10), 1)
}

/// The caller's own user agent calls the callee with [`OFFER`]; the Call-ID.
fn call_the_callee(net: &mut Network<PeerCore>) -> String {
    let (call, _) = net
        .act(CALLER, |p, now| p.place_call(now, CALLEE, None, OFFER))
        .unwrap();
    call
}

/// What peer `id`'s own user agent reported.
fn ua_events(net: &Network<PeerCore>, id: NodeId) -> Vec<UaEvent> {
    net.events()
        .iter()
        .filter(|(who, _)| *who == id)
        .filter_map(|(_, e)| match e {
            PeerEvent::Call(CallEvent::Ua { event, .. }) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// The SIP first lines peer `id` sent (`>`) and received (`<`), in order.
fn sip_lines(net: &Network<PeerCore>, id: NodeId) -> Vec<String> {
    net.events()
        .iter()
        .filter(|(who, _)| *who == id)
        .filter_map(|(_, e)| match e {
            PeerEvent::Call(CallEvent::Sip { sent, line, .. }) => {
                Some(format!("{} {line}", if *sent { ">" } else { "<" }))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_between_two_peers_runs_the_whole_dialog_over_the_secure_flow() {
    let mut net = network();
    let call = call_the_callee(&mut net);
    net.run_for(Duration::from_secs(5));
    let caller = ua_events(&net, CALLER);
    assert!(
        caller.contains(&UaEvent::Ringing { call: call.clone() }),
        "{caller:?}"
    );
    let answered = caller
        .iter()
        .find_map(|e| match e {
            UaEvent::Answered { call: c, sdp } if *c == call => Some(sdp.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        answered.starts_with(b"v=0\r\no=450 "),
        "the callee's answer"
    );
    let callee = ua_events(&net, CALLEE);
    assert!(
        callee.contains(&UaEvent::Incoming {
            call: call.clone(),
            sdp: OFFER.to_vec()
        }),
        "the offer arrives unchanged: {callee:?}"
    );

    net.act(CALLER, |p, now| p.hang_up(now, &call)).unwrap();
    net.run_for(Duration::from_secs(2));
    assert!(ua_events(&net, CALLER).contains(&UaEvent::Ended { call: call.clone() }));
    assert!(ua_events(&net, CALLEE).contains(&UaEvent::Ended { call: call.clone() }));
    let want = [
        "> INVITE sip:450@p2psip.invalid SIP/2.0",
        "< SIP/2.0 180 Ringing",
        "< SIP/2.0 200 OK",
        "> ACK ",
        "> BYE ",
        "< SIP/2.0 200 OK",
    ];
    let lines = sip_lines(&net, CALLER);
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    for (got, want) in lines.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}: {lines:?}");
    }
    // Both ends forgot the call: the user agents and the nodes' dialog tables.
    for id in [CALLER, CALLEE] {
        assert_eq!(net.peer(id).own_calls(), 0);
        assert_eq!(net.peer(id).node_ref().dialog_count(), 0, "peer {id}");
    }
    // The INVITE took the secure flow; the dialog went between the two peers only.
    for f in net.captured() {
        if f.kind() == "deliver" {
            assert_eq!(f.to, CALLEE);
        }
        if f.kind() == "dialog" {
            assert!(
                [CALLER, CALLEE].contains(&f.to),
                "dialog reached {:?}",
                f.to
            );
        }
    }
    let dialogs = net
        .captured()
        .iter()
        .filter(|f| f.kind() == "dialog")
        .count();
    assert_eq!(dialogs, 5, "180, 200, ACK, BYE and its 200");
}

#[test]
fn a_call_to_a_peer_that_is_not_there_fails_and_is_forgotten() {
    let mut net = network();
    let (call, handle) = net
        .act(CALLER, |p, now| p.place_call(now, NodeId(451), None, OFFER))
        .unwrap();
    net.run_for(Duration::from_secs(10));
    let failed = net.events().iter().any(|(who, e)| {
        *who == CALLER
            && matches!(e, PeerEvent::Overlay(overlay::secure::SecureEvent::CallFailed { call, .. }) if *call == handle)
    });
    assert!(failed, "{:?}", net.events());
    assert_eq!(net.peer(CALLER).own_calls(), 0, "call {call} is forgotten");
}

#[test]
fn an_answered_call_whose_ack_never_comes_is_given_up() {
    let mut net = network();
    // Whatever the caller sends after the INVITE is lost: its ACK never reaches the callee.
    let call = call_the_callee(&mut net);
    net.set_behaviour(
        CALLER,
        testkit::adversary::drop_if(|_, _, m| matches!(m, overlay::Message::Dialog { .. })),
    );
    net.run_for(Duration::from_secs(40));
    let callee = ua_events(&net, CALLEE);
    assert!(
        callee.contains(&UaEvent::Failed {
            call: call.clone(),
            code: 408
        }),
        "{callee:?}"
    );
    assert_eq!(net.peer(CALLEE).own_calls(), 0);
    assert_eq!(net.peer(CALLEE).node_ref().dialog_count(), 0);
}

#[test]
fn a_peer_that_does_not_answer_leaves_the_call_to_its_application() {
    let ring = SecureRing::twelve();
    let peers = ring
        .nodes(|_| UNIX_EPOCH_MS, |_| [7; 32])
        .into_iter()
        .map(|n| PeerCore::new(n).with_answering(false));
    let mut net = Network::new(peers, Time::from_millis(10), 1);
    call_the_callee(&mut net);
    net.run_for(Duration::from_secs(5));
    let incoming = net.events().iter().any(|(who, e)| {
        *who == CALLEE
            && matches!(
                e,
                PeerEvent::Overlay(overlay::secure::SecureEvent::IncomingCall { .. })
            )
    });
    assert!(incoming, "{:?}", net.events());
    assert!(ua_events(&net, CALLEE).is_empty());
    assert_eq!(net.peer(CALLEE).own_calls(), 0);
}

#[test]
fn a_peer_cannot_end_another_peers_call_by_naming_its_call_id() {
    let mut net = network();
    let call = call_the_callee(&mut net);
    // Mallory (300) has a call of her own to the callee, and sends a BYE for the caller's
    // call down her own dialog.
    let mallory = NodeId(300);
    let (_, handle) = net
        .act(mallory, |p, now| p.place_call(now, CALLEE, None, OFFER))
        .unwrap();
    net.run_for(Duration::from_secs(5));
    let bye = sip::msg::build_request(sip::msg::RequestParts {
        method: sip::msg::SipMethod::Bye,
        uri: "sip:450@p2psip.invalid",
        via: "SIP/2.0/TCP 127.0.0.3:5060;branch=z9hG4bK-forged",
        from: "<sip:600@p2psip.invalid>;tag=forged",
        to: "<sip:450@p2psip.invalid>",
        call_id: &call,
        cseq: 9,
        contact: None,
        sdp: None,
    })
    .unwrap()
    .to_bytes();
    net.act(mallory, |p, now| {
        p.node_at(now).send_dialog(mallory, handle, bye);
    });
    net.run_for(Duration::from_secs(2));
    assert!(
        !ua_events(&net, CALLEE).contains(&UaEvent::Ended { call: call.clone() }),
        "the forged BYE ended the caller's call"
    );
    // The caller's own BYE still ends it.
    net.act(CALLER, |p, now| p.hang_up(now, &call)).unwrap();
    net.run_for(Duration::from_secs(2));
    assert!(ua_events(&net, CALLEE).contains(&UaEvent::Ended { call }));
}
