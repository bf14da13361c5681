//! Real peers in one process: real TLS 1.3 on loopback, ephemeral ports, a test CA made
//! with the enroll crate. A ring forms and every lookup ends at the true owner; hostile or
//! broken connections are refused, logged and counted, and the peer stays healthy.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

#[path = "support/common.rs"]
mod common;

use common::{AnyServer, converged, hello_bytes, init_logs, now_unix, owner_of, trust};

use enroll::cert::{Binding, Ca, Csr, der_to_pem, new_key_and_csr};
use enroll::{Layer, Role};
use net::{Handle, Identity, Limits, NetConfig, Peer, PeerRuntime, Trust};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time, Transmit};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BITS: u32 = 16;

struct Issued {
    chain_pem: String,
    key_pem: String,
    serial: Vec<u8>,
}

fn issue(ca: &Ca, id: u128, serial: u8) -> Issued {
    let (key_pem, csr) = new_key_and_csr().unwrap();
    let csr = Csr::from_pem(&csr).unwrap();
    let t = now_unix();
    let der = ca
        .issue(
            &csr,
            &Binding {
                node_id: NodeId(id),
                layer: Layer::ONE,
                role: Role::Peer,
            },
            [serial; 16],
            t - 60,
            t + 3600,
        )
        .unwrap();
    let serial = enroll::identity_from_cert(&der).unwrap().serial;
    Issued {
        chain_pem: der_to_pem(&der, "CERTIFICATE") + ca.cert_pem(),
        key_pem,
        serial,
    }
}

fn chord_config() -> Arc<ChordConfig> {
    let mut c = ChordConfig::new(IdSpace::new(BITS).unwrap());
    c.stabilize_every = Duration::from_millis(100);
    c.fix_fingers_every = Duration::from_millis(50);
    c.check_predecessor_every = Duration::from_millis(200);
    c.ring_check_every = Duration::from_secs(1);
    c.rpc_timeout = Duration::from_millis(300);
    c.lookup_timeout = Duration::from_secs(1);
    Arc::new(c)
}

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(500),
        redial_backoff: Duration::from_millis(100),
        ..Limits::default()
    }
}

fn net_config(ca: &Ca, tr: &Trust, id: u128) -> NetConfig {
    let is = issue(ca, id, (id % 250) as u8 + 1);
    NetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity: Identity::from_pem(&is.chain_pem, &is.key_pem).unwrap(),
        trust: tr.clone(),
        crl_refresh: None,
        limits: limits(),
    }
}

async fn start_chord(
    ca: &Ca,
    tr: &Trust,
    id: u128,
    bootstrap: Option<Contact>,
) -> PeerRuntime<ChordNode> {
    let cfg = chord_config();
    let rt = PeerRuntime::start(net_config(ca, tr, id), move |me| {
        ChordNode::new(cfg, me, [id as u8; 32])
    })
    .await
    .unwrap();
    rt.handle
        .call(move |n, now| match bootstrap {
            None => n.create(now),
            Some(b) => n.join(now, b),
        })
        .await
        .unwrap();
    rt
}

