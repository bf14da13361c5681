//! The SOS's rules for "what is our opinion of peer X right now", as a pure value.
//!
//! The server keeps one [`PeerTrust`] per peer behind its database; the simulator can keep
//! an [`OpinionBook`] in memory and get exactly the same answers without HTTP.

use crate::{Ageing, Discounting, Evidence, EvidenceError, Opinion, RankedRoute, RouteError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a peer's current opinion came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpinionSource {
    /// Set by an administrator; overrides evidence until cleared.
    Admin,
    /// Derived from reported outcomes, aged to the time of the query.
    Evidence,
    /// Nothing is known: the vacuous opinion (0, 0, 1, base rate).
    Default,
}

/// Base rate and ageing: the two knobs of the evidence-to-opinion mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustPolicy {
    base_rate: f64,
    ageing: Ageing,
    vacuous: Opinion,
}

impl TrustPolicy {
    /// A policy with base rate `base_rate` (∈ [0, 1]) and the given ageing.
    pub fn new(base_rate: f64, ageing: Ageing) -> Result<Self, EvidenceError> {
        let vacuous = Opinion::vacuous(base_rate)?;
        Ok(Self {
            base_rate,
            ageing,
            vacuous,
        })
    }

    /// The base rate a.
    pub fn base_rate(&self) -> f64 {
        self.base_rate
    }

    /// The ageing.
    pub fn ageing(&self) -> Ageing {
        self.ageing
    }

    /// The opinion of a peer nobody has reported on.
    pub fn vacuous(&self) -> Opinion {
        self.vacuous
    }
}

/// Everything known about one peer: an optional override, aged evidence, raw counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerTrust {
    /// Administrator-set opinion, if any.
    pub admin: Option<Opinion>,
    /// Aged positive/negative evidence.
    pub evidence: Evidence,
    /// Positive outcomes ever recorded (not aged).
    pub positive: u64,
    /// Negative outcomes ever recorded (not aged).
    pub negative: u64,
}

impl Default for PeerTrust {
    fn default() -> Self {
        Self {
            admin: None,
            evidence: Evidence::empty(0),
            positive: 0,
            negative: 0,
        }
    }
}

impl PeerTrust {
    /// Record one outcome observed at `at_ms`.
    pub fn record(&mut self, positive: bool, at_ms: u64, ageing: Ageing) {
        self.record_weighted(positive, 1.0, at_ms, ageing);
    }

    /// Record one outcome observed at `at_ms` that counts `weight` (in [0, 1]: a reporter's
    /// [`Opinion::discount_weight`]); a weight outside that range counts as the nearest end.
    pub fn record_weighted(&mut self, positive: bool, weight: f64, at_ms: u64, ageing: Ageing) {
        let weight = if weight.is_finite() {
            weight.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // A weight in [0, 1] is finite and non-negative, so `record` cannot fail.
        let _ = self.evidence.record(positive, weight, at_ms, ageing);
        if positive {
            self.positive = self.positive.saturating_add(1);
        } else {
            self.negative = self.negative.saturating_add(1);
        }
    }

    /// The current opinion: the admin override if set, else the evidence aged to `now_ms`
    /// if there is any, else the vacuous opinion.
    pub fn current(&self, now_ms: u64, policy: &TrustPolicy) -> (Opinion, OpinionSource) {
        if let Some(op) = self.admin {
            return (op, OpinionSource::Admin);
        }
        if (self.positive > 0 || self.negative > 0)
            && let Ok(op) = self
                .evidence
                .opinion(now_ms, policy.ageing, policy.base_rate)
        {
            return (op, OpinionSource::Evidence);
        }
        (policy.vacuous, OpinionSource::Default)
    }
}

/// How little uncertainty the proven evidence about a peer must leave before the SOS holds
/// a third party's report about that peer against it: u ≤ 0.5, at least two (aged) units
/// of proof.
pub const PROVEN_VIEW_MAX_UNCERTAINTY: f64 = 2.0 / 3.0;

/// An in-memory opinion database with the SOS's rules, for the simulator and tests.
///
/// Beside each peer's opinion (functional trust: does it forward?) the book keeps two more
/// kinds of evidence for [`OpinionBook::record_referred`]: the *proven* evidence about each
/// peer (what parties holding signed proof, the CSPs, recorded through
/// [`OpinionBook::record_proven`]) and each reporter's *referral* record (did its reports
/// agree with the proven view of their subjects?). A peer that forwards well but lies in its
/// reports keeps its functional trust and loses its voice.
#[derive(Debug, Clone)]
pub struct OpinionBook<P> {
    policy: TrustPolicy,
    peers: BTreeMap<P, PeerTrust>,
    proven: BTreeMap<P, Evidence>,
    referral: BTreeMap<P, Evidence>,
}

/// What became of a third-party report ([`OpinionBook::record_referred`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Referred {
    /// The proven view of the subject was too uncertain to check the report against: it
    /// counted as much as the reporter's referral record allows (this weight).
    Unchecked(f64),
    /// It agreed with the proven view: counted with this weight, and the reporter's
    /// referral record gained.
    Agreed(f64),
    /// It contradicted the proven view: it did not count, and the reporter's referral
    /// record lost.
    Contradicted,
}

