//! `p2psip demo --soak-minutes N`: keep the real overlay under continuous calls and churn
//! for N minutes and sample, every interval, the process's resident memory, its open file
//! descriptors and the calls that rang, so a leak or a slow decay shows as a slope.
//!
//! Calls run back to back between live ordinary peers (`--concurrency` at once). Churn: at
//! each interval one ordinary peer is hard-stopped ([`net::Handle::kill`], as in
//! the churn run), until a fifth of them are gone; killed peers are not restarted (the
//! overlay shrinks; what must stay flat is the survivors' footprint and call success).
//! Each sample is one CSV row; the summary fits a least-squares line to RSS and
//! descriptors over time and gives the slope per minute.

use super::calls::{Parties, Workload, pick_pair, pick_victims};
use super::host::{open_fds, rss_bytes};
use super::share;
use crate::LabError;
use net::CallOutcome;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the soak run is shaped.
#[derive(Clone, Debug)]
pub(crate) struct SoakPlan {
    pub(crate) duration: Duration,
    pub(crate) interval: Duration,
    pub(crate) concurrency: usize,
    pub(crate) seed: u64,
    pub(crate) csv: Option<PathBuf>,
    /// Most ordinary peers killed over the run (a fraction of them).
    pub(crate) max_kill_fraction: f64,
    /// Print each sample as it is taken (not with `--json`: the samples are in the report).
    pub(crate) print_samples: bool,
}

/// Calls that ended, of them the calls that rang within 2 s, and the calls that failed
/// (a call that rang later is neither): since the start, or within one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CallTally {
    pub(crate) calls: u64,
    pub(crate) rang_2s: u64,
    pub(crate) failed: u64,
}

impl CallTally {
    /// The calls counted since `earlier`, a tally of the same counters.
    fn since(self, earlier: CallTally) -> CallTally {
        CallTally {
            calls: self.calls - earlier.calls,
            rang_2s: self.rang_2s - earlier.rang_2s,
            failed: self.failed - earlier.failed,
        }
    }
}

