//! The paper's worked example (Zheng & Oleshchuk, Section 4), as data and as a check.
//!
//! Used by the unit tests, by `p2psip sos check-paper`, and by anyone who wants to see the
//! numbers. See the crate documentation for why peer 1600 is (0.82, 0.08, 0.10) and why the
//! paper's printed E = 0.764 is a typo.

use crate::{Discounting, Opinion, RankedRoute, rank_routes};

/// The base rate the paper's example uses.
pub const BASE_RATE: f64 = 0.25;

/// The expectation the paper prints for route 1600 → 1618 (cannot come from a = 0.25).
pub const PRINTED_EXPECTATION_1600_1618: f64 = 0.764;

/// The paper's opinions: (peer, b, d, u). 1600's u is 1 − b − d (the paper prints 0.08,
/// which does not sum to 1).
pub const OPINIONS: [(u128, f64, f64, f64); 4] = [
    (1593, 0.8, 0.1, 0.1),
    (1600, 0.82, 0.08, 0.10),
    (1609, 0.92, 0.04, 0.04),
    (1618, 0.9, 0.05, 0.05),
];

/// The two candidate routes to callee 1618 in the paper's scenario.
pub fn routes() -> Vec<Vec<u128>> {
    vec![vec![1593, 1609, 1618], vec![1600, 1618]]
}

/// The paper's opinion of `peer`, or the vacuous opinion for any other peer.
pub fn opinion_of(peer: u128) -> Opinion {
    OPINIONS
        .iter()
        .find(|(p, ..)| *p == peer)
        .and_then(|&(_, b, d, u)| Opinion::new(b, d, u, BASE_RATE).ok())
        .unwrap_or(VACUOUS)
}

const VACUOUS: Opinion = Opinion::vacuous_unchecked(BASE_RATE);

/// Rank the paper's two routes with the classic operator.
pub fn rank() -> Vec<RankedRoute<u128>> {
    // Both routes are non-empty, so ranking cannot fail; fall back to nothing if it did.
    rank_routes(routes(), |p| opinion_of(*p), Discounting::Classic).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() < 1e-9
    }

    #[test]
    fn paper_check() {
        let ranked = rank();
        assert_eq!(ranked.len(), 2);
        let best = &ranked[0];
        assert_eq!(best.route, vec![1600, 1618]);
        assert!(close(best.opinion.belief(), 0.738));
        assert!(close(best.opinion.disbelief(), 0.041));
        assert!(close(best.opinion.uncertainty(), 0.221));
        assert!(close(best.expectation, 0.79325));

        let second = &ranked[1];
        assert_eq!(second.route, vec![1593, 1609, 1618]);
        assert!(close(second.opinion.belief(), 0.6624));
        assert!(close(second.opinion.disbelief(), 0.0368));
        assert!(close(second.opinion.uncertainty(), 0.3008));
        assert!(close(second.expectation, 0.7376));
    }

    #[test]
    fn printed_expectation_is_a_typo() {
        // The paper's 0.764 is not b + 0.25·u for the paper's own route opinion.
        let best = &rank()[0];
        assert!((best.expectation - PRINTED_EXPECTATION_1600_1618).abs() > 0.02);
        // The base rate it would need:
        let a = (PRINTED_EXPECTATION_1600_1618 - 0.738) / 0.221;
        assert!((a - 0.1176).abs() < 1e-3);
        // Even with the unnormalised u = 0.201 the expectation is 0.78825, not 0.764.
        assert!(close(0.738 + 0.25 * 0.201, 0.78825));
        // And 1600's printed triple is not an opinion at all.
        assert!(Opinion::new(0.82, 0.08, 0.08, BASE_RATE).is_err());
    }

    #[test]
    fn probability_sensitive_gives_other_numbers() {
        let ps = rank_routes(
            routes(),
            |p| opinion_of(*p),
            Discounting::ProbabilitySensitive,
        )
        .expect("non-empty");
        assert!(ps.iter().all(|r| !close(r.opinion.belief(), 0.738)));
    }
}
