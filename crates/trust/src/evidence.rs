//! Turning counted outcomes into opinions, with exponential ageing.
//!
//! The SOS does not invent opinions: it counts what reporters saw a peer do (r positive,
//! s negative observations) and maps the counts with the usual beta-evidence mapping,
//! prior weight 2. Counts decay with a half-life so a peer that behaved badly long ago is
//! not punished forever, and a peer that was good long ago is not trusted forever.

use crate::Opinion;
use crate::opinion::OpinionError;

/// Prior weight W of the evidence mapping (uniform prior over a binary frame).
const PRIOR_WEIGHT: f64 = 2.0;

/// Why evidence could not be built or used.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum EvidenceError {
    /// A count or weight is negative, NaN or infinite.
    #[error("evidence amount {0} is not a finite non-negative number")]
    BadAmount(f64),
    /// The half-life must be at least one millisecond.
    #[error("half-life must be at least 1 ms")]
    ZeroHalfLife,
    /// The base rate is not a valid opinion component.
    #[error(transparent)]
    BaseRate(#[from] OpinionError),
}

/// How fast evidence fades: a half-life in milliseconds, or no ageing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ageing {
    half_life_ms: Option<u64>,
}

impl Ageing {
    /// Evidence loses half its weight every `half_life_ms` milliseconds.
    pub fn half_life_ms(half_life_ms: u64) -> Result<Self, EvidenceError> {
        if half_life_ms == 0 {
            return Err(EvidenceError::ZeroHalfLife);
        }
        Ok(Self {
            half_life_ms: Some(half_life_ms),
        })
    }

    /// Evidence never fades (tests, and the crash check that counts reports back).
    pub fn never() -> Self {
        Self { half_life_ms: None }
    }

    /// The weight left after `elapsed_ms`: 2^(−elapsed / half-life).
    pub fn factor(&self, elapsed_ms: u64) -> f64 {
        match self.half_life_ms {
            None => 1.0,
            Some(h) => (-(elapsed_ms as f64) / (h as f64)).exp2(),
        }
    }
}

/// Aged positive/negative evidence about one peer, referenced to a point in time.
///
/// `r` and `s` are the weights as of `at_ms`; reading them at a later time applies the
/// decay for the elapsed interval. Times are caller-supplied milliseconds (any epoch, as
/// long as it is the same one throughout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    r: f64,
    s: f64,
    at_ms: u64,
}

impl Evidence {
    /// No evidence yet.
    pub fn empty(at_ms: u64) -> Self {
        Self {
            r: 0.0,
            s: 0.0,
            at_ms,
        }
    }

    /// Rebuild stored evidence (e.g. loaded from the database), checking the amounts.
    pub fn from_parts(r: f64, s: f64, at_ms: u64) -> Result<Self, EvidenceError> {
        for x in [r, s] {
            if !x.is_finite() || x < 0.0 {
                return Err(EvidenceError::BadAmount(x));
            }
        }
        Ok(Self { r, s, at_ms })
    }

    /// Stored positive weight as of [`Evidence::at_ms`].
    pub fn r(&self) -> f64 {
        self.r
    }

    /// Stored negative weight as of [`Evidence::at_ms`].
    pub fn s(&self) -> f64 {
        self.s
    }

    /// The time the stored weights refer to.
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// Add one observation of `weight` made at `at_ms`.
    ///
    /// A later observation moves the reference time forward (decaying what was there);
    /// an earlier one (reports may arrive out of order) is added already decayed.
    pub fn record(
        &mut self,
        positive: bool,
        weight: f64,
        at_ms: u64,
        ageing: Ageing,
    ) -> Result<(), EvidenceError> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(EvidenceError::BadAmount(weight));
        }
        let added = if at_ms >= self.at_ms {
            let f = ageing.factor(at_ms - self.at_ms);
            self.r *= f;
            self.s *= f;
            self.at_ms = at_ms;
            weight
        } else {
            weight * ageing.factor(self.at_ms - at_ms)
        };
        if positive {
            self.r += added;
        } else {
            self.s += added;
        }
        Ok(())
    }

    /// The (r, s) weights as seen at `now_ms` (no decay if `now_ms` is earlier).
    pub fn aged(&self, now_ms: u64, ageing: Ageing) -> (f64, f64) {
        let f = ageing.factor(now_ms.saturating_sub(self.at_ms));
        (self.r * f, self.s * f)
    }

    /// The opinion this evidence supports at `now_ms`, with base rate `base_rate`.
    pub fn opinion(
        &self,
        now_ms: u64,
        ageing: Ageing,
        base_rate: f64,
    ) -> Result<Opinion, EvidenceError> {
        let (r, s) = self.aged(now_ms, ageing);
        opinion_from_counts(r, s, base_rate)
    }
}