/// The running tally the spawned calls count themselves into as they end.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    rang_2s: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    /// Count one call that ended with `out`.
    fn count(&self, out: &Result<CallOutcome, LabError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match out {
            Ok(CallOutcome::Ringing { srd, .. }) if *srd <= Duration::from_secs(2) => {
                self.rang_2s.fetch_add(1, Ordering::Relaxed);
            }
            Ok(CallOutcome::Ringing { .. }) => {}
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The tally so far.
    fn tally(&self) -> CallTally {
        CallTally {
            calls: self.calls.load(Ordering::Relaxed),
            rang_2s: self.rang_2s.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    pub(crate) rss_kib: u64,
    pub(crate) fds: u64,
    pub(crate) alive: usize,
    /// The calls that ended since the previous sample.
    #[serde(flatten)]
    pub(crate) tally: CallTally,
}

/// The soak run's result.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) samples: Vec<Sample>,
    /// Least-squares slope of RSS, KiB per minute (samples after the first interval).
    pub(crate) rss_kib_per_min: f64,
    /// Least-squares slope of open descriptors per minute.
    pub(crate) fds_per_min: f64,
    /// Slope of the per-interval ring-within-2-s rate, percentage points per minute.
    pub(crate) ring_pct_per_min: f64,
    pub(crate) calls: u64,
    pub(crate) rang_2s: u64,
    pub(crate) killed: usize,
}

/// Least-squares slope of `y` over `x`.
pub(crate) fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Run the soak among `parties` (as in [`super::churn::run`]).
pub(crate) async fn run(parties: &Parties<'_>, plan: &SoakPlan) -> Result<SoakReport, LabError> {
    let (handles, ids, callers) = (parties.handles, parties.ids, &parties.callers);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(plan.seed ^ 0x50A4);
    let victims = pick_victims(&mut rng, &parties.killable, |n| {
        ((n as f64) * plan.max_kill_fraction).floor() as usize
    });
    let mut dead = vec![false; ids.len()];
    let mut csv = match &plan.csv {
        Some(p) => {
            let mut f =
                std::fs::File::create(p).map_err(LabError::io("creating the soak CSV", p))?;
            writeln!(f, "t_s,rss_kib,fds,alive,calls,rang_2s,failed")
                .map_err(LabError::io("writing the soak CSV", p))?;
            Some((f, p))
        }
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let mut workload = Workload::new(parties, plan.concurrency, 1_000_000);
    let start = Instant::now();
    let mut next_sample = start + plan.interval;
    let mut samples = Vec::new();
    let mut killed = 0;
    let mut last = CallTally::default();
    while start.elapsed() < plan.duration {
        if Instant::now() >= next_sample {
            next_sample += plan.interval;
            let now = counters.tally();
            let s = Sample {
                t_s: start.elapsed().as_secs_f64(),
                rss_kib: rss_bytes() / 1024,
                fds: open_fds(),
                alive: ids.len() - killed,
                tally: now.since(last),
            };
            last = now;
            let c = &s.tally;
            if let Some((f, path)) = &mut csv {
                writeln!(
                    f,
                    "{:.1},{},{},{},{},{},{}",
                    s.t_s, s.rss_kib, s.fds, s.alive, c.calls, c.rang_2s, c.failed
                )
                .and_then(|()| f.flush())
                .map_err(LabError::io("writing the soak CSV", path.as_path()))?;
            }
            if plan.print_samples {
                say!(
                    "  soak t={:.0}s rss={} KiB fds={} alive={} calls={} rang(2s)={} failed={}",
                    s.t_s,
                    s.rss_kib,
                    s.fds,
                    s.alive,
                    c.calls,
                    c.rang_2s,
                    c.failed
                );
            }
            samples.push(s);
            // Churn: one more peer hard-stopped.
            if killed < victims.len() {
                let v = victims[killed];
                dead[v] = true;
                let _ = handles[v].kill().await;
                killed += 1;
            }
        }
        let Some(slot) = workload.slot().await else {
            continue;
        };
        let pool: Vec<usize> = (0..ids.len())
            .filter(|i| callers[*i] && !dead[*i])
            .collect();
        if pool.len() < 2 {
            return Err(LabError::TooFewPeers {
                when: "left in the soak",
            });
        }
        let call = workload.call(pick_pair(&mut rng, &pool), slot);
        let counters = counters.clone();
        tokio::spawn(async move { counters.count(&call.await) });
    }
    // The first sample includes the warm-up; fit the rest.
    let fit: Vec<&Sample> = samples.iter().skip(1).collect();
    let per_min = |f: &dyn Fn(&Sample) -> f64| {
        slope(&fit.iter().map(|s| (s.t_s / 60.0, f(s))).collect::<Vec<_>>())
    };
    let rate = |s: &Sample| 100.0 * share(s.tally.rang_2s, s.tally.calls);
    Ok(SoakReport {
        rss_kib_per_min: per_min(&|s| s.rss_kib as f64),
        fds_per_min: per_min(&|s| s.fds as f64),
        ring_pct_per_min: per_min(&rate),
        calls: samples.iter().map(|s| s.tally.calls).sum(),
        rang_2s: samples.iter().map(|s| s.tally.rang_2s).sum(),
        killed,
        samples,
    })
}

/// The report's text lines.
pub(crate) fn print(r: &SoakReport) {
    say!();
    say!(
        "  Soak: {} samples, {} calls ({:.2}% rang within 2 s), {} peers hard-stopped along the way",
        r.samples.len(),
        r.calls,
        100.0 * share(r.rang_2s, r.calls),
        r.killed
    );
    say!(
        "  slopes (least squares, after the first sample): RSS {:+.1} KiB/min, descriptors {:+.2}/min, ring rate {:+.3} points/min",
        r.rss_kib_per_min,
        r.fds_per_min,
        r.ring_pct_per_min
    );
}

#[cfg(test)]
mod tests {
    use super::{CallTally, Sample, slope};

    /// A sample is one flat row in the JSON report, as in the CSV: its interval's calls
    /// (the difference of two running tallies) stand beside its RSS and descriptors.
    #[test]
    fn a_sample_is_one_flat_row_of_its_intervals_calls() {
        let tally = |calls, rang_2s, failed| CallTally {
            calls,
            rang_2s,
            failed,
        };
        let s = Sample {
            t_s: 30.0,
            rss_kib: 2048,
            fds: 40,
            alive: 9,
            tally: tally(25, 21, 3).since(tally(10, 9, 1)),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({
                "t_s": 30.0, "rss_kib": 2048, "fds": 40, "alive": 9,
                "calls": 15, "rang_2s": 12, "failed": 2,
            })
        );
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0))
            .collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 5.0)).collect();
        assert_eq!(slope(&flat), 0.0);
    }
}
