//! Signatures on PingRequests and hop records, behind two small traits, and the exact bytes
//! they cover.
//!
//! The runtime and the tests use real Ed25519 signatures (ring). The simulator may plug in a
//! cheaper stand-in at 10^5 peers, as long as a peer cannot produce another peer's signature.
//!
//! # Signed bytes
//!
//! A peer signs with its certificate key, which also signs SIP registrations
//! (`p2psip-registration-v1`) and SOS evidence reports (`p2psip-sos-report-v1\0`). Every
//! kind of signed bytes therefore starts with its own fixed prefix, so a signature over one
//! kind is never valid as another:
//!
//! | kind | bytes |
//! |---|---|
//! | CSP's PingRequest body ([`body_bytes`]) | `p2psip/pingrequest/v1\0` ‖ postcard(`PingBody`) |
//! | hop record ([`record_bytes`]) | `p2psip/hoprecord/v1\0` ‖ postcard((`PingBody`, previous signature, hop)) |
//! | hop acknowledgement ([`ack_bytes`]) | `p2psip/pingack/v1\0` ‖ postcard((CSP, handle, nonce, copy, holder)) |
//! | callee's Ringing ([`ringing_bytes`]) | `p2psip/ringing/v1\0` ‖ postcard((caller, call, callee contact, digest, route)) |
//!
//! postcard(`PingBody`) is its fields in declaration order: `target` (u128 varint), `csp`
//! (`id` u128 varint, then `addr` as an option: `00`, or `01` and the socket address as
//! serde's enum — variant `00` IPv4 with 4 octets, `01` IPv6 with 16 — then the port as a
//! u16 varint), `handle`, `nonce`, `timestamp_ms` (u64 varints), `copy`, `copies` (one byte
//! each), `avoid` (a varint count, then u128 varints; wire version 3). The previous signature (the CSP's for the first hop) is a varint length and its
//! bytes; the hop a u128 varint. An acknowledgement is the CSP's and the holder's Node-IDs
//! (u128 varints) around `handle`, `nonce` (u64 varints) and `copy` (a byte). A Ringing is the
//! caller's Node-ID, the call (u64 varint), the callee's contact (as the CSP's above), the
//! digest (32 bytes as they are) and the route (a varint count, then u128 varints). The golden tests below pin these bytes: a change of field
//! order, of serde's or postcard's layout breaks them, and with them every mixed network.

use crate::wire::PingBody;
use crate::{Contact, NodeId};
use std::collections::BTreeMap;

/// Domain-separation prefix of the bytes a CSP signs for a PingRequest body.
const PING_BODY_PREFIX: &[u8] = b"p2psip/pingrequest/v1\0";
/// Domain-separation prefix of the bytes a hop signs for its hop record.
const HOP_RECORD_PREFIX: &[u8] = b"p2psip/hoprecord/v1\0";
/// Domain-separation prefix of the bytes a hop signs to acknowledge a copy it holds.
const PING_ACK_PREFIX: &[u8] = b"p2psip/pingack/v1\0";
/// Domain-separation prefix of the bytes a callee signs in its Ringing.
const RINGING_PREFIX: &[u8] = b"p2psip/ringing/v1\0";

/// The bytes the CSP signs for a PingRequest copy (layout in the module doc).
pub fn body_bytes(body: &PingBody) -> Vec<u8> {
    signed(PING_BODY_PREFIX, body)
}

/// The bytes a hop signs: the body, the previous signature in the chain and the hop, so the
/// chain cannot be cut or reordered (layout in the module doc).
pub fn record_bytes(body: &PingBody, prev_sig: &[u8], hop: NodeId) -> Vec<u8> {
    signed(HOP_RECORD_PREFIX, &(body, prev_sig, hop))
}

/// The bytes a hop signs to acknowledge that it holds copy `copy` of the CSP's request
/// (`handle`, `nonce`): the sender relays the signature to the CSP in its receipt, so the
/// CSP knows the last peer that provably held a lost copy (layout in the module doc).
pub fn ack_bytes(csp: NodeId, handle: u64, nonce: u64, copy: u8, holder: NodeId) -> Vec<u8> {
    signed(PING_ACK_PREFIX, &(csp, handle, nonce, copy, holder))
}

