//! `p2psip sim`: run the discrete-event simulator and report lookup metrics.

use crate::LabError;
use crate::progress::LazyProgress;
use overlay::IdSpace;
use sim::{Churn, Init, LatencyModel, LookupRun, SessionModel, WorldConfig};
use std::time::Duration;

/// Options for `p2psip sim`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Peers on the ring.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) peers: usize,
    /// Lookups to issue, from random live peers to random keys.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) lookups: u64,
    /// Identifier width m in bits (1..=128); the paper's scenario uses 11.
    #[arg(long, default_value_t = 128)]
    pub(crate) bits: u32,
    /// Turn churn on: median peer session length in seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) churn_median_session: Option<f64>,
    /// Session-time distribution under churn.
    #[arg(long, value_enum, default_value_t = SessionKind::Exponential)]
    pub(crate) session_model: SessionKind,
    /// Fraction of departures that are graceful leaves; the rest crash.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) graceful: f64,
    /// Seed for every random choice (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Network latency model.
    #[arg(long, value_enum, default_value_t = LatencyKind::Geographic)]
    pub(crate) latency: LatencyKind,
    /// Probability that a message is lost, 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) loss: f64,
    /// Build the ring by real joins (one every --join-interval-ms) instead of a converged start.
    #[arg(long)]
    pub(crate) grow: bool,
    /// Time between joins with --grow, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub(crate) join_interval_ms: u64,
    /// Quiet time before measuring, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) warmup: f64,
    /// Lookups per peer per simulated second.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) lookup_rate: f64,
    /// Stabilize interval, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) stabilize: f64,
    /// Fix-fingers interval (one finger per tick), seconds.
    #[arg(long, default_value_t = 4.0)]
    pub(crate) fix_fingers: f64,
    /// Let stabilize and fix-fingers back off while a peer's neighbourhood is quiet,
    /// doubling per quiet round up to this many seconds (a change near the peer restores
    /// the base intervals at once); 0: no back-off, classic Chord. By default a ring
    /// without churn backs off as a real peer does (`p2psip peer`: 16 s), and a ring under
    /// churn keeps the classic pace its stabilize-interval comparisons are made at.
    #[arg(long, value_name = "SECS")]
    pub(crate) quiet_maintenance_max: Option<f64>,
    /// Longest ring-check interval while the peer's checks find it on its ring; 0: no
    /// back-off. Default: a real peer's (240 s) without churn, none under churn (the
    /// classic pace, as for `--quiet-maintenance-max`).
    #[arg(long, value_name = "SECS")]
    pub(crate) quiet_ring_check_max: Option<f64>,
    /// Successor-list length r.
    #[arg(long, default_value_t = 8)]
    pub(crate) successors: usize,
    /// Split the ring over this many threads, each simulating one arc of it; they meet
    /// every least network delay of simulated time (2 ms with geographic latency). The
    /// same seed and thread count give the same run bit for bit; another thread count
    /// draws other random streams, like another seed. More than one needs a fixed ring: a
    /// converged start (no --grow) and no churn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: u16,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Run a named scenario instead: `paper` reproduces the paper's malicious-peer scenario
    /// (m = 11, caller 80, callee 1618, peer 1617 malicious) over plain Chord and the secure
    /// system.
    #[arg(long, value_enum)]
    pub(crate) scenario: Option<Scenario>,
    /// Run a call experiment with this many calls (between honest peers) instead of lookups.
    #[arg(long)]
    pub(crate) calls: Option<u64>,
    /// Calls placed before measuring, so the SOS can learn from evidence (0 = cold trust).
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup_calls: u64,
    /// Fraction of ordinary peers that are malicious (call experiments).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) malicious: f64,
    /// What malicious peers do to traffic they forward.
    #[arg(long, value_enum, default_value_t = sim::Behaviour::Drop)]
    pub(crate) behaviour: sim::Behaviour,
    /// Call routing: the paper's secure system or plain Chord.
    #[arg(long, value_enum, default_value_t = RoutingKind::Secure)]
    pub(crate) routing: RoutingKind,
    /// Callee popularity Zipf exponent (uniform callees when absent).
    #[arg(long)]
    pub(crate) zipf: Option<f64>,
    /// PingRequest copies per call (secure routing).
    #[arg(long, default_value_t = 4)]
    pub(crate) fanout: usize,
    /// Calls per simulated second.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) call_rate: f64,
    /// Turn off the closed loop (no evidence to the SOS, no routing around distrusted peers).
    #[arg(long)]
    pub(crate) open_loop: bool,
    /// Count every report fully instead of weighing it by the SOS's opinion of its reporter.
    #[arg(long)]
    pub(crate) unweighted_reports: bool,
    /// Weigh a peer's report by the SOS's belief that it forwards, without holding it
    /// against what the CSPs proved about its subject (the older rule, for comparison).
    #[arg(long)]
    pub(crate) unchecked_reports: bool,
    /// Half-life of evidence at the SOS, seconds (0: evidence never fades).
    #[arg(long, default_value_t = 60.0)]
    pub(crate) evidence_half_life: f64,
}

