//! Network and population models: latency, loss, churn session times, peer placement.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;
use std::time::Duration;

/// A peer's place on Earth (degrees), for the geographic latency model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GeoPoint {
    /// Latitude in degrees, −90..90.
    pub lat: f32,
    /// Longitude in degrees, −180..180.
    pub lon: f32,
}

impl GeoPoint {
    /// Great-circle distance in kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        GeoRad::from(*self).distance_km(&GeoRad::from(*other))
    }

    /// A point drawn uniformly on the sphere.
    pub fn random(rng: &mut Xoshiro256PlusPlus) -> GeoPoint {
        let z: f64 = rng.random_range(-1.0..1.0);
        let lon: f64 = rng.random_range(-180.0..180.0);
        GeoPoint {
            lat: z.asin().to_degrees() as f32,
            lon: lon as f32,
        }
    }
}

/// A [`GeoPoint`] prepared for distance computations: its unit vector from the Earth's
/// centre, computed once per peer. The great-circle distance then takes one square root and
/// one arcsine per message (the chord between the two points), where the haversine formula
/// on latitude and longitude took two sines more; the two are the same formula
/// (half the chord is the square root of the haversine).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoRad {
    x: f64,
    y: f64,
    z: f64,
}

impl GeoRad {
    /// Latitude 0, longitude 0 (a [`GeoPoint::default`]), without computing it.
    pub const ORIGIN: GeoRad = GeoRad {
        x: 1.0,
        y: 0.0,
        z: 0.0,
    };
}

impl Default for GeoRad {
    fn default() -> Self {
        GeoRad::ORIGIN
    }
}

impl From<GeoPoint> for GeoRad {
    fn from(p: GeoPoint) -> Self {
        let (lat, lon) = ((p.lat as f64).to_radians(), (p.lon as f64).to_radians());
        GeoRad {
            x: lat.cos() * lon.cos(),
            y: lat.cos() * lon.sin(),
            z: lat.sin(),
        }
    }
}

impl GeoRad {
    /// Great-circle distance in kilometres: twice the arcsine of half the chord.
    pub fn distance_km(&self, other: &GeoRad) -> f64 {
        let (dx, dy, dz) = (other.x - self.x, other.y - self.y, other.z - self.z);
        let half_chord = 0.5 * (dx * dx + dy * dy + dz * dz).sqrt();
        2.0 * 6371.0 * half_chord.min(1.0).asin()
    }
}

/// One-way message latency between two peers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum LatencyModel {
    /// The same delay for every message.
    Constant(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// `base + distance / speed + jitter`: peers far apart are far apart in time too.
    Geographic {
        /// Fixed per-message cost (access links, processing).
        base: Duration,
        /// Kilometres covered per millisecond (≈ 100 for fibre with routing detours).
        km_per_ms: f64,
        /// Extra delay drawn uniformly from 0..jitter.
        jitter: Duration,
    },
}

impl LatencyModel {
    /// The default geographic model: 2 ms + distance at 100 km/ms + up to 5 ms jitter.
    pub fn geographic() -> Self {
        LatencyModel::Geographic {
            base: Duration::from_millis(2),
            km_per_ms: 100.0,
            jitter: Duration::from_millis(5),
        }
    }

    /// Draw the delay for one message from `a` to `b`.
    pub fn sample(&self, rng: &mut Xoshiro256PlusPlus, a: &GeoPoint, b: &GeoPoint) -> Duration {
        self.sample_rad(rng, &GeoRad::from(*a), &GeoRad::from(*b))
    }

    /// [`Self::sample`] for points already converted (the simulator's hot path).
    pub fn sample_rad(&self, rng: &mut Xoshiro256PlusPlus, a: &GeoRad, b: &GeoRad) -> Duration {
        let drawn = self.draw(rng);
        self.finish(drawn, a, b)
    }

    /// The random part of one sample (microseconds), drawn as [`Self::sample_rad`] draws it:
    /// the simulator draws it when a message is sent and finishes the sample with
    /// [`Self::finish`] once it has loaded the receiver's position.
    pub(crate) fn draw(&self, rng: &mut Xoshiro256PlusPlus) -> u64 {
        match self {
            LatencyModel::Constant(_) => 0,
            LatencyModel::Uniform { min, max } => {
                if max <= min {
                    0
                } else {
                    rng.random_range(min.as_micros() as u64..=max.as_micros() as u64)
                }
            }
            LatencyModel::Geographic { jitter, .. } => {
                if jitter.is_zero() {
                    0
                } else {
                    rng.random_range(0..jitter.as_micros() as u64)
                }
            }
        }
    }

