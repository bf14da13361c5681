//! The secure call flow on real TLS peers in one process: certificates with Ed25519 keys
//! from a test E&A CA, the membership built from those certificates (roles, layers, keys),
//! a real SOS over HTTP ranking the routes and taking signed reports. A call rings; the
//! peers that carried PingRequest copies never saw the INVITE; a peer that drops what it
//! forwards is survived.
#![allow(clippy::unwrap_used)]

mod support;

use support::{
    layer2_member, layer2_space, make_secure_node, membership_of, net_config, now_unix,
    successors_in_order, test_ca,
};
use testkit::fast_chord;

use enroll::cert::Ca;
use net::{
    CallOutcome, Handle, Identity, Instrumented, KindLog, Limits, PeerRuntime, SosCounters, SosLink,
};
use overlay::secure::{FirstHops, SecureConfig};
use overlay::{ChordConfig, Contact, IdSpace, NodeId};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const IDS: [u128; 12] = [100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650];
const CSP: u128 = 150;
const CSPG: u128 = 100;

struct Member {
    identity: Identity,
    chain: Vec<CertificateDer<'static>>,
}

fn issue(ca: &Ca, id: u128) -> Member {
    let identity = layer2_member(ca, id, (CSP, CSPG), 0x11);
    Member {
        chain: identity.chain.clone(),
        identity,
    }
}

fn chord_config(space: IdSpace) -> Arc<ChordConfig> {
    let mut c = fast_chord(space.bits());
    c.successors = 3;
    c.successor_shortcut = true;
    c.fix_fingers_every = Duration::from_millis(30);
    // Generous: the test shares two cores with whatever else runs.
    c.rpc_timeout = Duration::from_millis(1500);
    c.lookup_timeout = Duration::from_secs(3);
    Arc::new(c)
}

async fn converged(handles: &[Handle<Instrumented>]) -> bool {
    successors_in_order(handles, |n| n.node.chord().successor().map(|c| c.id)).await
}

/// A real SOS over HTTPS (its certificate from `ca`), checking reports with the keys of
/// `membership`'s certificates, its database under `dir`; and a client for it.
async fn start_sos(
    ca: &Ca,
    tr: &net::Trust,
    membership: &net::Membership,
    dir: &std::path::Path,
) -> (sos::RunningServer, sos::SosClient) {
    let registry = sos::KeyRegistry::from_entries(membership.keys.registry_entries()).unwrap();
    let names = ["127.0.0.1".to_string()];
    let sos_cert = ca
        .issue_service(
            enroll::cert::ServiceRole::Sos,
            &names,
            [9; 16],
            now_unix() - 60,
            now_unix() + 3600,
        )
        .unwrap();
    let sos_tls = service::tls::server_config(&sos_cert.chain_pem, &sos_cert.key_pem).unwrap();
    let srv = sos::RunningServer::start(
        sos::ServerConfig::new(dir.join("sos.sqlite3"), Arc::new(registry)),
        "127.0.0.1:0".parse().unwrap(),
        service::http::Transport::Https(sos_tls),
    )
    .await
    .unwrap();
    assert!(srv.url().starts_with("https://"));
    let trust = service::tls::Trust::Ca(vec![tr.ca.clone()]);
    let client = sos::SosClient::new(&srv.url(), &trust).unwrap();
    (srv, client)
}