/// Named scenarios.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Scenario {
    /// The paper's Section 3.2 scenario.
    Paper,
}

/// Call routing.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum RoutingKind {
    /// CSP/CSPG, PingRequest multicast, SOS-ranked routes.
    Secure,
    /// The INVITE routed hop by hop over one flat Chord ring.
    Chord,
}

/// Session-time distributions.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum SessionKind {
    /// Exponential.
    Exponential,
    /// Pareto with shape 2.
    Pareto,
}

/// Latency models.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LatencyKind {
    /// 50 ms for every message.
    Constant,
    /// Uniform 10..100 ms.
    Uniform,
    /// Peers spread over the globe: 2 ms + distance at 100 km/ms + up to 5 ms jitter.
    Geographic,
}

fn latency_model(kind: LatencyKind) -> LatencyModel {
    match kind {
        LatencyKind::Constant => LatencyModel::Constant(Duration::from_millis(50)),
        LatencyKind::Uniform => LatencyModel::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        LatencyKind::Geographic => LatencyModel::geographic(),
    }
}

/// `s` seconds as a [`Duration`]; `what` names the option in the error.
fn secs(s: f64, what: &str) -> Result<Duration, LabError> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        LabError::Args(format!(
            "{what} must be a non-negative number of seconds, got {s}"
        ))
    })
}

/// The lookup run `args` describe, its options checked.
pub(crate) fn build_run(args: &Args) -> Result<LookupRun, LabError> {
    let space = IdSpace::new(args.bits).map_err(|e| LabError::Args(format!("--bits: {e}")))?;
    LabError::check((0.0..=1.0).contains(&args.loss), || {
        format!("--loss must be in 0..1, got {}", args.loss)
    })?;
    LabError::check((0.0..=1.0).contains(&args.graceful), || {
        "--graceful must be in 0..1".into()
    })?;
    LabError::check(args.successors >= 1, || {
        "--successors must be at least 1".into()
    })?;
    let mut world = WorldConfig::new(space, args.seed);
    world.loss = args.loss;
    world.latency = latency_model(args.latency);
    world.chord.stabilize_every = secs(args.stabilize, "--stabilize")?;
    world.chord.fix_fingers_every = secs(args.fix_fingers, "--fix-fingers")?;
    let real_peer = node::ChordTiming::default();
    let churn = args.churn_median_session.is_some();
    world.chord.stabilize_max = back_off_cap(
        args.quiet_maintenance_max,
        "--quiet-maintenance-max",
        real_peer.quiet_maintenance_max,
        churn,
    )?;
    world.chord.fix_fingers_max = world.chord.stabilize_max;
    world.chord.ring_check_max = back_off_cap(
        args.quiet_ring_check_max,
        "--quiet-ring-check-max",
        real_peer.quiet_ring_check_max,
        churn,
    )?;
    world.chord.successors = args.successors;
    if let Some(median) = args.churn_median_session {
        let median = secs(median, "--churn-median-session")?;
        LabError::check(!median.is_zero(), || {
            "--churn-median-session must be positive".into()
        })?;
        world.churn = Some(Churn {
            session: match args.session_model {
                SessionKind::Exponential => SessionModel::Exponential { median },
                SessionKind::Pareto => SessionModel::Pareto { median, shape: 2.0 },
            },
            graceful: args.graceful,
        });
    }
    let mut run = LookupRun::new(args.peers, args.lookups, world);
    run.lookup_rate_per_peer = args.lookup_rate;
    run.threads = usize::from(args.threads);
    run.warmup = secs(args.warmup, "--warmup")?;
    if args.grow {
        run.init = Init::Joins {
            interval: Duration::from_millis(args.join_interval_ms),
        };
    }
    Ok(run)
}

