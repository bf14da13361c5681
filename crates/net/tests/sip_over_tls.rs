//! SIP phones over the real overlay: SIPp UAC → front-end on peer A → secure call flow over
//! mutual-TLS peers (CSP, PingRequest multicast) → front-end on peer B → SIPp UAS, with the
//! registration stored as a signed overlay record at the peer responsible for hash(AoR) and
//! the 180/200/ACK/BYE carried between A and B directly. Skips loudly without `sipp`.
#![allow(clippy::unwrap_used)]

mod support;

use support::{
    layer2_member, layer2_space, make_secure_node, membership_of, net_config, successors_in_order,
    test_ca,
};
use testkit::sipp;

use enroll::cert::Ca;
use net::{CertSigner, Handle, Identity, Limits, PeerRuntime, SecureCore};
use node::PeerCore;
use overlay::secure::SecureConfig;
use overlay::{ChordConfig, Contact, NodeId};
use rustls::pki_types::CertificateDer;
use sip::FrontEnd;
use sip::driver::DriverLimits;
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDS: [u128; 8] = [100, 150, 250, 350, 450, 550, 600, 650];
const CSP: u128 = 150;
const CSPG: u128 = 100;
const A: u128 = 600;
const B: u128 = 350;

fn issue(ca: &Ca, id: u128) -> (Identity, Vec<CertificateDer<'static>>) {
    let identity = layer2_member(ca, id, (CSP, CSPG), 0x22);
    let chain = identity.chain.clone();
    (identity, chain)
}

async fn ring_ok(handles: &[Handle<PeerCore>]) -> bool {
    successors_in_order(handles, |n| n.node().chord().successor().map(|c| c.id)).await
}

async fn calls_over_tls(transport: &str) {
    service::crypto::install_provider();
    let (ca, tr) = test_ca();
    let (space, arcs) = layer2_space();
    let members: Vec<_> = IDS.iter().map(|i| issue(&ca, *i)).collect();
    let mut chord = ChordConfig::new(space);
    chord.successors = 3;
    chord.stabilize_every = Duration::from_millis(100);
    chord.fix_fingers_every = Duration::from_millis(30);
    chord.check_predecessor_every = Duration::from_millis(200);
    chord.rpc_timeout = Duration::from_millis(300);
    chord.lookup_timeout = Duration::from_secs(1);
    let chord = Arc::new(chord);
    let cfg = Arc::new(SecureConfig::default());
    let membership = membership_of(arcs, &tr, members.iter().map(|(_, c)| (&c[..], None)));
    let ctx = membership.context(cfg.clone());

    let mut handles = Vec::new();
    let mut app_rx = Vec::new();
    let mut first: Option<Contact> = None;
    for (identity, _) in &members {
        let net_cfg = net_config(identity.clone(), &tr, Limits::default());
        let (chord, ctx) = (chord.clone(), ctx.clone());
        let node = make_secure_node(identity, chord, ctx);
        let rt = PeerRuntime::start(net_cfg, move |me| PeerCore::new(node(me)))
            .await
            .unwrap();
        let boot = first;
        rt.handle
            .call(move |n, now| match boot {
                None => n.node().chord_mut().create(now),
                Some(b) => n.node().chord_mut().join(now, b),
            })
            .await
            .unwrap();
        first.get_or_insert(rt.handle.contact());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(net::run_events(
            rt.handle.clone(),
            rt.events,
            None,
            Some(tx),
        ));
        app_rx.push(Some(rx));
        handles.push(rt.handle.clone());
        std::mem::forget(rt.task);
    }
    let chains = members.iter().zip(&handles);
    let with_addrs = membership_of(
        arcs,
        &tr,
        chains.map(|((_, c), h)| (&c[..], Some(h.local_addr()))),
    );
    let ctx = with_addrs.context(cfg);
    for h in &handles {
        let ctx = ctx.clone();
        h.call(move |n, _| n.node().set_context(ctx)).await.unwrap();
        node::install_registration_validator(h).await.unwrap();
    }
    let t0 = Instant::now();
    while !ring_ok(&handles).await {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "ring did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Front-ends on A and B, signing registrations with their peers' certificate keys.
    let mut fes = Vec::new();
    for who in [A, B] {
        let i = IDS.iter().position(|x| *x == who).unwrap();
        let h = handles[i].clone();
        let signer = CertSigner::from_identity(&members[i].0).unwrap();
        let verifier = ctx.verifier.clone();
        let fe = node::serve_frontend(
            &h,
            "127.0.0.1:0".parse().unwrap(),
            "p2psip.test",
            DriverLimits::default(),
            move |cfg| FrontEnd::new(cfg, NodeId(who), Box::new(signer), verifier),
        )
        .await
        .unwrap();
        let (out, mut events) = (fe.sender(), app_rx[i].take().unwrap());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let _ = node::send_to_phones(ev, &out);
            }
        });
        fes.push((h, fe));
    }
    sipp::sipp_calls(transport, fes[0].1.local, fes[1].1.local, 10).await;
    let mut stats = Vec::new();
    for (h, _) in &fes {
        let s = h
            .call(|n, _| n.frontend().map(|f| f.stats().clone()))
            .await
            .unwrap()
            .unwrap();
        stats.push(s);
    }
    let (sa, sb) = (&stats[0], &stats[1]);
    assert_eq!(sa.calls_out, 10, "{sa:?}");
    assert_eq!(sb.calls_in, 10, "{sb:?}");
    // The registration lives at the peer responsible for hash(bob's AoR), not at A or B
    // unless they happen to own it — and it is there.
    let key = sip::aor_key(space, "sip:bob@p2psip.test");
    let mut holders = 0;
    for h in &handles {
        if h.call(move |n, _| n.node().chord().records().contains_key(&key))
            .await
            .unwrap()
        {
            holders += 1;
        }
    }
    assert!(holders >= 1, "no peer holds bob's registration");
    for (_, f) in fes {
        f.shutdown().await;
    }
    for h in &handles {
        h.shutdown().await.unwrap();
    }
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
