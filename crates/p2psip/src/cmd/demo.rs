//! `p2psip demo`: the paper's 512-peer prototype.
//!
//! Until the TLS runtime lands, the demo runs the paper's layout in the discrete-event
//! simulator and says so: 512 peers on an m = 11 ring holding the peers the paper names,
//! the plain-Chord route from peer 80 to peer 1618, and a batch of random lookups.

use anyhow::Context;
use overlay::{IdSpace, NodeId};
use sim::{Init, LatencyModel, LookupRun, WorldConfig};
use std::time::Duration;

/// Peers the paper names in its scenario (caller, callee, CSPGs, CSP and intermediates).
pub(crate) const PAPER_IDS: [u128; 10] = [1, 80, 1030, 1331, 1536, 1593, 1600, 1609, 1617, 1618];

/// Options for `p2psip demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Random lookups to run after the scenario.
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let space = IdSpace::new(11).context("paper ID space")?;
    let mut cfg = WorldConfig::new(space, args.seed);
    cfg.latency = LatencyModel::Uniform {
        min: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    let mut run = LookupRun::new(512, args.calls, cfg);
    run.init = Init::Converged;
    run.fixed_ids = PAPER_IDS.iter().map(|i| NodeId(*i)).collect();
    run.warmup = Duration::from_secs(2);

    let mut world = sim::build_world(&run, &mut |_| {})?;
    let h = world
        .watch(NodeId(80), NodeId(1618))
        .context("peer 80 is missing from the ring")?;
    let until = world.now() + Duration::from_secs(10);
    world.run_while(until, |w| w.watched(NodeId(80), h).is_none());
    let path = world
        .watched(NodeId(80), h)
        .map(|w| w.path.clone())
        .context("the lookup 80 → 1618 did not finish")?;

    let mut progress = super::sim::LazyProgress::new();
    let report = sim::run_lookups(&run, &mut |p| progress.update(p))?;
    progress.finish();

    let path_text: Vec<String> = path.iter().map(|n| n.to_string()).collect();
    if args.json {
        let out = serde_json::json!({
            "mode": "simulated",
            "peers": report.peers,
            "bits": 11,
            "chord_path_80_to_1618": path.iter().map(|n| n.0 as u64).collect::<Vec<_>>(),
            "lookups": report,
        });
        println!("{out}");
        return Ok(());
    }
    println!("p2psip demo (simulated): the paper's 512-peer layout on an m = 11 Chord ring.");
    println!("  This build runs the layout in the discrete-event simulator; the real TLS peers,");
    println!(
        "  CSP/CSPG routing and the SOS-ranked malicious-peer scenario are not part of it yet."
    );
    println!("  plain Chord route 80 → 1618: {}", path_text.join(" → "));
    println!(
        "  {} random lookups: {:.2}% found the owner, {:.2} hops mean (½·log2 N = {:.2}), p99 latency {:.1} ms",
        report.lookups,
        100.0 * report.success_rate,
        report.hops_mean,
        report.hops_expected,
        report.latency_ms_p99
    );
    Ok(())
}
