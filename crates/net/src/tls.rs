//! Mutual TLS 1.3 between peers: identities, the trust anchor, CRLs and the verifiers.
//!
//! Both sides run the same check ([`Trust::verify`]): the presented chain must lead to the
//! E&A CA ([`enroll::verify_peer_chain`], ring algorithms), the end entity must not be in
//! the current CRL, and the certificate must carry a p2psip binding. The dialling side also
//! requires that the Node-ID in the certificate equals the ID of the contact it dialled: the
//! expected ID travels inside the rustls `ServerName` (`n<id>.p2psip.invalid`, never sent:
//! SNI is off). The accepting side compares the certificate's Node-ID with the one claimed in
//! the hello (see [`crate::hello`]).
//!
//! Session resumption is off on both sides so that every connection runs the verifier
//! against the current CRL.

use enroll::PeerIdentity;
use overlay::NodeId;
use rustls::client::danger::ServerCertVerified;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, OtherError};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Errors loading identity or trust material (local misconfiguration, not a peer's fault).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A PEM file holds no usable item.
    #[error("{0}: {1}")]
    Pem(String, String),
    /// The own certificate has no valid p2psip binding.
    #[error("own certificate: {0}")]
    Binding(#[from] enroll::cert::CertError),
    /// `node.json` does not match the certificate, or is malformed.
    #[error("node config: {0}")]
    NodeConfig(String),
    /// rustls refused the configuration (key does not match, etc.).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// This peer's certificate chain and private key, as issued by E&A.
#[derive(Debug)]
pub struct Identity {
    /// The Node-ID bound in the certificate.
    pub node_id: NodeId,
    /// What the certificate binds (layer, role, serial, …).
    pub binding: PeerIdentity,
    /// Own certificate first, then the CA (as `chain.pem` holds them).
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            node_id: self.node_id,
            binding: self.binding.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From PEM texts: the chain (own certificate first) and the PKCS#8 key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, ConfigError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Pem("chain".into(), e.to_string()))?;
        let first = chain
            .first()
            .ok_or_else(|| ConfigError::Pem("chain".into(), "no certificate".into()))?;
        let binding = enroll::identity_from_cert(first)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ConfigError::Pem("key".into(), e.to_string()))?;
        Ok(Identity {
            node_id: binding.node_id,
            binding,
            chain,
            key,
        })
    }

    /// The private key, PKCS#8 DER (the secure layer signs with the certificate's key).
    pub fn key_der(&self) -> &[u8] {
        self.key.secret_der()
    }

    /// From `chain.pem` and `key.pem` files.
    pub fn load(chain: &Path, key: &Path) -> Result<Self, ConfigError> {
        Self::from_pem(&read(chain)?, &read(key)?)
    }
}

pub(crate) fn read(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|e| ConfigError::Io(p.display().to_string(), e))
}

/// What to do when no CRL is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationPolicy {
    /// Refuse every peer until a CRL is loaded (fail closed).
    RequireCrl,
    /// Accept peers without a revocation check while no CRL is loaded (logged).
    AllowMissing,
}

/// The current CRL, shared by the verifiers and the refresher.
///
/// A CRL past its nextUpdate makes every check fail (webpki enforces CRL expiry), so the
/// refresh interval must stay well below the CRL validity.
#[derive(Clone, Debug, Default)]
pub struct CrlStore(Arc<RwLock<Option<Vec<u8>>>>);

impl CrlStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the CRL (DER).
    pub fn set(&self, der: Vec<u8>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(der);
        }
    }

    /// The current CRL, if any.
    pub fn get(&self) -> Option<Vec<u8>> {
        self.0.read().ok().and_then(|g| g.clone())
    }
}

/// The trust anchor and revocation state every peer is checked against.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The E&A CA certificate.
    pub ca: CertificateDer<'static>,
    /// The current CRL.
    pub crls: CrlStore,
    /// What to do without a CRL.
    pub policy: RevocationPolicy,
}

/// Why a peer's certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Chain, validity, usage or binding check failed.
    #[error("certificate refused: {0}")]
    Chain(enroll::VerifyError),
    /// Listed in the CRL.
    #[error("certificate revoked")]
    Revoked,
    /// No CRL loaded and the policy requires one.
    #[error("no CRL loaded and the revocation policy requires one")]
    NoCrl,
    /// The certificate binds another Node-ID than the one claimed or dialled.
    #[error("certificate binds node {cert} but the peer is expected to be {claimed}")]
    IdMismatch {
        /// Node-ID in the certificate.
        cert: NodeId,
        /// Node-ID claimed (hello) or dialled (contact).
        claimed: NodeId,
    },
}

impl Trust {
    /// From a CA PEM file, with an empty CRL store.
    pub fn load(ca: &Path, policy: RevocationPolicy) -> Result<Self, ConfigError> {
        let pem = read(ca)?;
        let ca = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or_else(|| ConfigError::Pem("ca".into(), "no certificate".into()))?
            .map_err(|e| ConfigError::Pem("ca".into(), e.to_string()))?;
        Ok(Trust {
            ca,
            crls: CrlStore::new(),
            policy,
        })
    }

    /// Check a presented chain (end entity first) at `now`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, Refusal> {
        let crl = self.crls.get();
        if crl.is_none() && self.policy == RevocationPolicy::RequireCrl {
            return Err(Refusal::NoCrl);
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let crls: Vec<Vec<u8>> = crl.into_iter().collect();
        enroll::verify_peer_chain(&self.ca, &chain, &crls, now).map_err(|e| match e {
            enroll::VerifyError::Revoked => Refusal::Revoked,
            other => Refusal::Chain(other),
        })
    }

