//! SIP phones over the real overlay, through the peers' own front-ends: SIPp UAC → the SIP
//! front-end of peer A (`Config::sip`) → secure call flow over mutual-TLS peers (CSP,
//! PingRequest multicast) → the front-end of peer B → SIPp UAS, with the registration stored
//! as a signed overlay record at the peer responsible for hash(AoR) and the 180/200/ACK/BYE
//! carried between A and B directly. Skips loudly without `sipp`.
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod common;

use common::Overlay;
use net::SecureCore;
use node::SipConfig;
use std::net::SocketAddr;
use testkit::sipp;

/// Peers with a front-end (node indices: 0 is the CSP).
const A: usize = 1;
const B: usize = 2;

async fn calls_over_tls(transport: &str) {
    let overlay = Overlay::enroll(4).await;
    let nodes = overlay
        .start(|i, c| {
            if i == A || i == B {
                c.sip = Some(SipConfig::new(
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    "p2psip.test",
                ));
            }
        })
        .await;
    let sip_addr = |i: usize| nodes[i].info().sip.as_ref().unwrap().0;
    sipp::sipp_calls(transport, sip_addr(A), sip_addr(B), 10).await;

    let stats = |i: usize| {
        nodes[i]
            .handle()
            .call(|n, _| n.frontend().map(|f| f.stats().clone()))
    };
    let (sa, sb) = (
        stats(A).await.unwrap().unwrap(),
        stats(B).await.unwrap().unwrap(),
    );
    assert_eq!(sa.calls_out, 10, "{sa:?}");
    assert_eq!(sb.calls_in, 10, "{sb:?}");
    // The registration lives at the peer responsible for hash(bob's AoR), not at A or B
    // unless they happen to own it — and it is there.
    let space = overlay::IdSpace::new(16).unwrap();
    let key = sip::aor_key(space, "sip:bob@p2psip.test");
    let mut holders = 0;
    for n in &nodes {
        let holds = n
            .handle()
            .call(move |n, _| n.node().chord().records().contains_key(&key))
            .await
            .unwrap();
        holders += usize::from(holds);
    }
    assert!(holders >= 1, "no peer holds bob's registration");
    for n in nodes {
        n.stop().await.unwrap();
    }
    overlay.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_the_tls_overlay_udp() {
    if !sipp::have_sipp() {
        return;
    }
    calls_over_tls("u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_the_tls_overlay_tcp() {
    if !sipp::have_sipp() {
        return;
    }
    calls_over_tls("t1").await;
}