/// A peer reporting faster than its SOS answers (100 batches at once, three times the
/// requests it keeps in flight) loses none of them: reports wait for a free slot. Dropping
/// what found every slot busy lost 5 % of a demo's evidence (550-640 of ~12 500 reports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_beyond_the_requests_in_flight_wait_and_all_reach_the_sos() {
    support::init_logs("net=warn");
    let (ca, tr) = test_ca();
    let (_, arcs) = layer2_space();
    let members: Vec<Member> = IDS.iter().map(|i| issue(&ca, *i)).collect();
    let membership = membership_of(arcs, &tr, members.iter().map(|m| (&m.chain[..], None)));
    let db = tempfile::tempdir().unwrap();
    let (_sos, client) = start_sos(&ca, &tr, &membership, db.path()).await;
    let counters = Arc::new(SosCounters::default());
    let reporter = &members[7];
    let link = SosLink::new(client, &reporter.identity, counters.clone()).unwrap();
    let me = reporter.identity.node_id;
    let mut expected = 0u64;
    for i in 0..100 {
        // Two a batch: 200 in all, within the SOS's burst for one reporter.
        let reports: Vec<_> = (0..2)
            .map(|j| {
                let subject = NodeId(IDS[(i + j) % IDS.len()]);
                (subject, overlay::secure::Outcome::Delivered)
            })
            .collect();
        // Its reports about itself are left out.
        expected += reports.iter().filter(|(s, _)| *s != me).count() as u64;
        link.send_reports(me, reports);
    }
    let settled = || {
        counters.reports_ok.load(Ordering::Relaxed)
            + counters.reports_failed.load(Ordering::Relaxed)
            + counters.reports_dropped.load(Ordering::Relaxed)
    };
    let t0 = Instant::now();
    while settled() < expected && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.reports_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(counters.reports_failed.load(Ordering::Relaxed), 0);
    assert_eq!(counters.reports_ok.load(Ordering::Relaxed), expected);
    assert_eq!(counters.reports_waiting.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_call_rings_over_tls_and_carriers_never_see_the_invite() {
    secure_call(&[]).await;
}

/// The same with caller (600) and callee (450) behind NAT: outbound-only, reached through
/// the first peer as their relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_call_rings_between_outbound_only_peers() {
    secure_call(&[450, 600]).await;
}

