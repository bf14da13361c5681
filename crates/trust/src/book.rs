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

/// Everything known about one peer: an optional override, aged evidence, raw counts, and
/// the two kinds of evidence that decide how far third parties' reports count.
///
/// The rules that use them ([`PeerTrust::record_proven`], [`judge_report`] and
/// [`Referred::apply_to_subject`] / [`Referred::apply_to_reporter`]) work on one record at
/// a time, so the simulator's [`OpinionBook`] and the SOS's database apply exactly the same
/// code to what they keep in memory or in rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerTrust {
    /// Administrator-set opinion, if any.
    pub admin: Option<Opinion>,
    /// Aged positive/negative evidence (functional trust: does the peer forward?).
    pub evidence: Evidence,
    /// Positive outcomes ever recorded (not aged).
    pub positive: u64,
    /// Negative outcomes ever recorded (not aged).
    pub negative: u64,
    /// What reporters holding signed proof (CSPs, CSPGs) recorded about the peer: the
    /// reference that third parties' reports about it are checked against.
    pub proven: Evidence,
    /// The peer as a reporter (referral trust): did its checked reports agree with the
    /// proven view of their subjects?
    pub referral: Evidence,
}

impl Default for PeerTrust {
    fn default() -> Self {
        Self {
            admin: None,
            evidence: Evidence::empty(0),
            positive: 0,
            negative: 0,
            proven: Evidence::empty(0),
            referral: Evidence::empty(0),
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

    /// Record an outcome the reporter can prove (a CSP or CSPG holding the signed
    /// hand-overs of a copy): it counts fully, and it joins the proven view that third
    /// parties' reports are checked against ([`judge_report`]).
    pub fn record_proven(&mut self, positive: bool, at_ms: u64, ageing: Ageing) {
        // A unit weight is finite and non-negative, so `record` cannot fail.
        let _ = self.proven.record(positive, 1.0, at_ms, ageing);
        self.record(positive, at_ms, ageing);
    }

    /// Whether a third party's report that the peer did (`positive`) or did not deliver
    /// agrees with what was proven about it, as of `at_ms`; `None` while the proven view
    /// is too uncertain to check against (uncertainty above
    /// [`PROVEN_VIEW_MAX_UNCERTAINTY`]).
    pub fn proven_verdict(&self, positive: bool, at_ms: u64, policy: &TrustPolicy) -> Option<bool> {
        self.proven
            .opinion(at_ms, policy.ageing, policy.base_rate)
            .ok()
            .filter(|o| o.uncertainty() <= PROVEN_VIEW_MAX_UNCERTAINTY)
            .map(|o| positive == (o.belief() > o.disbelief()))
    }

    /// How far the peer's reports are believed at `now_ms`: the opinion its checked reports
    /// support (vacuous if none was checked).
    pub fn referral_opinion(&self, now_ms: u64, policy: &TrustPolicy) -> Opinion {
        self.referral
            .opinion(now_ms, policy.ageing, policy.base_rate)
            .unwrap_or(policy.vacuous)
    }

    /// Whether the SOS should tell peers to route around this one at `now_ms`: its
    /// current opinion holds more disbelief than belief (it does not forward), or it was
    /// caught lying — its checked reports contradicted the proof more than twice as often
    /// as they agreed with it, over at least eight (aged) checks ([`LIAR_MAX_UNCERTAINTY`]).
    /// A peer that lies about others is malicious however well it forwards; an honest peer
    /// whose reports sometimes meet a proof that lags behind an on-off attacker is not one.
    pub fn distrusted(&self, now_ms: u64, policy: &TrustPolicy) -> bool {
        let (o, _) = self.current(now_ms, policy);
        if o.disbelief() > o.belief() {
            return true;
        }
        let r = self.referral_opinion(now_ms, policy);
        r.disbelief() > 2.0 * r.belief() && r.uncertainty() <= LIAR_MAX_UNCERTAINTY
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

/// Decide what a report from a peer without proof (subjective logic's referral trust)
/// does: `reporter` says that `subject` did (`positive`) or did not deliver, at `at_ms`.
///
/// Where the proven evidence about the subject is confident, the report is checked against
/// it: one that agrees raises the reporter's referral record and counts as much as that
/// record then allows; one that contradicts it lowers the record and does not count, so a
/// peer that forwards well cannot talk an honest peer down (bad-mouthing, slander) or a
/// proven dropper up (ballot-stuffing). Where nothing is proven, the report counts as much
/// as the reporter's referral record allows, and a reporter nobody could check yet says
/// nothing. Nothing is changed here: apply the answer with [`Referred::apply_to_reporter`]
/// and [`Referred::apply_to_subject`] (to the records themselves, or to any share of them
/// whose sum is the record, as the SOS's PostgreSQL shards are).
pub fn judge_report(
    subject: &PeerTrust,
    reporter: &PeerTrust,
    positive: bool,
    at_ms: u64,
    policy: &TrustPolicy,
    mode: Discounting,
) -> Referred {
    let verdict = subject.proven_verdict(positive, at_ms, policy);
    let mut referral = reporter.referral;
    if let Some(agrees) = verdict {
        // A unit weight is finite and non-negative, so `record` cannot fail.
        let _ = referral.record(agrees, 1.0, at_ms, policy.ageing);
    }
    let weight = referral
        .opinion(at_ms, policy.ageing, policy.base_rate)
        .unwrap_or(policy.vacuous)
        .discount_weight(mode);
    match verdict {
        Some(false) => Referred::Contradicted,
        Some(true) => Referred::Agreed(weight),
        None => Referred::Unchecked(weight),
    }
}

/// How little uncertainty the proven evidence about a peer must leave before the SOS holds
/// a third party's report about that peer against it: u ≤ 0.5, at least two (aged) units
/// of proof.
pub const PROVEN_VIEW_MAX_UNCERTAINTY: f64 = 2.0 / 3.0;

/// How little uncertainty a reporter's referral record must leave before its lies make it
/// distrusted ([`PeerTrust::distrusted`]): u ≤ 0.2, at least eight (aged) checked reports,
/// so a few reports that met a lagging proof do not condemn an honest peer.
pub const LIAR_MAX_UNCERTAINTY: f64 = 0.2;

/// An in-memory opinion database with the SOS's rules, for the simulator and tests.
///
/// Beside each peer's opinion (functional trust: does it forward?) the book keeps two more
/// kinds of evidence for [`OpinionBook::record_referred`]: the *proven* evidence about each
/// peer (what parties holding signed proof, the CSPs, recorded through
/// [`OpinionBook::record_proven`]) and each reporter's *referral* record (did its reports
/// agree with the proven view of their subjects?). A peer that forwards well but lies in its
/// reports keeps its functional trust and loses its voice. Each peer's share of all this is
/// one [`PeerTrust`], the same record the SOS server keeps per peer.
#[derive(Debug, Clone)]
pub struct OpinionBook<P> {
    policy: TrustPolicy,
    peers: BTreeMap<P, PeerTrust>,
}

/// What became of a third-party report ([`judge_report`], [`OpinionBook::record_referred`]).
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

impl Referred {
    /// Whether the reporter's referral record changes ([`Referred::apply_to_reporter`]
    /// does something), so that a store knows to write the reporter's row.
    pub fn checked(&self) -> bool {
        !matches!(self, Referred::Unchecked(_))
    }

    /// Whether the report counts toward its subject's evidence.
    pub fn counts(&self) -> bool {
        !matches!(self, Referred::Contradicted)
    }

    /// Update the reporter's referral record with the check's result (nothing if the report
    /// could not be checked).
    pub fn apply_to_reporter(&self, reporter: &mut PeerTrust, at_ms: u64, ageing: Ageing) {
        let agrees = match self {
            Referred::Agreed(_) => true,
            Referred::Contradicted => false,
            Referred::Unchecked(_) => return,
        };
        // A unit weight is finite and non-negative, so `record` cannot fail.
        let _ = reporter.referral.record(agrees, 1.0, at_ms, ageing);
    }

    /// Count the report toward its subject's evidence with the weight it was given
    /// (nothing, not even the raw count, if it contradicted the proven view).
    pub fn apply_to_subject(
        &self,
        subject: &mut PeerTrust,
        positive: bool,
        at_ms: u64,
        ageing: Ageing,
    ) {
        match *self {
            Referred::Agreed(w) | Referred::Unchecked(w) => {
                subject.record_weighted(positive, w, at_ms, ageing)
            }
            Referred::Contradicted => {}
        }
    }
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
        let (t, ageing) = self.entry(peer);
        t.record(positive, at_ms, ageing);
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
        let (t, ageing) = self.entry(peer);
        t.record_weighted(positive, reporter.discount_weight(mode), at_ms, ageing);
    }

    /// Record an outcome about `peer` that the reporter can prove (a CSP holding the signed
    /// hand-overs of a copy): it counts fully, and it is the reference that third parties'
    /// reports are checked against ([`OpinionBook::record_referred`]).
    pub fn record_proven(&mut self, peer: P, positive: bool, at_ms: u64) {
        let (t, ageing) = self.entry(peer);
        t.record_proven(positive, at_ms, ageing);
    }

    /// The record of `peer` (created empty) and the ageing the book applies to records.
    fn entry(&mut self, peer: P) -> (&mut PeerTrust, Ageing) {
        let ageing = self.policy.ageing;
        (self.peers.entry(peer).or_default(), ageing)
    }

    /// Record what `reporter`, a peer without proof, says about `peer` (subjective logic's
    /// referral trust): the rule of [`judge_report`], applied to the book's records.
    pub fn record_referred(
        &mut self,
        peer: P,
        positive: bool,
        at_ms: u64,
        reporter: &P,
        mode: Discounting,
    ) -> Referred {
        let ageing = self.policy.ageing;
        let none = PeerTrust::default();
        let outcome = judge_report(
            self.peers.get(&peer).unwrap_or(&none),
            self.peers.get(reporter).unwrap_or(&none),
            positive,
            at_ms,
            &self.policy,
            mode,
        );
        if outcome.checked() {
            outcome.apply_to_reporter(
                self.peers.entry(reporter.clone()).or_default(),
                at_ms,
                ageing,
            );
        }
        if outcome.counts() {
            outcome.apply_to_subject(self.peers.entry(peer).or_default(), positive, at_ms, ageing);
        }
        outcome
    }

    /// How far the book believes `reporter`'s reports at `now_ms`: the opinion its checked
    /// reports support (vacuous if none was checked).
    pub fn referral_opinion(&self, reporter: &P, now_ms: u64) -> Opinion {
        self.peers
            .get(reporter)
            .map(|t| t.referral_opinion(now_ms, &self.policy))
            .unwrap_or(self.policy.vacuous)
    }

    /// Whether `peer` is to be routed around at `now_ms` ([`PeerTrust::distrusted`]).
    pub fn distrusted(&self, peer: &P, now_ms: u64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|t| t.distrusted(now_ms, &self.policy))
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

    /// A book (a = 0.25, no ageing) in which the CSPs proved four times that 1 forwards and
    /// 2 drops, and the discounting the tests judge reports with.
    fn proven_forwarder_and_dropper() -> (OpinionBook<u32>, Discounting) {
        let policy = TrustPolicy::new(0.25, Ageing::never()).expect("valid");
        let mut book = OpinionBook::new(policy);
        for _ in 0..4 {
            book.record_proven(1u32, true, 0);
            book.record_proven(2u32, false, 0);
        }
        (book, Discounting::Classic)
    }

    #[test]
    fn a_reporter_that_contradicts_proof_loses_its_voice() {
        let (mut book, mode) = proven_forwarder_and_dropper();
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
    fn a_dropper_and_a_caught_liar_are_distrusted_an_honest_reporter_is_not() {
        let (mut book, mode) = proven_forwarder_and_dropper();
        assert!(book.distrusted(&2, 0) && !book.distrusted(&1, 0));
        // 20 forwards well and lies: seven lies are not yet enough to condemn it.
        for _ in 0..4 {
            book.record(20, true, 0);
        }
        for _ in 0..7 {
            book.record_referred(1, false, 0, &20, mode);
        }
        assert!(!book.distrusted(&20, 0));
        // One more, and it is a caught liar whatever its forwarding.
        book.record_referred(2, true, 0, &20, mode);
        assert!(book.opinion(&20, 0).0.belief() > 0.5);
        assert!(book.distrusted(&20, 0));
        // 10 reports the truth, and sometimes (the proof lagging) contradicts it.
        for _ in 0..7 {
            book.record_referred(1, true, 0, &10, mode);
        }
        for _ in 0..3 {
            book.record_referred(2, true, 0, &10, mode);
        }
        assert!(!book.distrusted(&10, 0));
        assert!(
            !book.distrusted(&99, 0),
            "nothing known, nothing held against it"
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
