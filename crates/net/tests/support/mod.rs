//! Helpers shared by the real-TLS runtime tests in `crates/net/tests`: test logging, the
//! trust anchor with a fresh CRL, certificates and identities from a test CA, fast Chord
//! timers and set-up limits, starting a Chord peer, ring convergence and lookups checked
//! against the true owner, a core that sends what it is told, a TLS client that accepts any
//! server (for rogue connections), hand-made hello bytes and layer-2 identities for the
//! secure-overlay tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use enroll::cert::{Binding, Ca, Csr, KeyPair, csr_for_key, der_to_pem, new_key_and_csr};
use enroll::{Layer, Role};
use net::{
    Core, CrlStore, Handle, Identity, Limits, Membership, NetConfig, Peer, PeerRuntime,
    RevocationPolicy, Trust,
};
use overlay::secure::{LayerArcs, OverlayContext, Routing, SecureNode};
use overlay::{ChordConfig, ChordNode, Contact, IdSpace, Message, NodeId, Time, Transmit};
use rustls::client::danger::ServerCertVerified;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Seconds since the Unix epoch, as the CA and CRLs take them.
pub fn now_unix() -> i64 {
    enroll::server::unix_now()
}

/// Install the ring crypto provider and a test log writer; `default_filter` applies when
/// `RUST_LOG` is unset.
pub fn init_logs(default_filter: &str) {
    service::crypto::install_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh test E&A CA and the trust in it (see [`trust`]).
pub fn test_ca() -> (Ca, Trust) {
    let ca = Ca::generate("test E&A", now_unix(), 1).unwrap();
    let tr = trust(&ca);
    (ca, tr)
}

/// Trust `ca`, with an empty CRL valid for the next hour, and require a CRL.
pub fn trust(ca: &Ca) -> Trust {
    let t = now_unix();
    let crls = CrlStore::new();
    crls.set(ca.crl(&[], t - 60, t + 3600, 1).unwrap());
    Trust {
        ca: ca.cert_der().clone(),
        crls,
        policy: RevocationPolicy::RequireCrl,
    }
}

/// A certificate the test CA issued, with its key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    /// The certificate's serial, as a CRL names it.
    pub serial: Vec<u8>,
}

impl Issued {
    /// The runtime identity of the certificate's holder.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.chain_pem, &self.key_pem).unwrap()
    }
}

/// A certificate from `ca` for a fresh key, binding `id` to `layer` and `role`, with
/// `serial`, valid from `not_before` to `not_after`.
pub fn issue_at(
    ca: &Ca,
    id: u128,
    (layer, role): (Layer, Role),
    serial: [u8; 16],
    (not_before, not_after): (i64, i64),
) -> Issued {
    let (key_pem, csr) = new_key_and_csr().unwrap();
    let csr = Csr::from_pem(&csr).unwrap();
    let binding = Binding {
        node_id: NodeId(id),
        layer,
        role,
    };
    let der = ca
        .issue(&csr, &binding, serial, not_before, not_after)
        .unwrap();
    Issued {
        chain_pem: der_to_pem(&der, "CERTIFICATE") + ca.cert_pem(),
        key_pem,
        serial: enroll::identity_from_cert(&der).unwrap().serial,
    }
}

/// A layer-1 peer's certificate for `id` from `ca`, serial `[serial; 16]`, valid for the
/// next hour.
pub fn issue(ca: &Ca, id: u128, serial: u8) -> Issued {
    let t = now_unix();
    issue_at(
        ca,
        id,
        (Layer::ONE, Role::Peer),
        [serial; 16],
        (t - 60, t + 3600),
    )
}

/// The identity of `id` as a `role` in `layer`, valid for the next hour; the serial is
/// derived from `id`.
pub fn identity_as(ca: &Ca, id: u128, layer: Layer, role: Role) -> Identity {
    let t = now_unix();
    let serial = [(id % 250) as u8 + 1; 16];
    issue_at(ca, id, (layer, role), serial, (t - 60, t + 3600)).identity()
}

/// The identity of `id` as a layer-1 peer, valid for the next hour.
pub fn peer_identity(ca: &Ca, id: u128) -> Identity {
    identity_as(ca, id, Layer::ONE, Role::Peer)
}

/// Connection set-up limits short enough for a test: a 400 ms handshake, a 500 ms dial,
/// 100 ms between redials.
pub fn fast_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(500),
        redial_backoff: Duration::from_millis(100),
        ..Limits::default()
    }
}

/// A peer on an ephemeral loopback port as `identity`, trusting `trust`.
pub fn net_config(identity: Identity, trust: &Trust, limits: Limits) -> NetConfig {
    NetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        identity,
        trust: trust.clone(),
        crl_refresh: None,
        limits,
    }
}

