//! Measurements collected during a run and the summary a run reports.

use serde::Serialize;

/// A growable sample of values for percentiles (kept whole: 10^6 lookups is 8 MB).
#[derive(Clone, Debug, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    /// Record one value.
    pub fn push(&mut self, v: f64) {
        self.values.push(v);
        self.sorted = false;
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No values yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Arithmetic mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.values.iter().sum::<f64>() / self.values.len() as f64
        }
    }

    /// The p-th percentile (nearest rank), p in 0..=100; 0 when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        if !self.sorted {
            self.values.sort_by(f64::total_cmp);
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.values.len() as f64).ceil() as usize;
        self.values[rank.clamp(1, self.values.len()) - 1]
    }

    /// Add another sample's values after this one's.
    pub fn absorb(&mut self, other: Samples) {
        if self.values.is_empty() {
            *self = other;
        } else {
            self.values.extend_from_slice(&other.values);
            self.sorted = false;
        }
    }

    /// All values (unsorted unless a percentile was asked for).
    pub fn values(&self) -> &[f64] {
        &self.values
    }
}

/// The result of a lookup run, as `p2psip sim` prints it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LookupReport {
    /// Peers at the start of the measurement.
    pub peers: usize,
    /// Lookups issued.
    pub lookups: u64,
    /// Lookups that found the right owner (the live successor of the key at answer time).
    pub succeeded: u64,
    /// Lookups that timed out.
    pub timed_out: u64,
    /// Lookups answered by a peer that was not the owner.
    pub wrong_owner: u64,
    /// Lookups whose origin left or failed before the answer.
    pub origin_lost: u64,
    /// succeeded / (lookups − origin_lost).
    pub success_rate: f64,
    /// Mean overlay hops from origin to owner.
    pub hops_mean: f64,
    /// 99th percentile of hops.
    pub hops_p99: f64,
    /// ½·log2(N), Chord's expected mean path length, for comparison.
    pub hops_expected: f64,
    /// Lookup latency percentiles (virtual time), milliseconds.
    pub latency_ms_p50: f64,
    /// 99th percentile lookup latency, milliseconds.
    pub latency_ms_p99: f64,
    /// Messages delivered or lost, in total.
    pub messages: u64,
    /// Messages per peer per simulated second.
    pub messages_per_peer_per_s: f64,
    /// Mean encoded bytes per message.
    pub bytes_per_message: f64,
    /// Simulator events processed (ring building and warm-up included).
    pub events: u64,
    /// `events` per wall-clock second in which events ran: `wall_s` less `placing_s`, the
    /// engine's own rate (PeerSim's clock, too, starts after its network and initialisers).
    pub events_per_s: f64,
    /// Simulated seconds covered.
    pub sim_s: f64,
    /// Wall-clock seconds the run took, placing the peers included.
    pub wall_s: f64,
    /// Wall-clock seconds of placing the peers with a converged state (no events; 0 when
    /// the ring is grown by joins, which are events).
    pub placing_s: f64,
    /// Mean bytes of Chord state per live peer (node struct plus heap).
    pub state_bytes_per_peer: f64,
    /// Peers that joined during the run (churn).
    pub joins: u64,
    /// Peers that left or crashed during the run (churn).
    pub departures: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Threads the ring was split over.
    pub threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut s = Samples::default();
        for v in 1..=100 {
            s.push(v as f64);
        }
        assert_eq!(s.percentile(50.0), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert!((s.mean() - 50.5).abs() < 1e-9);
    }
}
