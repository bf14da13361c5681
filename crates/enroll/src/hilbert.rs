//! The Hilbert curve: a locality-preserving map from a 2^k × 2^k grid to `0..4^k`.
//!
//! Consecutive curve indices are always grid neighbours, and most grid neighbours have
//! close indices, which is what makes geographically close peers get close Node-IDs.

/// Curve index of cell `(x, y)` on a `2^order × 2^order` grid (`order ≤ 31`).
///
/// Coordinates are masked to `order` bits. Iterative form: at each level take the quadrant
/// from the top bits, add its base index, then rotate/flip the sub-square so the curve's
/// entry and exit line up with the next level.
pub fn index(order: u32, x: u64, y: u64) -> u64 {
    let order = order.min(31);
    if order == 0 {
        return 0;
    }
    let n = 1u64 << order;
    let (mut x, mut y) = (x & (n - 1), y & (n - 1));
    let mut d = 0u64;
    let mut s = n / 2;
    while s > 0 {
        let rx = u64::from(x & s != 0);
        let ry = u64::from(y & s != 0);
        d += s * s * ((3 * rx) ^ ry);
        // Rotate the quadrant into the canonical orientation.
        if ry == 0 {
            if rx == 1 {
                x = s - 1 - (x & (s - 1));
                y = s - 1 - (y & (s - 1));
            }
            std::mem::swap(&mut x, &mut y);
        }
        x &= s - 1;
        y &= s - 1;
        s /= 2;
    }
    d
}

/// Inverse of [`index`]: the cell `(x, y)` at curve index `d`.
pub fn point(order: u32, d: u64) -> (u64, u64) {
    let order = order.min(31);
    let n = 1u64 << order;
    let (mut x, mut y) = (0u64, 0u64);
    let mut t = d;
    let mut s = 1u64;
    while s < n {
        let rx = 1 & (t / 2);
        let ry = 1 & (t ^ rx);
        if ry == 0 {
            if rx == 1 {
                x = s - 1 - x;
                y = s - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        x += s * rx;
        y += s * ry;
        t /= 4;
        s *= 2;
    }
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn order_one_is_a_u() {
        let cells: Vec<(u64, u64)> = (0..4).map(|d| point(1, d)).collect();
        assert_eq!(cells, vec![(0, 0), (0, 1), (1, 1), (1, 0)]);
    }

    #[test]
    fn bijection_and_adjacency_small_orders() {
        for order in 1..=5u32 {
            let n = 1u64 << order;
            let mut seen = vec![false; (n * n) as usize];
            for x in 0..n {
                for y in 0..n {
                    let d = index(order, x, y);
                    assert!(d < n * n);
                    assert!(!seen[d as usize]);
                    seen[d as usize] = true;
                    assert_eq!(point(order, d), (x, y));
                }
            }
            for d in 1..n * n {
                let (a, b) = (point(order, d - 1), point(order, d));
                assert_eq!(
                    a.0.abs_diff(b.0) + a.1.abs_diff(b.1),
                    1,
                    "order {order} d {d}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(order in 1u32..=31, x: u64, y: u64) {
            let n = 1u64 << order;
            let (x, y) = (x % n, y % n);
            prop_assert_eq!(point(order, index(order, x, y)), (x, y));
        }

        #[test]
        fn consecutive_are_neighbours(order in 1u32..=31, d: u64) {
            let d = d % ((1u64 << (2 * order)) - 1);
            let (a, b) = (point(order, d), point(order, d + 1));
            prop_assert_eq!(a.0.abs_diff(b.0) + a.1.abs_diff(b.1), 1);
        }
    }
}
