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

/// An in-memory opinion database with the SOS's rules, for the simulator and tests.
#[derive(Debug, Clone)]
pub struct OpinionBook<P> {
    policy: TrustPolicy,
    peers: BTreeMap<P, PeerTrust>,
}

impl<P: Ord + Clone> OpinionBook<P> {
    /// An empty book.
    pub fn new(policy: TrustPolicy) -> Self {
        Self {
            policy,
            peers: BTreeMap::new(),
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