impl<P: Ord + Clone> OpinionBook<P> {
    /// An empty book.
    pub fn new(policy: TrustPolicy) -> Self {
        Self {
            policy,
            peers: BTreeMap::new(),
            proven: BTreeMap::new(),
            referral: BTreeMap::new(),
        }
    }

    /// Override a peer's opinion (the paper's "manually modified the opinion database").
    pub fn set_opinion(&mut self, peer: P, opinion: Opinion) {
        self.peers.entry(peer).or_default().admin = Some(opinion);
    }

    /// Remove an override; returns whether there was one.
    pub fn clear_opinion(&mut self, peer: &P) -> bool {
        self.peers
            .get_mut(peer)
            .is_some_and(|t| t.admin.take().is_some())
    }

    /// Record an outcome about `peer` observed at `at_ms` (delivered = positive).
    pub fn record(&mut self, peer: P, positive: bool, at_ms: u64) {
        let ageing = self.policy.ageing;
        self.peers
            .entry(peer)
            .or_default()
            .record(positive, at_ms, ageing);
    }

    /// Record an outcome about `peer` told by a reporter whose own opinion is `reporter`:
    /// the report counts as much as discounting through the reporter leaves of it
    /// ([`Opinion::discount_weight`]), so a peer the SOS distrusts cannot talk an honest
    /// peer down (bad-mouthing) or a fellow attacker up (ballot-stuffing).
    pub fn record_reported(
        &mut self,
        peer: P,
        positive: bool,
        at_ms: u64,
        reporter: &Opinion,
        mode: Discounting,
    ) {
        let ageing = self.policy.ageing;
        self.peers.entry(peer).or_default().record_weighted(
            positive,
            reporter.discount_weight(mode),
            at_ms,
            ageing,
        );
    }

    /// Record an outcome about `peer` that the reporter can prove (a CSP holding the signed
    /// hand-overs of a copy): it counts fully, and it is the reference that third parties'
    /// reports are checked against ([`OpinionBook::record_referred`]).
    pub fn record_proven(&mut self, peer: P, positive: bool, at_ms: u64) {
        let ageing = self.policy.ageing;
        // A unit weight is finite and non-negative, so `record` cannot fail.
        let _ = self
            .proven
            .entry(peer.clone())
            .or_insert_with(|| Evidence::empty(at_ms))
            .record(positive, 1.0, at_ms, ageing);
        self.record(peer, positive, at_ms);
    }