/// Create the ring (no bootstrap) or join it through `bootstrap`.
pub async fn create_or_join(handle: &Handle<ChordNode>, bootstrap: Option<Contact>) {
    handle
        .call(move |n, now| match bootstrap {
            None => n.create(now),
            Some(b) => n.join(now, b),
        })
        .await
        .unwrap();
}

/// A Chord peer `id` started on `config` that creates the ring or joins it.
pub async fn start_chord(
    config: NetConfig,
    chord: Arc<ChordConfig>,
    id: u128,
    bootstrap: Option<Contact>,
) -> PeerRuntime<ChordNode> {
    let rt = PeerRuntime::start(config, move |me| ChordNode::new(chord, me, [id as u8; 32]))
        .await
        .unwrap();
    create_or_join(&rt.handle, bootstrap).await;
    rt
}

/// The true owner of `key` among `ids` (in any order): [`testkit::owner`] on raw IDs.
pub fn owner_of(ids: &[u128], key: u128) -> u128 {
    let mut ring: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
    ring.sort();
    testkit::owner(&ring, NodeId(key)).0
}

/// Does every handle have its true successor and predecessor among `ids`?
pub async fn converged(handles: &[Handle<ChordNode>], ids: &[u128]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort();
    for h in handles {
        let st = h.ring_status().await.unwrap();
        let i = sorted.iter().position(|&x| x == st.me.id.0).unwrap();
        let succ = sorted[(i + 1) % sorted.len()];
        let pred = sorted[(i + sorted.len() - 1) % sorted.len()];
        if st.successors.first().map(|c| c.id.0) != Some(succ)
            || st.predecessor.map(|c| c.id.0) != Some(pred)
        {
            return false;
        }
    }
    true
}

