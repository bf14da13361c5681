//! The opinion value type and the two operators the SOS needs: discounting and fusion.

use serde::{Deserialize, Serialize};

/// How far b + d + u may stray from 1 before [`Opinion::new`] rejects it.
pub const NORMALISATION_TOLERANCE: f64 = 1e-9;

/// Why a candidate opinion was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum OpinionError {
    /// A component is NaN or infinite.
    #[error("opinion component {name} is not a finite number")]
    NotFinite {
        /// Which component (`b`, `d`, `u` or `a`).
        name: &'static str,
    },
    /// A component lies outside [0, 1].
    #[error("opinion component {name} = {value} is outside [0, 1]")]
    OutOfRange {
        /// Which component (`b`, `d`, `u` or `a`).
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// b + d + u differs from 1 by more than [`NORMALISATION_TOLERANCE`].
    #[error("b + d + u = {sum}, expected 1 (within 1e-9)")]
    NotNormalised {
        /// The sum that was found.
        sum: f64,
    },
}

/// Which discounting operator to use along a route.
///
/// The classic operator is the one the paper (and `DESIGN.md`) uses; the other exists so
/// evaluations can show the difference, never as a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discounting {
    /// Jøsang's classic discounting: b = b1·b2, d = b1·d2, u = d1 + u1 + b1·u2.
    #[default]
    Classic,
    /// Jøsang's probability-sensitive discounting: weight the second opinion by E1 instead
    /// of b1 (b = E1·b2, d = E1·d2, u = 1 − E1·(b2 + d2)).
    ProbabilitySensitive,
}

/// A subjective-logic opinion ω = (b, d, u, a) about a peer.
///
/// Always valid: every constructor checks each component lies in [0, 1] and that
/// b + d + u = 1 within [`NORMALISATION_TOLERANCE`]; operators renormalise their results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Opinion {
    b: f64,
    d: f64,
    u: f64,
    a: f64,
}

impl Opinion {
    /// Build a validated opinion.
    pub fn new(b: f64, d: f64, u: f64, a: f64) -> Result<Self, OpinionError> {
        for (name, value) in [("b", b), ("d", d), ("u", u), ("a", a)] {
            if !value.is_finite() {
                return Err(OpinionError::NotFinite { name });
            }
            if !(0.0..=1.0).contains(&value) {
                return Err(OpinionError::OutOfRange { name, value });
            }
        }
        let sum = b + d + u;
        if (sum - 1.0).abs() > NORMALISATION_TOLERANCE {
            return Err(OpinionError::NotNormalised { sum });
        }
        Ok(Self { b, d, u, a })
    }

    /// Build an opinion from belief and disbelief, with u = 1 − b − d (how the paper's
    /// 1600 = (0.82, 0.08, ·) is read).
    pub fn from_belief_disbelief(b: f64, d: f64, a: f64) -> Result<Self, OpinionError> {
        Self::new(b, d, 1.0 - b - d, a)
    }

    /// The vacuous opinion (0, 0, 1, a): total ignorance, E = a. What the SOS answers for a
    /// peer it has never heard of.
    pub fn vacuous(a: f64) -> Result<Self, OpinionError> {
        Self::new(0.0, 0.0, 1.0, a)
    }

    /// Vacuous opinion for a base rate known at compile time to lie in [0, 1].
    pub(crate) const fn vacuous_unchecked(a: f64) -> Self {
        Self {
            b: 0.0,
            d: 0.0,
            u: 1.0,
            a,
        }
    }

    /// Belief b.
    pub fn belief(&self) -> f64 {
        self.b
    }

    /// Disbelief d.
    pub fn disbelief(&self) -> f64 {
        self.d
    }

    /// Uncertainty u.
    pub fn uncertainty(&self) -> f64 {
        self.u
    }

    /// Base rate a.
    pub fn base_rate(&self) -> f64 {
        self.a
    }

    /// Expectation E = b + a·u: the probability used to rank.
    pub fn expectation(&self) -> f64 {
        self.b + self.a * self.u
    }

    /// Discount `other` through `self` with the classic operator (ω1 ⊗ ω2).
    ///
    /// b = b1·b2, d = b1·d2, u = d1 + u1 + b1·u2, a = a2.
    pub fn discount(&self, other: &Opinion) -> Opinion {
        self.discount_with(other, Discounting::Classic)
    }

    /// How much of a second opinion survives discounting through this one: b under the
    /// classic operator, E under the probability-sensitive one. The SOS weighs a reporter's
    /// evidence by it, so a peer's word counts as much as the peer is trusted.
    pub fn discount_weight(&self, mode: Discounting) -> f64 {
        match mode {
            Discounting::Classic => self.b,
            Discounting::ProbabilitySensitive => self.expectation(),
        }
    }