    /// Record what `reporter`, a peer without proof, says about `peer` (subjective logic's
    /// referral trust). Where the proven evidence about `peer` is confident (uncertainty at
    /// most [`PROVEN_VIEW_MAX_UNCERTAINTY`]), the report is checked against it: one that
    /// agrees raises the reporter's referral record and counts as much as that record
    /// allows; one that contradicts it lowers the record and does not count, so a peer that
    /// forwards well cannot talk an honest peer down (bad-mouthing) or a proven dropper up
    /// (ballot-stuffing). Where nothing is proven, the report counts as much as the
    /// reporter's referral record allows, and a reporter nobody could check yet says nothing.
    pub fn record_referred(
        &mut self,
        peer: P,
        positive: bool,
        at_ms: u64,
        reporter: &P,
        mode: Discounting,
    ) -> Referred {
        let ageing = self.policy.ageing;
        let base = self.policy.base_rate;
        let proven = self
            .proven
            .get(&peer)
            .and_then(|e| e.opinion(at_ms, ageing, base).ok())
            .filter(|o| o.uncertainty() <= PROVEN_VIEW_MAX_UNCERTAINTY);
        let verdict = proven.map(|o| positive == (o.belief() > o.disbelief()));
        if let Some(agrees) = verdict {
            // A unit weight is finite and non-negative, so `record` cannot fail.
            let _ = self
                .referral
                .entry(reporter.clone())
                .or_insert_with(|| Evidence::empty(at_ms))
                .record(agrees, 1.0, at_ms, ageing);
        }
        let weight = self.referral_opinion(reporter, at_ms).discount_weight(mode);
        let outcome = match verdict {
            Some(false) => return Referred::Contradicted,
            Some(true) => Referred::Agreed(weight),
            None => Referred::Unchecked(weight),
        };
        self.peers
            .entry(peer)
            .or_default()
            .record_weighted(positive, weight, at_ms, ageing);
        outcome
    }

    /// How far the book believes `reporter`'s reports at `now_ms`: the opinion its checked
    /// reports support (vacuous if none was checked).
    pub fn referral_opinion(&self, reporter: &P, now_ms: u64) -> Opinion {
        self.referral
            .get(reporter)
            .and_then(|e| {
                e.opinion(now_ms, self.policy.ageing, self.policy.base_rate)
                    .ok()
            })
            .unwrap_or(self.policy.vacuous)
    }

    /// The current opinion of `peer` and where it came from.
    pub fn opinion(&self, peer: &P, now_ms: u64) -> (Opinion, OpinionSource) {
        match self.peers.get(peer) {
            Some(t) => t.current(now_ms, &self.policy),
            None => (self.policy.vacuous, OpinionSource::Default),
        }
    }

    /// Rank candidate routes at `now_ms`, best first (see [`crate::rank_routes`]).
    pub fn rank(
        &self,
        routes: Vec<Vec<P>>,
        now_ms: u64,
        mode: Discounting,
    ) -> Result<Vec<RankedRoute<P>>, RouteError> {
        crate::rank_routes(routes, |p| self.opinion(p, now_ms).0, mode)
    }

    /// The policy in force.
    pub fn policy(&self) -> &TrustPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_then_evidence_then_default() {
        let policy = TrustPolicy::new(0.25, Ageing::never()).expect("valid");
        let mut book = OpinionBook::new(policy);
        assert_eq!(book.opinion(&1u32, 0).1, OpinionSource::Default);
        book.record(1, true, 0);
        book.record(1, true, 0);
        let (op, src) = book.opinion(&1, 0);
        assert_eq!(src, OpinionSource::Evidence);
        assert!((op.belief() - 0.5).abs() < 1e-12);
        let set = Opinion::new(0.0, 1.0, 0.0, 0.5).expect("valid");
        book.set_opinion(1, set);
        assert_eq!(book.opinion(&1, 0), (set, OpinionSource::Admin));
        assert!(book.clear_opinion(&1));
        assert!(!book.clear_opinion(&1));
        assert_eq!(book.opinion(&1, 0).1, OpinionSource::Evidence);
    }

