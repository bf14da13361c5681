//! Who may report: signature verification behind a small trait, and the signing helper.
//!
//! Until E&A certificates exist the SOS reads reporters' public keys from a key registry
//! file. The server only talks to [`ReporterVerifier`], so an E&A-certificate verifier can
//! replace [`KeyRegistry`] without touching the handlers.
//!
//! Registry file (JSON):
//!
//! ```json
//! {"reporters":[
//!   {"peer":"1618","algorithm":"ed25519","public_key":"<64 hex digits>"},
//!   {"peer":"1600","algorithm":"ecdsa-p256-sha256","public_key":"<130 hex digits, SEC1 uncompressed>"}
//! ],
//!  "infrastructure":["1600"]}
//! ```
//!
//! `infrastructure` (optional) names the reporters that are CSPs or CSPGs: their evidence
//! rests on the signed hand-overs they hold, so the SOS counts it fully and checks other
//! reporters' evidence against it ([`ReporterVerifier::holds_proof`]). Everyone else is an
//! ordinary peer, whose reports count as far as their agreement with that proof earned
//! (see the server's module docs). Verifiers built from E&A's directory take the role from
//! each member's certificate.

use crate::{Outcome, PeerId, ReportBody, SignedBatch, SignedReport};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Why a report's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No key is known for this reporter (not enrolled).
    #[error("reporter {0} has no registered key")]
    UnknownReporter(PeerId),
    /// The signature does not verify under the reporter's key.
    #[error("signature does not verify")]
    BadSignature,
}

/// Checks that `signature` over `message` was made by `reporter`.
///
/// Implemented by [`KeyRegistry`] today; the E&A certificate path implements it later.
pub trait ReporterVerifier: Send + Sync {
    /// Verify one signature.
    fn verify(&self, reporter: PeerId, message: &[u8], signature: &[u8])
    -> Result<(), VerifyError>;

    /// Whether `reporter` is a CSP or CSPG, whose evidence rests on signed hand-overs
    /// (proof) rather than on its word. Ordinary peers by default.
    fn holds_proof(&self, _reporter: PeerId) -> bool {
        false
    }
}

/// Signature algorithms a reporter key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Algorithm {
    /// Ed25519 (RFC 8032); 32-byte public key, 64-byte signature.
    #[serde(rename = "ed25519")]
    #[cfg_attr(feature = "clap", value(name = "ed25519"))]
    Ed25519,
    /// ECDSA on P-256 with SHA-256; SEC1 uncompressed public key, 64-byte r‖s signature.
    #[serde(rename = "ecdsa-p256-sha256")]
    #[cfg_attr(feature = "clap", value(name = "ecdsa-p256-sha256"))]
    EcdsaP256Sha256,
}

/// One line of the registry file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// The reporter.
    pub peer: PeerId,
    /// Its key type.
    pub algorithm: Algorithm,
    /// Its public key, hex.
    pub public_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    reporters: Vec<RegistryEntry>,
    /// The CSPs and CSPGs among the reporters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    infrastructure: Vec<PeerId>,
}

/// Why a registry could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The file is not valid registry JSON.
    #[error("key registry is not valid JSON: {0}")]
    Json(String),
    /// A public key is not hex or has the wrong length for its algorithm.
    #[error("public key for peer {0} is malformed")]
    BadKey(PeerId),
    /// A peer appears twice.
    #[error("peer {0} appears twice in the key registry")]
    Duplicate(PeerId),
}

/// Reporter public keys loaded from a registry file.
#[derive(Debug, Clone, Default)]
pub struct KeyRegistry {
    keys: BTreeMap<PeerId, (Algorithm, Vec<u8>)>,
    /// Reporters that are CSPs or CSPGs ([`ReporterVerifier::holds_proof`]).
    infrastructure: BTreeSet<PeerId>,
}

impl KeyRegistry {
    /// Parse the registry JSON (format in the module docs).
    pub fn from_json(json: &[u8]) -> Result<Self, RegistryError> {
        let file: RegistryFile =
            serde_json::from_slice(json).map_err(|e| RegistryError::Json(e.to_string()))?;
        Ok(Self::from_entries(file.reporters)?.with_infrastructure(file.infrastructure))
    }

    /// Mark `peers` as CSPs or CSPGs: their reports count as proof.
    pub fn with_infrastructure(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.infrastructure.extend(peers);
        self
    }

