//! Calls at a sustained rate through two front-ends on the in-process overlay, on virtual
//! time, with the front-ends' default table caps: every call completes (INVITE, 180, 200,
//! ACK, BYE) and afterwards every table is back to its idle size.
//!
//! The old tables held a finished call's transactions for about half a minute and capped
//! the sustained rate near 250 calls/s; this places 1 000 calls/s, half of them between two
//! phones on UDP (finished transactions leave tombstones that absorb retransmissions) and
//! half between two on TCP (they leave nothing): 100 000 calls in all by default, which a
//! debug build runs in about 30 s of CPU; `P2PSIP_LOAD_CALLS=N` runs another count.
#![allow(clippy::unwrap_used)]

use sip::frontend::FrontEndTables;
use sip::ua::UaEvent;
use sip::{Peer, Transport};
use std::net::SocketAddr;
use std::time::Duration;
use testkit::sip::{LoopbackFrontEnds, SipWorld};

const DOMAIN: &str = "p2psip.test";
const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";

/// Calls per run unless `P2PSIP_LOAD_CALLS` says otherwise: 100 s at [`RATE`], where the
/// old tables failed calls after about 8 s.
const DEFAULT_CALLS: u64 = 100_000;
/// Calls placed per second of virtual time.
const RATE: u64 = 1_000;
/// The world runs in steps of this; each step places `RATE * TICK_MS / 1000` calls.
const TICK_MS: u64 = 10;

fn calls() -> u64 {
    std::env::var("P2PSIP_LOAD_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CALLS)
}

type World = SipWorld<LoopbackFrontEnds>;

/// The phones: each caller calls the callee after it, on the other front-end.
const PHONES: [(&str, Transport, usize); 4] = [
    ("alice", Transport::Udp, 0),
    ("bob", Transport::Udp, 1),
    ("carol", Transport::Tcp, 0),
    ("dave", Transport::Tcp, 1),
];

/// Two front-ends with their default caps, and the [`PHONES`] registered.
fn world() -> World {
    let mut w = SipWorld::new(LoopbackFrontEnds::new(2, DOMAIN, |_| {}));
    let proxies: Vec<SocketAddr> = w.front_ends.nodes.iter().map(|n| n.addr).collect();
    for (i, (user, transport, fe)) in PHONES.into_iter().enumerate() {
        let local = Peer {
            transport,
            addr: SocketAddr::from(([127, 0, 1, i as u8 + 1], 6000)),
        };
        let proxy = Peer {
            transport,
            addr: proxies[fe],
        };
        let sdp = if i % 2 == 0 { OFFER } else { ANSWER };
        w.phones.add(user, DOMAIN, local, proxy, sdp);
    }
    for ua in 0..PHONES.len() {
        let (ua, now) = w.ua(ua);
        ua.register(now, 3600).unwrap();
    }
    w.settle(100);
    let mut registered = w.phones.take_events();
    registered.sort_by_key(|(i, _)| *i);
    let all: Vec<_> = (0..PHONES.len())
        .map(|i| (i, UaEvent::Registered { code: 200 }))
        .collect();
    assert_eq!(registered, all);
    w
}

fn tables(w: &World) -> Vec<FrontEndTables> {
    w.front_ends.nodes.iter().map(|n| n.fe.tables()).collect()
}

/// Largest of each table over `a` and `b`, front-end by front-end.
fn peak(a: &mut [FrontEndTables], b: &[FrontEndTables]) {
    for (a, b) in a.iter_mut().zip(b) {
        a.transactions = a.transactions.max(b.transactions);
        a.tombstones = a.tombstones.max(b.tombstones);
        a.calls = a.calls.max(b.calls);
        a.call_transactions = a.call_transactions.max(b.call_transactions);
        a.pending = a.pending.max(b.pending);
    }
}

#[test]
fn sustained_calls_leave_the_tables_idle() {
    let calls = calls();
    let mut w = world();
    // The registrations' own linger passes first: idle is two bindings and nothing else.
    w.settle(40_000);
    let idle = tables(&w);
    for t in &idle {
        let two_bindings = FrontEndTables {
            bindings: 2,
            ..FrontEndTables::default()
        };
        assert_eq!(*t, two_bindings);
    }
    let per_tick = RATE * TICK_MS / 1000;
    let give_up = w.now() + Duration::from_secs(calls / RATE + 60);
    let (mut placed, mut ended) = (0, [0u64; 2]);
    let mut failed = Vec::new();
    let mut busiest = idle.clone();
    while ended.iter().sum::<u64>() + (failed.len() as u64) < calls {
        assert!(
            w.now() < give_up,
            "{ended:?} of {calls} calls ended, {} failed, by {:?}",
            failed.len(),
            w.now()
        );
        for _ in 0..per_tick.min(calls - placed) {
            // Callers take turns: alice (UDP) calls bob, carol (TCP) calls dave.
            let caller = 2 * (placed % 2) as usize;
            let callee = PHONES[caller + 1].0;
            let (ua, now) = w.ua(caller);
            ua.invite(now, callee, OFFER).unwrap();
            placed += 1;
        }
        w.run(TICK_MS);
        peak(&mut busiest, &tables(&w));
        for (phone, ev) in w.phones.take_events() {
            match (phone % 2, ev) {
                (0, UaEvent::Answered { call, .. }) => {
                    let (ua, now) = w.ua(phone);
                    ua.bye(now, &call).unwrap();
                }
                (0, UaEvent::Ended { .. }) => ended[phone / 2] += 1,
                (_, e @ UaEvent::Failed { .. }) => failed.push((phone, e)),
                _ => {}
            }
        }
    }
    assert!(failed.is_empty(), "failed calls {failed:?}");
    assert_eq!(ended, [calls.div_ceil(2), calls / 2], "calls over UDP, TCP");
    for n in &w.front_ends.nodes {
        assert_eq!(n.fe.stats().overloaded, 0, "a 503 was sent");
    }
    // At most a few calls were ever in progress at once; what lingered was tombstones.
    for t in &busiest {
        assert!(t.calls < 100 && t.transactions < 200, "{busiest:?}");
    }
    // Once the longest linger (64·T1) has passed, every table is as it was before the first
    // call, and the overlay holds no call either.
    w.settle(40_000);
    assert_eq!(tables(&w), idle, "peak {busiest:?}");
    assert_eq!(w.front_ends.net.tracked_call_ends(), 0);
    eprintln!("{calls} calls at {RATE}/s; busiest tables {busiest:?}");
}