    #[test]
    fn a_report_counts_as_much_as_its_reporter_is_trusted() {
        let policy = TrustPolicy::new(0.25, Ageing::never()).expect("valid");
        let mut book = OpinionBook::new(policy);
        let trusted = Opinion::new(0.9, 0.0, 0.1, 0.25).expect("valid");
        let distrusted = Opinion::new(0.0, 0.9, 0.1, 0.25).expect("valid");
        let mode = Discounting::ProbabilitySensitive;
        // Four lies from a distrusted reporter against one truth from a trusted one.
        for _ in 0..4 {
            book.record_reported(1u32, false, 0, &distrusted, mode);
        }
        book.record_reported(1, true, 0, &trusted, mode);
        let (op, _) = book.opinion(&1, 0);
        assert!(op.belief() > op.disbelief(), "{op:?}");
        // Unweighted, the lies would win.
        let mut plain = OpinionBook::new(policy);
        for _ in 0..4 {
            plain.record(1u32, false, 0);
        }
        plain.record(1, true, 0);
        let (op, _) = plain.opinion(&1, 0);
        assert!(op.belief() < op.disbelief(), "{op:?}");
        // The raw counts still count reports, whatever they weighed.
        assert_eq!(book.peers[&1].negative, 4);
    }

    #[test]
    fn a_reporter_that_contradicts_proof_loses_its_voice() {
        let policy = TrustPolicy::new(0.25, Ageing::never()).expect("valid");
        let mut book = OpinionBook::new(policy);
        let mode = Discounting::Classic;
        // The CSPs proved that 1 forwards and 2 drops.
        for _ in 0..4 {
            book.record_proven(1u32, true, 0);
            book.record_proven(2u32, false, 0);
        }
        // 10 tells the truth about both; 20 says the opposite.
        assert_eq!(
            book.record_referred(1, true, 0, &10, mode),
            Referred::Agreed(1.0 / 3.0)
        );
        book.record_referred(2, false, 0, &10, mode);
        for _ in 0..6 {
            assert_eq!(
                book.record_referred(1, false, 0, &20, mode),
                Referred::Contradicted
            );
            assert_eq!(
                book.record_referred(2, true, 0, &20, mode),
                Referred::Contradicted
            );
        }
        let (one, _) = book.opinion(&1, 0);
        let (two, _) = book.opinion(&2, 0);
        assert!(one.belief() > one.disbelief(), "{one:?}");
        assert!(two.disbelief() > two.belief(), "{two:?}");
        assert!(book.referral_opinion(&10, 0).belief() > 0.4);
        let liar = book.referral_opinion(&20, 0);
        assert!(liar.disbelief() > 0.8 && liar.belief() == 0.0, "{liar:?}");
        // About a peer nothing is proven of, the liar's word now weighs nothing and the
        // truthful reporter's counts.
        assert_eq!(
            book.record_referred(3, false, 0, &20, mode),
            Referred::Unchecked(0.0)
        );
        assert_eq!(book.opinion(&3, 0).0.disbelief(), 0.0);
        let Referred::Unchecked(w) = book.record_referred(3, false, 0, &10, mode) else {
            panic!("nothing is proven about 3");
        };
        assert!(w > 0.4);
        assert!(book.opinion(&3, 0).0.disbelief() > 0.0);
        // A reporter nobody could check yet says nothing.
        assert_eq!(
            book.record_referred(4, false, 0, &30, mode),
            Referred::Unchecked(0.0)
        );
    }

    #[test]
    fn paper_through_the_book() {
        let policy = TrustPolicy::new(crate::paper::BASE_RATE, Ageing::never()).expect("valid");
        let mut book = OpinionBook::new(policy);
        for (p, b, d, u) in crate::paper::OPINIONS {
            book.set_opinion(
                p,
                Opinion::new(b, d, u, crate::paper::BASE_RATE).expect("valid"),
            );
        }
        let ranked = book
            .rank(crate::paper::routes(), 0, Discounting::Classic)
            .expect("non-empty");
        assert_eq!(ranked[0].route, vec![1600, 1618]);
    }
}