    /// The reporters marked as CSPs or CSPGs, in ID order.
    pub fn infrastructure(&self) -> Vec<PeerId> {
        self.infrastructure.iter().copied().collect()
    }

    /// Build from entries, checking key lengths.
    pub fn from_entries(
        entries: impl IntoIterator<Item = RegistryEntry>,
    ) -> Result<Self, RegistryError> {
        let mut keys = BTreeMap::new();
        for e in entries {
            let key = crate::hex::decode(&e.public_key).ok_or(RegistryError::BadKey(e.peer))?;
            let ok = match e.algorithm {
                Algorithm::Ed25519 => key.len() == 32,
                Algorithm::EcdsaP256Sha256 => key.len() == 65 && key[0] == 4,
            };
            if !ok {
                return Err(RegistryError::BadKey(e.peer));
            }
            if keys.insert(e.peer, (e.algorithm, key)).is_some() {
                return Err(RegistryError::Duplicate(e.peer));
            }
        }
        Ok(Self {
            keys,
            infrastructure: BTreeSet::new(),
        })
    }

    /// Serialise entries as a registry file.
    pub fn to_json(entries: &[RegistryEntry]) -> String {
        Self::to_json_with(entries, &[])
    }

    /// Serialise entries as a registry file that marks `infrastructure` as CSPs or CSPGs.
    pub fn to_json_with(entries: &[RegistryEntry], infrastructure: &[PeerId]) -> String {
        let file = RegistryFile {
            reporters: entries.to_vec(),
            infrastructure: infrastructure.to_vec(),
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// The registry file `existing` (`None`: no file yet) with `entries` added, each
    /// replacing its peer's earlier key, and marked as CSPs or CSPGs when `infrastructure`
    /// (the file's other marks are kept). Refused if the result would not load.
    pub fn merge_json(
        existing: Option<&[u8]>,
        entries: Vec<RegistryEntry>,
        infrastructure: bool,
    ) -> Result<String, RegistryError> {
        let RegistryFile {
            reporters: mut all,
            infrastructure: mut marked,
        } = match existing {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| RegistryError::Json(e.to_string()))?
            }
            None => RegistryFile {
                reporters: Vec::new(),
                infrastructure: Vec::new(),
            },
        };
        for e in entries {
            all.retain(|x| x.peer != e.peer);
            marked.retain(|p| *p != e.peer);
            if infrastructure {
                marked.push(e.peer);
            }
            all.push(e);
        }
        Self::from_entries(all.clone())?;
        Ok(Self::to_json_with(&all, &marked))
    }

