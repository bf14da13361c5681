//! `p2psip demo`: the paper's 512-peer prototype and its malicious-peer scenario.
//!
//! This build runs the prototype in the discrete-event simulator (the real-TLS version with
//! 512 peer processes' worth of listeners on loopback is being built on the `net` runtime)
//! and says so: the paper's scenario over plain Chord and over the secure system, then a
//! batch of random calls on a 512-peer, three-layer overlay with 13 CSPs and 3 CSPGs.

use overlay::secure::Routing;
use sim::{CallRun, LatencyModel};
use std::time::Duration;

/// Options for `p2psip demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Random calls to place after the scenario.
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Fraction of ordinary peers that are malicious (they drop what they forward).
    #[arg(long, default_value_t = 0.0)]
    malicious: f64,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let paper = sim::run_paper(args.seed)?;
    let paper_ok = !paper.chord.delivered
        && paper.secure.delivered
        && paper.secure.chosen_route == vec![1600, 1618];
    let mut run = CallRun::new(512, args.calls, Routing::Secure);
    run.bits = 11;
    run.seed = args.seed;
    run.malicious = args.malicious;
    run.latency = LatencyModel::Uniform {
        min: Duration::from_micros(100),
        max: Duration::from_millis(2),
    };
    let mut progress = super::sim::LazyProgress::new();
    let calls = sim::run_calls(&run, &mut |done, total| {
        progress.update(sim::Progress {
            phase: "calls",
            done,
            total,
        })
    })?;
    progress.finish();
    if args.json {
        let out = serde_json::json!({
            "mode": "simulated",
            "peers": 512,
            "csp": 13,
            "cspg": 3,
            "paper_scenario_ok": paper_ok,
            "paper": paper,
            "calls_attempted": calls.calls,
            "calls_ringing": calls.succeeded,
            "srd_ms_p50": calls.setup_ms_p50,
            "srd_ms_p99": calls.setup_ms_p99,
            "hops_mean": calls.hops_mean,
            "messages_per_call": calls.messages_per_call,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "p2psip demo — the paper's 512-peer prototype (496 peers, 13 CSPs, 3 CSPGs, three layers)"
    );
    println!(
        "  Runs in the discrete-event simulator in this build (virtual time, loopback-like latency)."
    );
    println!();
    println!(
        "  Malicious-peer scenario: peer 80 calls peer 1618; peer 1617 drops what it forwards."
    );
    super::sim::print_paper(&paper);
    println!("  scenario      {}", if paper_ok { "PASS" } else { "FAIL" });
    println!();
    println!(
        "  {} random calls: {} ringing ({:.2}%), setup delay p50 {:.1} ms, p99 {:.1} ms, {:.2} hops, {:.1} messages per call",
        calls.calls,
        calls.succeeded,
        100.0 * calls.success_rate,
        calls.setup_ms_p50,
        calls.setup_ms_p99,
        calls.hops_mean,
        calls.messages_per_call
    );
    if !paper_ok {
        anyhow::bail!("the paper's scenario did not reproduce");
    }
    Ok(())
}