/// b = r/(r+s+2), d = s/(r+s+2), u = 2/(r+s+2).
fn opinion_from_counts(r: f64, s: f64, a: f64) -> Result<Opinion, EvidenceError> {
    for x in [r, s] {
        if !x.is_finite() || x < 0.0 {
            return Err(EvidenceError::BadAmount(x));
        }
    }
    let k = r + s + PRIOR_WEIGHT;
    let b = r / k;
    let d = s / k;
    // Compute u as the remainder so the sum is 1 to the last bit.
    Ok(Opinion::new(b, d, (1.0 - b - d).max(0.0), a)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() < 1e-9
    }

    #[test]
    fn mapping() {
        let mut e = Evidence::empty(0);
        let o = e.opinion(0, Ageing::never(), 0.25).expect("valid");
        assert!(close(o.uncertainty(), 1.0) && close(o.expectation(), 0.25));
        for _ in 0..8 {
            e.record(true, 1.0, 0, Ageing::never()).expect("weight ok");
        }
        e.record(false, 1.0, 0, Ageing::never()).expect("weight ok");
        let o = e.opinion(0, Ageing::never(), 0.25).expect("valid");
        assert!(close(o.belief(), 8.0 / 11.0));
        assert!(close(o.disbelief(), 1.0 / 11.0));
        assert!(close(o.uncertainty(), 2.0 / 11.0));
    }

    #[test]
    fn ageing_halves() {
        let ageing = Ageing::half_life_ms(1000).expect("non-zero");
        let mut e = Evidence::empty(0);
        e.record(true, 4.0, 0, ageing).expect("ok");
        let (r, _) = e.aged(1000, ageing);
        assert!(close(r, 2.0));
        // A later report decays the earlier ones; an earlier one is added decayed.
        e.record(true, 1.0, 2000, ageing).expect("ok");
        assert!(close(e.r(), 2.0) && e.at_ms() == 2000);
        e.record(false, 2.0, 1000, ageing).expect("ok");
        assert!(close(e.s(), 1.0));
        assert!(Ageing::half_life_ms(0).is_err());
        assert!(e.record(true, f64::NAN, 0, ageing).is_err());
        assert!(Evidence::from_parts(-1.0, 0.0, 0).is_err());
    }

    proptest! {
        #[test]
        fn more_positive_evidence_never_lowers_expectation(
            r in 0.0..1e6f64, s in 0.0..1e6f64, extra in 0.0..1e3f64, a in 0.0..=1.0f64,
        ) {
            let lo = opinion_from_counts(r, s, a).expect("valid");
            let hi = opinion_from_counts(r + extra, s, a).expect("valid");
            prop_assert!(hi.expectation() >= lo.expectation() - 1e-12);
        }

        /// Holds for queries at or after the newest evidence. (A query dated before a
        /// report — a reporter's clock ahead of the server's — can move E by ~1e-5 either
        /// way, because recording re-bases the older evidence on the newer timestamp.)
        #[test]
        fn recorded_positive_never_lowers_expectation(
            events in proptest::collection::vec((any::<bool>(), 0u64..10_000), 0..40),
            at in 0u64..10_000, later in 0u64..10_000, a in 0.0..=1.0f64,
        ) {
            let newest = events.iter().map(|(_, t)| *t).max().unwrap_or(0).max(at);
            let now = newest + later;
            let ageing = Ageing::half_life_ms(3_000).expect("non-zero");
            let mut e = Evidence::empty(0);
            for (pos, t) in events {
                e.record(pos, 1.0, t, ageing).expect("ok");
            }
            let before = e.opinion(now, ageing, a).expect("valid").expectation();
            e.record(true, 1.0, at, ageing).expect("ok");
            let after = e.opinion(now, ageing, a).expect("valid").expectation();
            prop_assert!(after >= before - 1e-12, "{before} -> {after}");
        }

        #[test]
        fn evidence_opinion_is_normalised(r in 0.0..1e12f64, s in 0.0..1e12f64) {
            let o = opinion_from_counts(r, s, 0.5).expect("valid");
            prop_assert!((o.belief() + o.disbelief() + o.uncertainty() - 1.0).abs() < 1e-9);
        }
    }
}
