//! Lookup latency with location-aware vs SHA-1 Node-IDs, in the simulator.
//!
//! Peers sit at the E&A city table (with jitter); each gets both a location-aware ID
//! (Hilbert curve, as the E&A assigns it) and a SHA-1 ID. For each scheme the simulator
//! builds a converged ring over the geographic latency model and runs the same lookups:
//! mostly local calls (callee in the caller's city), the rest anywhere.

use crate::LabError;
use enroll::cities::CITIES;
use overlay::{IdSpace, NodeId};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use sim::{GeoPoint, LatencyModel, World, WorldConfig};
use std::collections::BTreeSet;
use std::time::Duration;

/// Lookup latency of one ID scheme.
#[derive(Debug, Serialize)]
pub struct SchemeLatency {
    /// `location` (Hilbert-curve IDs, as the E&A assigns them) or `sha1`.
    pub scheme: &'static str,
    /// Share of the lookups that found the right owner.
    pub success_rate: f64,
    /// Mean hops per lookup.
    pub hops_mean: f64,
    /// Median lookup latency, ms (virtual time).
    pub latency_ms_p50: f64,
    /// 99th-percentile lookup latency, ms (virtual time).
    pub latency_ms_p99: f64,
}

/// Both schemes side by side.
#[derive(Debug, Serialize)]
pub struct LocalityLatency {
    /// Peers on the ring.
    pub peers: usize,
    /// Lookups issued per scheme.
    pub lookups: usize,
    /// Share of lookups whose callee is in the caller's city.
    pub local_fraction: f64,
    /// Seed of the positions, IDs and lookups.
    pub seed: u64,
    /// One entry per scheme: location first, then SHA-1.
    pub schemes: Vec<SchemeLatency>,
}

/// The table `p2psip enroll-server locality-report --simulate` prints.
impl std::fmt::Display for LocalityLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "lookup latency, {} peers at {} cities, {} lookups ({:.0}% to the caller's city), geographic latency, seed {}",
            self.peers,
            CITIES.len(),
            self.lookups,
            100.0 * self.local_fraction,
            self.seed
        )?;
        write!(f, "  scheme     success   hops   p50 ms    p99 ms")?;
        for s in &self.schemes {
            write!(
                f,
                "\n  {:<9}  {:<8.4}  {:<5.2}  {:<8.1}  {:.1}",
                s.scheme, s.success_rate, s.hops_mean, s.latency_ms_p50, s.latency_ms_p99
            )?;
        }
        Ok(())
    }
}

/// Measure both schemes on the same peers and the same (caller, callee) pairs.
pub fn run(
    peers: usize,
    lookups: usize,
    local: f64,
    seed: u64,
) -> Result<LocalityLatency, LabError> {
    LabError::check(peers >= CITIES.len(), || {
        format!("need at least {} peers (one per city)", CITIES.len())
    })?;
    LabError::check((0.0..=1.0).contains(&local), || {
        "local fraction must be in 0..1".into()
    })?;
    let space = IdSpace::new(128).map_err(LabError::setup("the 128-bit ID space"))?;
    let arc = enroll::LayerArcs::thirds(space)
        .map_err(LabError::setup("three equal layer arcs of the ID space"))?
        .arc(enroll::Layer::TWO);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut loc_ids, mut sha_ids, mut geos, mut city_of) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut used_loc, mut used_sha) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..peers {
        let city = i % CITIES.len();
        let lat = CITIES[city].lat + rng.random_range(-0.5..0.5);
        let lon = CITIES[city].lon + rng.random_range(-0.5..0.5);
        let loc = loop {
            let id = enroll::assign_location_id(space, arc, lat, lon, &mut rng);
            if used_loc.insert(id) {
                break id;
            }
        };
        let mut attempt = 0;
        let sha = loop {
            let id = enroll::assign_sha1_id(space, arc, &(i as u64).to_le_bytes(), attempt);
            attempt += 1;
            if used_sha.insert(id) {
                break id;
            }
        };
        loc_ids.push(loc);
        sha_ids.push(sha);
        geos.push(GeoPoint {
            lat: lat as f32,
            lon: lon as f32,
        });
        city_of.push(city);
    }
    // The same (caller, callee) pairs for both schemes.
    let pairs: Vec<(usize, usize)> = (0..lookups)
        .map(|_| {
            let a = rng.random_range(0..peers);
            let b = if rng.random_bool(local) {
                // Another peer of the caller's city: indices ≡ city (mod cities).
                let per_city = (peers - city_of[a]).div_ceil(CITIES.len());
                city_of[a] + CITIES.len() * rng.random_range(0..per_city.max(1))
            } else {
                rng.random_range(0..peers)
            };
            (a, b.min(peers - 1))
        })
        .collect();
    let mut schemes = Vec::new();
    for (name, ids) in [("location", &loc_ids), ("sha1", &sha_ids)] {
        let mut cfg = WorldConfig::new(space, seed);
        cfg.latency = LatencyModel::geographic();
        let mut world = World::new(cfg);
        world.init_converged(ids, &geos);
        let settle = world.now() + Duration::from_secs(1);
        world.run_until(settle, &mut |_| {});
        for (a, b) in &pairs {
            let at = world.now() + Duration::from_millis(2);
            world.run_until(at, &mut |_| {});
            // Results are read from the world's statistics, not from the watch lists.
            let _ = world.watch(ids[*a], NodeId(ids[*b].0));
        }
        let end = world.now() + Duration::from_secs(20);
        world.run_until(end, &mut |_| {});
        let s = &mut world.stats;
        let issued = s.issued.max(1) as f64;
        schemes.push(SchemeLatency {
            scheme: name,
            success_rate: s.succeeded as f64 / issued,
            hops_mean: s.hops.mean(),
            latency_ms_p50: s.latency_ms.percentile(50.0),
            latency_ms_p99: s.latency_ms.percentile(99.0),
        });
    }
    Ok(LocalityLatency {
        peers,
        lookups,
        local_fraction: local,
        seed,
        schemes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn location_aware_ids_make_local_lookups_faster() {
        let r = super::run(300, 300, 0.8, 7).unwrap();
        let (loc, sha) = (&r.schemes[0], &r.schemes[1]);
        assert_eq!((loc.scheme, sha.scheme), ("location", "sha1"));
        assert_eq!(loc.success_rate, 1.0);
        assert_eq!(sha.success_rate, 1.0);
        assert!(loc.latency_ms_p50 < sha.latency_ms_p50, "{r:?}");
    }
}
