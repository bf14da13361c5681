//! Which links a peer keeps, on real TLS links over loopback: a link this peer dialled but
//! that the other side keeps its ring over (it asks for neighbours, pings or notifies on it)
//! is the other side's to close. Closing it for idleness, or to make room while over its
//! share, only made the other side dial again at its next maintenance round, and a peer
//! that many have as a finger went through its links one redial at a time: ten TLS
//! handshakes a second in a 512-peer overlay at rest.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{Probe, Seen, fast_limits, init_logs, peer_identity, test_ca};

use enroll::cert::Ca;
use net::{Handle, Limits, LinkBudget, PeerRuntime, Trust};
use overlay::{Contact, Message, Transmit};
use std::sync::Arc;
use std::time::Duration;

/// Short, so a link left alone closes within the test.
const IDLE: Duration = Duration::from_millis(600);

/// A running peer and what it received.
type Running = (PeerRuntime<Probe>, Seen);

async fn start(ca: &Ca, tr: &Trust, id: u128, limits: Limits) -> Running {
    support::start_recording(support::net_config(peer_identity(ca, id), tr, limits)).await
}

/// A (ID 1 000) and B (ID 2 000) under one test CA, with the test's limits.
async fn a_and_b() -> (Running, Running) {
    let (ca, tr) = test_ca();
    let a = start(&ca, &tr, 1_000, limits()).await;
    let b = start(&ca, &tr, 2_000, limits()).await;
    (a, b)
}

/// Stop the peers of a test.
async fn shut_down(peers: impl IntoIterator<Item = PeerRuntime<Probe>>) {
    for p in peers {
        p.handle.shutdown().await.unwrap();
    }
}

fn limits() -> Limits {
    Limits {
        idle_timeout: IDLE,
        ..fast_limits()
    }
}

fn contact(p: &PeerRuntime<Probe>) -> Contact {
    p.handle.contact()
}

/// `from` sends `msg` to `to` (dialling it if it holds no link), and `to` gets it.
async fn send(from: &Handle<Probe>, to: Contact, to_seen: &Seen, msg: Message) {
    let before = to_seen.lock().unwrap().len();
    from.call(move |s, _| s.out.push_back(Transmit { to, msg }))
        .await
        .unwrap();
    support::wait_for("the frame to arrive", Duration::from_secs(3), || {
        to_seen.lock().unwrap().len() > before
    })
    .await;
}

/// B dials A (a pong: not something A keeps its ring over), then A asks B for its
/// neighbours on that link if `a_keeps`. Left alone for several idle timeouts, B closes the
/// link only if A never used it for its own upkeep.
async fn idle_link(a_keeps: bool) -> net::Stats {
    let ((a, a_seen), (b, b_seen)) = a_and_b().await;
    send(&b.handle, contact(&a), &a_seen, Message::Pong { token: 1 }).await;
    let upkeep = if a_keeps {
        Message::GetNeighbours { token: 2 }
    } else {
        Message::Pong { token: 2 }
    };
    send(&a.handle, contact(&b), &b_seen, upkeep).await;
    tokio::time::sleep(IDLE * 4).await;
    let stats = b.handle.stats();
    shut_down([a, b]).await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_the_other_side_keeps_its_ring_over_outlives_the_idle_timeout() {
    init_logs("net=warn");
    let kept = idle_link(true).await;
    assert_eq!(kept.dials_ok, 1);
    assert_eq!(
        kept.idle_closed, 0,
        "B closed a link A maintains its ring over"
    );
    // The same link with only answers on it is B's alone: it closes when idle.
    let left = idle_link(false).await;
    assert_eq!(left.idle_closed, 1, "B kept a link nobody needs");
}

/// A peer holds links to its standing peers (its CSPG and the CSP of its arc) open before
/// any call needs them: it dials them by itself, and both ends keep the link while quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dials_its_standing_peers_and_both_ends_keep_the_links() {
    init_logs("net=warn");
    let ((a, a_seen), (b, _)) = a_and_b().await;
    let (to_a, b_id) = (contact(&a), contact(&b).id);
    b.handle
        .call(move |s, _| s.standing.push(to_a))
        .await
        .unwrap();
    support::wait_for("B to ping A", Duration::from_secs(5), || {
        a_seen
            .lock()
            .unwrap()
            .iter()
            .any(|(p, m)| p.contact.id == b_id && matches!(m, Message::Ping { .. }))
    })
    .await;
    tokio::time::sleep(IDLE * 4).await;
    let (sa, sb) = (a.handle.stats(), b.handle.stats());
    assert_eq!(sb.dials_ok, 1, "one link, dialled once");
    assert_eq!(
        sa.idle_closed + sb.idle_closed,
        0,
        "a standing link closed while quiet"
    );
    shut_down([a, b]).await;
}

/// B holds more than its share of a process's link budget (that still has room): before it
/// opens a link it closes one it opened and nobody needs, never one the other side keeps
/// its ring over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_share_a_peer_closes_links_nobody_else_needs() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    let (a, a_seen) = start(&ca, &tr, 1_000, limits()).await;
    let (c, c_seen) = start(&ca, &tr, 3_000, limits()).await;
    let (d, d_seen) = start(&ca, &tr, 4_000, limits()).await;
    let over = Limits {
        shared_links: Some(Arc::new(LinkBudget::new(1_000, 1))),
        ..limits()
    };
    let (b, b_seen) = start(&ca, &tr, 2_000, over).await;
    // B dials A; A keeps its ring over that link.
    send(&b.handle, contact(&a), &a_seen, Message::Pong { token: 1 }).await;
    send(&a.handle, contact(&b), &b_seen, Message::Ping { token: 2 }).await;
    // B dials C (over its share: nothing it may close, so it holds both), then D: the
    // link to C goes, not A's.
    send(&b.handle, contact(&c), &c_seen, Message::Pong { token: 3 }).await;
    send(&b.handle, contact(&d), &d_seen, Message::Pong { token: 4 }).await;
    let s = b.handle.stats();
    assert_eq!(s.links_evicted, 1, "one link closed to make room");
    assert_eq!(s.dials_ok, 3);
    // A's link is still up: B reaches A again without a dial, C only with one.
    send(&b.handle, contact(&a), &a_seen, Message::Pong { token: 5 }).await;
    assert_eq!(b.handle.stats().dials_ok, 3, "B dialled A again");
    send(&b.handle, contact(&c), &c_seen, Message::Pong { token: 6 }).await;
    assert_eq!(b.handle.stats().dials_ok, 4);
    shut_down([a, b, c, d]).await;
}
