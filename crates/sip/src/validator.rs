//! The rule the peer responsible for hash(AoR) applies to a registration stored through the
//! overlay: it must be a well-formed [`SignedRegistration`] for that key, signed by the peer
//! it names, not stale, and not a takeover of someone else's live AoR — the same rule
//! [`RegistrationStore`] applies, run on the one record under the key.

use crate::registration::{RegistrationStore, SignedRegistration, aor_key};
use overlay::secure::{RecordAction, RecordValidator, SigVerifier};
use overlay::{IdSpace, NodeId};
use std::sync::Arc;

/// [`RecordValidator`] for SIP registrations.
pub struct RegistrationValidator {
    space: IdSpace,
    verifier: Arc<dyn SigVerifier>,
}

impl RegistrationValidator {
    /// Check registrations keyed in `space`, signatures with `verifier` (the peers'
    /// certificate keys).
    pub fn new(space: IdSpace, verifier: Arc<dyn SigVerifier>) -> Self {
        RegistrationValidator { space, verifier }
    }
}

impl RecordValidator for RegistrationValidator {
    fn validate(
        &self,
        key: NodeId,
        old: Option<&[u8]>,
        new: &[u8],
        now_unix_ms: u64,
    ) -> Result<RecordAction, String> {
        let reg = SignedRegistration::from_bytes(new).map_err(|e| e.to_string())?;
        if aor_key(self.space, &reg.record.aor) != key {
            return Err("registration stored under the wrong key".into());
        }
        let mut store = RegistrationStore::new(1);
        if let Some(old) = old.and_then(|b| SignedRegistration::from_bytes(b).ok())
            && old.record.aor == reg.record.aor
        {
            // What we hold was checked when it was stored; keep it as the reference.
            store
                .put(now_unix_ms, old, &AcceptStored)
                .map_err(|e| e.to_string())?;
        }
        let live = reg.is_live(now_unix_ms);
        store
            .put(now_unix_ms, reg, self.verifier.as_ref())
            .map_err(|e| e.to_string())?;
        Ok(if live {
            RecordAction::Store
        } else {
            RecordAction::Remove
        })
    }
}

/// Re-admits a record this peer already verified when it stored it.
struct AcceptStored;

impl SigVerifier for AcceptStored {
    fn verify(&self, _node: NodeId, _msg: &[u8], _sig: &[u8]) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::Registration;
    use overlay::secure::{Ed25519Registry, Ed25519Signer};

    #[test]
    #[allow(clippy::unwrap_used)]
    fn owner_rule_signature_key_and_removal() {
        let space = IdSpace::new(64).unwrap();
        let (alice_peer, _) = Ed25519Signer::generate().unwrap();
        let (mallory, _) = Ed25519Signer::generate().unwrap();
        let mut reg = Ed25519Registry::default();
        reg.insert(NodeId(1), alice_peer.public_key());
        reg.insert(NodeId(2), mallory.public_key());
        let v = RegistrationValidator::new(space, Arc::new(reg));
        let now = 1_000_000;
        let rec = |node: u128, seq: u64, expires: u64| Registration {
            aor: "sip:alice@p2psip.test".into(),
            node: NodeId(node),
            contact: "sip:alice@127.0.0.1:5070".into(),
            expires_unix_ms: expires,
            seq,
        };
        let key = aor_key(space, "sip:alice@p2psip.test");
        let first = rec(1, 1, now + 60_000).sign(&alice_peer).to_bytes();
        assert_eq!(v.validate(key, None, &first, now), Ok(RecordAction::Store));
        // Wrong key.
        assert!(v.validate(NodeId(5), None, &first, now).is_err());
        // Mallory signs a takeover of alice's live AoR.
        let take = rec(2, 2, now + 60_000).sign(&mallory).to_bytes();
        assert!(v.validate(key, Some(&first), &take, now).is_err());
        // Mallory claims to be peer 1: the signature does not verify.
        let forged = rec(1, 2, now + 60_000).sign(&mallory).to_bytes();
        assert!(v.validate(key, Some(&first), &forged, now).is_err());
        // A replay of the first record is stale.
        assert!(v.validate(key, Some(&first), &first, now).is_err());
        // The owner unregisters.
        let gone = rec(1, 2, 0).sign(&alice_peer).to_bytes();
        assert_eq!(
            v.validate(key, Some(&first), &gone, now),
            Ok(RecordAction::Remove)
        );
        // Garbage.
        assert!(v.validate(key, None, b"garbage", now).is_err());
    }
}
