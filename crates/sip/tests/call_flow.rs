//! Two front-ends and two UAs, all sans-IO on a virtual clock, joined by the in-process
//! overlay: REGISTER, the full call (INVITE/180/200/ACK/BYE) with SDP passed unchanged,
//! 404 for unknown AoRs, unregister, the owner rule, UDP loss survived by retransmission;
//! with media anchoring, the SDP each phone sees names its own peer's relay, and RTP crosses
//! both relays.
#![allow(clippy::unwrap_used)]

use overlay::Time;
use sip::media::{MediaRelay, RelayConfig};
use sip::ua::UaEvent;
use sip::{Peer, Transport};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use testkit::sip::{LoopbackFrontEnds, SipWorld};

const DOMAIN: &str = "p2psip.test";
const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

type World = SipWorld<LoopbackFrontEnds>;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `peers` front-ends; alice's phone on the first, bob's on the second (or the first).
fn world(peers: usize, transport: Transport) -> World {
    world_with(peers, transport, &[])
}

/// A relay the test reads while its front-end anchors media with it.
type SharedRelay = Arc<Mutex<MediaRelay>>;

/// [`world`], front-end i anchoring media with `relays[i]` when given.
fn world_with(peers: usize, transport: Transport, relays: &[SharedRelay]) -> World {
    world_configured(peers, transport, relays, |_| {})
}

/// [`world_with`], each front-end's configuration adjusted by `configure`.
fn world_configured(
    peers: usize,
    transport: Transport,
    relays: &[SharedRelay],
    configure: impl Fn(&mut sip::FrontEndConfig),
) -> World {
    let mut front_ends = LoopbackFrontEnds::new(peers, DOMAIN, configure);
    front_ends.nodes = std::mem::take(&mut front_ends.nodes)
        .into_iter()
        .enumerate()
        .map(|(i, mut n)| {
            if let Some(r) = relays.get(i) {
                n.fe = n.fe.with_media(Box::new(r.clone()));
            }
            n
        })
        .collect();
    let proxies: Vec<SocketAddr> = front_ends.nodes.iter().map(|n| n.addr).collect();
    let mut w = SipWorld::new(front_ends);
    for (i, (user, sdp)) in [("alice", OFFER), ("bob", ANSWER)].into_iter().enumerate() {
        let local = Peer {
            transport,
            addr: addr(&format!("127.0.0.{}:6000", i + 1)),
        };
        let proxy = Peer {
            transport,
            addr: proxies[i.min(peers - 1)],
        };
        w.phones.add(user, DOMAIN, local, proxy, sdp);
    }
    w
}

/// Both phones register; both are accepted.
fn register_both(w: &mut World) {
    for ua in [0, 1] {
        let (ua, now) = w.ua(ua);
        ua.register(now, 300).unwrap();
    }
    w.settle(100);
    w.phones.expect(0, UaEvent::Registered { code: 200 });
    w.phones.expect(1, UaEvent::Registered { code: 200 });
}

/// Phone 0 calls `user`; the world runs `ms`. Returns the Call-ID.
fn invite(w: &mut World, user: &str, ms: u64) -> String {
    let (ua, now) = w.ua(0);
    let call = ua.invite(now, user, OFFER).unwrap();
    w.settle(ms);
    call
}

/// Phone 0 calls `user` and is refused with `code`.
fn call_refused(w: &mut World, user: &str, code: u16) {
    let call = invite(w, user, 200);
    w.phones.expect(0, UaEvent::Failed { call, code });
}

/// Phone `phone` registers (or, with `expires` 0, unregisters); the world runs 100 ms.
fn register(w: &mut World, phone: usize, expires: u32) {
    let (ua, now) = w.ua(phone);
    ua.register(now, expires).unwrap();
    w.settle(100);
}

/// Register, call bob, hang up; both ends see it end and both front-ends forget it.
fn full_call(w: &mut World) {
    register_both(w);
    let call = invite(w, "bob", 1500);
    w.phones.expect_answered(0, 1, &call, OFFER, ANSWER);
    let (ua, now) = w.ua(0);
    ua.bye(now, &call).unwrap();
    w.settle(200);
    w.phones.expect(0, UaEvent::Ended { call: call.clone() });
    w.phones.expect(1, UaEvent::Ended { call });
    // Both front-ends forgot the call once BYE was answered...
    assert_eq!(w.front_ends.nodes[0].fe.calls(), 0);
    assert_eq!(w.front_ends.nodes[1].fe.calls(), 0);
    // ...and, the UDP linger over, keep nothing of it at all.
    w.settle(40_000);
    for n in &w.front_ends.nodes {
        let t = n.fe.tables();
        assert_eq!(
            (t.calls, t.transactions, t.tombstones, t.call_transactions),
            (0, 0, 0, 0)
        );
    }
    assert_eq!(
        w.front_ends.net.tracked_call_ends(),
        0,
        "the overlay was told the call ended"
    );
}

