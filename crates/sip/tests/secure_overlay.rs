//! The front-ends over real `SecureNode`s (12 peers, one CSP and one CSPG, real Ed25519
//! signatures), driven in memory: REGISTER stores a signed record at hash(AoR) under the
//! `RegistrationValidator`; alice's INVITE takes the secure call flow (CSP, PingRequest
//! multicast, fetch) to bob's peer; 180/200/ACK/BYE travel as dialog messages; SDP arrives
//! unchanged. A third peer cannot take over bob's AoR.
#![allow(clippy::unwrap_used)]

use overlay::{IdSpace, NodeId, Time};
use sip::ua::UaEvent;
use sip::{FrontEnd, FrontEndConfig, Peer, PeerCore, RegistrationValidator, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use testkit::sip::SipWorld;
use testkit::{Link, Network, SecureRing, UNIX_EPOCH_MS};

const OFFER: &[u8] =
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &[u8] =
    b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

type World = SipWorld<Network<PeerCore>>;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Front-ends on peers 600 (alice), 450 (bob) and 300 (mallory).
fn world() -> World {
    world_with_users(["alice", "bob", "bob"])
}

/// One phone per front-end, on peers 600, 450 and 300 in that order.
fn world_with_users(users: [&str; 3]) -> World {
    let ring = SecureRing::twelve();
    let validator = Arc::new(RegistrationValidator {
        verifier: ring.registry.clone(),
        space: ring.space,
    });
    let front_ends = [
        (600u128, "127.0.0.1"),
        (450, "127.0.0.2"),
        (300, "127.0.0.3"),
    ];
    let peers = ring
        .nodes(|_| UNIX_EPOCH_MS, |_| [7; 32])
        .into_iter()
        .map(|mut node| {
            node.set_record_validator(validator.clone());
            let id = node.chord().id();
            let front_end = front_ends
                .iter()
                .find(|(fe, _)| NodeId(*fe) == id)
                .map(|(_, ip)| {
                    let a = addr(&format!("{ip}:5060"));
                    let mut cfg = FrontEndConfig::new("p2psip.test", a);
                    cfg.unix_offset_ms = UNIX_EPOCH_MS;
                    FrontEnd::new(cfg, id, Box::new(ring.signer(id)), ring.registry.clone())
                });
            let peer = PeerCore::new(node);
            match front_end {
                Some(fe) => peer.with_frontend(fe),
                None => peer,
            }
        });
    let mut net = Network::new(peers, Time::from_millis(10), 1);
    net.set_default_link(Link {
        latency: Duration::from_micros(200),
        loss: 0.0,
    });
    let mut w = SipWorld::new(net);
    for (i, (user, (_, fe_ip))) in users.into_iter().zip(front_ends).enumerate() {
        let udp = |a: String| Peer {
            transport: Transport::Udp,
            addr: addr(&a),
        };
        w.phones.add(
            user,
            "p2psip.test",
            udp(format!("127.0.1.{}:6000", i + 1)),
            udp(format!("{fe_ip}:5060")),
            ANSWER,
        );
    }
    w
}

/// Phone `ua` registers for `expires` seconds; the world runs 500 ms.
fn register(w: &mut World, ua: usize, expires: u32) {
    let (ua, now) = w.ua(ua);
    ua.register(now, expires).unwrap();
    w.settle(500);
}

/// Phone 0 calls `user`; the world runs `ms`. Returns the Call-ID.
fn invite(w: &mut World, user: &str, ms: u64) -> String {
    let (ua, now) = w.ua(0);
    let call = ua.invite(now, user, OFFER).unwrap();
    w.settle(ms);
    call
}

/// Phone 0 hangs up `call`; the world runs 1 s.
fn bye(w: &mut World, call: &str) {
    let (ua, now) = w.ua(0);
    ua.bye(now, call).unwrap();
    w.settle(1000);
}

#[test]
fn sip_call_through_the_secure_overlay() {
    let mut w = world();
    let (ua, now) = w.ua(0);
    ua.register(now, 300).unwrap();
    register(&mut w, 1, 300);
    w.phones.expect(0, UaEvent::Registered { code: 200 });
    w.phones.expect(1, UaEvent::Registered { code: 200 });
    // Mallory's peer cannot take bob's AoR while it is live.
    register(&mut w, 2, 300);
    w.phones.expect(2, UaEvent::Registered { code: 403 });

    let call = invite(&mut w, "bob", 3000);
    w.phones.expect_answered(0, 1, &call, OFFER, ANSWER);
    assert!(
        !w.phones.has(2, |e| matches!(e, UaEvent::Incoming { .. })),
        "mallory's UA got the call"
    );
    bye(&mut w, &call);
    w.phones.expect(0, UaEvent::Ended { call: call.clone() });
    w.phones.expect(1, UaEvent::Ended { call });

    // The call took the secure flow: PingRequest copies, the CSP delivered the INVITE to
    // bob's peer only, and SIP went as dialog messages between 600 and 450 only.
    let seen: Vec<(NodeId, &str)> = w
        .front_ends
        .captured()
        .iter()
        .map(|f| (f.to, f.kind()))
        .collect();
    let kinds = |k: &str| seen.iter().filter(|(_, n)| *n == k).count();
    assert!(kinds("ping-request") >= 2, "{seen:?}");
    assert!(kinds("put") >= 2 && kinds("get") >= 1, "{seen:?}");
    for (to, k) in &seen {
        if *k == "deliver" {
            assert_eq!(to.0, 450);
        }
        if *k == "dialog" {
            assert!([450, 600].contains(&to.0), "dialog reached {to:?}");
        }
    }
    assert!(kinds("dialog") >= 5, "180, 200, ACK, BYE, 200: {seen:?}");

    // Unknown AoR: 404.
    let call = invite(&mut w, "carol", 1000);
    w.phones.expect(0, UaEvent::Failed { call, code: 404 });
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
    let mut w = world_with_users(["alice", "user41", "user42"]);
    for ua in [1, 2] {
        register(&mut w, ua, 300);
        w.phones.expect(ua, UaEvent::Registered { code: 200 });
    }
    for (ua, user) in [(1, "user41"), (2, "user42")] {
        let call = invite(&mut w, user, 3000);
        assert!(
            w.phones.has(
                0,
                |e| matches!(e, UaEvent::Answered { call: c, .. } if *c == call)
            ),
            "call to {user}: {:?}",
            w.phones.events()
        );
        assert!(
            w.phones.has(
                ua,
                |e| matches!(e, UaEvent::Incoming { call: c, .. } if *c == call)
            ),
            "{user}'s UA did not get its call: {:?}",
            w.phones.events()
        );
        bye(&mut w, &call);
    }
}
