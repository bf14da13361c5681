//! The keys of the secure layer are the keys of the E&A certificates.
//!
//! A peer signs PingRequests and hop records with the private key of its own certificate
//! ([`CertSigner`]), and checks other peers' signatures with the public keys of their
//! certificates ([`KeyBook`]). Keys enter the book only from certificates that passed the
//! E&A chain and CRL check ([`crate::Trust::verify`]), so a Node-ID's key is the one E&A
//! bound to it. Ed25519 and ECDSA P-256 certificate keys are supported.

use crate::tls::{Identity, Refusal, Trust};
use overlay::NodeId;
use overlay::secure::{Ed25519PublicKey, Ed25519Signer, SigVerifier, Signer};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The private key is neither an Ed25519 nor an ECDSA P-256 PKCS#8 key.
    #[error("the certificate key is neither Ed25519 nor ECDSA P-256 PKCS#8")]
    UnsupportedKey,
    /// A certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Certificate(String),
    /// A certificate did not pass the E&A check.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Which signature algorithm a key uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    /// Ed25519 (32-byte public key).
    Ed25519,
    /// ECDSA P-256 with SHA-256, fixed-size r‖s signatures (65-byte SEC1 public key).
    EcdsaP256,
}

impl KeyAlg {
    /// The matching SOS report algorithm.
    pub fn sos(self) -> sos::Algorithm {
        match self {
            KeyAlg::Ed25519 => sos::Algorithm::Ed25519,
            KeyAlg::EcdsaP256 => sos::Algorithm::EcdsaP256Sha256,
        }
    }
}

enum PrivKey {
    Ed25519(Ed25519Signer),
    Ecdsa(EcdsaKeyPair),
}

/// Signs with the private key of this peer's E&A certificate.
pub struct CertSigner {
    key: PrivKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for CertSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSigner")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl CertSigner {
    /// From a PKCS#8 document (Ed25519 or ECDSA P-256).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let key = if let Ok(k) = Ed25519Signer::from_pkcs8(pkcs8) {
            PrivKey::Ed25519(k)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        {
            PrivKey::Ecdsa(k)
        } else {
            return Err(KeyError::UnsupportedKey);
        };
        Ok(CertSigner { key, rng })
    }

    /// The key of `identity`.
    pub fn from_identity(identity: &Identity) -> Result<Self, KeyError> {
        Self::from_pkcs8(identity.key_der())
    }

    /// Its algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self.key {
            PrivKey::Ed25519(_) => KeyAlg::Ed25519,
            PrivKey::Ecdsa(_) => KeyAlg::EcdsaP256,
        }
    }
}

impl Signer for CertSigner {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.key {
            PrivKey::Ed25519(k) => k.sign(data),
            // Only fails if the system RNG fails; an empty signature then fails verification.
            PrivKey::Ecdsa(k) => k
                .sign(&self.rng, data)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }
}

/// The raw public key and algorithm of a certificate (no chain check: see
/// [`KeyBook::insert_verified`]).
pub fn cert_public_key(der: &[u8]) -> Result<(KeyAlg, Vec<u8>), KeyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    let raw = cert.public_key().subject_public_key.data.to_vec();
    match raw.len() {
        32 => Ok((KeyAlg::Ed25519, raw)),
        65 if raw[0] == 4 => Ok((KeyAlg::EcdsaP256, raw)),
        _ => Err(KeyError::UnsupportedKey),
    }
}

/// The SOS's reporter registry made from enrolled nodes' certificates (`p2psip
/// enroll-server sos-registry`): each node's certificate key, and the CSPs and CSPGs
/// among them (their reports are proof at the SOS).
#[derive(Debug, Default)]
pub struct CertRegistry {
    /// One entry per certificate whose key is usable.
    pub entries: Vec<sos::RegistryEntry>,
    /// The CSPs and CSPGs among them.
    pub infrastructure: Vec<sos::PeerId>,
    /// The nodes left out, and why.
    pub skipped: Vec<(NodeId, KeyError)>,
}

