//! Route opinions and ranking: the answer the SOS gives a callee.

use crate::{Discounting, Opinion};
use serde::Serialize;

/// Why a route could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route must have at least one hop.
    #[error("route {index} is empty")]
    EmptyRoute {
        /// Position of the route among the candidates.
        index: usize,
    },
}

/// One candidate route after evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedRoute<P> {
    /// The hops as given.
    pub route: Vec<P>,
    /// The chained-discounting opinion of the whole route.
    pub opinion: Opinion,
    /// E = b + a·u of [`RankedRoute::opinion`].
    pub expectation: f64,
    /// Position among the candidates as submitted (ties keep this order).
    pub index: usize,
}

/// Chained discounting of the hop opinions, left to right: ω1 ⊗ ω2 ⊗ … ⊗ ωn.
///
/// Returns `None` for an empty route.
pub fn route_opinion<'a, I>(hops: I, mode: Discounting) -> Option<Opinion>
where
    I: IntoIterator<Item = &'a Opinion>,
{
    let mut hops = hops.into_iter();
    let first = *hops.next()?;
    Some(hops.fold(first, |acc, next| acc.discount_with(next, mode)))
}

/// Evaluate and rank candidate routes, best first.
///
/// `opinion_of` supplies the current opinion of each peer (the SOS passes its database
/// lookup; the simulator can pass a map). Order: highest expectation first, then fewer
/// hops, then earlier candidate — a total, deterministic order.
pub fn rank_routes<P, F>(
    routes: Vec<Vec<P>>,
    mut opinion_of: F,
    mode: Discounting,
) -> Result<Vec<RankedRoute<P>>, RouteError>
where
    F: FnMut(&P) -> Opinion,
{
    let mut ranked = Vec::with_capacity(routes.len());
    for (index, route) in routes.into_iter().enumerate() {
        let mut iter = route.iter();
        let first = iter.next().ok_or(RouteError::EmptyRoute { index })?;
        let opinion = iter.fold(opinion_of(first), |acc, hop| {
            acc.discount_with(&opinion_of(hop), mode)
        });
        ranked.push(RankedRoute {
            expectation: opinion.expectation(),
            opinion,
            route,
            index,
        });
    }
    ranked.sort_by(|x, y| {
        y.expectation
            .total_cmp(&x.expectation)
            .then(x.route.len().cmp(&y.route.len()))
            .then(x.index.cmp(&y.index))
    });
    Ok(ranked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_prefer_fewer_hops_then_order() {
        let one = Opinion::new(1.0, 0.0, 0.0, 0.5).expect("valid");
        let ranked = rank_routes(
            vec![vec![1, 2, 3], vec![4], vec![5, 6], vec![7]],
            |_| one,
            Discounting::Classic,
        )
        .expect("non-empty");
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![1, 3, 2, 0]);
    }

    #[test]
    fn empty_route_is_an_error() {
        let one = Opinion::vacuous(0.5).expect("valid");
        let err = rank_routes(vec![vec![1u32], vec![]], |_| one, Discounting::Classic);
        assert_eq!(err, Err(RouteError::EmptyRoute { index: 1 }));
        assert!(route_opinion(&[], Discounting::Classic).is_none());
    }
}