fn run_paper(args: &Args) -> Result<(), LabError> {
    let r = sim::run_paper(args.seed)?;
    if args.json {
        return say_json(&r);
    }
    say!(
        "p2psip sim --scenario paper: m = 11, 512 peers (496 + 13 CSPs + 3 CSPGs), caller 80, callee 1618, 1617 malicious (drops)"
    );
    print_paper(&r);
    Ok(())
}

/// Print `report` as one JSON object (`--json`).
fn say_json(report: &impl serde::Serialize) -> Result<(), LabError> {
    say!(
        "{}",
        serde_json::to_string(report).map_err(LabError::json("the report"))?
    );
    Ok(())
}

/// A path as `a → b → c`.
fn path_text(p: &[u128]) -> String {
    p.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The paper scenario's outcome, for `sim --scenario paper` and `demo`.
pub(crate) fn print_paper(r: &sim::PaperReport) {
    let verdict = |ok: bool| if ok { "DELIVERED" } else { "FAILED" };
    say!(
        "  plain Chord   {:<9}  path {}",
        verdict(r.chord.delivered),
        path_text(&r.chord.path)
    );
    say!(
        "  secure        {:<9}  via CSPG 1 → CSPG 1030 → CSP 1536, {} routes reached 1618:",
        verdict(r.secure.delivered),
        r.secure.routes.len()
    );
    for route in &r.secure.routes {
        say!("                             {}", path_text(route));
    }
    if let (Some(o), Some(e)) = (r.secure.opinion, r.secure.expectation) {
        say!(
            "  SOS chose     {}  opinion (b {:.4}, d {:.4}, u {:.4}, a {}), E = {:.5}",
            path_text(&r.secure.chosen_route),
            o[0],
            o[1],
            o[2],
            o[3],
            e
        );
    }
}

/// A maintenance back-off cap from its flag (`flag`, seconds; 0: none), else a real peer's
/// (`real_peer`) without churn and none under churn (the classic pace).
fn back_off_cap(
    given: Option<f64>,
    flag: &str,
    real_peer: Option<Duration>,
    churn: bool,
) -> Result<Option<Duration>, LabError> {
    let cap = match given {
        Some(max) => secs(max, flag)?,
        None if churn => Duration::ZERO,
        None => real_peer.unwrap_or_default(),
    };
    Ok((!cap.is_zero()).then_some(cap))
}

fn run_calls(args: &Args, calls: u64) -> Result<(), LabError> {
    LabError::check(args.successors >= 1, || {
        "--successors must be at least 1".into()
    })?;
    let routing = match args.routing {
        RoutingKind::Secure => overlay::secure::Routing::Secure,
        RoutingKind::Chord => overlay::secure::Routing::Chord,
    };
    let half_life = secs(args.evidence_half_life, "--evidence-half-life")?;
    let mut run = sim::CallRun {
        bits: args.bits,
        seed: args.seed,
        warmup_calls: args.warmup_calls,
        malicious: args.malicious,
        behaviour: args.behaviour,
        zipf: args.zipf,
        latency: latency_model(args.latency),
        call_rate: args.call_rate,
        closed_loop: !args.open_loop,
        successors: args.successors,
        weigh_reporters: !args.unweighted_reports,
        check_reports: !args.unchecked_reports,
        evidence_half_life: (!half_life.is_zero()).then_some(half_life),
        ..sim::CallRun::new(args.peers, calls, routing)
    };
    run.secure.fanout = args.fanout;
    let report = crate::progress::run_calls(&run)?;
    if args.json {
        return say_json(&report);
    }
    say!(
        "p2psip sim: {} peers, {} routing, {:.0}% malicious ({}), {} calls after {} warm-up calls, seed {}",
        report.peers,
        report.routing,
        100.0 * report.malicious,
        report.behaviour,
        report.calls,
        report.warmup_calls,
        report.seed
    );
    say!(
        "  success        {:.3}% ({} rang)",
        100.0 * report.success_rate,
        report.succeeded
    );
    say!("  hops           mean {:.2}", report.hops_mean);
    say!(
        "  setup delay    p50 {:.1} ms, p99 {:.1} ms (virtual)",
        report.setup_ms_p50,
        report.setup_ms_p99
    );
    say!(
        "  traffic        {:.1} messages per call",
        report.messages_per_call
    );
    say!(
        "  cache          {:.1}% of calls served from the contact cache",
        100.0 * report.cache_hit_rate
    );
    say!(
        "  SOS            {} reports; distrusts {} of {} malicious and {} of {} honest peers (false positives {:.2}%, false negatives {:.2}%)",
        report.reports,
        report.distrusted_malicious,
        report.malicious_peers,
        report.distrusted_honest,
        report.honest_peers,
        100.0 * report.false_positive_rate,
        100.0 * report.false_negative_rate
    );
    say!("  run            {:.2} s wall", report.wall_s);
    Ok(())
}

/// Run `p2psip sim`.
pub fn run(args: Args) -> Result<(), LabError> {
    if let Some(Scenario::Paper) = args.scenario {
        return run_paper(&args);
    }
    if let Some(calls) = args.calls {
        return run_calls(&args, calls);
    }
    let run = build_run(&args)?;
    let mut progress = LazyProgress::new();
    let report = sim::run_lookups(&run, &mut |p| progress.update(p))?;
    progress.finish();
    if args.json {
        return say_json(&report);
    }
    let churn = match args.churn_median_session {
        Some(m) => format!(
            "churn: median session {m} s ({} joins, {} departures)",
            report.joins, report.departures
        ),
        None => "no churn".to_string(),
    };
    say!(
        "p2psip sim: {} peers (m = {}), {} lookups, seed {}, {churn}, {} thread{}",
        report.peers,
        args.bits,
        report.lookups,
        report.seed,
        report.threads,
        if report.threads == 1 { "" } else { "s" }
    );
    say!(
        "  success        {:.4}%  ({} ok, {} timed out, {} wrong owner, {} origin gone)",
        100.0 * report.success_rate,
        report.succeeded,
        report.timed_out,
        report.wrong_owner,
        report.origin_lost
    );
    say!(
        "  hops           mean {:.2} (½·log2 N = {:.2}), p99 {}",
        report.hops_mean,
        report.hops_expected,
        report.hops_p99
    );
    say!(
        "  latency        p50 {:.1} ms, p99 {:.1} ms (virtual)",
        report.latency_ms_p50,
        report.latency_ms_p99
    );
    say!(
        "  traffic        {:.2} msgs/peer/s, {:.0} bytes/msg",
        report.messages_per_peer_per_s,
        report.bytes_per_message
    );
    say!(
        "  state          {:.0} bytes per peer",
        report.state_bytes_per_peer
    );
    say!(
        "  run            {} events in {:.2} s wall ({:.0} events/s without the {:.2} s of placing peers), {:.1} s simulated",
        report.events,
        report.wall_s,
        report.events_per_s,
        report.placing_s,
        report.sim_s
    );
    Ok(())
}
