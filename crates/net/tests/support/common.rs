//! Helpers shared by the real-TLS runtime tests in `crates/net/tests`: test logging, the
//! trust anchor with a fresh CRL, the true owner of a key, ring convergence, a TLS client
//! verifier that accepts any server (for rogue connections), hand-made hello bytes and
//! layer-2 identities for the secure-overlay tests.
#![allow(dead_code)]

use enroll::cert::{Binding, Ca, Csr, KeyPair, csr_for_key, der_to_pem};
use enroll::{Layer, Role};
use net::{CrlStore, Handle, Identity, RevocationPolicy, Trust};
use overlay::{ChordNode, NodeId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;

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

/// The true owner of `key`: the first ID at or after it, clockwise.
pub fn owner_of(ids: &[u128], key: u128) -> u128 {
    let mut s = ids.to_vec();
    s.sort();
    s.iter().copied().find(|&i| i >= key).unwrap_or(s[0])
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

/// A client verifier that accepts any server: the rogue does not care who it talks to.
#[derive(Debug)]
pub struct AnyServer(pub rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
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
