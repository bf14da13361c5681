//! The SIP front-end's message path (registrar + proxy), as its UDP driver feeds it: two
//! front-ends joined by the in-process overlay, bob registered at the second one by a real
//! REGISTER, then fuzzed datagrams from a local UA at the first, from a stranger at the
//! second, and time steps that fire the RFC 3261 timers. Every answer the front-ends send is
//! drained; nothing may panic and the call table must stay within its cap.
//!
//! Input: a sequence of `[who u8][len u16 BE][bytes]` datagrams.
#![no_main]

mod datagrams;

use datagrams::datagrams;
use libfuzzer_sys::fuzz_target;
use overlay::secure::{Ed25519Registry, Ed25519Signer};
use overlay::{NodeId, Time};
use sip::{FrontEnd, FrontEndConfig, LoopbackNet, LoopbackOverlay};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const MAX_TX: usize = 16;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

struct Side {
    fe: FrontEnd,
    ov: LoopbackOverlay,
}

fn rig() -> (Side, Side) {
    let mut keys = Ed25519Registry::default();
    let mut signers = Vec::new();
    for id in 1..=2u128 {
        let (s, _) = Ed25519Signer::generate().expect("key");
        keys.insert(NodeId(id), s.public_key());
        signers.push(s);
    }
    let keys = Arc::new(keys);
    let net = LoopbackNet::new(keys.clone(), 0);
    let mut sides = signers.into_iter().enumerate().map(|(i, s)| {
        let id = NodeId(i as u128 + 1);
        let local = addr(if i == 0 { "127.0.0.1:5060" } else { "127.0.0.1:5062" });
        let mut cfg = FrontEndConfig::new("p2psip.test", local);
        cfg.max_transactions = MAX_TX;
        cfg.max_calls = MAX_TX;
        Side {
            fe: FrontEnd::new(cfg, id, Box::new(s), keys.clone()),
            ov: net.join(id),
        }
    });
    let a = sides.next().expect("a");
    let b = sides.next().expect("b");
    (a, b)
}

fn drive(now: Time, a: &mut Side, b: &mut Side) {
    for _ in 0..8 {
        let mut quiet = true;
        for s in [&mut *a, &mut *b] {
            while let Some(ev) = s.ov.poll_event() {
                quiet = false;
                s.fe.handle_overlay_event(now, ev, &mut s.ov);
            }
            while s.fe.poll_transmit().is_some() {}
        }
        if quiet {
            break;
        }
    }
}

const REGISTER_BOB: &str = "REGISTER sip:p2psip.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-reg-1\r\n\
From: <sip:bob@p2psip.test>;tag=r1\r\n\
To: <sip:bob@p2psip.test>\r\n\
Call-ID: reg-1@127.0.0.1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:bob@127.0.0.1:5070>\r\n\
Max-Forwards: 70\r\n\
Expires: 300\r\n\
Content-Length: 0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let (mut a, mut b) = rig();
    let mut now = Time::from_millis(1);
    b.fe
        .handle_datagram(now, addr("127.0.0.1:5070"), REGISTER_BOB.as_bytes(), &mut b.ov);
    drive(now, &mut a, &mut b);
    for (who, dgram) in datagrams(data) {
        now = now + Duration::from_millis(1);
        match who % 4 {
            0 => a.fe.handle_datagram(now, addr("127.0.0.1:5170"), dgram, &mut a.ov),
            1 => b.fe.handle_datagram(now, addr("10.0.0.1:5060"), dgram, &mut b.ov),
            2 => b.fe.handle_datagram(now, addr("127.0.0.1:5070"), dgram, &mut b.ov),
            _ => {
                // Time passes: retransmissions, timeouts, registrations lapse.
                now = now + Duration::from_millis(u64::from(who) * 250);
                a.fe.handle_timeout(now, &mut a.ov);
                b.fe.handle_timeout(now, &mut b.ov);
            }
        }
        drive(now, &mut a, &mut b);
        assert!(a.fe.calls() <= MAX_TX && b.fe.calls() <= MAX_TX, "call cap held");
    }
});
