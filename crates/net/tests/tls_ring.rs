//! Real peers in one process: real TLS 1.3 on loopback, ephemeral ports, a test CA made
//! with the enroll crate. A ring forms and every lookup ends at the true owner; hostile or
//! broken connections are refused, logged and counted, and the peer stays healthy.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{
    Probe, Seen, check_lookups, fast_limits, hello_bytes, init_logs, issue, now_unix,
    peer_identity, start_recording, test_ca, tls_connect,
};
use testkit::fast_chord;

use enroll::cert::Ca;
use net::{Handle, NetConfig, PeerRuntime, Trust};
use overlay::{ChordNode, Contact, Message, NodeId, Transmit};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BITS: u32 = 16;

fn net_config(ca: &Ca, tr: &Trust, id: u128) -> NetConfig {
    support::net_config(peer_identity(ca, id), tr, fast_limits())
}

async fn start_chord(
    ca: &Ca,
    tr: &Trust,
    id: u128,
    bootstrap: Option<Contact>,
) -> PeerRuntime<ChordNode> {
    let chord = Arc::new(fast_chord(BITS));
    support::start_chord(net_config(ca, tr, id), chord, id, bootstrap).await
}

async fn wait_converged(handles: &[Handle<ChordNode>], ids: &[u128]) -> Duration {
    support::wait_converged(handles, ids, Duration::from_secs(15)).await
}

async fn check_lookups_from(handles: &[Handle<ChordNode>], ids: &[u128], per_peer: u32) {
    check_lookups(handles, ids, per_peer, (0x9e37_79b9_7f4a_7c15, BITS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_form_a_ring_over_tls() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    let ids = [100u128, 9_000, 20_000, 40_000, 60_000];
    let first = start_chord(&ca, &tr, ids[0], None).await;
    let boot = first.handle.contact();
    let mut peers = vec![first];
    for &id in &ids[1..] {
        peers.push(start_chord(&ca, &tr, id, Some(boot)).await);
    }
    let handles: Vec<_> = peers.iter().map(|p| p.handle.clone()).collect();
    let took = wait_converged(&handles, &ids).await;
    eprintln!("5 peers converged in {took:?}");
    check_lookups_from(&handles, &ids, 20).await;
    for h in &handles {
        let s = h.stats();
        assert_eq!(
            s.accepts_refused + s.dials_failed + s.oversized_in,
            0,
            "{s:?}"
        );
        assert!(s.frames_in > 0 && s.frames_out > 0);
    }

    // A graceful leave: the others heal at once and lookups still end at the true owner.
    let leaving = peers.remove(2);
    leaving.handle.shutdown().await.unwrap();
    leaving.task.await.unwrap();
    let rest: Vec<u128> = ids.iter().copied().filter(|&i| i != ids[2]).collect();
    let handles: Vec<_> = peers.iter().map(|p| p.handle.clone()).collect();
    let took = wait_converged(&handles, &rest).await;
    eprintln!("healed after a graceful leave in {took:?}");
    check_lookups_from(&handles, &rest, 10).await;
    for p in peers {
        p.handle.shutdown().await.unwrap();
    }
}

// ---- refusals ----

/// Connect to `to` presenting `chain_pem`/`key_pem`, say hello as `claim`, then send
/// `extra`. Returns true if the peer closed the connection (or refused the handshake)
/// within two seconds.
async fn rogue(to: SocketAddr, chain_pem: &str, key_pem: &str, claim: u128, extra: &[u8]) -> bool {
    let Ok(mut tls) = tls_connect(to, chain_pem, key_pem).await else {
        return true;
    };
    let me: SocketAddr = "127.0.0.1:9".parse().unwrap();
    if tls.write_all(&hello_bytes(claim, me)).await.is_err() {
        return true;
    }
    let _ = tls.write_all(extra).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Err(_) => return false, // still open
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the peer's hello; keep reading
        }
    }
}

/// The tokens of the Pings a [`Probe`] received, in order.
fn ping_tokens(seen: &Seen) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Ping { token } => Some(*token),
            _ => None,
        })
        .collect()
}