    /// Number of registered reporters.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no reporter is registered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl ReporterVerifier for KeyRegistry {
    fn verify(
        &self,
        reporter: PeerId,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let (alg, key) = self
            .keys
            .get(&reporter)
            .ok_or(VerifyError::UnknownReporter(reporter))?;
        let alg: &dyn signature::VerificationAlgorithm = match alg {
            Algorithm::Ed25519 => &signature::ED25519,
            Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_FIXED,
        };
        UnparsedPublicKey::new(alg, key)
            .verify(message, signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    fn holds_proof(&self, reporter: PeerId) -> bool {
        self.keys.contains_key(&reporter) && self.infrastructure.contains(&reporter)
    }
}

/// Why a signing key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// The PKCS#8 document was rejected.
    #[error("invalid PKCS#8 key")]
    BadKey,
    /// The system RNG failed.
    #[error("random number generator failed")]
    Rng,
}

enum SignerKey {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A reporter's signing key: turns a [`ReportBody`] into a [`SignedReport`].
pub struct ReportSigner {
    peer: PeerId,
    key: SignerKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for ReportSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSigner")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ReportSigner {
    /// Generate a fresh key; returns the signer and its PKCS#8 document (to store).
    pub fn generate(peer: PeerId, algorithm: Algorithm) -> Result<(Self, Vec<u8>), SignerError> {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
            Algorithm::EcdsaP256Sha256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| SignerError::Rng)?;
        let pkcs8 = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8(peer, algorithm, &pkcs8)?, pkcs8))
    }

    /// Load a key from PKCS#8.
    pub fn from_pkcs8(
        peer: PeerId,
        algorithm: Algorithm,
        pkcs8: &[u8],
    ) -> Result<Self, SignerError> {
        let rng = SystemRandom::new();
        let key = match algorithm {
            Algorithm::Ed25519 => SignerKey::Ed25519(
                Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| SignerError::BadKey)?,
            ),
            Algorithm::EcdsaP256Sha256 => SignerKey::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(|_| SignerError::BadKey)?,
            ),
        };
        Ok(Self { peer, key, rng })
    }

    /// The peer this key belongs to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The registry line for this key.
    pub fn registry_entry(&self) -> RegistryEntry {
        let (algorithm, pk) = match &self.key {
            SignerKey::Ed25519(k) => (Algorithm::Ed25519, k.public_key().as_ref()),
            SignerKey::Ecdsa(k) => (Algorithm::EcdsaP256Sha256, k.public_key().as_ref()),
        };
        RegistryEntry {
            peer: self.peer,
            algorithm,
            public_key: crate::hex::encode(pk),
        }
    }

    /// Sign a report of this signer's peer about `subject`, made at `timestamp_ms`, with a
    /// fresh random nonce (what `p2psip sos report` sends).
    pub fn report(
        &self,
        subject: PeerId,
        outcome: Outcome,
        route: Vec<PeerId>,
        timestamp_ms: u64,
    ) -> Result<SignedReport, SignerError> {
        self.sign(self.body(subject, outcome, route, timestamp_ms)?)
    }

    /// A report of this signer's peer about `subject`, made at `timestamp_ms`, with a fresh
    /// random nonce, to sign alone ([`sign`](Self::sign)) or in a batch
    /// ([`sign_batch`](Self::sign_batch)).
    pub fn body(
        &self,
        subject: PeerId,
        outcome: Outcome,
        route: Vec<PeerId>,
        timestamp_ms: u64,
    ) -> Result<ReportBody, SignerError> {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce).map_err(|_| SignerError::Rng)?;
        Ok(ReportBody {
            reporter: self.peer,
            subject,
            outcome,
            route,
            timestamp_ms,
            nonce,
        })
    }

    /// Sign a body. The body's reporter should be this signer's peer.
    pub fn sign(&self, body: ReportBody) -> Result<SignedReport, SignerError> {
        let signature = self.signature(&body.canonical_bytes())?;
        Ok(SignedReport { body, signature })
    }

    /// Sign `reports` as one batch of this signer's peer (each report's reporter is set to
    /// it): one signature for all of them.
    pub fn sign_batch(&self, mut reports: Vec<ReportBody>) -> Result<SignedBatch, SignerError> {
        for r in &mut reports {
            r.reporter = self.peer;
        }
        let signature = self.signature(&SignedBatch::canonical_bytes(self.peer, &reports))?;
        Ok(SignedBatch {
            reporter: self.peer,
            reports,
            signature,
        })
    }

    fn signature(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(match &self.key {
            SignerKey::Ed25519(k) => k.sign(msg).as_ref().to_vec(),
            SignerKey::Ecdsa(k) => k
                .sign(&self.rng, msg)
                .map_err(|_| SignerError::Rng)?
                .as_ref()
                .to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    /// An algorithm's name on the command line is what the registry file's JSON calls it.
    #[cfg(feature = "clap")]
    #[test]
    fn algorithm_names_are_the_registrys() {
        use clap::ValueEnum;
        for a in Algorithm::value_variants() {
            let name = a.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(
                serde_json::to_string(a).ok(),
                name.map(|n| format!("\"{n}\""))
            );
        }
    }

    fn body(reporter: u128) -> ReportBody {
        ReportBody {
            reporter: PeerId(reporter),
            subject: PeerId(1609),
            outcome: Outcome::Delivered,
            route: vec![PeerId(1593), PeerId(1609), PeerId(1618)],
            timestamp_ms: 1,
            nonce: [7; 16],
        }
    }

    #[test]
    fn both_algorithms_sign_and_verify() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let (signer, pkcs8) = ReportSigner::generate(PeerId(1618), alg).expect("keygen");
            let again = ReportSigner::from_pkcs8(PeerId(1618), alg, &pkcs8).expect("reload");
            let json = KeyRegistry::to_json(&[again.registry_entry()]);
            let reg = KeyRegistry::from_json(json.as_bytes()).expect("registry");
            let signed = signer.sign(body(1618)).expect("sign");
            let msg = signed.body.canonical_bytes();
            assert_eq!(reg.verify(PeerId(1618), &msg, &signed.signature), Ok(()));
            let mut tampered = signed.body.clone();
            tampered.outcome = Outcome::Dropped;
            assert_eq!(
                reg.verify(PeerId(1618), &tampered.canonical_bytes(), &signed.signature),
                Err(VerifyError::BadSignature)
            );
            assert_eq!(
                reg.verify(PeerId(5), &msg, &signed.signature),
                Err(VerifyError::UnknownReporter(PeerId(5)))
            );
        }
    }

    #[test]
    fn a_batch_verifies_once_for_all_its_reports_and_not_when_altered() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256Sha256] {
            let (signer, _) = ReportSigner::generate(PeerId(1618), alg).expect("keygen");
            let reg = KeyRegistry::from_entries([signer.registry_entry()]).expect("registry");
            // A body naming another reporter is signed as this signer's.
            let batch = signer.sign_batch(vec![body(1618), body(5)]).expect("sign");
            assert!(batch.reports.iter().all(|r| r.reporter == PeerId(1618)));
            let msg = SignedBatch::canonical_bytes(batch.reporter, &batch.reports);
            assert_eq!(reg.verify(PeerId(1618), &msg, &batch.signature), Ok(()));
            let mut fewer = batch.reports.clone();
            fewer.pop();
            let mut altered = batch.reports.clone();
            altered[1].outcome = Outcome::Dropped;
            for reports in [fewer, altered] {
                let msg = SignedBatch::canonical_bytes(batch.reporter, &reports);
                assert_eq!(
                    reg.verify(PeerId(1618), &msg, &batch.signature),
                    Err(VerifyError::BadSignature)
                );
            }
            // The batch's signature is no signature of any of its reports.
            let one = batch.reports[0].canonical_bytes();
            assert_eq!(
                reg.verify(PeerId(1618), &one, &batch.signature),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn registry_rejects_bad_keys() {
        let e = |k: &str| RegistryEntry {
            peer: PeerId(1),
            algorithm: Algorithm::Ed25519,
            public_key: k.to_string(),
        };
        assert!(KeyRegistry::from_entries([e("00")]).is_err());
        let ok = "00".repeat(32);
        assert!(KeyRegistry::from_entries([e(&ok), e(&ok)]).is_err());
        assert!(KeyRegistry::from_json(b"{\"reporters\":[],\"x\":1}").is_err());
    }

    #[test]
    fn merging_replaces_a_peers_key_and_keeps_other_marks() {
        let key = |peer: u128| {
            ReportSigner::generate(PeerId(peer), Algorithm::Ed25519)
                .expect("keygen")
                .0
                .registry_entry()
        };
        let first = KeyRegistry::merge_json(None, vec![key(1), key(2)], true).expect("new");
        let again = key(1);
        let merged = KeyRegistry::merge_json(Some(first.as_bytes()), vec![again.clone()], false)
            .expect("merge");
        let reg = KeyRegistry::from_json(merged.as_bytes()).expect("loads");
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.infrastructure(), vec![PeerId(2)]);
        assert!(merged.contains(&again.public_key));
        assert!(KeyRegistry::merge_json(Some(b"not json"), vec![], false).is_err());
        let mut bad = key(3);
        bad.public_key = "00".into();
        assert!(KeyRegistry::merge_json(None, vec![bad], false).is_err());
    }

    #[test]
    fn a_signed_report_verifies_and_carries_a_fresh_nonce() {
        let (signer, _) = ReportSigner::generate(PeerId(7), Algorithm::Ed25519).expect("keygen");
        let reg = KeyRegistry::from_entries([signer.registry_entry()]).expect("registry");
        let report = |s: &ReportSigner| {
            s.report(PeerId(9), Outcome::Dropped, vec![PeerId(9)], 5)
                .expect("sign")
        };
        let (a, b) = (report(&signer), report(&signer));
        assert_eq!((a.body.reporter, a.body.timestamp_ms), (PeerId(7), 5));
        assert_ne!(a.body.nonce, b.body.nonce);
        let msg = a.body.canonical_bytes();
        assert_eq!(reg.verify(PeerId(7), &msg, &a.signature), Ok(()));
    }
}
