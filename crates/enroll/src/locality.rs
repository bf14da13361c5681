//! Locality measurement: do geographically close peers get close Node-IDs?
//!
//! Peers are spread round-robin over [`CITIES`](crate::cities::CITIES) with uniform jitter
//! of ± `jitter_deg` degrees. Each gets a location-aware ID and a SHA-1 ID (over 32 random
//! "public key" bytes) in the same layer arc, unique within its scheme. For every peer we
//! take its `neighbours` geographically nearest peers (great-circle) and the ring distance
//! `min(cw, ccw)` to each, divided by the arc length; the report gives mean and median of
//! that fraction per scheme. Uniformly random IDs in an arc give a mean of about 1/3.

use crate::cities::CITIES;
use crate::ids::{assign_location_id, assign_sha1_id, choose_unique};
use crate::layer::{Layer, LayerArcs};
use overlay::{IdSpace, NodeId};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeSet;
use std::convert::Infallible;

/// Parameters of a locality run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalityConfig {
    /// RNG seed (same seed, same numbers).
    pub seed: u64,
    /// Number of peers.
    pub peers: usize,
    /// ID width m.
    pub bits: u32,
    /// Uniform jitter around the city centre, degrees.
    pub jitter_deg: f64,
    /// How many geographically nearest peers to compare with.
    pub neighbours: usize,
}

impl Default for LocalityConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            peers: 2000,
            bits: 128,
            jitter_deg: 0.5,
            neighbours: 5,
        }
    }
}

/// Ring-distance statistics for one ID scheme, as fractions of the arc length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemeStats {
    /// Mean normalised ring distance to the geographically nearest peers.
    pub mean: f64,
    /// Median of the same.
    pub median: f64,
    /// Share of those pairs closer than 1% of the arc.
    pub within_1pct: f64,
}

/// Result of [`report`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalityReport {
    /// The parameters.
    pub config: LocalityConfig,
    /// Peers that got an ID in both schemes.
    pub peers_placed: usize,
    /// Location-aware (Hilbert) IDs.
    pub location: SchemeStats,
    /// SHA-1 IDs.
    pub sha1: SchemeStats,
}

impl std::fmt::Display for LocalityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "locality: {} peers over {} cities (jitter ±{}°), m = {}, seed {}, {} nearest",
            self.peers_placed,
            CITIES.len(),
            c.jitter_deg,
            c.bits,
            c.seed,
            c.neighbours
        )?;
        writeln!(
            f,
            "ring distance to geographic neighbours, as a fraction of the layer arc:"
        )?;
        writeln!(f, "  scheme     mean       median     <1% of arc")?;
        for (name, s) in [("location", &self.location), ("sha1", &self.sha1)] {
            writeln!(
                f,
                "  {name:<9}  {:<9.3e}  {:<9.3e}  {:.1}%",
                s.mean,
                s.median,
                100.0 * s.within_1pct
            )?;
        }
        write!(f, "  (uniformly random IDs: mean ≈ 0.333)")
    }
}

fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (p, l) = (lat.to_radians(), lon.to_radians());
    [p.cos() * l.cos(), p.cos() * l.sin(), p.sin()]
}

fn stats(mut v: Vec<f64>) -> SchemeStats {
    if v.is_empty() {
        return SchemeStats {
            mean: f64::NAN,
            median: f64::NAN,
            within_1pct: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    SchemeStats {
        mean: v.iter().sum::<f64>() / n,
        median: v[v.len() / 2],
        within_1pct: v.iter().filter(|&&x| x < 0.01).count() as f64 / n,
    }
}

fn place<R: Rng>(
    space: IdSpace,
    used: &mut BTreeSet<NodeId>,
    arc: crate::layer::LayerArc,
    mut make: impl FnMut(u32, &mut R) -> NodeId,
    rng: &mut R,
) -> Option<NodeId> {
    let id = choose_unique::<Infallible>(
        space,
        arc,
        |attempt| make(attempt, rng),
        |id| Ok(used.contains(&id)),
    )
    .ok()
    .flatten()?;
    used.insert(id);
    Some(id)
}

/// Run the locality measurement (pure and deterministic for a seed). Uses the layer-2 arc
/// of equal thirds of an m-bit space (`bits` is clamped to 2..=128).
pub fn report(config: &LocalityConfig) -> LocalityReport {
    let space = IdSpace::new(config.bits.clamp(2, 128)).expect("bits clamped to 2..=128");
    let arcs = LayerArcs::thirds(space).expect("equal thirds exist for every m >= 2");
    let arc = arcs.arc(Layer::TWO);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let jitter = config.jitter_deg.abs().min(10.0);
    let mut used_loc = BTreeSet::new();
    let mut used_sha = BTreeSet::new();
    // (unit vector, location id, sha1 id)
    let mut peers: Vec<([f64; 3], NodeId, NodeId)> = Vec::with_capacity(config.peers);
    for i in 0..config.peers {
        let city = CITIES[i % CITIES.len()];
        let lat = (city.lat + rng.random_range(-jitter..=jitter)).clamp(-90.0, 90.0);
        let mut lon = city.lon + rng.random_range(-jitter..=jitter);
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let loc = place(
            space,
            &mut used_loc,
            arc,
            |_, r: &mut ChaCha8Rng| assign_location_id(space, arc, lat, lon, r),
            &mut rng,
        );
        let sha = place(
            space,
            &mut used_sha,
            arc,
            |attempt, _: &mut ChaCha8Rng| assign_sha1_id(space, arc, &key, attempt),
            &mut rng,
        );
        if let (Some(loc), Some(sha)) = (loc, sha) {
            peers.push((unit_vector(lat, lon), loc, sha));
        }
    }
    let ring = |a: NodeId, b: NodeId| {
        let d = space.distance(a, b).min(space.distance(b, a));
        d as f64 / arc.len as f64
    };
    let k = config.neighbours.min(peers.len().saturating_sub(1));
    let (mut loc_d, mut sha_d) = (Vec::new(), Vec::new());
    let mut near: Vec<(f64, usize)> = Vec::with_capacity(peers.len());
    for (i, (pi, li, si)) in peers.iter().enumerate() {
        near.clear();
        for (j, (pj, _, _)) in peers.iter().enumerate() {
            if i != j {
                let d2 =
                    (pi[0] - pj[0]).powi(2) + (pi[1] - pj[1]).powi(2) + (pi[2] - pj[2]).powi(2);
                near.push((d2, j));
            }
        }
        if k == 0 {
            continue;
        }
        near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, j) in &near[..k] {
            loc_d.push(ring(*li, peers[j].1));
            sha_d.push(ring(*si, peers[j].2));
        }
    }
    LocalityReport {
        config: config.clone(),
        peers_placed: peers.len(),
        location: stats(loc_d),
        sha1: stats(sha_d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_ids_are_far_more_local_than_sha1() {
        let r = report(&LocalityConfig {
            peers: 600,
            ..LocalityConfig::default()
        });
        println!("{r}");
        assert_eq!(r.peers_placed, 600);
        assert!(r.location.mean < r.sha1.mean / 10.0, "{r}");
        assert!((0.25..0.42).contains(&r.sha1.mean), "{r}");
        assert_eq!(r, report(&r.config), "same seed, same numbers");
    }

    #[test]
    fn paper_space_still_local() {
        let r = report(&LocalityConfig {
            peers: 300,
            bits: 11,
            ..LocalityConfig::default()
        });
        println!("{r}");
        assert_eq!(r.peers_placed, 300);
        assert!(r.location.mean < r.sha1.mean / 2.0, "{r}");
    }
}