/// The bytes a callee signs in its Ringing for call `call` of `caller`: the copy that comes
/// back along the request's path (through the CSP and CSPGs) is then as good as the one
/// straight from the callee, and no peer on that path can alter the digest, the route or
/// the callee's address unseen (layout in the module doc).
pub fn ringing_bytes(
    caller: NodeId,
    call: u64,
    callee: &Contact,
    digest: &[u8; 32],
    route: &[NodeId],
) -> Vec<u8> {
    signed(RINGING_PREFIX, &(caller, call, callee, digest, route))
}

/// `prefix` followed by the postcard encoding of `value`.
fn signed<T: serde::Serialize + ?Sized>(prefix: &[u8], value: &T) -> Vec<u8> {
    // Serialising plain integers, byte strings and socket addresses into a Vec cannot fail.
    postcard::to_extend(value, prefix.to_vec()).unwrap_or_default()
}

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

/// An Ed25519 public key decompressed once, for the many signatures a peer checks under it:
/// every hop of a PingRequest checks the CSP's and the earlier hops' signatures, and a sender
/// and the CSP check each acknowledgement. Verification decompresses nothing per signature,
/// which is most of what a fresh parse costs besides the curve arithmetic.
///
/// Acceptance is the cofactorless equation with a canonical `S` (as ring's Ed25519 check):
/// a signature an honest peer made verifies, a malleated `S` or a wrong `R` does not.
#[derive(Clone, Debug)]
pub struct Ed25519PublicKey(ed25519_dalek::VerifyingKey);

impl Ed25519PublicKey {
    /// The key from its 32 bytes; `None` when they are not a point on the curve.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 32] = bytes.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .ok()
            .map(Ed25519PublicKey)
    }

    /// Is `sig` (64 bytes) a valid signature over `data` under this key?
    pub fn verify(&self, data: &[u8], sig: &[u8]) -> bool {
        use ed25519_dalek::Verifier;
        ed25519_dalek::Signature::from_slice(sig).is_ok_and(|sig| self.0.verify(data, &sig).is_ok())
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

/// Why a PKCS#8 document gave no Ed25519 signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Ed25519 PKCS#8 key: {0}")]
pub struct KeyRejected(String);

/// An Ed25519 key pair: this peer's signatures on PingRequests, hop records, acknowledgements
/// and Ringing.
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
}

impl Ed25519Signer {
    /// From a PKCS#8 document (v1, or v2 whose public key must match the private one).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyRejected> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8)
            .map(|key| Ed25519Signer { key })
            .map_err(|e| KeyRejected(e.to_string()))
    }

    /// A fresh key pair, with its PKCS#8 document (v2, from ring's generator).
    pub fn generate() -> Result<(Self, Vec<u8>), KeyRejected> {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyRejected("the system's random generator failed".into()))?;
        let signer = Self::from_pkcs8(doc.as_ref())?;
        Ok((signer, doc.as_ref().to_vec()))
    }

    /// The public key bytes.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().as_bytes().to_vec()
    }
}

impl Signer for Ed25519Signer {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.key.sign(data).to_bytes().to_vec()
    }
}

/// Public keys of known peers (from their certificates in the runtime).
#[derive(Default, Clone)]
pub struct Ed25519Registry {
    keys: BTreeMap<NodeId, Ed25519PublicKey>,
}

impl Ed25519Registry {
    /// Record `peer`'s public key; bytes that are no Ed25519 key leave the peer unknown (its
    /// signatures never verify).
    pub fn insert(&mut self, peer: NodeId, public_key: Vec<u8>) {
        match Ed25519PublicKey::from_bytes(&public_key) {
            Some(key) => {
                self.keys.insert(peer, key);
            }
            None => {
                self.keys.remove(&peer);
            }
        }
    }
}