#[test]
fn full_call_over_udp_and_tcp() {
    full_call(&mut world(2, Transport::Udp));
    full_call(&mut world(2, Transport::Tcp));
}

#[test]
fn lost_invite_and_lost_ringing_are_retransmitted_over_udp() {
    let mut w = world(2, Transport::Udp);
    w.phones.drop_next("INVITE");
    full_call(&mut w);
    assert_eq!(w.phones.dropped(), 1, "the INVITE was lost");
    let mut w = world(2, Transport::Udp);
    register_both(&mut w);
    w.phones.drop_next("SIP/2.0 200 OK");
    let call = invite(&mut w, "bob", 3000);
    assert_eq!(w.phones.dropped(), 1, "the 200 was lost");
    w.phones.expect_that(
        0,
        |e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call),
    );
}

#[test]
fn unknown_aor_is_404_and_unregistered_aor_too() {
    let mut w = world(2, Transport::Udp);
    register_both(&mut w);
    call_refused(&mut w, "carol", 404);
    assert_eq!(w.front_ends.nodes[0].fe.stats().not_found, 1);
    // Bob unregisters: calls to him are 404 now.
    register(&mut w, 1, 0);
    call_refused(&mut w, "bob", 404);
}

#[test]
fn registration_lapses_without_refresh() {
    let mut w = world(2, Transport::Udp);
    register(&mut w, 1, 2);
    w.settle(2500);
    call_refused(&mut w, "bob", 404);
}

#[test]
fn another_peer_cannot_take_over_a_live_aor() {
    // Both UAs at peer 0 first; then "bob" at peer 1 registers the AoR "alice" owned by peer 0.
    let mut w = world(2, Transport::Udp);
    register_both(&mut w);
    let udp = |a: SocketAddr| Peer {
        transport: Transport::Udp,
        addr: a,
    };
    let proxy = udp(w.front_ends.nodes[1].addr);
    let mallory = w
        .phones
        .add("alice", DOMAIN, udp(addr("127.0.0.9:6000")), proxy, ANSWER);
    register(&mut w, mallory, 300);
    w.phones.expect(mallory, UaEvent::Registered { code: 403 });
}

#[test]
fn callee_peer_gone_gives_480() {
    let mut w = world(2, Transport::Udp);
    register_both(&mut w);
    w.front_ends.nodes[1].ov.leave();
    call_refused(&mut w, "bob", 480);
}

#[test]
fn caller_cancels_a_ringing_call() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut w = world(2, transport);
        register_both(&mut w);
        // Bob's phone rings and nobody picks up.
        w.phones.ua(1).set_auto_answer(false);
        let call = invite(&mut w, "bob", 200);
        w.phones.expect(0, UaEvent::Ringing { call: call.clone() });
        let (ua, now) = w.ua(0);
        ua.cancel(now, &call);
        w.settle(500);
        let cancelled = UaEvent::Failed {
            call: call.clone(),
            code: 487,
        };
        w.phones.expect(0, cancelled);
        w.phones.expect(1, UaEvent::Ended { call });
        w.settle(40_000);
        assert_eq!(w.front_ends.nodes[0].fe.calls(), 0);
        assert_eq!(w.front_ends.nodes[1].fe.calls(), 0);
    }
}

#[test]
fn a_call_ringing_past_timer_c_is_given_up_both_ways() {
    let mut w = world(2, Transport::Tcp);
    register_both(&mut w);
    // Bob's phone rings and nobody ever answers, and alice never cancels.
    w.phones.ua(1).set_auto_answer(false);
    let call = invite(&mut w, "bob", 200);
    w.phones.expect(0, UaEvent::Ringing { call: call.clone() });
    w.settle(170_000);
    assert_eq!(
        w.front_ends.nodes[0].fe.calls(),
        1,
        "given up before Timer C"
    );
    w.settle(12_000);
    w.phones.expect(
        0,
        UaEvent::Failed {
            call: call.clone(),
            code: 408,
        },
    );
    w.phones.expect(1, UaEvent::Ended { call });
    assert_eq!(w.front_ends.nodes[0].fe.calls(), 0);
    assert_eq!(w.front_ends.nodes[1].fe.calls(), 0);
}