    /// Discount `other` through `self` with the chosen operator.
    pub fn discount_with(&self, other: &Opinion, mode: Discounting) -> Opinion {
        let w = self.discount_weight(mode);
        let b = w * other.b;
        let d = w * other.d;
        // Classic: d1 + u1 + b1·u2 = 1 − b1·(b2 + d2); the second form is the same number
        // and generalises to the probability-sensitive weight.
        let u = 1.0 - w * (other.b + other.d);
        Self::normalised(b, d, u, other.a)
    }

    /// Cumulative fusion ω1 ⊕ ω2 of two independent opinions about the same peer.
    ///
    /// With k = u1 + u2 − u1·u2 > 0: b = (b1·u2 + b2·u1)/k, d = (d1·u2 + d2·u1)/k,
    /// u = u1·u2/k. When both are dogmatic (u1 = u2 = 0, so k = 0) the result is the
    /// equal-weight average, the limit Jøsang gives for that case. The base rate is
    /// (a1·u2 + a2·u1 − (a1 + a2)·u1·u2)/(u1 + u2 − 2·u1·u2), or the average of the two
    /// when that denominator vanishes.
    pub fn fuse(&self, other: &Opinion) -> Opinion {
        let (u1, u2) = (self.u, other.u);
        let nb = self.b * u2 + other.b * u1;
        let nd = self.d * u2 + other.d * u1;
        let nu = u1 * u2;
        let k = nb + nd + nu; // equals u1 + u2 − u1·u2, but summed so the result is normalised
        let a_den = u1 + u2 - 2.0 * u1 * u2;
        let a = if a_den > f64::MIN_POSITIVE {
            (self.a * u2 + other.a * u1 - (self.a + other.a) * u1 * u2) / a_den
        } else {
            (self.a + other.a) / 2.0
        };
        if k > f64::MIN_POSITIVE {
            Self::normalised(nb / k, nd / k, nu / k, a)
        } else {
            Self::normalised((self.b + other.b) / 2.0, (self.d + other.d) / 2.0, 0.0, a)
        }
    }