/// Wait until every handle has its true successor and predecessor, at most `within`; how
/// long it took.
pub async fn wait_converged(
    handles: &[Handle<ChordNode>],
    ids: &[u128],
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    while !converged(handles, ids).await {
        assert!(t0.elapsed() < within, "ring did not converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// Lookups from every handle for `per_peer` pseudo-random keys (xorshift from `seed`) in a
/// `bits`-bit space: each ends at the true owner, with an address, on a path from the
/// asking peer to the owner.
pub async fn check_lookups(
    handles: &[Handle<ChordNode>],
    ids: &[u128],
    per_peer: u32,
    (seed, bits): (u64, u32),
) {
    let mut x: u64 = seed | 1;
    for h in handles {
        for _ in 0..per_peer {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = u128::from(x) % (1u128 << bits);
            let found = h.lookup(NodeId(key)).await.unwrap();
            assert_eq!(found.owner.id.0, owner_of(ids, key), "key {key}");
            assert_eq!(*found.path.first().unwrap(), h.contact().id);
            assert_eq!(*found.path.last().unwrap(), found.owner.id);
            assert!(found.owner.addr.is_some());
        }
    }
}

/// Wait until `f` holds, at most `within`.
pub async fn wait_for<F: Fn() -> bool>(what: &str, within: Duration, f: F) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a [`Probe`] received: each frame with who sent it.
pub type Seen = Arc<Mutex<Vec<(Peer, Message)>>>;

/// A core that sends what it is told to and records who sent it what: lets a test make the
/// runtime dial any contact and see what arrives.
#[derive(Default)]
pub struct Probe {
    pub out: VecDeque<Transmit>,
    pub seen: Seen,
    /// Peers it asks the runtime to hold links to (and keeps them).
    pub standing: Vec<Contact>,
}

impl Probe {
    /// A probe that records into `seen`.
    pub fn recording(seen: Seen) -> Self {
        Probe {
            seen,
            ..Probe::default()
        }
    }
}

/// A [`Probe`] peer started on `config`, and what it receives.
pub async fn start_recording(config: NetConfig) -> (PeerRuntime<Probe>, Seen) {
    let seen = Seen::default();
    let rec = Arc::clone(&seen);
    let p = PeerRuntime::start(config, move |_| Probe::recording(rec))
        .await
        .unwrap();
    (p, seen)
}

impl Core for Probe {
    type Event = ();
    fn handle_message(&mut self, _: Time, from: &Peer, msg: Message) {
        self.seen.lock().unwrap().push((*from, msg));
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
    fn keeps_link(&self, peer: NodeId) -> bool {
        self.standing.iter().any(|c| c.id == peer)
    }
    fn standing_links(&self) -> Vec<Contact> {
        self.standing.clone()
    }
}

/// TLS 1.3 to `to` presenting `chain_pem` and `key_pem`, accepting any server; `Err` if
/// the handshake is refused.
pub async fn tls_connect(
    to: SocketAddr,
    chain_pem: &str,
    key_pem: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
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
    let tcp = TcpStream::connect(to).await.unwrap();
    let name = ServerName::try_from("rogue.invalid").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// Does every handle have the next of their Node-IDs as its successor? `successor` reads
/// it from the core.
pub async fn successors_in_order<C: Core>(
    handles: &[Handle<C>],
    successor: fn(&mut C) -> Option<NodeId>,
) -> bool {
    let mut ids: Vec<NodeId> = handles.iter().map(|h| h.contact().id).collect();
    ids.sort();
    for h in handles {
        let pos = ids.iter().position(|i| *i == h.contact().id).unwrap();
        let want = ids[(pos + 1) % ids.len()];
        if h.call(move |n, _| successor(n)).await.unwrap() != Some(want) {
            return false;
        }
    }
    true
}

/// A client verifier that accepts any server: the rogue does not care who it talks to.
#[derive(Debug)]
pub struct AnyServer(pub rustls::crypto::WebPkiSupportedAlgorithms);

impl service::tls::CheckServerCert for AnyServer {
    fn check_server_cert(
        &self,
        _: service::tls::ServerCert<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
}

service::server_cert_verifier!(AnyServer);

impl service::tls::SignatureAlgorithms for AnyServer {
    fn signature_algorithms(&self) -> rustls::crypto::WebPkiSupportedAlgorithms {
        self.0
    }
}

/// A hello as `id` advertising IPv4 `addr`.
pub fn hello_bytes(id: u128, addr: SocketAddr) -> Vec<u8> {
    // Hello v2: flags 0, no target (see crates/net/src/hello.rs).
    let mut b = b"P2PH\x02\x00".to_vec();
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&0u128.to_be_bytes());
    b.extend_from_slice(&addr.port().to_be_bytes());
    b.push(4);
    if let std::net::IpAddr::V4(ip) = addr.ip() {
        b.extend_from_slice(&ip.octets());
    }
    b
}

/// The secure-overlay tests' space: 10-bit Node-IDs, one layer holding everyone
/// ([1, 1000) is layer 2).
pub fn layer2_space() -> (IdSpace, LayerArcs) {
    let space = IdSpace::new(10).unwrap();
    (space, LayerArcs::new(space, [0, 1, 1000]).unwrap())
}

/// The membership of certificate `chains` trusted by `tr`, each with its listen address
/// when it is known.
pub fn membership_of<'a>(
    arcs: LayerArcs,
    tr: &Trust,
    chains: impl IntoIterator<Item = (&'a [CertificateDer<'static>], Option<SocketAddr>)>,
) -> Membership {
    let mut membership = Membership::new(arcs);
    for (chain, addr) in chains {
        membership.add(tr, chain, addr).unwrap();
    }
    membership
}

/// A layer-2 identity for `id`: the CSP or the CSPG of `(csp, cspg)` by its Node-ID, a
/// peer otherwise (see [`layer2_identity`] for `tag`).
pub fn layer2_member(ca: &Ca, id: u128, (csp, cspg): (u128, u128), tag: u8) -> Identity {
    let role = match id {
        _ if id == csp => Role::Csp,
        _ if id == cspg => Role::Cspg,
        _ => Role::Peer,
    };
    layer2_identity(ca, id, role, tag)
}

/// A layer-2 identity for `id` with `role`, signed by `ca` for the next hour; the serial is
/// `id` with its first byte replaced by `tag`, so each test file's serials stay distinct.
pub fn layer2_identity(ca: &Ca, id: u128, role: Role, tag: u8) -> Identity {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = Csr::from_pem(&csr_for_key(&key).unwrap()).unwrap();
    let t = now_unix();
    let mut serial = id.to_be_bytes();
    serial[0] = tag;
    let der = ca
        .issue(
            &csr,
            &Binding {
                node_id: NodeId(id),
                layer: Layer::TWO,
                role,
            },
            serial,
            t - 60,
            t + 3600,
        )
        .unwrap();
    let chain_pem = der_to_pem(&der, "CERTIFICATE") + ca.cert_pem();
    Identity::from_pem(&chain_pem, &key.serialize_pem()).unwrap()
}

/// What a test peer of `identity` hands the runtime to build its secure node once it knows
/// its own contact: layer-2 Chord under `chord`, the secure layer under `ctx`, signing
/// with its certificate key, secure routing, every random choice seeded by its Node-ID.
pub fn make_secure_node(
    identity: &Identity,
    chord: Arc<ChordConfig>,
    ctx: OverlayContext,
) -> impl FnOnce(Contact) -> SecureNode + Send + 'static {
    let signer = net::CertSigner::from_identity(identity).unwrap();
    let role = identity.binding.role;
    let seed = [identity.node_id.0 as u8; 32];
    move |me| net::secure_node(signer, role, me, chord, ctx, Routing::Secure, seed)
}
