//! Node-ID assignment inside a layer's arc: location-aware (Hilbert) or classic SHA-1.
//!
//! **Location-aware.** The arc of `len` IDs is cut into `4^k` equal cells, with
//! `k = min(16, ⌊log2(len) / 2⌋)` (so every cell holds at least one ID; for m = 128 that is
//! a 2^16 × 2^16 grid and about 2^94 IDs per cell; for the paper's m = 11 and thirds it is
//! a 16 × 16 grid and 2 IDs per cell). Longitude maps to the grid's x and latitude to y,
//! linearly (equirectangular); the cell's Hilbert index picks the cell, i.e. the high bits
//! of the offset in the arc, and the low bits (position inside the cell) are random.
//!
//! **By network prefix** (no location given): the request's source address is cut to its
//! /24 (IPv4) or /48 (IPv6) prefix, SHA-256 of the prefix bytes picks a Hilbert index
//! (uniform over the cells), then the same placement. Peers on one network get IDs in
//! one cell; different networks are not placed by geography — no geo-IP database is used.
//!
//! **SHA-1** (`--id-scheme sha1`): the first 128 bits of SHA-1 over the peer's
//! SubjectPublicKeyInfo (followed by a 4-byte attempt counter on retries), reduced modulo
//! the arc length and added to the arc start.
//!
//! Uniqueness is the caller's: [`choose_unique`] draws candidates a few times and then
//! probes clockwise for a free ID (needed only in tiny spaces such as m = 11).

use crate::hilbert;
use crate::layer::LayerArc;
use overlay::{IdSpace, NodeId};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How the server turns a request into a Node-ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdScheme {
    /// Hilbert-curve placement of the location (or network prefix), random low bits.
    #[default]
    Location,
    /// SHA-1 of the public key, reduced to the arc (classic Chord).
    Sha1,
}

impl std::str::FromStr for IdScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "location" => Ok(IdScheme::Location),
            "sha1" => Ok(IdScheme::Sha1),
            other => Err(format!("unknown id scheme {other:?} (location, sha1)")),
        }
    }
}

/// Hilbert order used for an arc of `len` IDs: `min(16, ⌊log2(len)/2⌋)`.
pub fn curve_order(len: u128) -> u32 {
    if len == 0 {
        return 0;
    }
    ((127 - len.leading_zeros()) / 2).min(16)
}

/// Grid cell of a (lat, lon) on a `2^order` square grid (x from longitude, y from latitude).
fn cell(order: u32, lat: f64, lon: f64) -> (u64, u64) {
    let n = 1u64 << order;
    let scale = |v: f64, lo: f64, span: f64| -> u64 {
        let f = ((v - lo) / span).clamp(0.0, 1.0);
        // `as` saturates; clamp keeps the top edge in the last cell.
        ((f * n as f64) as u64).min(n - 1)
    };
    (scale(lon, -180.0, 360.0), scale(lat, -90.0, 180.0))
}

/// Place cell index `d` (< 4^order) in the arc with random low bits.
fn place<R: Rng + ?Sized>(
    space: IdSpace,
    arc: LayerArc,
    order: u32,
    d: u64,
    rng: &mut R,
) -> NodeId {
    let cells = 1u128 << (2 * order);
    let width = (arc.len / cells).max(1);
    let base = u128::from(d) * width;
    let low = rng.random_range(0..width);
    arc.at(space, (base + low).min(arc.len - 1))
}

/// The Hilbert index of a location on the curve used for `arc`.
pub fn location_cell(arc: LayerArc, lat: f64, lon: f64) -> u64 {
    let order = curve_order(arc.len);
    let (x, y) = cell(order, lat, lon);
    hilbert::index(order, x, y)
}

/// Location-aware Node-ID: Hilbert cell of (lat, lon) as the high bits inside `arc`,
/// random low bits from `rng`. Latitude/longitude are clamped to their ranges.
pub fn assign_location_id<R: Rng + ?Sized>(
    space: IdSpace,
    arc: LayerArc,
    lat: f64,
    lon: f64,
    rng: &mut R,
) -> NodeId {
    let order = curve_order(arc.len);
    let d = location_cell(arc, lat, lon);
    place(space, arc, order, d, rng)
}

/// The network prefix used when a peer gives no location: /24 for IPv4 (IPv4-mapped IPv6
/// included), /48 for IPv6.
pub fn network_prefix(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..3].to_vec(),
            None => v6.octets()[..6].to_vec(),
        },
    }
}

/// Node-ID from the source address's network prefix (module doc).
pub fn assign_prefix_id<R: Rng + ?Sized>(
    space: IdSpace,
    arc: LayerArc,
    ip: IpAddr,
    rng: &mut R,
) -> NodeId {
    let order = curve_order(arc.len);
    let digest = ring::digest::digest(&ring::digest::SHA256, &network_prefix(ip));
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    let cells = 1u128 << (2 * order);
    let d = (u128::from(u64::from_be_bytes(b)) % cells) as u64;
    place(space, arc, order, d, rng)
}

