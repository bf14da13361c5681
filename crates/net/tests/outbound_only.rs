//! Peers behind NAT that accept no connections (outbound-only) in a real TLS ring on
//! loopback: they join, stay in the ring (successor and predecessor of public peers), are
//! found by lookups and answer the ones routed to them, run their own lookups, and nobody
//! ever dials them: peers without a link reach them through their relay.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{
    Probe, Seen, converged, create_or_join, fast_limits, identity_as, init_logs, owner_of, test_ca,
    wait_converged,
};
use testkit::fast_chord;

use enroll::cert::Ca;
use enroll::{Layer, Role};
use net::{Handle, NetConfig, PeerRuntime, Trust};
use overlay::{ChordConfig, ChordNode, Contact, Message, NodeId, Transmit};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BITS: u32 = 16;

fn net_config(ca: &Ca, tr: &Trust, id: u128, layer: Layer) -> NetConfig {
    net_config_as(ca, tr, id, layer, Role::Peer)
}

fn net_config_as(ca: &Ca, tr: &Trust, id: u128, layer: Layer, role: Role) -> NetConfig {
    support::net_config(identity_as(ca, id, layer, role), tr, fast_limits())
}

fn chord_config() -> Arc<ChordConfig> {
    Arc::new(fast_chord(BITS))
}

/// Start a peer; `relay: Some(..)` makes it outbound-only through that relay.
async fn start(
    ca: &Ca,
    tr: &Trust,
    id: u128,
    bootstrap: Option<Contact>,
    relay: Option<Contact>,
) -> PeerRuntime<ChordNode> {
    let cfg = chord_config();
    let make = move |me| ChordNode::new(cfg, me, [id as u8; 32]);
    let rt = match relay {
        None => PeerRuntime::start(net_config(ca, tr, id, Layer::ONE), make).await,
        Some(r) => {
            let nc = net_config(ca, tr, id, Layer::TWO);
            PeerRuntime::start_outbound_only(nc, r, Duration::from_millis(200), make).await
        }
    }
    .unwrap();
    create_or_join(&rt.handle, bootstrap).await;
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_only_peers_stay_in_the_ring_and_are_reached_through_their_relay() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    // Public peers, and two NATed ones: 30_000 between public peers, 50_000 and 52_000
    // next to each other (a NATed peer whose successor is NATed too).
    let public = [100u128, 20_000, 40_000, 60_000];
    let natted = [30_000u128, 50_000, 52_000];
    let first = start(&ca, &tr, public[0], None, None).await;
    let boot = first.handle.contact();
    let mut peers = vec![first];
    for &id in &public[1..] {
        peers.push(start(&ca, &tr, id, Some(boot), None).await);
    }
    // Each NATed peer takes a different public peer as its relay, and joins through boot.
    let mut relays = Vec::new();
    for (i, &id) in natted.iter().enumerate() {
        let relay = peers[i + 1].handle.contact();
        relays.push(relay);
        peers.push(start(&ca, &tr, id, Some(boot), Some(relay)).await);
    }
    let ids: Vec<u128> = public.iter().chain(&natted).copied().collect();
    let handles: Vec<_> = peers.iter().map(|p| p.handle.clone()).collect();
    let t0 = Instant::now();
    while !converged(&handles, &ids).await {
        if t0.elapsed() > Duration::from_secs(20) {
            for h in &handles {
                let st = h.ring_status().await.unwrap();
                eprintln!(
                    "{} pred {:?} succs {:?} {:?}",
                    st.me.id,
                    st.predecessor.map(|c| c.id.0),
                    st.successors.iter().map(|c| c.id.0).collect::<Vec<_>>(),
                    h.stats()
                );
            }
            panic!("ring did not converge");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} peers ({} outbound-only) converged in {:?}",
        ids.len(),
        natted.len(),
        t0.elapsed()
    );

    // Lookups from every peer for keys each NATed peer owns, and random keys.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for h in &handles {
        let mut keys: Vec<u128> = natted.iter().map(|&n| n - 3).collect();
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            keys.push(u128::from(x) % (1u128 << BITS));
        }
        for key in keys {
            let found = h.lookup(NodeId(key)).await.unwrap();
            let owner = owner_of(&ids, key);
            assert_eq!(found.owner.id.0, owner, "key {key} from {}", h.contact().id);
            if let Some(i) = natted.iter().position(|&n| n == owner) {
                // Its address is its relay's.
                assert_eq!(found.owner.addr, relays[i].addr);
            }
        }
    }

    // Still a ring after the lookups (nobody dropped a NATed peer).
    assert!(converged(&handles, &ids).await);
    let nat_handles = &handles[public.len()..];
    for h in nat_handles {
        let s = h.stats();
        // Nothing is bound: nobody dialled it, every link is one it opened.
        assert_eq!(s.accepts_ok + s.accepts_refused, 0, "{s:?}");
        assert!(s.dials_ok > 0 && s.frames_in > 0, "{s:?}");
        assert_eq!(h.local_addr().port(), 0);
    }
    let relayed: u64 = handles[1..=natted.len()]
        .iter()
        .map(|h| h.stats().frames_relayed)
        .sum();
    assert!(relayed > 0, "no frame went through a relay");
    for h in &handles {
        let s = h.stats();
        assert_eq!(s.malformed_in + s.oversized_in, 0, "{s:?}");
    }
    eprintln!(
        "relayed frames: {:?}",
        handles[1..=natted.len()]
            .iter()
            .map(|h| h.stats().frames_relayed)
            .collect::<Vec<_>>()
    );
    for p in peers {
        p.handle.shutdown().await.unwrap();
    }
}