async fn wait_converged(handles: &[Handle<ChordNode>], ids: &[u128]) -> Duration {
    let t0 = Instant::now();
    while !converged(handles, ids).await {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "ring did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

async fn check_lookups(handles: &[Handle<ChordNode>], ids: &[u128], per_peer: u32) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for h in handles {
        for _ in 0..per_peer {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = u128::from(x) % (1u128 << BITS);
            let found = h.lookup(NodeId(key)).await.unwrap();
            assert_eq!(found.owner.id.0, owner_of(ids, key), "key {key}");
            assert_eq!(*found.path.first().unwrap(), h.contact().id);
            assert_eq!(*found.path.last().unwrap(), found.owner.id);
            assert!(found.owner.addr.is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_form_a_ring_over_tls() {
    init_logs("net=warn");
    let ca = Ca::generate("test E&A", now_unix(), 1).unwrap();
    let tr = trust(&ca);
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
    check_lookups(&handles, &ids, 20).await;
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
    check_lookups(&handles, &rest, 10).await;
    for p in peers {
        p.handle.shutdown().await.unwrap();
    }
}

// ---- refusals ----

/// Connect to `to` presenting `chain_pem`/`key_pem`, say hello as `claim`, then send
/// `extra`. Returns true if the peer closed the connection (or refused the handshake)
/// within two seconds.
async fn rogue(to: SocketAddr, chain_pem: &str, key_pem: &str, claim: u128, extra: &[u8]) -> bool {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let name = ServerName::try_from("rogue.invalid").unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
    else {
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

/// Tokens a [`Sender`] received.
type Got = Arc<std::sync::Mutex<Vec<u64>>>;

/// A minimal core that sends what it is told to: lets a test make the runtime dial any
/// contact.
#[derive(Default)]
struct Sender {
    out: VecDeque<Transmit>,
    /// Tokens of the Pings received.
    got: Got,
}

impl net::Core for Sender {
    type Event = ();
    fn handle_message(&mut self, _: Time, _: &Peer, msg: Message) {
        if let Message::Ping { token } = msg {
            self.got.lock().unwrap().push(token);
        }
    }
    fn handle_timeout(&mut self, _: Time) {}
    fn handle_not_sent(&mut self, _: Time, _: NodeId, _: &Message) {}
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn poll_timeout(&self) -> Option<Time> {
        None
    }
    fn leave(&mut self, _: Time) {}
}

fn last_refusal(h: &Handle<ChordNode>) -> String {
    h.stats()
        .recent_refusals
        .last()
        .cloned()
        .unwrap_or_default()
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_refused_and_the_peer_stays_healthy() {
    init_logs("net=warn");
    let ca = Ca::generate("test E&A", now_unix(), 1).unwrap();
    let tr = trust(&ca);
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
    let capped = PeerRuntime::start(cfg, |_| Sender::default())
        .await
        .unwrap();
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
    let sender = PeerRuntime::start(net_config(&ca, &tr, 12_345), |_| Sender::default())
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
    check_lookups(&handles, &ids, 10).await;
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
    let ca = Ca::generate("test E&A", now_unix(), 1).unwrap();
    let tr = trust(&ca);
    for pair in 0..12u128 {
        let (ia, ib) = (20_000 + 2 * pair, 20_001 + 2 * pair);
        let (ga, gb) = (Arc::default(), Arc::default());
        let (ga2, gb2) = (Arc::clone(&ga), Arc::clone(&gb));
        let a = PeerRuntime::start(net_config(&ca, &tr, ia), move |_| Sender {
            got: ga2,
            ..Sender::default()
        })
        .await
        .unwrap();
        let b = PeerRuntime::start(net_config(&ca, &tr, ib), move |_| Sender {
            got: gb2,
            ..Sender::default()
        })
        .await
        .unwrap();
        let (ca_, cb) = (
            Contact::new(NodeId(ia), a.handle.local_addr()),
            Contact::new(NodeId(ib), b.handle.local_addr()),
        );
        let send = |h: Handle<Sender>, to: Contact| async move {
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
        let (ga, gb): (Got, Got) = (ga, gb);
        let t0 = Instant::now();
        while (ga.lock().unwrap().len() < 3 || gb.lock().unwrap().len() < 3)
            && t0.elapsed() < Duration::from_secs(3)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *ga.lock().unwrap(),
            vec![1, 2, 3],
            "pair {pair}: frames to A lost"
        );
        assert_eq!(
            *gb.lock().unwrap(),
            vec![1, 2, 3],
            "pair {pair}: frames to B lost"
        );
        a.handle.shutdown().await.unwrap();
        b.handle.shutdown().await.unwrap();
    }
}