    /// Clamp and renormalise the output of an operator; inputs are valid opinions, so this
    /// only removes rounding drift.
    fn normalised(b: f64, d: f64, u: f64, a: f64) -> Opinion {
        let clamp = |x: f64| {
            if x.is_finite() {
                x.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let (b, d, u, a) = (clamp(b), clamp(d), clamp(u), clamp(a));
        let sum = b + d + u;
        if sum > f64::MIN_POSITIVE {
            Opinion {
                b: b / sum,
                d: d / sum,
                u: u / sum,
                a,
            }
        } else {
            Opinion {
                b: 0.0,
                d: 0.0,
                u: 1.0,
                a,
            }
        }
    }
}

/// Wire form used by [`Opinion`]'s `Deserialize`: fields checked by [`Opinion::new`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpinion {
    b: f64,
    d: f64,
    u: f64,
    a: f64,
}

impl<'de> Deserialize<'de> for Opinion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawOpinion::deserialize(deserializer)?;
        Opinion::new(raw.b, raw.d, raw.u, raw.a).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EPS: f64 = 1e-9;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() < 1e-9
    }

    fn op(b: f64, d: f64, u: f64, a: f64) -> Opinion {
        Opinion::new(b, d, u, a).expect("test opinion is valid")
    }

    /// Any valid opinion, including the corners (dogmatic, vacuous, absolute).
    fn opinion() -> impl Strategy<Value = Opinion> {
        let corner = prop_oneof![
            Just((1.0, 0.0, 0.0)),
            Just((0.0, 1.0, 0.0)),
            Just((0.0, 0.0, 1.0)),
            Just((0.5, 0.5, 0.0)),
        ];
        let general = (0.0..=1.0f64, 0.0..=1.0f64).prop_map(|(x, y)| {
            let b = x;
            let d = (1.0 - b) * y;
            (b, d, 1.0 - b - d)
        });
        (prop_oneof![1 => corner, 9 => general], 0.0..=1.0f64)
            .prop_map(|((b, d, u), a)| op(b, d, u, a))
    }

    fn sum_ok(o: &Opinion) -> bool {
        (o.b + o.d + o.u - 1.0).abs() < EPS
            && [o.b, o.d, o.u, o.a].iter().all(|x| (0.0..=1.0).contains(x))
    }

    #[test]
    fn rejects_bad_opinions() {
        assert!(matches!(
            Opinion::new(0.82, 0.08, 0.08, 0.25),
            Err(OpinionError::NotNormalised { .. })
        ));
        assert!(matches!(
            Opinion::new(1.2, -0.2, 0.0, 0.5),
            Err(OpinionError::OutOfRange { name: "b", .. })
        ));
        assert!(matches!(
            Opinion::new(f64::NAN, 0.0, 1.0, 0.5),
            Err(OpinionError::NotFinite { name: "b" })
        ));
        assert!(matches!(
            Opinion::new(0.0, 0.0, 1.0, 1.5),
            Err(OpinionError::OutOfRange { name: "a", .. })
        ));
        assert!(Opinion::from_belief_disbelief(0.82, 0.08, 0.25).is_ok());
    }

    #[test]
    fn serde_validates() {
        let ok: Opinion =
            serde_json_like(r#"{"b":0.8,"d":0.1,"u":0.1,"a":0.25}"#).expect("valid opinion");
        assert!(close(ok.expectation(), 0.825));
        assert!(serde_json_like(r#"{"b":0.8,"d":0.1,"u":0.2,"a":0.25}"#).is_none());
        assert!(serde_json_like(r#"{"b":0.8,"d":0.1,"u":0.1,"a":0.25,"x":1}"#).is_none());
    }

    /// Tiny JSON reader for the test above, so `trust` needs no JSON dependency: the
    /// `sos` crate tests the real JSON path.
    fn serde_json_like(s: &str) -> Option<Opinion> {
        use serde::de::value::{Error, MapDeserializer};
        let body = s.trim().trim_start_matches('{').trim_end_matches('}');
        let mut pairs = Vec::new();
        for part in body.split(',') {
            let (k, v) = part.split_once(':')?;
            pairs.push((
                k.trim().trim_matches('"').to_string(),
                v.trim().parse::<f64>().ok()?,
            ));
        }
        let de: MapDeserializer<'_, _, Error> = MapDeserializer::new(pairs.into_iter());
        Opinion::deserialize(de).ok()
    }

    #[test]
    fn discount_matches_formula() {
        let x = op(0.8, 0.1, 0.1, 0.25);
        let y = op(0.92, 0.04, 0.04, 0.25);
        let z = x.discount(&y);
        assert!(close(z.b, 0.736) && close(z.d, 0.032) && close(z.u, 0.232));
    }

    #[test]
    fn probability_sensitive_differs() {
        let x = op(0.8, 0.1, 0.1, 0.25);
        let y = op(0.92, 0.04, 0.04, 0.25);
        let z = x.discount_with(&y, Discounting::ProbabilitySensitive);
        // E1 = 0.825
        assert!(close(z.b, 0.825 * 0.92) && close(z.d, 0.825 * 0.04));
        assert!(sum_ok(&z));
    }

    #[test]
    fn fusion_dogmatic_is_average_without_nan() {
        let x = op(1.0, 0.0, 0.0, 0.2);
        let y = op(0.0, 1.0, 0.0, 0.6);
        let z = x.fuse(&y);
        assert!(close(z.b, 0.5) && close(z.d, 0.5) && close(z.u, 0.0) && close(z.a, 0.4));
        let v = Opinion::vacuous(0.3).expect("valid");
        let w = v.fuse(&v);
        assert!(close(w.u, 1.0) && close(w.a, 0.3));
    }

    #[test]
    fn fusion_equals_evidence_addition() {
        // Fusing the opinions of two independent evidence sets equals the opinion of the
        // summed evidence: the defining property of cumulative fusion.
        let e = |r: f64, s: f64| {
            let k = r + s + 2.0;
            op(r / k, s / k, 2.0 / k, 0.5)
        };
        let z = e(3.0, 1.0).fuse(&e(5.0, 2.0));
        let want = e(8.0, 3.0);
        assert!(close(z.b, want.b) && close(z.d, want.d) && close(z.u, want.u));
    }

    #[test]
    fn vacuous_is_fusion_identity() {
        let x = op(0.6, 0.3, 0.1, 0.4);
        let z = x.fuse(&Opinion::vacuous(0.4).expect("valid"));
        assert!(close(z.b, 0.6) && close(z.d, 0.3) && close(z.u, 0.1));
    }

    proptest! {
        #[test]
        fn discount_stays_normalised(x in opinion(), y in opinion()) {
            prop_assert!(sum_ok(&x.discount(&y)));
            prop_assert!(sum_ok(&x.discount_with(&y, Discounting::ProbabilitySensitive)));
        }

        #[test]
        fn fuse_stays_normalised(x in opinion(), y in opinion()) {
            prop_assert!(sum_ok(&x.fuse(&y)));
        }

        #[test]
        fn discount_is_associative(x in opinion(), y in opinion(), z in opinion()) {
            let left = x.discount(&y).discount(&z);
            let right = x.discount(&y.discount(&z));
            prop_assert!(close(left.b, right.b), "b {} vs {}", left.b, right.b);
            prop_assert!(close(left.d, right.d), "d {} vs {}", left.d, right.d);
            prop_assert!(close(left.u, right.u), "u {} vs {}", left.u, right.u);
            prop_assert!(close(left.a, right.a));
        }

        #[test]
        fn fuse_is_commutative(x in opinion(), y in opinion()) {
            let l = x.fuse(&y);
            let r = y.fuse(&x);
            prop_assert!(close(l.b, r.b) && close(l.d, r.d) && close(l.u, r.u) && close(l.a, r.a));
        }

        #[test]
        fn discount_never_raises_belief(x in opinion(), y in opinion()) {
            // Trust through an intermediary can only add uncertainty, never belief.
            prop_assert!(x.discount(&y).b <= y.b + EPS);
        }
    }
}