fn last_refusal(h: &Handle<ChordNode>) -> String {
    h.stats()
        .recent_refusals
        .last()
        .cloned()
        .unwrap_or_default()
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    support::wait_for(what, Duration::from_secs(3), f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_refused_and_the_peer_stays_healthy() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    let ids = [1_000u128, 30_000];
    let a = start_chord(&ca, &tr, ids[0], None).await;
    let b = start_chord(&ca, &tr, ids[1], Some(a.handle.contact())).await;
    let handles = vec![a.handle.clone(), b.handle.clone()];
    wait_converged(&handles, &ids).await;
    let h = a.handle.clone();
    let addr = h.local_addr();
    let refused = || h.stats().accepts_refused;

    // 1. A certificate from another CA.
    let other = Ca::generate("not our E&A", now_unix(), 1).unwrap();
    let is = issue(&other, 5, 5);
    assert!(rogue(addr, &is.chain_pem, &is.key_pem, 5, &[]).await);
    wait_for("refusal 1", || refused() == 1).await;
    eprintln!("other CA: {}", last_refusal(&h));

    // 2. An unenrolled, self-signed certificate that claims a p2psip binding.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = ["p2psip:node/6", "p2psip:layer/1", "p2psip:role/peer"]
        .into_iter()
        .map(|u| rcgen::SanType::URI(u.try_into().unwrap()))
        .collect();
    let cert = params.self_signed(&key).unwrap();
    assert!(rogue(addr, &cert.pem(), &key.serialize_pem(), 6, &[]).await);
    wait_for("refusal 2", || refused() == 2).await;
    eprintln!("self-signed: {}", last_refusal(&h));

    // 3. A revoked certificate (the CRL is updated in place, as the refresher does).
    let revoked = issue(&ca, 7, 77);
    let t = now_unix();
    tr.crls.set(
        ca.crl(&[(revoked.serial.clone(), t - 1)], t - 60, t + 3600, 2)
            .unwrap(),
    );
    assert!(rogue(addr, &revoked.chain_pem, &revoked.key_pem, 7, &[]).await);
    wait_for("refusal 3", || refused() == 3).await;
    assert!(last_refusal(&h).contains("revoked"), "{}", last_refusal(&h));
    assert!(
        h.stats().recent_refusals[0].contains("UnknownIssuer"),
        "{:?}",
        h.stats().recent_refusals
    );
    eprintln!("revoked: {}", last_refusal(&h));

    // 4. A valid certificate whose holder claims another Node-ID in its hello.
    let liar = issue(&ca, 8, 88);
    assert!(rogue(addr, &liar.chain_pem, &liar.key_pem, ids[1], &[]).await);
    wait_for("refusal 4", || refused() == 4).await;
    assert!(
        last_refusal(&h).contains("binds node 8"),
        "{}",
        last_refusal(&h)
    );
    eprintln!("ID mismatch: {}", last_refusal(&h));

    // 5. A valid peer that sends a frame announcing 1 MiB: closed unread.
    let big = issue(&ca, 9, 99);
    let mut frame = vec![overlay::wire::WIRE_VERSION, 7];
    frame.extend_from_slice(&(1u32 << 20).to_be_bytes());
    assert!(rogue(addr, &big.chain_pem, &big.key_pem, 9, &frame).await);
    wait_for("oversized", || h.stats().oversized_in == 1).await;
    assert_eq!(h.stats().accepts_ok, 2); // b, and the oversized sender got in
    eprintln!("oversized: {}", last_refusal(&h));

    // 6. Slow-loris: a TCP connection that never starts the handshake.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    eprintln!("slow-loris closed after {:?}", t0.elapsed());
    wait_for("handshake timeout", || h.stats().handshake_timeouts == 1).await;

    // 7. The inbound cap: with one slot, a second connection is closed at once.
    let mut cfg = net_config(&ca, &tr, 54_321);
    cfg.limits.max_inbound = 1;
    let capped = PeerRuntime::start(cfg, |_| Probe::default()).await.unwrap();
    let caddr = capped.handle.local_addr();
    let _hog = tokio::net::TcpStream::connect(caddr).await.unwrap();
    let ch = capped.handle.clone();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = tokio::net::TcpStream::connect(caddr).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    wait_for("capacity refusal", || ch.stats().refused_capacity == 1).await;
    capped.handle.shutdown().await.unwrap();

    // 8. Outbound: dial a contact whose address belongs to another Node-ID.
    let sender = PeerRuntime::start(net_config(&ca, &tr, 12_345), |_| Probe::default())
        .await
        .unwrap();
    let wrong = Contact::new(NodeId(4242), addr);
    sender
        .handle
        .call(move |s, _| {
            s.out.push_back(Transmit {
                to: wrong,
                msg: Message::Ping { token: 1 },
            })
        })
        .await
        .unwrap();
    let sh = sender.handle.clone();
    wait_for("outbound refusal", || sh.stats().dials_failed == 1).await;
    let why = sh.stats().recent_refusals.join("; ");
    assert!(why.contains("4242"), "{why}");
    eprintln!("outbound ID mismatch: {why}");
    sender.handle.shutdown().await.unwrap();

    // The peer is still healthy: the ring holds and lookups end at the true owner.
    wait_converged(&handles, &ids).await;
    check_lookups_from(&handles, &ids, 10).await;
    eprintln!("{:#?}", h.stats());
    a.handle.shutdown().await.unwrap();
    b.handle.shutdown().await.unwrap();
}

/// Two peers that dial each other at the same moment end up with two links; each side's
/// first frames travel on the link it dialled. Closing either link as a duplicate lost
/// those frames (calls then rang only on the caller's retry). Every frame must arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_dialling_each_other_at_once_lose_no_frame() {
    init_logs("net=warn");
    let (ca, tr) = test_ca();
    for pair in 0..12u128 {
        let (ia, ib) = (20_000 + 2 * pair, 20_001 + 2 * pair);
        let (a, ga) = start_recording(net_config(&ca, &tr, ia)).await;
        let (b, gb) = start_recording(net_config(&ca, &tr, ib)).await;
        let (ca_, cb) = (
            Contact::new(NodeId(ia), a.handle.local_addr()),
            Contact::new(NodeId(ib), b.handle.local_addr()),
        );
        let send = |h: Handle<Probe>, to: Contact| async move {
            h.call(move |s, _| {
                for token in 1..=3 {
                    s.out.push_back(Transmit {
                        to,
                        msg: Message::Ping { token },
                    });
                }
            })
            .await
            .unwrap();
        };
        tokio::join!(send(a.handle.clone(), cb), send(b.handle.clone(), ca_));
        let t0 = Instant::now();
        while (ping_tokens(&ga).len() < 3 || ping_tokens(&gb).len() < 3)
            && t0.elapsed() < Duration::from_secs(3)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            ping_tokens(&ga),
            vec![1, 2, 3],
            "pair {pair}: frames to A lost"
        );
        assert_eq!(
            ping_tokens(&gb),
            vec![1, 2, 3],
            "pair {pair}: frames to B lost"
        );
        a.handle.shutdown().await.unwrap();
        b.handle.shutdown().await.unwrap();
    }
}
