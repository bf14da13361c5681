//! A partitioned layer heals: eight Chord peers on real TLS 1.3 (127.0.0.1) form one ring;
//! then every overlay message between two halves (interleaved on the ring, so every
//! successor link crosses the cut) is dropped in both directions for a while, as if the
//! network between them failed; the halves form two rings; after the cut is lifted the
//! ring check (a lookup of our own successor through a bootstrap peer) finds the other half
//! and stabilization merges the two rings back into one.
//!
//! The cut is made inside each peer's runtime (a `Core` wrapper that drops the messages,
//! the TLS links stay up), not in the kernel: this machine's firewall is shared.
#![allow(clippy::unwrap_used)]

mod support;

use support::{fast_limits, net_config, peer_identity, test_ca};
use testkit::fast_chord;

use net::{Core, Handle, Limits, Peer, PeerRuntime};
use overlay::{ChordNode, Contact, Event, Message, NodeId, Time, Transmit};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const IDS: [u128; 8] = [1_000, 9_000, 17_000, 25_000, 33_000, 41_000, 49_000, 57_000];

/// A Chord node behind a cut: while `cut` is set, messages to or from the other half are
/// dropped.
struct Cut {
    node: ChordNode,
    mine: bool,
    half: Arc<BTreeSet<u128>>,
    cut: Arc<AtomicBool>,
}

impl Cut {
    fn blocked(&self, other: NodeId) -> bool {
        self.cut.load(Ordering::Relaxed) && self.half.contains(&other.0) != self.mine
    }
}

impl Core for Cut {
    type Event = Event;
    fn handle_message(&mut self, now: Time, from: &Peer, msg: Message) {
        if !self.blocked(from.contact.id) {
            Core::handle_message(&mut self.node, now, from, msg);
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        Core::handle_timeout(&mut self.node, now);
    }
    fn handle_not_sent(&mut self, now: Time, to: NodeId, msg: &Message) {
        Core::handle_not_sent(&mut self.node, now, to, msg);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            let t = Core::poll_transmit(&mut self.node)?;
            if !self.blocked(t.to.id) {
                return Some(t);
            }
        }
    }
    fn poll_event(&mut self) -> Option<Event> {
        Core::poll_event(&mut self.node)
    }
    fn poll_timeout(&self) -> Option<Time> {
        Core::poll_timeout(&self.node)
    }
    fn leave(&mut self, now: Time) {
        Core::leave(&mut self.node, now);
    }
    fn failed_peer(event: &Event) -> Option<NodeId> {
        <ChordNode as Core>::failed_peer(event)
    }
}

/// Every peer's successor and predecessor are the next and previous of `ring`.
async fn is_ring(handles: &[Handle<Cut>], ring: &[u128]) -> bool {
    let n = ring.len();
    for h in handles {
        let me = h.contact().id.0;
        let Some(i) = ring.iter().position(|x| *x == me) else {
            continue;
        };
        let (s, p) = h
            .call(|c, _| {
                (
                    c.node.successor().map(|s| s.id.0),
                    c.node.predecessor().map(|p| p.id.0),
                )
            })
            .await
            .unwrap();
        if s != Some(ring[(i + 1) % n]) || p != Some(ring[(i + n - 1) % n]) {
            return false;
        }
    }
    true
}

async fn wait_rings(handles: &[Handle<Cut>], rings: &[Vec<u128>], within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let mut all = true;
        for r in rings {
            all &= is_ring(handles, r).await;
        }
        if all {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "rings {rings:?} not formed within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_ring_heals_into_one() {
    service::crypto::install_provider();
    let (ca, tr) = test_ca();
    let mut c = fast_chord(16);
    c.successors = 3;
    c.ring_check_every = Duration::from_millis(500);
    c.rpc_timeout = Duration::from_millis(500);
    c.lookup_timeout = Duration::from_secs(2);
    let cfg = Arc::new(c);
    let half: Arc<BTreeSet<u128>> = Arc::new(IDS.iter().copied().step_by(2).collect());
    let cut = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        ..fast_limits()
    };

    let mut peers = Vec::new();
    for id in IDS {
        let (cfg, half, cut) = (cfg.clone(), half.clone(), cut.clone());
        let rt = PeerRuntime::start(
            net_config(peer_identity(&ca, id), &tr, limits.clone()),
            move |me| Cut {
                node: ChordNode::new(cfg, me, [id as u8; 32]),
                mine: half.contains(&id),
                half,
                cut,
            },
        )
        .await
        .unwrap();
        peers.push(rt);
    }
    let handles: Vec<Handle<Cut>> = peers.iter().map(|p| p.handle.clone()).collect();
    // Bootstrap peers: the first peer of each half (as a deployment lists a few).
    let boots: Vec<Contact> = vec![handles[0].contact(), handles[1].contact()];
    handles[0].call(|c, now| c.node.create(now)).await.unwrap();
    for (i, h) in handles.iter().enumerate().skip(1) {
        let b = boots.clone();
        h.call(move |c, now| {
            for x in &b {
                if x.id != c.node.id() {
                    c.node.add_bootstrap(*x);
                }
            }
            c.node.join(now, b[0]);
        })
        .await
        .unwrap();
        // Join one at a time.
        let t0 = Instant::now();
        while h.call(|c, _| c.node.successor().is_none()).await.unwrap() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "peer {i} did not join"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    handles[0]
        .call(move |c, _| c.node.add_bootstrap(boots[1]))
        .await
        .unwrap();
    let one: Vec<u128> = IDS.to_vec();
    let t = wait_rings(
        &handles,
        std::slice::from_ref(&one),
        Duration::from_secs(20),
    )
    .await;
    eprintln!("one ring after {t:?}");

    // Cut the layer in two, interleaved: every successor link crosses the cut.
    cut.store(true, Ordering::Relaxed);
    let a: Vec<u128> = IDS.iter().copied().step_by(2).collect();
    let b: Vec<u128> = IDS.iter().copied().skip(1).step_by(2).collect();
    let t = wait_rings(&handles, &[a.clone(), b.clone()], Duration::from_secs(30)).await;
    eprintln!("cut: two rings {a:?} and {b:?} after {t:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The links across the cut stayed up (the cut drops messages, not connections), yet
    // the peers gave up on the neighbours that stopped answering over them and closed
    // those links: after the cut the next message to such a peer dials afresh.
    let mut closed = 0;
    for h in &handles {
        closed += h.stats().failed_closed;
    }
    assert!(
        closed > 0,
        "no link closed to a peer that stopped answering"
    );

    // Lift the cut: one ring again.
    cut.store(false, Ordering::Relaxed);
    let t = wait_rings(&handles, &[one], Duration::from_secs(30)).await;
    eprintln!("healed: one ring {t:?} after the cut was lifted");
    for p in peers {
        p.handle.shutdown().await.unwrap();
    }
}