impl SigVerifier for Ed25519Registry {
    fn verify(&self, signer: NodeId, data: &[u8], sig: &[u8]) -> bool {
        self.keys
            .get(&signer)
            .is_some_and(|key| key.verify(data, sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Contact;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn fixed_body(csp: Contact) -> PingBody {
        PingBody {
            target: NodeId(1618),
            csp,
            handle: 7,
            nonce: 0x0123_4567_89ab_cdef,
            timestamp_ms: 1_700_000_000_000,
            copy: 2,
            copies: 4,
            avoid: Vec::new(),
        }
    }

    /// The exact bytes a CSP signs: a change here breaks every signature between builds.
    #[test]
    fn ping_body_signed_bytes_are_pinned() {
        let body = fixed_body(Contact::id_only(NodeId(1536)));
        assert_eq!(
            hex(&body_bytes(&body)),
            concat!(
                "7032707369702f70696e67726571756573742f763100", // "p2psip/pingrequest/v1\0"
                "d20c",                                         // target 1618
                "800c00",                                       // csp 1536, no address
                "07",                                           // handle
                "ef9bafcdf8acd19101",                           // nonce
                "80d095ffbc31",                                 // timestamp_ms
                "0204",                                         // copy, copies
                "00",                                           // avoid: none
            )
        );
        let mut avoiding = fixed_body(Contact::id_only(NodeId(1536)));
        avoiding.avoid = vec![NodeId(1617), NodeId(3)];
        assert_eq!(
            hex(&body_bytes(&avoiding)),
            concat!(
                "7032707369702f70696e67726571756573742f763100",
                "d20c800c0007ef9bafcdf8acd1910180d095ffbc310204",
                "02",   // avoid: two peers
                "d10c", // 1617
                "03",   // 3
            )
        );
        let v4 = fixed_body(Contact::new(
            NodeId(1536),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 5061)),
        ));
        assert_eq!(
            hex(&body_bytes(&v4)),
            concat!(
                "7032707369702f70696e67726571756573742f763100",
                "d20c",
                "800c",
                "01",         // Some
                "00c0000201", // IPv4 192.0.2.1
                "c527",       // port 5061
                "07ef9bafcdf8acd1910180d095ffbc31020400",
            )
        );
        let v6 = fixed_body(Contact::new(
            NodeId(1536),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 5061)),
        ));
        assert_eq!(
            hex(&body_bytes(&v6)),
            concat!(
                "7032707369702f70696e67726571756573742f763100",
                "d20c",
                "800c",
                "01",
                "0100000000000000000000000000000001", // IPv6 ::1
                "c527",
                "07ef9bafcdf8acd1910180d095ffbc31020400",
            )
        );
    }

    /// The exact bytes a hop signs.
    #[test]
    fn hop_record_signed_bytes_are_pinned() {
        let body = fixed_body(Contact::id_only(NodeId(1536)));
        assert_eq!(
            hex(&record_bytes(&body, &[0xaa, 0xbb, 0xcc], NodeId(1600))),
            concat!(
                "7032707369702f686f707265636f72642f763100", // "p2psip/hoprecord/v1\0"
                "d20c800c0007ef9bafcdf8acd1910180d095ffbc31020400", // the body
                "03aabbcc",                                 // previous signature
                "c00c",                                     // hop 1600
            )
        );
    }

    /// The exact bytes a hop signs to acknowledge a copy.
    #[test]
    fn ping_ack_signed_bytes_are_pinned() {
        assert_eq!(
            hex(&ack_bytes(
                NodeId(1536),
                7,
                0x0123_4567_89ab_cdef,
                2,
                NodeId(1600)
            )),
            concat!(
                "7032707369702f70696e6761636b2f763100", // "p2psip/pingack/v1\0"
                "800c",                                 // CSP 1536
                "07",                                   // handle
                "ef9bafcdf8acd19101",                   // nonce
                "02",                                   // copy
                "c00c",                                 // holder 1600
            )
        );
    }

    /// The exact bytes a callee signs in its Ringing.
    #[test]
    fn ringing_signed_bytes_are_pinned() {
        let callee = Contact::new(
            NodeId(1618),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 5061)),
        );
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[31] = 0x01;
        assert_eq!(
            hex(&ringing_bytes(
                NodeId(1536),
                7,
                &callee,
                &digest,
                &[NodeId(1600), NodeId(1618)]
            )),
            concat!(
                "7032707369702f72696e67696e672f763100", // "p2psip/ringing/v1\0"
                "800c",                                 // caller 1536
                "07",                                   // call
                "d20c",                                 // callee 1618
                "01",                                   // Some address
                "00c0000201",                           // IPv4 192.0.2.1
                "c527",                                 // port 5061
                "ab000000000000000000000000000000",     // digest, first half
                "00000000000000000000000000000001",     // digest, second half
                "02",                                   // route: two peers
                "c00c",                                 // 1600
                "d20c",                                 // 1618
            )
        );
    }

    /// One kind of signed bytes never reads as another.
    #[test]
    fn signed_kinds_are_domain_separated() {
        let body = fixed_body(Contact::id_only(NodeId(1536)));
        let b = body_bytes(&body);
        let r = record_bytes(&body, &[], NodeId(1600));
        let a = ack_bytes(NodeId(1536), 7, 1, 2, NodeId(1600));
        let prefixes = [PING_BODY_PREFIX, HOP_RECORD_PREFIX, PING_ACK_PREFIX];
        for (bytes, own) in [(&b, 0), (&r, 1), (&a, 2)] {
            for (i, p) in prefixes.iter().enumerate() {
                assert_eq!(bytes.starts_with(p), i == own, "prefix {i} on kind {own}");
            }
        }
    }

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
            avoid: Vec::new(),
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

    /// The group order L, little-endian.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    #[test]
    fn a_parsed_key_accepts_what_the_signer_signed_and_nothing_altered() {
        let (signer, _) = Ed25519Signer::generate().unwrap();
        let key = Ed25519PublicKey::from_bytes(&signer.public_key()).unwrap();
        assert_eq!(key.as_bytes().as_slice(), signer.public_key().as_slice());
        let sig = signer.sign(b"a hop record");
        assert!(key.verify(b"a hop record", &sig));
        assert!(!key.verify(b"a hop recorD", &sig));
        assert!(!key.verify(b"a hop record", &sig[..63]));
        let mut flipped = sig.clone();
        flipped[7] ^= 1;
        assert!(!key.verify(b"a hop record", &flipped));
        // S + L is the same scalar in a non-canonical encoding: refused, as ring refuses it.
        let mut malleated = sig.clone();
        let mut carry = 0u16;
        for (b, l) in malleated[32..].iter_mut().zip(ORDER) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        if carry == 0 {
            assert!(!key.verify(b"a hop record", &malleated));
        }
        // What this signer makes verifies under ring's Ed25519 check too (the SOS checks
        // reports with it).
        let ring_key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, signer.public_key());
        assert!(ring_key.verify(b"a hop record", &sig).is_ok());
        // Another peer's key does not verify it.
        let (other, _) = Ed25519Signer::generate().unwrap();
        let other = Ed25519PublicKey::from_bytes(&other.public_key()).unwrap();
        assert!(!other.verify(b"a hop record", &sig));
    }

    #[test]
    fn bytes_that_are_no_key_are_refused() {
        assert!(Ed25519PublicKey::from_bytes(&[0u8; 31]).is_none());
        assert!(Ed25519PublicKey::from_bytes(&[0u8; 33]).is_none());
        // y = 2 is not the y-coordinate of a curve point.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(Ed25519PublicKey::from_bytes(&off_curve).is_none());
        assert!(Ed25519Signer::from_pkcs8(b"not a key").is_err());
        let mut reg = Ed25519Registry::default();
        reg.insert(NodeId(9), off_curve.to_vec());
        assert!(!reg.verify(NodeId(9), b"x", &[0u8; 64]));
    }
}
