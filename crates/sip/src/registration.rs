//! Signed AoR registrations: what a front-end stores in the overlay at hash(AoR), and the
//! storing peer's rule that only the owner's key may change a live registration.

use overlay::secure::{SigVerifier, Signer, Verdict};
use overlay::{IdSpace, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Domain separation for the signed bytes (a registration signature is never valid as
/// anything else the peer signs).
const TAG: &[u8] = b"p2psip-registration-v1";
/// Longest AoR or contact we store.
pub const MAX_FIELD: usize = 256;
/// Marks a record value holding the registrations of several AoRs whose hashes share a key
/// (m-bit keys collide often: 100 AoRs in 2^11 keys share some). Starts with a zero byte,
/// which no single registration of a non-empty AoR starts with.
const SET_TAG: &[u8] = b"\0p2psip-registration-set-v1";
/// Most AoRs kept under one key.
pub const MAX_PER_KEY: usize = 16;

/// AoR → the peer that serves it and the UA contact behind that peer's front-end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Normalized address of record, `sip:user@domain`.
    pub aor: String,
    /// The peer whose front-end holds the binding (its certificate's Node-ID).
    pub node: NodeId,
    /// The UA's Contact URI as registered.
    pub contact: String,
    /// When it lapses, Unix milliseconds; 0 removes it (unregister).
    pub expires_unix_ms: u64,
    /// Grows with every update by the owner, so an older copy never replaces a newer one.
    pub seq: u64,
}

/// A registration with its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRegistration {
    /// The record.
    pub record: Registration,
    /// The owner's (Ed25519) signature over [`Registration::signed_bytes`].
    pub sig: Vec<u8>,
}

/// Why a registration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegError {
    /// Signature does not verify for the claimed node.
    #[error("bad signature for node {0:?}")]
    BadSignature(NodeId),
    /// A live registration for this AoR belongs to another peer.
    #[error("AoR {aor} is registered by another peer")]
    NotOwner {
        /// The AoR.
        aor: String,
    },
    /// Not newer than what is stored (replay or reordering).
    #[error("stale registration (seq {got} <= {have})")]
    Stale {
        /// Sequence number offered.
        got: u64,
        /// Sequence number stored.
        have: u64,
    },
    /// A field is too long or the record does not encode.
    #[error("malformed registration")]
    Malformed,
    /// The store is full.
    #[error("registration store full")]
    Full,
}

impl Registration {
    /// The canonical bytes the owner signs: the tag `p2psip-registration-v1` (domain
    /// separation from the PingRequest and SOS-report bytes the same certificate key signs),
    /// then the postcard encoding of the record: `aor` (varint length, UTF-8), `node` (u128
    /// varint), `contact` (varint length, UTF-8), `expires_unix_ms`, `seq` (u64 varints).
    /// Pinned by the test `registration_signed_bytes_are_pinned`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = TAG.to_vec();
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Sign as the owner.
    pub fn sign(self, signer: &dyn Signer) -> SignedRegistration {
        let sig = signer.sign(&self.signed_bytes());
        SignedRegistration { record: self, sig }
    }

    /// The overlay key this AoR is stored under.
    pub fn key(&self, space: IdSpace) -> NodeId {
        aor_key(space, &self.aor)
    }
}

impl SignedRegistration {
    /// Does the signature verify for the claimed node, and are the fields in bounds?
    pub fn verify(&self, verifier: &dyn SigVerifier) -> Result<(), RegError> {
        if self.record.aor.len() > MAX_FIELD || self.record.contact.len() > MAX_FIELD {
            return Err(RegError::Malformed);
        }
        if verifier.verify(self.record.node, &self.record.signed_bytes(), &self.sig) {
            Ok(())
        } else {
            Err(RegError::BadSignature(self.record.node))
        }
    }

    /// Is it live at `now_unix_ms`?
    pub fn is_live(&self, now_unix_ms: u64) -> bool {
        self.record.expires_unix_ms > now_unix_ms
    }

    /// Wire encoding (postcard) for the overlay's record value.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode a record value.
    pub fn from_bytes(b: &[u8]) -> Result<Self, RegError> {
        postcard::from_bytes(b).map_err(|_| RegError::Malformed)
    }
}

