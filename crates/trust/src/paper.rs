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

/// What the paper's ranking must produce, best first: (route, b, d, u, E). The best route's
/// E is 0.79325, not the printed [`PRINTED_EXPECTATION_1600_1618`].
pub const EXPECTED: [(&[u128], f64, f64, f64, f64); 2] = [
    (&[1600, 1618], 0.738, 0.041, 0.221, 0.79325),
    (&[1593, 1609, 1618], 0.6624, 0.0368, 0.3008, 0.7376),
];

/// Whether the route ranked at `place` (0 = best) is the paper's, with its opinion and
/// expectation to within 1e-9: the check `p2psip sos check-paper` and the tests make.
pub fn matches(place: usize, route: &[u128], opinion: &Opinion, expectation: f64) -> bool {
    EXPECTED.get(place).is_some_and(|&(r, b, d, u, e)| {
        route == r
            && close(opinion.belief(), b)
            && close(opinion.disbelief(), d)
            && close(opinion.uncertainty(), u)
            && close(expectation, e)
    })
}

fn close(x: f64, y: f64) -> bool {
    (x - y).abs() < 1e-9
}

/// Rank the paper's two routes with the classic operator.
pub fn rank() -> Vec<RankedRoute<u128>> {
    // Both routes are non-empty, so ranking cannot fail; fall back to nothing if it did.
    rank_routes(routes(), |p| opinion_of(*p), Discounting::Classic).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_check() {
        let ranked = rank();
        assert_eq!(ranked.len(), EXPECTED.len());
        assert_eq!(ranked[0].route, vec![1600, 1618]);
        for (i, r) in ranked.iter().enumerate() {
            assert!(
                matches(i, &r.route, &r.opinion, r.expectation),
                "{i}: {r:?}"
            );
        }
        // A number off by more than the tolerance is no match.
        let best = &ranked[0];
        assert!(!matches(
            0,
            &best.route,
            &best.opinion,
            best.expectation + 1e-6
        ));
        assert!(!matches(1, &best.route, &best.opinion, best.expectation));
        assert!(!matches(2, &best.route, &best.opinion, best.expectation));
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
