//! Signatures on PingRequests and hop records, behind two small traits.
//!
//! The runtime and the tests use real Ed25519 signatures (ring). The simulator may plug in a
//! cheaper stand-in at 10^5 peers, as long as a peer cannot produce another peer's signature.

use crate::NodeId;
use std::collections::BTreeMap;

/// Signs on behalf of this peer.
pub trait Signer: Send + Sync {
    /// Signature over `data`.
    fn sign(&self, data: &[u8]) -> Vec<u8>;
}

/// Checks other peers' signatures.
pub trait SigVerifier: Send + Sync {
    /// Is `sig` a valid signature by `signer` over `data`?
    fn verify(&self, signer: NodeId, data: &[u8], sig: &[u8]) -> bool;
}

/// An Ed25519 key pair (ring).
pub struct Ed25519Signer {
    key: ring::signature::Ed25519KeyPair,
}

impl Ed25519Signer {
    /// From a PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        Ok(Ed25519Signer {
            key: ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8)?,
        })
    }

    /// A fresh key pair.
    pub fn generate() -> Result<(Self, Vec<u8>), ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)?;
        let signer = Self::from_pkcs8(doc.as_ref()).map_err(|_| ring::error::Unspecified)?;
        Ok((signer, doc.as_ref().to_vec()))
    }

    /// The public key bytes.
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }
}

impl Signer for Ed25519Signer {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).as_ref().to_vec()
    }
}

/// Public keys of known peers (from their certificates in the runtime).
#[derive(Default, Clone)]
pub struct Ed25519Registry {
    keys: BTreeMap<NodeId, Vec<u8>>,
}

impl Ed25519Registry {
    /// Record `peer`'s public key.
    pub fn insert(&mut self, peer: NodeId, public_key: Vec<u8>) {
        self.keys.insert(peer, public_key);
    }
}

impl SigVerifier for Ed25519Registry {
    fn verify(&self, signer: NodeId, data: &[u8], sig: &[u8]) -> bool {
        let Some(pk) = self.keys.get(&signer) else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
            .verify(data, sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{body_bytes, record_bytes};
    use crate::wire::PingBody;
    use crate::{Contact, NodeId};

    #[test]
    fn ed25519_signature_chain_detects_tampering_and_forgery() {
        let (csp, _) = Ed25519Signer::generate().unwrap();
        let (hop, _) = Ed25519Signer::generate().unwrap();
        let (mallory, _) = Ed25519Signer::generate().unwrap();
        let mut reg = Ed25519Registry::default();
        reg.insert(NodeId(1536), csp.public_key());
        reg.insert(NodeId(1600), hop.public_key());
        let body = PingBody {
            target: NodeId(1618),
            csp: Contact::id_only(NodeId(1536)),
            handle: 7,
            nonce: 99,
            timestamp_ms: 1_000,
            copy: 0,
            copies: 3,
        };
        let csp_sig = csp.sign(&body_bytes(&body));
        assert!(reg.verify(NodeId(1536), &body_bytes(&body), &csp_sig));
        let rec = hop.sign(&record_bytes(&body, &csp_sig, NodeId(1600)));
        assert!(reg.verify(
            NodeId(1600),
            &record_bytes(&body, &csp_sig, NodeId(1600)),
            &rec
        ));
        // A modified body breaks the CSP's signature.
        let mut altered = body.clone();
        altered.target = NodeId(1617);
        assert!(!reg.verify(NodeId(1536), &body_bytes(&altered), &csp_sig));
        // Mallory cannot sign as 1600, and an unknown peer verifies nothing.
        let forged = mallory.sign(&record_bytes(&body, &csp_sig, NodeId(1600)));
        assert!(!reg.verify(
            NodeId(1600),
            &record_bytes(&body, &csp_sig, NodeId(1600)),
            &forged
        ));
        assert!(!reg.verify(NodeId(1617), &body_bytes(&body), &csp_sig));
    }
}