/// The overlay key of an AoR: the first 128 bits of SHA-256(AoR), wrapped into the ID space.
pub fn aor_key(space: IdSpace, aor: &str) -> NodeId {
    let d = ring::digest::digest(&ring::digest::SHA256, aor.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(d.as_ref().get(..16).unwrap_or(&[0; 16]));
    space.wrap(u128::from_be_bytes(b))
}

/// The registrations in a record value: one registration, or the set of those whose AoRs
/// hash to the same key. Undecodable values give none.
pub fn registrations_in_value(b: &[u8]) -> Vec<SignedRegistration> {
    if let Some(rest) = b.strip_prefix(SET_TAG)
        && let Ok(set) = postcard::from_bytes::<Vec<SignedRegistration>>(rest)
    {
        return set;
    }
    SignedRegistration::from_bytes(b).into_iter().collect()
}

/// The registration of `aor` in a record value (other AoRs may share its key).
pub fn registration_in_value(b: &[u8], aor: &str) -> Option<SignedRegistration> {
    registrations_in_value(b)
        .into_iter()
        .find(|r| r.record.aor == aor)
}

fn encode_set<'a>(
    regs: impl Iterator<Item = &'a SignedRegistration>,
) -> Result<Vec<u8>, postcard::Error> {
    let regs: Vec<&SignedRegistration> = regs.collect();
    let mut out = SET_TAG.to_vec();
    out.extend(postcard::to_allocvec(&regs)?);
    Ok(out)
}

/// `sip:user@domain`, lower-cased domain: the form AoRs are keyed and signed in.
pub fn normalize_aor(user: &str, domain: &str) -> String {
    format!("sip:{user}@{}", domain.to_ascii_lowercase())
}

/// What the peer responsible for hash(AoR) keeps: verified registrations, owner-checked.
#[derive(Debug)]
pub struct RegistrationStore {
    records: BTreeMap<String, SignedRegistration>,
    capacity: usize,
}

impl RegistrationStore {
    /// A store holding at most `capacity` AoRs.
    pub fn new(capacity: usize) -> Self {
        RegistrationStore {
            records: BTreeMap::new(),
            capacity,
        }
    }

    /// Accept, refresh or remove (expires 0) a registration. Only the peer that signed the
    /// live record may change it; an expired record may be taken over by anyone.
    pub fn put(
        &mut self,
        now_unix_ms: u64,
        reg: SignedRegistration,
        verifier: &dyn SigVerifier,
    ) -> Result<(), RegError> {
        reg.verify(verifier)?;
        let aor = reg.record.aor.clone();
        if let Some(cur) = self.records.get(&aor)
            && cur.is_live(now_unix_ms)
        {
            if cur.record.node != reg.record.node {
                return Err(RegError::NotOwner { aor });
            }
            if reg.record.seq <= cur.record.seq {
                return Err(RegError::Stale {
                    got: reg.record.seq,
                    have: cur.record.seq,
                });
            }
        }
        if !reg.is_live(now_unix_ms) {
            self.records.remove(&aor);
            return Ok(());
        }
        if !self.records.contains_key(&aor) && self.records.len() >= self.capacity {
            self.expire(now_unix_ms);
            if self.records.len() >= self.capacity {
                return Err(RegError::Full);
            }
        }
        self.records.insert(aor, reg);
        Ok(())
    }

    /// The live registration for `aor`.
    pub fn get(&self, now_unix_ms: u64, aor: &str) -> Option<&SignedRegistration> {
        self.records.get(aor).filter(|r| r.is_live(now_unix_ms))
    }