impl CertRegistry {
    /// Read `(node, certificate DER)` pairs, as E&A's directory lists them (no chain
    /// check: they come from E&A's own database).
    pub fn from_certs<'a>(certs: impl IntoIterator<Item = (NodeId, &'a [u8])>) -> Self {
        let mut r = Self::default();
        for (id, der) in certs {
            match cert_public_key(der) {
                Ok((alg, key)) => r.entries.push(sos::RegistryEntry {
                    peer: sos::PeerId(id.0),
                    algorithm: alg.sos(),
                    public_key: sos::hex_encode(&key),
                }),
                Err(e) => {
                    r.skipped.push((id, e));
                    continue;
                }
            }
            if enroll::cert::identity_from_cert(der).is_ok_and(|who| who.role != enroll::Role::Peer)
            {
                r.infrastructure.push(sos::PeerId(id.0));
            }
        }
        r
    }

    /// The registry file (`p2psip sos --key-registry`).
    pub fn to_json(&self) -> String {
        sos::KeyRegistry::to_json_with(&self.entries, &self.infrastructure)
    }
}

/// Public keys of peers, learned from their verified E&A certificates; the secure layer's
/// signature verifier. Shared (`Arc`) and growable while peers run.
#[derive(Debug, Default)]
pub struct KeyBook {
    keys: RwLock<BTreeMap<NodeId, BookKey>>,
}

/// A key in the book: Ed25519 decompressed once for every signature checked under it, or
/// ECDSA P-256 as the certificate's SEC1 bytes.
#[derive(Debug)]
enum BookKey {
    Ed25519(Ed25519PublicKey),
    EcdsaP256(Vec<u8>),
}

impl BookKey {
    fn alg(&self) -> KeyAlg {
        match self {
            BookKey::Ed25519(_) => KeyAlg::Ed25519,
            BookKey::EcdsaP256(_) => KeyAlg::EcdsaP256,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            BookKey::Ed25519(k) => k.as_bytes(),
            BookKey::EcdsaP256(b) => b,
        }
    }
}

impl KeyBook {
    /// An empty book.
    pub fn new() -> Arc<Self> {
        Arc::new(KeyBook::default())
    }

    /// Check `chain` (end entity first) against E&A and the CRL, then record its key under
    /// the Node-ID it binds. Returns what the certificate binds.
    pub fn insert_verified(
        &self,
        trust: &Trust,
        chain: &[CertificateDer<'_>],
    ) -> Result<enroll::PeerIdentity, KeyError> {
        let (ee, rest) = chain
            .split_first()
            .ok_or_else(|| KeyError::Certificate("empty chain".into()))?;
        let id = trust.verify(ee, rest, UnixTime::now())?;
        let key = match cert_public_key(ee)? {
            (KeyAlg::Ed25519, bytes) => BookKey::Ed25519(
                Ed25519PublicKey::from_bytes(&bytes)
                    .ok_or_else(|| KeyError::Certificate("an Ed25519 key off the curve".into()))?,
            ),
            (KeyAlg::EcdsaP256, bytes) => BookKey::EcdsaP256(bytes),
        };
        if let Ok(mut g) = self.keys.write() {
            g.insert(id.node_id, key);
        }
        Ok(id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.read().map(|g| g.len()).unwrap_or(0)
    }

    /// No keys?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The book as SOS reporter-registry entries (the SOS checks evidence with the same
    /// certificate keys).
    pub fn registry_entries(&self) -> Vec<sos::RegistryEntry> {
        let Ok(g) = self.keys.read() else {
            return Vec::new();
        };
        g.iter()
            .map(|(id, k)| sos::RegistryEntry {
                peer: sos::PeerId(id.0),
                algorithm: k.alg().sos(),
                public_key: sos::hex_encode(k.bytes()),
            })
            .collect()
    }
}

impl SigVerifier for KeyBook {
    fn verify(&self, signer: NodeId, data: &[u8], sig: &[u8]) -> bool {
        let Ok(g) = self.keys.read() else {
            return false;
        };
        match g.get(&signer) {
            Some(BookKey::Ed25519(key)) => key.verify(data, sig),
            Some(BookKey::EcdsaP256(bytes)) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, bytes)
                    .verify(data, sig)
                    .is_ok()
            }
            None => false,
        }
    }
}
