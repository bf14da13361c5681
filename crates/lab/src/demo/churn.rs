//! `p2psip demo --kill-fraction F`: hard-stop a fraction of the peers under a call workload
//! and measure how the overlay recovers.
//!
//! A continuous workload of calls between live ordinary peers runs for a few seconds, then
//! F of the ordinary peers stop at once ([`net::Handle::kill`]: no leave, nothing flushed,
//! listener and sockets dropped — an in-process hard stop, the closest this one-process demo
//! gets to `kill -9`; the survivors see exactly what a crash shows them: dead TCP links and
//! silence), and the workload goes on against the survivors. Calls are grouped in windows
//! by start time; a call counts when it rings within
//! `ring_within` (2 s, the aim; a debug build in a test may ask for a looser one). The report gives each
//! window's ring rate, the recovery time (kill → start of the first window from which every
//! window has ≥ 99 % of calls ringing) and the ring rate after it. CSPs and CSPGs are
//! operator-run servers in the paper's design and are not killed.

use super::calls::{Parties, Workload, pick_pair, pick_victims};
use super::share;
use crate::LabError;
use net::CallOutcome;
use overlay::NodeId;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Ring rate a window needs to count as recovered.
pub(crate) const RECOVERED: f64 = 0.99;

/// How the churn run is shaped.
#[derive(Clone, Debug)]
pub(crate) struct ChurnPlan {
    /// Fraction of the ordinary peers to kill.
    pub(crate) fraction: f64,
    /// Workload before the kill.
    pub(crate) before: Duration,
    /// Workload after the kill.
    pub(crate) after: Duration,
    /// Window length for the ring rate.
    pub(crate) window: Duration,
    /// Calls in flight at once.
    pub(crate) concurrency: usize,
    /// Seed for the victims, callers and callees.
    pub(crate) seed: u64,
    /// A call counts as good if it rings within this.
    pub(crate) ring_within: Duration,
}

/// One window of calls (by start time, relative to the kill; negative: before it).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Window {
    /// Window start, s relative to the kill.
    pub(crate) start_s: f64,
    /// Calls started in the window.
    pub(crate) calls: u64,
    /// Of those, rang within the plan's `ring_within`.
    pub(crate) rang: u64,
    /// `rang / calls`.
    pub(crate) rate: f64,
}

/// What the churn run measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ChurnReport {
    /// Peers killed (hard stop), and their IDs.
    pub(crate) killed: usize,
    pub(crate) killed_ids: Vec<u128>,
    /// Peers left running.
    pub(crate) alive: usize,
    /// Calls to live callees before the kill, and how many rang within 2 s.
    pub(crate) calls_before: u64,
    pub(crate) rang_before: u64,
    /// Calls after the kill, and how many rang within 2 s.
    pub(crate) calls_after: u64,
    pub(crate) rang_after: u64,
    /// Kill → start of the first window from which every window rings ≥ 99 % (None: not
    /// within the run).
    pub(crate) recovery_s: Option<f64>,
    /// Kill → start of the first window with ≥ 99 % (may dip again later).
    pub(crate) first_good_window_s: Option<f64>,
    /// Ring-within-2-s rate of the calls after recovery.
    pub(crate) rate_after_recovery: Option<f64>,
    pub(crate) calls_after_recovery: u64,
    /// Window length, s.
    pub(crate) window_s: f64,
    /// A call counted as good if it rang within this, ms.
    pub(crate) ring_within_ms: u64,
    /// Every window.
    pub(crate) windows: Vec<Window>,
    /// How the calls that did not ring within 2 s ended (after the kill).
    pub(crate) late: u64,
    pub(crate) failed: u64,
}

/// Run the workload, kill, go on, and measure. Ordinary peers are killable; the callers take
/// part in calls at all.
pub(crate) async fn run(parties: &Parties<'_>, plan: &ChurnPlan) -> Result<ChurnReport, LabError> {
    let (handles, ids, callers) = (parties.handles, parties.ids, &parties.callers);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(plan.seed ^ 0xD1E);
    let victims = pick_victims(&mut rng, &parties.killable, |n| {
        ((n as f64) * plan.fraction).round() as usize
    });
    let mut dead = vec![false; ids.len()];
    for v in &victims {
        dead[*v] = true;
    }
    let parties_before: Vec<usize> = (0..ids.len()).filter(|i| callers[*i]).collect();
    let parties_after: Vec<usize> = parties_before
        .iter()
        .copied()
        .filter(|i| !dead[*i])
        .collect();
    if parties_after.len() < 2 {
        return Err(LabError::TooFewPeers {
            when: "would be left after the kill",
        });
    }

    let mut workload = Workload::new(parties, plan.concurrency, 50_000);
    let mut set: JoinSet<(f64, Option<Duration>)> = JoinSet::new();
    let start = Instant::now();
    let kill_at = start + plan.before;
    let end = kill_at + plan.after;
    let mut killed = false;
    while Instant::now() < end {
        if !killed && Instant::now() >= kill_at {
            let mut ks = JoinSet::new();
            for v in &victims {
                let h = handles[*v].clone();
                ks.spawn(async move { h.kill().await });
            }
            while ks.join_next().await.is_some() {}
            killed = true;
        }
        let pool = if killed {
            &parties_after
        } else {
            &parties_before
        };
        let Some(slot) = workload.slot().await else {
            continue;
        };
        let (a, b) = pick_pair(&mut rng, pool);
        // A call that started before the kill to a victim is not a call to a live callee.
        if !killed && dead[b] {
            drop(slot);
            continue;
        }
        let t = Instant::now();
        let at = if t >= kill_at {
            (t - kill_at).as_secs_f64()
        } else {
            -(kill_at - t).as_secs_f64()
        };
        let call = workload.call((a, b), slot);
        set.spawn(async move {
            let srd = match call.await {
                Ok(CallOutcome::Ringing { srd, .. }) => Some(srd),
                _ => None,
            };
            (at, srd)
        });
    }
    let mut calls = Vec::new();
    while let Some(r) = set.join_next().await {
        calls.push(r?);
    }
    Ok(summarise(&calls, &victims, ids, plan))
}