/// The far peer is gone when alice hangs up: nobody answers her BYE from the far side.
/// When her front-end gives the ending call up (64·T1 after the BYE) it answers the BYE 408
/// (RFC 3261 §16.8) rather than leaving her transaction open for ever. The front-end's T1
/// is shorter than the phone's here, so the phone hears it before its own Timer F.
#[test]
fn a_bye_the_far_end_never_answers_is_answered_408_when_the_call_is_given_up() {
    let mut w = world_configured(2, Transport::Tcp, &[], |c| {
        c.timers.t1 = std::time::Duration::from_millis(250)
    });
    register_both(&mut w);
    let call = invite(&mut w, "bob", 1500);
    w.phones.expect_answered(0, 1, &call, OFFER, ANSWER);
    w.front_ends.nodes[1].ov.leave();
    let (ua, now) = w.ua(0);
    ua.bye(now, &call).unwrap();
    w.settle(15_000);
    assert!(
        !w.phones.has(0, |e| matches!(e, UaEvent::Ended { .. })),
        "ended before the front-end gave up"
    );
    assert_eq!(w.front_ends.nodes[0].fe.calls(), 1);
    w.settle(2_000);
    w.phones.expect(0, UaEvent::Ended { call });
    assert_eq!(w.front_ends.nodes[0].fe.calls(), 0);
}

/// An RTP-looking datagram (STUN, first byte 0–3, is never forwarded).
const RTP: [u8; 172] = [0x80; 172];

/// A relay for the peer at `lan`, reached from the other peer at `public`, on ports from
/// `first`.
fn relay(lan: &str, public: &str, first: u16) -> SharedRelay {
    let mut cfg = RelayConfig::new(lan.parse().unwrap(), public.parse().unwrap());
    cfg.bounds.first_port = first;
    cfg.bounds.last_port = first + 99;
    // The relays latch here; their ICE with each other has tests of its own (media::relay).
    cfg.ice = false;
    Arc::new(Mutex::new(MediaRelay::new(cfg)))
}

#[test]
fn anchored_call_points_each_phone_at_its_own_peer_and_rtp_crosses_both_relays() {
    let (a, b) = (
        relay("127.0.0.1", "198.51.100.1", 40000),
        relay("127.0.0.2", "198.51.100.2", 50000),
    );
    let mut w = world_with(2, Transport::Udp, &[a.clone(), b.clone()]);
    register_both(&mut w);
    let call = invite(&mut w, "bob", 1500);
    // Bob's phone is offered bob's peer (LAN side), alice's phone gets alice's peer.
    let offered = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";
    let answered = b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    w.phones.expect_answered(0, 1, &call, offered, answered);
    let now = Time::from_millis(2000);
    // Alice's RTP: her peer sends it from its public leg to bob's peer's public leg, which
    // hands it to bob's phone; bob's answer goes back the same way.
    let mut ra = a.lock().unwrap();
    let mut rb = b.lock().unwrap();
    let out = ra
        .handle_datagram(now, 40000, addr("127.0.0.1:6000"), &RTP)
        .unwrap();
    assert_eq!(out.to, addr("198.51.100.2:50002"));
    let from_a = SocketAddr::new("198.51.100.1".parse().unwrap(), out.from_port);
    let to_bob = rb.handle_datagram(now, 50002, from_a, &RTP).unwrap();
    assert_eq!(
        (to_bob.from_port, to_bob.to),
        (50000, addr("127.0.0.2:7000"))
    );
    let back = rb
        .handle_datagram(now, 50000, addr("127.0.0.2:7000"), &RTP)
        .unwrap();
    assert_eq!(back.to, from_a);
    let from_b = SocketAddr::new("198.51.100.2".parse().unwrap(), back.from_port);
    let to_alice = ra.handle_datagram(now, 40002, from_b, &RTP).unwrap();
    assert_eq!(
        (to_alice.from_port, to_alice.to),
        (40000, addr("127.0.0.1:6000"))
    );
    drop((ra, rb));
    // Hanging up frees both relays.
    let (ua, now) = w.ua(0);
    ua.bye(now, &call).unwrap();
    w.settle(200);
    w.phones.expect(0, UaEvent::Ended { call });
    assert_eq!(a.lock().unwrap().streams(), 0);
    assert_eq!(b.lock().unwrap().streams(), 0);
    assert_eq!(w.front_ends.nodes[0].fe.media_refused(), 0);
}
