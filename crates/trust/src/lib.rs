//! Subjective-logic trust for p2psip: opinions, evidence with ageing, and route ranking.
//!
//! The Secure Opinion Server (SOS) keeps one opinion per peer and, when a callee has
//! received the same `PingRequest` over several Chord routes, tells it which route is most
//! trustworthy. This crate is the arithmetic behind that answer. It is pure: no I/O, no
//! clocks, no randomness — time comes in as milliseconds passed by the caller — so the
//! simulator can rank routes in-process with exactly the numbers the server returns.
//!
//! # Model
//!
//! An [`Opinion`] ω = (b, d, u, a) holds belief, disbelief and uncertainty with
//! b + d + u = 1 and a base rate a; its expectation is E = b + a·u.
//!
//! * **Discounting** ⊗ ([`Opinion::discount`]) is Jøsang's classic operator:
//!   b = b1·b2, d = b1·d2, u = d1 + u1 + b1·u2, a = a2. A route's opinion is the chained
//!   discounting of its hops, left to right ([`route_opinion`]). Jøsang's later
//!   probability-sensitive variant (discount by E1 instead of b1) is available as
//!   [`Discounting::ProbabilitySensitive`] but is never the default: only the classic
//!   operator reproduces the paper.
//! * **Cumulative fusion** ⊕ ([`Opinion::fuse`]) combines independent opinions about the same
//!   peer; the dogmatic case u1 = u2 = 0 is handled as an equal-weight average (no NaN).
//! * **Evidence** ([`Evidence`]): r positive and s negative observations give
//!   b = r/(r+s+2), d = s/(r+s+2), u = 2/(r+s+2) (prior weight 2). Evidence ages
//!   exponentially with a configurable half-life ([`Ageing`]), so old behaviour fades back
//!   toward uncertainty.
//! * **Ranking** ([`rank_routes`]): highest expectation first; ties go to the route with
//!   fewer hops, then to the earlier candidate.
//! * **The SOS's rules** ([`OpinionBook`], [`PeerTrust`]): an administrator-set opinion
//!   overrides evidence until cleared; a peer with evidence gets the aged evidence opinion;
//!   an unknown peer gets the vacuous opinion (0, 0, 1, a), so its expectation is the base
//!   rate. The server and the simulator share these rules.
//!
//! # In-process use (the simulator)
//!
//! ```
//! use trust::{Ageing, Discounting, OpinionBook, TrustPolicy};
//! let policy = TrustPolicy::new(0.25, Ageing::half_life_ms(3_600_000)?)?;
//! let mut book = OpinionBook::new(policy);
//! for peer in [1593u128, 1609, 1618] {
//!     for _ in 0..5 {
//!         book.record(peer, true, 1_000); // delivered (time in ms, any epoch)
//!     }
//! }
//! book.record(1617, false, 1_000); // dropped
//! let ranked = book.rank(
//!     vec![vec![1593, 1617, 1618], vec![1593, 1609, 1618]],
//!     2_000,
//!     Discounting::Classic,
//! )?;
//! assert_eq!(ranked[0].route, vec![1593, 1609, 1618]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The paper's example
//!
//! Zheng & Oleshchuk give peer 1593 (0.8, 0.1, 0.1), 1600 (0.82, 0.08, 0.08),
//! 1609 (0.92, 0.04, 0.04) and 1618 (0.9, 0.05, 0.05) with a = 0.25. Route
//! 1593 ⊗ 1609 ⊗ 1618 = (0.6624, 0.0368, 0.3008) with E = 0.7376, and route 1600 ⊗ 1618 =
//! (0.738, 0.041, 0.221), which ranks first. Two remarks, both checked by the tests in
//! [`paper`]:
//!
//! * 1600's printed triple sums to 0.98, not 1. The paper's own result u = 0.221 for the
//!   second route only comes out with u = 1 − b − d = 0.10, so we use (0.82, 0.08, 0.10).
//! * The paper prints E = 0.764 for route 1600 ⊗ 1618. With a = 0.25 the expectation is
//!   0.738 + 0.25 · 0.221 = 0.79325; 0.764 would need a ≈ 0.118 (and even the unnormalised
//!   u = 0.201 gives 0.78825). The printed 0.764 cannot come from a = 0.25; it is a typo in
//!   the paper. The ranking is the same either way.
#![warn(missing_docs, unreachable_pub)]

mod book;
mod evidence;
mod opinion;
pub mod paper;
mod route;

pub use book::{
    LIAR_MAX_UNCERTAINTY, OpinionBook, OpinionSource, PROVEN_VIEW_MAX_UNCERTAINTY, PeerTrust,
    Referred, TrustPolicy, judge_report,
};
pub use evidence::{Ageing, Evidence, EvidenceError};
pub use opinion::{Discounting, NORMALISATION_TOLERANCE, Opinion, OpinionError};
pub use route::{RankedRoute, RouteError, rank_routes, route_opinion};