    /// Check a CRL before adopting it: it must parse, and our own chain must still pass
    /// with it (a CRL listing ourselves is adopted but reported as `Err(Revoked)`).
    pub fn check_crl(&self, der: &[u8], own: &Identity) -> Result<(), Refusal> {
        let Some((ee, rest)) = own.chain.split_first() else {
            return Err(Refusal::Chain(enroll::VerifyError::Empty));
        };
        let probe = Trust {
            ca: self.ca.clone(),
            crls: CrlStore::new(),
            policy: RevocationPolicy::RequireCrl,
        };
        probe.crls.set(der.to_vec());
        probe.verify(ee, rest, UnixTime::now()).map(|_| ())
    }
}

fn refusal_to_rustls(r: Refusal) -> rustls::Error {
    let e = match r {
        Refusal::Revoked => CertificateError::Revoked,
        other => CertificateError::Other(OtherError(Arc::new(Reason(other.to_string())))),
    };
    rustls::Error::InvalidCertificate(e)
}

/// A refusal reason carried through rustls.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reason(String);

/// The `ServerName` under which the dialler expects `id` (never sent on the wire).
#[cfg(test)]
pub(crate) fn server_name_for(id: NodeId) -> ServerName<'static> {
    // A decimal u128 has at most 39 digits: a valid DNS label.
    ServerName::try_from(format!("n{}.p2psip.invalid", id.0))
        .expect("n<decimal>.p2psip.invalid is a valid DNS name")
}

/// The name to dial `id` by when its address may be its relay's (see the `relay` module):
/// the handshake then accepts any enrolled peer's valid certificate, and the dialler checks
/// after the hello that it reached `id`, or a relay that says it forwards to `id`.
pub(crate) fn server_name_or_relay(id: NodeId) -> ServerName<'static> {
    ServerName::try_from(format!("n{}.via.p2psip.invalid", id.0))
        .expect("n<decimal>.via.p2psip.invalid is a valid DNS name")
}

/// `Some(id)` for [`server_name_for`], `None` for [`server_name_or_relay`] (any valid peer).
fn expected_id_or_relay(name: &ServerName<'_>) -> Option<Option<NodeId>> {
    if let ServerName::DnsName(d) = name
        && let Some(rest) = d.as_ref().strip_suffix(".via.p2psip.invalid")
    {
        return rest.strip_prefix('n')?.parse::<u128>().ok().map(|_| None);
    }
    expected_id(name).map(Some)
}

fn expected_id(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(d) = name else {
        return None;
    };
    d.as_ref()
        .strip_prefix('n')?
        .strip_suffix(".p2psip.invalid")?
        .parse::<u128>()
        .ok()
        .map(NodeId)
}

/// The verifier used on both sides of a connection.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    trust: Trust,
    algs: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(trust: Trust, provider: &CryptoProvider) -> Self {
        PeerVerifier {
            trust,
            algs: provider.signature_verification_algorithms,
        }
    }
}

impl service::tls::SignatureAlgorithms for PeerVerifier {
    fn signature_algorithms(&self) -> WebPkiSupportedAlgorithms {
        self.algs
    }
}

impl service::tls::CheckServerCert for PeerVerifier {
    fn check_server_cert(
        &self,
        cert: service::tls::ServerCert<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = expected_id_or_relay(cert.server_name) else {
            return Err(rustls::Error::General(
                "dialled without an expected Node-ID".into(),
            ));
        };
        let who = self
            .trust
            .verify(cert.end_entity, cert.intermediates, cert.now)
            .map_err(refusal_to_rustls)?;
        if let Some(expected) = expected
            && who.node_id != expected
        {
            return Err(refusal_to_rustls(Refusal::IdMismatch {
                cert: who.node_id,
                claimed: expected,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }
}

service::server_cert_verifier!(PeerVerifier);

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .verify(end_entity, intermediates, now)
            .map_err(refusal_to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    service::handshake_signature_checks!();
}

/// rustls configurations for both directions (TLS 1.3 only, ring, mutual auth, no
/// resumption, no SNI). The chain presented leaves out the CA certificate: every peer holds it
/// as its trust anchor, and each side of a link would otherwise keep a copy of it for the
/// link's life (with dozens of links per peer).
pub(crate) fn configs(
    identity: &Identity,
    trust: &Trust,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PeerVerifier::new(trust.clone(), &provider));
    let presented: Vec<CertificateDer<'static>> = identity
        .chain
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || c.as_ref() != trust.ca.as_ref())
        .map(|(_, c)| c.clone())
        .collect();
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(presented.clone(), identity.key.clone_key())?;
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(presented, identity.key.clone_key())?;
    client.enable_sni = false;
    client.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(server), Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_round_trip() {
        for id in [0u128, 1, 2047, u128::MAX] {
            assert_eq!(expected_id(&server_name_for(NodeId(id))), Some(NodeId(id)));
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert_eq!(expected_id(&other), None);
        assert_eq!(expected_id_or_relay(&other), None);
        assert_eq!(
            expected_id_or_relay(&server_name_for(NodeId(7))),
            Some(Some(NodeId(7)))
        );
        assert_eq!(
            expected_id_or_relay(&server_name_or_relay(NodeId(7))),
            Some(None)
        );
        let junk = ServerName::try_from("nx.via.p2psip.invalid").unwrap();
        assert_eq!(expected_id_or_relay(&junk), None);
    }
}