fn summarise(
    calls: &[(f64, Option<Duration>)],
    victims: &[usize],
    ids: &[NodeId],
    plan: &ChurnPlan,
) -> ChurnReport {
    let w = plan.window.as_secs_f64().max(0.1);
    let first = -(plan.before.as_secs_f64() / w).ceil() as i64;
    let last = (plan.after.as_secs_f64() / w).ceil() as i64;
    let mut windows: Vec<Window> = (first..last)
        .map(|i| Window {
            start_s: i as f64 * w,
            calls: 0,
            rang: 0,
            rate: 0.0,
        })
        .collect();
    let good = |srd: &Option<Duration>| srd.is_some_and(|d| d <= plan.ring_within);
    let (mut late, mut failed) = (0, 0);
    for (at, srd) in calls {
        let i = ((at / w).floor() as i64 - first).clamp(0, windows.len() as i64 - 1) as usize;
        windows[i].calls += 1;
        windows[i].rang += u64::from(good(srd));
        if *at >= 0.0 && !good(srd) {
            match srd {
                Some(_) => late += 1,
                None => failed += 1,
            }
        }
    }
    for x in &mut windows {
        x.rate = share(x.rang, x.calls);
    }
    windows.retain(|x| x.calls > 0);
    let after: Vec<&Window> = windows.iter().filter(|x| x.start_s >= 0.0).collect();
    let first_good = after
        .iter()
        .find(|x| x.rate >= RECOVERED)
        .map(|x| x.start_s);
    // The first window from which every later window rings ≥ 99 %.
    let mut stable = None;
    for (i, x) in after.iter().enumerate() {
        if after[i..].iter().all(|y| y.rate >= RECOVERED) {
            stable = Some(x.start_s);
            break;
        }
    }
    let (mut ca, mut ra) = (0, 0);
    if let Some(s) = stable {
        for (at, srd) in calls {
            if *at >= s {
                ca += 1;
                ra += u64::from(good(srd));
            }
        }
    }
    let sum = |pre: bool| {
        calls
            .iter()
            .filter(|(at, _)| (*at < 0.0) == pre)
            .fold((0u64, 0u64), |(c, r), (_, srd)| {
                (c + 1, r + u64::from(good(srd)))
            })
    };
    let (calls_before, rang_before) = sum(true);
    let (calls_after, rang_after) = sum(false);
    ChurnReport {
        killed: victims.len(),
        killed_ids: victims.iter().map(|v| ids[*v].0).collect(),
        alive: ids.len() - victims.len(),
        calls_before,
        rang_before,
        calls_after,
        rang_after,
        recovery_s: stable,
        first_good_window_s: first_good,
        rate_after_recovery: stable.map(|_| share(ra, ca)),
        calls_after_recovery: ca,
        window_s: w,
        ring_within_ms: plan.ring_within.as_millis() as u64,
        windows,
        late,
        failed,
    }
}

/// The report's text lines.
pub(crate) fn print(r: &ChurnReport) {
    say!();
    say!(
        "  Churn: {} ordinary peers hard-stopped at once (in-process kill: no leave, sockets dropped), {} left",
        r.killed,
        r.alive
    );
    let within = r.ring_within_ms as f64 / 1000.0;
    let pct = |rang: u64, calls: u64| 100.0 * share(rang, calls);
    say!(
        "  before the kill  {} calls, {:.2}% rang within {within} s",
        r.calls_before,
        pct(r.rang_before, r.calls_before),
    );
    say!(
        "  after the kill   {} calls to live callees, {:.2}% rang within {within} s ({} rang later, {} failed)",
        r.calls_after,
        pct(r.rang_after, r.calls_after),
        r.late,
        r.failed
    );
    match (r.recovery_s, r.rate_after_recovery) {
        (Some(s), Some(rate)) => say!(
            "  recovered        {s:.1} s after the kill (every later {:.1} s window ≥ 99%); after that {:.2}% of {} calls rang within {within} s",
            r.window_s,
            100.0 * rate,
            r.calls_after_recovery,
        ),
        _ => say!("  recovered        NOT within the run"),
    }
    let line: Vec<String> = r
        .windows
        .iter()
        .map(|w| format!("{:+.0}s:{:.0}%", w.start_s, 100.0 * w.rate))
        .collect();
    say!("  windows          {}", line.join(" "));
}