/// Classic hashed Node-ID: SHA-1 of `public_key` (DER SubjectPublicKeyInfo, or any key
/// bytes) and, when `attempt > 0`, the attempt counter; reduced into `arc`.
pub fn assign_sha1_id(space: IdSpace, arc: LayerArc, public_key: &[u8], attempt: u32) -> NodeId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(public_key);
    if attempt > 0 {
        ctx.update(&attempt.to_be_bytes());
    }
    let digest = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    arc.at(space, u128::from_be_bytes(b) % arc.len)
}

/// How many fresh candidates [`choose_unique`] draws before probing.
pub const CANDIDATE_TRIES: u32 = 8;
/// How many IDs [`choose_unique`] probes clockwise before giving up.
pub const PROBE_LIMIT: u128 = 4096;

/// Pick a free ID: try `candidate(attempt)` for attempts `0..CANDIDATE_TRIES`, then probe
/// clockwise inside `arc` from the last candidate. `taken` says whether an ID is in use.
/// Returns `Ok(None)` when no free ID was found (arc full or crowded).
pub fn choose_unique<E>(
    space: IdSpace,
    arc: LayerArc,
    mut candidate: impl FnMut(u32) -> NodeId,
    mut taken: impl FnMut(NodeId) -> Result<bool, E>,
) -> Result<Option<NodeId>, E> {
    let mut last = arc.start;
    for attempt in 0..CANDIDATE_TRIES {
        let id = candidate(attempt);
        if !taken(id)? {
            return Ok(Some(id));
        }
        last = id;
    }
    let from = space.distance(arc.start, last);
    for step in 1..=PROBE_LIMIT.min(arc.len) {
        let id = arc.at(space, (from + step) % arc.len);
        if !taken(id)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Layer, LayerArcs};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    #[test]
    fn curve_orders() {
        assert_eq!(curve_order(682), 4);
        assert_eq!(curve_order(1 << 126), 16);
        assert_eq!(curve_order(1), 0);
        assert_eq!(curve_order(3), 0);
        assert_eq!(curve_order(4), 1);
    }

    #[test]
    fn close_cities_get_close_ids() {
        let s = IdSpace::new(128).unwrap();
        let arc = LayerArcs::thirds(s).unwrap().arc(Layer::TWO);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let oslo = assign_location_id(s, arc, 59.91, 10.75, &mut rng);
        let oslo2 = assign_location_id(s, arc, 59.95, 10.70, &mut rng);
        let sydney = assign_location_id(s, arc, -33.87, 151.21, &mut rng);
        let near = s.distance(oslo, oslo2).min(s.distance(oslo2, oslo));
        let far = s.distance(oslo, sydney).min(s.distance(sydney, oslo));
        assert!(near < far / 1000, "near {near} far {far}");
    }

    #[test]
    fn prefix_ids_share_a_cell() {
        let s = IdSpace::new(128).unwrap();
        let arc = LayerArcs::thirds(s).unwrap().arc(Layer::ONE);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let a = assign_prefix_id(s, arc, "192.0.2.10".parse().unwrap(), &mut rng);
        let b = assign_prefix_id(s, arc, "192.0.2.200".parse().unwrap(), &mut rng);
        let width = arc.len >> 32;
        assert_eq!(a.0 / width, b.0 / width);
        assert_eq!(
            network_prefix("::ffff:192.0.2.1".parse().unwrap()),
            vec![192, 0, 2]
        );
        assert_eq!(network_prefix("2001:db8:1:2::1".parse().unwrap()).len(), 6);
    }

    #[test]
    fn unique_in_the_paper_space() {
        let s = IdSpace::new(11).unwrap();
        let arc = LayerArcs::thirds(s).unwrap().arc(Layer::THREE);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut used = BTreeSet::new();
        // Fill the whole arc from one city: probing must find every free slot.
        for _ in 0..arc.len {
            let id = choose_unique::<Infallible>(
                s,
                arc,
                |_| assign_location_id(s, arc, 59.9, 10.7, &mut rng),
                |id| Ok(used.contains(&id)),
            )
            .unwrap()
            .expect("a free id");
            assert!(arc.contains(s, id));
            assert!(used.insert(id));
        }
        let full = choose_unique::<Infallible>(
            s,
            arc,
            |_| assign_location_id(s, arc, 0.0, 0.0, &mut rng),
            |id| Ok(used.contains(&id)),
        );
        assert_eq!(full, Ok(None));
    }

    proptest! {
        #[test]
        fn ids_stay_in_their_arc(bits in 2u32..=128, lat in -90.0f64..=90.0, lon in -180.0f64..=180.0,
                                 seed: u64, key: Vec<u8>, attempt: u32) {
            let s = IdSpace::new(bits).unwrap();
            let arcs = LayerArcs::thirds(s).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for l in 1..=3 {
                let layer = Layer::new(l).unwrap();
                let arc = arcs.arc(layer);
                let id = assign_location_id(s, arc, lat, lon, &mut rng);
                prop_assert_eq!(arcs.layer_of(id), layer);
                let id = assign_sha1_id(s, arc, &key, attempt);
                prop_assert_eq!(arcs.layer_of(id), layer);
                let id = assign_prefix_id(s, arc, IpAddr::from([10, 1, 2, 3]), &mut rng);
                prop_assert_eq!(arcs.layer_of(id), layer);
            }
        }
    }
}