    /// Drop lapsed registrations.
    pub fn expire(&mut self, now_unix_ms: u64) {
        self.records.retain(|_, r| r.is_live(now_unix_ms));
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The rule the peer responsible for hash(AoR) applies to every store, plugged into the
/// overlay ([`overlay::secure::RecordValidator`]): the value must be a registration for the
/// AoR hashed to `key`, signed by the peer it names; only that peer may change a live one;
/// an older `seq` is stale; an expired (or `expires_unix_ms == 0`) one removes the record.
pub struct RegistrationValidator {
    /// Checks the registering peer's signature (its certificate key).
    pub verifier: std::sync::Arc<dyn SigVerifier>,
    /// The overlay's ID space (for hash(AoR)).
    pub space: IdSpace,
}

impl overlay::secure::RecordValidator for RegistrationValidator {
    fn validate(&self, key: NodeId, old: Option<&[u8]>, new: &[u8], now_unix_ms: u64) -> Verdict {
        // What is offered is always one registration (a set is only ever what we hold).
        let reg = SignedRegistration::from_bytes(new).map_err(|e| e.to_string())?;
        if reg.record.key(self.space) != key {
            return Err("registration stored under another key than hash(AoR)".into());
        }
        // Seed with what is held (verified when it was stored), every AoR under this key:
        // an AoR whose hash collides with another's must not replace its registration.
        let mut store = RegistrationStore::new(MAX_PER_KEY);
        for held in old.map(registrations_in_value).unwrap_or_default() {
            if held.record.key(self.space) == key && held.is_live(now_unix_ms) {
                store.records.insert(held.record.aor.clone(), held);
            }
        }
        let aor = reg.record.aor.clone();
        store
            .put(now_unix_ms, reg, self.verifier.as_ref())
            .map_err(|e| e.to_string())?;
        Ok(match store.len() {
            0 => overlay::secure::RecordAction::Remove,
            // Only the offered registration: keep it as it is.
            1 if store.records.contains_key(&aor) => overlay::secure::RecordAction::Store,
            _ => overlay::secure::RecordAction::Replace(
                encode_set(store.records.values()).map_err(|e| e.to_string())?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::secure::{Ed25519Registry, Ed25519Signer};

    fn reg(node: u128, seq: u64, exp: u64) -> Registration {
        Registration {
            aor: normalize_aor("alice", "P2PSIP.test"),
            node: NodeId(node),
            contact: "sip:alice@127.0.0.1:5170".into(),
            expires_unix_ms: exp,
            seq,
        }
    }

    /// The exact bytes an owner signs: a change of field order or encoding would make every
    /// stored registration fail to verify.
    #[test]
    fn registration_signed_bytes_are_pinned() {
        let r = Registration {
            aor: normalize_aor("alice", "P2PSIP.test"),
            node: NodeId(1618),
            contact: "sip:alice@192.0.2.7:5060".into(),
            expires_unix_ms: 1_700_000_060_000,
            seq: 3,
        };
        let hex: String = r
            .signed_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            concat!(
                "7032707369702d726567697374726174696f6e2d7631", // "p2psip-registration-v1"
                "157369703a616c696365407032707369702e74657374", // aor
                "d20c",                                         // node 1618
                "187369703a616c696365403139322e302e322e373a35303630", // contact
                "e0a499ffbc31",                                 // expires_unix_ms
                "03",                                           // seq
            )
        );
    }

    /// Fresh signing keys for peers 1 and 2, and a registry that knows both.
    fn two_peers() -> (Ed25519Signer, Ed25519Signer, Ed25519Registry) {
        let (one, _) = Ed25519Signer::generate().unwrap();
        let (two, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), one.public_key());
        keys.insert(NodeId(2), two.public_key());
        (one, two, keys)
    }

    /// [`two_peers`], and the validator of a `bits`-bit ID space that knows their keys.
    fn validator(bits: u32) -> (Ed25519Signer, Ed25519Signer, RegistrationValidator) {
        let (one, two, keys) = two_peers();
        let v = RegistrationValidator {
            verifier: std::sync::Arc::new(keys),
            space: IdSpace::new(bits).unwrap(),
        };
        (one, two, v)
    }

    #[test]
    fn only_the_owner_changes_a_live_registration() {
        let (a, m, keys) = two_peers();
        let mut st = RegistrationStore::new(8);
        st.put(1000, reg(1, 1, 5000).sign(&a), &keys).unwrap();
        assert_eq!(
            st.get(1000, "sip:alice@p2psip.test").unwrap().record.node,
            NodeId(1)
        );
        // Mallory with her own valid key cannot take over a live AoR.
        assert!(matches!(
            st.put(1000, reg(2, 9, 9000).sign(&m), &keys),
            Err(RegError::NotOwner { .. })
        ));
        // Nor forge the owner's signature.
        assert!(matches!(
            st.put(1000, reg(1, 9, 9000).sign(&m), &keys),
            Err(RegError::BadSignature(_))
        ));
        // A replayed old copy is stale.
        assert!(matches!(
            st.put(1000, reg(1, 1, 5000).sign(&a), &keys),
            Err(RegError::Stale { .. })
        ));
        // The owner refreshes, then unregisters.
        st.put(2000, reg(1, 2, 8000).sign(&a), &keys).unwrap();
        assert_eq!(st.get(7000, "sip:alice@p2psip.test").unwrap().record.seq, 2);
        st.put(2000, reg(1, 3, 0).sign(&a), &keys).unwrap();
        assert!(st.get(2000, "sip:alice@p2psip.test").is_none());
        // After expiry anyone may register the AoR.
        st.put(2000, reg(1, 4, 3000).sign(&a), &keys).unwrap();
        st.put(4000, reg(2, 1, 9000).sign(&m), &keys).unwrap();
        assert_eq!(
            st.get(4000, "sip:alice@p2psip.test").unwrap().record.node,
            NodeId(2)
        );
    }

    #[test]
    fn overlay_validator_applies_the_owner_rule() {
        use overlay::secure::{RecordAction, RecordValidator};
        let (a, m, v) = validator(32);
        let space = v.space;
        let first = reg(1, 1, 5000).sign(&a);
        let key = first.record.key(space);
        assert_eq!(
            v.validate(key, None, &first.to_bytes(), 1000),
            Ok(RecordAction::Store)
        );
        let held = first.to_bytes();
        // Another peer, a stale copy, a wrong key, garbage: refused.
        assert!(
            v.validate(key, Some(&held), &reg(2, 9, 9000).sign(&m).to_bytes(), 1000)
                .is_err()
        );
        assert!(
            v.validate(key, Some(&held), &reg(1, 1, 9000).sign(&a).to_bytes(), 1000)
                .is_err()
        );
        assert!(
            v.validate(NodeId(key.0 ^ 1), None, &first.to_bytes(), 1000)
                .is_err()
        );
        assert!(v.validate(key, None, b"junk", 1000).is_err());
        // The owner refreshes, then unregisters; after expiry anyone may take it.
        assert_eq!(
            v.validate(key, Some(&held), &reg(1, 2, 9000).sign(&a).to_bytes(), 1000),
            Ok(RecordAction::Store)
        );
        assert_eq!(
            v.validate(key, Some(&held), &reg(1, 3, 0).sign(&a).to_bytes(), 1000),
            Ok(RecordAction::Remove)
        );
        assert_eq!(
            v.validate(key, Some(&held), &reg(2, 1, 9000).sign(&m).to_bytes(), 6000),
            Ok(RecordAction::Store)
        );
    }

    #[test]
    fn validator_keeps_every_aor_whose_hash_shares_the_key() {
        use overlay::secure::{RecordAction, RecordValidator};
        // The demo's 11-bit space: user41 and user42 share key 331.
        let (a, b, v) = validator(11);
        let space = v.space;
        let mk = |user: &str, node: u128, seq: u64, exp: u64| Registration {
            aor: normalize_aor(user, "p2psip.test"),
            node: NodeId(node),
            contact: format!("sip:{user}@127.0.0.1:5170"),
            expires_unix_ms: exp,
            seq,
        };
        let r41 = mk("user41", 1, 1, 5000).sign(&a);
        let key = r41.record.key(space);
        assert_eq!(key, aor_key(space, "sip:user42@p2psip.test"));
        assert_eq!(
            v.validate(key, None, &r41.to_bytes(), 1000),
            Ok(RecordAction::Store)
        );
        // Another peer registers the colliding AoR: both are kept.
        let r42 = mk("user42", 2, 1, 5000).sign(&b);
        let Ok(RecordAction::Replace(held)) =
            v.validate(key, Some(&r41.to_bytes()), &r42.to_bytes(), 1000)
        else {
            panic!("expected a merged record");
        };
        assert_eq!(
            registration_in_value(&held, &r41.record.aor),
            Some(r41.clone())
        );
        assert_eq!(
            registration_in_value(&held, &r42.record.aor),
            Some(r42.clone())
        );
        assert_eq!(registrations_in_value(&held).len(), 2);
        // The owner rule still holds per AoR inside the set; a set is never accepted as offered.
        assert!(
            v.validate(
                key,
                Some(&held),
                &mk("user41", 2, 9, 9000).sign(&b).to_bytes(),
                1000
            )
            .is_err()
        );
        assert!(v.validate(key, Some(&held), &held, 1000).is_err());
        // One unregisters; the other stays.
        let Ok(RecordAction::Replace(left)) = v.validate(
            key,
            Some(&held),
            &mk("user42", 2, 2, 0).sign(&b).to_bytes(),
            1000,
        ) else {
            panic!("expected the remaining record");
        };
        assert_eq!(registrations_in_value(&left), vec![r41]);
    }

    #[test]
    fn store_is_bounded_and_encoding_round_trips() {
        let (a, _) = Ed25519Signer::generate().unwrap();
        let mut keys = Ed25519Registry::default();
        keys.insert(NodeId(1), a.public_key());
        let mut st = RegistrationStore::new(1);
        let r = reg(1, 1, 5000).sign(&a);
        assert_eq!(SignedRegistration::from_bytes(&r.to_bytes()).unwrap(), r);
        st.put(0, r, &keys).unwrap();
        let mut other = reg(1, 1, 5000);
        other.aor = "sip:bob@p2psip.test".into();
        assert_eq!(st.put(0, other.sign(&a), &keys), Err(RegError::Full));
        let space = IdSpace::new(32).unwrap();
        assert_eq!(aor_key(space, "sip:a@x"), aor_key(space, "sip:a@x"));
        assert_ne!(aor_key(space, "sip:a@x"), aor_key(space, "sip:b@x"));
    }
}