/// The relay goes away and comes back (same identity, same address): the outbound-only
/// peer keeps the ring through its own links meanwhile, dials the relay again on its next
/// keepalive, and is reachable through it once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_only_peer_reconnects_to_its_relay() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    let (r_id, q_id, n_id) = (10_000u128, 30_000u128, 50_000u128);
    let r_cfg = net_config(&ca, &tr, r_id, Layer::ONE);
    let start_relay = |mut cfg: NetConfig, at: Option<std::net::SocketAddr>| async move {
        if let Some(a) = at {
            cfg.listen = a;
        }
        let c = chord_config();
        PeerRuntime::start(cfg, move |me| ChordNode::new(c, me, [1; 32]))
            .await
            .unwrap()
    };
    let r = start_relay(r_cfg.clone(), None).await;
    r.handle.call(|n, now| n.create(now)).await.unwrap();
    let relay = r.handle.contact();
    let q = start(&ca, &tr, q_id, Some(relay), None).await;
    let n = start(&ca, &tr, n_id, Some(relay), Some(relay)).await;
    let wait = |hs: Vec<Handle<ChordNode>>, ids: Vec<u128>| async move {
        wait_converged(&hs, &ids, Duration::from_secs(20)).await
    };
    let all = |r: &Handle<ChordNode>| vec![r.clone(), q.handle.clone(), n.handle.clone()];
    wait(all(&r.handle), vec![r_id, q_id, n_id]).await;
    let dials_before = n.handle.stats().dials_ok;

    // The relay leaves: Q and N stay a ring over N's own link to Q.
    r.handle.shutdown().await.unwrap();
    r.task.await.unwrap();
    let took = wait(vec![q.handle.clone(), n.handle.clone()], vec![q_id, n_id]).await;
    eprintln!("two-peer ring without the relay after {took:?}");

    // It comes back at the same address and joins through Q; N registers with it again.
    let r2 = start_relay(r_cfg, relay.addr).await;
    let via = q.handle.contact();
    r2.handle
        .call(move |n, now| n.join(now, via))
        .await
        .unwrap();
    let took = wait(all(&r2.handle), vec![r_id, q_id, n_id]).await;
    eprintln!("relay back, ring of three again after {took:?}");
    assert!(n.handle.stats().dials_ok > dials_before);
    // A lookup from the relay for a key N owns ends at N, reached over N's new link.
    let found = r2.handle.lookup(NodeId(n_id - 1)).await.unwrap();
    assert_eq!(found.owner.id.0, n_id);
    assert_eq!(found.owner.addr, relay.addr);
    // From Q too (through the relay unless N's own link to Q is up).
    let found = q.handle.lookup(NodeId(n_id - 1)).await.unwrap();
    assert_eq!(found.owner.id.0, n_id);
    for h in [r2.handle, q.handle, n.handle] {
        h.shutdown().await.unwrap();
    }
}

/// What a relayed frame tells its outbound-only receiver about the sender: the true Node-ID
/// and address; a CSP role only when the relay is a CSP/CSPG itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_frames_name_their_sender_and_a_plain_relay_cannot_vouch_for_a_csp() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    let public = |id, role| {
        let cfg = net_config_as(&ca, &tr, id, Layer::ONE, role);
        async move { PeerRuntime::start(cfg, |_| Probe::default()).await.unwrap() }
    };
    let plain_relay = public(1_000, Role::Peer).await;
    let csp_relay = public(2_000, Role::Csp).await;
    let caller = public(3_000, Role::Csp).await;
    let behind = |id, relay: Contact| {
        let cfg = net_config(&ca, &tr, id, Layer::TWO);
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        async move {
            let rt =
                PeerRuntime::start_outbound_only(cfg, relay, Duration::from_millis(100), |_| {
                    Probe::recording(s)
                })
                .await
                .unwrap();
            (rt, seen)
        }
    };
    let (n1, seen1) = behind(10_000, plain_relay.handle.contact()).await;
    let (n2, seen2) = behind(20_000, csp_relay.handle.contact()).await;
    // Registered with their relays once their first keepalive arrived.
    let t0 = Instant::now();
    while plain_relay.handle.stats().accepts_ok == 0 || csp_relay.handle.stats().accepts_ok == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no link to the relays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (c1, c2) = (n1.handle.contact(), n2.handle.contact());
    assert_eq!(c1.addr, plain_relay.handle.contact().addr);
    caller
        .handle
        .call(move |p, _| {
            for to in [c1, c2] {
                p.out.push_back(Transmit {
                    to,
                    msg: Message::Ping { token: 7 },
                });
            }
        })
        .await
        .unwrap();
    let me = caller.handle.contact();
    let from_caller = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p.contact.id == me.id)
            .map(|(p, m)| (*p, m.clone()))
    };
    let t0 = Instant::now();
    while from_caller(&seen1).is_none() || from_caller(&seen2).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "relayed pings did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p1, m1) = from_caller(&seen1).unwrap();
    let (p2, m2) = from_caller(&seen2).unwrap();
    assert_eq!((p1.contact, p2.contact), (me, me));
    assert_eq!(
        (m1, m2),
        (Message::Ping { token: 7 }, Message::Ping { token: 7 })
    );
    assert_eq!(p1.role, Role::Peer, "a plain peer relay vouched for a CSP");
    assert_eq!(p2.role, Role::Csp);
    assert_eq!(p1.layer, Layer::ONE);
    assert!(plain_relay.handle.stats().frames_relayed >= 1);
    assert!(csp_relay.handle.stats().frames_relayed >= 1);
    // Nobody dialled the peers behind NAT.
    assert_eq!(
        n1.handle.stats().accepts_ok + n2.handle.stats().accepts_ok,
        0
    );
    for h in [
        plain_relay.handle,
        csp_relay.handle,
        caller.handle,
        n1.handle,
        n2.handle,
    ] {
        h.shutdown().await.unwrap();
    }
}