async fn secure_call(natted: &[u128]) {
    service::crypto::install_provider();
    let (ca, tr) = test_ca();
    let (space, arcs) = layer2_space();
    let members: Vec<Member> = IDS.iter().map(|i| issue(&ca, *i)).collect();

    // Membership from the certificates alone (addresses come once the peers listen).
    let chains = members.iter().map(|m| (&m.chain[..], None));
    let mut membership = membership_of(arcs, &tr, chains);
    assert_eq!(membership.directory.csps[1], vec![NodeId(CSP)]);
    assert_eq!(membership.directory.cspgs[1], vec![NodeId(CSPG)]);
    // A certificate from another CA is refused.
    let other = Ca::generate("other", now_unix(), 1).unwrap();
    assert!(
        membership
            .add(&tr, &issue(&other, 700).chain, None)
            .is_err()
    );

    let db = tempfile::tempdir().unwrap();
    let (_sos, client) = start_sos(&ca, &tr, &membership, db.path()).await;
    let counters = Arc::new(SosCounters::default());

    let cfg = Arc::new(SecureConfig {
        fanout: 3,
        first_hops: FirstHops::Diverse,
        ..SecureConfig::default()
    });
    let chord = chord_config(space);
    let log = Arc::new(KindLog::default());
    let ctx = membership.context(cfg.clone());
    let mut handles = Vec::new();
    let mut first: Option<Contact> = None;
    for m in &members {
        let identity = m.identity.clone();
        let net_cfg = net_config(m.identity.clone(), &tr, Limits::default());
        let (chord, ctx, log) = (chord.clone(), ctx.clone(), log.clone());
        let id = identity.node_id.0;
        let node = make_secure_node(&identity, chord, ctx);
        let make = move |me| Instrumented {
            node: node(me),
            drop_forwarded: false,
            log,
        };
        let rt = match first {
            Some(relay) if natted.contains(&id) => {
                PeerRuntime::start_outbound_only(net_cfg, relay, Duration::from_millis(500), make)
                    .await
            }
            _ => PeerRuntime::start(net_cfg, make).await,
        }
        .unwrap();
        let boot = first;
        rt.handle
            .call(move |n, now| match boot {
                None => n.node.chord_mut().create(now),
                Some(b) => n.node.chord_mut().join(now, b),
            })
            .await
            .unwrap();
        first.get_or_insert(rt.handle.contact());
        let link = SosLink::new(client.clone(), &m.identity, counters.clone()).unwrap();
        handles.push(rt.handle.clone());
        tokio::spawn(net::run_events(
            rt.handle.clone(),
            rt.events,
            Some(link),
            None,
        ));
        std::mem::forget(rt.task);
    }
    // Now every address is known: publish the directory with the CSP/CSPG addresses.
    let chains = members.iter().zip(&handles);
    let with_addrs = membership_of(
        arcs,
        &tr,
        chains.map(|(m, h)| (&m.chain[..], h.contact().addr)),
    );
    let ctx = with_addrs.context(cfg.clone());
    for h in &handles {
        let ctx = ctx.clone();
        h.call(move |n, _| n.node.set_context(ctx)).await.unwrap();
    }
    let t0 = Instant::now();
    while !converged(&handles).await {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "ring did not converge"
        );
        // A peer that lost every successor under load joins again (as `p2psip peer` does).
        let boot = handles[0].contact();
        for h in &handles[1..] {
            h.call(move |n, now| {
                if !n.node.chord().is_active() {
                    n.node.chord_mut().join(now, boot);
                }
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let fingers settle.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let caller = handles.iter().find(|h| h.contact().id.0 == 600).unwrap();
    log.clear();
    let invite = b"INVITE sip:450@p2psip.invalid SIP/2.0\r\n\r\n".to_vec();
    let out = caller.place_call(NodeId(450), invite).await.unwrap();
    let CallOutcome::Ringing {
        call,
        route,
        cached,
        ..
    } = out
    else {
        panic!("call did not ring: {out:?}");
    };
    assert!(!cached);
    assert_eq!(route.last(), Some(&NodeId(450)));
    // Both ends remember the call for its in-dialog messages until they hang up.
    let callee = handles.iter().find(|h| h.contact().id.0 == 450).unwrap();
    for h in [caller, callee] {
        assert_eq!(h.call(|n, _| n.node.dialog_count()).await.unwrap(), 1);
        h.end_call(NodeId(600), call).await.unwrap();
        assert_eq!(h.call(|n, _| n.node.dialog_count()).await.unwrap(), 0);
    }
    // Only the CSP and the callee received the request; PingRequest carriers did not.
    for kind in ["call", "deliver"] {
        for r in log.receivers(kind) {
            assert!([CSP, 450].contains(&r.0), "{kind} reached {r}");
        }
    }
    let carriers: Vec<NodeId> = log
        .receivers("ping-request")
        .into_iter()
        .filter(|p| p.0 != 450 && p.0 != CSP)
        .collect();
    assert!(!carriers.is_empty(), "no intermediate peer carried a copy");
    for c in &carriers {
        assert_eq!(log.count(*c, "call") + log.count(*c, "deliver"), 0);
    }
    // The SOS ranked the routes, and the callee's signed evidence reached it.
    let t0 = Instant::now();
    while counters.reports_ok.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no report accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counters.rank_ok.load(Ordering::Relaxed), 1);
    assert_eq!(counters.reports_failed.load(Ordering::Relaxed), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut positive = 0;
    for c in &carriers {
        positive += client
            .get_opinion(sos::PeerId(c.0))
            .await
            .unwrap()
            .reports
            .positive;
    }
    assert!(positive > 0, "no positive evidence about the carriers");

    // Outbound-only peers accepted nothing; frames reached them over their own links or
    // through the relay.
    for h in handles
        .iter()
        .filter(|h| natted.contains(&h.contact().id.0))
    {
        let s = h.stats();
        assert_eq!(s.accepts_ok, 0, "{s:?}");
        assert_eq!(h.local_addr().port(), 0);
    }
    if !natted.is_empty() {
        assert!(handles[0].stats().frames_relayed > 0);
    }
    for h in &handles {
        h.shutdown().await.unwrap();
    }
}