    /// The delay of a message from `a` to `b` whose random part was `drawn` by [`Self::draw`].
    pub(crate) fn finish(&self, drawn: u64, a: &GeoRad, b: &GeoRad) -> Duration {
        match self {
            LatencyModel::Constant(d) => *d,
            LatencyModel::Uniform { min, max } => {
                if max <= min {
                    *min
                } else {
                    Duration::from_micros(drawn)
                }
            }
            LatencyModel::Geographic {
                base, km_per_ms, ..
            } => {
                let ms = a.distance_km(b) / km_per_ms.max(1e-3);
                *base + Duration::from_micros((ms * 1000.0) as u64 + drawn)
            }
        }
    }

    /// The least delay any message can take: how far ahead of each other the shards of a
    /// run split over threads may run (see [`crate::shard`]).
    pub(crate) fn min_delay(&self) -> Duration {
        match self {
            LatencyModel::Constant(d) => *d,
            // A drawn delay is whole microseconds.
            LatencyModel::Uniform { min, .. } => Duration::from_micros(min.as_micros() as u64),
            LatencyModel::Geographic { base, .. } => *base,
        }
    }

    /// The shortest delay [`Self::finish`] can give for `drawn`, wherever the two ends are.
    pub(crate) fn at_least(&self, drawn: u64) -> Duration {
        match self {
            LatencyModel::Geographic { base, .. } => *base + Duration::from_micros(drawn),
            _ => self.finish(drawn, &GeoRad::ORIGIN, &GeoRad::ORIGIN),
        }
    }
}

/// How long peers stay online.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum SessionModel {
    /// Exponential session times with this median.
    Exponential {
        /// Median session length.
        median: Duration,
    },
    /// Pareto session times (heavy tail) with this median and shape α.
    Pareto {
        /// Median session length.
        median: Duration,
        /// Shape α (> 0); smaller means heavier tail. 2.0 is a common choice.
        shape: f64,
    },
}

impl SessionModel {
    /// Draw one session length.
    pub fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> Duration {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let secs = match *self {
            SessionModel::Exponential { median } => {
                let mean = median.as_secs_f64() / std::f64::consts::LN_2;
                -mean * u.ln()
            }
            SessionModel::Pareto { median, shape } => {
                let shape = shape.max(0.05);
                let xm = median.as_secs_f64() / 2f64.powf(1.0 / shape);
                xm / u.powf(1.0 / shape)
            }
        };
        Duration::from_secs_f64(secs.clamp(0.001, 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn session_medians_match() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for model in [
            SessionModel::Exponential {
                median: Duration::from_secs(600),
            },
            SessionModel::Pareto {
                median: Duration::from_secs(600),
                shape: 2.0,
            },
        ] {
            let mut v: Vec<f64> = (0..20_001)
                .map(|_| model.sample(&mut rng).as_secs_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            let median = v[v.len() / 2];
            assert!((median - 600.0).abs() < 30.0, "{model:?}: median {median}");
        }
    }

    #[test]
    fn geographic_latency_grows_with_distance() {
        let oslo = GeoPoint {
            lat: 59.91,
            lon: 10.75,
        };
        let bergen = GeoPoint {
            lat: 60.39,
            lon: 5.32,
        };
        let tokyo = GeoPoint {
            lat: 35.68,
            lon: 139.69,
        };
        assert!((oslo.distance_km(&bergen) - 305.0).abs() < 15.0);
        let m = LatencyModel::Geographic {
            base: Duration::from_millis(1),
            km_per_ms: 100.0,
            jitter: Duration::ZERO,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let near = m.sample(&mut rng, &oslo, &bergen);
        let far = m.sample(&mut rng, &oslo, &tokyo);
        assert!(near < Duration::from_millis(5), "{near:?}");
        assert!(far > Duration::from_millis(80), "{far:?}");
    }

    /// The chord form gives the haversine formula's distances (to a millimetre), antipodes
    /// and identical points included.
    #[test]
    fn chord_distance_is_haversine() {
        let haversine = |a: GeoPoint, b: GeoPoint| {
            let (la, lb) = ((a.lat as f64).to_radians(), (b.lat as f64).to_radians());
            let dlon = (b.lon as f64 - a.lon as f64).to_radians();
            let h =
                ((lb - la) / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
            2.0 * 6371.0 * h.sqrt().min(1.0).asin()
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut pairs: Vec<(GeoPoint, GeoPoint)> = (0..10_000)
            .map(|_| (GeoPoint::random(&mut rng), GeoPoint::random(&mut rng)))
            .collect();
        let p = GeoPoint {
            lat: 10.0,
            lon: 20.0,
        };
        pairs.push((p, p));
        pairs.push((
            p,
            GeoPoint {
                lat: -10.0,
                lon: -160.0,
            },
        ));
        for (a, b) in pairs {
            let (got, want) = (a.distance_km(&b), haversine(a, b));
            assert!(
                (got - want).abs() < 1e-6,
                "{a:?} {b:?}: {got} against {want}"
            );
        }
    }
}
